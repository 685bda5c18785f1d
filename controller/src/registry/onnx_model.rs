//! Reading an ONNX file's structure without running it: is it an ONNX model at all, which opset,
//! which inputs and outputs. Used to refuse junk at `models add` time and to describe models.

use edgefleet_proto::onnx::{type_proto, ModelProto, ValueInfoProto};
use edgefleet_proto::v1::TensorSignature;
use prost::Message;

/// What an ONNX file declares.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxSummary {
    pub ir_version: i64,
    /// The default-domain opset.
    pub opset: i64,
    pub inputs: Vec<TensorSignature>,
    pub outputs: Vec<TensorSignature>,
    pub nodes: usize,
}

/// Why a file is not a usable ONNX model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OnnxError {
    #[error("the file is empty")]
    Empty,
    #[error("not an ONNX model (protobuf does not decode: {0}); is the file truncated?")]
    Undecodable(String),
    #[error("not an ONNX model (no IR version)")]
    NoIrVersion,
    #[error("not an ONNX model (no graph)")]
    NoGraph,
    #[error("the ONNX graph has no nodes")]
    NoNodes,
    #[error("the ONNX graph has no outputs")]
    NoOutputs,
    #[error("the ONNX model imports no default opset (is the file truncated?)")]
    NoDefaultOpset,
}

/// Parses the model; any file that is not a complete ONNX model is an error saying why.
pub fn inspect(bytes: &[u8]) -> Result<OnnxSummary, OnnxError> {
    if bytes.is_empty() {
        return Err(OnnxError::Empty);
    }
    let model = ModelProto::decode(bytes).map_err(|e| OnnxError::Undecodable(e.to_string()))?;
    if model.ir_version <= 0 {
        return Err(OnnxError::NoIrVersion);
    }
    let graph = model.graph.ok_or(OnnxError::NoGraph)?;
    if graph.node.is_empty() {
        return Err(OnnxError::NoNodes);
    }
    if graph.output.is_empty() {
        return Err(OnnxError::NoOutputs);
    }
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or(OnnxError::NoDefaultOpset)?;
    Ok(OnnxSummary {
        ir_version: model.ir_version,
        opset,
        inputs: graph.input.iter().map(signature).collect(),
        outputs: graph.output.iter().map(signature).collect(),
        nodes: graph.node.len(),
    })
}

fn signature(v: &ValueInfoProto) -> TensorSignature {
    let mut sig = TensorSignature {
        name: v.name.clone(),
        element_type: String::from("?"),
        shape: Vec::new(),
    };
    if let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref())
    {
        sig.element_type = element_type_name(t.elem_type).to_string();
        if let Some(shape) = &t.shape {
            sig.shape = shape
                .dim
                .iter()
                .map(|d| match &d.value {
                    Some(
                        edgefleet_proto::onnx::tensor_shape_proto::dimension::Value::DimValue(n),
                    ) => n.to_string(),
                    Some(
                        edgefleet_proto::onnx::tensor_shape_proto::dimension::Value::DimParam(p),
                    ) => p.clone(),
                    None => "?".to_string(),
                })
                .collect();
        }
    }
    sig
}

/// ONNX `TensorProto.DataType` numbers.
fn element_type_name(code: i32) -> &'static str {
    match code {
        1 => "float32",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "float64",
        12 => "uint32",
        13 => "uint64",
        16 => "bfloat16",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_proto::onnx::{
        tensor_shape_proto, type_proto, GraphProto, NodeProto, OperatorSetIdProto,
        TensorShapeProto, TypeProto,
    };

    fn value(name: &str, dims: &[&str]) -> ValueInfoProto {
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: 7,
                    shape: Some(TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|d| tensor_shape_proto::Dimension {
                                value: Some(match d.parse::<i64>() {
                                    Ok(n) => tensor_shape_proto::dimension::Value::DimValue(n),
                                    Err(_) => tensor_shape_proto::dimension::Value::DimParam(
                                        d.to_string(),
                                    ),
                                }),
                            })
                            .collect(),
                    }),
                })),
            }),
        }
    }

    fn tiny_model() -> Vec<u8> {
        ModelProto {
            ir_version: 8,
            producer_name: "test".into(),
            producer_version: String::new(),
            graph: Some(GraphProto {
                node: vec![NodeProto {
                    op_type: "Identity".into(),
                    domain: String::new(),
                }],
                name: "g".into(),
                input: vec![value("input_ids", &["batch", "128"])],
                output: vec![value("out", &["batch", "128"])],
            }),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn a_model_is_described() {
        let s = inspect(&tiny_model()).unwrap();
        assert_eq!(s.opset, 17);
        assert_eq!(s.inputs[0].name, "input_ids");
        assert_eq!(s.inputs[0].element_type, "int64");
        assert_eq!(s.inputs[0].shape, ["batch", "128"]);
    }

    #[test]
    fn junk_and_truncated_files_are_refused() {
        let good = tiny_model();
        assert!(inspect(b"").unwrap_err().to_string().contains("empty"));
        assert!(inspect(b"this is not a model at all, just text").is_err());
        for cut in [1, good.len() / 3, good.len() / 2, good.len() - 1] {
            assert!(
                inspect(&good[..cut]).is_err(),
                "truncated at {cut} of {}",
                good.len()
            );
        }
    }
}
