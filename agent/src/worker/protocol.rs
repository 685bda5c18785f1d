//! The daemon↔worker protocol: what the daemon sends a worker as JSON on its stdin
//! ([`WorkerJob`]), what the worker prints on its stdout ([`WorkerOutcome`], or [`RuntimeProbe`]
//! for `--probe`), and the reports inside. Plain serde types; nothing here runs anything.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::stats::LatencySummary;

/// Why a job that arrived on stdin cannot be taken up.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("cannot read the job: {0}")]
    Read(#[source] std::io::Error),
    #[error("unreadable job: {0}")]
    Unreadable(#[source] serde_json::Error),
    /// Media settings that arrived over the wire and cannot be used (their `Debug` form).
    #[error("the job's input settings are not usable: {0}")]
    UnusableMedia(String),
}

/// What the daemon asks a worker to do (sent as JSON on its stdin).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerJob {
    pub onnxruntime_library: PathBuf,
    pub model_path: PathBuf,
    pub tokenizer_path: Option<PathBuf>,
    pub sentences: Vec<String>,
    pub sequence_length: Option<u32>,
    pub threads: u32,
    pub warmup_queries: u32,
    pub min_queries: u32,
    pub min_duration_ms: u64,
    pub max_duration_ms: u64,
    pub repetitions: u32,
    /// single-stream | multi-stream | offline | server
    pub scenario: String,
    /// Samples per inference call.
    pub batch: u32,
    /// Server scenario settings.
    pub target_qps: f64,
    pub p99_bound_ms: f64,
    pub seed: u64,
    pub peak_search: bool,
    /// Where sensors are read (`/` on a device).
    pub sensors_root: PathBuf,
    /// Idle power is measured this long before the run (0: not at all).
    pub idle_power_s: f64,
    /// Cool-down guard: wait until the hottest zone is at most this, at most `max_wait_s`.
    pub max_start_temp_c: Option<f64>,
    pub max_wait_s: f64,
    /// When set, the worker only compares the model with this reference on `sentences`.
    pub quality: Option<QualityJob>,
    /// Generate scenario: prompt and generated lengths.
    pub prompt_tokens: u32,
    pub generate_tokens: u32,
    /// onnxruntime (also when empty) or tract.
    #[serde(default)]
    pub engine: String,
    /// ONNX Runtime's execution provider by short name (`cuda`; CPU when empty or `cpu`).
    #[serde(default)]
    pub execution_provider: String,
    /// ONNX Runtime's graph optimization level: disabled, basic, extended or all (when empty).
    #[serde(default)]
    pub graph_optimization: String,
    /// ONNX Runtime's inter-op threads (1 when 0).
    #[serde(default)]
    pub inter_op_threads: u32,
    /// Audio or image input instead of `sentences`.
    #[serde(default)]
    pub media: Option<MediaInput>,
}

/// A quality comparison: the job's model against a reference model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QualityJob {
    pub reference_path: PathBuf,
    /// cosine | logits | classes | ctc
    pub metric: String,
    /// The output compared, by name; picked by the metric when `None`
    /// ([`OutputChoice`](crate::engine::OutputChoice)).
    #[serde(default)]
    pub output: Option<String>,
}

/// A worker's answer (JSON on its stdout).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerOutcome {
    Measured(Box<WorkerReport>),
    Compared(BTreeMap<String, f64>),
    /// Scenario `load` (a health check of a model without a tokenizer): it loaded, and what a
    /// smoke inference on zero-filled inputs gave (or why none could be made).
    Loaded {
        load_ms: f64,
        smoke: String,
    },
    Failed(String),
}

/// What a worker measured from inside.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerReport {
    pub engine: String,
    pub engine_version: String,
    pub execution_provider: String,
    pub load_ms: f64,
    pub first_inference_ms: f64,
    pub samples: u64,
    pub duration_s: f64,
    pub valid: bool,
    pub latency_ms: LatencySummary,
    pub throughput_per_s: f64,
    pub cpu_percent: Option<f64>,
    pub peak_rss_bytes: u64,
    pub mean_tokens: f64,
    pub repetition_medians_ms: Vec<f64>,
    pub repetition_cv: Option<f64>,
    /// HdrHistogram V2 + deflate of every warm latency, in nanoseconds.
    pub latency_histogram: Vec<u8>,
    /// Samples per inference call; `samples` counts calls, throughput counts samples.
    pub batch: u32,
    pub server: Option<ServerReport>,
    /// The scenario's target percentile (0 when it has none) and its early-stopping estimate.
    pub early_stopping_percentile: f64,
    pub early_stopping_ms: Option<f64>,
    pub conditions: Observed,
    /// Generate scenario only.
    pub generate: Option<GenerateReport>,
}

/// Decoder timings of a generate run, in ms unless named otherwise.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateReport {
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    pub ttft_ms_p50: f64,
    pub ttft_ms_p90: f64,
    pub tpot_ms_p50: f64,
    pub tpot_ms_p90: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    /// Tokenizing the prompt, timed apart and excluded from everything above.
    pub tokenize_ms: f64,
    /// The decoder's key/value cache was written in place (see `engine::CacheKind`).
    #[serde(default)]
    pub kv_cache_in_place: bool,
}

/// How a server-scenario run fared against its bound.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerReport {
    pub target_qps: f64,
    pub achieved_qps: f64,
    pub p99_bound_ms: f64,
    pub bound_met: bool,
    pub peak_qps: Option<f64>,
}

/// The answer to `worker --probe`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeProbe {
    pub version: String,
    pub execution_providers: Vec<String>,
}

/// Audio or image input of a job (text input is the job's `sentences`); local file paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MediaInput {
    Audio {
        files: Vec<PathBuf>,
        sample_rate: u32,
        chunk_samples: u32,
        context_samples: u32,
    },
    Image {
        files: Vec<PathBuf>,
        width: u32,
        height: u32,
        /// stretch | pad
        resize: String,
        mean: [f32; 3],
        std: [f32; 3],
    },
}

impl MediaInput {
    /// Checks values that arrived over the wire (a suite already validated them once).
    pub fn check(&self) -> Result<(), ProtocolError> {
        let ok = match self {
            MediaInput::Audio {
                files,
                sample_rate,
                chunk_samples,
                ..
            } => !files.is_empty() && *sample_rate > 0 && *chunk_samples > 0,
            MediaInput::Image {
                files,
                width,
                height,
                resize,
                std,
                ..
            } => {
                !files.is_empty()
                    && *width > 0
                    && *height > 0
                    && edgefleet_suites::Resize::NAMES.contains(&resize.as_str())
                    && std.iter().all(|s| *s > 0.0)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(ProtocolError::UnusableMedia(format!("{self:?}")))
        }
    }
}

/// What was observed, ready for the result.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Observed {
    /// rapl | hwmon-energy | hwmon-power | ina3221 | pmic | nvml | none
    pub energy_method: String,
    /// Net of idle power, for the whole measured phase.
    pub energy_j: Option<f64>,
    pub energy_sample_hz: f64,
    pub idle_power_w: Option<f64>,
    pub active_power_w: Option<f64>,
    /// Why a source that exists gave no number.
    pub energy_note: String,
    pub temperature_start_c: Option<f64>,
    pub temperature_max_c: Option<f64>,
    pub throttled: Option<bool>,
    pub cool_down_wait_s: f64,
}
