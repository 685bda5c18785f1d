//! What an agent's answer to an install or rollback command does to its target: a pure function
//! of the answer and the states, so every case is in one table (and its test).

use super::state::{RolloutState, TargetState};

/// Which command the agent answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Install { ok: bool },
    Rollback { ok: bool },
}

/// What to do with the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// A duplicate or stale answer: nothing changes.
    Ignore,
    /// Move the target to this state (and record what the answer says).
    To(TargetState),
    /// The install succeeded after the whole rollout was rolled back: record it, and send the
    /// agent a rollback right away.
    ToRollingBackAndSendRollback,
}

/// The transition for an agent's answer, given its target's state and the rollout's.
pub fn on_answer(answer: Answer, target: TargetState, rollout: RolloutState) -> Transition {
    use TargetState as T;
    match (answer, target) {
        (Answer::Rollback { .. }, t) if t != T::RollingBack => Transition::Ignore,
        (Answer::Rollback { ok: true }, _) => Transition::To(T::RolledBack),
        (Answer::Rollback { ok: false }, _) => Transition::To(T::Failed),
        (Answer::Install { .. }, t) if !matches!(t, T::Installing | T::RollingBack) => {
            Transition::Ignore
        }
        (Answer::Install { ok: true }, T::Installing) if rollout == RolloutState::RolledBack => {
            Transition::ToRollingBackAndSendRollback
        }
        (Answer::Install { ok: true }, T::Installing) => Transition::To(T::Installed),
        // Installed while a rollback was already queued behind the install: it follows.
        (Answer::Install { ok: true }, t) => Transition::To(t),
        (Answer::Install { ok: false }, T::Installing) => Transition::To(T::Failed),
        // Rolling back what never installed: nothing is left to undo.
        (Answer::Install { ok: false }, _) => Transition::To(T::RolledBack),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RolloutState as R;
    use TargetState as T;

    #[test]
    fn every_answer_in_every_state() {
        let ok_install = Answer::Install { ok: true };
        let bad_install = Answer::Install { ok: false };
        let ok_rollback = Answer::Rollback { ok: true };
        let bad_rollback = Answer::Rollback { ok: false };
        let to = Transition::To;
        let ignore = Transition::Ignore;
        let table: &[(Answer, T, R, Transition)] = &[
            (ok_install, T::Installing, R::Running, to(T::Installed)),
            (ok_install, T::Installing, R::Paused, to(T::Installed)),
            (ok_install, T::Installing, R::Aborted, to(T::Installed)),
            (
                ok_install,
                T::Installing,
                R::RolledBack,
                Transition::ToRollingBackAndSendRollback,
            ),
            (
                ok_install,
                T::RollingBack,
                R::RolledBack,
                to(T::RollingBack),
            ),
            (bad_install, T::Installing, R::Running, to(T::Failed)),
            (bad_install, T::RollingBack, R::Aborted, to(T::RolledBack)),
            (ok_rollback, T::RollingBack, R::Aborted, to(T::RolledBack)),
            (bad_rollback, T::RollingBack, R::RolledBack, to(T::Failed)),
        ];
        for &(answer, target, rollout, want) in table {
            assert_eq!(
                on_answer(answer, target, rollout),
                want,
                "{answer:?} while {target} in a {rollout} rollout"
            );
        }
        // Duplicates and stale answers change nothing, whatever the rollout does.
        for &rollout in R::ALL {
            for &target in T::ALL {
                if !matches!(target, T::Installing | T::RollingBack) {
                    for answer in [ok_install, bad_install] {
                        assert_eq!(on_answer(answer, target, rollout), ignore);
                    }
                }
                if target != T::RollingBack {
                    for answer in [ok_rollback, bad_rollback] {
                        assert_eq!(on_answer(answer, target, rollout), ignore);
                    }
                }
            }
        }
    }
}
