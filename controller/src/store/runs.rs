//! Benchmark runs, their jobs (stored as sent, so they can be sent again) and each job's result,
//! stored once.

use super::db::{params, OptionalExtension, Param};
use edgefleet_proto::v1::{BenchJob, Measurement};
use prost::Message;

use super::{decode_proto, decode_state, Store, StoreError};
use crate::stored_states::stored_states;

stored_states! {
    /// Where a job stands.
    JobState {
        Pending = "pending",
        Done = "done",
        Failed = "failed",
    }
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
    pub state: JobState,
    pub error: Option<String>,
    /// When the agent said it began the job (progress only).
    pub started_ms: Option<i64>,
}

/// A stored measurement with what it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub job: JobRow,
    pub suite: String,
    pub suite_sha256: String,
    pub measurement: Measurement,
}

/// Which measurements [`Store::results_where`] returns: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultFilter {
    pub run_id: Option<String>,
    /// (name, version)
    pub model: Option<(String, String)>,
    /// The suite's name.
    pub suite: Option<String>,
    /// Runs created at or after this instant (Unix ms).
    pub since_ms: Option<i64>,
}

/// A [`ResultFilter`] as SQL over `bench_jobs j` and `bench_runs b`, with the parameters
/// run id, model name, model version, suite, since.
const RESULT_FILTER: &str = "(?1 IS NULL OR j.run_id = ?1)
    AND (?2 IS NULL OR (j.model_name = ?2 AND j.model_version = ?3))
    AND (?4 IS NULL OR b.suite = ?4)
    AND (?5 IS NULL OR b.created_ms >= ?5)";

impl ResultFilter {
    /// The model condition as the two SQL parameters (name, version).
    fn model_params(&self) -> (Option<&str>, Option<&str>) {
        match &self.model {
            Some((n, v)) => (Some(n.as_str()), Some(v.as_str())),
            None => (None, None),
        }
    }
}

/// A benchmark run and its suite (read by [`RunRow::read`] from `id, suite, suite_sha256,
/// created_ms, schedule`).
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: String,
    pub suite: String,
    pub suite_sha256: String,
    pub created_ms: i64,
    /// The schedule that started it (`None` for `bench run` and rollout gates).
    pub schedule: Option<String>,
}

impl RunRow {
    /// A row of `SELECT id, suite, suite_sha256, created_ms, schedule FROM bench_runs`.
    fn read(r: &super::db::Row<'_>) -> super::db::Result<RunRow> {
        Ok(RunRow {
            id: r.get(0)?,
            suite: r.get(1)?,
            suite_sha256: r.get(2)?,
            created_ms: r.get(3)?,
            schedule: r.get(4)?,
        })
    }
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

/// How many columns [`JOB_COLUMNS`] selects: a query's own columns come after them.
const JOB_COLUMN_COUNT: usize = 10;
const JOB_COLUMNS: &str =
    "j.run_id, j.job_id, j.agent_id, j.model_name, j.model_version, j.scenario, j.threads, j.state, j.error, \
     j.started_ms";

/// A job row whose state is still text (decoded by [`RawJob::decode`]).
struct RawJob {
    row: JobRow,
    state: String,
}

impl RawJob {
    fn read(r: &super::db::Row<'_>) -> super::db::Result<RawJob> {
        Ok(RawJob {
            row: JobRow {
                run_id: r.get(0)?,
                job_id: r.get(1)?,
                agent_id: r.get(2)?,
                model_name: r.get(3)?,
                model_version: r.get(4)?,
                scenario: r.get(5)?,
                threads: r.get(6)?,
                state: JobState::Pending,
                error: r.get(8)?,
                started_ms: r.get(9)?,
            },
            state: r.get(7)?,
        })
    }

