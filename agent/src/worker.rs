//! The benchmark worker: a separate process (`edgefleet-agent worker`) that loads ONNX Runtime and
//! one model, runs the workload, and prints a JSON report on stdout. Keeping it out of the daemon
//! means a crashing or memory-hungry model takes down only the worker, and the daemon's own
//! footprint stays small.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::engine::{Model, Runtime, ENGINE_NAME};
use crate::procfs;
use crate::stats::{self, LatencySummary};

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
}

/// A worker's answer (JSON on its stdout).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerOutcome {
    Measured(Box<WorkerReport>),
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
}

/// The answer to `worker --probe`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeProbe {
    pub version: String,
    pub execution_providers: Vec<String>,
}

/// A command that starts this same binary as a worker. `/proc/self/exe` still runs the binary
/// the daemon started from after a package upgrade replaced the file on disk.
pub fn worker_command() -> tokio::process::Command {
    let exe = Path::new("/proc/self/exe");
    let exe = if exe.exists() {
        exe.to_path_buf()
    } else {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("edgefleet-agent"))
    };
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("worker").kill_on_drop(true);
    cmd
}

/// A worker must not outlive the daemon that watches it (a SIGKILLed daemon cannot clean up).
fn die_with_parent() {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    // The parent may have died before the line above ran.
    if nix::unistd::getppid().as_raw() == 1 {
        std::process::exit(1);
    }
}

