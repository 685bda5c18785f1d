//! Carrying rollouts out: a loop that moves every running rollout forward (send installs for
//! the current wave, judge the wave, run its performance gate, advance, abort and roll back),
//! the handling of agents' install results, and the commands an agent gets again when it
//! reconnects. All state lives in SQLite, so a restarted controller resumes where it was.

use std::collections::BTreeMap;
use std::time::Duration;

use edgefleet_proto::v1::{
    controller_message, workload, BenchJob, ControllerMessage, GateMeasurement, GateVerdict,
    InstallModel, InstallResult, RollbackModel, RolloutStatus, RolloutTarget, RunJobs, TextInput,
    Workload,
};
use tokio_util::sync::CancellationToken;

use crate::planning::model_spec;
use crate::rollout::{self, state, Amount, Judged, Measured, WaveCounts, WaveDecision};
use crate::store::{GateRow, ModelRow, RolloutRow, RunRow, StoreError, TargetRow};
use crate::{now_ms, Controller};

/// How often running rollouts are looked at.
const TICK: Duration = Duration::from_millis(250);
/// A gate alternates candidate and active version this many times on each device, so that drift
/// (heat, other load) falls on both alike; each metric is the median over the rounds.
const GATE_ROUNDS: usize = 3;

/// Moves running rollouts forward until shutdown.
pub async fn drive(ctl: Controller, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        let running = match ctl.store.rollouts() {
            Ok(all) => all.into_iter().filter(|r| r.state == "running"),
            Err(e) => {
                tracing::error!(error = %e, "cannot read rollouts");
                continue;
            }
        };
        for rollout in running.collect::<Vec<_>>() {
            let _guard = ctl.rollout_lock.lock().await;
            if let Err(e) = advance(&ctl, &rollout.id).await {
                tracing::error!(rollout = %rollout.id, error = %e, "cannot advance the rollout");
            }
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
            health_check: rollout.health_check.clone(),
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
        match target.state.as_str() {
            state::INSTALLING if matches!(rollout.state.as_str(), "running" | "paused") => {
                if let Some(model) = ctl
                    .store
                    .model(&rollout.model_name, &rollout.model_version)?
                {
                    out.push(install_command(&rollout, &model, agent_id));
                }
            }
            state::ROLLING_BACK => out.push(rollback_command(&rollout, agent_id)),
            _ => {}
        }
    }
    Ok(out)
}

