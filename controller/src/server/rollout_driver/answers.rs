//! Agents' answers to install and rollback commands: what they installed is recorded, and the
//! target moves as [`crate::rollout::transitions::on_answer`] says.

use edgefleet_proto::v1::InstallResult;
use tokio::sync::{mpsc, oneshot};

use super::actions::{event, rollback_command, set_state};
use crate::clock::now_ms;
use crate::rollout::transitions::{on_answer, Answer, Transition};
use crate::rollout::TargetState;
use crate::server::Controller;
use crate::store::{AgentModelRow, StoreError};

/// Applies an agent's answer to an install or rollback command; `Some(reason)` when the link
/// must close because the answer could not be taken (the database out of reach): the command
/// goes out again on the agent's next stream, and the agent answers it again. With PostgreSQL
/// the answers waiting are applied together under one hold of the rollout lock
/// ([`AnswerQueue`]): a rollout to a fleet is answered by thousands of agents at once, and each
/// hold is a transaction on the lock's own session.
pub async fn on_install_result(
    ctl: &Controller,
    agent_id: &str,
    result: InstallResult,
) -> Option<String> {
    if let Some(queue) = ctl.answer_queue() {
        return queue.apply(agent_id, result).await;
    }
    let _guard = match ctl.rollout_lock.lock().await {
        Ok(guard) => guard,
        Err(e) => return Some(lock_refused(agent_id, &result, &e)),
    };
    apply_one(ctl, agent_id, &result).await
}

/// Says that the rollout lock could not be taken for `result`; the reason the link closes.
fn lock_refused(agent_id: &str, result: &InstallResult, e: &StoreError) -> String {
    tracing::error!(%agent_id, install_id = %result.install_id, error = %e, "cannot take the rollout lock to record an install result; closing the link so the agent answers again");
    format!("the rollout lock could not be taken: {e}")
}

/// Applies one answer with the rollout lock held.
async fn apply_one(ctl: &Controller, agent_id: &str, result: &InstallResult) -> Option<String> {
    match apply_install_result(ctl, agent_id, result).await {
        Ok(()) => None,
        Err(e) if e.is_transient() => {
            tracing::error!(%agent_id, install_id = %result.install_id, error = %e, "cannot record an install result; closing the link so the agent answers again");
            Some(format!("the store could not take an install result: {e}"))
        }
        Err(e) => {
            tracing::error!(%agent_id, install_id = %result.install_id, error = %e, "cannot record an install result");
            None
        }
    }
}

/// Answers one hold of the rollout lock covers at most (each a few statements: the hold stays
/// well within the lock's stall limit).
const ANSWERS_PER_HOLD: usize = 128;

/// An answer waiting for the lock, and where to say whether its link must close.
struct WaitingAnswer {
    agent_id: String,
    result: InstallResult,
    closes: oneshot::Sender<Option<String>>,
}

/// Where links hand install answers with PostgreSQL: one task applies every answer waiting, up
/// to [`ANSWERS_PER_HOLD`], under one hold of the rollout lock, in the order they came.
#[derive(Clone)]
pub struct AnswerQueue {
    queue: mpsc::UnboundedSender<WaitingAnswer>,
}

impl AnswerQueue {
    /// Starts the task that applies the answers of `ctl`'s links.
    pub fn start(ctl: Controller) -> AnswerQueue {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(apply_answers(ctl, waiting));
        AnswerQueue { queue }
    }

    async fn apply(&self, agent_id: &str, result: InstallResult) -> Option<String> {
        let (closes, closed) = oneshot::channel();
        let waiting = WaitingAnswer {
            agent_id: agent_id.to_string(),
            result,
            closes,
        };
        if self.queue.send(waiting).is_err() {
            return Some("the controller is shutting down".into());
        }
        closed
            .await
            .unwrap_or_else(|_| Some("the controller is shutting down".into()))
    }
}

async fn apply_answers(ctl: Controller, mut waiting: mpsc::UnboundedReceiver<WaitingAnswer>) {
    let mut arrived = Vec::with_capacity(ANSWERS_PER_HOLD);
    while waiting.recv_many(&mut arrived, ANSWERS_PER_HOLD).await > 0 {
        let batch = std::mem::take(&mut arrived);
        let _guard = match ctl.rollout_lock.lock().await {
            Ok(guard) => guard,
            Err(e) => {
                for w in batch {
                    let _ = w
                        .closes
                        .send(Some(lock_refused(&w.agent_id, &w.result, &e)));
                }
                continue;
            }
        };
        for w in batch {
            let closes = apply_one(&ctl, &w.agent_id, &w.result).await;
            let _ = w.closes.send(closes);
        }
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
        tracing::warn!(%agent_id, install_id = %result.install_id, "an install result for a rollout that does not exist; ignored");
        return Ok(());
    };
    let Some(mut target) = ctl.store.target(rollout_id, agent_id)? else {
        return Ok(());
    };
    let (next, send_rollback) = match on_answer(answer, target.state, rollout.state) {
        Transition::Ignore => return Ok(()),
        Transition::To(state) => (state, false),
        Transition::ToRollingBackAndSendRollback => (TargetState::RollingBack, true),
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
    set_state(ctl, &mut target, next)?;
    if send_rollback {
        // Written first: with replicas the rollback reaches the agent through the store.
        ctl.send_command(agent_id, rollback_command(&rollout, agent_id))
            .await;
    }
    Ok(())
}

fn display_version(v: &str) -> &str {
    if v.is_empty() {
        "none"
    } else {
        v
    }
}
