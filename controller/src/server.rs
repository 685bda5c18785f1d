//! What `edgefleet serve` runs: the shared state of a running controller ([`Controller`]), the
//! agent link ([`link`]: streams, results, artifact bytes), the admin service the CLI talks to
//! ([`admin`], one file per resource), who is connected ([`fleet`]), the loop that moves
//! rollouts forward ([`rollout_driver`]), the scheduler that fires scheduled benchmark runs
//! ([`schedules`]) and the judging of finished runs ([`judge`]), served on one already-bound
//! listener until shutdown.

pub mod admin;
pub mod admission;
pub mod changes;
pub mod fleet;
mod judge;
pub mod link;
pub mod replicas;
mod result_writer;
mod retention;
pub mod rollout_driver;
pub mod rollout_lock;
pub mod schedules;
pub mod tls;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use edgefleet_proto::v1::admin_server::AdminServer;
use edgefleet_proto::v1::agent_link_server::AgentLinkServer;
use tokio::net::TcpListener;

use crate::registry::artifacts::{ArtifactStoreError, Artifacts, ArtifactsConfig};
use crate::registry::manifest;
use crate::registry::signing::{KeyError, ManifestSigner};
use crate::store::{Store, StoreError};
use crate::trust::authority::Authority;
use crate::trust::TrustError;
use admin::AdminService;
use link::LinkService;

/// The controller's version, sent to agents in the welcome.
pub const CONTROLLER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long after its certificate expired an agent may still trade it for a new one, unless
/// `serve --agent-recovery-window-s` says otherwise.
pub const DEFAULT_RECOVERY_WINDOW: Duration = Duration::from_secs(365 * 24 * 3600);

/// Largest admin message (model uploads arrive in chunks well below this).
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Shared state of a running controller.
#[derive(Clone)]
pub struct Controller {
    pub store: Store,
    pub artifacts: Artifacts,
    pub fleet: fleet::Fleet,
    pub settings: Arc<Settings>,
    pub signer: ManifestSigner,
    /// The CA and server identity (`None` for an `--insecure` controller).
    pub authority: Option<Arc<Authority>>,
    /// Held while a rollout's state is read and changed, so the driver and agents' results
    /// never interleave (across replicas too).
    pub rollout_lock: rollout_lock::RolloutLock,
    /// This controller as one of several on one database (`None` with SQLite: the only one).
    pub replica: Option<Arc<replicas::Replica>>,
    /// The live scheduler of scheduled benchmark runs (started by [`serve`]).
    pub schedules: schedules::Schedules,
    /// The link listener's connections: who has not authenticated yet, and the caps.
    pub admission: Arc<admission::Admission>,
    /// What changed, for the console's open pages (published here, relayed between replicas).
    pub changes: changes::Changes,
    /// With PostgreSQL, where links hand their results to be written in batches (started on
    /// first use).
    result_writer: Arc<std::sync::OnceLock<result_writer::ResultWriter>>,
    /// With PostgreSQL, where links hand install answers to be applied together under one hold
    /// of the rollout lock (started on first use).
    answer_queue: Arc<std::sync::OnceLock<rollout_driver::AnswerQueue>>,
}

/// How the controller behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    pub security: Security,
    pub heartbeat_interval: Duration,
    /// Deadlines and caps for connections that have not authenticated yet.
    pub limits: admission::ConnectionLimits,
    /// Results of runs older than this are reduced to their summary (`None`: kept whole).
    pub retention: Option<Duration>,
    /// A connection is told to go away (HTTP/2 GOAWAY) after this long, and an agent's stream
    /// on it ends up to a fifth later (so that a fleet does not reconnect at once); the agent
    /// reconnects on a new connection: after a replica is added, agents spread over it too
    /// (`None`: connections and streams last as long as they hold).
    pub max_stream_age: Option<Duration>,
}

/// How agents and the CLI prove who they are.
#[derive(Debug, Clone)]
pub enum Security {
    /// TLS 1.3 everywhere: the server certificate names `sans`; agents enroll with one-time
    /// tokens and then hold client certificates valid for `agent_cert_lifetime`; an agent whose
    /// certificate expired less than `recovery_window` ago trades it for a new one by itself.
    Tls {
        sans: Vec<String>,
        agent_cert_lifetime: Duration,
        recovery_window: Duration,
    },
    /// Plaintext, asked for with `--insecure`: every agent presents this shared token in its
    /// hello and its id is what it says.
    Insecure { shared_token: String },
}

