//! `edgefleet serve`: opens the data directory (its CA and server certificate included), binds
//! the listener, writes the credentials file the CLI on this host reads, and serves until
//! SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use edgefleet_controller::server::Security;
use edgefleet_controller::trust::credentials::{Credentials, FILE_NAME};
use edgefleet_controller::trust::tokens::{new_admin_token, Role};
use edgefleet_controller::{now_ms, Controller, Settings};
use edgefleet_proto::tokens::{secret_hash, AdminToken};
use tokio_util::sync::CancellationToken;

use super::target::ConfigError;

/// The name prefix of the admin token `serve` keeps for its own host (`local-<hash>`).
const LOCAL_TOKEN: &str = "local";

pub(crate) struct ServeOptions {
    pub(crate) listen: String,
    pub(crate) data_dir: PathBuf,
    /// A PostgreSQL URL for the state, or `None` for SQLite in the data directory.
    pub(crate) database: Option<String>,
    /// An object store for the artifacts, or `None` for the data directory's folder.
    pub(crate) artifacts: Option<edgefleet_controller::registry::artifacts::ArtifactsConfig>,
    /// `--retention-days` as a period.
    pub(crate) retention: Option<Duration>,
    /// `--replica-id` (with a database; by default HOST:PORT).
    pub(crate) replica_id: Option<String>,
    pub(crate) leader_lease: Duration,
    /// `--max-stream-age-s`.
    pub(crate) max_stream_age: Option<Duration>,
    pub(crate) sans: Vec<String>,
    pub(crate) agent_cert_lifetime: Duration,
    pub(crate) recovery_window: Duration,
    pub(crate) limits: edgefleet_controller::server::admission::ConnectionLimits,
    pub(crate) insecure: bool,
    pub(crate) insecure_token: Option<String>,
    pub(crate) heartbeat: Duration,
    pub(crate) metrics_listen: Option<String>,
    /// `--console-listen` (and `--console-plain-http`).
    pub(crate) console: Option<edgefleet_controller::console::ConsoleConfig>,
}

pub(crate) async fn run(options: ServeOptions) -> anyhow::Result<()> {
    raise_open_file_limit();
    let security = if options.insecure {
        let shared_token = options
            .insecure_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ConfigError(
                    "--insecure needs --token (the shared token plaintext agents present)".into(),
                )
            })?;
        Security::Insecure { shared_token }
    } else {
        // --san adds to the defaults: the CLI on this host dials 127.0.0.1.
        let mut sans = default_sans();
        for name in options.sans {
            if !sans.contains(&name) {
                sans.push(name);
            }
        }
        Security::Tls {
            sans,
            agent_cert_lifetime: options.agent_cert_lifetime,
            recovery_window: options.recovery_window,
        }
    };
    let controller = Controller::open_on(
        &options.data_dir,
        options.database.as_deref(),
        options.artifacts.as_ref(),
        Settings {
            security,
            heartbeat_interval: options.heartbeat,
            limits: options.limits.clone(),
            retention: options.retention,
            max_stream_age: options.max_stream_age,
        },
    )?;
    if options.insecure {
        tracing::warn!("--insecure: the link and the admin API are plaintext, and agents are who they say they are");
    }
    let listener = tokio::net::TcpListener::bind(&options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let bound = listener.local_addr()?;
    // On PostgreSQL every controller is a replica: alone, it leads by itself.
    let controller = match &options.database {
        None => controller,
        Some(_) => {
            let host = default_sans().into_iter().next().unwrap_or_default();
            let id = options
                .replica_id
                .clone()
                .unwrap_or_else(|| format!("{host}:{}", bound.port()));
            tracing::info!(replica = %id, lease_s = options.leader_lease.as_secs(), "serving as a replica of the controllers on this database");
            controller.as_replica(edgefleet_controller::server::replicas::ReplicaSettings {
                id,
                address: format!("{host}:{}", bound.port()),
                lease: options.leader_lease,
            })?
        }
    };
    let credentials = write_credentials(&controller, &options.data_dir, bound)?;
    // One plain line on stdout, for people and for scripts that asked for port 0.
    println!("edgefleet controller listening on {bound}");
    tracing::info!(data = %options.data_dir.display(), artifacts = %controller.artifacts.describe(), credentials = %credentials.display(), "controller ready");
    let shutdown = CancellationToken::new();
    if let Some(listen) = &options.metrics_listen {
        let metrics = super::metrics_endpoint::start(
            listen,
            controller.clone(),
            &options.limits,
            shutdown.clone(),
        )
        .await?;
        tracing::info!(address = %metrics, "metrics served at http://{metrics}/metrics (and /healthz)");
    }
    if let Some(console) = options.console {
        let plain = console.plain_http;
        use edgefleet_controller::console::ConsoleError;
        let address = edgefleet_controller::console::start(
            console,
            controller.clone(),
            &options.limits,
            shutdown.clone(),
        )
        .await
        .map_err(|e| match e {
            // Flags that do not go together: a usage error (exit 64), as any other.
            ConsoleError::NoCertificate | ConsoleError::PlainHttpInTheOpen(_) => {
                anyhow::Error::new(ConfigError(e.to_string()))
            }
            other => anyhow::Error::new(other),
        })?;
        let scheme = if plain { "http" } else { "https" };
        // One plain line, as for the listener, for scripts that asked for port 0; one that read
        // only the first line and closed the pipe is no reason to stop.
        use std::io::Write;
        let _ = writeln!(
            std::io::stdout(),
            "edgefleet console at {scheme}://{address}/"
        );
        tracing::info!(%address, "web console served at {scheme}://{address}/ (sign in with an admin token)");
    }
    tokio::spawn(stop_on_signal(shutdown.clone()));
    tokio::spawn(keep_watchdog_fed(shutdown.clone()));
    // systemd (Type=notify): the listener is bound and the credentials file written.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    edgefleet_controller::serve(listener, controller, shutdown.cancelled_owned()).await?;
    Ok(())
}

