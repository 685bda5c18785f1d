//! The benchmark suite format: TOML in, a validated [`Suite`] out, with errors that name the file,
//! the line and the field. The shipped suites live in `bench-suites/suites/` as data.
//!
//! Parsing happens in two steps: serde reads the text into raw structs that refuse unknown
//! fields, then [`Suite::parse`] turns them into typed values (`NonZeroU32`, `Duration`,
//! [`ModelRef`], [`Input`]). Past that boundary nobody reads a raw string again.
//! [`Suite::load`] also checks that the input files a suite names exist beside it.

pub mod names;
mod raw;

use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// A validated benchmark suite.
#[derive(Debug, Clone, PartialEq)]
pub struct Suite {
    pub name: String,
    pub description: String,
    /// Models that share an input and a quality check. A suite written without `[[group]]`
    /// (top-level `models`, `[input]`, `[quality]`) has exactly one, with an empty name.
    pub groups: Vec<ModelGroup>,
    pub scenarios: Vec<Scenario>,
    /// Inference engines to run every run on: onnxruntime (default) and/or tract.
    pub engines: Vec<String>,
    /// How ONNX Runtime runs: its execution providers (each onnxruntime run is repeated on
    /// every one), graph optimization level and inter-op threads.
    pub onnxruntime: OnnxRuntimeOptions,
    pub conditions: Conditions,
    /// sha256 of the suite's TOML text, recorded with every result for provenance.
    pub sha256: String,
}

/// Models benchmarked on one input, and compared with one reference.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelGroup {
    /// `[[group]]`'s name; empty for a suite without groups.
    pub name: String,
    pub models: Vec<ModelSource>,
    pub input: Input,
    /// Compare every other model of the group with a reference, when set.
    pub quality: Option<QualityCheck>,
}

/// A quality check: each model's outputs against a reference model's on golden inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityCheck {
    pub reference: ModelSource,
    /// cosine, logits (top-1 agreement and KL divergence), classes (exact match) or ctc (text
    /// read by greedy CTC decoding); see [`QUALITY_METRICS`].
    pub metric: String,
    /// Sentences both models see (text input; the input sentences when not given). Audio and
    /// image groups compare the models on their input files, and this is empty.
    pub golden: Vec<String>,
    /// The output compared, by name (`output = "..."`); when `None`, the agent picks one by the
    /// metric (for `cosine` the first float32 output of rank 2 or 3, else the first float32
    /// output). The reference uses the same name when it has an output of that name.
    pub output: Option<String>,
}

/// The engines a suite may name.
pub const ENGINES: [&str; 2] = ["onnxruntime", "tract"];

/// ONNX Runtime's settings in a suite.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxRuntimeOptions {
    /// Short provider names ([`EXECUTION_PROVIDERS`]); `["cpu"]` unless the suite says.
    pub execution_providers: Vec<String>,
    /// One of [`GRAPH_OPTIMIZATION_LEVELS`]; `all` unless the suite says.
    pub graph_optimization: String,
    /// Threads that run independent nodes in parallel (1: nodes run one after another).
    pub inter_op_threads: NonZeroU32,
}

impl Default for OnnxRuntimeOptions {
    fn default() -> OnnxRuntimeOptions {
        OnnxRuntimeOptions {
            execution_providers: vec!["cpu".into()],
            graph_optimization: "all".into(),
            inter_op_threads: NonZeroU32::MIN,
        }
    }
}

/// The execution providers a suite may name. Whether a device has one is up to the ONNX Runtime
/// library it loads: a run on a provider the library does not offer fails with the reason.
pub const EXECUTION_PROVIDERS: [&str; 10] = [
    "cpu", "cuda", "tensorrt", "openvino", "xnnpack", "acl", "qnn", "rocm", "migraphx", "nnapi",
];

