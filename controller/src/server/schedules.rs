//! Scheduled benchmark runs, live: tokio-cron-scheduler fires each stored schedule inside the
//! controller, one job per next fire: a one-shot at the instant croner finds on the schedule's
//! zone clock ([`CronSpec::next_after`]), which arms the one after it when it goes off.
//! (tokio-cron-scheduler's own zoned cron jobs keep the UTC offset of the day they were made, so
//! a Berlin 03:00 would fire at 04:00 all summer.) Its stores keep no job code, so the schedules
//! live in our SQLite and are registered again at every start, after the fires missed while the
//! controller was down have been recorded (never run late). A fire starts a run exactly as `bench run` does
//! (`admin::bench::launch`), unless the schedule's previous run is still going.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use edgefleet_proto::v1::ArtifactRef;
use edgefleet_suites::Suite;
use tokio_cron_scheduler::{Job, JobScheduler};
use tonic::Status;
use uuid::Uuid;

use super::admin::bench;
use super::Controller;
use crate::clock::now_ms;
use crate::schedule::{jitter_delay, missed_fires, split_idle, MISSED_ROWS};
use crate::selector;
use crate::store::{FireOutcome, FireRow, ScheduleRow, StoreError};

/// The live scheduler: which schedule is registered under which job, and which schedules have a
/// fire in progress (waiting out its jitter, or starting its run). Cheap to clone.
#[derive(Clone, Default)]
pub struct Schedules {
    inner: Arc<tokio::sync::Mutex<Inner>>,
    firing: Arc<std::sync::Mutex<HashSet<String>>>,
}

#[derive(Default)]
struct Inner {
    /// `None` until `serve` starts it (and after shutdown): schedules are then only stored.
    scheduler: Option<JobScheduler>,
    /// The controller fires run on (the leader's, fenced with replicas), while started.
    leader: Option<Controller>,
    jobs: HashMap<String, Uuid>,
}

