//! When a benchmark run finishes (its last job answered), it is judged against its suite's
//! baselines and recent history off the async threads, and each regression is logged.

use crate::clock::now_ms;
use crate::compare::DEFAULT_THRESHOLD;
use crate::regressions;
use crate::server::Controller;

/// Judges `run_id` if it has no pending job left (and was not judged before).
pub(crate) fn if_finished(ctl: &Controller, run_id: &str) {
    let store = ctl.store.clone();
    let run_id = run_id.to_string();
    tokio::task::spawn_blocking(move || match store.run_unfinished(&run_id) {
        Ok(false) => judge(&store, &run_id),
        Ok(true) => {}
        Err(e) => tracing::warn!(%run_id, error = %e, "cannot tell whether the run finished"),
    });
}

/// Judges every finished run not judged yet (at start).
pub(crate) fn unjudged_runs(ctl: &Controller) {
    let store = ctl.store.clone();
    tokio::task::spawn_blocking(move || match store.unjudged_finished_runs() {
        Ok(runs) => {
            for run_id in runs {
                judge(&store, &run_id);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list the runs still to judge"),
    });
}

fn judge(store: &crate::store::Store, run_id: &str) {
    match regressions::judge_run(store, run_id, DEFAULT_THRESHOLD, now_ms()) {
        Ok(found) => {
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
