//! Pure rollout decisions, no I/O: the typed [`RolloutSpec`] parsed once from `rollout start`
//! ([`spec`]), waves and how a wave is judged ([`waves`]), the performance gate's limits, workload
//! and verdicts ([`gate`]), what an agent's install answer does to its target ([`transitions`]),
//! and the states a rollout and its targets move through ([`state`]). The driver in
//! [`crate::server::rollout_driver`] carries the decisions out and keeps the state in SQLite.

pub mod gate;
pub mod spec;
pub mod state;
pub mod transitions;
pub mod waves;

pub use spec::{HealthCheck, RolloutSpec, SpecError, SpecText};
pub use state::{RolloutState, TargetState};