    fn decode(self) -> Result<JobRow, StoreError> {
        let key = format!("{}, {}", self.row.run_id, self.row.job_id);
        Ok(JobRow {
            state: decode_state(&self.state, "bench_jobs", key)?,
            ..self.row
        })
    }
}

/// Every artifact a job names: its model's files, its reference's, its input files.
fn job_artifacts(job: &BenchJob) -> Vec<&str> {
    use edgefleet_proto::v1::workload::Input;
    let models = [&job.model, &job.reference]
        .into_iter()
        .flatten()
        .flat_map(|m| m.files.iter());
    let inputs = job
        .workload
        .as_ref()
        .and_then(|w| w.input.as_ref())
        .into_iter()
        .flat_map(|input| match input {
            Input::Audio(audio) => audio.files.iter(),
            Input::Image(image) => image.files.iter(),
            _ => [].iter(),
        });
    models.chain(inputs).map(|f| f.sha256.as_str()).collect()
}

impl Store {
    /// Creates a run and its jobs (agent id, job as sent) in one transaction.
    pub fn insert_run(
        &self,
        run: &RunRow,
        suite_toml: &str,
        jobs: &[(String, BenchJob)],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO bench_runs (id, suite, suite_sha256, suite_toml, created_ms, schedule)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                run.id,
                run.suite,
                run.suite_sha256,
                suite_toml,
                run.created_ms,
                run.schedule
            ],
        )?;
        // Many rows a statement: a run for a fleet is thousands of jobs, and each statement a
        // round trip to PostgreSQL.
        struct JobFields {
            model_name: String,
            model_version: String,
            scenario: String,
            threads: i64,
            spec: Vec<u8>,
        }
        let fields: Vec<JobFields> = jobs
            .iter()
            .map(|(_, job)| {
                let model = job.model.clone().unwrap_or_default();
                let workload = job.workload.clone().unwrap_or_default();
                JobFields {
                    model_name: model.name,
                    model_version: model.version,
                    scenario: workload.scenario,
                    threads: i64::from(workload.threads),
                    spec: job.encode_to_vec(),
                }
            })
            .collect();
        let mut values: Vec<&dyn Param> = Vec::with_capacity(jobs.len() * 8);
        for ((agent_id, job), f) in jobs.iter().zip(&fields) {
            values.extend([
                &run.id as &dyn Param,
                &job.job_id,
                agent_id,
                &f.model_name,
                &f.model_version,
                &f.scenario,
                &f.threads,
                &f.spec,
            ]);
        }
        tx.insert_rows(
            "INSERT INTO bench_jobs (run_id, job_id, agent_id, model_name, model_version,
                 scenario, threads, state, spec)",
            "(?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
            "",
            &values,
        )?;
        // The agent may fetch what its jobs name: models, references, input files.
        let mut granted = std::collections::BTreeSet::new();
        for (agent_id, job) in jobs {
            for sha in job_artifacts(job) {
                granted.insert((agent_id.as_str(), sha));
            }
        }
        let grants: Vec<&dyn Param> = granted
            .iter()
            .flat_map(|(agent_id, sha)| [agent_id as &dyn Param, sha as &dyn Param])
            .collect();
        tx.insert_rows(
            "INSERT INTO agent_artifacts (agent_id, sha256)",
            "(?, ?)",
            "ON CONFLICT DO NOTHING",
            &grants,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Jobs given to an agent that have no result yet, as (run id, job), oldest run first: what
    /// to send again when the agent reconnects.
    pub fn pending_jobs(&self, agent_id: &str) -> Result<Vec<(String, BenchJob)>, StoreError> {
        Ok(self
            .pending_jobs_of(&[agent_id.to_string()])?
            .remove(agent_id)
            .unwrap_or_default())
    }

    /// [`Store::pending_jobs`] for several agents in one query, by agent (an agent with none is
    /// left out).
    pub fn pending_jobs_of(
        &self,
        agent_ids: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<(String, BenchJob)>>, StoreError> {
        let list = super::db::json_list(agent_ids);
        let mut conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT j.agent_id, j.run_id, j.job_id, j.spec FROM {}
             JOIN bench_jobs j ON j.agent_id = ids.id JOIN bench_runs b ON b.id = j.run_id
             WHERE j.state = 'pending' ORDER BY b.created_ms, j.job_id",
            self.backend().json_ids(1)
        ))?;
        let raw = stmt
            .query_map(params![list], |r| {
                Ok((
                    r.get::<String>(0)?,
                    r.get::<String>(1)?,
                    r.get::<String>(2)?,
                    r.get::<Vec<u8>>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out: std::collections::HashMap<String, Vec<_>> = Default::default();
        for (agent_id, run_id, job_id, spec) in raw {
            let job = decode_proto(&spec, "bench_jobs", format!("{run_id}, {job_id}"))?;
            out.entry(agent_id).or_default().push((run_id, job));
        }
        Ok(out)
    }

    /// The newest `limit` runs, newest first (the console's list).
    pub fn recent_runs(&self, limit: usize) -> Result<Vec<RunRow>, StoreError> {
        let mut conn = self.conn()?;
        Ok(conn.query_map(
            "SELECT id, suite, suite_sha256, created_ms, schedule FROM bench_runs
             ORDER BY created_ms DESC, id LIMIT ?1",
            params![limit as i64],
            RunRow::read,
        )?)
    }

    pub fn run(&self, run_id: &str) -> Result<Option<RunRow>, StoreError> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT id, suite, suite_sha256, created_ms, schedule FROM bench_runs WHERE id = ?1",
                params![run_id],
                RunRow::read,
            )
            .optional()?)
    }

    /// Jobs of one run, or of every run when `run_id` is `None`.
    pub fn jobs(&self, run_id: Option<&str>) -> Result<Vec<JobRow>, StoreError> {
        let mut conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {JOB_COLUMNS} FROM bench_jobs j WHERE ?1 IS NULL OR j.run_id = ?1
             ORDER BY j.run_id, j.job_id"
        ))?;
        let raw = stmt
            .query_map(params![run_id], RawJob::read)?
            .collect::<Result<Vec<_>, _>>()?;
        raw.into_iter().map(RawJob::decode).collect()
    }

    /// An agent's jobs in its newest `limit` runs' jobs, newest run first (the console's agent
    /// page), each with when its run was created.
    pub fn agent_jobs(
        &self,
        agent_id: &str,
        limit: usize,
    ) -> Result<Vec<(JobRow, i64)>, StoreError> {
        let mut conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {JOB_COLUMNS}, b.created_ms FROM bench_jobs j JOIN bench_runs b ON b.id = j.run_id
             WHERE j.agent_id = ?1 ORDER BY b.created_ms DESC, j.job_id LIMIT ?2"
        ))?;
        let raw = stmt
            .query_map(params![agent_id, limit as i64], |r| {
                Ok((RawJob::read(r)?, r.get::<i64>(JOB_COLUMN_COUNT)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        raw.into_iter()
            .map(|(job, created)| Ok((RawJob::decode(job)?, created)))
            .collect()
    }

    /// Failed jobs that pass every condition of `filter`, oldest run first.
    pub fn failed_jobs_where(&self, filter: &ResultFilter) -> Result<Vec<JobRow>, StoreError> {
        let mut conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {JOB_COLUMNS} FROM bench_jobs j JOIN bench_runs b ON b.id = j.run_id
             WHERE j.state = 'failed' AND {RESULT_FILTER}
             ORDER BY b.created_ms, j.job_id"
        ))?;
        let (name, version) = filter.model_params();
        let raw = stmt
            .query_map(
                params![filter.run_id, name, version, filter.suite, filter.since_ms],
                RawJob::read,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        raw.into_iter().map(RawJob::decode).collect()
    }

    /// Notes that the agent began a job still pending (its own job only); `false` when there
    /// is no such pending job (finished already, or not this agent's).
    pub fn job_started(
        &self,
        agent_id: &str,
        run_id: &str,
        job_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let changed = self.conn()?.execute(
            "UPDATE bench_jobs SET started_ms = ?4
             WHERE run_id = ?1 AND job_id = ?2 AND agent_id = ?3 AND state = 'pending'",
            params![run_id, job_id, agent_id, now_ms],
        )?;
        Ok(changed == 1)
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

    /// How many benchmark jobs are in each state (for the metrics).
    pub fn job_counts(&self) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        super::count_by_state(&mut self.conn()?, "bench_jobs")
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
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let recorded = finish_job_in(&mut tx, agent_id, run_id, job_id, outcome)?;
        if recorded == Recorded::Stored {
            tx.commit()?;
        }
        Ok(recorded)
    }

    /// Stores many jobs' results in one transaction (one commit for all: what a run's results
    /// arriving by the thousand need), each as [`Store::record_measurement`] or
    /// [`Store::record_failure`] would. Per result what it did, or why it could not be read (a
    /// corrupt job row, which changes nothing); a database error fails them all.
    pub fn record_results(
        &self,
        results: &[FinishedJob],
    ) -> Result<Vec<Result<Recorded, StoreError>>, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            let outcome = match &r.outcome {
                Ok(m) => Ok(m),
                Err(e) => Err(e.as_str()),
            };
            match finish_job_in(&mut tx, &r.agent_id, &r.run_id, &r.job_id, outcome) {
                Err(e @ StoreError::Corrupt { .. }) => out.push(Err(e)),
                Err(e) => return Err(e),
                Ok(recorded) => out.push(Ok(recorded)),
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Measurements of one run, or of every run.
    pub fn results(&self, run_id: Option<&str>) -> Result<Vec<ResultRow>, StoreError> {
        self.results_where(&ResultFilter {
            run_id: run_id.map(str::to_string),
            ..ResultFilter::default()
        })
    }

    /// Measurements that pass every condition of `filter`, oldest run first.
    pub fn results_where(&self, filter: &ResultFilter) -> Result<Vec<ResultRow>, StoreError> {
        let mut conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {JOB_COLUMNS}, r.measurement, b.suite, b.suite_sha256
             FROM results r
             JOIN bench_jobs j ON j.run_id = r.run_id AND j.job_id = r.job_id
             JOIN bench_runs b ON b.id = r.run_id
             WHERE {RESULT_FILTER}
             ORDER BY b.created_ms, j.job_id"
        ))?;
        let (name, version) = filter.model_params();
        let raw = stmt
            .query_map(
                params![filter.run_id, name, version, filter.suite, filter.since_ms],
                |r| {
                    Ok((
                        RawJob::read(r)?,
                        r.get::<Vec<u8>>(JOB_COLUMN_COUNT)?,
                        r.get::<String>(JOB_COLUMN_COUNT + 1)?,
                        r.get::<String>(JOB_COLUMN_COUNT + 2)?,
                    ))
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        drop(conn);
        raw.into_iter()
            .map(|(job, blob, suite, suite_sha256)| {
                let job = job.decode()?;
                let key = format!("{}, {}", job.run_id, job.job_id);
                Ok(ResultRow {
                    measurement: decode_proto(&blob, "results", key)?,
                    job,
                    suite,
                    suite_sha256,
                })
            })
            .collect()
    }

    /// Whether a run has jobs still waiting for a result.
    pub fn run_unfinished(&self, run_id: &str) -> Result<bool, StoreError> {
        Ok(self.conn()?.query_row(
            "SELECT EXISTS (SELECT 1 FROM bench_jobs WHERE run_id = ?1 AND state = 'pending')",
            params![run_id],
            |r| r.get(0),
        )?)
    }

    /// The newest run of a suite that has at least one result.
    pub fn newest_measured_run(&self, suite: &str) -> Result<Option<RunRow>, StoreError> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT b.id, b.suite, b.suite_sha256, b.created_ms, b.schedule FROM bench_runs b
                 WHERE b.suite = ?1 AND EXISTS (SELECT 1 FROM results r WHERE r.run_id = b.id)
                 ORDER BY b.created_ms DESC LIMIT 1",
                params![suite],
                RunRow::read,
            )
            .optional()?)
    }
}

