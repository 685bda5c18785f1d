//! Rollout calls: `rollout start` (the flags parsed once into a [`RolloutSpec`], the gate's
//! workload from `--gate-suite`, targets assigned to waves and stored), `rollout status` (the
//! [`rollout_status`] view every rollout command answers with) and pause, resume, abort and
//! rollback.

use edgefleet_proto::v1::{
    ControlRolloutRequest, GateMeasurement, GateVerdict, ListRolloutsReply, RolloutStatus,
    RolloutTarget, StartRolloutRequest, Workload,
};
use edgefleet_suites::Suite;
use tonic::Status;

use super::bench::store_inputs;
use super::models::find_model;
use crate::clock::now_ms;
use crate::rollout::gate::GATE_SKIPPED;
use crate::rollout::waves::assign_waves;
use crate::rollout::{RolloutSpec, RolloutState, SpecText, TargetState};
use crate::server::rollout_driver::{self, ControlError};
use crate::server::Controller;
use crate::store::{ModelRow, RolloutRow, StoreError, TargetRow};
use crate::{planning, selector};

impl From<ControlError> for Status {
    fn from(e: ControlError) -> Status {
        match e {
            ControlError::NoSuchRollout(_) => Status::not_found(e.to_string()),
            ControlError::Refused(_) => Status::failed_precondition(e.to_string()),
            ControlError::Store(e) => e.into(),
        }
    }
}

