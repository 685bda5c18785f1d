//! Baselines (the run each later run of a suite is judged against, per device class), the
//! regressions found when a run finishes, and which runs have been judged.

use super::db::{params, OptionalExtension};

use super::{decode_state, Store, StoreError};
use crate::stored_states::stored_states;

stored_states! {
    /// What a regression was found against.
    RegressionKind {
        /// The suite's baseline run on that device class.
        Baseline = "baseline",
        /// The recent history of (suite, model, scenario, device class).
        Drift = "drift",
    }
}

/// The baseline of a suite on one device class.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineRow {
    pub suite: String,
    pub device_class: String,
    pub run_id: String,
    pub set_ms: i64,
}

/// A stored regression (`id` is 0 before it is stored).
#[derive(Debug, Clone, PartialEq)]
pub struct RegressionRow {
    pub id: i64,
    pub run_id: String,
    pub suite: String,
    /// name@version
    pub model: String,
    pub scenario: String,
    pub device_class: String,
    pub metric: String,
    pub kind: RegressionKind,
    /// The baseline run, or the history window (`12 runs`).
    pub against: String,
    /// New over baseline (or over the history's median).
    pub ratio: f64,
    pub ci95: Option<[f64; 2]>,
    pub robust_z: Option<f64>,
    pub detected_ms: i64,
    pub acknowledged_ms: Option<i64>,
}

const REGRESSION_COLUMNS: &str = "id, run_id, suite, model, scenario, device_class, metric, kind,
    against, ratio, ci_low, ci_high, robust_z, detected_ms, acknowledged_ms";

fn read_regression(r: &super::db::Row<'_>) -> super::db::Result<(RegressionRow, String)> {
    let ci = r.get::<Option<f64>>(10)?.zip(r.get::<Option<f64>>(11)?);
    Ok((
        RegressionRow {
            id: r.get(0)?,
            run_id: r.get(1)?,
            suite: r.get(2)?,
            model: r.get(3)?,
            scenario: r.get(4)?,
            device_class: r.get(5)?,
            metric: r.get(6)?,
            kind: RegressionKind::Baseline,
            against: r.get(8)?,
            ratio: r.get(9)?,
            ci95: ci.map(|(l, h)| [l, h]),
            robust_z: r.get(12)?,
            detected_ms: r.get(13)?,
            acknowledged_ms: r.get(14)?,
        },
        r.get(7)?,
    ))
}

fn decode_regression(
    (mut row, kind): (RegressionRow, String),
) -> Result<RegressionRow, StoreError> {
    row.kind = decode_state(&kind, "regressions", row.id.to_string())?;
    Ok(row)
}

impl Store {
    /// Makes `run_id` the baseline of `suite` on each of `device_classes` (replacing earlier
    /// ones there).
    pub fn set_baselines(
        &self,
        suite: &str,
        run_id: &str,
        device_classes: &[String],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        for class in device_classes {
            tx.execute(
                "INSERT INTO baselines (suite, device_class, run_id, set_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (suite, device_class) DO UPDATE SET run_id = ?3, set_ms = ?4",
                params![suite, class, run_id, now_ms],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Baselines of one suite, or of every suite.
    pub fn baselines(&self, suite: Option<&str>) -> Result<Vec<BaselineRow>, StoreError> {
        let mut conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT suite, device_class, run_id, set_ms FROM baselines
             WHERE ?1 IS NULL OR suite = ?1 ORDER BY suite, device_class",
        )?;
        let rows = stmt
            .query_map(params![suite], |r| {
                Ok(BaselineRow {
                    suite: r.get(0)?,
                    device_class: r.get(1)?,
                    run_id: r.get(2)?,
                    set_ms: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Runs with no pending job that have not been judged yet, oldest first.
    pub fn unjudged_finished_runs(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT b.id FROM bench_runs b
             WHERE NOT EXISTS (SELECT 1 FROM regression_checks c WHERE c.run_id = b.id)
               AND NOT EXISTS (SELECT 1 FROM bench_jobs j WHERE j.run_id = b.id AND j.state = 'pending')
             ORDER BY b.created_ms",
        )?;
        let ids = stmt
            .query_map(params![], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(ids)
    }

    /// Whether a run has been judged.
    pub fn run_judged(&self, run_id: &str) -> Result<bool, StoreError> {
        Ok(self.conn()?.query_row(
            "SELECT EXISTS (SELECT 1 FROM regression_checks WHERE run_id = ?1)",
            params![run_id],
            |r| r.get(0),
        )?)
    }

    /// Stores a run's verdict: its regressions and that it was judged, in one transaction (a
    /// run judged twice stores nothing the second time). Returns the stored rows with their ids.
    pub fn record_judgement(
        &self,
        run_id: &str,
        found: &[RegressionRow],
        now_ms: i64,
    ) -> Result<Vec<RegressionRow>, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let fresh = tx.execute(
            "INSERT INTO regression_checks (run_id, checked_ms) VALUES (?1, ?2)
             ON CONFLICT DO NOTHING",
            params![run_id, now_ms],
        )? == 1;
        let mut stored = Vec::new();
        if fresh {
            for r in found {
                let id = tx.query_map(
                    "INSERT INTO regressions (run_id, suite, model, scenario,
                         device_class, metric, kind, against, ratio, ci_low, ci_high, robust_z,
                         detected_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                     ON CONFLICT DO NOTHING
                     RETURNING id",
                    params![
                        r.run_id,
                        r.suite,
                        r.model,
                        r.scenario,
                        r.device_class,
                        r.metric,
                        r.kind.as_str(),
                        r.against,
                        r.ratio,
                        r.ci95.map(|c| c[0]),
                        r.ci95.map(|c| c[1]),
                        r.robust_z,
                        now_ms
                    ],
                    |row| row.get::<i64>(0),
                )?;
                // A finding stored already (the same run, model, metric and kind) is not new.
                if let Some(id) = id.first() {
                    stored.push(RegressionRow {
                        id: *id,
                        detected_ms: now_ms,
                        ..r.clone()
                    });
                }
            }
        }
        tx.commit()?;
        Ok(stored)
    }

    /// Regressions detected at or after `since_ms`, newest first.
    pub fn regressions(&self, since_ms: i64) -> Result<Vec<RegressionRow>, StoreError> {
        let mut conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {REGRESSION_COLUMNS} FROM regressions WHERE detected_ms >= ?1
             ORDER BY detected_ms DESC, id DESC"
        ))?;
        let raw = stmt
            .query_map(params![since_ms], read_regression)?
            .collect::<Result<Vec<_>, _>>()?;
        raw.into_iter().map(decode_regression).collect()
    }

    /// Marks a regression acknowledged (once; acknowledging again keeps the first time).
    /// `None` when there is no such regression.
    pub fn acknowledge_regression(
        &self,
        id: i64,
        now_ms: i64,
    ) -> Result<Option<RegressionRow>, StoreError> {
        let mut conn = self.conn()?;
        conn.execute(
            "UPDATE regressions SET acknowledged_ms = ?2 WHERE id = ?1 AND acknowledged_ms IS NULL",
            params![id, now_ms],
        )?;
        let raw = conn
            .query_row(
                &format!("SELECT {REGRESSION_COLUMNS} FROM regressions WHERE id = ?1"),
                params![id],
                read_regression,
            )
            .optional()?;
        raw.map(decode_regression).transpose()
    }
}
