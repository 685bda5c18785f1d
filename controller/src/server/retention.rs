//! Retention while serving (`serve --retention-days N`): once at start and then every hour,
//! results of runs older than N days are reduced to their summary (`Store::summarize_old_results`),
//! a batch at a time off the async threads, with a pause between batches so that results,
//! heartbeats and rollouts never wait for more than one.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Controller;
use crate::clock::now_ms;

/// Results reduced per transaction.
const BATCH: usize = 200;
/// How often retention looks for results past the period.
const EVERY: Duration = Duration::from_secs(3600);
/// The pause between two batches.
const PAUSE: Duration = Duration::from_millis(20);

/// Applies `retention` until `stop` is cancelled.
pub(super) async fn keep(ctl: Controller, retention: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.cancelled() => return,
        }
        let before_ms = now_ms() - retention.as_millis().min(i64::MAX as u128) as i64;
        let (mut results, mut saved, mut corrupt) = (0u64, 0u64, 0u64);
        loop {
            let store = ctl.store.clone();
            let pass = tokio::task::spawn_blocking(move || {
                store.summarize_old_results(before_ms, now_ms(), BATCH)
            })
            .await;
            match pass {
                Ok(Ok(pass)) if pass.results > 0 => {
                    results += pass.results;
                    saved += pass.bytes_before.saturating_sub(pass.bytes_after);
                    corrupt += pass.corrupt;
                }
                Ok(Ok(_)) => break,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "retention stopped for now; it tries again in an hour");
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "retention's batch did not finish");
                    break;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(PAUSE) => {}
                _ = stop.cancelled() => return,
            }
        }
        if results > 0 {
            tracing::info!(
                results,
                saved_mb = saved / 1_000_000,
                corrupt,
                days = retention.as_secs() / 86_400,
                "results past the retention period reduced to their summary"
            );
        }
    }
}
