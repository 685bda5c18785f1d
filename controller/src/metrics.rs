//! The controller's Prometheus metrics: every name and what it means, in one place, and the calls
//! the server makes to update them. They go through the `metrics` facade: until `edgefleet serve
//! --metrics-listen` installs a recorder, every call here does nothing.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

use crate::rollout::RolloutState;
use crate::server::Controller;

pub const AGENTS_CONNECTED: &str = "edgefleet_agents_connected";
pub const HEARTBEATS: &str = "edgefleet_heartbeats_total";
pub const ARTIFACT_BYTES_SERVED: &str = "edgefleet_artifact_bytes_served_total";
pub const ARTIFACT_TRANSFERS: &str = "edgefleet_artifact_transfers_total";
pub const JOBS: &str = "edgefleet_jobs";
pub const JOB_RESULTS: &str = "edgefleet_job_results_total";
pub const ROLLOUTS: &str = "edgefleet_rollouts";
pub const GATE_VERDICTS: &str = "edgefleet_gate_verdicts_total";
pub const STORE_SECONDS: &str = "edgefleet_store_seconds";

/// The job states the store keeps (`bench_jobs.state`).
const JOB_STATES: [&str; 3] = ["pending", "done", "failed"];

/// Names each metric with its unit and meaning, and shows every labelled series at zero, so
/// that a scrape right after start already lists them all.
pub fn describe() {
    describe_gauge!(AGENTS_CONNECTED, "agents with an open link right now");
    describe_counter!(HEARTBEATS, "heartbeats received from agents");
    describe_counter!(
        ARTIFACT_BYTES_SERVED,
        metrics::Unit::Bytes,
        "model and input bytes sent to agents"
    );
    describe_counter!(
        ARTIFACT_TRANSFERS,
        "artifact transfers begun from the first byte (a resumed one is not counted again)"
    );
    describe_gauge!(
        JOBS,
        "benchmark jobs in the store by state (pending, done, failed)"
    );
    describe_counter!(
        JOB_RESULTS,
        "job outcomes recorded since start, by outcome (measured, failed)"
    );
    describe_gauge!(ROLLOUTS, "rollouts in the store by state");
    describe_counter!(
        GATE_VERDICTS,
        "performance-gate verdicts on rollout waves (passed, breached)"
    );
    describe_histogram!(
        STORE_SECONDS,
        metrics::Unit::Seconds,
        "time to record a result or a heartbeat in SQLite, lock wait included"
    );
    gauge!(AGENTS_CONNECTED).set(0.0);
    counter!(HEARTBEATS).absolute(0);
    counter!(ARTIFACT_BYTES_SERVED).absolute(0);
    counter!(ARTIFACT_TRANSFERS).absolute(0);
    for outcome in ["measured", "failed"] {
        counter!(JOB_RESULTS, "outcome" => outcome).absolute(0);
    }
    for verdict in ["passed", "breached"] {
        counter!(GATE_VERDICTS, "verdict" => verdict).absolute(0);
    }
}

/// How many agents have an open link.
pub fn agents_connected(count: usize) {
    gauge!(AGENTS_CONNECTED).set(count as f64);
}

pub fn heartbeat() {
    counter!(HEARTBEATS).increment(1);
}

pub fn transfer_started() {
    counter!(ARTIFACT_TRANSFERS).increment(1);
}

pub fn bytes_served(bytes: u64) {
    counter!(ARTIFACT_BYTES_SERVED).increment(bytes);
}

/// A job's outcome was stored for the first time.
pub fn job_result(measured: bool) {
    let outcome = if measured { "measured" } else { "failed" };
    counter!(JOB_RESULTS, "outcome" => outcome).increment(1);
}

pub fn gate_verdict(passed: bool) {
    let verdict = if passed { "passed" } else { "breached" };
    counter!(GATE_VERDICTS, "verdict" => verdict).increment(1);
}

/// How long one store operation (`record_result`, `heartbeat`) took.
pub fn store_time(operation: &'static str, took: Duration) {
    histogram!(STORE_SECONDS, "operation" => operation).record(took);
}

/// Reads the counts the store keeps (jobs and rollouts by state) into their gauges; the metrics
/// endpoint calls it before each refresh.
pub fn sample_store(controller: &Controller) {
    match controller.store.job_counts() {
        Ok(counts) => {
            for state in JOB_STATES {
                let n = counts.get(state).copied().unwrap_or(0);
                gauge!(JOBS, "state" => state).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count jobs for the metrics"),
    }
    match controller.store.rollout_counts() {
        Ok(counts) => {
            for state in RolloutState::ALL {
                let n = counts.get(state.as_str()).copied().unwrap_or(0);
                gauge!(ROLLOUTS, "state" => state.as_str()).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count rollouts for the metrics"),
    }
}
