//! Carrying rollouts out: a loop that moves every running rollout forward (send installs for
//! the current wave, judge the wave, run its performance gate, advance, abort and roll back),
//! agents' answers to install and rollback commands, the commands an agent gets again when it
//! reconnects, and the user's pause, resume, abort and rollback. Every decision is a pure
//! function of [`crate::rollout`]; this file only reads state, calls them and carries out what
//! they say. All state lives in SQLite, so a restarted controller resumes where it was.

use std::collections::BTreeMap;
use std::time::Duration;

use edgefleet_proto::v1::{
    controller_message, BenchJob, ControllerMessage, InstallModel, InstallResult, RollbackModel,
    RunJobs,
};
use tokio_util::sync::CancellationToken;

use super::Controller;
use crate::clock::now_ms;
use crate::planning::model_spec;
use crate::rollout::gate::{self, AgentRounds, GateMetric, Measured, GATE_ROUNDS};
use crate::rollout::transitions::{on_answer, Answer, Transition};
use crate::rollout::waves::{decide_wave, WaveCounts, WaveDecision};
use crate::rollout::{RolloutState, TargetState};
use crate::store::{AgentModelRow, GateRow, ModelRow, RolloutRow, RunRow, StoreError, TargetRow};

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
        Err(e) => {
            tracing::error!(error = %e, "cannot read rollouts");
            return;
        }
    };
    for rollout in running.collect::<Vec<_>>() {
        let _guard = ctl.rollout_lock.lock().await;
        if let Err(e) = advance(ctl, &rollout.id).await {
            tracing::error!(rollout = %rollout.id, error = %e, "cannot advance the rollout");
        }
    }
}

/// The id an install command carries: the rollout and the agent it is for.
fn install_id(rollout_id: &str, agent_id: &str) -> String {
    format!("{rollout_id}/{agent_id}")
}

fn rollback_id(rollout_id: &str, agent_id: &str) -> String {
    format!("{rollout_id}/{agent_id}/rollback")
}

fn event(ctl: &Controller, rollout_id: &str, agent_id: Option<&str>, message: &str) {
    tracing::info!(rollout = %rollout_id, agent = agent_id.unwrap_or(""), "{message}");
    if let Err(e) = ctl
        .store
        .log_event(Some(rollout_id), agent_id, message, now_ms())
    {
        tracing::warn!(error = %e, "cannot log a rollout event");
    }
}

fn install_command(rollout: &RolloutRow, model: &ModelRow, agent_id: &str) -> ControllerMessage {
    ControllerMessage {
        body: Some(controller_message::Body::Install(InstallModel {
            install_id: install_id(&rollout.id, agent_id),
            manifest: model.manifest.clone(),
            signature: model.manifest_signature.clone(),
            health_check: rollout.spec.health_check.as_str().to_string(),
        })),
    }
}

fn rollback_command(rollout: &RolloutRow, agent_id: &str) -> ControllerMessage {
    ControllerMessage {
        body: Some(controller_message::Body::Rollback(RollbackModel {
            install_id: rollback_id(&rollout.id, agent_id),
            model_name: rollout.model_name.clone(),
            from_version: rollout.model_version.clone(),
            to_version: String::new(),
            to_previous: true,
        })),
    }
}

/// Commands an agent should get (again) as it connects: installs of running or paused rollouts
/// it has not answered, and rollbacks it has not confirmed.
pub fn commands_for_agent(
    ctl: &Controller,
    agent_id: &str,
) -> Result<Vec<ControllerMessage>, StoreError> {
    let mut out = Vec::new();
    for (rollout, target) in ctl.store.commands_for_agent(agent_id)? {
        match target.state {
            TargetState::Installing if rollout.state.is_open() => {
                if let Some(model) = ctl
                    .store
                    .model(&rollout.model_name, &rollout.model_version)?
                {
                    out.push(install_command(&rollout, &model, agent_id));
                }
            }
            TargetState::RollingBack => out.push(rollback_command(&rollout, agent_id)),
            _ => {}
        }
    }
    Ok(out)
}

