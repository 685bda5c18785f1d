//! Telling systemd how the daemon is doing (sd_notify, for a `Type=notify` unit with a
//! watchdog): ready once it runs, alive at half the watchdog interval from its own event loop (a
//! stuck loop stops the pings and systemd restarts it), stopping when it drains. Outside systemd
//! (no `NOTIFY_SOCKET`) every call does nothing.

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// The daemon is up: its link to the controller is being kept.
pub fn ready() {
    let _ = sd_notify::notify(&[NotifyState::Ready]);
}

/// The daemon is draining its work before it exits.
pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// Pings systemd's watchdog at half its interval until `shutdown`, when the unit asks for one.
pub async fn keep_watchdog_fed(shutdown: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut ticks = tokio::time::interval(interval / 2);
    loop {
        tokio::select! {
            _ = ticks.tick() => { let _ = sd_notify::notify(&[NotifyState::Watchdog]); }
            _ = shutdown.cancelled() => return,
        }
    }
}
