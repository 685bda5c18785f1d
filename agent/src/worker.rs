//! The benchmark worker: a separate process (`edgefleet-agent-worker`) that loads ONNX Runtime and
//! one model, runs the workload, and prints a JSON report on stdout. Keeping it out of the daemon
//! means a crashing or memory-hungry model takes down only the worker, and the daemon's own
//! footprint stays small.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub mod audio_input;
pub mod conditions;
pub mod generate;
pub mod image_input;
pub mod measure;
pub mod quality;
pub mod queries;
pub mod text_input;

use crate::engine::{FloatOutput, Runtime, SessionSettings, ENGINE_NAME};
use crate::procfs;
use crate::stats::{self, LatencySummary};
use measure::{run_phase, Arrivals, RunLength};
pub use queries::MediaInput;
use queries::Queries;

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
    /// cosine | logits | classes
    pub metric: String,
}

/// A worker's answer (JSON on its stdout).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerOutcome {
    Measured(Box<WorkerReport>),
    Compared(std::collections::BTreeMap<String, f64>),
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
    pub conditions: conditions::Observed,
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

/// The worker's program name, installed next to `edgefleet-agent`.
pub const WORKER_BINARY: &str = "edgefleet-agent-worker";

/// A command that starts the worker binary that sits next to this program. (After a package
/// upgrade replaced the files, `current_exe` reads "… (deleted)"; its folder still holds the new
/// worker.)
pub fn worker_command() -> tokio::process::Command {
    let dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let mut cmd = tokio::process::Command::new(dir.join(WORKER_BINARY));
    cmd.kill_on_drop(true);
    cmd
}

/// Why the worker binary would not start, naming where it was expected.
pub fn start_error(e: &std::io::Error) -> String {
    let program = worker_command().as_std().get_program().to_owned();
    format!(
        "cannot start the benchmark worker {}: {e} (it is installed next to edgefleet-agent)",
        Path::new(&program).display()
    )
}

/// A worker must not outlive the daemon that watches it (a SIGKILLed daemon cannot clean up).
fn die_with_parent() {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    // The parent may have died before the line above ran.
    if nix::unistd::getppid().as_raw() == 1 {
        std::process::exit(1);
    }
}

/// Entry point of `edgefleet-agent-worker`: reads a [`WorkerJob`] from stdin and prints a
/// [`WorkerOutcome`]. Exits 0 when it measured, 1 when the job failed.
pub fn main_job() -> std::process::ExitCode {
    die_with_parent();
    let outcome = read_job().and_then(|job| match &job.quality {
        Some(q) => run_quality(&job, q).map(WorkerOutcome::Compared),
        None if job.scenario == "load" => {
            let engine = Engine::start(&job)?;
            let start = Instant::now();
            let mut model = engine.load(&job, &job.model_path)?;
            let load_ms = ms(start.elapsed());
            let smoke = smoke_inference(&mut model, job.min_queries.max(1))?;
            Ok(WorkerOutcome::Loaded { load_ms, smoke })
        }
        None => run_job(&job).map(|r| WorkerOutcome::Measured(Box::new(r))),
    });
    let (outcome, code) = match outcome {
        Ok(outcome) => (outcome, std::process::ExitCode::SUCCESS),
        Err(message) => (
            WorkerOutcome::Failed(message),
            std::process::ExitCode::FAILURE,
        ),
    };
    println!(
        "{}",
        serde_json::to_string(&outcome).expect("outcome serializes")
    );
    code
}

