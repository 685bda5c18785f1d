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
pub const ARTIFACT_URLS_PRESIGNED: &str = "edgefleet_artifact_urls_presigned_total";
pub const ARTIFACT_CACHE: &str = "edgefleet_artifact_cache_requests_total";
pub const JOBS: &str = "edgefleet_jobs";
pub const JOB_RESULTS: &str = "edgefleet_job_results_total";
pub const ROLLOUTS: &str = "edgefleet_rollouts";
pub const GATE_VERDICTS: &str = "edgefleet_gate_verdicts_total";
pub const STORE_SECONDS: &str = "edgefleet_store_seconds";
pub const CONNECTIONS: &str = "edgefleet_connections";
pub const CONNECTIONS_REFUSED: &str = "edgefleet_connections_refused_total";
pub const CONNECTIONS_CUT: &str = "edgefleet_connections_cut_total";
pub const ACCEPT_ERRORS: &str = "edgefleet_accept_errors_total";
pub const HANDSHAKES_REFUSED: &str = "edgefleet_handshakes_refused_total";
pub const STREAMS_AGED_OUT: &str = "edgefleet_streams_aged_out_total";
pub const LEADER: &str = "edgefleet_leader";
pub const FLEET_AGENTS_ONLINE: &str = "edgefleet_fleet_agents_online";
pub const FLEET_REPLICAS: &str = "edgefleet_fleet_replicas";

/// The listeners whose connections are counted.
const LISTENERS: [&str; 2] = ["link", "metrics"];
/// Why a client certificate was refused at the handshake.
pub const HANDSHAKE_REFUSALS: [&str; 6] = [
    "expired",
    "unknown_ca",
    "revoked",
    "not_enrolled",
    "store",
    "other",
];

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
    describe_counter!(
        ARTIFACT_URLS_PRESIGNED,
        "presigned URLs handed to agents to fetch artifacts from the object store directly"
    );
    describe_counter!(
        ARTIFACT_CACHE,
        "agents' requests for object-store artifact bytes, by how the controller's copy met them \
         (hit, filled: read from the store now, bypassed: read from the store, no copy)"
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
    describe_gauge!(
        CONNECTIONS,
        "open connections per listener (link, metrics), by state (open, unauthenticated)"
    );
    describe_counter!(
        CONNECTIONS_REFUSED,
        "connections closed at accept, by listener and reason (descriptors: only the reserve \
         is left; unauthenticated: too many not yet authenticated; source: too many of those \
         from one address)"
    );
    describe_counter!(
        CONNECTIONS_CUT,
        "connections closed at a deadline, by listener and phase (handshake, unauthenticated, \
         idle), or to make way for a newer one past a cap (evicted)"
    );
    describe_counter!(
        ACCEPT_ERRORS,
        "failed accepts, by listener and error (EMFILE, ENFILE, ENOBUFS, ENOMEM, other)"
    );
    describe_counter!(
        HANDSHAKES_REFUSED,
        "client certificates refused at the TLS handshake, by reason"
    );
    describe_counter!(
        STREAMS_AGED_OUT,
        "agent streams ended at their maximum age (serve --max-stream-age-s)"
    );
    describe_gauge!(
        LEADER,
        "1 while this controller leads (runs rollouts, schedules and housekeeping), else 0"
    );
    describe_gauge!(
        FLEET_AGENTS_ONLINE,
        "agents online on any replica: set by the leader only (read it where edgefleet_leader is 1)"
    );
    describe_gauge!(
        FLEET_REPLICAS,
        "replicas heard from in the last 10 s: set by the leader only"
    );
    gauge!(AGENTS_CONNECTED).set(0.0);
    gauge!(LEADER).set(0.0);
    counter!(STREAMS_AGED_OUT).absolute(0);
    for listener in LISTENERS {
        for state in ["open", "unauthenticated"] {
            gauge!(CONNECTIONS, "listener" => listener, "state" => state).set(0.0);
        }
        for reason in crate::server::admission::Refusal::ALL {
            counter!(CONNECTIONS_REFUSED, "listener" => listener, "reason" => reason.as_str())
                .absolute(0);
        }
        for phase in ["handshake", "unauthenticated", "idle", "evicted"] {
            counter!(CONNECTIONS_CUT, "listener" => listener, "phase" => phase).absolute(0);
        }
    }
    for reason in HANDSHAKE_REFUSALS {
        counter!(HANDSHAKES_REFUSED, "reason" => reason).absolute(0);
    }
    counter!(HEARTBEATS).absolute(0);
    counter!(ARTIFACT_BYTES_SERVED).absolute(0);
    counter!(ARTIFACT_TRANSFERS).absolute(0);
    counter!(ARTIFACT_URLS_PRESIGNED).absolute(0);
    for outcome in ["hit", "filled", "bypassed"] {
        counter!(ARTIFACT_CACHE, "outcome" => outcome).absolute(0);
    }
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

pub fn stream_aged_out() {
    counter!(STREAMS_AGED_OUT).increment(1);
}

/// Whether this controller leads now.
pub fn leading(yes: bool) {
    gauge!(LEADER).set(if yes { 1.0 } else { 0.0 });
}

/// The fleet-wide figures the leader reports once for every replica.
pub fn fleet(agents_online: usize, replicas: usize) {
    gauge!(FLEET_AGENTS_ONLINE).set(agents_online as f64);
    gauge!(FLEET_REPLICAS).set(replicas as f64);
}

pub fn heartbeat() {
    counter!(HEARTBEATS).increment(1);
}

pub fn transfer_started() {
    counter!(ARTIFACT_TRANSFERS).increment(1);
}

/// An agent was given a presigned URL to fetch an artifact from the object store.
pub fn url_presigned() {
    counter!(ARTIFACT_URLS_PRESIGNED).increment(1);
}

/// An agent's request for artifact bytes from the object store met the controller's copy
/// (`hit`), made it (`filled`), or went to the store (`bypassed`: no room or no copy made).
pub fn artifact_cache(outcome: &'static str) {
    counter!(ARTIFACT_CACHE, "outcome" => outcome).increment(1);
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

/// A listener's open connections and how many of them are not authenticated yet.
pub fn connections(listener: &'static str, open: usize, unauthenticated: usize) {
    gauge!(CONNECTIONS, "listener" => listener, "state" => "open").set(open as f64);
    gauge!(CONNECTIONS, "listener" => listener, "state" => "unauthenticated")
        .set(unauthenticated as f64);
}

/// A connection was closed at accept.
pub fn connection_refused(listener: &'static str, reason: &'static str) {
    counter!(CONNECTIONS_REFUSED, "listener" => listener, "reason" => reason).increment(1);
}

/// A connection was closed at a deadline.
pub fn connection_cut(listener: &'static str, phase: &'static str) {
    counter!(CONNECTIONS_CUT, "listener" => listener, "phase" => phase).increment(1);
}

/// An accept failed.
pub fn accept_error(listener: &'static str, error: &'static str) {
    counter!(ACCEPT_ERRORS, "listener" => listener, "error" => error).increment(1);
}

/// A client certificate was refused at the handshake.
pub fn handshake_refused(reason: &'static str) {
    counter!(HANDSHAKES_REFUSED, "reason" => reason).increment(1);
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
