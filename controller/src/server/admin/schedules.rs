//! Scheduled benchmark runs: `schedule add` (everything parsed before anything is stored, then
//! registered with the live scheduler at once), `schedule ls`, `schedule rm` and `schedule run`
//! (a fire now, under the same rules as a cron fire).

use edgefleet_proto::v1::{
    AddScheduleRequest, ListSchedulesReply, RemoveScheduleReply, ScheduleFire, ScheduleInfo,
};
use edgefleet_suites::Suite;
use tonic::Status;

use super::{bench, internal};
use crate::clock::now_ms;
use crate::schedule::{parse_time_zone, CronSpec};
use crate::selector;
use crate::server::schedules::fire;
use crate::server::Controller;
use crate::store::{FireOutcome, FireRow, ScheduleRow, StoredInput};

/// `schedule add`: refuses a bad name, cron expression, suite, selector or temperature with
/// INVALID_ARGUMENT (an unknown model with NOT_FOUND) before anything is stored.
pub(super) async fn add(ctl: &Controller, req: AddScheduleRequest) -> Result<ScheduleInfo, Status> {
    let name = req.name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(Status::invalid_argument(format!(
            "schedule name `{name}` must be letters, digits, `-`, `_` or `.`"
        )));
    }
    let zone = match req.timezone.trim() {
        "" => chrono_tz::Tz::UTC,
        name => parse_time_zone(name).map_err(|e| Status::invalid_argument(e.to_string()))?,
    };
    let cron =
        CronSpec::parse_in(&req.cron, zone).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let origin = if req.suite_origin.is_empty() {
        "suite"
    } else {
        &req.suite_origin
    };
    let suite = Suite::parse(&req.suite_toml, origin)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    selector::parse_selector(&req.select).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if let Some(c) = req.max_start_temp_c {
        if !c.is_finite() {
            return Err(Status::invalid_argument(
                "--max-start-temp must be a temperature in °C",
            ));
        }
    }
    bench::resolve_models(ctl, &suite, origin)?;
    if ctl.store.schedule(name)?.is_some() {
        return Err(Status::already_exists(format!(
            "a schedule named {name} exists already; remove it first or pick another name"
        )));
    }
    let inputs = bench::store_inputs(ctl, &suite, req.inputs, origin)
        .await?
        .into_iter()
        .map(|(path, r)| StoredInput {
            path: path.display().to_string(),
            sha256: r.sha256,
            size_bytes: r.size_bytes,
        })
        .collect();
    let row = ScheduleRow {
        name: name.to_string(),
        cron,
        suite_file: origin.to_string(),
        suite_sha256: suite.sha256.clone(),
        suite_toml: req.suite_toml,
        inputs,
        selector: req.select.trim().to_string(),
        jitter: std::time::Duration::from_millis(req.jitter_ms),
        when_idle: req.when_idle,
        max_start_temp_c: req.max_start_temp_c,
        created_ms: now_ms(),
        last_fire_ms: None,
        missed_count: 0,
    };
    ctl.store.insert_schedule(&row)?;
    if let Err(e) = ctl.schedules.register(&row).await {
        ctl.store.remove_schedule(&row.name)?;
        return Err(internal(e));
    }
    tracing::info!(schedule = %row.name, cron = %row.cron.as_str(), timezone = row.cron.zone().name(), suite = %suite.name, "schedule added");
    info(ctl, &row)
}

/// `schedule ls`: every schedule with its next fire, last fire and missed count.
pub(super) fn list(ctl: &Controller) -> Result<ListSchedulesReply, Status> {
    let schedules = ctl
        .store
        .schedules()?
        .iter()
        .map(|row| info(ctl, row))
        .collect::<Result<_, _>>()?;
    Ok(ListSchedulesReply { schedules })
}

/// `schedule rm`: unregisters the schedule, then forgets it and its fires.
pub(super) async fn remove(ctl: &Controller, name: &str) -> Result<RemoveScheduleReply, Status> {
    if ctl.store.schedule(name)?.is_none() {
        return Err(Status::not_found(format!(
            "no schedule {name}; `edgefleet schedule ls` lists them"
        )));
    }
    ctl.schedules.unregister(name).await.map_err(internal)?;
    ctl.store.remove_schedule(name)?;
    tracing::info!(schedule = %name, "schedule removed");
    Ok(RemoveScheduleReply {
        name: name.to_string(),
    })
}

/// `schedule run`: fires the schedule now.
pub(super) async fn run(ctl: &Controller, name: &str) -> Result<ScheduleFire, Status> {
    if ctl.store.schedule(name)?.is_none() {
        return Err(Status::not_found(format!(
            "no schedule {name}; `edgefleet schedule ls` lists them"
        )));
    }
    let fired = fire(ctl, name, now_ms(), true).await?;
    Ok(fire_info(&fired))
}

fn info(ctl: &Controller, row: &ScheduleRow) -> Result<ScheduleInfo, Status> {
    let last_fire = ctl.store.fires(&row.name, 1)?.first().map(fire_info);
    let suite = Suite::parse(&row.suite_toml, &row.suite_file)
        .map(|s| s.name)
        .unwrap_or_else(|_| row.suite_file.clone());
    Ok(ScheduleInfo {
        name: row.name.clone(),
        cron: row.cron.as_str().to_string(),
        suite,
        suite_file: row.suite_file.clone(),
        select: row.selector.clone(),
        jitter_ms: u64::try_from(row.jitter.as_millis()).unwrap_or(u64::MAX),
        when_idle: row.when_idle,
        max_start_temp_c: row.max_start_temp_c,
        created_unix_ms: row.created_ms,
        next_fire_unix_ms: row.cron.next_after(now_ms()).unwrap_or(0),
        timezone: row.cron.zone().name().to_string(),
        last_fire,
        missed: row.missed_count,
    })
}

fn fire_info(f: &FireRow) -> ScheduleFire {
    let (run_id, reason) = match &f.outcome {
        FireOutcome::Started { run_id } => (run_id.clone(), String::new()),
        FireOutcome::Failed { reason } => (String::new(), reason.clone()),
        FireOutcome::SkippedStillRunning | FireOutcome::Missed => (String::new(), String::new()),
    };
    ScheduleFire {
        schedule: f.schedule.clone(),
        planned_unix_ms: f.planned_ms,
        outcome: f.outcome.kind().to_string(),
        run_id,
        reason,
        manual: f.manual,
        left_out: f.left_out.clone(),
        recorded_unix_ms: f.recorded_ms,
    }
}