/// A job's result, for [`Store::record_results`].
#[derive(Debug, Clone)]
pub struct FinishedJob {
    pub agent_id: String,
    pub run_id: String,
    pub job_id: String,
    /// Its measurement, or why it failed.
    pub outcome: Result<Measurement, String>,
}

/// Records one job's result inside the transaction `tx` (which the caller commits).
fn finish_job_in(
    tx: &mut super::db::Conn<'_>,
    agent_id: &str,
    run_id: &str,
    job_id: &str,
    outcome: Result<&Measurement, &str>,
) -> Result<Recorded, StoreError> {
    let state: Option<String> = tx
        .query_row(
            "SELECT state FROM bench_jobs WHERE run_id = ?1 AND job_id = ?2 AND agent_id = ?3",
            params![run_id, job_id, agent_id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(state) = state else {
        return Ok(Recorded::UnknownJob);
    };
    match decode_state(&state, "bench_jobs", format!("{run_id}, {job_id}"))? {
        JobState::Pending => {}
        JobState::Done | JobState::Failed => return Ok(Recorded::Duplicate),
    }
    // The job leaves `pending` only if it still is when written: of two answers racing
    // (a retry on another connection, on PostgreSQL), the second changes nothing.
    let finished = match outcome {
        Ok(_) => tx.execute(
            "UPDATE bench_jobs SET state = 'done'
             WHERE run_id = ?1 AND job_id = ?2 AND state = 'pending'",
            params![run_id, job_id],
        )?,
        Err(error) => tx.execute(
            "UPDATE bench_jobs SET state = 'failed', error = ?3
             WHERE run_id = ?1 AND job_id = ?2 AND state = 'pending'",
            params![run_id, job_id, error],
        )?,
    };
    if finished == 0 {
        return Ok(Recorded::Duplicate);
    }
    if let Ok(m) = outcome {
        tx.execute(
            "INSERT INTO results (run_id, job_id, measurement) VALUES (?1, ?2, ?3)",
            params![run_id, job_id, m.encode_to_vec()],
        )?;
    }
    Ok(Recorded::Stored)
}
