//! The PostgreSQL schema's own migration history, applied in order at start under an advisory
//! lock (two controllers starting together apply it once); `edgefleet_schema` records how many
//! have run. It is separate from SQLite's: version 1 is the whole schema SQLite reached in its
//! ten steps, written in PostgreSQL's types (`BIGINT`, `BYTEA`, identity columns). Text columns
//! compare bytewise (`COLLATE "C"`), as SQLite's do, so listings sort the same on both.

use super::db::Conn;
use super::StoreError;

/// Each entry moves the schema one version forward. Never edit a released entry: add one.
const MIGRATIONS: &[&str] = &[
    // 1: everything SQLite's migrations 1 to 10 made.
    r#"CREATE TABLE agents (
         id TEXT COLLATE "C" PRIMARY KEY,
         name TEXT COLLATE "C" NOT NULL,
         labels TEXT COLLATE "C" NOT NULL,
         agent_version TEXT COLLATE "C" NOT NULL,
         hardware BYTEA NOT NULL,
         first_seen_ms BIGINT NOT NULL,
         last_seen_ms BIGINT NOT NULL,
         enrolled_ms BIGINT NOT NULL DEFAULT 0,
         revoked_ms BIGINT NOT NULL DEFAULT 0,
         removed_ms BIGINT NOT NULL DEFAULT 0,
         cert_not_after_ms BIGINT NOT NULL DEFAULT 0, cert_key_sha256 TEXT COLLATE "C" NOT NULL DEFAULT '', cert_previous_key_sha256 TEXT COLLATE "C" NOT NULL DEFAULT '');
     CREATE TABLE artifacts (
         sha256 TEXT COLLATE "C" PRIMARY KEY,
         size_bytes BIGINT NOT NULL,
         created_ms BIGINT NOT NULL
     );
     CREATE TABLE models (
         name TEXT COLLATE "C" NOT NULL,
         version TEXT COLLATE "C" NOT NULL,
         quantization TEXT COLLATE "C" NOT NULL,
         opset BIGINT NOT NULL,
         signature TEXT COLLATE "C" NOT NULL,
         created_ms BIGINT NOT NULL, manifest BYTEA, manifest_signature BYTEA,
         PRIMARY KEY (name, version)
     );
     CREATE TABLE model_files (
         name TEXT COLLATE "C" NOT NULL,
         version TEXT COLLATE "C" NOT NULL,
         position BIGINT NOT NULL,
         file_name TEXT COLLATE "C" NOT NULL,
         sha256 TEXT COLLATE "C" NOT NULL REFERENCES artifacts (sha256),
         PRIMARY KEY (name, version, position),
         FOREIGN KEY (name, version) REFERENCES models (name, version)
     );
     CREATE TABLE bench_runs (
         id TEXT COLLATE "C" PRIMARY KEY,
         suite TEXT COLLATE "C" NOT NULL,
         suite_sha256 TEXT COLLATE "C" NOT NULL,
         suite_toml TEXT COLLATE "C" NOT NULL,
         created_ms BIGINT NOT NULL,
         schedule TEXT COLLATE "C");
     CREATE TABLE bench_jobs (
         run_id TEXT COLLATE "C" NOT NULL REFERENCES bench_runs (id),
         job_id TEXT COLLATE "C" NOT NULL,
         agent_id TEXT COLLATE "C" NOT NULL REFERENCES agents (id),
         model_name TEXT COLLATE "C" NOT NULL,
         model_version TEXT COLLATE "C" NOT NULL,
         scenario TEXT COLLATE "C" NOT NULL,
         threads BIGINT NOT NULL,
         state TEXT COLLATE "C" NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
         error TEXT COLLATE "C",
         -- The BenchJob as sent (protobuf), to send again when the agent reconnects.
         spec BYTEA NOT NULL, started_ms BIGINT,
         PRIMARY KEY (run_id, job_id)
     );
     CREATE TABLE results (
         run_id TEXT COLLATE "C" NOT NULL,
         job_id TEXT COLLATE "C" NOT NULL,
         measurement BYTEA NOT NULL,
         PRIMARY KEY (run_id, job_id),
         FOREIGN KEY (run_id, job_id) REFERENCES bench_jobs (run_id, job_id)
     );
     CREATE TABLE agent_models (
         agent_id TEXT COLLATE "C" NOT NULL REFERENCES agents (id),
         name TEXT COLLATE "C" NOT NULL,
         active_version TEXT COLLATE "C" NOT NULL,
         -- JSON array of the versions kept on the agent, newest first.
         versions TEXT COLLATE "C" NOT NULL,
         updated_ms BIGINT NOT NULL,
         PRIMARY KEY (agent_id, name)
     );
     CREATE TABLE rollouts (
         id TEXT COLLATE "C" PRIMARY KEY,
         model_name TEXT COLLATE "C" NOT NULL,
         model_version TEXT COLLATE "C" NOT NULL,
         state TEXT COLLATE "C" NOT NULL CHECK (state IN ('running', 'paused', 'succeeded', 'aborted', 'rolled_back')),
         reason TEXT COLLATE "C" NOT NULL DEFAULT '',
         current_wave BIGINT NOT NULL DEFAULT 0,
         created_ms BIGINT NOT NULL,
         updated_ms BIGINT NOT NULL,
         gate_workload BYTEA NOT NULL DEFAULT ''::bytea, spec TEXT COLLATE "C" NOT NULL DEFAULT '');
     CREATE TABLE rollout_targets (
         rollout_id TEXT COLLATE "C" NOT NULL REFERENCES rollouts (id),
         agent_id TEXT COLLATE "C" NOT NULL REFERENCES agents (id),
         wave BIGINT NOT NULL,
         state TEXT COLLATE "C" NOT NULL,
         error TEXT COLLATE "C" NOT NULL DEFAULT '',
         previous_version TEXT COLLATE "C" NOT NULL DEFAULT '',
         health TEXT COLLATE "C" NOT NULL DEFAULT '',
         updated_ms BIGINT NOT NULL,
         -- The install's transfer: bytes fetched and when (agent clock, Unix ms).
         fetched_bytes BIGINT NOT NULL DEFAULT 0,
         fetch_started_ms BIGINT NOT NULL DEFAULT 0,
         fetch_finished_ms BIGINT NOT NULL DEFAULT 0,
         PRIMARY KEY (rollout_id, agent_id)
     );
     CREATE TABLE rollout_gates (
         rollout_id TEXT COLLATE "C" NOT NULL REFERENCES rollouts (id),
         wave BIGINT NOT NULL,
         run_id TEXT COLLATE "C" NOT NULL REFERENCES bench_runs (id),
         -- JSON verdicts once decided, empty while the benchmark runs.
         verdicts TEXT COLLATE "C" NOT NULL DEFAULT '',
         PRIMARY KEY (rollout_id, wave)
     );
     CREATE TABLE events (
         id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
         at_ms BIGINT NOT NULL,
         rollout_id TEXT COLLATE "C",
         agent_id TEXT COLLATE "C",
         message TEXT COLLATE "C" NOT NULL
     );
     CREATE TABLE enrollment_tokens (
         hash TEXT COLLATE "C" PRIMARY KEY,
         name TEXT COLLATE "C" NOT NULL DEFAULT '',
         labels TEXT COLLATE "C" NOT NULL DEFAULT '{}',
         created_ms BIGINT NOT NULL,
         expires_ms BIGINT NOT NULL,
         used_ms BIGINT NOT NULL DEFAULT 0,
         used_by TEXT COLLATE "C" NOT NULL DEFAULT ''
     );
     CREATE TABLE admin_tokens (
         name TEXT COLLATE "C" PRIMARY KEY,
         role TEXT COLLATE "C" NOT NULL CHECK (role IN ('viewer', 'operator')),
         hash TEXT COLLATE "C" NOT NULL UNIQUE,
         created_ms BIGINT NOT NULL,
         revoked_ms BIGINT NOT NULL DEFAULT 0
     );
     CREATE TABLE agent_artifacts (
         agent_id TEXT COLLATE "C" NOT NULL,
         sha256 TEXT COLLATE "C" NOT NULL,
         PRIMARY KEY (agent_id, sha256)
     );
     CREATE TABLE baselines (
         suite TEXT COLLATE "C" NOT NULL,
         device_class TEXT COLLATE "C" NOT NULL,
         run_id TEXT COLLATE "C" NOT NULL REFERENCES bench_runs (id),
         set_ms BIGINT NOT NULL,
         PRIMARY KEY (suite, device_class)
     );
     CREATE TABLE regressions (
         id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
         run_id TEXT COLLATE "C" NOT NULL REFERENCES bench_runs (id),
         suite TEXT COLLATE "C" NOT NULL,
         model TEXT COLLATE "C" NOT NULL,
         scenario TEXT COLLATE "C" NOT NULL,
         device_class TEXT COLLATE "C" NOT NULL,
         metric TEXT COLLATE "C" NOT NULL,
         kind TEXT COLLATE "C" NOT NULL CHECK (kind IN ('baseline', 'drift')),
         -- The baseline run, or the history window (`12 runs`).
         against TEXT COLLATE "C" NOT NULL,
         ratio DOUBLE PRECISION NOT NULL,
         ci_low DOUBLE PRECISION,
         ci_high DOUBLE PRECISION,
         robust_z DOUBLE PRECISION,
         detected_ms BIGINT NOT NULL,
         acknowledged_ms BIGINT,
         UNIQUE (run_id, model, scenario, device_class, metric, kind)
     );
     CREATE TABLE regression_checks (
         run_id TEXT COLLATE "C" PRIMARY KEY REFERENCES bench_runs (id),
         checked_ms BIGINT NOT NULL
     );
     CREATE INDEX bench_jobs_model ON bench_jobs (model_name, model_version);
     CREATE INDEX bench_runs_suite ON bench_runs (suite, created_ms);
     CREATE TABLE schedules (
         name TEXT COLLATE "C" PRIMARY KEY,
         cron TEXT COLLATE "C" NOT NULL,
         suite_file TEXT COLLATE "C" NOT NULL,
         suite_toml TEXT COLLATE "C" NOT NULL,
         suite_sha256 TEXT COLLATE "C" NOT NULL,
         -- JSON array of the suite's input files as stored artifacts: path, sha256, size.
         inputs TEXT COLLATE "C" NOT NULL DEFAULT '[]',
         selector TEXT COLLATE "C" NOT NULL DEFAULT '',
         jitter_ms BIGINT NOT NULL DEFAULT 0 CHECK (jitter_ms >= 0),
         when_idle BIGINT NOT NULL DEFAULT 0 CHECK (when_idle IN (0, 1)),
         max_start_temp_c DOUBLE PRECISION,
         created_ms BIGINT NOT NULL,
         -- The planned time of the last cron fire (or the newest missed one); NULL before any.
         last_fire_ms BIGINT,
         -- Every missed fire counted, also those past the rows kept in schedule_fires.
         missed_count BIGINT NOT NULL DEFAULT 0,
         timezone TEXT COLLATE "C" NOT NULL DEFAULT 'UTC');
     CREATE TABLE schedule_fires (
         id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
         schedule TEXT COLLATE "C" NOT NULL,
         planned_ms BIGINT NOT NULL,
         outcome TEXT COLLATE "C" NOT NULL
         CHECK (outcome IN ('started', 'skipped-still-running', 'missed', 'failed')),
         run_id TEXT COLLATE "C",
         reason TEXT COLLATE "C" NOT NULL DEFAULT '',
         -- 1 for `schedule run NAME`, 0 for a cron fire.
         manual BIGINT NOT NULL DEFAULT 0,
         -- JSON array of the agents a --when-idle fire left out (busy at fire time).
         left_out TEXT COLLATE "C" NOT NULL DEFAULT '[]',
         recorded_ms BIGINT NOT NULL
     );
     CREATE INDEX schedule_fires_by_schedule ON schedule_fires (schedule, id);"#,
    // 2: retention: when a result was reduced to its summary (0 while it is whole); SQLite's 11.
    "ALTER TABLE results ADD COLUMN summarized_ms BIGINT NOT NULL DEFAULT 0;",
    // 3: several controllers on one database (`server/replicas.rs`): the replicas and what each
    //    holds, the leader's lease, agents' wake-ups, claimed schedule fires (SQLite's 12), and
    //    the fence: a statement run by the leader's loops (their connections carry
    //    `edgefleet.fence` = `HOLDER/EPOCH`) is refused unless that lease is still held, checked
    //    in the statement's own transaction, with the lease row share-locked until it ends so
    //    that no takeover can slip in between.
    r#"CREATE TABLE edgefleet_replicas (
         id TEXT COLLATE "C" PRIMARY KEY,
         address TEXT COLLATE "C" NOT NULL,
         started_at TIMESTAMPTZ NOT NULL,
         heard_at TIMESTAMPTZ NOT NULL,
         agents BIGINT NOT NULL DEFAULT 0
     );
     CREATE TABLE edgefleet_leader (
         id INT PRIMARY KEY CHECK (id = 1),
         holder TEXT COLLATE "C" NOT NULL,
         epoch BIGINT NOT NULL,
         expires_at TIMESTAMPTZ NOT NULL
     );
     INSERT INTO edgefleet_leader (id, holder, epoch, expires_at) VALUES (1, '', 0, 'epoch');
     CREATE TABLE agent_holders (
         agent_id TEXT COLLATE "C" PRIMARY KEY,
         replica TEXT COLLATE "C" NOT NULL,
         -- Which of the replica's streams: an older one's goodbye must not free a newer one.
         session BIGINT NOT NULL,
         since_at TIMESTAMPTZ NOT NULL
     );
     CREATE INDEX agent_holders_by_replica ON agent_holders (replica);
     CREATE SEQUENCE agent_wake_numbers;
     CREATE TABLE agent_wakes (
         agent_id TEXT COLLATE "C" PRIMARY KEY,
         wake BIGINT NOT NULL,
         woken_at TIMESTAMPTZ NOT NULL
     );
     CREATE INDEX agent_wakes_by_time ON agent_wakes (woken_at);
     -- What an agent is sent as it connects or is woken, found without reading every job and
     -- target of the fleet (the same as SQLite's 12).
     CREATE INDEX bench_jobs_pending_by_agent ON bench_jobs (agent_id) WHERE state = 'pending';
     CREATE INDEX rollout_targets_by_agent ON rollout_targets (agent_id);
     CREATE TABLE schedule_fire_claims (
         schedule TEXT COLLATE "C" NOT NULL,
         planned_ms BIGINT NOT NULL,
         claimed_ms BIGINT NOT NULL,
         PRIMARY KEY (schedule, planned_ms)
     );
     CREATE FUNCTION edgefleet_fence() RETURNS trigger LANGUAGE plpgsql AS $fence$
     DECLARE
         fence TEXT := current_setting('edgefleet.fence', true);
     BEGIN
         IF fence IS NULL OR fence = '' THEN
             RETURN NULL;
         END IF;
         PERFORM 1 FROM edgefleet_leader
          WHERE id = 1 AND holder || '/' || epoch = fence AND expires_at > clock_timestamp()
          FOR SHARE;
         IF NOT FOUND THEN
             RAISE EXCEPTION 'fenced: the leader lease % is no longer held', fence
                 USING ERRCODE = 'EF001';
         END IF;
         RETURN NULL;
     END
     $fence$;
     DO $tables$ DECLARE t TEXT; BEGIN
       FOREACH t IN ARRAY ARRAY['agents', 'artifacts', 'models', 'model_files', 'bench_runs',
           'bench_jobs', 'results', 'agent_models', 'rollouts', 'rollout_targets',
           'rollout_gates', 'events', 'enrollment_tokens', 'admin_tokens', 'agent_artifacts',
           'baselines', 'regressions', 'regression_checks', 'schedules', 'schedule_fires',
           'schedule_fire_claims'] LOOP
         EXECUTE format('CREATE TRIGGER edgefleet_fence BEFORE INSERT OR UPDATE OR DELETE ON %I
                         FOR EACH STATEMENT EXECUTE FUNCTION edgefleet_fence()', t);
       END LOOP;
     END $tables$;"#,
    // 4: whether a run has jobs left, asked after every result, answered without reading the
    // run's finished jobs (the same as SQLite's 13).
    "CREATE INDEX bench_jobs_pending_by_run ON bench_jobs (run_id) WHERE state = 'pending';",
];

/// The advisory lock key migrations hold (`edgefleet` in ASCII, as a number).
const MIGRATION_LOCK: i64 = 0x6564_6765_666c_6565;

/// Brings the schema up to the newest version, in one transaction; refuses a database whose
/// schema is newer than this controller knows.
pub(super) fn apply(conn: &mut Conn<'_>) -> Result<(), StoreError> {
    let mut tx = conn.transaction()?;
    tx.query_row(
        "SELECT pg_advisory_xact_lock(?1)::text",
        super::db::params![MIGRATION_LOCK],
        |_| Ok(()),
    )?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS edgefleet_schema (version BIGINT NOT NULL)")?;
    let found: Option<i64> = tx
        .query_map(
            "SELECT version FROM edgefleet_schema",
            super::db::params![],
            |r| r.get(0),
        )?
        .into_iter()
        .next();
    let current = match found {
        Some(v) => usize::try_from(v).unwrap_or(0),
        None => {
            tx.execute(
                "INSERT INTO edgefleet_schema (version) VALUES (0)",
                super::db::params![],
            )?;
            0
        }
    };
    if current > MIGRATIONS.len() {
        return Err(StoreError::NewerSchema {
            found: current,
            known: MIGRATIONS.len(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.execute_batch(sql)?;
        tx.execute(
            "UPDATE edgefleet_schema SET version = ?1",
            super::db::params![(i + 1) as i64],
        )?;
    }
    tx.commit()?;
    Ok(())
}
