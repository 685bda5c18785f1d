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
pub mod channel;
pub mod config;
pub mod credentials;
pub mod engine;
pub mod enrollment;
pub mod hardware;
pub mod installer;
pub mod installs;
pub mod jobs;
pub mod ledger;
pub mod link;
pub mod local;
pub mod outbox;
mod private_file;
pub mod procfs;
pub mod provisioning;
pub mod proxy;
pub mod runtime_library;
pub mod sensors;
pub mod service_manager;
pub mod stats;
pub mod trouble;
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
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialsError),
}

impl AgentError {
    /// Whether this is a configuration the daemon cannot run with (exit code 64).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            AgentError::Config(_)
                | AgentError::Credentials(credentials::CredentialsError::NotEnrolled)
                | AgentError::Credentials(credentials::CredentialsError::Address(_))
                | AgentError::Credentials(credentials::CredentialsError::Unusable { .. })
        )
    }
}

/// The agent's version, sent in its hello and recorded on every result.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs the daemon until `shutdown` is cancelled: keeps the link to the controller up and carries
/// out the jobs it sends. Returns after in-flight work has had `grace` to finish.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    credentials::prefer_fastest_cipher();
    // Ready from here on, even while enrollment still waits for the controller: the daemon is
    // doing its job, and its event loop feeds the watchdog.
    tokio::spawn(service_manager::keep_watchdog_fed(shutdown.child_token()));
    service_manager::ready();
    let (identity, credentials) = if config.insecure {
        tracing::warn!(controller = %config.controller, "--insecure: the link is plaintext and this agent's id is only its word");
        (config::load_or_create_identity(&config.data_dir)?, None)
    } else {
        config::create_data_dir(&config.data_dir)?;
        let held = match credentials::Credentials::load(&config.data_dir)? {
            Some(held) => held,
            None => {
                let token = config
                    .enroll_token
                    .as_ref()
                    .ok_or(credentials::CredentialsError::NotEnrolled)?;
                match enroll_until_done(&config, token, &shutdown).await {
                    Some(enrolled) => enrolled,
                    None => return Ok(()),
                }
            }
        };
        (held.agent_id.clone(), Some(held))
    };
    match &config.route {
        proxy::Route::Proxy(_) | proxy::Route::Excluded { .. } => {
            tracing::info!(controller = %config.controller, route = %config.route, "proxy")
        }
        proxy::Route::Ignored { why } => {
            tracing::warn!(controller = %config.controller, "not using the environment's proxy: {why}")
        }
        proxy::Route::Direct => {}
    }
    let channel = channel::LinkChannel::new(credentials::channels(&config, credentials.as_ref())?);
    let store = artifacts::ArtifactStore::open(&config.data_dir.join("artifacts"))?
        .with_rate_limit(config.download_limit)
        .with_proxy_setting(config.proxy_setting.clone());
    let installer =
        installer::ModelInstaller::open(&config.data_dir.join("models"), config.keep_versions)?;
    let outbox_dir = config.data_dir.join("outbox");
    let outbox =
        outbox::Outbox::open(&outbox_dir).map_err(|source| config::ConfigError::CreateDataDir {
            path: outbox_dir,
            source,
        })?;
    let profile = hardware::probe(&config).await;
    if !profile.runtime_error.is_empty() {
        tracing::error!(error = %profile.runtime_error, "ONNX Runtime is not usable: benchmark jobs will fail until it is installed");
    } else {
        tracing::info!(version = %profile.onnxruntime_version, providers = ?profile.execution_providers, "ONNX Runtime found");
    }
    let tasks = TaskTracker::new();
    if let Some(held) = credentials {
        tasks.spawn(keep_certificate_fresh(
            config.clone(),
            channel.clone(),
            held,
            shutdown.child_token(),
        ));
    }
    let link = link::Link {
        config: config.clone(),
        channel,
        agent_id: identity,
        profile,
        store,
        installer,
        outbox,
    };
    tasks.spawn(link.maintain(shutdown.child_token()));
    shutdown.cancelled().await;
    service_manager::stopping();
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

