//! The edgefleet controller: the gRPC server that agents dial (agent link) and that the CLI talks
//! to (admin service), its SQLite store and artifact folder, and the pure decisions behind
//! benchmark runs and rollouts. The `edgefleet` CLI that talks to it lives in the binary
//! (`main.rs`, `cli/`).
//!
//! Layout: [`server`] is what `edgefleet serve` runs (link and admin services, the fleet, the
//! rollout driver); [`console`] is the web console it serves beside them; [`rollout`] decides what a rollout does next (pure); [`planning`] decides
//! which agents run which jobs (pure) and [`selector`] parses who is meant; [`registry`] holds
//! artifact bytes, ONNX inspection, the signing key and manifests; [`records`] turns stored rows
//! into result records; [`compare`] sets two models or runs side by side per device class and
//! [`regressions`] judges a finished run against its baseline and recent history; [`store`]
//! owns SQLite; [`trust`] holds the CA, tokens and identities.

pub mod clock;
pub mod compare;
pub mod console;
pub mod metrics;
pub mod planning;
pub mod records;
pub mod registry;
pub mod regressions;
pub mod rollout;
pub mod schedule;
pub mod selector;
pub mod server;
pub mod store;
mod stored_states;
pub mod trust;

pub use clock::now_ms;
pub use server::{serve, Controller, OpenError, Settings, CONTROLLER_VERSION};
