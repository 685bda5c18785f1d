//! Turning stored rows into the result records of DESIGN.md (the schema of `results.json` and of
//! reports) and the failed-run list.

use std::collections::HashMap;

use base64::Engine;
use edgefleet_reports::{
    rfc3339, EarlyStopping, FailedRun, GenerateDetail, LatencyCi, LatencyMs, ResultRecord,
    ServerOutcome, TemperatureC,
};

use crate::planning::target_key;
use crate::store::{AgentRow, ResultFilter, Store, StoreError};

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
    let agents: HashMap<String, AgentRow> = store
        .agents_in_history()?
        .into_iter()
        .map(|a| (a.id.clone(), a))
        .collect();
    let models: HashMap<(String, String), _> = store
        .models()?
        .into_iter()
        .map(|m| ((m.name.clone(), m.version.clone()), m))
        .collect();
    let mut records = Vec::new();
    for row in store.results_where(filter)? {
        let agent = agents.get(&row.job.agent_id);
        let model = models.get(&(row.job.model_name.clone(), row.job.model_version.clone()));
        let onnx = model.and_then(|m| m.files.first());
        let m = &row.measurement;
        let l = m.latency_ms.clone().unwrap_or_default();
        records.push(ResultRecord {
            agent: agent.map_or_else(|| row.job.agent_id.clone(), |a| a.name.clone()),
            agent_id: row.job.agent_id.clone(),
            target: agent.map(|a| target_key(&a.hardware)).unwrap_or_default(),
            labels: agent.map(|a| a.labels.clone()).unwrap_or_default(),
            model: row.job.model_name.clone(),
            model_version: row.job.model_version.clone(),
            quantization: model.map(|m| m.quantization.clone()).unwrap_or_default(),
            model_sha256: onnx.map(|f| f.sha256.clone()).unwrap_or_default(),
            model_bytes: onnx.map_or(0, |f| f.size_bytes),
            engine: m.engine.clone(),
            engine_version: m.engine_version.clone(),
            execution_provider: m.execution_provider.clone(),
            threads: m.threads,
            scenario: row.job.scenario.clone(),
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
            run_id: row.job.run_id.clone(),
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
            quality_reference: (!m.quality_reference.is_empty())
                .then(|| m.quality_reference.clone()),
            quality_error: (!m.quality_error.is_empty()).then(|| m.quality_error.clone()),
            kernel: agent.map(|a| a.hardware.kernel.clone()).unwrap_or_default(),
            cpu_governor: agent
                .map(|a| a.hardware.cpu_governor.clone())
                .unwrap_or_default(),
            cpu_model: agent
                .map(|a| a.hardware.cpu_model.clone())
                .unwrap_or_default(),
            generate: m.generate.as_ref().map(|g| GenerateDetail {
                prompt_tokens: g.prompt_tokens,
                generated_tokens: g.generated_tokens,
                ttft_p90_ms: g.ttft_ms_p90,
                tpot_p90_ms: g.tpot_ms_p90,
                tokenize_ms: g.tokenize_ms,
            }),
        });
    }
    let failed = store.failed_jobs_where(filter)?;
    let failures = failed
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
    Ok((records, failures))
}