impl Settings {
    /// The shared token of an `--insecure` controller.
    pub fn insecure_token(&self) -> Option<&str> {
        match &self.security {
            Security::Insecure { shared_token } => Some(shared_token),
            Security::Tls { .. } => None,
        }
    }
}

/// Why a data directory cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create data directory {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make the data directory {} private (0700, its database 0600): {source}", path.display())]
    Private {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open {}: {source}", path.display())]
    Artifacts {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    ObjectStore(#[from] ArtifactStoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Trust(#[from] TrustError),
}

impl Controller {
    /// Opens (creating if needed) the controller's data directory: `controller.db`,
    /// `artifacts/` and the signing key `controller.key`.
    pub fn open(data_dir: &Path, settings: Settings) -> Result<Controller, OpenError> {
        Controller::open_on(data_dir, None, None, settings)
    }

    /// Opens the controller with its state in `database` (a `postgres://` URL; `None` for
    /// `controller.db` in the data directory, which keeps the keys either way) and its artifacts
    /// in an object store (`None`: the data directory's `artifacts/`, where uploads arrive
    /// either way).
    pub fn open_on(
        data_dir: &Path,
        database: Option<&str>,
        object_store: Option<&ArtifactsConfig>,
        settings: Settings,
    ) -> Result<Controller, OpenError> {
        // A folder made here is private from the start (0700); one found is checked below.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|source| OpenError::DataDir {
                path: data_dir.to_path_buf(),
                source,
            })?;
        let embedded = database.is_none();
        make_private(data_dir, embedded).map_err(|source| OpenError::Private {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let store = match database {
            Some(url) => Store::open_database(url)?,
            None => Store::open(&data_dir.join("controller.db"))?,
        };
        // SQLite made its -wal and -shm files with the database's mode; an older store's are
        // tightened here too.
        make_private(data_dir, embedded).map_err(|source| OpenError::Private {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let artifacts_path = data_dir.join("artifacts");
        let artifacts = match object_store {
            None => {
                Artifacts::in_folder(&artifacts_path).map_err(|source| OpenError::Artifacts {
                    path: artifacts_path,
                    source,
                })?
            }
            Some(config) => {
                let cache_path = data_dir.join("artifact-cache");
                Artifacts::in_object_store(&artifacts_path, config)?
                    .with_cache(&cache_path, config.cache_bytes)
                    .map_err(|source| OpenError::Artifacts {
                        path: cache_path,
                        source,
                    })?
            }
        };
        let signer = ManifestSigner::load_or_create(data_dir)?;
        manifest::sign_unsigned(&store, &signer)?;
        let authority = match &settings.security {
            Security::Tls { sans, .. } => {
                Some(Arc::new(Authority::load_or_create(data_dir, sans)?))
            }
            Security::Insecure { .. } => None,
        };
        let admission = admission::Admission::new("link", settings.limits.clone());
        let changes = changes::Changes::default();
        Ok(Controller {
            admission,
            rollout_lock: rollout_lock::RolloutLock::new(&store)?,
            store,
            artifacts,
            fleet: fleet::Fleet::publishing_to(changes.clone()),
            changes,
            settings: Arc::new(settings),
            signer,
            authority,
            schedules: schedules::Schedules::default(),
            replica: None,
            result_writer: Arc::default(),
            answer_queue: Arc::default(),
        })
    }

    /// The queue of agents' install answers, with PostgreSQL (`None` with SQLite: each is
    /// applied where it arrives). Call it inside the runtime.
    pub(crate) fn answer_queue(&self) -> Option<&rollout_driver::AnswerQueue> {
        (self.store.backend() == crate::store::Backend::Postgres).then(|| {
            self.answer_queue
                .get_or_init(|| rollout_driver::AnswerQueue::start(self.clone()))
        })
    }

    /// The batch writer of agents' results, with PostgreSQL (`None` with SQLite, whose
    /// in-process writes are made where the result arrives). Call it inside the runtime.
    pub(crate) fn result_writer(&self) -> Option<&result_writer::ResultWriter> {
        (self.store.backend() == crate::store::Backend::Postgres).then(|| {
            self.result_writer
                .get_or_init(|| result_writer::ResultWriter::start(self.store.clone()))
        })
    }

    /// This controller as replica `settings.id` of several on its PostgreSQL database.
    pub fn as_replica(
        mut self,
        settings: replicas::ReplicaSettings,
    ) -> Result<Controller, StoreError> {
        self.rollout_lock = rollout_lock::RolloutLock::with_lease(&self.store, settings.lease)?;
        self.replica = Some(replicas::Replica::new(settings));
        Ok(self)
    }

    /// Whether the agent has a stream open, to this controller or to any replica.
    pub fn is_online(&self, agent_id: &str) -> bool {
        match &self.replica {
            None => self.fleet.is_online(agent_id),
            Some(_) => self
                .store
                .agent_held(agent_id, replicas::ALIVE_WITHIN.as_millis() as i64)
                .unwrap_or_else(|e| {
                    tracing::warn!(%agent_id, error = %e, "cannot read which replica holds the agent; asking this one");
                    self.fleet.is_online(agent_id)
                }),
        }
    }

    /// How many agents have a stream open, to this controller or to any live replica.
    pub fn online_count(&self) -> usize {
        match &self.replica {
            None => self.fleet.len(),
            Some(_) => self
                .store
                .held_agent_count(replicas::ALIVE_WITHIN.as_millis() as i64)
                .map_or_else(
                    |e| {
                        tracing::warn!(error = %e, "cannot count the agents the replicas hold; counting this replica's own");
                        self.fleet.len()
                    },
                    |n| n as usize,
                ),
        }
    }

    /// Which of `ids` have a stream open (to any live replica): without replicas, a look at
    /// this controller's fleet for each, not a copy of it.
    pub fn online_among<'a>(
        &self,
        ids: impl Iterator<Item = &'a str>,
    ) -> std::collections::HashSet<String> {
        match &self.replica {
            None => ids
                .filter(|id| self.fleet.is_online(id))
                .map(str::to_string)
                .collect(),
            Some(_) => {
                let online = self.online_ids();
                ids.filter(|id| online.contains(*id))
                    .map(str::to_string)
                    .collect()
            }
        }
    }

    /// The agents with a stream open, to this controller or to any live replica.
    pub fn online_ids(&self) -> std::collections::HashSet<String> {
        match &self.replica {
            None => self.fleet.ids(),
            Some(_) => match self
                .store
                .held_agents(replicas::ALIVE_WITHIN.as_millis() as i64)
            {
                Ok(ids) => ids.into_iter().collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read which agents the replicas hold; counting this replica's own");
                    self.fleet.ids()
                }
            },
        }
    }

    /// Gets a command to an agent whose state the store already holds (an install, a
    /// rollback, jobs): sent on its stream here, or with replicas, the agent woken so that the
    /// replica holding it sends it everything pending. False when the agent is offline (it gets
    /// the command when it connects).
    pub async fn send_command(
        &self,
        agent_id: &str,
        message: edgefleet_proto::v1::ControllerMessage,
    ) -> bool {
        match &self.replica {
            None => self.fleet.send(agent_id, message).await,
            Some(_) => {
                self.wake_agents(&[agent_id.to_string()]);
                self.is_online(agent_id)
            }
        }
    }

    /// [`Controller::send_command`] for many agents at once (a wave's installs): with replicas
    /// one wake-up for all of them. Each agent with whether it is online.
    pub async fn send_commands(
        &self,
        commands: Vec<(String, edgefleet_proto::v1::ControllerMessage)>,
    ) -> Vec<(String, bool)> {
        let mut sent = Vec::with_capacity(commands.len());
        match &self.replica {
            None => {
                for (agent_id, message) in commands {
                    let online = self.fleet.send(&agent_id, message).await;
                    sent.push((agent_id, online));
                }
            }
            Some(_) => {
                let ids: Vec<String> = commands.into_iter().map(|(id, _)| id).collect();
                self.wake_agents(&ids);
                let online = self.online_ids();
                sent.extend(ids.into_iter().map(|id| {
                    let on = online.contains(&id);
                    (id, on)
                }));
            }
        }
        sent
    }

    /// Wakes agents whose pending commands or jobs changed (replicas only; a lone controller
    /// sends them itself).
    pub fn wake_agents(&self, agent_ids: &[String]) {
        if self.replica.is_none() {
            return;
        }
        if let Err(e) = self.store.wake_agents(agent_ids) {
            if !replicas::fenced(self, &e) {
                tracing::warn!(agents = agent_ids.len(), error = %e, "cannot wake agents; they get what is pending when they reconnect");
            }
        }
    }
}

/// The data folder holds agent identities, token hashes, keys and every result: the folder is
/// 0700 and the database's files 0600. A new database file is created 0600 before SQLite opens
/// it (SQLite gives its -wal and -shm files the database's mode); a folder or file found more
/// open (an older controller, a hand-made folder) is tightened, with a warning saying so.
/// With the state in PostgreSQL (`embedded` false) the folder keeps the keys and artifacts,
/// and no database file is made.
fn make_private(data_dir: &Path, embedded: bool) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tighten = |path: &Path, mode: u32| -> std::io::Result<()> {
        let found = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if found & !mode != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            tracing::warn!(
                path = %path.display(),
                was = format!("{found:04o}"),
                now = format!("{mode:04o}"),
                "the controller's data was readable by others; tightened"
            );
        }
        Ok(())
    };
    let database = data_dir.join("controller.db");
    // A folder given by hand that is not the controller's yet (e.g. a home folder) keeps its
    // mode until it holds the store; the store's own files are private either way.
    let empty = std::fs::read_dir(data_dir)?.next().is_none();
    if empty || database.exists() || !embedded {
        tighten(data_dir, 0o700)?;
    }
    if embedded && !database.exists() {
        std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&database)?;
    }
    for name in ["controller.db", "controller.db-wal", "controller.db-shm"] {
        let path = data_dir.join(name);
        if path.exists() {
            tighten(&path, 0o600)?;
        }
    }
    Ok(())
}

