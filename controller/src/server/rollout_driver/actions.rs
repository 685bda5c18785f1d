//! What the driver does to the store and the fleet, shared by its parts: log an event, move a
//! target, send install and rollback commands, complete a wave, finish, abort and roll back.

use std::collections::HashMap;

use edgefleet_proto::v1::{controller_message, ControllerMessage, InstallModel, RollbackModel};

use crate::clock::now_ms;
use crate::rollout::{RolloutState, TargetState};
use crate::server::Controller;
use crate::store::{ModelRow, RolloutRow, StoreError, TargetRow};

/// The id an install command carries: the rollout and the agent it is for.
fn install_id(rollout_id: &str, agent_id: &str) -> String {
    format!("{rollout_id}/{agent_id}")
}

fn rollback_id(rollout_id: &str, agent_id: &str) -> String {
    format!("{rollout_id}/{agent_id}/rollback")
}

pub(super) fn event(ctl: &Controller, rollout_id: &str, agent_id: Option<&str>, message: &str) {
    tracing::info!(rollout = %rollout_id, agent = agent_id.unwrap_or(""), "{message}");
    ctl.changes.rollout(rollout_id);
    if let Err(e) = ctl
        .store
        .log_event(Some(rollout_id), agent_id, message, now_ms())
    {
        tracing::warn!(error = %e, "cannot log a rollout event");
    }
}

pub(super) fn install_command(
    rollout: &RolloutRow,
    model: &ModelRow,
    agent_id: &str,
) -> ControllerMessage {
    ControllerMessage {
        body: Some(controller_message::Body::Install(InstallModel {
            install_id: install_id(&rollout.id, agent_id),
            manifest: model.manifest.clone(),
            signature: model.manifest_signature.clone(),
            health_check: rollout.spec.health_check.as_str().to_string(),
        })),
    }
}

pub(super) fn rollback_command(rollout: &RolloutRow, agent_id: &str) -> ControllerMessage {
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
    let waiting = ctl.store.commands_for_agent(agent_id)?;
    commands(ctl, waiting, agent_id, &mut HashMap::new())
}

/// [`commands_for_agent`] for several agents, read together, by agent (an agent with none is
/// left out).
pub fn commands_for_agents(
    ctl: &Controller,
    agent_ids: &[String],
) -> Result<HashMap<String, Vec<ControllerMessage>>, StoreError> {
    let mut models = HashMap::new();
    let mut out = HashMap::new();
    for (agent_id, waiting) in ctl.store.commands_for_agents(agent_ids)? {
        let commands = commands(ctl, waiting, &agent_id, &mut models)?;
        out.insert(agent_id, commands);
    }
    Ok(out)
}

/// The commands for an agent's targets waiting on one, reading each model once (`models`).
fn commands(
    ctl: &Controller,
    waiting: Vec<(RolloutRow, TargetRow)>,
    agent_id: &str,
    models: &mut HashMap<(String, String), Option<ModelRow>>,
) -> Result<Vec<ControllerMessage>, StoreError> {
    let mut out = Vec::new();
    for (rollout, target) in waiting {
        match target.state {
            TargetState::Installing if rollout.state.is_open() => {
                let key = (rollout.model_name.clone(), rollout.model_version.clone());
                if !models.contains_key(&key) {
                    let model = ctl.store.model(&key.0, &key.1)?;
                    models.insert(key.clone(), model);
                }
                if let Some(model) = &models[&key] {
                    out.push(install_command(&rollout, model, agent_id));
                }
            }
            TargetState::RollingBack => out.push(rollback_command(&rollout, agent_id)),
            _ => {}
        }
    }
    Ok(out)
}

/// Moves a target to a new state and writes it.
pub(super) fn set_state(
    ctl: &Controller,
    target: &mut TargetRow,
    state: TargetState,
) -> Result<(), StoreError> {
    target.state = state;
    target.updated_ms = now_ms();
    ctl.store.update_target(target)?;
    ctl.changes.rollout(&target.rollout_id);
    Ok(())
}

/// Marks the wave's healthy agents done and moves to the next wave.
pub(super) fn next_wave(ctl: &Controller, rollout: &RolloutRow) -> Result<(), StoreError> {
    let wave = rollout.current_wave;
    ctl.store.complete_wave(&rollout.id, wave, now_ms())?;
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

pub(super) fn finish(ctl: &Controller, rollout: &RolloutRow) -> Result<(), StoreError> {
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
pub(super) async fn abort(
    ctl: &Controller,
    rollout: &RolloutRow,
    reason: &str,
) -> Result<(), StoreError> {
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
pub(super) async fn roll_back(
    ctl: &Controller,
    rollout: &RolloutRow,
    targets: Vec<TargetRow>,
) -> Result<(), StoreError> {
    let mut rollbacks = Vec::new();
    for mut t in targets {
        if !t.state.may_hold_candidate() {
            continue;
        }
        set_state(ctl, &mut t, TargetState::RollingBack)?;
        rollbacks.push((t.agent_id.clone(), rollback_command(rollout, &t.agent_id)));
    }
    // An install still in flight is followed by its rollback in the agent's queue.
    ctl.send_commands(rollbacks).await;
    Ok(())
}
