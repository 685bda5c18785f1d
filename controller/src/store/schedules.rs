//! Scheduled benchmark runs: each schedule (cron, suite as given, selector, options), each fire
//! and what came of it, and the questions a fire asks (is this schedule's last run finished,
//! which agents are busy). tokio-cron-scheduler keeps no job code, so these rows are the truth
//! and are registered again at every start.

use std::collections::BTreeSet;
use std::time::Duration;

use super::db::{params, OptionalExtension};

use super::{decode_json, decode_state, Store, StoreError};
use crate::schedule::{parse_time_zone, CronSpec};
use crate::stored_states::stored_states;

/// A suite's input file as it was stored when the schedule was added (an artifact).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredInput {
    /// The path the suite names.
    pub path: String,
    pub sha256: String,
    pub size_bytes: u64,
}

/// A schedule, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRow {
    pub name: String,
    pub cron: CronSpec,
    /// The suite file's name as the user gave it (for listings).
    pub suite_file: String,
    pub suite_toml: String,
    pub suite_sha256: String,
    pub inputs: Vec<StoredInput>,
    /// The selector expression (`key=value,...`), empty for every agent.
    pub selector: String,
    pub jitter: Duration,
    pub when_idle: bool,
    pub max_start_temp_c: Option<f64>,
    pub created_ms: i64,
    /// The planned time of the last cron fire, or of the newest missed one.
    pub last_fire_ms: Option<i64>,
    pub missed_count: u64,
}

stored_states! {
    /// What a fire did, as stored.
    FireKind {
        Started = "started",
        SkippedStillRunning = "skipped-still-running",
        Missed = "missed",
        Failed = "failed",
    }
}

/// What came of one fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FireOutcome {
    Started {
        run_id: String,
    },
    /// The schedule's previous run still had unfinished jobs (or a fire of it was starting).
    SkippedStillRunning,
    /// The controller was down when it was due; it is not run late.
    Missed,
    Failed {
        reason: String,
    },
}

impl FireOutcome {
    pub fn kind(&self) -> FireKind {
        match self {
            FireOutcome::Started { .. } => FireKind::Started,
            FireOutcome::SkippedStillRunning => FireKind::SkippedStillRunning,
            FireOutcome::Missed => FireKind::Missed,
            FireOutcome::Failed { .. } => FireKind::Failed,
        }
    }
}

/// One recorded fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FireRow {
    pub schedule: String,
    pub planned_ms: i64,
    pub outcome: FireOutcome,
    /// `schedule run NAME`, not the cron.
    pub manual: bool,
    /// Agents a `--when-idle` fire left out (their names).
    pub left_out: Vec<String>,
    pub recorded_ms: i64,
}

const SCHEDULE_COLUMNS: &str = "name, cron, suite_file, suite_toml, suite_sha256, inputs, \
     selector, jitter_ms, when_idle, max_start_temp_c, created_ms, last_fire_ms, missed_count, \
     timezone";

/// A schedule row as read, its typed columns still text (decoded by [`RawSchedule::decode`]).
struct RawSchedule {
    name: String,
    cron: String,
    suite_file: String,
    suite_toml: String,
    suite_sha256: String,
    inputs: String,
    selector: String,
    jitter_ms: i64,
    when_idle: i64,
    max_start_temp_c: Option<f64>,
    created_ms: i64,
    last_fire_ms: Option<i64>,
    missed_count: i64,
    timezone: String,
}

impl RawSchedule {
    fn read(r: &super::db::Row<'_>) -> super::db::Result<RawSchedule> {
        Ok(RawSchedule {
            name: r.get(0)?,
            cron: r.get(1)?,
            suite_file: r.get(2)?,
            suite_toml: r.get(3)?,
            suite_sha256: r.get(4)?,
            inputs: r.get(5)?,
            selector: r.get(6)?,
            jitter_ms: r.get(7)?,
            when_idle: r.get(8)?,
            max_start_temp_c: r.get(9)?,
            created_ms: r.get(10)?,
            last_fire_ms: r.get(11)?,
            missed_count: r.get(12)?,
            timezone: r.get(13)?,
        })
    }

    fn decode(self) -> Result<ScheduleRow, StoreError> {
        let table = "schedules";
        let key = self.name.clone();
        let corrupt = |detail: String| StoreError::corrupt(table, key.clone(), detail);
        let zone = parse_time_zone(&self.timezone).map_err(|e| corrupt(e.to_string()))?;
        let cron = CronSpec::parse_in(&self.cron, zone).map_err(|e| corrupt(e.to_string()))?;
        let jitter_ms = u64::try_from(self.jitter_ms)
            .map_err(|_| corrupt(format!("negative jitter {}", self.jitter_ms)))?;
        let when_idle = match self.when_idle {
            0 => false,
            1 => true,
            other => return Err(corrupt(format!("when_idle is {other}, not 0 or 1"))),
        };
        let missed_count = u64::try_from(self.missed_count)
            .map_err(|_| corrupt(format!("negative missed count {}", self.missed_count)))?;
        Ok(ScheduleRow {
            inputs: decode_json(&self.inputs, table, key.clone())?,
            name: self.name,
            cron,
            suite_file: self.suite_file,
            suite_toml: self.suite_toml,
            suite_sha256: self.suite_sha256,
            selector: self.selector,
            jitter: Duration::from_millis(jitter_ms),
            when_idle,
            max_start_temp_c: self.max_start_temp_c,
            created_ms: self.created_ms,
            last_fire_ms: self.last_fire_ms,
            missed_count,
        })
    }
}

