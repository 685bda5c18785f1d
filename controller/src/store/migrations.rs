//! Schema migrations, applied in order; `PRAGMA user_version` records how many have run.

use rusqlite::{params, Connection, Transaction};

use crate::rollout::{RolloutSpec, SpecText};

/// Each entry moves the schema one version forward. Never edit a released entry: add one.
const MIGRATIONS: &[&str] = &[
    // 1: agents, the model registry, benchmark runs and their results.
    "CREATE TABLE agents (
         id TEXT PRIMARY KEY,
         name TEXT NOT NULL,
         labels TEXT NOT NULL,
         agent_version TEXT NOT NULL,
         hardware BLOB NOT NULL,
         first_seen_ms INTEGER NOT NULL,
         last_seen_ms INTEGER NOT NULL
     );
     CREATE TABLE artifacts (
         sha256 TEXT PRIMARY KEY,
         size_bytes INTEGER NOT NULL,
         created_ms INTEGER NOT NULL
     );
     CREATE TABLE models (
         name TEXT NOT NULL,
         version TEXT NOT NULL,
         quantization TEXT NOT NULL,
         opset INTEGER NOT NULL,
         signature TEXT NOT NULL,
         created_ms INTEGER NOT NULL,
         PRIMARY KEY (name, version)
     );
     CREATE TABLE model_files (
         name TEXT NOT NULL,
         version TEXT NOT NULL,
         position INTEGER NOT NULL,
         file_name TEXT NOT NULL,
         sha256 TEXT NOT NULL REFERENCES artifacts (sha256),
         PRIMARY KEY (name, version, position),
         FOREIGN KEY (name, version) REFERENCES models (name, version)
     );
     CREATE TABLE bench_runs (
         id TEXT PRIMARY KEY,
         suite TEXT NOT NULL,
         suite_sha256 TEXT NOT NULL,
         suite_toml TEXT NOT NULL,
         created_ms INTEGER NOT NULL
     );
     CREATE TABLE bench_jobs (
         run_id TEXT NOT NULL REFERENCES bench_runs (id),
         job_id TEXT NOT NULL,
         agent_id TEXT NOT NULL REFERENCES agents (id),
         model_name TEXT NOT NULL,
         model_version TEXT NOT NULL,
         scenario TEXT NOT NULL,
         threads INTEGER NOT NULL,
         state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
         error TEXT,
         -- The BenchJob as sent (protobuf), to send again when the agent reconnects.
         spec BLOB NOT NULL,
         PRIMARY KEY (run_id, job_id)
     );
     CREATE TABLE results (
         run_id TEXT NOT NULL,
         job_id TEXT NOT NULL,
         measurement BLOB NOT NULL,
         PRIMARY KEY (run_id, job_id),
         FOREIGN KEY (run_id, job_id) REFERENCES bench_jobs (run_id, job_id)
     );",
    // 2: signed manifests, what each agent has installed, rollouts and their event log.
    "ALTER TABLE models ADD COLUMN manifest BLOB;
     ALTER TABLE models ADD COLUMN manifest_signature BLOB;
     CREATE TABLE agent_models (
         agent_id TEXT NOT NULL REFERENCES agents (id),
         name TEXT NOT NULL,
         active_version TEXT NOT NULL,
         -- JSON array of the versions kept on the agent, newest first.
         versions TEXT NOT NULL,
         updated_ms INTEGER NOT NULL,
         PRIMARY KEY (agent_id, name)
     );
     CREATE TABLE rollouts (
         id TEXT PRIMARY KEY,
         model_name TEXT NOT NULL,
         model_version TEXT NOT NULL,
         selector TEXT NOT NULL,
         waves TEXT NOT NULL,
         success TEXT NOT NULL,
         abort_after TEXT NOT NULL,
         gate TEXT NOT NULL,
         health_check TEXT NOT NULL,
         state TEXT NOT NULL CHECK (state IN ('running', 'paused', 'succeeded', 'aborted', 'rolled_back')),
         reason TEXT NOT NULL DEFAULT '',
         current_wave INTEGER NOT NULL DEFAULT 0,
         created_ms INTEGER NOT NULL,
         updated_ms INTEGER NOT NULL
     );
     CREATE TABLE rollout_targets (
         rollout_id TEXT NOT NULL REFERENCES rollouts (id),
         agent_id TEXT NOT NULL REFERENCES agents (id),
         wave INTEGER NOT NULL,
         state TEXT NOT NULL,
         error TEXT NOT NULL DEFAULT '',
         previous_version TEXT NOT NULL DEFAULT '',
         health TEXT NOT NULL DEFAULT '',
         updated_ms INTEGER NOT NULL,
         -- The install's transfer: bytes fetched and when (agent clock, Unix ms).
         fetched_bytes INTEGER NOT NULL DEFAULT 0,
         fetch_started_ms INTEGER NOT NULL DEFAULT 0,
         fetch_finished_ms INTEGER NOT NULL DEFAULT 0,
         PRIMARY KEY (rollout_id, agent_id)
     );
     CREATE TABLE rollout_gates (
         rollout_id TEXT NOT NULL REFERENCES rollouts (id),
         wave INTEGER NOT NULL,
         run_id TEXT NOT NULL REFERENCES bench_runs (id),
         -- JSON verdicts once decided, empty while the benchmark runs.
         verdicts TEXT NOT NULL DEFAULT '',
         PRIMARY KEY (rollout_id, wave)
     );
     CREATE TABLE events (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         at_ms INTEGER NOT NULL,
         rollout_id TEXT,
         agent_id TEXT,
         message TEXT NOT NULL
     );",
    // 3: a performance gate's workload taken from a suite (`rollout start --gate-suite`): the
    //    encoded edgefleet.v1.Workload, empty for the built-in text workload.
    "ALTER TABLE rollouts ADD COLUMN gate_workload BLOB NOT NULL DEFAULT x'';",
    // 4: a rollout's flags parsed once and stored typed (`spec`, JSON of `RolloutSpec`);
    //    `typed_specs` fills it from the text columns, which then go.
    "ALTER TABLE rollouts ADD COLUMN spec TEXT NOT NULL DEFAULT '';",
    // 5: trust: one-time enrollment tokens and admin tokens (hashes only), when an agent was
    //    enrolled, revoked or removed, and which artifacts were sent to which agent (the only
    //    ones it may fetch).
    "CREATE TABLE enrollment_tokens (
         hash TEXT PRIMARY KEY,
         name TEXT NOT NULL DEFAULT '',
         labels TEXT NOT NULL DEFAULT '{}',
         created_ms INTEGER NOT NULL,
         expires_ms INTEGER NOT NULL,
         used_ms INTEGER NOT NULL DEFAULT 0,
         used_by TEXT NOT NULL DEFAULT ''
     );
     CREATE TABLE admin_tokens (
         name TEXT PRIMARY KEY,
         role TEXT NOT NULL CHECK (role IN ('viewer', 'operator')),
         hash TEXT NOT NULL UNIQUE,
         created_ms INTEGER NOT NULL,
         revoked_ms INTEGER NOT NULL DEFAULT 0
     );
     ALTER TABLE agents ADD COLUMN enrolled_ms INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE agents ADD COLUMN revoked_ms INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE agents ADD COLUMN removed_ms INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE agent_artifacts (
         agent_id TEXT NOT NULL,
         sha256 TEXT NOT NULL,
         PRIMARY KEY (agent_id, sha256)
     );",
    // 6: comparisons: the baseline run of each (suite, device class), the regressions found when
    //    a run finishes (against its baseline, or drift against recent history) and which runs
    //    were judged. Runs finished before this migration are marked judged: nothing is flagged
    //    retroactively.
    "CREATE TABLE baselines (
         suite TEXT NOT NULL,
         device_class TEXT NOT NULL,
         run_id TEXT NOT NULL REFERENCES bench_runs (id),
         set_ms INTEGER NOT NULL,
         PRIMARY KEY (suite, device_class)
     );
     CREATE TABLE regressions (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         run_id TEXT NOT NULL REFERENCES bench_runs (id),
         suite TEXT NOT NULL,
         model TEXT NOT NULL,
         scenario TEXT NOT NULL,
         device_class TEXT NOT NULL,
         metric TEXT NOT NULL,
         kind TEXT NOT NULL CHECK (kind IN ('baseline', 'drift')),
         -- The baseline run, or the history window (`12 runs`).
         against TEXT NOT NULL,
         ratio REAL NOT NULL,
         ci_low REAL,
         ci_high REAL,
         robust_z REAL,
         detected_ms INTEGER NOT NULL,
         acknowledged_ms INTEGER,
         UNIQUE (run_id, model, scenario, device_class, metric, kind)
     );
     CREATE TABLE regression_checks (
         run_id TEXT PRIMARY KEY REFERENCES bench_runs (id),
         checked_ms INTEGER NOT NULL
     );
     INSERT INTO regression_checks (run_id, checked_ms) SELECT id, created_ms FROM bench_runs;
     CREATE INDEX bench_jobs_model ON bench_jobs (model_name, model_version);
     CREATE INDEX bench_runs_suite ON bench_runs (suite, created_ms);",
    // 7: scheduled benchmark runs: each schedule with its suite as given (text, sha256, file
    //    name, input files as stored artifacts), each fire and what came of it, and which
    //    schedule started a run.
    "CREATE TABLE schedules (
         name TEXT PRIMARY KEY,
         cron TEXT NOT NULL,
         suite_file TEXT NOT NULL,
         suite_toml TEXT NOT NULL,
         suite_sha256 TEXT NOT NULL,
         -- JSON array of the suite's input files as stored artifacts: path, sha256, size.
         inputs TEXT NOT NULL DEFAULT '[]',
         selector TEXT NOT NULL DEFAULT '',
         jitter_ms INTEGER NOT NULL DEFAULT 0 CHECK (jitter_ms >= 0),
         when_idle INTEGER NOT NULL DEFAULT 0 CHECK (when_idle IN (0, 1)),
         max_start_temp_c REAL,
         created_ms INTEGER NOT NULL,
         -- The planned time of the last cron fire (or the newest missed one); NULL before any.
         last_fire_ms INTEGER,
         -- Every missed fire counted, also those past the rows kept in schedule_fires.
         missed_count INTEGER NOT NULL DEFAULT 0
     );
     CREATE TABLE schedule_fires (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         schedule TEXT NOT NULL,
         planned_ms INTEGER NOT NULL,
         outcome TEXT NOT NULL
             CHECK (outcome IN ('started', 'skipped-still-running', 'missed', 'failed')),
         run_id TEXT,
         reason TEXT NOT NULL DEFAULT '',
         -- 1 for `schedule run NAME`, 0 for a cron fire.
         manual INTEGER NOT NULL DEFAULT 0,
         -- JSON array of the agents a --when-idle fire left out (busy at fire time).
         left_out TEXT NOT NULL DEFAULT '[]',
         recorded_ms INTEGER NOT NULL
     );
     CREATE INDEX schedule_fires_by_schedule ON schedule_fires (schedule, id);
     ALTER TABLE bench_runs ADD COLUMN schedule TEXT;",
    // 8: schedules in a site's local time: the IANA zone the cron is read in.
    "ALTER TABLE schedules ADD COLUMN timezone TEXT NOT NULL DEFAULT 'UTC';",
    // 9: when an agent said it began a job (progress only; NULL until then).
    "ALTER TABLE bench_jobs ADD COLUMN started_ms INTEGER;",
    // 10: the certificate each agent was last given: until when it is valid (0: issued before
    //     this was kept), and the SHA-256 of its public key and of the key before it (a renewal
    //     whose reply was lost leaves the agent holding that one), so that only those keys can
    //     recover the agent once its certificate has expired.
    "ALTER TABLE agents ADD COLUMN cert_not_after_ms INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE agents ADD COLUMN cert_key_sha256 TEXT NOT NULL DEFAULT '';
     ALTER TABLE agents ADD COLUMN cert_previous_key_sha256 TEXT NOT NULL DEFAULT '';",
    // 11: retention: when a result was reduced to its summary (its latency histogram and
    //     percentile list dropped; 0 while it is whole).
    "ALTER TABLE results ADD COLUMN summarized_ms INTEGER NOT NULL DEFAULT 0;",
    // 12: a schedule's fire is claimed once under (schedule, planned time) before its run
    //     starts, so that no fire runs twice, whichever controller fires it; and what an agent
    //     is sent as it connects found without reading every job and target of the fleet.
    "CREATE TABLE schedule_fire_claims (
         schedule TEXT NOT NULL,
         planned_ms INTEGER NOT NULL,
         claimed_ms INTEGER NOT NULL,
         PRIMARY KEY (schedule, planned_ms)
     );
     CREATE INDEX bench_jobs_pending_by_agent ON bench_jobs (agent_id) WHERE state = 'pending';
     CREATE INDEX rollout_targets_by_agent ON rollout_targets (agent_id);",
    // 13: whether a run has jobs left, asked after every result, answered without reading the
    // run's finished jobs.
    "CREATE INDEX bench_jobs_pending_by_run ON bench_jobs (run_id) WHERE state = 'pending';",
];