/// Enrolls, retrying with backoff while the controller cannot be reached or refuses (the daemon
/// stays up and says why); `None` on shutdown.
async fn enroll_until_done(
    config: &AgentConfig,
    token: &edgefleet_proto::tokens::EnrollmentToken,
    shutdown: &CancellationToken,
) -> Option<credentials::Credentials> {
    let mut backoff = backoff::Backoff::new(config.reconnect_initial, config.reconnect_max);
    let mut reporter = trouble::Reporter::default();
    loop {
        let delay = match credentials::enroll(config, token).await {
            Ok(enrolled) => return Some(enrolled),
            Err(e) => {
                let delay = backoff.next_delay(&mut rand::rng());
                // Said once when it begins or changes, not at every retry.
                if !reporter.news(&trouble::Trouble::Other(e.to_string())) {
                    tracing::debug!(error = %e, "still cannot enroll");
                } else {
                    match &e {
                        credentials::CredentialsError::Unreachable { .. } => {
                            tracing::warn!(controller = %config.controller, error = %e, retry_in_ms = delay.as_millis() as u64, "cannot reach the controller; retrying")
                        }
                        _ => {
                            tracing::error!(controller = %config.controller, reason = %e, retry_in_ms = delay.as_millis() as u64, "the controller refused this agent")
                        }
                    }
                }
                delay
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// Renews the agent's certificate at about 70% of its lifetime, over the live link, and points
/// new connections at the new one. A certificate that expired while the agent was away (or that
/// the controller refuses as expired) is recovered instead: traded for a new one with the key it
/// holds. Deadlines come from the wall clock, which may jump (NTP stepping a clock that started
/// wrong), so a wait is at most a minute before the clock is read again.
async fn keep_certificate_fresh(
    config: AgentConfig,
    channel: channel::LinkChannel,
    mut held: credentials::Credentials,
    shutdown: CancellationToken,
) {
    const RECHECK: Duration = Duration::from_secs(60);
    let mut reporter = trouble::Reporter::default();
    let mut recovery_backoff =
        backoff::Backoff::new(config.reconnect_initial, config.reconnect_max);
    // The controller refused the certificate as expired though this clock says it is not (the
    // device clock lags): recover now rather than at the renewal time this clock gives.
    let mut refused_as_expired = false;
    loop {
        let now = wall_clock_ms();
        let wait = Duration::from_millis((held.renew_at_ms() - now).max(0) as u64);
        if !wait.is_zero() && !refused_as_expired {
            tokio::select! {
                _ = tokio::time::sleep(wait.min(RECHECK)) => {}
                _ = channel.expired_reported() => refused_as_expired = true,
                _ = shutdown.cancelled() => return,
            }
            continue;
        }
        let expired_here = now >= held.not_after_ms || std::mem::take(&mut refused_as_expired);
        let renewed = if expired_here {
            Err(None)
        } else {
            credentials::renew(channel.get(), &config.data_dir, &held)
                .await
                .map_err(Some)
        };
        let outcome = match renewed {
            Ok(renewed) => Ok((renewed, "certificate renewed")),
            Err(error) => {
                let refused_as_expired = matches!(
                    &error,
                    Some(credentials::CredentialsError::CertificateExpired)
                );
                if expired_here || refused_as_expired {
                    credentials::recover(&config, &held).await.map(|recovered| {
                        (
                            recovered,
                            "certificate recovered: the expired one was traded for a new one",
                        )
                    })
                } else {
                    Err(error.expect("an attempt was made"))
                }
            }
        };
        match outcome {
            Ok((fresh, what)) => match credentials::channels(&config, Some(&fresh)) {
                Ok(new_channels) => {
                    channel.set(new_channels);
                    tracing::info!(not_after_ms = fresh.not_after_ms, "{what}");
                    held = fresh;
                    if wall_clock_ms() >= held.not_after_ms {
                        // A certificate fresh from the controller is already over by this clock:
                        // the clock is ahead. Say so, and do not ask again at once.
                        let trouble = trouble::Trouble::ClockAhead {
                            device_s: wall_clock_ms() / 1000,
                            valid_until_s: held.not_after_ms / 1000,
                        };
                        let retry = recovery_backoff.next_delay(&mut rand::rng());
                        if reporter.news(&trouble) {
                            tracing::error!(reason = %trouble, "the new certificate is already expired by this device's clock");
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(retry) => {}
                            _ = shutdown.cancelled() => return,
                        }
                    } else {
                        reporter.cleared();
                        recovery_backoff.reset();
                    }
                }
                Err(e) => tracing::error!(error = %e, "the new certificate is not usable"),
            },
            Err(e) => {
                // Try again soon, well before a live certificate runs out; an expired one
                // with the reconnect backoff.
                let retry = if now >= held.not_after_ms {
                    recovery_backoff.next_delay(&mut rand::rng())
                } else {
                    let left = (held.not_after_ms - now).max(0) as u64;
                    Duration::from_millis((left / 10).clamp(500, 30_000))
                };
                let trouble = match &e {
                    credentials::CredentialsError::Refused(why) => {
                        trouble::Trouble::CertificateRefused(why.clone())
                    }
                    other => trouble::Trouble::Other(other.to_string()),
                };
                if reporter.news(&trouble) {
                    match &e {
                        credentials::CredentialsError::Refused(why) => {
                            tracing::error!(reason = %why, retry_in_ms = retry.as_millis() as u64, "the controller refused this agent a new certificate")
                        }
                        _ => {
                            tracing::warn!(error = %e, retry_in_ms = retry.as_millis() as u64, "cannot renew the certificate yet")
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// Milliseconds since the Unix epoch, as this device's clock reads them.
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
