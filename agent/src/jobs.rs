//! Carrying out benchmark jobs, one at a time: make sure the model's artifacts are held, run the
//! workload in a worker process, watch its memory from outside, kill it if it hangs, and turn
//! what happened into a result for the controller. A failing job never takes the daemon down.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgefleet_proto::v1::agent_link_client::AgentLinkClient;
use edgefleet_proto::v1::{
    job_result, workload, BenchJob, GenerateOutcome, JobResult, LatencySummary, Measurement,
    ServerOutcome, Workload,
};
use tokio::io::AsyncWriteExt;
use tonic::transport::Channel;

use crate::artifacts::{ArtifactError, ArtifactStore};
use crate::backoff::Backoff;
use crate::config::AgentConfig;
use crate::procfs;
use crate::runtime_library;
use crate::worker::protocol::{
    MediaInput, ProtocolError, QualityJob, WorkerJob, WorkerOutcome, WorkerReport,
};
use crate::worker::{start_error, worker_command, StartError};

/// Why a job (or the worker it ran in) failed; its `Display` is the reason the controller shows.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("the job names no model")]
    NoModel,
    #[error("the job has no workload")]
    NoWorkload,
    #[error("model {name}@{version} has no files")]
    NoFiles { name: String, version: String },
    #[error("the reference model has no files")]
    ReferenceHasNoFiles,
    #[error("the workload has no input")]
    NoInput,
    #[error("scenario `{0}` is not supported by this agent (supported: {supported})", supported = SCENARIOS.join(", "))]
    UnsupportedScenario(String),
    #[error("a server scenario needs a target rate and a p99 bound")]
    ServerNeedsBound,
    #[error("image input needs three {name} values, not {count}")]
    Channels { name: &'static str, count: usize },
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Library(#[from] runtime_library::LibraryNotFound),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("{source} (gave up after {attempts} attempts without progress)")]
    GaveUp {
        #[source]
        source: ArtifactError,
        attempts: u32,
    },
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot hand the job to the worker: {0}")]
    HandOver(#[source] std::io::Error),
    #[error("lost the worker: {0}")]
    Lost(#[source] std::io::Error),
    #[error("worker hung past its timeout of {0} s and was killed")]
    Hung(u64),
    #[error("worker exceeded {limit_mb} MB of memory (resident {seen_mb} MB) and was stopped")]
    MemoryLimit { limit_mb: u64, seen_mb: u64 },
    /// The worker's own reason, as it arrived in its JSON outcome.
    #[error("{0}")]
    Failed(String),
    /// The worker died without a result: how, and the last line of its stderr (`: …`, or empty).
    #[error("worker {how} without a result{hint}")]
    NoResult { how: String, hint: String },
    /// The worker's answer was of another kind than the job (`a timing job`, `a quality job`,
    /// `the health check`).
    #[error("the worker answered {0} with something else")]
    UnexpectedAnswer(&'static str),
}

/// The scenarios this agent runs.
const SCENARIOS: [&str; 5] = [
    "single-stream",
    "multi-stream",
    "offline",
    "server",
    "generate",
];

/// Time a worker gets beyond the workload's maximum duration (per repetition), for loading and
/// warm-up.
pub(crate) const WORKER_GRACE: Duration = Duration::from_secs(180);
/// Tries in a row that make no progress before an artifact's job fails: waits of about 1, 2, 4,
/// 8 and 16 s between them (each drawn from the upper half of that ceiling, so a fleet does not
/// retry in lock-step). A try that got further than the one before starts the count again: a
/// link that keeps breaking still delivers, as long as each connection moves some bytes.
const FETCH_ATTEMPTS: u32 = 6;
/// How often a worker's memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// Everything a job needs from the daemon.
#[derive(Clone)]
pub struct JobContext {
    pub config: AgentConfig,
    pub agent_id: String,
    pub store: ArtifactStore,
    /// The link's channel, whichever certificate it uses now.
    pub channel: crate::channel::LinkChannel,
    pub installer: crate::installer::ModelInstaller,
    pub enrollment: crate::enrollment::Enrollment,
}

impl JobContext {
    /// A client on the link's current channel.
    pub fn client(&self) -> AgentLinkClient<Channel> {
        AgentLinkClient::new(self.channel.get()).max_decoding_message_size(16 << 20)
    }
}

/// Runs one job to a result; every failure becomes a result with its reason.
pub async fn execute(ctx: &mut JobContext, run_id: &str, job: BenchJob) -> JobResult {
    let started_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let threads = job.workload.as_ref().map_or(1, |w| w.threads.max(1));
    let outcome = match measure(ctx, &job).await {
        Ok((report, outside_peak, quality)) => {
            let mut m = Measurement {
                threads,
                ..measurement(report, outside_peak, started_at)
            };
            if let Some((reference, quality)) = quality {
                m.quality_reference = reference;
                match quality {
                    Ok(values) => m.quality = values.into_iter().collect(),
                    Err(error) => m.quality_error = error.to_string(),
                }
            }
            job_result::Outcome::Measurement(m)
        }
        Err(error) => job_result::Outcome::Error(error.to_string()),
    };
    JobResult {
        run_id: run_id.to_string(),
        job_id: job.job_id,
        outcome: Some(outcome),
    }
}

/// A quality check's reference (`name@version`) and what it found.
type QualityOutcome = Option<(String, Result<BTreeMap<String, f64>, JobError>)>;

/// Times the model in one worker, then (if asked) compares it with the reference in another, so
/// the second model never counts in the first one's memory.
async fn measure(
    ctx: &mut JobContext,
    job: &BenchJob,
) -> Result<(WorkerReport, u64, QualityOutcome), JobError> {
    let model = job.model.as_ref().ok_or(JobError::NoModel)?;
    let workload = job.workload.as_ref().ok_or(JobError::NoWorkload)?;
    let onnx = model.files.first().ok_or_else(|| JobError::NoFiles {
        name: model.name.clone(),
        version: model.version.clone(),
    })?;
    let mut tokenizer_path = None;
    let mut model_path = None;
    for file in &model.files {
        let path = fetch_with_retries(ctx, &file.sha256).await?;
        if file.sha256 == onnx.sha256 {
            model_path = Some(path);
        } else if file.file_name == "tokenizer.json" {
            tokenizer_path = Some(path);
        }
    }
    let model_path = model_path.expect("the model file was fetched above");
    // Input files (audio, image) are artifacts too.
    let input_refs = match &workload.input {
        Some(workload::Input::Audio(a)) => a.files.as_slice(),
        Some(workload::Input::Image(i)) => i.files.as_slice(),
        _ => &[],
    };
    let mut input_paths = Vec::new();
    for file in input_refs {
        input_paths.push(fetch_with_retries(ctx, &file.sha256).await?);
    }
    let library = match runtime_library::locate(ctx.config.onnxruntime_library.as_deref()) {
        Ok(path) => path,
        // tract needs no ONNX Runtime: a device without the library still runs tract jobs.
        Err(_) if workload.engine == "tract" => std::path::PathBuf::new(),
        Err(e) => return Err(e.into()),
    };
    let worker_job = worker_job(
        workload,
        library,
        model_path,
        tokenizer_path,
        input_paths,
        &ctx.config.sensors_root,
    )?;
    let timeout =
        Duration::from_millis(worker_job.max_duration_ms) * worker_job.repetitions + WORKER_GRACE;
    let (report, peak) =
        match run_worker(&worker_job, timeout, ctx.config.worker_memory_limit_bytes).await? {
            (WorkerOutcome::Measured(report), peak) => (*report, peak),
            _ => return Err(JobError::UnexpectedAnswer("a timing job")),
        };
    let quality = match (&job.reference, workload.quality_metric.is_empty()) {
        (Some(reference), false) => {
            let name = format!("{}@{}", reference.name, reference.version);
            Some((name, compare(ctx, reference, workload, worker_job).await))
        }
        _ => None,
    };
    Ok((report, peak, quality))
}

/// The quality worker: the same model and tokenizer, the reference, and the golden sentences.
async fn compare(
    ctx: &mut JobContext,
    reference: &edgefleet_proto::v1::ModelSpec,
    workload: &Workload,
    timing_job: WorkerJob,
) -> Result<BTreeMap<String, f64>, JobError> {
    let onnx = reference
        .files
        .first()
        .ok_or(JobError::ReferenceHasNoFiles)?;
    let reference_path = fetch_with_retries(ctx, &onnx.sha256).await?;
    let job = WorkerJob {
        sentences: workload.golden.clone(),
        quality: Some(QualityJob {
            reference_path,
            metric: workload.quality_metric.clone(),
            output: Some(workload.quality_output.clone()).filter(|o| !o.is_empty()),
        }),
        ..timing_job
    };
    match run_worker(&job, WORKER_GRACE, ctx.config.worker_memory_limit_bytes).await? {
        (WorkerOutcome::Compared(values), _) => Ok(values),
        _ => Err(JobError::UnexpectedAnswer("a quality job")),
    }
}

async fn fetch_with_retries(
    ctx: &mut JobContext,
    sha256: &str,
) -> Result<std::path::PathBuf, JobError> {
    fetch_artifact(&ctx.store, &mut ctx.client(), &ctx.agent_id, sha256)
        .await
        .map(|f| f.path)
}

/// A transfer that breaks (the controller restarts, the network drops) is retried, resuming at
/// the byte it reached, before it is given up. Bytes that fail verification are not retried:
/// the same bytes would come again.
pub(crate) async fn fetch_artifact(
    store: &ArtifactStore,
    client: &mut AgentLinkClient<Channel>,
    agent_id: &str,
    sha256: &str,
) -> Result<crate::artifacts::Fetched, JobError> {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(16));
    let mut attempt = 1;
    let mut reached = store.partial_len(sha256);
    loop {
        match store.ensure(client, agent_id, sha256).await {
            Ok(fetched) => return Ok(fetched),
            Err(e @ ArtifactError::Corrupt { .. }) => return Err(e.into()),
            Err(e @ ArtifactError::Io { .. }) => {
                // The device's own disk said no (full, read-only): trying again will not help,
                // and the partial file would only hold on to the space.
                store.discard_partial(sha256);
                return Err(e.into());
            }
            Err(e) if store.partial_len(sha256) > reached => {
                reached = store.partial_len(sha256);
                attempt = 1;
                backoff.reset();
                let delay = backoff.next_delay(&mut rand::rng());
                tracing::warn!(%sha256, reached, error = %e, retry_in_ms = delay.as_millis() as u64, "artifact transfer broke after some progress; resuming");
                tokio::time::sleep(delay).await;
            }
            Err(e) if attempt < FETCH_ATTEMPTS => {
                let delay = backoff.next_delay(&mut rand::rng());
                tracing::warn!(%sha256, attempt, error = %e, retry_in_ms = delay.as_millis() as u64, "artifact transfer failed; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(source) => {
                return Err(JobError::GaveUp {
                    source,
                    attempts: FETCH_ATTEMPTS,
                })
            }
        }
    }
}

fn worker_job(
    workload: &Workload,
    library: std::path::PathBuf,
    model_path: std::path::PathBuf,
    tokenizer_path: Option<std::path::PathBuf>,
    input_paths: Vec<std::path::PathBuf>,
    sensors_root: &std::path::Path,
) -> Result<WorkerJob, JobError> {
    if !SCENARIOS.contains(&workload.scenario.as_str()) {
        return Err(JobError::UnsupportedScenario(workload.scenario.clone()));
    }
    if workload.scenario == "server" && !(workload.target_qps > 0.0 && workload.p99_bound_ms > 0.0)
    {
        return Err(JobError::ServerNeedsBound);
    }
    let channels = |v: &[f32], name: &'static str| -> Result<[f32; 3], JobError> {
        v.try_into().map_err(|_| JobError::Channels {
            name,
            count: v.len(),
        })
    };
    let (sentences, sequence_length, media) = match &workload.input {
        None => return Err(JobError::NoInput),
        Some(workload::Input::Text(text)) => (
            text.sentences.clone(),
            (text.sequence_length > 0).then_some(text.sequence_length),
            None,
        ),
        Some(workload::Input::Audio(a)) => (
            Vec::new(),
            None,
            Some(MediaInput::Audio {
                files: input_paths,
                sample_rate: a.sample_rate,
                chunk_samples: a.chunk_samples,
                context_samples: a.context_samples,
            }),
        ),
        Some(workload::Input::Image(i)) => (
            Vec::new(),
            None,
            Some(MediaInput::Image {
                files: input_paths,
                width: i.width,
                height: i.height,
                resize: i.resize.clone(),
                mean: channels(&i.mean, "mean")?,
                std: channels(&i.std, "std")?,
            }),
        ),
    };
    if let Some(media) = &media {
        media.check()?;
    }
    Ok(WorkerJob {
        onnxruntime_library: library,
        model_path,
        tokenizer_path,
        sentences,
        sequence_length,
        threads: workload.threads.max(1),
        warmup_queries: workload.warmup_queries,
        min_queries: workload.min_queries.max(1),
        min_duration_ms: workload.min_duration_ms,
        max_duration_ms: workload.max_duration_ms.max(workload.min_duration_ms),
        repetitions: workload.repetitions.max(1),
        scenario: workload.scenario.clone(),
        batch: workload.batch.max(1),
        target_qps: workload.target_qps,
        p99_bound_ms: workload.p99_bound_ms,
        seed: workload.seed,
        peak_search: workload.peak_search,
        sensors_root: sensors_root.to_path_buf(),
        idle_power_s: workload.idle_power_s,
        max_start_temp_c: workload.max_start_temp_c,
        max_wait_s: workload.max_wait_s,
        quality: None,
        prompt_tokens: workload.prompt_tokens,
        generate_tokens: workload.generate_tokens,
        engine: workload.engine.clone(),
        execution_provider: workload.execution_provider.clone(),
        graph_optimization: workload.graph_optimization.clone(),
        inter_op_threads: workload.inter_op_threads,
        media,
    })
}

/// Starts a worker process for the job, samples its peak memory until it exits, and reads its
/// report. Returns the report and the peak resident memory seen from outside. A worker that
/// runs past `timeout`, or whose resident memory passes `memory_limit` bytes (sampled every
/// 50 ms), is killed and the job fails saying which.
pub(crate) async fn run_worker(
    job: &WorkerJob,
    timeout: Duration,
    memory_limit: Option<u64>,
) -> Result<(WorkerOutcome, u64), JobError> {
    let mut child = worker_command()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(start_error)?;
    let pid = child.id().unwrap_or(0);
    let mut stdin = child.stdin.take().expect("stdin was piped");
    let job_json = serde_json::to_vec(job).expect("job serializes");
    stdin
        .write_all(&job_json)
        .await
        .map_err(JobError::HandOver)?;
    drop(stdin);

    let output = child.wait_with_output();
    tokio::pin!(output);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut peak = 0u64;
    let output = loop {
        tokio::select! {
            out = &mut output => break out.map_err(JobError::Lost)?,
            _ = tokio::time::sleep(SAMPLE_EVERY) => {
                peak = peak.max(procfs::peak_rss_bytes(pid).unwrap_or(0));
                if let Some(limit) = memory_limit.filter(|&limit| peak > limit) {
                    // Dropping the output future kills the worker (kill_on_drop).
                    return Err(JobError::MemoryLimit {
                        limit_mb: limit >> 20,
                        seen_mb: peak >> 20,
                    });
                }
                if tokio::time::Instant::now() >= deadline {
                    // Dropping the output future kills the worker (kill_on_drop).
                    return Err(JobError::Hung(timeout.as_secs()));
                }
            }
        }
    };

    let stdout = String::from_utf8_lossy(&output.stdout);
    let last_line = stdout.lines().last().unwrap_or("");
    match serde_json::from_str::<WorkerOutcome>(last_line) {
        Ok(WorkerOutcome::Failed(reason)) => Err(JobError::Failed(reason)),
        Ok(outcome) => Ok((outcome, peak)),
        Err(_) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let hint = stderr.lines().last().unwrap_or("").trim();
            let how = match output.status.signal() {
                Some(9) => "was killed (signal 9: out of memory?)".to_string(),
                Some(sig) => format!("crashed (signal {sig})"),
                None => format!("exited with {}", output.status),
            };
            Err(JobError::NoResult {
                how,
                hint: if hint.is_empty() {
                    String::new()
                } else {
                    format!(": {hint}")
                },
            })
        }
    }
}

fn measurement(report: WorkerReport, outside_peak: u64, started_at: i64) -> Measurement {
    let l = &report.latency_ms;
    let c = &report.conditions;
    Measurement {
        samples: report.samples,
        duration_s: report.duration_s,
        valid: report.valid,
        load_ms: report.load_ms,
        first_inference_ms: report.first_inference_ms,
        latency_ms: Some(LatencySummary {
            p50: l.p50,
            p90: l.p90,
            p95: l.p95,
            p99: l.p99,
            p999: l.p999,
            max: l.max,
            mean: l.mean,
            stddev: l.stddev,
            min: l.min,
            percentiles: l.percentiles.clone(),
            p50_ci_low: l.p50_ci95.0,
            p50_ci_high: l.p50_ci95.1,
            p90_ci_low: l.p90_ci95.0,
            p90_ci_high: l.p90_ci95.1,
        }),
        throughput_per_s: report.throughput_per_s,
        peak_rss_bytes: report.peak_rss_bytes.max(outside_peak),
        cpu_percent: report.cpu_percent,
        engine: report.engine,
        engine_version: report.engine_version,
        execution_provider: report.execution_provider,
        threads: 0,
        started_at_unix_ms: started_at,
        mean_tokens: report.mean_tokens,
        repetition_medians_ms: report.repetition_medians_ms,
        repetition_cv: report.repetition_cv,
        latency_histogram: report.latency_histogram,
        batch: report.batch,
        early_stopping_percentile: report.early_stopping_percentile,
        early_stopping_ms: report.early_stopping_ms,
        quality: Default::default(),
        quality_reference: String::new(),
        quality_error: String::new(),
        generate: report.generate.as_ref().map(|g| GenerateOutcome {
            prompt_tokens: g.prompt_tokens,
            generated_tokens: g.generated_tokens,
            ttft_ms_p50: g.ttft_ms_p50,
            ttft_ms_p90: g.ttft_ms_p90,
            tpot_ms_p50: g.tpot_ms_p50,
            tpot_ms_p90: g.tpot_ms_p90,
            prefill_tokens_per_s: g.prefill_tokens_per_s,
            decode_tokens_per_s: g.decode_tokens_per_s,
            tokenize_ms: g.tokenize_ms,
            kv_cache_in_place: g.kv_cache_in_place,
        }),
        // Per sample; for generate, per generated token.
        energy_j_per_sample: c.energy_j.map(|j| {
            let per_query = report
                .generate
                .as_ref()
                .map_or(u64::from(report.batch.max(1)), |g| {
                    u64::from(g.generated_tokens)
                });
            j / (report.samples.max(1) * per_query.max(1)) as f64
        }),
        energy_method: c.energy_method.clone(),
        energy_sample_hz: c.energy_sample_hz,
        idle_power_w: c.idle_power_w,
        active_power_w: c.active_power_w,
        energy_note: c.energy_note.clone(),
        temperature_start_c: c.temperature_start_c,
        temperature_max_c: c.temperature_max_c,
        throttled: c.throttled,
        cool_down_wait_s: c.cool_down_wait_s,
        server: report.server.map(|s| ServerOutcome {
            target_qps: s.target_qps,
            achieved_qps: s.achieved_qps,
            p99_bound_ms: s.p99_bound_ms,
            bound_met: s.bound_met,
            peak_qps: s.peak_qps,
        }),
    }
}