/// Why the scheduler could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("scheduler: {0}")]
    Cron(#[from] tokio_cron_scheduler::JobSchedulerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Schedules {
    /// Records the fires every stored schedule missed while no controller fired them, then
    /// starts the scheduler with each of them registered. Fires planned in the last
    /// `late_grace` run now instead (a leader that took over from one that died; each fire is
    /// claimed once, so one the previous leader ran does not run again).
    pub async fn start(
        &self,
        ctl: &Controller,
        late_grace: std::time::Duration,
    ) -> Result<(), SchedulerError> {
        let scheduler = JobScheduler::new().await?;
        let rows = ctl.store.schedules()?;
        let late = record_missed(ctl, &rows, now_ms(), late_grace)?;
        if !late.is_empty() {
            // One after the other, oldest first, as they would have gone off.
            let ctl = ctl.clone();
            tokio::spawn(async move {
                for (name, planned) in late {
                    tracing::info!(schedule = %name, planned = %edgefleet_reports::rfc3339(planned), "firing late a fire the previous leader left undone");
                    if let Err(e) = fire(&ctl, &name, planned, false).await {
                        tracing::info!(schedule = %name, reason = %e.message(), "late fire not run");
                    }
                }
            });
        }
        let mut inner = self.inner.lock().await;
        inner.leader = Some(ctl.clone());
        for row in &rows {
            if let Some(job) = next_fire_job(ctl, row, now_ms())? {
                let id = scheduler.add(job).await?;
                inner.jobs.insert(row.name.clone(), id);
            }
        }
        scheduler.start().await?;
        inner.scheduler = Some(scheduler);
        tracing::info!(schedules = rows.len(), "scheduler started");
        Ok(())
    }

    /// Registers a stored schedule with the running scheduler (nothing before `start`: it is
    /// registered then).
    pub async fn register(&self, row: &ScheduleRow) -> Result<(), SchedulerError> {
        let mut inner = self.inner.lock().await;
        let (Some(scheduler), Some(ctl)) = (inner.scheduler.clone(), inner.leader.clone()) else {
            return Ok(());
        };
        let Some(job) = next_fire_job(&ctl, row, now_ms())? else {
            return Ok(());
        };
        let id = scheduler.add(job).await?;
        if let Some(old) = inner.jobs.insert(row.name.clone(), id) {
            scheduler.remove(&old).await?;
        }
        Ok(())
    }

    /// After fire `fired` (the job that went off, planned for `planned_ms`), arms the schedule's
    /// next fire, unless the schedule was removed or replaced meanwhile.
    async fn arm_next(
        &self,
        ctl: &Controller,
        name: &str,
        fired: Uuid,
        planned_ms: i64,
    ) -> Result<(), SchedulerError> {
        let mut inner = self.inner.lock().await;
        let Some(scheduler) = inner.scheduler.clone() else {
            return Ok(());
        };
        if inner.jobs.get(name) != Some(&fired) {
            return Ok(()); // removed or replaced since
        }
        let Some(row) = ctl.store.schedule(name)? else {
            inner.jobs.remove(name);
            return Ok(());
        };
        // From the planned time, not the clock: a job that went off early never repeats a fire.
        match next_fire_job(ctl, &row, planned_ms.max(now_ms()))? {
            Some(job) => {
                let id = scheduler.add(job).await?;
                inner.jobs.insert(name.to_string(), id);
            }
            None => {
                inner.jobs.remove(name);
            }
        }
        Ok(())
    }

    /// Takes a schedule off the running scheduler (its fires stop).
    pub async fn unregister(&self, name: &str) -> Result<(), SchedulerError> {
        let mut inner = self.inner.lock().await;
        if let (Some(id), Some(scheduler)) = (inner.jobs.remove(name), inner.scheduler.clone()) {
            scheduler.remove(&id).await?;
        }
        Ok(())
    }

    /// Registers the schedules added through another replica and drops those removed there.
    async fn follow(&self, ctl: &Controller) -> Result<(), SchedulerError> {
        let rows = ctl.store.schedules()?;
        let registered: HashSet<String> = self.inner.lock().await.jobs.keys().cloned().collect();
        for row in rows.iter().filter(|r| !registered.contains(&r.name)) {
            self.register(row).await?;
        }
        let stored: HashSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        for name in registered.iter().filter(|n| !stored.contains(n.as_str())) {
            self.unregister(name).await?;
        }
        Ok(())
    }

    /// Stops firing (shutdown, or this replica stopped leading).
    pub async fn shutdown(&self) {
        let mut inner = self.inner.lock().await;
        inner.jobs.clear();
        inner.leader = None;
        if let Some(mut scheduler) = inner.scheduler.take() {
            if let Err(e) = scheduler.shutdown().await {
                tracing::warn!(error = %e, "scheduler did not shut down cleanly");
            }
        }
    }

    /// Marks a fire of `name` in progress, or says one already is.
    fn begin(&self, name: &str) -> Option<FiringGuard> {
        let mut firing = self.firing.lock().unwrap_or_else(|p| p.into_inner());
        firing.insert(name.to_string()).then(|| FiringGuard {
            firing: self.firing.clone(),
            name: name.to_string(),
        })
    }
}

/// Clears a schedule's fire-in-progress mark when the fire ends, however it ends.
struct FiringGuard {
    firing: Arc<std::sync::Mutex<HashSet<String>>>,
    name: String,
}

impl Drop for FiringGuard {
    fn drop(&mut self) {
        self.firing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.name);
    }
}

/// While this replica leads, every five seconds: schedules added or removed on another
/// replica are registered or dropped here.
pub(crate) async fn follow_store(ctl: Controller, stop: tokio_util::sync::CancellationToken) {
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Err(e) = ctl.schedules.follow(&ctl).await {
            tracing::warn!(error = %e, "cannot follow the stored schedules");
        }
    }
}

