//! Retention and the store's size: results of runs older than the retention period are reduced
//! to their summary (the latency histogram and the 101-percentile list dropped: about 1.3 KB of
//! a stored result's 1.5), in small batches, one run at a time; baseline runs stay whole, so
//! `compare` against a baseline and regression checks keep working, and every summary figure
//! (percentiles, throughput, energy, quality) stays for reports and trends. And
//! [`Store::table_stats`]: rows and bytes per family of tables.

use edgefleet_proto::v1::Measurement;
use prost::Message;

use super::db::params;
use super::{Backend, Store, StoreError};

/// What one pass of [`Store::summarize_old_results`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summarized {
    /// Results reduced to their summary.
    pub results: u64,
    /// Bytes of measurements before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Results whose measurement does not decode: left as they are, and not tried again.
    pub corrupt: u64,
}

/// Rows and bytes of one family of tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableStats {
    pub family: &'static str,
    pub tables: &'static [&'static str],
    pub rows: u64,
    /// What the rows take (their stored size, headers included, indexes not). Space a
    /// retention pass frees is reused by new rows; the database file shrinks only with
    /// `VACUUM` (SQLite) or `VACUUM FULL` (PostgreSQL).
    pub bytes: u64,
}

/// The families [`Store::table_stats`] reports, each with its tables.
const FAMILIES: &[(&str, &[&str])] = &[
    ("agents", &["agents", "agent_models", "agent_artifacts"]),
    ("registry", &["models", "model_files", "artifacts"]),
    ("runs", &["bench_runs", "bench_jobs"]),
    ("results", &["results"]),
    (
        "rollouts",
        &["rollouts", "rollout_targets", "rollout_gates", "events"],
    ),
    ("trust", &["enrollment_tokens", "admin_tokens"]),
    (
        "comparisons",
        &["baselines", "regressions", "regression_checks"],
    ),
    (
        "schedules",
        &["schedules", "schedule_fires", "schedule_fire_claims"],
    ),
];

/// A measurement without what only `compare`'s bootstrap and the distribution charts read.
fn summary_of(mut m: Measurement) -> Measurement {
    m.latency_histogram.clear();
    if let Some(latency) = m.latency_ms.as_mut() {
        latency.percentiles.clear();
    }
    m
}

impl Store {
    /// Reduces up to `batch` whole results of one run created before `before_ms` to their
    /// summary, in one short transaction; 0 results when none is left. Only a finished run
    /// that was judged for regressions and is not a baseline is reduced.
    /// Called again and again until then, so writers wait for one batch at most.
    pub fn summarize_old_results(
        &self,
        before_ms: i64,
        now_ms: i64,
        batch: usize,
    ) -> Result<Summarized, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let run: Option<String> = tx
            .query_map(
                "SELECT b.id FROM bench_runs b
                 WHERE b.created_ms < ?1
                   AND NOT EXISTS (SELECT 1 FROM baselines l WHERE l.run_id = b.id)
                   AND NOT EXISTS (SELECT 1 FROM bench_jobs j
                                   WHERE j.run_id = b.id AND j.state = 'pending')
                   AND EXISTS (SELECT 1 FROM regression_checks c WHERE c.run_id = b.id)
                   AND EXISTS (SELECT 1 FROM results r
                               WHERE r.run_id = b.id AND r.summarized_ms = 0)
                 ORDER BY b.created_ms, b.id LIMIT 1",
                params![before_ms],
                |r| r.get(0),
            )?
            .into_iter()
            .next();
        let Some(run) = run else {
            return Ok(Summarized::default());
        };
        let rows: Vec<(String, Vec<u8>)> = tx.query_map(
            "SELECT job_id, measurement FROM results
             WHERE run_id = ?1 AND summarized_ms = 0 ORDER BY job_id LIMIT ?2",
            params![run, batch as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut done = Summarized::default();
        for (job_id, blob) in rows {
            let reduced = match Measurement::decode(blob.as_slice()) {
                Ok(m) => summary_of(m).encode_to_vec(),
                Err(_) => {
                    done.corrupt += 1;
                    blob.clone()
                }
            };
            done.results += 1;
            done.bytes_before += blob.len() as u64;
            done.bytes_after += reduced.len() as u64;
            // A baseline set meanwhile (another connection) keeps its run whole.
            tx.execute(
                "UPDATE results SET measurement = ?3, summarized_ms = ?4
                 WHERE run_id = ?1 AND job_id = ?2
                   AND NOT EXISTS (SELECT 1 FROM baselines l WHERE l.run_id = ?1)",
                params![run, job_id, reduced, now_ms],
            )?;
        }
        tx.commit()?;
        Ok(done)
    }

    /// How many results retention has reduced to their summary.
    pub fn summarized_results(&self) -> Result<u64, StoreError> {
        let n: i64 = self.conn()?.query_row(
            "SELECT COUNT(*) FROM results WHERE summarized_ms <> 0",
            params![],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    /// Rows and bytes per family of tables, for `edgefleet store stats`.
    pub fn table_stats(&self) -> Result<Vec<TableStats>, StoreError> {
        let backend = self.backend();
        let mut conn = self.conn()?;
        let mut stats = Vec::with_capacity(FAMILIES.len());
        for (family, tables) in FAMILIES {
            let mut rows = 0u64;
            let mut bytes = 0u64;
            for table in *tables {
                let n: i64 =
                    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), params![], |r| {
                        r.get(0)
                    })?;
                rows += n.max(0) as u64;
                let size: i64 = match backend {
                    Backend::Postgres => conn.query_row(
                        &format!(
                            "SELECT COALESCE(SUM(pg_column_size(t.*)), 0)::BIGINT FROM {table} t"
                        ),
                        params![],
                        |r| r.get(0),
                    )?,
                    // dbstat is in the bundled SQLite.
                    Backend::Sqlite => conn.query_row(
                        "SELECT COALESCE(SUM(payload), 0) FROM dbstat WHERE name = ?1",
                        params![table.to_string()],
                        |r| r.get(0),
                    )?,
                };
                bytes += size.max(0) as u64;
            }
            stats.push(TableStats {
                family,
                tables,
                rows,
                bytes,
            });
        }
        Ok(stats)
    }
}