const FIRE_COLUMNS: &str =
    "id, schedule, planned_ms, outcome, run_id, reason, manual, left_out, recorded_ms";

/// A fire row as read (decoded by [`RawFire::decode`]).
struct RawFire {
    id: i64,
    schedule: String,
    planned_ms: i64,
    outcome: String,
    run_id: Option<String>,
    reason: String,
    manual: i64,
    left_out: String,
    recorded_ms: i64,
}

impl RawFire {
    fn read(r: &super::db::Row<'_>) -> super::db::Result<RawFire> {
        Ok(RawFire {
            id: r.get(0)?,
            schedule: r.get(1)?,
            planned_ms: r.get(2)?,
            outcome: r.get(3)?,
            run_id: r.get(4)?,
            reason: r.get(5)?,
            manual: r.get(6)?,
            left_out: r.get(7)?,
            recorded_ms: r.get(8)?,
        })
    }

    fn decode(self) -> Result<FireRow, StoreError> {
        let table = "schedule_fires";
        let key = format!("{}, {}", self.schedule, self.id);
        let outcome = match decode_state::<FireKind>(&self.outcome, table, key.clone())? {
            FireKind::Started => FireOutcome::Started {
                run_id: self
                    .run_id
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| StoreError::corrupt(table, key.clone(), "started, no run"))?,
            },
            FireKind::SkippedStillRunning => FireOutcome::SkippedStillRunning,
            FireKind::Missed => FireOutcome::Missed,
            FireKind::Failed => FireOutcome::Failed {
                reason: self.reason,
            },
        };
        Ok(FireRow {
            left_out: decode_json(&self.left_out, table, key)?,
            schedule: self.schedule,
            planned_ms: self.planned_ms,
            outcome,
            manual: self.manual != 0,
            recorded_ms: self.recorded_ms,
        })
    }
}

fn insert_fire(conn: &mut super::db::Conn<'_>, fire: &FireRow) -> Result<(), StoreError> {
    let (run_id, reason) = match &fire.outcome {
        FireOutcome::Started { run_id } => (Some(run_id.as_str()), ""),
        FireOutcome::Failed { reason } => (None, reason.as_str()),
        FireOutcome::SkippedStillRunning | FireOutcome::Missed => (None, ""),
    };
    conn.execute(
        "INSERT INTO schedule_fires (schedule, planned_ms, outcome, run_id, reason, manual,
             left_out, recorded_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            fire.schedule,
            fire.planned_ms,
            fire.outcome.kind().as_str(),
            run_id,
            reason,
            i64::from(fire.manual),
            serde_json::to_string(&fire.left_out).expect("names serialize"),
            fire.recorded_ms
        ],
    )?;
    Ok(())
}

/// Claims of fires planned more than a day before the newest recorded one are dropped.
const CLAIMS_KEPT_MS: i64 = 24 * 3600 * 1000;

