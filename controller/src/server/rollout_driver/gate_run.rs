//! A wave's performance gate as benchmark runs: start one (candidate and replaced version
//! alternating on each healthy agent) and, once every job has reported, judge it with
//! [`crate::rollout::gate::judge_wave`]; a breach, a failed benchmark or measurements that
//! cannot be read abort the rollout.

use std::collections::BTreeMap;

use edgefleet_proto::v1::{controller_message, BenchJob, ControllerMessage, RunJobs};

use super::actions::{abort, event, next_wave, set_state};
use crate::clock::now_ms;
use crate::planning::model_spec;
use crate::rollout::gate::{self, AgentRounds, GateMetric, Measured, GATE_ROUNDS, GATE_SKIPPED};
use crate::rollout::TargetState;
use crate::server::Controller;
use crate::store::{GateRow, JobState, ModelRow, RolloutRow, RunRow, StoreError, TargetRow};

/// Benchmarks the candidate and the version it replaced on each healthy agent of the wave,
/// alternating [`GATE_ROUNDS`] rounds of each.
pub(super) async fn start_gate(
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
                &format!(
                    "{GATE_SKIPPED}nothing was active before this install to compare with; it went ahead ungated"
                ),
            );
            continue;
        }
        let Some(active) = ctl.store.model(&rollout.model_name, &t.previous_version)? else {
            event(
                ctl,
                &rollout.id,
                Some(&t.agent_id),
                &format!(
                    "{GATE_SKIPPED}the earlier version {} is no longer registered; the install went ahead ungated",
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
            &format!(
                "{GATE_SKIPPED}wave {}: no agent in it had an earlier version to compare with",
                rollout.current_wave + 1
            ),
        );
        return next_wave(ctl, rollout);
    }
    let run = RunRow {
        id: format!("run-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        suite: format!("gate {} wave {}", rollout.id, wave + 1),
        suite_sha256: String::new(),
        created_ms: now_ms(),
        schedule: None,
    };
    ctl.store.insert_run(&run, "", &jobs)?;
    ctl.store.insert_gate(&rollout.id, wave, &run.id)?;
    let mut commands = Vec::new();
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
        commands.push((t.agent_id.clone(), message));
    }
    ctl.send_commands(commands).await;
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
pub(super) async fn check_gate(
    ctl: &Controller,
    rollout: &RolloutRow,
    gate: &GateRow,
) -> Result<(), StoreError> {
    let jobs = ctl.store.jobs(Some(&gate.run_id))?;
    if jobs.iter().any(|j| j.state == JobState::Pending) {
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
    crate::metrics::gate_verdict(wave.breaches.is_empty());
    if wave.breaches.is_empty() {
        event(
            ctl,
            &rollout.id,
            None,
            &format!("wave {}: performance gate passed", gate.wave + 1),
        );
        next_wave(ctl, rollout)
    } else {
        let reason = format!("performance gate breached on {}", wave.breaches.join("; "));
        abort(ctl, rollout, &reason).await
    }
}
