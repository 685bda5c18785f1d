//! The controller's SQLite database: the only module that uses rusqlite. WAL mode, a busy
//! timeout, and numbered schema migrations recorded in `PRAGMA user_version`.

mod migrations;
mod rollouts;

pub use rollouts::{AgentModelRow, EventRow, GateRow, RolloutRow, TargetRow};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use edgefleet_proto::v1::{BenchJob, HardwareProfile, Measurement};
use prost::Message;
use rusqlite::{params, Connection, OptionalExtension};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("model {0} is already registered; pick another version")]
    ModelExists(String),
}

/// A handle to the database, cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

/// An agent as last seen.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRow {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
    pub hardware: HardwareProfile,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

/// One file of a model version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFile {
    pub file_name: String,
    pub sha256: String,
    pub size_bytes: u64,
}

/// A registered model version.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRow {
    pub name: String,
    pub version: String,
    pub quantization: String,
    pub opset: i64,
    /// JSON: `{"inputs": [...], "outputs": [...]}`, each `{name, element_type, shape}`.
    pub signature_json: String,
    pub files: Vec<ModelFile>,
    pub created_ms: i64,
    /// The encoded manifest and its signature (empty until signed).
    pub manifest: Vec<u8>,
    pub manifest_signature: Vec<u8>,
}

/// A benchmark job as planned.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub run_id: String,
    pub job_id: String,
    pub agent_id: String,
    pub model_name: String,
    pub model_version: String,
    pub scenario: String,
    pub threads: u32,
    /// pending | done | failed
    pub state: String,
    pub error: Option<String>,
}

/// A stored measurement with what it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub job: JobRow,
    pub suite: String,
    pub suite_sha256: String,
    pub measurement: Measurement,
}

/// A benchmark run and its suite.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: String,
    pub suite: String,
    pub suite_sha256: String,
    pub created_ms: i64,
}

