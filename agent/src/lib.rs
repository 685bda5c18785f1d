//! The edgefleet agent: a small daemon on an edge device. It dials the controller, holds one
//! bidirectional gRPC stream, fetches the models it is sent, and benchmarks them with ONNX Runtime
//! in separate worker processes, so the daemon itself stays small and survives a crashing model.
//!
//! Layout: [`config`] (what the daemon is told), [`link`] (the stream to the controller, with
//! [`backoff`]), [`jobs`] (carrying out benchmark jobs; [`ledger`] keeps any from running twice),
//! [`artifacts`] (the local content-addressed model store and resumable fetch), [`worker`] (the
//! benchmark process, the only user of [`engine`], which is the only module that touches ONNX
//! Runtime), [`hardware`] (the device's profile), [`runtime_library`] (finding libonnxruntime),
//! [`stats`] and [`procfs`].

pub mod artifacts;
pub mod backoff;
pub mod config;
pub mod engine;
pub mod enrollment;
pub mod hardware;
pub mod installer;
pub mod installs;
pub mod jobs;
pub mod ledger;
pub mod link;
pub mod local;
pub mod procfs;
pub mod runtime_library;
pub mod sensors;
pub mod stats;
pub mod worker;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::AgentConfig;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Artifacts(#[from] artifacts::ArtifactError),
    #[error(transparent)]
    Installer(#[from] installer::InstallError),
}

/// The agent's version, sent in its hello and recorded on every result.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs the daemon until `shutdown` is cancelled: keeps the link to the controller up and carries
/// out the jobs it sends. Returns after in-flight work has had `grace` to finish.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let identity = config::load_or_create_identity(&config.data_dir)?;
    let store = artifacts::ArtifactStore::open(&config.data_dir.join("artifacts"))?
        .with_rate_limit(config.download_limit);
    let installer =
        installer::ModelInstaller::open(&config.data_dir.join("models"), config.keep_versions)?;
    let profile = hardware::probe(&config).await;
    if !profile.runtime_error.is_empty() {
        tracing::error!(error = %profile.runtime_error, "ONNX Runtime is not usable: benchmark jobs will fail until it is installed");
    } else {
        tracing::info!(version = %profile.onnxruntime_version, providers = ?profile.execution_providers, "ONNX Runtime found");
    }
    let tasks = TaskTracker::new();
    let link = link::Link {
        config: config.clone(),
        agent_id: identity,
        profile,
        store,
        installer,
    };
    tasks.spawn(link.maintain(shutdown.child_token()));
    shutdown.cancelled().await;
    tasks.close();
    if tokio::time::timeout(config.shutdown_grace, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; stopping anyway");
    }
    Ok(())
}

/// How long the daemon waits for in-flight work on shutdown, by default.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
