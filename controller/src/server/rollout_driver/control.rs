//! The user's pause, resume, abort and rollback, with an error that says which of "no such
//! rollout", "not now" or a store failure it was.

use super::actions::{event, roll_back};
use crate::clock::now_ms;
use crate::rollout::RolloutState;
use crate::server::Controller;
use crate::store::{RolloutRow, StoreError};

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
    let _guard = ctl.rollout_lock.lock().await?;
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