/// `rollout start`: validates everything before anything is stored.
pub(super) async fn start(
    ctl: &Controller,
    req: StartRolloutRequest,
) -> Result<RolloutStatus, Status> {
    let bad = |e: &dyn std::fmt::Display| Status::invalid_argument(e.to_string());
    let spec = RolloutSpec::parse(&SpecText {
        select: &req.select,
        waves: &req.waves,
        success: &req.success,
        abort_after: &req.abort_after,
        gate: &req.gate,
        health_check: &req.health_check,
    })
    .map_err(|e| bad(&e))?;
    let conditions = selector::parse_selector(&spec.select).map_err(|e| bad(&e))?;
    let model = find_model(ctl, &req.name, &req.version)?;
    let gate_workload = gate_workload(ctl, &spec, &model, &req).await?;

    let _guard = ctl.rollout_lock.lock().await?;
    if let Some(r) = ctl
        .store
        .rollouts()?
        .into_iter()
        .find(|r| r.model_name == req.name && r.state.is_open())
    {
        return Err(Status::failed_precondition(format!(
            "rollout {} of {}@{} is {}; abort it before starting another for {}",
            r.id, r.model_name, r.model_version, r.state, req.name
        )));
    }
    let mut agents: Vec<_> = ctl
        .store
        .agents()?
        .into_iter()
        .filter(|a| planning::matches(a, &conditions))
        .collect();
    if agents.is_empty() {
        return Err(Status::failed_precondition(if spec.select.is_empty() {
            "no agent has ever connected".to_string()
        } else {
            format!("no agent matches `{}`", spec.select)
        }));
    }
    // Online agents first, so the first wave is made of devices that can answer now.
    let online = ctl.online_ids();
    agents.sort_by_key(|a| (!online.contains(&a.id), a.name.clone(), a.id.clone()));
    let now = now_ms();
    let row = RolloutRow {
        id: format!("ro-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]),
        model_name: req.name.clone(),
        model_version: req.version.clone(),
        gate_workload,
        state: RolloutState::Running,
        reason: String::new(),
        current_wave: 0,
        created_ms: now,
        updated_ms: now,
        spec,
    };
    let targets: Vec<TargetRow> = assign_waves(&row.spec.waves, agents.len())
        .into_iter()
        .zip(&agents)
        .map(|(wave, agent)| TargetRow {
            rollout_id: row.id.clone(),
            agent_id: agent.id.clone(),
            wave,
            state: TargetState::Waiting,
            error: String::new(),
            previous_version: String::new(),
            health: String::new(),
            updated_ms: now,
            fetched_bytes: 0,
            fetch_started_ms: 0,
            fetch_finished_ms: 0,
        })
        .collect();
    ctl.store.insert_rollout(&row, &targets)?;
    ctl.store.log_event(
        Some(&row.id),
        None,
        &format!(
            "started: {}@{} to {} agent(s) in waves {}",
            row.model_name,
            row.model_version,
            targets.len(),
            row.spec.waves_text()
        ),
        now,
    )?;
    tracing::info!(rollout = %row.id, model = %format!("{}@{}", row.model_name, row.model_version), agents = targets.len(), "rollout started");
    ctl.changes.rollout(&row.id);
    Ok(rollout_status(ctl, &row)?)
}

/// The gate's workload from `--gate-suite` (`None`: the built-in sentences), after checking
/// that the gate can run on this model at all.
async fn gate_workload(
    ctl: &Controller,
    spec: &RolloutSpec,
    model: &ModelRow,
    req: &StartRolloutRequest,
) -> Result<Option<Workload>, Status> {
    let bad = Status::invalid_argument;
    let gate_suite = if req.gate_suite_toml.is_empty() {
        None
    } else if !spec.gated() {
        return Err(bad(
            "--gate-suite gives the performance gate its workload; add --gate with the limits"
                .into(),
        ));
    } else {
        let origin = if req.gate_suite_origin.is_empty() {
            "gate suite"
        } else {
            &req.gate_suite_origin
        };
        let suite = Suite::parse(&req.gate_suite_toml, origin).map_err(|e| bad(e.to_string()))?;
        Some((suite, origin.to_string()))
    };
    let gate_group = match &gate_suite {
        None => None,
        Some((suite, origin)) => Some(gate_group(suite, &req.name).ok_or_else(|| {
            bad(format!(
                "gate suite {origin} has several groups and none names a version of {}",
                req.name
            ))
        })?),
    };
    let text_gate =
        gate_group.is_none_or(|g| matches!(g.input, edgefleet_suites::Input::Text { .. }));
    if spec.gated() && text_gate && !model.files.iter().any(|f| f.file_name == "tokenizer.json") {
        return Err(Status::failed_precondition(format!(
            "the performance gate benchmarks with real sentences and needs {}@{}'s tokenizer.json (add it with --with, or give the gate audio or image input with --gate-suite)",
            req.name, req.version
        )));
    }
    let (Some((suite, origin)), Some(group)) = (&gate_suite, gate_group) else {
        return Ok(None);
    };
    let inputs = store_inputs(ctl, suite, req.gate_inputs.clone(), origin).await?;
    let run = suite
        .plan()
        .into_iter()
        .find(|r| std::ptr::eq(r.group, group))
        .ok_or_else(|| bad(format!("gate suite {origin} plans no run")))?;
    let mut workload = planning::workload_for(suite, &run, &inputs);
    // The gate decides the metric's reference (the version being replaced).
    workload.quality_metric = group
        .quality
        .as_ref()
        .map_or_else(|| "cosine".to_string(), |q| q.metric.clone());
    if let edgefleet_suites::Input::Text { sentences, .. } = &group.input {
        workload.golden = match &group.quality {
            Some(q) if !q.golden.is_empty() => q.golden.clone(),
            _ => sentences.clone(),
        };
    }
    Ok(Some(workload))
}

/// The group of a gate suite whose input and quality check the gate uses: the one that names a
/// version of the model, or the only one.
fn gate_group<'a>(suite: &'a Suite, model: &str) -> Option<&'a edgefleet_suites::ModelGroup> {
    suite
        .groups
        .iter()
        .find(|g| {
            g.models
                .iter()
                .any(|m| m.registered().is_some_and(|r| r.name == model))
        })
        .or(match suite.groups.as_slice() {
            [only] => Some(only),
            _ => None,
        })
}