/// Entry point of `edgefleet-agent worker`: reads a [`WorkerJob`] from stdin and prints a
/// [`WorkerOutcome`]. Exits 0 when it measured, 1 when the job failed.
pub fn main_job() -> std::process::ExitCode {
    die_with_parent();
    let (outcome, code) = match read_job().and_then(|job| run_job(&job)) {
        Ok(report) => (
            WorkerOutcome::Measured(Box::new(report)),
            std::process::ExitCode::SUCCESS,
        ),
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

/// Entry point of `edgefleet-agent worker --probe`.
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

/// Loads the runtime and model, tokenizes the sentences, and runs the single-stream loop.
pub fn run_job(job: &WorkerJob) -> Result<WorkerReport, String> {
    let runtime = Runtime::load(&job.onnxruntime_library).map_err(|e| e.to_string())?;
    let load_start = Instant::now();
    let mut model = runtime
        .load_model(&job.model_path, job.threads.max(1) as usize)
        .map_err(|e| e.to_string())?;
    let load_ms = ms(load_start.elapsed());

    let token_inputs = tokenize(job)?;
    let mean_tokens = token_inputs.iter().map(|t| t.ids.len()).sum::<usize>() as f64
        / token_inputs.len().max(1) as f64;
    let feeds = token_inputs
        .into_iter()
        .map(|tokens| {
            model
                .feed(feed_for(&model, tokens)?)
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, String>>()?;

    let first = Instant::now();
    model.run(&feeds[0]).map_err(|e| e.to_string())?;
    let first_inference_ms = ms(first.elapsed());
    for i in 0..job.warmup_queries as usize {
        model
            .run(&feeds[i % feeds.len()])
            .map_err(|e| e.to_string())?;
    }

    let rules = RunLength {
        min_duration: Duration::from_millis(job.min_duration_ms),
        max_duration: Duration::from_millis(job.max_duration_ms),
        min_queries: job.min_queries as usize,
    };
    let cpu_before = procfs::own_cpu_seconds();
    let mut latencies = Vec::with_capacity(rules.min_queries.max(1024));
    let mut medians = Vec::new();
    let mut wall = Duration::ZERO;
    let mut valid = true;
    for _ in 0..job.repetitions.max(1) {
        let first = latencies.len();
        let start = Instant::now();
        loop {
            let query = Instant::now();
            model
                .run(&feeds[latencies.len() % feeds.len()])
                .map_err(|e| e.to_string())?;
            latencies.push(ms(query.elapsed()));
            if rules.done(latencies.len() - first, start.elapsed()) {
                break;
            }
        }
        let elapsed = start.elapsed();
        wall += elapsed;
        valid &= rules.met(latencies.len() - first, elapsed);
        let mut this: Vec<f64> = latencies[first..].to_vec();
        this.sort_by(f64::total_cmp);
        medians.push(stats::nearest_rank(&this, 50.0));
    }
    let cpu_percent = match (cpu_before, procfs::own_cpu_seconds()) {
        (Some(before), Some(after)) => Some((after - before) / wall.as_secs_f64() * 100.0),
        _ => None,
    };
    let latency_ms = stats::summarize(&latencies).expect("at least one query ran");
    Ok(WorkerReport {
        engine: ENGINE_NAME.to_string(),
        engine_version: runtime.version.clone(),
        execution_provider: "CPUExecutionProvider".to_string(),
        load_ms,
        first_inference_ms,
        samples: latencies.len() as u64,
        duration_s: wall.as_secs_f64(),
        valid,
        latency_ms,
        throughput_per_s: latencies.len() as f64 / wall.as_secs_f64(),
        cpu_percent,
        peak_rss_bytes: procfs::own_peak_rss_bytes().unwrap_or(0),
        mean_tokens,
        repetition_cv: stats::coefficient_of_variation(&medians),
        repetition_medians_ms: medians,
        latency_histogram: stats::hdr_histogram(&latencies),
    })
}

/// When a repetition's measured phase stops: after both minimums are met, or at the maximum.
#[derive(Debug, Clone, Copy)]
struct RunLength {
    min_duration: Duration,
    max_duration: Duration,
    min_queries: usize,
}

impl RunLength {
    fn met(&self, queries: usize, elapsed: Duration) -> bool {
        queries >= self.min_queries && elapsed >= self.min_duration
    }

    fn done(&self, queries: usize, elapsed: Duration) -> bool {
        elapsed >= self.max_duration || self.met(queries, elapsed)
    }
}

/// One sentence as token ids, mask and type ids.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenInput {
    pub ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub type_ids: Vec<i64>,
}

fn tokenize(job: &WorkerJob) -> Result<Vec<TokenInput>, String> {
    let path = job
        .tokenizer_path
        .as_ref()
        .ok_or("text input needs the model's tokenizer.json, and the model has none")?;
    let mut tokenizer = tokenizers::Tokenizer::from_file(path)
        .map_err(|e| format!("cannot load tokenizer {}: {e}", path.display()))?;
    match job.sequence_length {
        None => {
            tokenizer.with_padding(None);
            tokenizer
                .with_truncation(None)
                .map_err(|e| format!("tokenizer: {e}"))?;
        }
        Some(len) => {
            let len = len as usize;
            tokenizer.with_padding(Some(tokenizers::PaddingParams {
                strategy: tokenizers::PaddingStrategy::Fixed(len),
                ..Default::default()
            }));
            tokenizer
                .with_truncation(Some(tokenizers::TruncationParams {
                    max_length: len,
                    ..Default::default()
                }))
                .map_err(|e| format!("tokenizer: {e}"))?;
        }
    }
    if job.sentences.is_empty() {
        return Err("the workload has no sentences".into());
    }
    job.sentences
        .iter()
        .map(|s| {
            let enc = tokenizer
                .encode(s.as_str(), true)
                .map_err(|e| format!("cannot tokenize `{s}`: {e}"))?;
            let widen = |v: &[u32]| v.iter().map(|&x| i64::from(x)).collect::<Vec<i64>>();
            Ok(TokenInput {
                ids: widen(enc.get_ids()),
                attention_mask: widen(enc.get_attention_mask()),
                type_ids: widen(enc.get_type_ids()),
            })
        })
        .collect()
}

/// Matches token arrays to the model's declared inputs by name.
fn feed_for(model: &Model, tokens: TokenInput) -> Result<Vec<(String, Vec<i64>)>, String> {
    let mut feed = Vec::new();
    for input in &model.inputs {
        let values = match input.name.as_str() {
            "input_ids" => tokens.ids.clone(),
            "attention_mask" => tokens.attention_mask.clone(),
            "token_type_ids" => tokens.type_ids.clone(),
            other => {
                return Err(format!(
                    "model input `{other}` ({} {:?}) cannot be fed from text; text feeds input_ids, attention_mask and token_type_ids",
                    input.dtype, input.shape
                ))
            }
        };
        if input.dtype != "i64" && input.dtype != "int64" {
            return Err(format!(
                "model input `{}` is {}, but token inputs are int64",
                input.name, input.dtype
            ));
        }
        if input.shape.len() != 2 {
            return Err(format!(
                "model input `{}` has shape {:?}, but token inputs are [batch, sequence]",
                input.name, input.shape
            ));
        }
        feed.push((input.name.clone(), values));
    }
    Ok(feed)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