/// One look at a running rollout: start its current wave's installs, judge the wave, gate it,
/// advance or abort.
async fn advance(ctl: &Controller, rollout_id: &str) -> Result<(), StoreError> {
    let Some(rollout) = ctl.store.rollout(rollout_id)? else {
        return Ok(());
    };
    if rollout.state != "running" {
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
        .filter(|t| t.wave == wave && t.state == state::WAITING)
        .cloned()
    {
        t.state = state::INSTALLING.into();
        t.updated_ms = now_ms();
        ctl.store.update_target(&t)?;
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
        if gate.verdicts.is_empty() {
            return check_gate(ctl, &rollout, &gate, &targets).await;
        }
    }

    let in_wave: Vec<&TargetRow> = targets.iter().filter(|t| t.wave == wave).collect();
    let counts = WaveCounts::from_states(in_wave.iter().map(|t| t.state.as_str()));
    let failures = targets.iter().filter(|t| t.state == state::FAILED).count();
    let reached = targets.iter().filter(|t| t.state != state::WAITING).count();
    let success = Amount::parse(&rollout.success, "success").unwrap_or(Amount::Percent(100.0));
    let abort_after = (!rollout.abort_after.is_empty())
        .then(|| Amount::parse(&rollout.abort_after, "abort-after").ok())
        .flatten();
    match rollout::decide_wave(wave, counts, success, abort_after, failures, reached) {
        WaveDecision::Wait => Ok(()),
        WaveDecision::Abort(reason) => abort(ctl, &rollout, &reason).await,
        WaveDecision::Advance if rollout.gate.is_empty() => next_wave(ctl, &rollout, &targets),
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
    for t in targets
        .iter()
        .filter(|t| t.wave == wave && (t.state == state::INSTALLED || t.state == state::GATING))
    {
        let mut t = t.clone();
        t.state = state::DONE.into();
        t.updated_ms = now_ms();
        ctl.store.update_target(&t)?;
    }
    ctl.store
        .update_rollout(&rollout.id, "running", "", wave + 1, now_ms())?;
    event(
        ctl,
        &rollout.id,
        None,
        &format!("wave {} complete", wave + 1),
    );
    Ok(())
}

fn finish(ctl: &Controller, rollout: &RolloutRow) -> Result<(), StoreError> {
    ctl.store
        .update_rollout(&rollout.id, "succeeded", "", rollout.current_wave, now_ms())?;
    event(ctl, &rollout.id, None, "rollout succeeded");
    Ok(())
}

/// Stops the rollout for `reason` and rolls back the current wave.
async fn abort(ctl: &Controller, rollout: &RolloutRow, reason: &str) -> Result<(), StoreError> {
    ctl.store.update_rollout(
        &rollout.id,
        "aborted",
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
        let affected = matches!(
            t.state.as_str(),
            state::INSTALLING | state::INSTALLED | state::GATING | state::DONE
        );
        if !affected {
            continue;
        }
        t.state = state::ROLLING_BACK.into();
        t.updated_ms = now_ms();
        ctl.store.update_target(&t)?;
        // An install still in flight is followed by this rollback in the agent's queue.
        ctl.fleet
            .send(&t.agent_id, rollback_command(rollout, &t.agent_id))
            .await;
    }
    Ok(())
}

/// The one quality figure a gate's `quality>=` limit reads, from whichever metric measured it:
/// mean cosine, top-1 agreement of logits, share of decisions alike, or of text lines read alike.
pub fn gate_quality(values: &std::collections::HashMap<String, f64>) -> Option<f64> {
    [
        "cosine_mean",
        "top1_agreement",
        "exact_match",
        "text_exact_match",
    ]
    .iter()
    .find_map(|key| values.get(*key).copied())
}

/// The gate's workload for one version: the suite's from `--gate-suite` when the rollout has one,
/// else the built-in sentences; the quality check only where asked.
fn rollout_gate_workload(rollout: &RolloutRow, quality: bool) -> Workload {
    if rollout.gate_workload.is_empty() {
        return gate_workload(quality);
    }
    let mut workload =
        <Workload as prost::Message>::decode(rollout.gate_workload.as_slice()).unwrap_or_default();
    if !quality {
        workload.quality_metric.clear();
        workload.golden.clear();
    }
    workload
}

/// The workload a performance gate runs: the same for both versions, on the same device.
pub fn gate_workload(quality: bool) -> Workload {
    const SENTENCES: [&str; 6] = [
        "The rollout reached every gateway in the north warehouse before noon.",
        "Edge devices measure latency, memory and energy on their own hardware.",
        "A quantized model should answer as well as the one it replaces.",
        "The camera at the loading dock reports a pallet every few seconds.",
        "Battery powered sensors wake up, send a reading and go back to sleep.",
        "Which version of the model is active on this device right now?",
    ];
    let sentences: Vec<String> = SENTENCES.iter().map(|s| s.to_string()).collect();
    Workload {
        scenario: "single-stream".into(),
        threads: 1,
        warmup_queries: 20,
        min_queries: 100,
        min_duration_ms: 1_000,
        max_duration_ms: 10_000,
        repetitions: 1,
        batch: 1,
        quality_metric: if quality {
            "cosine".into()
        } else {
            String::new()
        },
        golden: if quality {
            sentences.clone()
        } else {
            Vec::new()
        },
        input: Some(workload::Input::Text(TextInput {
            sentences,
            sequence_length: 0,
        })),
        ..Workload::default()
    }
}

/// Benchmarks the candidate and the version it replaced on each healthy agent of the wave.
async fn start_gate(
    ctl: &Controller,
    rollout: &RolloutRow,
    model: &ModelRow,
    targets: &[TargetRow],
) -> Result<(), StoreError> {
    let wave = rollout.current_wave;
    let limits = rollout::parse_gate(&rollout.gate).unwrap_or_default();
    let wants_quality = limits
        .iter()
        .any(|l| l.metric == rollout::GateMetric::Quality);
    let mut jobs = Vec::new();
    let mut gated = Vec::new();
    for t in targets
        .iter()
        .filter(|t| t.wave == wave && t.state == state::INSTALLED)
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
                    workload: Some(rollout_gate_workload(rollout, quality)),
                },
            ));
            jobs.push((
                t.agent_id.clone(),
                BenchJob {
                    job_id: format!("a{n:03}-r{round}-active"),
                    model: Some(model_spec(&active)),
                    reference: None,
                    workload: Some(rollout_gate_workload(rollout, false)),
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
    ctl.store.insert_gate(&GateRow {
        rollout_id: rollout.id.clone(),
        wave,
        run_id: run.id.clone(),
        verdicts: String::new(),
    })?;
    for mut t in gated {
        t.state = state::GATING.into();
        t.updated_ms = now_ms();
        ctl.store.update_target(&t)?;
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

/// One agent's gate rounds: the candidate's, the active version's, and errors.
type GateRounds = (Vec<Measured>, Vec<Measured>, Vec<String>);

/// One agent's gate outcome, as stored (JSON) and shown.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredVerdict {
    pub agent_id: String,
    pub passed: bool,
    pub error: String,
    pub judged: Vec<Judged>,
}

/// When every gate job has reported, judges each agent; a breach (or a gate that could not
/// measure) aborts the rollout and rolls the wave back.
async fn check_gate(
    ctl: &Controller,
    rollout: &RolloutRow,
    gate: &GateRow,
    targets: &[TargetRow],
) -> Result<(), StoreError> {
    let jobs = ctl.store.jobs(Some(&gate.run_id))?;
    if jobs.iter().any(|j| j.state == "pending") {
        return Ok(());
    }
    let results = ctl.store.results(Some(&gate.run_id))?;
    let limits = rollout::parse_gate(&rollout.gate).unwrap_or_default();
    let mut by_agent: BTreeMap<String, GateRounds> = BTreeMap::new();
    for job in &jobs {
        let entry = by_agent.entry(job.agent_id.clone()).or_default();
        if let Some(error) = &job.error {
            entry.2.push(format!("{}: {error}", job.job_id));
        }
    }
    for r in results {
        let m = &r.measurement;
        let latency = m.latency_ms.clone().unwrap_or_default();
        let measured = Measured {
            p50_ms: latency.p50,
            p90_ms: latency.p90,
            p99_ms: latency.p99,
            energy_j: m.energy_j_per_sample,
            peak_rss_bytes: m.peak_rss_bytes,
            quality: gate_quality(&m.quality),
        };
        let entry = by_agent.entry(r.job.agent_id.clone()).or_default();
        if r.job.job_id.ends_with("-candidate") {
            if !m.quality_error.is_empty() {
                entry.2.push(format!("quality: {}", m.quality_error));
            }
            entry.0.push(measured);
        } else {
            entry.1.push(measured);
        }
    }
    let names = ctl.store.agent_names()?;
    let mut verdicts = Vec::new();
    let mut breaches = Vec::new();
    for (agent_id, (candidate, active, errors)) in by_agent {
        let name = names.get(&agent_id).cloned().unwrap_or(agent_id.clone());
        let complete = candidate.len() == GATE_ROUNDS && active.len() == GATE_ROUNDS;
        let verdict = match (complete, median_of(&candidate), median_of(&active)) {
            (true, Some(c), Some(a)) => {
                let judged = rollout::judge(&limits, &c, &a);
                let breached: Vec<String> = judged
                    .iter()
                    .filter(|j| j.outcome == "breached")
                    .map(|j| {
                        let unit = if j.metric == "quality" { "" } else { "x" };
                        format!(
                            "{} {:.3}{unit} (limit {}{:.2}{unit})",
                            j.metric,
                            j.value.unwrap_or(f64::NAN),
                            j.comparison,
                            j.limit
                        )
                    })
                    .collect();
                if !breached.is_empty() {
                    breaches.push(format!("{name}: {}", breached.join(", ")));
                }
                StoredVerdict {
                    agent_id,
                    passed: breached.is_empty(),
                    error: errors.join("; "),
                    judged,
                }
            }
            _ => {
                let error = if errors.is_empty() {
                    "the gate benchmark produced no result".to_string()
                } else {
                    errors.join("; ")
                };
                breaches.push(format!("{name}: gate benchmark failed: {error}"));
                StoredVerdict {
                    agent_id,
                    passed: false,
                    error,
                    judged: Vec::new(),
                }
            }
        };
        verdicts.push(verdict);
    }
    ctl.store.set_gate_verdicts(
        &rollout.id,
        gate.wave,
        &serde_json::to_string(&verdicts).expect("verdicts serialize"),
    )?;
    if breaches.is_empty() {
        event(
            ctl,
            &rollout.id,
            None,
            &format!("wave {}: performance gate passed", gate.wave + 1),
        );
        next_wave(ctl, rollout, targets)
    } else {
        let reason = format!("performance gate breached on {}", breaches.join("; "));
        abort(ctl, rollout, &reason).await
    }
}

/// Each metric's median over the rounds (quality: from the round that measured it).
fn median_of(rounds: &[Measured]) -> Option<Measured> {
    if rounds.is_empty() {
        return None;
    }
    let median = |f: &dyn Fn(&Measured) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let energies: Vec<f64> = rounds.iter().filter_map(|m| m.energy_j).collect();
    Some(Measured {
        p50_ms: median(&|m| m.p50_ms),
        p90_ms: median(&|m| m.p90_ms),
        p99_ms: median(&|m| m.p99_ms),
        energy_j: (energies.len() == rounds.len()).then(|| median(&|m| m.energy_j.unwrap_or(0.0))),
        peak_rss_bytes: median(&|m| m.peak_rss_bytes as f64) as u64,
        quality: rounds.iter().find_map(|m| m.quality),
    })
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
        let row = crate::store::AgentModelRow {
            agent_id: agent_id.to_string(),
            name: state.name.clone(),
            active_version: state.active_version.clone(),
            versions: state.versions.clone(),
        };
        ctl.store
            .record_installed(agent_id, &[row], Some(&state.name), now_ms())?;
    }
    let (rollout_id, is_rollback) = match result.install_id.strip_suffix("/rollback") {
        Some(rest) => (rest, true),
        None => (result.install_id.as_str(), false),
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
    target.updated_ms = now_ms();
    if is_rollback {
        if target.state != state::ROLLING_BACK {
            return Ok(());
        }
        if result.ok {
            target.state = state::ROLLED_BACK.into();
            event(
                ctl,
                rollout_id,
                Some(agent_id),
                &format!(
                    "rolled back; active: {}",
                    display_version(&result.active_version)
                ),
            );
        } else {
            target.state = state::FAILED.into();
            target.error = result.error.clone();
            event(ctl, rollout_id, Some(agent_id), &result.error);
        }
        return ctl.store.update_target(&target);
    }
    if !matches!(
        target.state.as_str(),
        state::INSTALLING | state::ROLLING_BACK
    ) {
        return Ok(()); // a duplicate answer
    }
    target.fetched_bytes = result.fetched_bytes;
    target.fetch_started_ms = result.fetch_started_unix_ms;
    target.fetch_finished_ms = result.fetch_finished_unix_ms;
    if result.ok {
        target.previous_version = result.previous_version.clone();
        target.health = result.health.clone();
        if target.state == state::INSTALLING {
            target.state = state::INSTALLED.into();
            if rollout.state == "rolled_back" {
                target.state = state::ROLLING_BACK.into();
                ctl.fleet
                    .send(agent_id, rollback_command(&rollout, agent_id))
                    .await;
            }
        }
        event(
            ctl,
            rollout_id,
            Some(agent_id),
            &format!(
                "installed (was {}; fetched {:.1} MB in {:.0} ms; health: {})",
                display_version(&result.previous_version),
                result.fetched_bytes as f64 / 1e6,
                result.fetch_ms,
                result.health
            ),
        );
    } else {
        target.error = result.error.clone();
        if target.state == state::INSTALLING {
            target.state = state::FAILED.into();
        } else {
            // Rolling back what never installed: nothing is left to undo.
            target.state = state::ROLLED_BACK.into();
        }
        event(
            ctl,
            rollout_id,
            Some(agent_id),
            &format!("install failed: {}", result.error),
        );
    }
    ctl.store.update_target(&target)
}

fn display_version(v: &str) -> &str {
    if v.is_empty() {
        "none"
    } else {
        v
    }
}

/// A rollout as the CLI shows it.
pub fn status(ctl: &Controller, rollout: &RolloutRow) -> Result<RolloutStatus, StoreError> {
    let names = ctl.store.agent_names()?;
    let model = ctl
        .store
        .model(&rollout.model_name, &rollout.model_version)?;
    let files: Vec<String> = model
        .as_ref()
        .map(|m| m.files.iter().map(|f| f.sha256.clone()).collect())
        .unwrap_or_default();
    let targets = ctl
        .store
        .targets(&rollout.id)?
        .into_iter()
        .map(|t| RolloutTarget {
            agent_name: names.get(&t.agent_id).cloned().unwrap_or_default(),
            online: ctl.fleet.is_online(&t.agent_id),
            served_bytes: files.iter().map(|f| ctl.fleet.served(&t.agent_id, f)).sum(),
            agent_id: t.agent_id,
            wave: t.wave,
            state: t.state,
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
        let stored: Vec<StoredVerdict> = serde_json::from_str(&g.verdicts).unwrap_or_default();
        for v in stored {
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
                        outcome: j.outcome,
                        detail: j.detail,
                    })
                    .collect(),
            });
        }
    }
    Ok(RolloutStatus {
        rollout_id: rollout.id.clone(),
        model: format!("{}@{}", rollout.model_name, rollout.model_version),
        state: rollout.state.clone(),
        reason: rollout.reason.clone(),
        select: rollout.selector.clone(),
        waves: rollout.waves.clone(),
        success: rollout.success.clone(),
        abort_after: rollout.abort_after.clone(),
        gate: rollout.gate.clone(),
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

/// pause | resume | abort | rollback, from the CLI.
pub async fn control(ctl: &Controller, rollout_id: &str, action: &str) -> Result<(), String> {
    let _guard = ctl.rollout_lock.lock().await;
    let rollout = ctl
        .store
        .rollout(rollout_id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no rollout {rollout_id}"))?;
    let now = now_ms();
    let wave = rollout.current_wave;
    let set = |state: &str, reason: &str| {
        ctl.store
            .update_rollout(rollout_id, state, reason, wave, now)
            .map_err(|e| e.to_string())
    };
    match (action, rollout.state.as_str()) {
        ("pause", "running") => set("paused", "paused by the user")?,
        ("resume", "paused") => set("running", "")?,
        ("abort", "running" | "paused") => set("aborted", "aborted by the user")?,
        ("rollback", "rolled_back") => {
            return Err(format!("rollout {rollout_id} is rolled back already"))
        }
        ("rollback", _) => {
            set("rolled_back", "rolled back by the user")?;
            let targets = ctl.store.targets(rollout_id).map_err(|e| e.to_string())?;
            roll_back(ctl, &rollout, targets)
                .await
                .map_err(|e| e.to_string())?;
        }
        ("pause" | "resume" | "abort", current) => {
            return Err(format!(
                "cannot {action} rollout {rollout_id}: it is {current}"
            ))
        }
        (other, _) => {
            return Err(format!(
                "unknown action `{other}` (pause, resume, abort, rollback)"
            ))
        }
    }
    event(ctl, rollout_id, None, &format!("{action} by the user"));
    Ok(())
}
