//! `edgefleet-agent bench SUITE.toml`: a suite run on this device alone, without a controller,
//! for people tuning one device. Models are `.onnx` files named in the suite, or `name@version`
//! found as `MODELS/NAME/model.VERSION.onnx` (the set-up cache by default), each with its
//! `tokenizer.json` beside it; input files are relative to the suite. Each run goes through the
//! same worker processes as jobs from a controller; the results, and the runs that failed with
//! their reasons, come out as a table or as result records.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgefleet_reports::{
    EarlyStopping, FailedRun, GenerateDetail, LatencyCi, LatencyMs, ResultRecord, ServerOutcome,
    TemperatureC,
};
use edgefleet_suites::{Input, ModelSource, PlannedRun, ScenarioKind, Suite};

use crate::jobs::{run_worker, WORKER_GRACE};
use crate::worker::protocol::{MediaInput, QualityJob, WorkerJob, WorkerOutcome, WorkerReport};

/// Why a local run stopped.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Suite(#[from] edgefleet_suites::SuiteError),
    #[error("{}: model file {} not found", suite.display(), model.display())]
    ModelNotFound { suite: PathBuf, model: PathBuf },
    #[error("{}: `{model}` names a model by name@version, and no models folder was found: pass --models DIR (laid out as DIR/NAME/model.VERSION.onnx) or run scripts/setup.sh", suite.display())]
    NoModelsDir { suite: PathBuf, model: String },
    #[error("the worker answered a timing job with something else")]
    UnexpectedAnswer,
}

/// Where the local run gets its runtime, models and sensors.
pub struct LocalRun {
    pub onnxruntime_library: PathBuf,
    /// Where `name@version` is found, as `NAME/model.VERSION.onnx`.
    pub models_dir: Option<PathBuf>,
    pub sensors_root: PathBuf,
    pub agent_name: String,
}

/// What a local run measured, and each run that failed with its reason.
pub struct LocalOutcome {
    pub records: Vec<ResultRecord>,
    pub failures: Vec<FailedRun>,
}

/// The set-up cache's models folder of the checkout this binary was built in, if there is one
/// (`target/<profile>/edgefleet-agent` → `<checkout>/.cache/edgefleet/models`).
pub fn default_models_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(4)
        .map(|dir| dir.join(".cache/edgefleet/models"))
        .find(|dir| dir.is_dir())
}

/// Runs every planned run of the suite in turn, printing a line per run to stderr. A run that
/// fails is recorded with its reason and the others go on.
pub async fn run(suite_path: &Path, local: &LocalRun) -> Result<LocalOutcome, LocalError> {
    let suite = Suite::load(suite_path)?;
    let dir = suite_path.parent().unwrap_or(Path::new("."));
    let file = |source: &ModelSource| -> Result<PathBuf, LocalError> {
        let path = match source {
            ModelSource::File(path) => dir.join(path),
            ModelSource::Registered(r) => match &local.models_dir {
                Some(models) => models
                    .join(&r.name)
                    .join(format!("model.{}.onnx", r.version)),
                None => {
                    return Err(LocalError::NoModelsDir {
                        suite: suite_path.to_path_buf(),
                        model: r.to_string(),
                    })
                }
            },
        };
        if !path.is_file() {
            return Err(LocalError::ModelNotFound {
                suite: suite_path.to_path_buf(),
                model: path,
            });
        }
        Ok(path)
    };
    // Every model is found before anything runs.
    for run in suite.plan() {
        file(run.model)?;
        if let Some(q) = run.quality() {
            file(&q.reference)?;
        }
    }
    let plan = suite.plan();
    let mut records = Vec::new();
    let mut failures = Vec::new();
    for (i, run) in plan.iter().enumerate() {
        let model_path = file(run.model)?;
        let label = format!(
            "[{}/{}] {} on {} {} {} thread(s)",
            i + 1,
            plan.len(),
            run.model,
            run.engine,
            run.scenario.kind.as_str(),
            run.threads
        );
        eprintln!("{label} …");
        let started_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let job = worker_job(&suite, run, model_path.clone(), local, dir);
        let timeout = Duration::from_millis(job.max_duration_ms) * job.repetitions + WORKER_GRACE;
        let (report, peak) = match run_worker(&job, timeout, None).await {
            Ok((WorkerOutcome::Measured(report), peak)) => (*report, peak),
            Ok(_) => return Err(LocalError::UnexpectedAnswer),
            Err(e) => {
                eprintln!("{label} failed: {e}");
                let (model, model_version) = model_name(run.model, &model_path);
                failures.push(FailedRun {
                    agent: local.agent_name.clone(),
                    model,
                    model_version,
                    scenario: run.scenario.kind.as_str().to_string(),
                    threads: run.threads.get(),
                    error: e.to_string(),
                    run_id: String::new(),
                });
                continue;
            }
        };
        let quality = match run.quality() {
            Some(q) => {
                let reference_path = file(&q.reference)?;
                let quality_job = WorkerJob {
                    sentences: q.golden.clone(),
                    quality: Some(QualityJob {
                        reference_path,
                        metric: q.metric.clone(),
                        output: q.output.clone(),
                    }),
                    ..job.clone()
                };
                Some((
                    q.reference.to_string(),
                    run_worker(&quality_job, WORKER_GRACE, None).await,
                ))
            }
            None => None,
        };
        eprintln!(
            "{label} done: p50 {:.3} ms, {:.1}/s",
            report.latency_ms.p50, report.throughput_per_s
        );
        let mut record = record(&suite, run, &model_path, report, peak, started_at, local);
        if let Some((reference, outcome)) = quality {
            record.quality_reference = Some(reference);
            match outcome {
                Ok((WorkerOutcome::Compared(values), _)) => record.quality = Some(values),
                Ok(_) => record.quality_error = Some("unexpected worker answer".into()),
                Err(e) => record.quality_error = Some(e.to_string()),
            }
        }
        records.push(record);
    }
    Ok(LocalOutcome { records, failures })
}

