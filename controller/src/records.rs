//! Turning stored rows into the result records of DESIGN.md (the schema of `results.json` and of
//! reports) and the failed-run list.

use std::collections::HashMap;

use base64::Engine;
use edgefleet_reports::{
    rfc3339, EarlyStopping, FailedRun, GenerateDetail, LatencyCi, LatencyMs, ResultRecord,
    ServerOutcome, TemperatureC,
};

use edgefleet_proto::v1::{FailedJob, Measurement, ResultAgent, ResultModel, StoredResult};

use crate::planning::target_key;
use crate::store::{AgentRow, ModelRow, ResultFilter, Store, StoreError};

/// Result records and failures of one run, or of every run.
pub fn collect(
    store: &Store,
    run_id: Option<&str>,
) -> Result<(Vec<ResultRecord>, Vec<FailedRun>), StoreError> {
    collect_where(
        store,
        &ResultFilter {
            run_id: run_id.map(str::to_string),
            ..ResultFilter::default()
        },
    )
}

/// Result records and failures that pass `filter`, oldest run first.
pub fn collect_where(
    store: &Store,
    filter: &ResultFilter,
) -> Result<(Vec<ResultRecord>, Vec<FailedRun>), StoreError> {
    let stored = stored_where(store, filter)?;
    Ok((stored.records(), stored.failures))
}

/// Results as stored (the agents' measurements as they sent them) with the agents and model
/// versions they name, and the jobs that failed: what `GetResults` sends, and what both the
/// controller and the CLI turn into result records with [`record`].
#[derive(Debug, Default)]
pub struct Stored {
    pub results: Vec<StoredResult>,
    pub agents: HashMap<String, ResultAgent>,
    pub models: HashMap<(String, String), ResultModel>,
    pub failures: Vec<FailedRun>,
}

impl Stored {
    /// The result records of DESIGN.md, in the results' order.
    pub fn records(&self) -> Vec<ResultRecord> {
        self.results
            .iter()
            .map(|r| {
                record(
                    r,
                    self.agents.get(&r.agent_id),
                    self.models
                        .get(&(r.model_name.clone(), r.model_version.clone())),
                )
            })
            .collect()
    }
}

/// The stored results that pass `filter`, oldest run first, with what they name.
pub fn stored_where(store: &Store, filter: &ResultFilter) -> Result<Stored, StoreError> {
    let agents: HashMap<String, ResultAgent> = store
        .agents_in_history()?
        .into_iter()
        .map(|a| (a.id.clone(), result_agent(a)))
        .collect();
    let models: HashMap<(String, String), ResultModel> = store
        .models()?
        .into_iter()
        .map(|m| ((m.name.clone(), m.version.clone()), result_model(m)))
        .collect();
    let results: Vec<StoredResult> = store
        .results_where(filter)?
        .into_iter()
        .map(|row| StoredResult {
            run_id: row.job.run_id,
            job_id: row.job.job_id,
            agent_id: row.job.agent_id,
            model_name: row.job.model_name,
            model_version: row.job.model_version,
            scenario: row.job.scenario,
            threads: row.job.threads,
            suite: row.suite,
            suite_sha256: row.suite_sha256,
            measurement: Some(row.measurement),
        })
        .collect();
    let failed = store.failed_jobs_where(filter)?;
    let failures: Vec<FailedRun> = failed
        .into_iter()
        .map(|j| FailedRun {
            agent: agents
                .get(&j.agent_id)
                .map_or_else(|| j.agent_id.clone(), |a| a.name.clone()),
            model: j.model_name,
            model_version: j.model_version,
            scenario: j.scenario,
            threads: j.threads,
            error: j.error.unwrap_or_default(),
            run_id: j.run_id,
        })
        .collect();
    // Only what the results name travels.
    let named_agents: std::collections::HashSet<&str> =
        results.iter().map(|r| r.agent_id.as_str()).collect();
    let named_models: std::collections::HashSet<(&str, &str)> = results
        .iter()
        .map(|r| (r.model_name.as_str(), r.model_version.as_str()))
        .collect();
    let agents = agents
        .into_iter()
        .filter(|(id, _)| named_agents.contains(id.as_str()))
        .collect();
    let models = models
        .into_iter()
        .filter(|((n, v), _)| named_models.contains(&(n.as_str(), v.as_str())))
        .collect();
    Ok(Stored {
        results,
        agents,
        models,
        failures,
    })
}

fn result_agent(a: AgentRow) -> ResultAgent {
    ResultAgent {
        agent_id: a.id,
        name: a.name,
        labels: a.labels.into_iter().collect(),
        agent_version: a.agent_version,
        hardware: Some(a.hardware),
    }
}

fn result_model(m: ModelRow) -> ResultModel {
    let onnx = m.files.into_iter().next();
    ResultModel {
        name: m.name,
        version: m.version,
        quantization: m.quantization,
        sha256: onnx.as_ref().map(|f| f.sha256.clone()).unwrap_or_default(),
        size_bytes: onnx.map_or(0, |f| f.size_bytes),
    }
}

/// A failed job as it travels.
pub fn failed_job(f: &FailedRun) -> FailedJob {
    FailedJob {
        agent: f.agent.clone(),
        model: f.model.clone(),
        model_version: f.model_version.clone(),
        scenario: f.scenario.clone(),
        threads: f.threads,
        error: f.error.clone(),
        run_id: f.run_id.clone(),
    }
}