/// Serves until `shutdown` completes. Taking a bound listener lets tests bind port 0.
pub async fn serve(
    listener: TcpListener,
    controller: Controller,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // Agent streams never end by themselves: closing them is what lets the server drain.
    let fleet = controller.fleet.clone();
    let stop_driver = tokio_util::sync::CancellationToken::new();
    // Heartbeats are written to the store in batches; the last batch after the server stops.
    let stop_last_seen = tokio_util::sync::CancellationToken::new();
    let last_seen = tokio::spawn(link::record_last_seen(
        controller.clone(),
        stop_last_seen.clone(),
    ));
    // The work that must happen once: here, or on whichever replica holds the lease.
    let replica = match &controller.replica {
        None => {
            lead(controller.clone(), stop_driver.clone(), Duration::ZERO).await;
            None
        }
        Some(_) => {
            // Other replicas' changes reach the consoles open here, and this one's theirs.
            tokio::spawn(changes::relay(controller.clone(), stop_driver.clone()));
            Some(tokio::spawn(replicas::run(
                controller.clone(),
                stop_driver.clone(),
            )))
        }
    };
    let schedules = controller.schedules.clone();
    // The gRPC health service (grpc.health.v1), for load balancers and probes: it needs no
    // client certificate or token, and says NOT_SERVING once shutdown begins.
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AgentLinkServer<LinkService>>()
        .await;
    health_reporter
        .set_serving::<AdminServer<AdminService>>()
        .await;
    let stop_refresh = stop_driver.clone();
    let shutdown = async move {
        shutdown.await;
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        stop_driver.cancel();
        schedules.shutdown().await;
        fleet.close_all();
    };
    let link = AgentLinkServer::new(LinkService::new(controller.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let tls = match (&controller.authority, &controller.settings.security) {
        (
            Some(authority),
            Security::Tls {
                recovery_window, ..
            },
        ) => {
            let (config, identity) = tls::server_config(
                authority.clone(),
                controller.store.clone(),
                *recovery_window,
            )
            .map_err(ServeError::Tls)?;
            // A controller that runs for months makes its next server certificate itself.
            let stop = stop_refresh;
            tokio::spawn(async move {
                let mut twice_a_day = tokio::time::interval(Duration::from_secs(12 * 3600));
                loop {
                    tokio::select! {
                        _ = twice_a_day.tick() => {
                            let identity = identity.clone();
                            let _ = tokio::task::spawn_blocking(move || identity.refresh()).await;
                        }
                        _ = stop.cancelled() => return,
                    }
                }
            });
            Some(config)
        }
        _ => None,
    };
    let admission = controller.admission.clone();
    let max_connection_age = controller.settings.max_stream_age;
    // HTTP/2 pings find connections whose peer is gone; one is not given up on sooner than its
    // agent's link would be for silence. With the 20 s default, a replica killed under 100,000
    // agents on two cores made the others cut some 62,000 live connections whose pings the busy
    // machine answered late, and their reconnects kept it busy: 61,195 agents back after 300 s
    // against 97,220 with this.
    let keepalive_timeout = (controller.settings.heartbeat_interval * link::SILENT_HEARTBEATS)
        .max(Duration::from_secs(20));
    let admin = AdminServer::new(AdminService::new(controller))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(256 << 20);
    let mut builder = tonic::transport::Server::builder();
    if let Some(age) = max_connection_age {
        builder = builder.max_connection_age(age);
    }
    let router = builder
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(keepalive_timeout))
        .add_service(link)
        .add_service(admin)
        .add_service(health);
    // Our own accept loop and TLS handshake (tonic then sees finished TLS streams): handshake
    // and authentication deadlines, caps on unauthenticated connections, a descriptor reserve.
    let served = match tls {
        Some(config) => {
            let incoming = admission::tls_incoming(
                listener,
                admission,
                tokio_rustls::TlsAcceptor::from(config),
            );
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        None => {
            let incoming = admission::plain_incoming(listener, admission);
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    };
    stop_last_seen.cancel();
    let _ = last_seen.await;
    if let Some(replica) = replica {
        let _ = replica.await;
    }
    served.map_err(ServeError::Transport)
}

/// Starts the work that must happen once, until `stop`: the rollout driver, judging the runs
/// that finished while nobody did, retention and the scheduler (fires planned in the last
/// `late_grace` run late rather than count as missed: another leader's, left undone).
pub(crate) async fn lead(
    ctl: Controller,
    stop: tokio_util::sync::CancellationToken,
    late_grace: Duration,
) {
    tokio::spawn(rollout_driver::drive(ctl.clone(), stop.clone()));
    // Runs that finished while the controller was down (or as it stopped) are judged now.
    judge::unjudged_runs(&ctl);
    if let Some(retention) = ctl.settings.retention {
        tokio::spawn(retention::keep(ctl.clone(), retention, stop.clone()));
    }
    // Schedules are registered again from the store (the scheduler keeps no job code); a
    // scheduler that cannot start leaves the rest of the controller serving.
    if let Err(e) = ctl.schedules.start(&ctl, late_grace).await {
        tracing::error!(error = %e, "scheduled runs will not fire: the scheduler did not start");
    }
    if ctl.replica.is_some() {
        // Schedules added or removed through another replica.
        tokio::spawn(schedules::follow_store(ctl, stop));
    }
}

/// Why `serve` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_data_folder_is_private_when_made_and_tightened_when_found_open() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh");
        let settings = || Settings {
            security: Security::Insecure {
                shared_token: "t".into(),
            },
            heartbeat_interval: Duration::from_secs(5),
            limits: admission::ConnectionLimits::default(),
            retention: None,
            max_stream_age: None,
        };
        drop(Controller::open(&fresh, settings()).unwrap());
        assert_eq!(mode(&fresh), 0o700);
        assert_eq!(mode(&fresh.join("controller.db")), 0o600);

        // An older controller's folder and database, readable by everyone.
        let old = dir.path().join("old");
        drop(Controller::open(&old, settings()).unwrap());
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
        let db = old.join("controller.db");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(Controller::open(&old, settings()).unwrap());
        assert_eq!(mode(&old), 0o700);
        assert_eq!(mode(&db), 0o600);
        for name in ["controller.db-wal", "controller.db-shm"] {
            let path = old.join(name);
            if path.exists() {
                assert_eq!(mode(&path), 0o600, "{name}");
            }
        }
    }
}