/// Moves a target to a new state and writes it.
fn set_state(
    ctl: &Controller,
    target: &mut TargetRow,
    state: TargetState,
) -> Result<(), StoreError> {
    target.state = state;
    target.updated_ms = now_ms();
    ctl.store.update_target(target)
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
    let mut started = false;
    for mut t in targets
        .iter()
        .filter(|t| t.wave == wave && t.state == TargetState::Waiting)
        .cloned()
    {
        set_state(ctl, &mut t, TargetState::Installing)?;
        started = true;
        if !ctl
            .fleet
            .send(&t.agent_id, install_command(&rollout, &model, &t.agent_id))
            .await
        {
            event(
                ctl,
                rollout_id,
                Some(&t.agent_id),
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
            return check_gate(ctl, &rollout, &gate, &targets).await;
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
        WaveDecision::Advance if !spec.gated() => next_wave(ctl, &rollout, &targets),
        WaveDecision::Advance => start_gate(ctl, &rollout, &model, &targets).await,
    }
}

/// Marks the wave's healthy agents done and moves to the next wave.
fn next_wave(
    ctl: &Controller,
    rollout: &RolloutRow,
    targets: &[TargetRow],
) -> Result<(), StoreError> {
    let wave = rollout.current_wave;
    for t in targets.iter().filter(|t| {
        t.wave == wave && matches!(t.state, TargetState::Installed | TargetState::Gating)
    }) {
        set_state(ctl, &mut t.clone(), TargetState::Done)?;
    }
    ctl.store
        .update_rollout(&rollout.id, RolloutState::Running, "", wave + 1, now_ms())?;
    event(
        ctl,
        &rollout.id,
        None,
        &format!("wave {} complete", wave + 1),
    );
    Ok(())
}

fn finish(ctl: &Controller, rollout: &RolloutRow) -> Result<(), StoreError> {
    ctl.store.update_rollout(
        &rollout.id,
        RolloutState::Succeeded,
        "",
        rollout.current_wave,
        now_ms(),
    )?;
    event(ctl, &rollout.id, None, "rollout succeeded");
    Ok(())
}

/// Stops the rollout for `reason` and rolls back the current wave.
async fn abort(ctl: &Controller, rollout: &RolloutRow, reason: &str) -> Result<(), StoreError> {
    ctl.store.update_rollout(
        &rollout.id,
        RolloutState::Aborted,
        reason,
        rollout.current_wave,
        now_ms(),
    )?;
    event(ctl, &rollout.id, None, &format!("aborted: {reason}"));
    let wave = rollout.current_wave;
    let targets = ctl.store.targets(&rollout.id)?;
    roll_back(
        ctl,
        rollout,
        targets.into_iter().filter(|t| t.wave == wave).collect(),
    )
    .await
}

/// Sends a rollback to every target that has, or may soon have, the candidate active.
async fn roll_back(
    ctl: &Controller,
    rollout: &RolloutRow,
    targets: Vec<TargetRow>,
) -> Result<(), StoreError> {
    for mut t in targets {
        if !t.state.may_hold_candidate() {
            continue;
        }
        set_state(ctl, &mut t, TargetState::RollingBack)?;
        // An install still in flight is followed by this rollback in the agent's queue.
        ctl.fleet
            .send(&t.agent_id, rollback_command(rollout, &t.agent_id))
            .await;
    }
    Ok(())
}

/// Benchmarks the candidate and the version it replaced on each healthy agent of the wave,
/// alternating [`GATE_ROUNDS`] rounds of each.
async fn start_gate(
    ctl: &Controller,
    rollout: &RolloutRow,
    model: &ModelRow,
    targets: &[TargetRow],
) -> Result<(), StoreError> {
    let wave = rollout.current_wave;
    let wants_quality = rollout
        .spec
        .gate
        .iter()
        .any(|l| l.metric == GateMetric::Quality);
    let from_suite = rollout.gate_workload.as_ref();
    let mut jobs = Vec::new();
    let mut gated = Vec::new();
    for t in targets
        .iter()
        .filter(|t| t.wave == wave && t.state == TargetState::Installed)
    {
        if t.previous_version.is_empty() {
            event(
                ctl,
                &rollout.id,
                Some(&t.agent_id),
                "gate: no earlier version on this agent to compare with",
            );
            continue;
        }
        let Some(active) = ctl.store.model(&rollout.model_name, &t.previous_version)? else {
            event(
                ctl,
                &rollout.id,
                Some(&t.agent_id),
                &format!(
                    "gate: the earlier version {} is no longer registered; not compared",
                    t.previous_version
                ),
            );
            continue;
        };
        let n = gated.len();
        for round in 0..GATE_ROUNDS {
            // Quality is the same every round: it is checked once.
            let quality = wants_quality && round == 0;
            jobs.push((
                t.agent_id.clone(),
                BenchJob {
                    job_id: format!("a{n:03}-r{round}-candidate"),
                    model: Some(model_spec(model)),
                    reference: quality.then(|| model_spec(&active)),
                    workload: Some(gate::workload(from_suite, quality)),
                },
            ));
            jobs.push((
                t.agent_id.clone(),
                BenchJob {
                    job_id: format!("a{n:03}-r{round}-active"),
                    model: Some(model_spec(&active)),
                    reference: None,
                    workload: Some(gate::workload(from_suite, false)),
                },
            ));
        }
        gated.push(t.clone());
    }
    if gated.is_empty() {
        event(
            ctl,
            &rollout.id,
            None,
            "gate: nothing to compare in this wave",
        );
        return next_wave(ctl, rollout, targets);
    }
    let run = RunRow {
        id: format!("run-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        suite: format!("gate {} wave {}", rollout.id, wave + 1),
        suite_sha256: String::new(),
        created_ms: now_ms(),
    };
    ctl.store.insert_run(&run, "", &jobs)?;
    ctl.store.insert_gate(&rollout.id, wave, &run.id)?;
    for mut t in gated {
        set_state(ctl, &mut t, TargetState::Gating)?;
        let mine: Vec<BenchJob> = jobs
            .iter()
            .filter(|(a, _)| *a == t.agent_id)
            .map(|(_, j)| j.clone())
            .collect();
        let message = ControllerMessage {
            body: Some(controller_message::Body::RunJobs(RunJobs {
                run_id: run.id.clone(),
                jobs: mine,
            })),
        };
        ctl.fleet.send(&t.agent_id, message).await;
    }
    event(
        ctl,
        &rollout.id,
        None,
        &format!(
            "wave {}: performance gate benchmark {} started",
            wave + 1,
            run.id
        ),
    );
    Ok(())
}

/// When every gate job has reported, judges each agent; a breach, a gate benchmark that failed,
/// or measurements that cannot be read abort the rollout and roll the wave back.
async fn check_gate(
    ctl: &Controller,
    rollout: &RolloutRow,
    gate: &GateRow,
    targets: &[TargetRow],
) -> Result<(), StoreError> {
    let jobs = ctl.store.jobs(Some(&gate.run_id))?;
    if jobs
        .iter()
        .any(|j| j.state == crate::store::JobState::Pending)
    {
        return Ok(());
    }
    let results = match ctl.store.results(Some(&gate.run_id)) {
        Ok(results) => results,
        // Fail closed: a gate that cannot read its measurements never passes.
        Err(e @ StoreError::Corrupt { .. }) => {
            let reason = format!("performance gate cannot read its measurements: {e}");
            return abort(ctl, rollout, &reason).await;
        }
        Err(e) => return Err(e),
    };
    let mut rounds: BTreeMap<String, AgentRounds> = BTreeMap::new();
    for job in &jobs {
        let entry = rounds.entry(job.agent_id.clone()).or_default();
        if let Some(error) = &job.error {
            entry.errors.push(format!("{}: {error}", job.job_id));
        }
    }
    for r in results {
        let m = &r.measurement;
        let entry = rounds.entry(r.job.agent_id.clone()).or_default();
        let measured = match Measured::from_measurement(m) {
            Ok(measured) => measured,
            Err(e) => {
                entry.errors.push(format!("{}: {e}", r.job.job_id));
                continue;
            }
        };
        if r.job.job_id.ends_with("-candidate") {
            if !m.quality_error.is_empty() {
                entry.errors.push(format!("quality: {}", m.quality_error));
            }
            entry.candidate.push(measured);
        } else {
            entry.active.push(measured);
        }
    }
    let names = ctl.store.agent_names()?;
    let wave = gate::judge_wave(&rollout.spec.gate, rounds, &names);
    ctl.store
        .set_gate_verdicts(&rollout.id, gate.wave, &wave.verdicts)?;
    if wave.breaches.is_empty() {
        event(
            ctl,
            &rollout.id,
            None,
            &format!("wave {}: performance gate passed", gate.wave + 1),
        );
        next_wave(ctl, rollout, targets)
    } else {
        let reason = format!("performance gate breached on {}", wave.breaches.join("; "));
        abort(ctl, rollout, &reason).await
    }
}

/// Applies an agent's answer to an install or rollback command.
pub async fn on_install_result(ctl: &Controller, agent_id: &str, result: InstallResult) {
    let _guard = ctl.rollout_lock.lock().await;
    if let Err(e) = apply_install_result(ctl, agent_id, &result).await {
        tracing::error!(%agent_id, install_id = %result.install_id, error = %e, "cannot record an install result");
    }
}

async fn apply_install_result(
    ctl: &Controller,
    agent_id: &str,
    result: &InstallResult,
) -> Result<(), StoreError> {
    if let Some(state) = &result.state {
        let row = AgentModelRow {
            agent_id: agent_id.to_string(),
            name: state.name.clone(),
            active_version: state.active_version.clone(),
            versions: state.versions.clone(),
        };
        ctl.store
            .record_installed(agent_id, &[row], Some(&state.name), now_ms())?;
    }
    let (rollout_id, answer) = match result.install_id.strip_suffix("/rollback") {
        Some(rest) => (rest, Answer::Rollback { ok: result.ok }),
        None => (
            result.install_id.as_str(),
            Answer::Install { ok: result.ok },
        ),
    };
    let Some(rollout_id) = rollout_id.strip_suffix(&format!("/{agent_id}")) else {
        tracing::warn!(%agent_id, install_id = %result.install_id, "an install result for another agent; ignored");
        return Ok(());
    };
    let Some(rollout) = ctl.store.rollout(rollout_id)? else {
        return Ok(());
    };
    let Some(mut target) = ctl
        .store
        .targets(rollout_id)?
        .into_iter()
        .find(|t| t.agent_id == agent_id)
    else {
        return Ok(());
    };
    let next = match on_answer(answer, target.state, rollout.state) {
        Transition::Ignore => return Ok(()),
        Transition::To(state) => state,
        Transition::ToRollingBackAndSendRollback => {
            ctl.fleet
                .send(agent_id, rollback_command(&rollout, agent_id))
                .await;
            TargetState::RollingBack
        }
    };
    let message = match answer {
        Answer::Rollback { ok: true } => format!(
            "rolled back; active: {}",
            display_version(&result.active_version)
        ),
        Answer::Rollback { ok: false } => {
            target.error = result.error.clone();
            result.error.clone()
        }
        Answer::Install { ok } => {
            target.fetched_bytes = result.fetched_bytes;
            target.fetch_started_ms = result.fetch_started_unix_ms;
            target.fetch_finished_ms = result.fetch_finished_unix_ms;
            if ok {
                target.previous_version = result.previous_version.clone();
                target.health = result.health.clone();
                format!(
                    "installed (was {}; fetched {:.1} MB in {:.0} ms; health: {})",
                    display_version(&result.previous_version),
                    result.fetched_bytes as f64 / 1e6,
                    result.fetch_ms,
                    result.health
                )
            } else {
                target.error = result.error.clone();
                format!("install failed: {}", result.error)
            }
        }
    };
    event(ctl, rollout_id, Some(agent_id), &message);
    set_state(ctl, &mut target, next)
}

fn display_version(v: &str) -> &str {
    if v.is_empty() {
        "none"
    } else {
        v
    }
}

/// Why a user's pause, resume, abort or rollback was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no rollout {0}")]
    NoSuchRollout(String),
    /// The rollout is not in a state the action applies to (or the action is unknown).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// pause | resume | abort | rollback, from the CLI; returns the rollout as it is afterwards.
pub async fn control(
    ctl: &Controller,
    rollout_id: &str,
    action: &str,
) -> Result<RolloutRow, ControlError> {
    let _guard = ctl.rollout_lock.lock().await;
    let rollout = ctl
        .store
        .rollout(rollout_id)?
        .ok_or_else(|| ControlError::NoSuchRollout(rollout_id.to_string()))?;
    let now = now_ms();
    let wave = rollout.current_wave;
    let set = |state: RolloutState, reason: &str| {
        ctl.store
            .update_rollout(rollout_id, state, reason, wave, now)
    };
    use RolloutState as R;
    match (action, rollout.state) {
        ("pause", R::Running) => set(R::Paused, "paused by the user")?,
        ("resume", R::Paused) => set(R::Running, "")?,
        ("abort", R::Running | R::Paused) => set(R::Aborted, "aborted by the user")?,
        ("rollback", R::RolledBack) => {
            return Err(ControlError::Refused(format!(
                "rollout {rollout_id} is rolled back already"
            )))
        }
        ("rollback", _) => {
            set(R::RolledBack, "rolled back by the user")?;
            let targets = ctl.store.targets(rollout_id)?;
            roll_back(ctl, &rollout, targets).await?;
        }
        ("pause" | "resume" | "abort", current) => {
            return Err(ControlError::Refused(format!(
                "cannot {action} rollout {rollout_id}: it is {current}"
            )))
        }
        (other, _) => {
            return Err(ControlError::Refused(format!(
                "unknown action `{other}` (pause, resume, abort, rollback)"
            )))
        }
    }
    event(ctl, rollout_id, None, &format!("{action} by the user"));
    ctl.store
        .rollout(rollout_id)?
        .ok_or_else(|| ControlError::NoSuchRollout(rollout_id.to_string()))
}

#[cfg(test)]
mod tests;