/// What storing a job's result did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Stored,
    /// The same result arrived before (a retry); nothing changed.
    Duplicate,
    /// No such job for this agent.
    UnknownJob,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(open_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        Store::init(conn).map_err(open_error)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> Result<Store, StoreError> {
        Ok(Store::init(Connection::open_in_memory()?)?)
    }

    fn init(mut conn: Connection) -> Result<Store, rusqlite::Error> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        migrations::apply(&mut conn)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an agent's hello: creates it, or updates what it says about itself.
    pub fn upsert_agent(
        &self,
        id: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
        agent_version: &str,
        hardware: &HardwareProfile,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO agents (id, name, labels, agent_version, hardware, first_seen_ms, last_seen_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
             ON CONFLICT(id) DO UPDATE SET name = ?2, labels = ?3, agent_version = ?4,
                 hardware = ?5, last_seen_ms = ?6",
            params![
                id,
                name,
                serde_json::to_string(labels).expect("labels serialize"),
                agent_version,
                hardware.encode_to_vec(),
                now_ms
            ],
        )?;
        Ok(())
    }

    pub fn touch_agent(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE agents SET last_seen_ms = ?2 WHERE id = ?1",
            params![id, now_ms],
        )?;
        Ok(())
    }

    pub fn agents(&self) -> Result<Vec<AgentRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, name, labels, agent_version, hardware, first_seen_ms, last_seen_ms
             FROM agents ORDER BY name, id",
        )?;
        let rows = stmt.query_map([], |r| {
            let labels: String = r.get(2)?;
            let hardware: Vec<u8> = r.get(4)?;
            Ok(AgentRow {
                id: r.get(0)?,
                name: r.get(1)?,
                labels: serde_json::from_str(&labels).unwrap_or_default(),
                agent_version: r.get(3)?,
                hardware: HardwareProfile::decode(hardware.as_slice()).unwrap_or_default(),
                first_seen_ms: r.get(5)?,
                last_seen_ms: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Agent names by id, for showing ids to people.
    pub fn agent_names(&self) -> Result<BTreeMap<String, String>, StoreError> {
        Ok(self.agents()?.into_iter().map(|a| (a.id, a.name)).collect())
    }

    /// Registers a model version whose files are already in the artifact folder.
    pub fn insert_model(&self, model: &ModelRow) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let exists: bool = tx
            .query_row(
                "SELECT 1 FROM models WHERE name = ?1 AND version = ?2",
                params![model.name, model.version],
                |_| Ok(true),
            )
            .optional()?
            .unwrap_or(false);
        if exists {
            return Err(StoreError::ModelExists(format!(
                "{}@{}",
                model.name, model.version
            )));
        }
        tx.execute(
            "INSERT INTO models (name, version, quantization, opset, signature, created_ms,
                 manifest, manifest_signature)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                model.name,
                model.version,
                model.quantization,
                model.opset,
                model.signature_json,
                model.created_ms,
                model.manifest,
                model.manifest_signature
            ],
        )?;
        for (position, file) in model.files.iter().enumerate() {
            tx.execute(
                "INSERT OR IGNORE INTO artifacts (sha256, size_bytes, created_ms) VALUES (?1, ?2, ?3)",
                params![file.sha256, file.size_bytes as i64, model.created_ms],
            )?;
            tx.execute(
                "INSERT INTO model_files (name, version, position, file_name, sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    model.name,
                    model.version,
                    position as i64,
                    file.file_name,
                    file.sha256
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn models(&self) -> Result<Vec<ModelRow>, StoreError> {
        self.select_models(None)
    }

    /// One model version (read alone: the rollout driver asks several times a second).
    pub fn model(&self, name: &str, version: &str) -> Result<Option<ModelRow>, StoreError> {
        Ok(self.select_models(Some((name, version)))?.pop())
    }

    /// Every model version, or the one named, with its files in order.
    fn select_models(&self, only: Option<(&str, &str)>) -> Result<Vec<ModelRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, version, quantization, opset, signature, created_ms, manifest,
                    manifest_signature
             FROM models WHERE ?1 IS NULL OR (name = ?1 AND version = ?2)
             ORDER BY name, created_ms",
        )?;
        let mut models = stmt
            .query_map(params![only.map(|o| o.0), only.map(|o| o.1)], |r| {
                Ok(ModelRow {
                    name: r.get(0)?,
                    version: r.get(1)?,
                    quantization: r.get(2)?,
                    opset: r.get(3)?,
                    signature_json: r.get(4)?,
                    files: Vec::new(),
                    created_ms: r.get(5)?,
                    manifest: r.get::<_, Option<Vec<u8>>>(6)?.unwrap_or_default(),
                    manifest_signature: r.get::<_, Option<Vec<u8>>>(7)?.unwrap_or_default(),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut files = conn.prepare(
            "SELECT f.file_name, f.sha256, a.size_bytes FROM model_files f
             JOIN artifacts a ON a.sha256 = f.sha256
             WHERE f.name = ?1 AND f.version = ?2 ORDER BY f.position",
        )?;
        for model in &mut models {
            model.files = files
                .query_map(params![model.name, model.version], |r| {
                    Ok(ModelFile {
                        file_name: r.get(0)?,
                        sha256: r.get(1)?,
                        size_bytes: r.get::<_, i64>(2)? as u64,
                    })
                })?
                .collect::<Result<_, _>>()?;
        }
        Ok(models)
    }

    /// Records an artifact that is not a model file (a suite's input file), once.
    pub fn insert_artifact(
        &self,
        sha256: &str,
        size_bytes: u64,
        created_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR IGNORE INTO artifacts (sha256, size_bytes, created_ms) VALUES (?1, ?2, ?3)",
            params![sha256, size_bytes as i64, created_ms],
        )?;
        Ok(())
    }

    /// Whether any model file has this digest (artifacts are served only if registered).
    pub fn artifact_size(&self, sha256: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT size_bytes FROM artifacts WHERE sha256 = ?1",
                params![sha256],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|s| s as u64))
    }

    /// Creates a run and its jobs (agent id, job as sent) in one transaction.
    pub fn insert_run(
        &self,
        run: &RunRow,
        suite_toml: &str,
        jobs: &[(String, BenchJob)],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO bench_runs (id, suite, suite_sha256, suite_toml, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                run.id,
                run.suite,
                run.suite_sha256,
                suite_toml,
                run.created_ms
            ],
        )?;
        for (agent_id, job) in jobs {
            let model = job.model.clone().unwrap_or_default();
            let workload = job.workload.clone().unwrap_or_default();
            tx.execute(
                "INSERT INTO bench_jobs (run_id, job_id, agent_id, model_name, model_version,
                     scenario, threads, state, spec)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8)",
                params![
                    run.id,
                    job.job_id,
                    agent_id,
                    model.name,
                    model.version,
                    workload.scenario,
                    workload.threads,
                    job.encode_to_vec()
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Jobs given to an agent that have no result yet, as (run id, job), oldest run first: what
    /// to send again when the agent reconnects.
    pub fn pending_jobs(&self, agent_id: &str) -> Result<Vec<(String, BenchJob)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT j.run_id, j.spec FROM bench_jobs j JOIN bench_runs b ON b.id = j.run_id
             WHERE j.agent_id = ?1 AND j.state = 'pending' ORDER BY b.created_ms, j.job_id",
        )?;
        let rows = stmt.query_map(params![agent_id], |r| {
            let spec: Vec<u8> = r.get(1)?;
            Ok((
                r.get(0)?,
                BenchJob::decode(spec.as_slice()).unwrap_or_default(),
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn run(&self, run_id: &str) -> Result<Option<RunRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, suite, suite_sha256, created_ms FROM bench_runs WHERE id = ?1",
                params![run_id],
                |r| {
                    Ok(RunRow {
                        id: r.get(0)?,
                        suite: r.get(1)?,
                        suite_sha256: r.get(2)?,
                        created_ms: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Jobs of one run, or of every run when `run_id` is `None`.
    pub fn jobs(&self, run_id: Option<&str>) -> Result<Vec<JobRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT run_id, job_id, agent_id, model_name, model_version, scenario, threads, state, error
             FROM bench_jobs WHERE ?1 IS NULL OR run_id = ?1 ORDER BY run_id, job_id",
        )?;
        let rows = stmt.query_map(params![run_id], job_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores a job's measurement once; a repeated upload of the same job is a no-op.
    pub fn record_measurement(
        &self,
        agent_id: &str,
        run_id: &str,
        job_id: &str,
        measurement: &Measurement,
    ) -> Result<Recorded, StoreError> {
        self.finish_job(agent_id, run_id, job_id, Ok(measurement))
    }

    /// Marks a job failed with its reason (once).
    pub fn record_failure(
        &self,
        agent_id: &str,
        run_id: &str,
        job_id: &str,
        error: &str,
    ) -> Result<Recorded, StoreError> {
        self.finish_job(agent_id, run_id, job_id, Err(error))
    }

    fn finish_job(
        &self,
        agent_id: &str,
        run_id: &str,
        job_id: &str,
        outcome: Result<&Measurement, &str>,
    ) -> Result<Recorded, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let state: Option<String> = tx
            .query_row(
                "SELECT state FROM bench_jobs WHERE run_id = ?1 AND job_id = ?2 AND agent_id = ?3",
                params![run_id, job_id, agent_id],
                |r| r.get(0),
            )
            .optional()?;
        match state.as_deref() {
            None => return Ok(Recorded::UnknownJob),
            Some("pending") => {}
            Some(_) => return Ok(Recorded::Duplicate),
        }
        match outcome {
            Ok(m) => {
                tx.execute(
                    "INSERT INTO results (run_id, job_id, measurement) VALUES (?1, ?2, ?3)",
                    params![run_id, job_id, m.encode_to_vec()],
                )?;
                tx.execute(
                    "UPDATE bench_jobs SET state = 'done' WHERE run_id = ?1 AND job_id = ?2",
                    params![run_id, job_id],
                )?;
            }
            Err(error) => {
                tx.execute(
                    "UPDATE bench_jobs SET state = 'failed', error = ?3 WHERE run_id = ?1 AND job_id = ?2",
                    params![run_id, job_id, error],
                )?;
            }
        }
        tx.commit()?;
        Ok(Recorded::Stored)
    }

    /// Measurements of one run, or of every run.
    pub fn results(&self, run_id: Option<&str>) -> Result<Vec<ResultRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT j.run_id, j.job_id, j.agent_id, j.model_name, j.model_version, j.scenario,
                    j.threads, j.state, j.error, r.measurement, b.suite, b.suite_sha256
             FROM results r
             JOIN bench_jobs j ON j.run_id = r.run_id AND j.job_id = r.job_id
             JOIN bench_runs b ON b.id = r.run_id
             WHERE ?1 IS NULL OR r.run_id = ?1
             ORDER BY b.created_ms, j.job_id",
        )?;
        let rows = stmt.query_map(params![run_id], |r| {
            let blob: Vec<u8> = r.get(9)?;
            Ok(ResultRow {
                job: job_from_row(r)?,
                measurement: Measurement::decode(blob.as_slice()).unwrap_or_default(),
                suite: r.get(10)?,
                suite_sha256: r.get(11)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn job_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        run_id: r.get(0)?,
        job_id: r.get(1)?,
        agent_id: r.get(2)?,
        model_name: r.get(3)?,
        model_version: r.get(4)?,
        scenario: r.get(5)?,
        threads: r.get(6)?,
        state: r.get(7)?,
        error: r.get(8)?,
    })
}

#[cfg(test)]
mod tests;
