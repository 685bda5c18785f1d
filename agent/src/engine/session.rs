//! Sessions: loading a model (threads, execution provider, graph optimisation), building the
//! feeds of a query, and running it for the output a quality metric compares or for nothing.

use std::path::Path;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{DynTensor, Tensor, ValueType};

use super::library::{provider_dispatch, Runtime};
#[cfg(feature = "tract")]
use super::tract;
use super::{EngineError, FloatOutput, InputInfo, OutputChoice, OutputKind, TensorData};

/// A model ready to run.
pub struct Model {
    pub(super) backend: Backend,
    pub inputs: Vec<InputInfo>,
    /// Output names, in the model's order.
    pub outputs: Vec<String>,
    /// How this decoder's key/value cache is kept; found by a probe the first time a cache is
    /// made. `None` until then.
    pub(super) cache_kind: Option<super::CacheKind>,
}

/// Which engine runs a model.
pub(super) enum Backend {
    Ort(Session),
    #[cfg(feature = "tract")]
    Tract(tract::Plan),
}

impl Model {
    #[cfg_attr(not(feature = "tract"), allow(unused_variables))]
    pub(super) fn ort(&mut self, what: &str) -> Result<&mut Session, EngineError> {
        match &mut self.backend {
            Backend::Ort(session) => Ok(session),
            #[cfg(feature = "tract")]
            Backend::Tract(_) => Err(EngineError::Run(format!(
                "{what} needs the onnxruntime engine; tract runs encoders only"
            ))),
        }
    }

    /// Loads a model into the pure-Rust tract engine (cargo feature `tract`).
    #[cfg(feature = "tract")]
    pub fn load_tract(path: &Path, shape: [usize; 2]) -> Result<Model, EngineError> {
        let (plan, inputs, outputs) = tract::load(path, shape)?;
        Ok(Model {
            backend: Backend::Tract(plan),
            inputs,
            outputs,
            cache_kind: None,
        })
    }
}

/// The inputs of one query, built before timing starts.
pub struct Feed {
    #[cfg(feature = "tract")]
    tract: Option<tract::Values>,
    pub(super) tensors: Vec<(String, DynTensor)>,
}

/// How one session runs, from the suite.
#[derive(Debug, Clone, Default)]
pub struct SessionSettings {
    pub intra_op_threads: usize,
    pub inter_op_threads: usize,
    /// Short name (`cuda`); CPU when empty or `cpu`.
    pub execution_provider: String,
    /// disabled, basic, extended or all (also when empty).
    pub graph_optimization: String,
}

impl Runtime {
    /// Loads a model with the suite's threads, execution provider and graph optimisation.
    pub fn load_model(
        &self,
        path: &Path,
        settings: &SessionSettings,
    ) -> Result<Model, EngineError> {
        let model_error = |e: ort::Error| EngineError::Model {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let level = match settings.graph_optimization.as_str() {
            "disabled" => GraphOptimizationLevel::Disable,
            "basic" => GraphOptimizationLevel::Level1,
            "extended" => GraphOptimizationLevel::Level2,
            "" | "all" => GraphOptimizationLevel::All,
            other => {
                return Err(EngineError::Setting(format!(
                    "unknown graph optimization level `{other}` ({})",
                    edgefleet_suites::GRAPH_OPTIMIZATION_LEVELS.join(", ")
                )))
            }
        };
        self.provider(&settings.execution_provider)?;
        let (_, dispatch) = provider_dispatch(&settings.execution_provider)?;
        let mut builder = Session::builder(&self.environment)
            .map_err(model_error)?
            .with_intra_threads(settings.intra_op_threads)
            .map_err(|e| model_error(e.into()))?
            .with_inter_threads(settings.inter_op_threads)
            .map_err(|e| model_error(e.into()))?
            .with_optimization_level(level)
            .map_err(|e| model_error(e.into()))?;
        if let Some(dispatch) = dispatch {
            // A provider that cannot start is an error, never a silent fall-back to the CPU.
            builder = builder
                .with_execution_providers([dispatch.error_on_failure()])
                .map_err(|e| model_error(e.into()))?;
        }
        let session = builder.commit_from_file(path).map_err(model_error)?;
        let inputs = session
            .inputs()
            .iter()
            .map(|outlet| describe_input(outlet.name(), outlet.dtype()))
            .collect();
        let outputs = session
            .outputs()
            .iter()
            .map(|outlet| outlet.name().to_string())
            .collect();
        Ok(Model {
            backend: Backend::Ort(session),
            inputs,
            outputs,
            cache_kind: None,
        })
    }
}

impl Model {
    /// Builds the tensors of one query from named int64 inputs, each of `shape` [rows, columns].
    pub fn feed(
        &self,
        named: Vec<(String, Vec<i64>)>,
        shape: [usize; 2],
    ) -> Result<Feed, EngineError> {
        #[cfg(feature = "tract")]
        if let Backend::Tract(_) = &self.backend {
            return Ok(Feed {
                tract: Some(tract::feed(&named, shape)?),
                tensors: Vec::new(),
            });
        }
        self.feed_tensors(
            named
                .into_iter()
                .map(|(name, values)| (name, shape.to_vec(), TensorData::I64(values)))
                .collect(),
        )
    }

