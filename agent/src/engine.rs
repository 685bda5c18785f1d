//! The inference engines: ONNX Runtime through `ort`, loaded from a shared library at run time,
//! and (cargo feature `tract`) the pure-Rust tract. This module and [`tract`] are the only ones
//! that touch an engine; they run only inside worker processes.

#[cfg(feature = "tract")]
pub mod tract;

use std::path::{Path, PathBuf};

use ort::ep::ExecutionProvider;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{DynTensor, DynValue, Tensor, ValueType};

/// Name of this engine on results.
pub const ENGINE_NAME: &str = "onnxruntime";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    Library { path: PathBuf, message: String },
    #[error("cannot load model {path}: {message}")]
    Model { path: PathBuf, message: String },
    #[error("inference failed: {0}")]
    Run(String),
    /// A session setting the loaded library cannot honour (provider, optimization level).
    #[error("{0}")]
    Setting(String),
    #[error(
        "model input `{name}` is {dtype}, but edgefleet can only feed int64 token inputs to it"
    )]
    UnsupportedInput { name: String, dtype: String },
}

/// A loaded ONNX Runtime library.
pub struct Runtime {
    _environment: ort::environment::Environment,
    pub version: String,
    pub execution_providers: Vec<String>,
}

/// One model input as the session declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct InputInfo {
    pub name: String,
    pub dtype: String,
    /// -1 for a dynamic dimension.
    pub shape: Vec<i64>,
}

/// A model ready to run.
pub struct Model {
    backend: Backend,
    pub inputs: Vec<InputInfo>,
    /// Output names, in the model's order.
    pub outputs: Vec<String>,
}

/// Which engine runs a model.
enum Backend {
    Ort(Session),
    #[cfg(feature = "tract")]
    Tract(tract::Plan),
}

impl Model {
    #[cfg_attr(not(feature = "tract"), allow(unused_variables))]
    fn ort(&mut self, what: &str) -> Result<&mut Session, EngineError> {
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
        })
    }
}

/// The key/value cache of a decoder between steps: the `present.*` outputs of one step, kept as
/// ONNX Runtime values and fed back as `past_key_values.*` without copying.
pub struct KvCache {
    past: Vec<(String, ort::value::DynValue)>,
    /// Tokens the cache holds.
    pub length: usize,
}

impl Model {
    /// Whether the model is a decoder with a key/value cache (HF/Optimum naming).
    pub fn is_decoder(&self) -> bool {
        self.inputs
            .iter()
            .any(|i| i.name.starts_with("past_key_values."))
    }

    /// An empty cache: every `past_key_values.*` input with a past length of 0.
    pub fn empty_cache(&self) -> Result<KvCache, EngineError> {
        let past = self
            .inputs
            .iter()
            .filter(|i| i.name.starts_with("past_key_values."))
            .map(|i| {
                let [_, heads, _, width] = i.shape[..] else {
                    return Err(EngineError::Run(format!(
                        "decoder input `{}` has shape {:?}, not [batch, heads, past, width]",
                        i.name, i.shape
                    )));
                };
                let shape = [1usize, heads.max(1) as usize, 0, width.max(1) as usize];
                let tensor = Tensor::from_array((shape, Vec::<f32>::new()))
                    .map_err(|e| EngineError::Run(e.to_string()))?;
                Ok((i.name.clone(), tensor.into_dyn()))
            })
            .collect::<Result<_, _>>()?;
        Ok(KvCache { past, length: 0 })
    }

