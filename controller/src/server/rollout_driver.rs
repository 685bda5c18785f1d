//! Carrying rollouts out: the loop that moves every running rollout forward (here: start the
//! current wave's installs, judge the wave, gate it, advance or abort), with its parts in
//! rooms of their own: [`actions`] (what the driver does to the store and the fleet),
//! `gate_run` (the performance gate's benchmark runs), [`answers`] (agents' install and
//! rollback answers) and [`control`] (the user's pause, resume, abort, rollback). Every decision
//! is a pure function of [`crate::rollout`]; the driver only reads state, calls them and carries
//! out what they say. All state lives in SQLite, so a restarted controller resumes where it was.

mod actions;
mod answers;
mod control;
mod gate_run;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Controller;
use crate::clock::now_ms;
use crate::rollout::waves::{decide_wave, WaveCounts, WaveDecision};
use crate::rollout::{RolloutState, TargetState};
use crate::store::StoreError;
use actions::{abort, event, finish, install_command, next_wave};
use gate_run::{check_gate, start_gate};

pub use actions::{commands_for_agent, commands_for_agents};
pub use answers::{on_install_result, AnswerQueue};
pub use control::{control, ControlError};

/// How often running rollouts are looked at.
const TICK: Duration = Duration::from_millis(250);

/// Moves running rollouts forward until shutdown.
pub async fn drive(ctl: Controller, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        tick(&ctl).await;
    }
}

/// One look at every running rollout.
async fn tick(ctl: &Controller) {
    let running = match ctl.store.rollouts() {
        Ok(all) => all.into_iter().filter(|r| r.state == RolloutState::Running),
        Err(e) if crate::server::replicas::fenced(ctl, &e) => return,
        Err(e) => {
            tracing::error!(error = %e, "cannot read rollouts");
            return;
        }
    };
    for rollout in running.collect::<Vec<_>>() {
        let _guard = match ctl.rollout_lock.lock().await {
            Ok(guard) => guard,
            Err(e) => {
                tracing::error!(error = %e, "cannot take the rollout lock");
                return;
            }
        };
        if let Err(e) = advance(ctl, &rollout.id).await {
            if !crate::server::replicas::fenced(ctl, &e) {
                tracing::error!(rollout = %rollout.id, error = %e, "cannot advance the rollout");
            } else {
                tracing::warn!(rollout = %rollout.id, error = %e, "this replica's lease is over: it no longer drives rollouts");
                return;
            }
        }
    }
}

/// One look at a running rollout: start its current wave's installs, judge the wave, gate it,
/// advance or abort.
async fn advance(ctl: &Controller, rollout_id: &str) -> Result<(), StoreError> {
    let Some(rollout) = ctl.store.rollout(rollout_id)? else {
        return Ok(());
    };
    if rollout.state != RolloutState::Running {
        return Ok(());
    }
    let targets = ctl.store.targets(rollout_id)?;
    let waves_total = targets.iter().map(|t| t.wave + 1).max().unwrap_or(0);
    let wave = rollout.current_wave;
    if wave >= waves_total {
        return finish(ctl, &rollout);
    }
    let Some(model) = ctl
        .store
        .model(&rollout.model_name, &rollout.model_version)?
    else {
        return abort(
            ctl,
            &rollout,
            &format!(
                "{}@{} is no longer registered",
                rollout.model_name, rollout.model_version
            ),
        )
        .await;
    };

    // Start the wave: every waiting agent in it gets its install (offline ones when they
    // reconnect).
    let mut installs = Vec::new();
    if targets
        .iter()
        .any(|t| t.wave == wave && t.state == TargetState::Waiting)
    {
        let files: Vec<String> = model.files.iter().map(|f| f.sha256.clone()).collect();
        for agent_id in ctl.store.start_wave(rollout_id, wave, &files, now_ms())? {
            let install = install_command(&rollout, &model, &agent_id);
            installs.push((agent_id, install));
        }
    }
    let started = !installs.is_empty();
    for (agent_id, online) in ctl.send_commands(installs).await {
        if !online {
            event(
                ctl,
                rollout_id,
                Some(&agent_id),
                "agent offline; it gets the install when it reconnects",
            );
        }
    }
    if started {
        event(ctl, rollout_id, None, &format!("wave {} started", wave + 1));
        return Ok(());
    }

    if let Some(gate) = ctl
        .store
        .gates(rollout_id)?
        .into_iter()
        .find(|g| g.wave == wave)
    {
        if gate.verdicts.is_none() {
            return check_gate(ctl, &rollout, &gate).await;
        }
    }

    let counts =
        WaveCounts::from_states(targets.iter().filter(|t| t.wave == wave).map(|t| t.state));
    let failures = targets
        .iter()
        .filter(|t| t.state == TargetState::Failed)
        .count();
    let reached = targets
        .iter()
        .filter(|t| t.state != TargetState::Waiting)
        .count();
    let spec = &rollout.spec;
    match decide_wave(
        wave,
        counts,
        spec.success,
        spec.abort_after,
        failures,
        reached,
    ) {
        WaveDecision::Wait => Ok(()),
        WaveDecision::Abort(reason) => abort(ctl, &rollout, &reason).await,
        WaveDecision::Advance if !spec.gated() => next_wave(ctl, &rollout),
        WaveDecision::Advance => start_gate(ctl, &rollout, &model, &targets).await,
    }
}

#[cfg(test)]
mod tests;