/// A model's name and version in results: `name@version` as the suite says it, or the file's
/// folder and stem (`minilm-l6/model.int8`) for a model given as a file.
fn model_name(source: &ModelSource, path: &Path) -> (String, String) {
    match source {
        ModelSource::Registered(r) => (r.name.clone(), r.version.clone()),
        ModelSource::File(_) => (model_label(path), String::new()),
    }
}

/// A run's input as a worker takes it; `dir` is the suite's folder.
pub fn media_input(input: &Input, dir: &Path) -> Option<MediaInput> {
    let files = |names: &[PathBuf]| names.iter().map(|n| dir.join(n)).collect();
    match input {
        Input::Text { .. } => None,
        Input::Audio(a) => Some(MediaInput::Audio {
            files: files(&a.files),
            sample_rate: a.sample_rate.get(),
            chunk_samples: a.chunk_samples.get(),
            context_samples: a.context_samples,
        }),
        Input::Image(i) => Some(MediaInput::Image {
            files: files(&i.files),
            width: i.width.get(),
            height: i.height.get(),
            resize: i.resize.as_str().to_string(),
            mean: i.mean,
            std: i.std,
        }),
    }
}

fn worker_job(
    suite: &Suite,
    run: &PlannedRun<'_>,
    model_path: PathBuf,
    local: &LocalRun,
    dir: &Path,
) -> WorkerJob {
    let (sentences, sequence_length) = match &run.group.input {
        Input::Text {
            sentences,
            sequence_length,
        } => (sentences.clone(), sequence_length.map(|n| n.get())),
        _ => (Vec::new(), None),
    };
    let tokenizer = model_path.with_file_name("tokenizer.json");
    let s = run.scenario;
    let (target_qps, p99_bound_ms, seed, peak_search) = match s.kind {
        ScenarioKind::Server {
            target_qps,
            p99_bound,
            seed,
            peak_search,
        } => (
            target_qps,
            p99_bound.as_secs_f64() * 1000.0,
            seed,
            peak_search,
        ),
        _ => (0.0, 0.0, 0, false),
    };
    let (prompt_tokens, generate_tokens) = match s.kind {
        ScenarioKind::Generate {
            prompt_tokens,
            generate_tokens,
        } => (prompt_tokens.get(), generate_tokens.get()),
        _ => (0, 0),
    };
    WorkerJob {
        onnxruntime_library: local.onnxruntime_library.clone(),
        model_path,
        tokenizer_path: tokenizer.is_file().then_some(tokenizer),
        sentences,
        sequence_length,
        threads: run.threads.get(),
        warmup_queries: s.warmup_queries,
        min_queries: s.min_queries.get(),
        min_duration_ms: s.min_duration.as_millis() as u64,
        max_duration_ms: s.max_duration.as_millis() as u64,
        repetitions: s.repetitions.get(),
        scenario: s.kind.as_str().to_string(),
        batch: s.kind.batch(),
        target_qps,
        p99_bound_ms,
        seed,
        peak_search,
        sensors_root: local.sensors_root.clone(),
        idle_power_s: suite.conditions.idle_power.as_secs_f64(),
        max_start_temp_c: suite.conditions.max_start_temp_c,
        max_wait_s: suite.conditions.max_wait.as_secs_f64(),
        quality: None,
        prompt_tokens,
        generate_tokens,
        engine: run.engine.to_string(),
        execution_provider: run.provider.to_string(),
        graph_optimization: suite.onnxruntime.graph_optimization.clone(),
        inter_op_threads: suite.onnxruntime.inter_op_threads.get(),
        media: media_input(&run.group.input, dir),
    }
}