    /// One decoder step: feeds `tokens` after what the cache holds, keeps the new cache, and
    /// returns the most likely next token (greedy).
    pub fn decode_step(&mut self, cache: &mut KvCache, tokens: &[i64]) -> Result<i64, EngineError> {
        let logits = self.decoder_step(cache, tokens, false)?;
        let last = &logits.values[logits.values.len().saturating_sub(logits.width())..];
        Ok(last
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as i64))
    }

    /// The logits `[1, tokens, vocab]` a decoder gives at every position of `tokens` read from
    /// an empty cache (what the quality metric `logits` compares for decoders).
    pub fn prompt_logits(&mut self, tokens: &[i64]) -> Result<FloatOutput, EngineError> {
        let mut cache = self.empty_cache()?;
        self.decoder_step(&mut cache, tokens, true)
    }

    /// Feeds `tokens` after what the cache holds and keeps the new cache; returns the logits of
    /// every position, or of the last one only.
    fn decoder_step(
        &mut self,
        cache: &mut KvCache,
        tokens: &[i64],
        every_position: bool,
    ) -> Result<FloatOutput, EngineError> {
        let run_error = |e: ort::Error| EngineError::Run(e.to_string());
        let (past, new) = (cache.length, tokens.len());
        let ids = Tensor::from_array(([1usize, new], tokens.to_vec())).map_err(run_error)?;
        let mask = Tensor::from_array(([1usize, past + new], vec![1i64; past + new]))
            .map_err(run_error)?;
        let positions: Vec<i64> = (past..past + new).map(|p| p as i64).collect();
        let positions = Tensor::from_array(([1usize, new], positions)).map_err(run_error)?;
        let mut inputs: Vec<(String, ort::session::SessionInputValue<'_>)> = vec![
            ("input_ids".into(), ids.into()),
            ("attention_mask".into(), mask.into()),
        ];
        if self.inputs.iter().any(|i| i.name == "position_ids") {
            inputs.push(("position_ids".into(), positions.into()));
        }
        for (name, value) in std::mem::take(&mut cache.past) {
            inputs.push((name, value.into()));
        }
        let outputs = self
            .ort("the generate scenario")?
            .run(inputs)
            .map_err(run_error)?;
        let mut logits = None;
        for (name, value) in outputs {
            if name == "logits" {
                let (shape, values) = value.try_extract_tensor::<f32>().map_err(run_error)?;
                let vocab = *shape.last().unwrap_or(&0);
                logits = Some(if every_position {
                    FloatOutput {
                        shape: shape.to_vec(),
                        values: values.to_vec(),
                    }
                } else {
                    FloatOutput {
                        shape: vec![1, 1, vocab],
                        values: values[values.len().saturating_sub(vocab as usize)..].to_vec(),
                    }
                });
            } else if let Some(rest) = name.strip_prefix("present.") {
                cache.past.push((format!("past_key_values.{rest}"), value));
            }
        }
        cache.length = past + new;
        logits.ok_or_else(|| EngineError::Run("the decoder has no `logits` output".into()))
    }
}

/// A float32 output: its shape and values (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct FloatOutput {
    pub shape: Vec<i64>,
    pub values: Vec<f32>,
}

impl FloatOutput {
    /// The size of the last dimension (1 for a scalar).
    pub fn width(&self) -> usize {
        self.shape.last().map_or(1, |&w| w.max(0) as usize)
    }
}

/// The inputs of one query, built before timing starts.
pub struct Feed {
    #[cfg(feature = "tract")]
    tract: Option<tract::Values>,
    tensors: Vec<(String, DynTensor)>,
}

/// The values of one input tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    I64(Vec<i64>),
    F32(Vec<f32>),
}

/// Recurrent state carried from one query to the next: for each input `X` with an output `XN`
/// (or `Xn`), the output of one query is the input of the next, kept as an ONNX Runtime value
/// (Silero VAD: `stateN` → `state`). A stream starts from zeros.
pub struct Carry {
    /// (input, output) pairs.
    links: Vec<(String, String)>,
    zeros: Vec<DynTensor>,
    current: Vec<Option<DynValue>>,
}

impl Carry {
    /// Starts a new stream: the next query gets zeros.
    pub fn reset(&mut self) {
        self.current.iter_mut().for_each(|c| *c = None);
    }

    /// The inputs it feeds.
    pub fn inputs(&self) -> impl Iterator<Item = &str> {
        self.links.iter().map(|(input, _)| input.as_str())
    }
}

impl Runtime {
    /// Loads the shared library; a missing or wrong file is an error, never a panic.
    pub fn load(path: &Path) -> Result<Runtime, EngineError> {
        let library_error = |message: String| EngineError::Library {
            path: path.to_path_buf(),
            message,
        };
        let environment = ort::init_from(path)
            .map_err(|e| library_error(e.to_string()))?
            .with_name("edgefleet")
            .build()
            .map_err(|e| library_error(e.to_string()))?;
        Ok(Runtime {
            _environment: environment,
            version: version_from_file_name(path)
                .or_else(|| version_from_build_info(ort::info()))
                .unwrap_or_else(|| "unknown".into()),
            execution_providers: available_providers(),
        })
    }

