//! The states a rollout and each of its targets (one agent) can be in, as stored and shown.

use crate::stored_states::stored_states;

stored_states! {
    /// Where a rollout stands.
    RolloutState {
        Running = "running",
        /// No new installs start; in-flight ones finish.
        Paused = "paused",
        Succeeded = "succeeded",
        Aborted = "aborted",
        RolledBack = "rolled_back",
    }
}

stored_states! {
    /// One agent's part in a rollout.
    TargetState {
        /// Its wave has not started.
        Waiting = "waiting",
        /// The install command was sent (or waits for the agent to reconnect).
        Installing = "installing",
        /// Installed and healthy.
        Installed = "installed",
        /// Its wave's performance gate is benchmarking it.
        Gating = "gating",
        /// Its wave completed.
        Done = "done",
        Failed = "failed",
        /// A rollback command was sent.
        RollingBack = "rolling_back",
        RolledBack = "rolled_back",
    }
}

impl RolloutState {
    /// Whether the rollout may still change by itself (the driver looks at it, or it waits for
    /// the user to resume it).
    pub fn is_open(self) -> bool {
        matches!(self, RolloutState::Running | RolloutState::Paused)
    }
}

impl TargetState {
    /// Whether the candidate is, or may soon be, active on the agent (what a rollback undoes).
    pub fn may_hold_candidate(self) -> bool {
        matches!(
            self,
            TargetState::Installing
                | TargetState::Installed
                | TargetState::Gating
                | TargetState::Done
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_back_what_they_store() {
        for s in RolloutState::ALL {
            assert_eq!(s.as_str().parse::<RolloutState>(), Ok(*s));
        }
        for s in TargetState::ALL {
            assert_eq!(s.as_str().parse::<TargetState>(), Ok(*s));
        }
        assert!("installed ".parse::<TargetState>().is_err());
        assert_eq!(TargetState::RollingBack, "rolling_back");
    }
}