/// ONNX Runtime's graph optimization levels, from none to every rewrite.
pub const GRAPH_OPTIMIZATION_LEVELS: [&str; 4] = ["disabled", "basic", "extended", "all"];

/// The quality metrics a suite may name.
pub const QUALITY_METRICS: [&str; 4] = ["cosine", "logits", "classes", "ctc"];

/// What is measured around each run: idle power first, and a cool-down guard.
#[derive(Debug, Clone, PartialEq)]
pub struct Conditions {
    /// Idle power is measured this long before each run (where an energy source exists) and
    /// subtracted from the run's energy.
    pub idle_power: std::time::Duration,
    /// Before each run, wait until the hottest thermal zone is at most this (or stops cooling).
    pub max_start_temp_c: Option<f64>,
    /// …but never longer than this.
    pub max_wait: std::time::Duration,
}

impl Default for Conditions {
    fn default() -> Self {
        Conditions {
            idle_power: std::time::Duration::from_secs(2),
            max_start_temp_c: None,
            max_wait: std::time::Duration::from_secs(120),
        }
    }
}

/// A model a suite names: a registered version (`name@version`), or an `.onnx` file for runs on
/// one device without a controller (`edgefleet-agent bench`), relative to the suite's folder.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModelSource {
    Registered(ModelRef),
    File(std::path::PathBuf),
}

impl ModelSource {
    pub fn registered(&self) -> Option<&ModelRef> {
        match self {
            ModelSource::Registered(r) => Some(r),
            ModelSource::File(_) => None,
        }
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Registered(r) => r.fmt(f),
            ModelSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

impl FromStr for ModelSource {
    type Err = String;

    /// A path ends in `.onnx`; anything else must be `name@version`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.ends_with(".onnx") {
            Ok(ModelSource::File(s.into()))
        } else {
            s.parse()
                .map(ModelSource::Registered)
                .map_err(|e: String| format!("{e}, or a path to an .onnx file"))
        }
    }
}

/// A registered model version, written `name@version` in a suite.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    pub name: String,
    pub version: String,
}

/// What each query feeds the model.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Real sentences, tokenized on the device by the model's `tokenizer.json`.
    Text {
        sentences: Vec<String>,
        /// Pad or truncate to this many tokens; `None` keeps each sentence's own length.
        sequence_length: Option<NonZeroU32>,
    },
    Audio(AudioInput),
    Image(ImageInput),
}

impl Input {
    /// The names `[input] kind` takes.
    pub const KINDS: [&'static str; 3] = ["text", "audio", "image"];

    pub fn kind(&self) -> &'static str {
        match self {
            Input::Text { .. } => "text",
            Input::Audio(_) => "audio",
            Input::Image(_) => "image",
        }
    }

    /// The files an audio or image input reads, as the suite names them.
    pub fn files(&self) -> &[PathBuf] {
        match self {
            Input::Text { .. } => &[],
            Input::Audio(a) => &a.files,
            Input::Image(i) => &i.files,
        }
    }
}

/// WAV files streamed through the model in fixed chunks, one chunk a query. A model with
/// recurrent state (an input `X` and an output `XN`, as Silero VAD's `state`/`stateN`) gets each
/// chunk's state back with the next chunk; every file starts from zeros.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioInput {
    /// Paths relative to the suite's folder, inside it (neither absolute nor with `..`).
    pub files: Vec<PathBuf>,
    /// Every file must be at this rate (no resampling on the device).
    pub sample_rate: NonZeroU32,
    /// New samples per query.
    pub chunk_samples: NonZeroU32,
    /// Samples of the previous chunk repeated in front of each chunk (zeros before the first):
    /// a query feeds `[batch, context_samples + chunk_samples]`.
    pub context_samples: u32,
}

