//! One measured benchmark job: load the model, prepare its queries, run the scenario
//! (single-stream, multi-stream, offline, server, or generate), and report what was measured.

use std::time::{Duration, Instant};

use crate::procfs;
use crate::stats;

use super::conditions;
use super::engine_choice::{with_fixed_length, Engine};
use super::error::WorkerError;
use super::generate;
use super::measure::{self, run_phase, Arrivals, RunLength};
use super::ms;
use super::protocol::{ServerReport, WorkerJob, WorkerReport};
use super::queries::{self, Queries};

/// Loads the runtime and model, prepares the input (tokenized sentences, images, audio chunks),
/// and runs the scenario.
pub fn run_job(job: &WorkerJob) -> Result<WorkerReport, WorkerError> {
    let job = &with_fixed_length(job)?;
    let engine = Engine::start(job)?;
    let load_start = Instant::now();
    let mut model = engine.load(job, &job.model_path)?;
    let load_ms = ms(load_start.elapsed());
    if job.scenario == "generate" {
        return generate::run(job, &engine, model, load_ms);
    }

    if job.media.is_some() && job.scenario == "generate" {
        return Err(WorkerError::GenerateNeedsText);
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