/// Entry point of `edgefleet-agent-worker --probe`.
pub fn main_probe(library: &Path) -> std::process::ExitCode {
    die_with_parent();
    match Runtime::load(library) {
        Ok(runtime) => {
            let probe = RuntimeProbe {
                version: runtime.version.clone(),
                execution_providers: runtime.execution_providers.clone(),
            };
            println!(
                "{}",
                serde_json::to_string(&probe).expect("probe serializes")
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn read_job() -> Result<WorkerJob, String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the job: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("unreadable job: {e}"))
}

/// Runs every golden input through the model and the reference (sentences one at a time, each
/// image, each audio file streamed whole) and compares their first outputs by the metric.
pub fn run_quality(
    job: &WorkerJob,
    q: &QualityJob,
) -> Result<std::collections::BTreeMap<String, f64>, String> {
    let job = &with_fixed_length(job)?;
    let engine = Engine::start(job)?;
    let mut candidate = engine.load(job, &job.model_path)?;
    let mut reference = engine.load(job, &q.reference_path)?;
    if let Some(media) = &job.media {
        let pairs = queries::quality_pairs(media, &mut candidate, &mut reference)?;
        return quality::compare(&q.metric, &pairs);
    }
    if candidate.is_decoder() {
        return quality::compare(
            &q.metric,
            &decoder_pairs(job, &mut candidate, &mut reference)?,
        );
    }
    let sentences = text_input::tokenize(job)?;
    let mut pairs = Vec::new();
    for i in 0..sentences.len() {
        let batch = text_input::batch(&sentences, i, 1);
        let shape = [batch.rows, batch.columns];
        let output = |model: &mut crate::engine::Model| {
            let feed = model
                .feed(text_input::feed_for(model, &batch)?, shape)
                .map_err(|e| e.to_string())?;
            model.run_output(&feed).map_err(|e| e.to_string())
        };
        let (c, r) = (output(&mut candidate)?, output(&mut reference)?);
        pairs.push((c, r, batch.attention_mask.clone()));
    }
    quality::compare(&q.metric, &pairs)
}

/// A decoder's and its reference's logits at every position of each golden text, read from an
/// empty cache (teacher forcing: both see the same tokens, whatever either would have chosen).
fn decoder_pairs(
    job: &WorkerJob,
    candidate: &mut crate::engine::Model,
    reference: &mut crate::engine::Model,
) -> Result<Vec<(FloatOutput, FloatOutput, Vec<i64>)>, String> {
    if !reference.is_decoder() {
        return Err("the model is a decoder but its quality reference is not".into());
    }
    let tokenizer = text_input::load_tokenizer(&WorkerJob {
        sequence_length: None,
        ..job.clone()
    })?;
    let mut pairs = Vec::new();
    for tokens in text_input::encode(&tokenizer, &job.sentences)? {
        if tokens.ids.is_empty() {
            continue;
        }
        let logits = |model: &mut crate::engine::Model| {
            model.prompt_logits(&tokens.ids).map_err(|e| e.to_string())
        };
        pairs.push((logits(candidate)?, logits(reference)?, Vec::new()));
    }
    Ok(pairs)
}

/// Runs a model a few times on zero-filled inputs of its declared shapes (a dynamic dimension is
/// 1 first, 64 elsewhere: a batch of one, 64 tokens or a 64-pixel side), so a model that loads but
/// cannot run fails its health check. Inputs other than float32 and int64 cannot be made up; the
/// answer then says so.
fn smoke_inference(model: &mut crate::engine::Model, runs: u32) -> Result<String, String> {
    use crate::engine::TensorData;
    let mut named = Vec::new();
    for input in &model.inputs {
        let shape: Vec<usize> = input
            .shape
            .iter()
            .enumerate()
            .map(|(axis, &d)| match (axis, d) {
                (_, d) if d > 0 => d as usize,
                (0, _) => 1,
                _ => 64,
            })
            .collect();
        let count = shape.iter().product();
        let values = match input.dtype.as_str() {
            "f32" => TensorData::F32(vec![0.0; count]),
            "i64" => TensorData::I64(vec![0; count]),
            other => {
                return Ok(format!(
                    "no smoke inference: input `{}` is {other}, not float32 or int64",
                    input.name
                ))
            }
        };
        named.push((input.name.clone(), shape, values));
    }
    let described: Vec<String> = named
        .iter()
        .map(|(name, shape, _)| format!("{name} {shape:?}"))
        .collect();
    let feed = model.feed_tensors(named).map_err(|e| e.to_string())?;
    let mut times = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        model
            .run(&feed)
            .map_err(|e| format!("smoke inference on zero-filled inputs failed: {e}"))?;
        times.push(ms(start.elapsed()));
    }
    times.sort_by(f64::total_cmp);
    Ok(format!(
        "{runs} inferences on zero-filled inputs ({}) ok, p50 {:.2} ms",
        described.join(", "),
        stats::nearest_rank(&times, 50.0)
    ))
}

/// The engine a job runs on: ONNX Runtime (the default) or tract.
pub struct Engine {
    pub name: &'static str,
    pub version: String,
    /// The execution provider's full name (`CPUExecutionProvider`, `CUDAExecutionProvider`).
    pub provider: String,
    /// Kept alive while models built from it run.
    runtime: Option<Runtime>,
}

impl Engine {
    pub fn start(job: &WorkerJob) -> Result<Engine, String> {
        match job.engine.as_str() {
            "" | ENGINE_NAME => {
                let runtime = Runtime::load(&job.onnxruntime_library).map_err(|e| e.to_string())?;
                let provider = runtime
                    .provider(&job.execution_provider)
                    .map_err(|e| e.to_string())?;
                Ok(Engine {
                    name: ENGINE_NAME,
                    version: runtime.version.clone(),
                    provider: provider.to_string(),
                    runtime: Some(runtime),
                })
            }
            #[cfg(feature = "tract")]
            crate::engine::tract::ENGINE_NAME => {
                if job.threads > 1 {
                    return Err(format!(
                        "tract runs on one thread; this run asks for {}",
                        job.threads
                    ));
                }
                Ok(Engine {
                    name: crate::engine::tract::ENGINE_NAME,
                    version: crate::engine::tract::ENGINE_VERSION.to_string(),
                    provider: "cpu".into(),
                    runtime: None,
                })
            }
            #[cfg(not(feature = "tract"))]
            "tract" => {
                Err("this agent was built without the tract engine (cargo feature `tract`)".into())
            }
            other => Err(format!("unknown engine `{other}` (onnxruntime, tract)")),
        }
    }

    pub fn load(&self, job: &WorkerJob, path: &Path) -> Result<crate::engine::Model, String> {
        match &self.runtime {
            Some(runtime) => runtime
                .load_model(
                    path,
                    &SessionSettings {
                        intra_op_threads: job.threads.max(1) as usize,
                        inter_op_threads: job.inter_op_threads.max(1) as usize,
                        execution_provider: job.execution_provider.clone(),
                        graph_optimization: job.graph_optimization.clone(),
                    },
                )
                .map_err(|e| e.to_string()),
            #[cfg(feature = "tract")]
            None if job.media.is_some() => Err(
                "tract runs text input only here; audio and image input need the onnxruntime engine"
                    .into(),
            ),
            #[cfg(feature = "tract")]
            None => {
                // tract plans for one input shape: [batch, the job's fixed sequence length].
                let columns = job.sequence_length.unwrap_or(0) as usize;
                crate::engine::Model::load_tract(path, [job.batch.max(1) as usize, columns])
                    .map_err(|e| e.to_string())
            }
            #[cfg(not(feature = "tract"))]
            None => unreachable!("only tract runs without ONNX Runtime"),
        }
    }
}

/// tract plans for one concrete shape: without a fixed sequence length, every sentence is
/// padded to the longest one.
fn with_fixed_length(job: &WorkerJob) -> Result<WorkerJob, String> {
    if job.engine != "tract" || job.sequence_length.is_some() || job.media.is_some() {
        return Ok(job.clone());
    }
    let longest = text_input::tokenize(job)?
        .iter()
        .map(|t| t.ids.len())
        .max()
        .unwrap_or(1);
    Ok(WorkerJob {
        sequence_length: Some(longest as u32),
        ..job.clone()
    })
}

/// Loads the runtime and model, prepares the input (tokenized sentences, images, audio chunks),
/// and runs the scenario.
pub fn run_job(job: &WorkerJob) -> Result<WorkerReport, String> {
    let job = &with_fixed_length(job)?;
    let engine = Engine::start(job)?;
    let load_start = Instant::now();
    let mut model = engine.load(job, &job.model_path)?;
    let load_ms = ms(load_start.elapsed());
    if job.scenario == "generate" {
        return generate::run(job, &engine, model, load_ms);
    }

    if job.media.is_some() && job.scenario == "generate" {
        return Err("the generate scenario needs text input".into());
    }
    let rows = job.batch.max(1) as usize;
    let queries::Prepared {
        mut queries,
        mean_tokens,
    } = Queries::prepare(job, &model)?;
    let mut query = |i: usize| queries.run(&mut model, i);

    let conditions = conditions::Conditions::before_run(job);

    let first = Instant::now();
    query(0)?;
    let first_inference_ms = ms(first.elapsed());
    let mut warm = Vec::new();
    for i in 0..job.warmup_queries as usize {
        let t = Instant::now();
        query(i)?;
        warm.push(ms(t.elapsed()));
    }

    let rules = RunLength {
        min_duration: Duration::from_millis(job.min_duration_ms),
        max_duration: Duration::from_millis(job.max_duration_ms),
        min_queries: job.min_queries as usize,
    };
    let server = job.scenario == "server";
    let watch = conditions.watch();
    let cpu_before = procfs::own_cpu_seconds();
    let mut latencies = Vec::new();
    let mut medians = Vec::new();
    let mut wall = Duration::ZERO;
    let mut valid = true;
    for repetition in 0..u64::from(job.repetitions.max(1)) {
        let arrivals = if server {
            Arrivals::Poisson {
                qps: job.target_qps,
                seed: job.seed.wrapping_add(repetition),
            }
        } else {
            Arrivals::Closed
        };
        let phase = run_phase(&mut query, rules, arrivals)?;
        wall += phase.wall;
        valid &= rules.met(phase.latencies_ms.len(), phase.wall);
        let mut sorted = phase.latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        medians.push(stats::nearest_rank(&sorted, 50.0));
        latencies.extend(phase.latencies_ms);
    }
    let cpu_percent = procfs::cpu_percent_since(cpu_before, wall);
    let observed = watch.finish();
    let latency_ms = stats::summarize(&latencies).expect("at least one query ran");
    let target_percentile = match job.scenario.as_str() {
        "single-stream" => 90.0,
        "multi-stream" | "server" => 99.0,
        _ => 0.0,
    };
    let early_stopping_ms = (target_percentile > 0.0).then(|| {
        let mut sorted = latencies.clone();
        sorted.sort_by(f64::total_cmp);
        stats::early_stopping_estimate(&sorted, target_percentile)
    });
    let queries_per_s = latencies.len() as f64 / wall.as_secs_f64();
    let server = if server {
        let peak_qps = if job.peak_search {
            let mut sorted = if warm.is_empty() {
                latencies.clone()
            } else {
                warm.clone()
            };
            sorted.sort_by(f64::total_cmp);
            let service_ms = stats::nearest_rank(&sorted, 50.0);
            Some(measure::peak_search(
                &mut query,
                rules,
                service_ms,
                job.p99_bound_ms,
                job.seed,
            )?)
        } else {
            None
        };
        Some(ServerReport {
            target_qps: job.target_qps,
            achieved_qps: queries_per_s,
            p99_bound_ms: job.p99_bound_ms,
            bound_met: latency_ms.p99 <= job.p99_bound_ms,
            peak_qps,
        })
    } else {
        None
    };
    Ok(WorkerReport {
        engine: engine.name.to_string(),
        engine_version: engine.version.clone(),
        execution_provider: engine.provider.to_string(),
        load_ms,
        first_inference_ms,
        samples: latencies.len() as u64,
        duration_s: wall.as_secs_f64(),
        valid,
        latency_ms,
        throughput_per_s: queries_per_s * rows as f64,
        cpu_percent,
        peak_rss_bytes: procfs::own_peak_rss_bytes().unwrap_or(0),
        mean_tokens,
        repetition_cv: stats::coefficient_of_variation(&medians),
        repetition_medians_ms: medians,
        latency_histogram: stats::hdr_histogram(&latencies),
        batch: rows as u32,
        server,
        early_stopping_percentile: target_percentile,
        early_stopping_ms: early_stopping_ms.flatten(),
        conditions: observed,
        generate: None,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
