//! The edgefleet controller: the gRPC server that agents dial (agent link) and that the CLI talks
//! to (admin service), its SQLite store and artifact folder, and the `edgefleet` CLI's commands.
//!
//! Layout: [`server`] wires the services onto a listener; [`link_service`] holds agents' streams
//! and serves artifacts; [`admin_service`] answers the CLI; [`planning`] decides which agents run
//! which jobs (pure); [`rollout`] decides what a rollout does next (pure) and
//! [`rollout_driver`] carries it out; [`manifest`] and [`signing`] make the signed manifests
//! agents verify; [`records`] turns stored rows into result records; [`store`] owns SQLite;
//! [`artifact_dir`] owns artifact bytes; [`fleet`] knows who is connected; [`onnx_model`] reads
//! model signatures; [`cli`] and [`demo`] are the command-line side.

pub mod admin_service;
pub mod artifact_dir;
pub mod cli;
pub mod demo;
pub mod fleet;
pub mod link_service;
pub mod manifest;
pub mod onnx_model;
pub mod planning;
pub mod records;
pub mod rollout;
pub mod rollout_driver;
pub mod rollout_view;
pub mod server;
pub mod signing;
pub mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use server::serve;

/// The controller's version, sent to agents in the welcome.
pub const CONTROLLER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Shared state of a running controller.
#[derive(Clone)]
pub struct Controller {
    pub store: store::Store,
    pub artifacts: artifact_dir::ArtifactDir,
    pub fleet: fleet::Fleet,
    pub settings: Arc<Settings>,
    pub signer: signing::ManifestSigner,
    /// Held while a rollout's state is read and changed, so the driver and agents' results
    /// never interleave.
    pub rollout_lock: Arc<tokio::sync::Mutex<()>>,
}

/// How the controller behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The token every agent must present in its hello.
    pub enrollment_token: String,
    pub heartbeat_interval: Duration,
}

impl Controller {
    /// Opens (creating if needed) the controller's data directory: `controller.db`,
    /// `artifacts/` and the signing key `controller.key`.
    pub fn open(data_dir: &Path, settings: Settings) -> anyhow::Result<Controller> {
        use anyhow::Context;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let store = store::Store::open(&data_dir.join("controller.db"))?;
        let artifacts = artifact_dir::ArtifactDir::open(&data_dir.join("artifacts"))
            .with_context(|| format!("cannot open {}", data_dir.join("artifacts").display()))?;
        let signer = signing::ManifestSigner::load_or_create(data_dir)?;
        manifest::sign_unsigned(&store, &signer)?;
        Ok(Controller {
            store,
            artifacts,
            fleet: fleet::Fleet::default(),
            settings: Arc::new(settings),
            signer,
            rollout_lock: Arc::default(),
        })
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
