//! `edgefleet serve`: opens the data directory, binds the listener and serves until SIGTERM or
//! Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use edgefleet_controller::{Controller, Settings};
use tokio_util::sync::CancellationToken;

pub(super) async fn run(
    listen: String,
    data_dir: PathBuf,
    token: String,
    heartbeat_s: u64,
) -> anyhow::Result<()> {
    anyhow::ensure!(!token.is_empty(), "the enrollment token must not be empty");
    let controller = Controller::open(
        &data_dir,
        Settings {
            enrollment_token: token,
            heartbeat_interval: Duration::from_secs(heartbeat_s.max(1)),
        },
    )?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    // One plain line on stdout, for people and for scripts that asked for port 0.
    println!(
        "edgefleet controller listening on {}",
        listener.local_addr()?
    );
    tracing::info!(data = %data_dir.display(), "controller ready");
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    edgefleet_controller::serve(listener, controller, shutdown.cancelled_owned()).await?;
    Ok(())
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