    /// Builds the tensors of one query from named values of any shape (ONNX Runtime only).
    pub fn feed_tensors(
        &self,
        named: Vec<(String, Vec<usize>, TensorData)>,
    ) -> Result<Feed, EngineError> {
        self.ort_ref("feeding audio or image input")?;
        let run_error = |e: ort::Error| EngineError::Run(e.to_string());
        let tensors = named
            .into_iter()
            .map(|(name, shape, data)| {
                let tensor = match data {
                    TensorData::I64(v) if shape.is_empty() => {
                        Tensor::from_array(((), v)).map_err(run_error)?.upcast()
                    }
                    TensorData::I64(v) => {
                        Tensor::from_array((shape, v)).map_err(run_error)?.upcast()
                    }
                    TensorData::F32(v) => {
                        Tensor::from_array((shape, v)).map_err(run_error)?.upcast()
                    }
                };
                Ok((name, tensor))
            })
            .collect::<Result<_, EngineError>>()?;
        Ok(Feed {
            #[cfg(feature = "tract")]
            tract: None,
            tensors,
        })
    }

    #[cfg_attr(not(feature = "tract"), allow(unused_variables))]
    fn ort_ref(&self, what: &str) -> Result<&Session, EngineError> {
        match &self.backend {
            Backend::Ort(session) => Ok(session),
            #[cfg(feature = "tract")]
            Backend::Tract(_) => Err(EngineError::Run(format!(
                "{what} needs the onnxruntime engine; tract runs text input only"
            ))),
        }
    }

    /// Runs one query and returns the output `choice` picks (see [`OutputChoice::pick`]), which
    /// must be a float32 tensor.
    pub fn run_output(
        &mut self,
        feed: &Feed,
        choice: &OutputChoice,
    ) -> Result<FloatOutput, EngineError> {
        #[cfg(feature = "tract")]
        if let (Backend::Tract(plan), Some(values)) = (&self.backend, &feed.tract) {
            return tract::run_output(plan, values, &self.outputs, choice);
        }
        let inputs: Vec<(&str, ort::session::SessionInputValue<'_>)> = feed
            .tensors
            .iter()
            .map(|(name, tensor)| (name.as_str(), tensor.into()))
            .collect();
        let outputs = self
            .ort("running")?
            .run(inputs)
            .map_err(|e| EngineError::Run(e.to_string()))?;
        let values: Vec<(&str, ort::value::DynValue)> = outputs.into_iter().collect();
        let ix = choice.pick(&output_kinds(&values))?;
        float_output(values[ix].0, &values[ix].1)
    }

    /// Runs one query and drops its outputs.
    pub fn run(&mut self, feed: &Feed) -> Result<(), EngineError> {
        #[cfg(feature = "tract")]
        if let (Backend::Tract(plan), Some(values)) = (&self.backend, &feed.tract) {
            return tract::run(plan, values);
        }
        let inputs: Vec<(&str, ort::session::SessionInputValue<'_>)> = feed
            .tensors
            .iter()
            .map(|(name, tensor)| (name.as_str(), tensor.into()))
            .collect();
        self.ort("running")?
            .run(inputs)
            .map(drop)
            .map_err(|e| EngineError::Run(e.to_string()))
    }
}

/// What the output rule needs to know of a run's outputs, in the model's order.
pub(super) fn output_kinds<'a>(outputs: &'a [(&str, ort::value::DynValue)]) -> Vec<OutputKind<'a>> {
    outputs
        .iter()
        .map(|(name, value)| match value.dtype() {
            ValueType::Tensor { ty, shape, .. } => OutputKind {
                name,
                dtype: ty.to_string(),
                shape: shape.iter().copied().collect(),
            },
            other => OutputKind {
                name,
                dtype: other.to_string(),
                shape: Vec::new(),
            },
        })
        .collect()
}

/// A float32 output's shape and values.
pub(super) fn float_output(
    name: &str,
    value: &ort::value::DynValue,
) -> Result<FloatOutput, EngineError> {
    let (shape, values) =
        value
            .try_extract_tensor::<f32>()
            .map_err(|_| EngineError::OutputNotFloat {
                name: name.to_string(),
                dtype: value.dtype().to_string(),
            })?;
    Ok(FloatOutput {
        shape: shape.iter().copied().collect(),
        values: values.to_vec(),
    })
}

fn describe_input(name: &str, dtype: &ValueType) -> InputInfo {
    let (dtype, shape) = match dtype {
        ValueType::Tensor { ty, shape, .. } => (ty.to_string(), shape.iter().copied().collect()),
        other => (other.to_string(), Vec::new()),
    };
    InputInfo {
        name: name.to_string(),
        dtype,
        shape,
    }
}
