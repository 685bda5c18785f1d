//! When a benchmark run finishes (its last job answered), it is judged against its suite's
//! baselines and recent history off the async threads, and each regression is logged.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::clock::now_ms;
use crate::compare::DEFAULT_THRESHOLD;
use crate::regressions;
use crate::server::Controller;

/// Runs whose check is in flight, each with whether a result came since it began (then it
/// looks again): a run's results arrive by the thousand, and one check at a time per run is
/// enough.
static CHECKING: std::sync::LazyLock<Mutex<HashMap<String, bool>>> =
    std::sync::LazyLock::new(Mutex::default);

/// Judges `run_id` if it has no pending job left (and was not judged before).
pub(crate) fn if_finished(ctl: &Controller, run_id: &str) {
    {
        let mut checking = CHECKING.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(again) = checking.get_mut(run_id) {
            *again = true;
            return;
        }
        checking.insert(run_id.to_string(), false);
    }
    let store = ctl.store.clone();
    let changes = ctl.changes.clone();
    let run_id = run_id.to_string();
    tokio::task::spawn_blocking(move || loop {
        match store.run_unfinished(&run_id) {
            Ok(false) => judge(&store, &changes, &run_id),
            Ok(true) => {}
            Err(e) => tracing::warn!(%run_id, error = %e, "cannot tell whether the run finished"),
        }
        let mut checking = CHECKING.lock().unwrap_or_else(|p| p.into_inner());
        match checking.get_mut(&run_id) {
            Some(again) if *again => *again = false,
            _ => {
                checking.remove(&run_id);
                return;
            }
        }
    });
}

/// Judges every finished run not judged yet (at start).
pub(crate) fn unjudged_runs(ctl: &Controller) {
    let store = ctl.store.clone();
    let changes = ctl.changes.clone();
    tokio::task::spawn_blocking(move || match store.unjudged_finished_runs() {
        Ok(runs) => {
            for run_id in runs {
                judge(&store, &changes, &run_id);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list the runs still to judge"),
    });
}

fn judge(store: &crate::store::Store, changes: &super::changes::Changes, run_id: &str) {
    match regressions::judge_run(store, run_id, DEFAULT_THRESHOLD, now_ms()) {
        Ok(found) => {
            if !found.is_empty() {
                changes.publish(super::changes::REGRESSIONS);
            }
            for r in found {
                tracing::warn!(
                    id = r.id,
                    %run_id,
                    suite = %r.suite,
                    model = %r.model,
                    scenario = %r.scenario,
                    device_class = %r.device_class,
                    metric = %r.metric,
                    kind = %r.kind,
                    against = %r.against,
                    ratio = format!("{:.3}", r.ratio),
                    "regression"
                );
            }
        }
        Err(e) => tracing::warn!(%run_id, error = %e, "cannot judge the run for regressions"),
    }
}