/// A worker's report as a result record (DESIGN.md's field names).
fn record(
    suite: &Suite,
    run: &PlannedRun<'_>,
    model_path: &Path,
    report: WorkerReport,
    outside_peak: u64,
    started_at: i64,
    local: &LocalRun,
) -> ResultRecord {
    let hw = crate::hardware::static_profile();
    let (model, model_version) = model_name(run.model, model_path);
    let l = &report.latency_ms;
    let c = &report.conditions;
    let samples_total = (report.samples * u64::from(report.batch.max(1))).max(1) as f64;
    ResultRecord {
        agent: local.agent_name.clone(),
        agent_id: String::new(),
        target: format!("{}/{}/{}c", hw.arch, hw.cpu_model, hw.cpu_cores),
        labels: Default::default(),
        model,
        model_version,
        quantization: String::new(),
        model_sha256: crate::artifacts::sha256_of_file(model_path).unwrap_or_default(),
        model_bytes: std::fs::metadata(model_path).map_or(0, |m| m.len()),
        engine: report.engine.clone(),
        engine_version: report.engine_version.clone(),
        execution_provider: report.execution_provider.clone(),
        threads: run.threads.get(),
        scenario: run.scenario.kind.as_str().to_string(),
        samples: report.samples,
        duration_s: report.duration_s,
        valid: report.valid,
        load_ms: report.load_ms,
        first_inference_ms: report.first_inference_ms,
        latency_ms: LatencyMs {
            p50: l.p50,
            p90: l.p90,
            p95: l.p95,
            p99: l.p99,
            p999: l.p999,
            max: l.max,
            mean: l.mean,
            stddev: l.stddev,
        },
        throughput_per_s: report.throughput_per_s,
        peak_rss_bytes: report.peak_rss_bytes.max(outside_peak),
        cpu_percent: report.cpu_percent,
        energy_j_per_inference: c.energy_j.map(|j| j / samples_total),
        energy_method: Some(c.energy_method.clone()),
        temperature_c: c
            .temperature_start_c
            .zip(c.temperature_max_c)
            .map(|(start, max)| TemperatureC { start, max }),
        throttled: c.throttled,
        ttft_ms: report.generate.as_ref().map(|g| g.ttft_ms_p50),
        tpot_ms: report.generate.as_ref().map(|g| g.tpot_ms_p50),
        prefill_tokens_per_s: report.generate.as_ref().map(|g| g.prefill_tokens_per_s),
        decode_tokens_per_s: report.generate.as_ref().map(|g| g.decode_tokens_per_s),
        quality: None,
        started_at: edgefleet_reports::rfc3339(started_at),
        run_id: "local".into(),
        suite: suite.name.clone(),
        suite_sha256: suite.sha256.clone(),
        agent_version: crate::AGENT_VERSION.to_string(),
        latency_percentiles_ms: l.percentiles.clone(),
        latency_ci95_ms: LatencyCi {
            p50: [l.p50_ci95.0, l.p50_ci95.1],
            p90: [l.p90_ci95.0, l.p90_ci95.1],
        },
        repetition_medians_ms: report.repetition_medians_ms.clone(),
        repetition_cv: report.repetition_cv,
        latency_histogram_hdr: String::new(),
        samples_per_query: report.batch.max(1),
        server: report.server.as_ref().map(|s| ServerOutcome {
            target_qps: s.target_qps,
            achieved_qps: s.achieved_qps,
            p99_bound_ms: s.p99_bound_ms,
            bound_met: s.bound_met,
            peak_qps: s.peak_qps,
        }),
        early_stopping: (report.early_stopping_percentile > 0.0).then_some(EarlyStopping {
            percentile: report.early_stopping_percentile,
            confidence: 0.99,
            estimate_ms: report.early_stopping_ms,
        }),
        energy_sample_hz: (c.energy_sample_hz > 0.0).then_some(c.energy_sample_hz),
        idle_power_w: c.idle_power_w,
        active_power_w: c.active_power_w,
        energy_note: (!c.energy_note.is_empty()).then(|| c.energy_note.clone()),
        cool_down_wait_s: c.cool_down_wait_s,
        quality_reference: None,
        quality_error: None,
        kernel: hw.kernel.clone(),
        cpu_governor: hw.cpu_governor.clone(),
        cpu_model: hw.cpu_model.clone(),
        generate: report.generate.as_ref().map(|g| GenerateDetail {
            prompt_tokens: g.prompt_tokens,
            generated_tokens: g.generated_tokens,
            ttft_p90_ms: g.ttft_ms_p90,
            tpot_p90_ms: g.tpot_ms_p90,
            tokenize_ms: g.tokenize_ms,
            kv_cache_in_place: g.kv_cache_in_place,
        }),
    }
}

/// `minilm-l6/model.int8` for `…/minilm-l6/model.int8.onnx`: the folder usually names the model.
fn model_label(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    match path.parent().and_then(|p| p.file_name()) {
        Some(dir) => format!("{}/{stem}", dir.to_string_lossy()),
        None => stem,
    }
}

/// The local results, and the runs that failed with their reasons, as a table on stdout.
pub fn print_table(outcome: &LocalOutcome) {
    print!(
        "{}",
        edgefleet_reports::text::summary(&outcome.records, &outcome.failures)
    );
}
