//! Reading an ONNX file's structure without running it: is it an ONNX model at all, which opset,
//! which inputs and outputs. Used to refuse junk at `models add` time and to describe models.
//! The file is read as a stream and everything but those fields (the weights above all: a
//! single-file model holds up to 2 GB of initializers) is seeked over, never held in memory.

use std::io::{BufRead, BufReader, Read, Seek};
use std::path::Path;

use edgefleet_proto::onnx::{type_proto, NodeProto, OperatorSetIdProto, ValueInfoProto};
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
    #[error("cannot read the model: {0}")]
    Read(String),
}

/// Inspects a model held in memory (a fuzz input, a test's bytes).
pub fn inspect(bytes: &[u8]) -> Result<OnnxSummary, OnnxError> {
    inspect_stream(std::io::Cursor::new(bytes), bytes.len() as u64)
}

/// Inspects a model file, reading only its structure: memory stays at a few buffers whatever the
/// size of its weights.
pub fn inspect_file(path: &Path) -> Result<OnnxSummary, OnnxError> {
    let file = std::fs::File::open(path).map_err(|e| OnnxError::Read(e.to_string()))?;
    let len = file
        .metadata()
        .map_err(|e| OnnxError::Read(e.to_string()))?
        .len();
    inspect_stream(file, len)
}

/// Parses the model; any stream that is not a complete ONNX model is an error saying why.
fn inspect_stream<R: Read + Seek>(reader: R, len: u64) -> Result<OnnxSummary, OnnxError> {
    if len == 0 {
        return Err(OnnxError::Empty);
    }
    let mut wire = Wire {
        reader: BufReader::with_capacity(64 << 10, reader),
        pos: 0,
    };
    let model = read_model(&mut wire, len)?;
    if model.ir_version <= 0 {
        return Err(OnnxError::NoIrVersion);
    }
    let graph = model.graph.ok_or(OnnxError::NoGraph)?;
    if graph.nodes == 0 {
        return Err(OnnxError::NoNodes);
    }
    if graph.outputs.is_empty() {
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
        inputs: graph.inputs.iter().map(signature).collect(),
        outputs: graph.outputs.iter().map(signature).collect(),
        nodes: graph.nodes,
    })
}

/// The parts of `ModelProto` read (field numbers as in onnx/onnx.proto).
#[derive(Default)]
struct Model {
    ir_version: i64,
    graph: Option<Graph>,
    opset_import: Vec<OperatorSetIdProto>,
}

/// The parts of `GraphProto` read: the node count (each node checked to decode), inputs and
/// outputs. Initializers (field 5) and everything else are seeked over.
#[derive(Default)]
struct Graph {
    nodes: usize,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
}

/// The largest input, output or opset entry read whole: far above any real one (a name and a
/// shape), and a bound on what a malformed length can make us allocate.
const MAX_SMALL_MESSAGE: u64 = 1 << 20;

fn read_model<R: Read + Seek>(wire: &mut Wire<R>, end: u64) -> Result<Model, OnnxError> {
    let mut model = Model::default();
    while wire.pos < end {
        let (field, kind) = wire.key(end)?;
        match (field, kind) {
            (1, WIRE_VARINT) => model.ir_version = wire.varint(end)? as i64,
            (7, WIRE_LEN) => {
                let graph_end = wire.nested_end(end)?;
                // A message field given twice is merged, as protobuf decoders do.
                let graph = model.graph.get_or_insert_with(Graph::default);
                read_graph(wire, graph_end, graph)?;
            }
            (8, WIRE_LEN) => model.opset_import.push(wire.message(end)?),
            _ => wire.skip(kind, end)?,
        }
    }
    Ok(model)
}

fn read_graph<R: Read + Seek>(
    wire: &mut Wire<R>,
    end: u64,
    graph: &mut Graph,
) -> Result<(), OnnxError> {
    while wire.pos < end {
        let (field, kind) = wire.key(end)?;
        match (field, kind) {
            (1, WIRE_LEN) => {
                let node_end = wire.nested_end(end)?;
                read_node(wire, node_end)?;
                graph.nodes += 1;
            }
            (11, WIRE_LEN) => graph.inputs.push(wire.message(end)?),
            (12, WIRE_LEN) => graph.outputs.push(wire.message(end)?),
            _ => wire.skip(kind, end)?,
        }
    }
    Ok(())
}