/// `rollout status`: one rollout, or every rollout (newest first) for an empty id.
pub(super) fn list(ctl: &Controller, id: &str) -> Result<ListRolloutsReply, Status> {
    let rows = if id.is_empty() {
        ctl.store.rollouts()?
    } else {
        vec![ctl
            .store
            .rollout(id)?
            .ok_or_else(|| Status::not_found(format!("no rollout {id}")))?]
    };
    let rollouts = rows
        .iter()
        .map(|r| rollout_status(ctl, r))
        .collect::<Result<_, _>>()?;
    Ok(ListRolloutsReply { rollouts })
}

/// pause | resume | abort | rollback.
pub(super) async fn control(
    ctl: &Controller,
    req: ControlRolloutRequest,
) -> Result<RolloutStatus, Status> {
    let row = rollout_driver::control(ctl, &req.rollout_id, &req.action).await?;
    Ok(rollout_status(ctl, &row)?)
}

/// A rollout as the CLI shows it: its spec, every target with its transfer, and the gates'
/// verdicts.
pub fn rollout_status(ctl: &Controller, rollout: &RolloutRow) -> Result<RolloutStatus, StoreError> {
    let names = ctl.store.agent_names()?;
    let model = ctl
        .store
        .model(&rollout.model_name, &rollout.model_version)?;
    let files: Vec<String> = model
        .as_ref()
        .map(|m| m.files.iter().map(|f| f.sha256.clone()).collect())
        .unwrap_or_default();
    let online = ctl.online_ids();
    let targets = ctl
        .store
        .targets(&rollout.id)?
        .into_iter()
        .map(|t| RolloutTarget {
            agent_name: names.get(&t.agent_id).cloned().unwrap_or_default(),
            online: online.contains(&t.agent_id),
            served_bytes: files.iter().map(|f| ctl.fleet.served(&t.agent_id, f)).sum(),
            agent_id: t.agent_id,
            wave: t.wave,
            state: t.state.to_string(),
            error: t.error,
            previous_version: t.previous_version,
            health: t.health,
            fetched_bytes: t.fetched_bytes,
            fetch_started_unix_ms: t.fetch_started_ms,
            fetch_finished_unix_ms: t.fetch_finished_ms,
        })
        .collect();
    let mut gates = Vec::new();
    for g in ctl.store.gates(&rollout.id)? {
        for v in g.verdicts.unwrap_or_default() {
            gates.push(GateVerdict {
                wave: g.wave,
                agent_name: names.get(&v.agent_id).cloned().unwrap_or_default(),
                passed: v.passed,
                run_id: g.run_id.clone(),
                error: v.error,
                measurements: v
                    .judged
                    .into_iter()
                    .map(|j| GateMeasurement {
                        metric: j.metric,
                        value: j.value,
                        comparison: j.comparison,
                        limit: j.limit,
                        outcome: j.outcome.as_str().to_string(),
                        detail: j.detail,
                    })
                    .collect(),
            });
        }
    }
    let gate_notes = ctl
        .store
        .events(&rollout.id)?
        .into_iter()
        .filter_map(|e| {
            let why = e.message.strip_prefix(GATE_SKIPPED)?;
            let agent = e.agent_id.as_ref().and_then(|id| names.get(id));
            Some(match agent {
                Some(name) => format!("{name}: {why}"),
                None => why.to_string(),
            })
        })
        .collect();
    let spec = &rollout.spec;
    Ok(RolloutStatus {
        gate_notes,
        rollout_id: rollout.id.clone(),
        model: format!("{}@{}", rollout.model_name, rollout.model_version),
        state: rollout.state.to_string(),
        reason: rollout.reason.clone(),
        select: spec.select.clone(),
        waves: spec.waves_text(),
        success: spec.success.to_string(),
        abort_after: spec.abort_after.map(|a| a.to_string()).unwrap_or_default(),
        gate: spec.gate_text(),
        current_wave: rollout.current_wave,
        targets,
        gates,
        created_unix_ms: rollout.created_ms,
        updated_unix_ms: rollout.updated_ms,
        model_bytes: model
            .map(|m| m.files.iter().map(|f| f.size_bytes).sum())
            .unwrap_or(0),
    })
}