/// Records, for each schedule, the fires planned between its last fire (or its creation) and
/// `now_ms`, and warns about them; those in the last `late_grace` are returned instead, to be
/// fired now.
fn record_missed(
    ctl: &Controller,
    rows: &[ScheduleRow],
    now_ms: i64,
    late_grace: std::time::Duration,
) -> Result<Vec<(String, i64)>, StoreError> {
    let mut late = Vec::new();
    for row in rows {
        let since = row.last_fire_ms.unwrap_or(row.created_ms);
        let mut missed = missed_fires(&row.cron, since, now_ms, MISSED_ROWS);
        // Missed fires are at most `now_ms`: with no grace none is late.
        let late_after = now_ms - late_grace.as_millis() as i64;
        let (recent_late, earlier): (Vec<i64>, Vec<i64>) =
            missed.recent.iter().partition(|p| **p > late_after);
        missed.recent = earlier;
        missed.count -= recent_late.len() as u64;
        late.extend(recent_late.into_iter().map(|p| (row.name.clone(), p)));
        if missed.count == 0 {
            continue;
        }
        ctl.store
            .record_missed(&row.name, &missed.recent, missed.count, now_ms)?;
        tracing::warn!(
            schedule = %row.name,
            missed = missed.count,
            since = %edgefleet_reports::rfc3339(since),
            "scheduled runs missed while the controller was down; recorded as missed, not run late"
        );
    }
    Ok(late)
}

/// The scheduler job of a schedule's first fire after `after_ms` (`None` when the cron has no
/// further fire). It spawns the fire (so a jitter's wait never holds the scheduler up) and arms
/// the next. tokio-cron-scheduler keeps a one-shot's time in whole seconds, cut down twice: a
/// second added makes up for that, so the job goes off in its planned second, never before.
fn next_fire_job(
    ctl: &Controller,
    row: &ScheduleRow,
    after_ms: i64,
) -> Result<Option<Job>, SchedulerError> {
    let Some(planned) = row.cron.next_after(after_ms) else {
        return Ok(None);
    };
    let wait_ms = u64::try_from(planned - now_ms()).unwrap_or(0) + 1000;
    let at = std::time::Instant::now() + std::time::Duration::from_millis(wait_ms);
    let ctl = ctl.clone();
    let name = row.name.clone();
    Ok(Some(Job::new_one_shot_at_instant_async(
        at,
        move |id, _scheduler| {
            let (ctl, name) = (ctl.clone(), name.clone());
            Box::pin(async move {
                tokio::spawn(async move {
                    // A store or scheduler hiccup must not end the schedule: try again.
                    let mut wait = std::time::Duration::from_secs(1);
                    while let Err(e) = ctl.schedules.arm_next(&ctl, &name, id, planned).await {
                        tracing::warn!(schedule = %name, error = %e, retry_in_s = wait.as_secs(), "cannot arm the next fire");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(std::time::Duration::from_secs(60));
                    }
                    if let Err(e) = fire(&ctl, &name, planned, false).await {
                        tracing::warn!(schedule = %name, error = %e.message(), "scheduled fire not recorded");
                    }
                });
            })
        },
    )?))
}