/// A node's operator and domain, read to check the node decodes; its attributes (a Constant's
/// tensor can be large) are seeked over.
fn read_node<R: Read + Seek>(wire: &mut Wire<R>, end: u64) -> Result<NodeProto, OnnxError> {
    let mut node = NodeProto::default();
    while wire.pos < end {
        let (field, kind) = wire.key(end)?;
        match (field, kind) {
            (4, WIRE_LEN) => node.op_type = wire.string(end)?,
            (7, WIRE_LEN) => node.domain = wire.string(end)?,
            _ => wire.skip(kind, end)?,
        }
    }
    Ok(node)
}

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_I32: u8 = 5;

/// Protobuf's wire format over a buffered, seekable stream, with the position kept so that
/// every length is checked against the end of the message that holds it.
struct Wire<R> {
    reader: BufReader<R>,
    pos: u64,
}

fn undecodable(what: &str) -> OnnxError {
    OnnxError::Undecodable(what.to_string())
}

impl<R: Read + Seek> Wire<R> {
    fn byte(&mut self, end: u64) -> Result<u8, OnnxError> {
        if self.pos >= end {
            return Err(undecodable("a field runs past the end of its message"));
        }
        let buf = self
            .reader
            .fill_buf()
            .map_err(|e| OnnxError::Read(e.to_string()))?;
        let Some(&b) = buf.first() else {
            return Err(undecodable("the file ends inside a field"));
        };
        self.reader.consume(1);
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self, end: u64) -> Result<u64, OnnxError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte(end)?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(undecodable("a varint longer than ten bytes"))
    }

    /// A field's number and wire type.
    fn key(&mut self, end: u64) -> Result<(u64, u8), OnnxError> {
        let key = self.varint(end)?;
        let (field, kind) = (key >> 3, (key & 7) as u8);
        if field == 0 {
            return Err(undecodable("a field numbered 0"));
        }
        Ok((field, kind))
    }

    /// A length-delimited field's length, checked against `end`; returns where it ends.
    fn nested_end(&mut self, end: u64) -> Result<u64, OnnxError> {
        let len = self.varint(end)?;
        match self.pos.checked_add(len) {
            Some(nested) if nested <= end => Ok(nested),
            _ => Err(undecodable("a length runs past the end of its message")),
        }
    }

    fn advance(&mut self, n: u64, end: u64) -> Result<(), OnnxError> {
        if self.pos.checked_add(n).is_none_or(|to| to > end) {
            return Err(undecodable("a field runs past the end of its message"));
        }
        let n = i64::try_from(n).map_err(|_| undecodable("a length beyond any file"))?;
        self.reader
            .seek_relative(n)
            .map_err(|e| OnnxError::Read(e.to_string()))?;
        self.pos += n as u64;
        Ok(())
    }

    fn skip(&mut self, kind: u8, end: u64) -> Result<(), OnnxError> {
        match kind {
            WIRE_VARINT => self.varint(end).map(drop),
            WIRE_I64 => self.advance(8, end),
            WIRE_LEN => {
                let nested = self.nested_end(end)?;
                self.advance(nested - self.pos, end)
            }
            WIRE_I32 => self.advance(4, end),
            _ => Err(undecodable("an unknown or group wire type")),
        }
    }

    fn bytes(&mut self, end: u64) -> Result<Vec<u8>, OnnxError> {
        let nested = self.nested_end(end)?;
        let len = nested - self.pos;
        if len > MAX_SMALL_MESSAGE {
            return Err(undecodable("an input, output or opset entry over 1 MiB"));
        }
        let mut bytes = vec![0; len as usize];
        self.reader
            .read_exact(&mut bytes)
            .map_err(|_| undecodable("the file ends inside a field"))?;
        self.pos = nested;
        Ok(bytes)
    }

    fn string(&mut self, end: u64) -> Result<String, OnnxError> {
        String::from_utf8(self.bytes(end)?).map_err(|_| undecodable("a string that is not UTF-8"))
    }

    fn message<M: Message + Default>(&mut self, end: u64) -> Result<M, OnnxError> {
        M::decode(self.bytes(end)?.as_slice()).map_err(|e| OnnxError::Undecodable(e.to_string()))
    }
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
        tensor_shape_proto, type_proto, GraphProto, ModelProto, TensorShapeProto, TypeProto,
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

    /// What prost makes of the whole file in memory (the subset proto skips the weights as it
    /// decodes): the reference the streaming reader must agree with.
    fn decoded_in_memory(bytes: &[u8]) -> Option<OnnxSummary> {
        let model = ModelProto::decode(bytes).ok()?;
        let graph = model.graph?;
        Some(OnnxSummary {
            ir_version: model.ir_version,
            opset: model
                .opset_import
                .iter()
                .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")?
                .version,
            inputs: graph.input.iter().map(signature).collect(),
            outputs: graph.output.iter().map(signature).collect(),
            nodes: graph.node.len(),
        })
    }

    #[test]
    fn the_streaming_reader_agrees_with_a_full_decode_and_skips_initializers() {
        // A graph with a 3 MB initializer (field 5) and a Constant node whose attribute (field 5
        // of the node) holds bytes: both are seeked over.
        let mut bytes = tiny_model();
        let mut graph_extra = Vec::new();
        prost::encoding::bytes::encode(5, &vec![7u8; 3 << 20], &mut graph_extra);
        let mut node = Vec::new();
        prost::encoding::string::encode(4, &"Constant".to_string(), &mut node);
        prost::encoding::bytes::encode(5, &vec![1u8; 4096], &mut node);
        prost::encoding::bytes::encode(1, &node, &mut graph_extra);
        prost::encoding::bytes::encode(7, &graph_extra, &mut bytes); // merged into the graph
        let streamed = inspect(&bytes).unwrap();
        assert_eq!(Some(streamed.clone()), decoded_in_memory(&bytes));
        assert_eq!(streamed.nodes, 2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(inspect_file(&path).unwrap(), streamed);
    }

    #[test]
    fn malformed_lengths_are_refused_without_allocating_them() {
        let mut bytes = tiny_model();
        // An output whose declared length is 2 GiB, in a file of a few bytes more.
        let mut graph = Vec::new();
        prost::encoding::encode_key(12, prost::encoding::WireType::LengthDelimited, &mut graph);
        prost::encoding::encode_varint(2 << 30, &mut graph);
        graph.extend_from_slice(&[0; 16]);
        prost::encoding::bytes::encode(7, &graph, &mut bytes);
        let err = inspect(&bytes).unwrap_err();
        assert!(matches!(err, OnnxError::Undecodable(_)), "{err}");
    }

    #[test]
    fn the_set_up_models_read_the_same_streamed_as_decoded() {
        let cache = std::env::var_os("EDGEFLEET_CACHE").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/edgefleet"),
            std::path::PathBuf::from,
        );
        let mut checked = 0;
        for model in [
            "models/minilm-l6/model.int8.onnx",
            "models/silero-vad/model.fp32.onnx",
            "models/ppocr/rec.int8.onnx",
            "models/smollm2-135m/model.q4.onnx",
        ] {
            let path = cache.join(model);
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup.sh first)", path.display()));
            assert_eq!(
                Some(inspect_file(&path).unwrap()),
                decoded_in_memory(&bytes),
                "{model}"
            );
            checked += 1;
        }
        assert_eq!(checked, 4);
    }

    /// A stable stand-in for the `onnx_inspect` fuzz target on this reader: thousands of
    /// mutations of a real model's head never panic, and whenever prost's full decode and the
    /// stream both make a summary, they agree.
    #[test]
    fn mutated_models_never_panic_and_agree_with_a_full_decode_when_both_read_them() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let base = tiny_model();
        let (mut agreed, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut bytes = base.clone();
            for _ in 0..(1 + next() % 4) {
                let at = (next() as usize) % bytes.len();
                match next() % 3 {
                    0 => bytes[at] = next() as u8,
                    1 => {
                        bytes.truncate(at.max(1));
                    }
                    _ => bytes.insert(at, next() as u8),
                }
            }
            match (inspect(&bytes), decoded_in_memory(&bytes)) {
                (Ok(streamed), Some(full)) => {
                    assert_eq!(streamed, full, "{bytes:?}");
                    agreed += 1;
                }
                (Err(_), _) => refused += 1,
                (Ok(_), None) => {}
            }
        }
        assert!(
            agreed > 100 && refused > 100,
            "{agreed} agreed, {refused} refused"
        );
    }
}