/// Image files decoded, resized to `width` × `height`, and fed as float RGB `[batch, 3, height,
/// width]`, each channel as `(value / 255 - mean) / std`. Each query takes the next image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInput {
    /// Paths relative to the suite's folder, inside it (neither absolute nor with `..`); PNG
    /// or JPEG.
    pub files: Vec<PathBuf>,
    pub width: NonZeroU32,
    pub height: NonZeroU32,
    pub resize: Resize,
    /// Per RGB channel.
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// How an image is brought to the model's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    /// To exactly width × height.
    Stretch,
    /// Keeping its aspect ratio, as large as fits, at the top left; the rest is 0 after
    /// normalising (how PaddleOCR pads a text line for its recogniser).
    Pad,
}

impl Resize {
    pub const NAMES: [&'static str; 2] = ["stretch", "pad"];

    pub fn as_str(&self) -> &'static str {
        match self {
            Resize::Stretch => "stretch",
            Resize::Pad => "pad",
        }
    }
}

impl FromStr for Resize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stretch" => Ok(Resize::Stretch),
            "pad" => Ok(Resize::Pad),
            other => Err(format!(
                "unknown resize `{other}` (supported: {})",
                Resize::NAMES.join(", ")
            )),
        }
    }
}

/// How queries are issued, after MLPerf LoadGen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScenarioKind {
    /// The next query is issued when the previous one completes.
    SingleStream,
    /// Each query carries several samples (one batched inference); its latency is that of the
    /// slowest sample, i.e. of the whole batch.
    MultiStream { samples_per_query: NonZeroU32 },
    /// Throughput of large batches; latency is per batch.
    Offline { batch_size: NonZeroU32 },
    /// Queries arrive at random (Poisson) times at a target rate from a seeded generator;
    /// latency counts from each query's scheduled time, so queueing shows. The run passes when
    /// its p99 stays within the bound; `peak_search` also looks for the highest rate that does.
    Server {
        target_qps: f64,
        p99_bound: Duration,
        seed: u64,
        peak_search: bool,
    },
    /// A decoder with a key/value cache reads a prompt of `prompt_tokens`, then generates
    /// `generate_tokens` greedily: time to first token, time per output token, tokens/s.
    Generate {
        prompt_tokens: NonZeroU32,
        generate_tokens: NonZeroU32,
    },
}

impl ScenarioKind {
    /// The names a suite may use.
    pub const NAMES: [&'static str; 5] = [
        "single-stream",
        "multi-stream",
        "offline",
        "server",
        "generate",
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            ScenarioKind::SingleStream => "single-stream",
            ScenarioKind::MultiStream { .. } => "multi-stream",
            ScenarioKind::Offline { .. } => "offline",
            ScenarioKind::Server { .. } => "server",
            ScenarioKind::Generate { .. } => "generate",
        }
    }

    /// Samples in one inference call.
    pub fn batch(&self) -> u32 {
        match self {
            ScenarioKind::MultiStream { samples_per_query } => samples_per_query.get(),
            ScenarioKind::Offline { batch_size } => batch_size.get(),
            ScenarioKind::SingleStream
            | ScenarioKind::Server { .. }
            | ScenarioKind::Generate { .. } => 1,
        }
    }
}

/// One scenario with its run-length rules; each entry of `threads` is a separate run.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub kind: ScenarioKind,
    pub threads: Vec<NonZeroU32>,
    pub warmup_queries: u32,
    pub min_queries: NonZeroU32,
    pub min_duration: Duration,
    pub max_duration: Duration,
    /// How many times the measured phase runs; statistics pool them, and the spread of their
    /// medians shows how stable the device is.
    pub repetitions: NonZeroU32,
}