/// Fires schedule `name` (planned for `planned_ms`; `manual` for `schedule run`) and records
/// what came of it: a started run, a skip because its previous run is still going, or a
/// failure with its reason. Only an unknown schedule or a store error is an `Err`.
pub(crate) async fn fire(
    ctl: &Controller,
    name: &str,
    planned_ms: i64,
    manual: bool,
) -> Result<FireRow, Status> {
    let row = ctl
        .store
        .schedule(name)?
        .ok_or_else(|| Status::not_found(format!("no schedule {name}")))?;
    let mut left_out = Vec::new();
    let guard = ctl.schedules.begin(name);
    let still_running = guard.is_none() || !ctl.store.unfinished_runs_of(name)?.is_empty();
    if !still_running && !manual && !row.jitter.is_zero() {
        let delay = jitter_delay(row.jitter, rand::random::<f64>());
        tracing::debug!(schedule = %name, delay_ms = delay.as_millis() as u64, "jitter");
        tokio::time::sleep(delay).await;
    }
    // One fire, one outcome, whoever fires it: the claim is the database's to give, taken just
    // before the run starts (a leader that dies waiting out the jitter leaves it to the next).
    if !manual && !ctl.store.claim_fire(name, planned_ms, now_ms())? {
        return Err(Status::already_exists(format!(
            "the fire of {name} planned for {} was fired already",
            edgefleet_reports::rfc3339(planned_ms)
        )));
    }
    let outcome = if still_running {
        tracing::info!(schedule = %name, "previous scheduled run still going; this fire is skipped");
        FireOutcome::SkippedStillRunning
    } else {
        match start_run(ctl, &row, &mut left_out).await {
            Ok(run_id) => FireOutcome::Started { run_id },
            Err(status) => {
                tracing::warn!(schedule = %name, reason = %status.message(), "scheduled run not started");
                FireOutcome::Failed {
                    reason: status.message().to_string(),
                }
            }
        }
    };
    let fire = FireRow {
        schedule: name.to_string(),
        planned_ms,
        outcome,
        manual,
        left_out,
        recorded_ms: now_ms(),
    };
    // The schedule may have been removed while this fire waited: then nothing is recorded.
    if ctl.store.schedule(name)?.is_some() {
        ctl.store.record_fire(&fire)?;
    }
    drop(guard);
    Ok(fire)
}