/// Steps in Rust that run right after the SQL of the same (1-based) version, in its
/// transaction.
const RUST_STEPS: &[(usize, RustStep)] = &[(4, typed_specs)];

/// A migration step written in Rust (it parses what SQL cannot).
type RustStep = fn(&Transaction<'_>) -> rusqlite::Result<()>;

/// Migration 4: parses each rollout's text flags into its stored spec. A row whose flags do not
/// parse keeps an empty spec, which reads back as a corrupt row naming it (never as defaults).
fn typed_specs(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let rows: Vec<(String, [String; 6])> = {
        let mut stmt = tx.prepare(
            "SELECT id, selector, waves, success, abort_after, gate, health_check FROM rollouts",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                [
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ],
            ))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    for (id, [select, waves, success, abort_after, gate, health_check]) in rows {
        let spec = RolloutSpec::parse(&SpecText {
            select: &select,
            waves: &waves,
            success: &success,
            abort_after: &abort_after,
            gate: &gate,
            health_check: &health_check,
        });
        if let Ok(spec) = spec {
            tx.execute(
                "UPDATE rollouts SET spec = ?2 WHERE id = ?1",
                params![id, serde_json::to_string(&spec).expect("a spec serializes")],
            )?;
        }
    }
    for column in [
        "selector",
        "waves",
        "success",
        "abort_after",
        "gate",
        "health_check",
    ] {
        tx.execute_batch(&format!("ALTER TABLE rollouts DROP COLUMN {column}"))?;
    }
    Ok(())
}

/// Brings the schema up to the newest version, each step in its own transaction.
pub(super) fn apply(conn: &mut Connection) -> Result<(), super::StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let current = usize::try_from(current).unwrap_or(0);
    if current > MIGRATIONS.len() {
        return Err(super::StoreError::NewerSchema {
            found: current,
            known: MIGRATIONS.len(),
        });
    }
    Ok(apply_up_to(conn, MIGRATIONS.len())?)
}

/// Brings the schema up to version `last` (tests start from an older schema this way).
pub(super) fn apply_up_to(conn: &mut Connection, last: usize) -> rusqlite::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let current = usize::try_from(current).unwrap_or(0);
    if current > MIGRATIONS.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the database has schema version {current}, newer than this controller knows ({}); upgrade edgefleet",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().take(last).skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        for (_, step) in RUST_STEPS.iter().filter(|(version, _)| *version == i + 1) {
            step(&tx)?;
        }
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