/// A suite that cannot be used, with where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SuiteError {
    /// The file path, or another name for where the text came from.
    pub origin: String,
    pub line: Option<usize>,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for SuiteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl Suite {
    /// Reads and validates a suite file, and checks that the input files it names exist
    /// (relative paths from the suite's folder).
    pub fn load(path: &Path) -> Result<Suite, SuiteError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SuiteError {
            origin: origin.clone(),
            line: None,
            field: None,
            message: format!("cannot read the suite: {e}"),
        })?;
        let dir = path.parent().unwrap_or(Path::new(""));
        raw::parse(&text, &origin, Some(dir))
    }

    /// Parses and validates suite text; `origin` names it in errors (usually its path). Input
    /// files are not looked at (the text may come from another machine).
    pub fn parse(text: &str, origin: &str) -> Result<Suite, SuiteError> {
        raw::parse(text, origin, None)
    }

    /// Every model the suite names, group by group.
    pub fn models(&self) -> impl Iterator<Item = &ModelSource> {
        self.groups.iter().flat_map(|g| &g.models)
    }

    /// Every input file the suite names, once each, as written.
    pub fn input_files(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = Vec::new();
        for file in self.groups.iter().flat_map(|g| g.input.files()) {
            if !out.contains(&file.as_path()) {
                out.push(file);
            }
        }
        out
    }

    /// Every run the suite asks for on one agent: model × engine (× execution provider, for
    /// onnxruntime) × scenario × thread count, in that order, group after group.
    pub fn plan(&self) -> Vec<PlannedRun<'_>> {
        let mut runs = Vec::new();
        for group in &self.groups {
            for model in &group.models {
                for engine in &self.engines {
                    let providers: Vec<&str> = match engine.as_str() {
                        "onnxruntime" => self
                            .onnxruntime
                            .execution_providers
                            .iter()
                            .map(String::as_str)
                            .collect(),
                        _ => vec!["cpu"],
                    };
                    for provider in providers {
                        for scenario in &self.scenarios {
                            for &threads in &scenario.threads {
                                runs.push(PlannedRun {
                                    model,
                                    group,
                                    engine,
                                    provider,
                                    scenario,
                                    threads,
                                });
                            }
                        }
                    }
                }
            }
        }
        runs
    }
}

/// One benchmark run of a suite on one agent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlannedRun<'a> {
    pub model: &'a ModelSource,
    /// The model's group: its input and quality check.
    pub group: &'a ModelGroup,
    pub engine: &'a str,
    /// The execution provider's short name (`cpu` for tract).
    pub provider: &'a str,
    pub scenario: &'a Scenario,
    pub threads: NonZeroU32,
}

impl PlannedRun<'_> {
    /// The quality check that applies to this run: its group's, unless the model is the
    /// reference itself.
    pub fn quality(&self) -> Option<&QualityCheck> {
        self.group
            .quality
            .as_ref()
            .filter(|q| q.reference != *self.model)
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

impl FromStr for ModelRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, version) = s
            .split_once('@')
            .ok_or_else(|| format!("`{s}` is not name@version"))?;
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
        };
        if !valid(name) || !valid(version) {
            return Err(format!(
                "`{s}` is not name@version (letters, digits, `.`, `_`, `-`, `+`)"
            ));
        }
        names::model_name(name)
            .and_then(|()| names::version(version))
            .map_err(|e| format!("`{s}` cannot name a model: {e}"))?;
        Ok(ModelRef {
            name: name.to_string(),
            version: version.to_string(),
        })
    }
}

/// The sha256 of a suite's text, as recorded on its results.
pub fn suite_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The suites shipped in `bench-suites/suites/`, built into the binaries: (name, TOML text).
pub const SHIPPED: [(&str, &str); 7] = [
    ("quick", include_str!("../suites/quick.toml")),
    ("slm-encoders", include_str!("../suites/slm-encoders.toml")),
    (
        "slm-encoders-128",
        include_str!("../suites/slm-encoders-128.toml"),
    ),
    ("slm-generate", include_str!("../suites/slm-generate.toml")),
    ("audio-vad", include_str!("../suites/audio-vad.toml")),
    ("vision-ocr", include_str!("../suites/vision-ocr.toml")),
    ("runtimes", include_str!("../suites/runtimes.toml")),
];