/// Pings systemd's watchdog at half its interval while the runtime answers (a unit with
/// `WatchdogSec=`; nothing otherwise).
async fn keep_watchdog_fed(shutdown: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut ticks = tokio::time::interval(interval / 2);
    loop {
        tokio::select! {
            _ = ticks.tick() => { let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]); }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// A connection per agent: lift the soft limit on open files (often 1,024) to the hard one.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, "cannot raise the open-file limit");
            }
        }
    }
}

/// This host's name, localhost and 127.0.0.1.
fn default_sans() -> Vec<String> {
    let mut sans = Vec::new();
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() && host != "localhost" {
            sans.push(host.to_string());
        }
    }
    sans.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
    sans
}

/// Writes `DATA/credentials.json` for the CLI on this host: the address, the CA and an operator
/// token (kept across restarts while it is valid; made anew when the file is gone).
fn write_credentials(
    controller: &Controller,
    data_dir: &std::path::Path,
    bound: std::net::SocketAddr,
) -> anyhow::Result<PathBuf> {
    let path = data_dir.join(FILE_NAME);
    let host = if bound.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        bound.ip()
    };
    let address = match &controller.authority {
        Some(_) => format!("https://{}", std::net::SocketAddr::new(host, bound.port())),
        None => format!("http://{}", std::net::SocketAddr::new(host, bound.port())),
    };
    let still_valid = Credentials::read(&path).ok().filter(|c| {
        AdminToken::parse(&c.token).is_ok_and(|t| {
            controller
                .store
                .admin_token(&secret_hash(&t.secret))
                .is_ok_and(|found| found.is_some())
        })
    });
    let token = match still_valid {
        Some(existing) => existing.token,
        None => {
            // The file is gone or stale: the token it held must not stay valid elsewhere.
            for stale in controller.store.admin_tokens()? {
                if stale.name.starts_with(LOCAL_TOKEN) && stale.revoked_ms == 0 {
                    controller.store.revoke_admin_token(&stale.name, now_ms())?;
                }
            }
            let (token, hash) = new_admin_token();
            // Revoked tokens keep their names; each new one takes a fresh name.
            let name = format!("{LOCAL_TOKEN}-{}", &hash[..8]);
            controller
                .store
                .insert_admin_token(&name, Role::Operator, &hash, now_ms())?;
            token
        }
    };
    Credentials {
        controller: address,
        ca_pem: controller
            .authority
            .as_ref()
            .map(|a| a.ca_pem().to_string())
            .unwrap_or_default(),
        token,
    }
    .write(&path)?;
    Ok(path)
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    shutdown.cancel();
}
