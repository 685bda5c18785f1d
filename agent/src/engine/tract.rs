//! The pure-Rust engine, tract (cargo feature `tract`): for comparing runtimes on one device and
//! for devices with no ONNX Runtime build. It runs encoder-style models (fp32, dynamic int8, QDQ)
//! on one thread; decoders with a key/value cache need ONNX Runtime.

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;

use super::{EngineError, FloatOutput, InputInfo, OutputChoice, OutputKind};

/// The engine's name and version on results.
pub const ENGINE_NAME: &str = "tract";
pub const ENGINE_VERSION: &str = "0.23";

/// An optimized, runnable model.
pub type Plan = Arc<TypedRunnableModel>;
/// The inputs of one query, in the model's input order.
pub type Values = TVec<TValue>;

/// Loads and optimizes a model for int64 inputs of one `[rows, columns]` shape (tract plans for
/// concrete shapes; a 0 leaves that dimension as the model declares it).
/// The plan, its inputs, and its output names.
type Loaded = (Plan, Vec<InputInfo>, Vec<String>);

pub fn load(path: &Path, shape: [usize; 2]) -> Result<Loaded, EngineError> {
    let error = |e: TractError| EngineError::Model {
        path: path.to_path_buf(),
        message: format!("{e:#}"),
    };
    // Exporters and optimizers leave intermediate shapes (value_info) that are sometimes
    // wrong; tract infers its own.
    let mut model = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_path(path)
        .map_err(error)?;
    if shape[1] > 0 {
        for ix in 0..model.input_outlets().map_err(error)?.len() {
            model
                .set_input_fact(ix, i64::fact(shape).into())
                .map_err(error)?;
        }
    }
    let typed = model.into_optimized().map_err(error)?;
    let inputs = typed
        .input_outlets()
        .map_err(error)?
        .iter()
        .map(|outlet| {
            let fact = typed.outlet_fact(*outlet)?;
            Ok(InputInfo {
                name: typed.node(outlet.node).name.clone(),
                dtype: dtype_name(fact.datum_type),
                shape: fact
                    .shape
                    .iter()
                    .map(|d| d.as_i64().unwrap_or(-1))
                    .collect(),
            })
        })
        .collect::<TractResult<Vec<_>>>()
        .map_err(error)?;
    let outputs = typed
        .output_outlets()
        .map_err(error)?
        .iter()
        .map(|outlet| {
            // The ONNX output's name, which tract keeps as the outlet's label.
            typed
                .outlet_label(*outlet)
                .map_or_else(|| typed.node(outlet.node).name.clone(), str::to_string)
        })
        .collect();
    let plan = typed.into_runnable().map_err(error)?;
    Ok((plan, inputs, outputs))
}

/// The same names ONNX Runtime uses (`i64`, `f32`), so input checks read alike.
fn dtype_name(dt: DatumType) -> String {
    match dt {
        DatumType::I64 => "i64".into(),
        DatumType::F32 => "f32".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// int64 tensors of one shape, in the order given (which is the model's input order).
pub fn feed(named: &[(String, Vec<i64>)], shape: [usize; 2]) -> Result<Values, EngineError> {
    named
        .iter()
        .map(|(_, data)| {
            Tensor::from_shape(&shape, data)
                .map(|t| t.into_tvalue())
                .map_err(|e| EngineError::Run(format!("{e:#}")))
        })
        .collect()
}

pub fn run(plan: &Plan, values: &Values) -> Result<(), EngineError> {
    plan.run(values.clone())
        .map(drop)
        .map_err(|e| EngineError::Run(format!("{e:#}")))
}

/// Runs one query and returns the output `choice` picks among the model's (named `names`, in
/// order), which must be float32.
pub fn run_output(
    plan: &Plan,
    values: &Values,
    names: &[String],
    choice: &OutputChoice,
) -> Result<FloatOutput, EngineError> {
    let outputs = plan
        .run(values.clone())
        .map_err(|e| EngineError::Run(format!("{e:#}")))?;
    let kinds: Vec<OutputKind<'_>> = outputs
        .iter()
        .zip(names)
        .map(|(value, name)| OutputKind {
            name,
            dtype: dtype_name(value.datum_type()),
            shape: value.shape().iter().map(|&d| d as i64).collect(),
        })
        .collect();
    let ix = choice.pick(&kinds)?;
    let view =
        outputs[ix]
            .to_plain_array_view::<f32>()
            .map_err(|_| EngineError::OutputNotFloat {
                name: names[ix].clone(),
                dtype: dtype_name(outputs[ix].datum_type()),
            })?;
    Ok(FloatOutput {
        shape: view.shape().iter().map(|&d| d as i64).collect(),
        values: view.iter().copied().collect(),
    })
}