/// Starts the schedule's run on the online agents its selector matches (with `--when-idle`,
/// only those with nothing to do; the others' names go into `left_out`); the run's id.
async fn start_run(
    ctl: &Controller,
    row: &ScheduleRow,
    left_out: &mut Vec<String>,
) -> Result<String, Status> {
    let origin = row.suite_file.as_str();
    let mut suite = Suite::parse(&row.suite_toml, origin)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    if let Some(celsius) = row.max_start_temp_c {
        suite.conditions.max_start_temp_c = Some(celsius);
    }
    let conditions = selector::parse_selector(&row.selector)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let models = bench::resolve_models(ctl, &suite, origin)?;
    let agents = bench::online_agents(ctl, &conditions)?;
    if agents.is_empty() {
        return Err(bench::no_agent(&row.selector));
    }
    let ids: Vec<String> = agents.iter().map(|a| a.id.clone()).collect();
    let busy = ctl.store.busy_agents()?;
    let (idle, busy_ids) = split_idle(&ids, &busy, row.when_idle);
    let name_of = |id: &String| {
        agents
            .iter()
            .find(|a| &a.id == id)
            .map_or_else(|| id.clone(), |a| a.name.clone())
    };
    *left_out = busy_ids.into_iter().map(name_of).collect();
    let idle: HashSet<&String> = idle.into_iter().collect();
    let agents: Vec<_> = agents
        .into_iter()
        .filter(|a| idle.contains(&a.id))
        .collect();
    if agents.is_empty() {
        return Err(Status::failed_precondition(format!(
            "every matching agent is busy (--when-idle): {}",
            left_out.join(", ")
        )));
    }
    let inputs: BTreeMap<PathBuf, ArtifactRef> = row
        .inputs
        .iter()
        .map(|i| {
            (
                PathBuf::from(&i.path),
                ArtifactRef {
                    file_name: i.path.clone(),
                    sha256: i.sha256.clone(),
                    size_bytes: i.size_bytes,
                },
            )
        })
        .collect();
    let reply = bench::launch(
        ctl,
        &suite,
        &row.suite_toml,
        &models,
        &inputs,
        &agents,
        Some(&row.name),
    )
    .await?;
    Ok(reply.run_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::CronSpec;
    use crate::store::RunRow;

    fn controller(dir: &std::path::Path) -> Controller {
        Controller::open(
            dir,
            crate::Settings {
                security: crate::server::Security::Insecure {
                    shared_token: "t".into(),
                },
                heartbeat_interval: std::time::Duration::from_secs(1),
                limits: Default::default(),
                retention: None,
                max_stream_age: None,
            },
        )
        .unwrap()
    }

    fn row(name: &str, created_ms: i64) -> ScheduleRow {
        ScheduleRow {
            name: name.into(),
            cron: CronSpec::parse("*/2 * * * * *").unwrap(),
            suite_file: "s.toml".into(),
            suite_toml: "name = \"s\"\nmodels = [\"m@1\"]\n[input]\ntext = [\"hi\"]\n[[scenario]]\nkind = \"single-stream\"\n".into(),
            suite_sha256: "h".into(),
            inputs: Vec::new(),
            selector: String::new(),
            jitter: std::time::Duration::ZERO,
            when_idle: false,
            max_start_temp_c: None,
            created_ms,
            last_fire_ms: None,
            missed_count: 0,
        }
    }

    #[tokio::test]
    async fn a_fire_records_its_failure_or_a_skip_while_its_run_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = controller(dir.path());
        ctl.store
            .insert_schedule(&row("nightly", now_ms()))
            .unwrap();

        // The model is not registered: the fire fails with the reason, and is recorded.
        let fired = fire(&ctl, "nightly", 2_000, false).await.unwrap();
        match &fired.outcome {
            FireOutcome::Failed { reason } => {
                assert!(reason.contains("unknown model m@1"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let stored = ctl.store.schedule("nightly").unwrap().unwrap();
        assert_eq!(stored.last_fire_ms, Some(2_000));
        assert_eq!(ctl.store.fires("nightly", 5).unwrap(), vec![fired]);

        // A run of it still has a pending job: the next fire (manual or not) is skipped.
        ctl.store
            .upsert_agent("ag", "a", &Default::default(), "0", &Default::default(), 1)
            .unwrap();
        let run = RunRow {
            id: "r1".into(),
            suite: "s".into(),
            suite_sha256: "h".into(),
            created_ms: 1,
            schedule: Some("nightly".into()),
        };
        let job = edgefleet_proto::v1::BenchJob {
            job_id: "j1".into(),
            ..Default::default()
        };
        ctl.store
            .insert_run(&run, "", &[("ag".into(), job)])
            .unwrap();
        let skipped = fire(&ctl, "nightly", 4_000, true).await.unwrap();
        assert_eq!(skipped.outcome, FireOutcome::SkippedStillRunning);
        assert!(skipped.manual);
        // A fire in progress also makes another one skip.
        let _guard = ctl.schedules.begin("other").unwrap();
        assert!(ctl.schedules.begin("other").is_none());

        // Unknown schedules are NOT_FOUND.
        let err = fire(&ctl, "nope", 0, true).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
    }

    #[tokio::test]
    async fn fires_due_while_stopped_are_recorded_as_missed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = controller(dir.path());
        // Created 11 s ago, never fired since: at least five two-second fires were missed.
        ctl.store
            .insert_schedule(&row("every2", now_ms() - 11_000))
            .unwrap();
        ctl.schedules
            .start(&ctl, std::time::Duration::ZERO)
            .await
            .unwrap();
        let stored = ctl.store.schedule("every2").unwrap().unwrap();
        assert!(stored.missed_count >= 5, "{}", stored.missed_count);
        // (A cron fire may already have come since the start; it is no missed one.)
        let missed: Vec<FireRow> = ctl
            .store
            .fires("every2", 100)
            .unwrap()
            .into_iter()
            .filter(|f| f.outcome == FireOutcome::Missed)
            .collect();
        assert_eq!(missed.len() as u64, stored.missed_count);
        assert!(stored.last_fire_ms >= missed.iter().map(|f| f.planned_ms).max());
        ctl.schedules.unregister("every2").await.unwrap();
        ctl.schedules.shutdown().await;
    }
}