    /// The full name of an execution provider given by its short name (`cuda` →
    /// `CUDAExecutionProvider`; empty → CPU), if this library offers it.
    pub fn provider(&self, short: &str) -> Result<&'static str, EngineError> {
        let (name, _) = provider_dispatch(short)?;
        if name == ort::ep::CPU::NAME || self.execution_providers.iter().any(|p| p == name) {
            Ok(name)
        } else {
            Err(EngineError::Setting(format!(
                "execution provider `{short}` ({name}) is not offered by the loaded ONNX Runtime {} (it offers {})",
                self.version,
                self.execution_providers.join(", ")
            )))
        }
    }

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
        let mut builder = Session::builder(&self._environment)
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

    /// The (input, output) pairs of recurrent state: an input `X` with an output `XN` or `Xn`.
    pub fn recurrent_links(&self) -> Vec<(String, String)> {
        self.inputs
            .iter()
            .filter_map(|i| {
                [format!("{}N", i.name), format!("{}n", i.name)]
                    .into_iter()
                    .find(|o| self.outputs.contains(o))
                    .map(|o| (i.name.clone(), o))
            })
            .collect()
    }

    /// Zeros for every recurrent input (float32, its declared shape with dynamic dimensions set
    /// to `batch`).
    pub fn carry(&self, batch: usize) -> Result<Carry, EngineError> {
        let links = self.recurrent_links();
        let zeros = links
            .iter()
            .map(|(input, _)| {
                let info = self
                    .inputs
                    .iter()
                    .find(|i| &i.name == input)
                    .expect("links name inputs");
                if info.dtype != "f32" {
                    return Err(EngineError::Run(format!(
                        "recurrent input `{input}` is {}; edgefleet carries float32 state",
                        info.dtype
                    )));
                }
                let shape: Vec<usize> = info
                    .shape
                    .iter()
                    .map(|&d| if d < 0 { batch } else { d as usize })
                    .collect();
                let count = shape.iter().product();
                Tensor::from_array((shape, vec![0f32; count]))
                    .map(|t| t.upcast())
                    .map_err(|e| EngineError::Run(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Carry {
            current: links.iter().map(|_| None).collect(),
            links,
            zeros,
        })
    }

    /// Runs one query of a stream: the feed plus the carried state; keeps the new state, and
    /// returns the first output that is not state when `keep_output` asks for it.
    pub fn run_streaming(
        &mut self,
        feed: &Feed,
        carry: &mut Carry,
        keep_output: bool,
    ) -> Result<Option<FloatOutput>, EngineError> {
        let run_error = |e: ort::Error| EngineError::Run(e.to_string());
        let mut inputs: Vec<(String, ort::session::SessionInputValue<'_>)> = feed
            .tensors
            .iter()
            .map(|(name, tensor)| (name.clone(), tensor.into()))
            .collect();
        for (((input, _), current), zeros) in carry
            .links
            .iter()
            .zip(carry.current.iter_mut())
            .zip(&carry.zeros)
        {
            let value = match current.take() {
                Some(value) => value.into(),
                None => zeros.into(),
            };
            inputs.push((input.clone(), value));
        }
        let outputs = self.ort("streaming")?.run(inputs).map_err(run_error)?;
        let mut first = None;
        for (name, value) in outputs {
            if let Some(k) = carry.links.iter().position(|(_, out)| out == name) {
                carry.current[k] = Some(value);
            } else if keep_output && first.is_none() {
                let (shape, values) = value.try_extract_tensor::<f32>().map_err(|_| {
                    EngineError::Run(format!(
                        "model output `{name}` is not a float32 tensor; quality metrics need one"
                    ))
                })?;
                first = Some(FloatOutput {
                    shape: shape.iter().copied().collect(),
                    values: values.to_vec(),
                });
            }
        }
        if keep_output && first.is_none() {
            return Err(EngineError::Run(
                "the model has no output besides its state".into(),
            ));
        }
        Ok(first)
    }

    /// Runs one query and returns its first output, which must be a float32 tensor.
    pub fn run_output(&mut self, feed: &Feed) -> Result<FloatOutput, EngineError> {
        #[cfg(feature = "tract")]
        if let (Backend::Tract(plan), Some(values)) = (&self.backend, &feed.tract) {
            return tract::run_output(plan, values);
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
        let (name, value) = outputs
            .iter()
            .next()
            .ok_or_else(|| EngineError::Run("the model has no outputs".into()))?;
        let (shape, values) = value.try_extract_tensor::<f32>().map_err(|_| {
            EngineError::Run(format!(
                "model output `{name}` is not a float32 tensor; quality metrics need one"
            ))
        })?;
        Ok(FloatOutput {
            shape: shape.iter().copied().collect(),
            values: values.to_vec(),
        })
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

/// `libonnxruntime.so.1.31.1` (or a symlink to it) → "1.31.1". ONNX Runtime's release builds
/// carry their version in the file name; the C API's version string is not exposed by `ort`.
fn version_from_file_name(path: &Path) -> Option<String> {
    let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let name = resolved.file_name()?.to_str()?;
    let version = name.split(".so.").nth(1)?;
    let numeric = version
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (numeric && version.contains('.')).then(|| version.to_string())
}

/// "ORT Build Info: git-branch=rel-1.31.1, …" → "1.31.1" (for builds from a release branch).
fn version_from_build_info(info: &str) -> Option<String> {
    let branch = info.split("git-branch=").nth(1)?;
    let branch = branch.split([',', ' ']).next()?;
    branch.strip_prefix("rel-").map(str::to_string)
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

/// A provider's full name, and what registers it on a session (none for the CPU provider,
/// which every session has).
fn provider_dispatch(
    short: &str,
) -> Result<(&'static str, Option<ort::ep::ExecutionProviderDispatch>), EngineError> {
    use ort::ep;
    Ok(match short.to_ascii_lowercase().as_str() {
        "" | "cpu" => (ep::CPU::NAME, None),
        "cuda" => (ep::CUDA::NAME, Some(ep::CUDA::default().build())),
        "tensorrt" => (ep::TensorRT::NAME, Some(ep::TensorRT::default().build())),
        "openvino" => (ep::OpenVINO::NAME, Some(ep::OpenVINO::default().build())),
        "xnnpack" => (ep::XNNPACK::NAME, Some(ep::XNNPACK::default().build())),
        "acl" => (ep::ACL::NAME, Some(ep::ACL::default().build())),
        "qnn" => (ep::QNN::NAME, Some(ep::QNN::default().build())),
        "rocm" => (ep::ROCm::NAME, Some(ep::ROCm::default().build())),
        "migraphx" => (ep::MIGraphX::NAME, Some(ep::MIGraphX::default().build())),
        "nnapi" => (ep::NNAPI::NAME, Some(ep::NNAPI::default().build())),
        other => {
            return Err(EngineError::Setting(format!(
                "unknown execution provider `{other}` ({})",
                edgefleet_suites::EXECUTION_PROVIDERS.join(", ")
            )))
        }
    })
}

/// The execution providers the loaded library was built with, among those edgefleet knows.
fn available_providers() -> Vec<String> {
    fn check<E: ExecutionProvider>(out: &mut Vec<String>) {
        if E::is_available().unwrap_or(false) {
            out.push(E::NAME.to_string());
        }
    }
    let mut out = Vec::new();
    check::<ort::ep::CPU>(&mut out);
    check::<ort::ep::CUDA>(&mut out);
    check::<ort::ep::TensorRT>(&mut out);
    check::<ort::ep::OpenVINO>(&mut out);
    check::<ort::ep::XNNPACK>(&mut out);
    check::<ort::ep::ACL>(&mut out);
    check::<ort::ep::QNN>(&mut out);
    check::<ort::ep::ROCm>(&mut out);
    check::<ort::ep::MIGraphX>(&mut out);
    check::<ort::ep::NNAPI>(&mut out);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_is_read_from_build_info() {
        let info = "ORT Build Info: git-branch=rel-1.31.1, git-commit-id=abc, build type=Release";
        assert_eq!(
            super::version_from_build_info(info).as_deref(),
            Some("1.31.1")
        );
        assert_eq!(super::version_from_build_info("nothing"), None);
        assert_eq!(
            super::version_from_build_info("ORT Build Info: git-branch=HEAD, x"),
            None
        );
        let name = |n: &str| super::version_from_file_name(std::path::Path::new(n));
        assert_eq!(
            name("/nonexistent/libonnxruntime.so.1.31.1").as_deref(),
            Some("1.31.1")
        );
        assert_eq!(name("/nonexistent/libonnxruntime.so"), None);
        assert_eq!(name("/nonexistent/libonnxruntime.so.x.y"), None);
    }
}