impl Store {
    /// Stores a new schedule; a name in use is [`StoreError::ScheduleExists`].
    pub fn insert_schedule(&self, s: &ScheduleRow) -> Result<(), StoreError> {
        let jitter_ms = i64::try_from(s.jitter.as_millis()).unwrap_or(i64::MAX);
        let inserted = self.conn()?.execute(
            "INSERT INTO schedules (name, cron, suite_file, suite_toml, suite_sha256, inputs,
                 selector, jitter_ms, when_idle, max_start_temp_c, created_ms, last_fire_ms,
                 missed_count, timezone)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
             ON CONFLICT (name) DO NOTHING",
            params![
                s.name,
                s.cron.as_str(),
                s.suite_file,
                s.suite_toml,
                s.suite_sha256,
                serde_json::to_string(&s.inputs).expect("inputs serialize"),
                s.selector,
                jitter_ms,
                i64::from(s.when_idle),
                s.max_start_temp_c,
                s.created_ms,
                s.last_fire_ms,
                i64::try_from(s.missed_count).unwrap_or(i64::MAX),
                s.cron.zone().name(),
            ],
        )?;
        if inserted == 0 {
            return Err(StoreError::ScheduleExists(s.name.clone()));
        }
        Ok(())
    }

    /// Every schedule, by name.
    pub fn schedules(&self) -> Result<Vec<ScheduleRow>, StoreError> {
        let mut conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY name"
        ))?;
        let raw = stmt
            .query_map(params![], RawSchedule::read)?
            .collect::<Result<Vec<_>, _>>()?;
        raw.into_iter().map(RawSchedule::decode).collect()
    }

    pub fn schedule(&self, name: &str) -> Result<Option<ScheduleRow>, StoreError> {
        let raw = self
            .conn()?
            .query_row(
                &format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = ?1"),
                params![name],
                RawSchedule::read,
            )
            .optional()?;
        raw.map(RawSchedule::decode).transpose()
    }

    /// Removes a schedule and its fire history (its runs and their results stay); whether it
    /// existed.
    pub fn remove_schedule(&self, name: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM schedule_fires WHERE schedule = ?1",
            params![name],
        )?;
        tx.execute(
            "DELETE FROM schedule_fire_claims WHERE schedule = ?1",
            params![name],
        )?;
        let removed = tx.execute("DELETE FROM schedules WHERE name = ?1", params![name])?;
        tx.commit()?;
        Ok(removed > 0)
    }

    /// Records a fire; a cron fire also becomes the schedule's last fire (what missed fires are
    /// counted from after a restart).
    pub fn record_fire(&self, fire: &FireRow) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        insert_fire(&mut tx, fire)?;
        if !fire.manual {
            tx.execute(
                "UPDATE schedules SET last_fire_ms = CASE WHEN last_fire_ms > ?2 THEN last_fire_ms ELSE ?2 END
                 WHERE name = ?1",
                params![fire.schedule, fire.planned_ms],
            )?;
            // A claim only matters while a leader could still fire its time late.
            tx.execute(
                "DELETE FROM schedule_fire_claims WHERE schedule = ?1 AND planned_ms < ?2",
                params![fire.schedule, fire.planned_ms - CLAIMS_KEPT_MS],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records the fires a stopped controller missed: one row for each of `recent` (the newest
    /// ones), `count` added to the schedule's missed count, and the newest planned time as its
    /// last fire, all in one transaction.
    pub fn record_missed(
        &self,
        name: &str,
        recent: &[i64],
        count: u64,
        recorded_ms: i64,
    ) -> Result<(), StoreError> {
        let Some(&newest) = recent.iter().max() else {
            return Ok(());
        };
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        for &planned_ms in recent {
            insert_fire(
                &mut tx,
                &FireRow {
                    schedule: name.to_string(),
                    planned_ms,
                    outcome: FireOutcome::Missed,
                    manual: false,
                    left_out: Vec::new(),
                    recorded_ms,
                },
            )?;
        }
        tx.execute(
            "UPDATE schedules SET missed_count = missed_count + ?2,
                 last_fire_ms = CASE WHEN last_fire_ms > ?3 THEN last_fire_ms ELSE ?3 END
             WHERE name = ?1",
            params![name, i64::try_from(count).unwrap_or(i64::MAX), newest],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A schedule's fires, newest first (at most `limit`).
    pub fn fires(&self, name: &str, limit: usize) -> Result<Vec<FireRow>, StoreError> {
        let mut conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {FIRE_COLUMNS} FROM schedule_fires WHERE schedule = ?1
             ORDER BY id DESC LIMIT ?2"
        ))?;
        let raw = stmt
            .query_map(
                params![name, i64::try_from(limit).unwrap_or(i64::MAX)],
                RawFire::read,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        raw.into_iter().map(RawFire::decode).collect()
    }

    /// Runs a schedule started that still have unfinished (pending) jobs.
    pub fn unfinished_runs_of(&self, schedule: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT DISTINCT b.id FROM bench_runs b JOIN bench_jobs j ON j.run_id = b.id
             WHERE b.schedule = ?1 AND j.state = 'pending' ORDER BY b.id",
        )?;
        let ids = stmt
            .query_map(params![schedule], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(ids)
    }

    /// The ids of runs a schedule started, oldest first.
    pub fn runs_of_schedule(&self, schedule: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn()?;
        let mut stmt =
            conn.prepare("SELECT id FROM bench_runs WHERE schedule = ?1 ORDER BY created_ms, id")?;
        let ids = stmt
            .query_map(params![schedule], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(ids)
    }

    /// Agents that are busy: an unfinished benchmark job, or a rollout install or rollback in
    /// progress on them.
    pub fn busy_agents(&self) -> Result<BTreeSet<String>, StoreError> {
        let mut conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT agent_id FROM bench_jobs WHERE state = 'pending'
             UNION
             SELECT t.agent_id FROM rollout_targets t JOIN rollouts r ON r.id = t.rollout_id
             WHERE (t.state = 'installing' AND r.state IN ('running', 'paused'))
                OR t.state = 'rolling_back'",
        )?;
        let ids = stmt
            .query_map(params![], |r| r.get(0))?
            .collect::<Result<BTreeSet<String>, _>>()?;
        Ok(ids)
    }
}