/// A failed job as reports take it.
pub fn failed_run(f: FailedJob) -> FailedRun {
    FailedRun {
        agent: f.agent,
        model: f.model,
        model_version: f.model_version,
        scenario: f.scenario,
        threads: f.threads,
        error: f.error,
        run_id: f.run_id,
    }
}

/// A stored result as the result record of DESIGN.md, with what it takes from its agent and
/// model (absent ones leave their fields empty).
pub fn record(
    row: &StoredResult,
    agent: Option<&ResultAgent>,
    model: Option<&ResultModel>,
) -> ResultRecord {
    let no_measurement = Measurement::default();
    let m = row.measurement.as_ref().unwrap_or(&no_measurement);
    let l = m.latency_ms.clone().unwrap_or_default();
    let hardware = agent.and_then(|a| a.hardware.as_ref());
    ResultRecord {
        agent: agent.map_or_else(|| row.agent_id.clone(), |a| a.name.clone()),
        agent_id: row.agent_id.clone(),
        target: hardware.map(target_key).unwrap_or_default(),
        labels: agent
            .map(|a| a.labels.clone().into_iter().collect())
            .unwrap_or_default(),
        model: row.model_name.clone(),
        model_version: row.model_version.clone(),
        quantization: model.map(|m| m.quantization.clone()).unwrap_or_default(),
        model_sha256: model.map(|m| m.sha256.clone()).unwrap_or_default(),
        model_bytes: model.map_or(0, |m| m.size_bytes),
        engine: m.engine.clone(),
        engine_version: m.engine_version.clone(),
        execution_provider: m.execution_provider.clone(),
        threads: m.threads,
        scenario: row.scenario.clone(),
        samples: m.samples,
        duration_s: m.duration_s,
        valid: m.valid,
        load_ms: m.load_ms,
        first_inference_ms: m.first_inference_ms,
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
        throughput_per_s: m.throughput_per_s,
        peak_rss_bytes: m.peak_rss_bytes,
        cpu_percent: m.cpu_percent,
        energy_j_per_inference: m.energy_j_per_sample,
        energy_method: Some(if m.energy_method.is_empty() {
            "none".to_string()
        } else {
            m.energy_method.clone()
        }),
        temperature_c: m
            .temperature_start_c
            .zip(m.temperature_max_c)
            .map(|(start, max)| TemperatureC { start, max }),
        throttled: m.throttled,
        ttft_ms: m.generate.as_ref().map(|g| g.ttft_ms_p50),
        tpot_ms: m.generate.as_ref().map(|g| g.tpot_ms_p50),
        prefill_tokens_per_s: m.generate.as_ref().map(|g| g.prefill_tokens_per_s),
        decode_tokens_per_s: m.generate.as_ref().map(|g| g.decode_tokens_per_s),
        quality: (!m.quality.is_empty())
            .then(|| m.quality.iter().map(|(k, v)| (k.clone(), *v)).collect()),
        started_at: rfc3339(m.started_at_unix_ms),
        run_id: row.run_id.clone(),
        suite: row.suite.clone(),
        suite_sha256: row.suite_sha256.clone(),
        agent_version: agent.map(|a| a.agent_version.clone()).unwrap_or_default(),
        latency_percentiles_ms: l.percentiles.clone(),
        latency_ci95_ms: LatencyCi {
            p50: [l.p50_ci_low, l.p50_ci_high],
            p90: [l.p90_ci_low, l.p90_ci_high],
        },
        repetition_medians_ms: m.repetition_medians_ms.clone(),
        repetition_cv: m.repetition_cv,
        latency_histogram_hdr: base64::engine::general_purpose::STANDARD
            .encode(&m.latency_histogram),
        samples_per_query: m.batch.max(1),
        server: m.server.map(|s| ServerOutcome {
            target_qps: s.target_qps,
            achieved_qps: s.achieved_qps,
            p99_bound_ms: s.p99_bound_ms,
            bound_met: s.bound_met,
            peak_qps: s.peak_qps,
        }),
        early_stopping: (m.early_stopping_percentile > 0.0).then_some(EarlyStopping {
            percentile: m.early_stopping_percentile,
            confidence: 0.99,
            estimate_ms: m.early_stopping_ms,
        }),
        energy_sample_hz: (m.energy_sample_hz > 0.0).then_some(m.energy_sample_hz),
        idle_power_w: m.idle_power_w,
        active_power_w: m.active_power_w,
        energy_note: (!m.energy_note.is_empty()).then(|| m.energy_note.clone()),
        cool_down_wait_s: m.cool_down_wait_s,
        quality_reference: (!m.quality_reference.is_empty()).then(|| m.quality_reference.clone()),
        quality_error: (!m.quality_error.is_empty()).then(|| m.quality_error.clone()),
        kernel: hardware.map(|h| h.kernel.clone()).unwrap_or_default(),
        cpu_governor: hardware.map(|h| h.cpu_governor.clone()).unwrap_or_default(),
        cpu_model: hardware.map(|h| h.cpu_model.clone()).unwrap_or_default(),
        generate: m.generate.as_ref().map(|g| GenerateDetail {
            prompt_tokens: g.prompt_tokens,
            generated_tokens: g.generated_tokens,
            ttft_p90_ms: g.ttft_ms_p90,
            tpot_p90_ms: g.tpot_ms_p90,
            tokenize_ms: g.tokenize_ms,
            kv_cache_in_place: g.kv_cache_in_place,
        }),
    }
}
