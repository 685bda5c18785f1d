//! The PostgreSQL backend's connections: a small pool of tokio-postgres clients whose
//! connections run on the store's own runtime thread, so that the store's calls stay
//! synchronous (as SQLite's are) and can be made from any thread, inside the controller's
//! runtime or not. A call parks its thread until PostgreSQL answers, as a call waiting for
//! SQLite's lock does.
//!
//! A connection found closed (PostgreSQL restarted, a network cut) is dropped and the next call
//! opens a new one; the call that found it closed fails with the reason and changes nothing.
//!
//! TLS: with `sslmode=require` (or libpq's `verify-full` / `verify-ca`) in the URL the
//! connection is encrypted and the server's certificate verified, always, against the system's
//! roots or the CA file `sslrootcert=PATH` names, and its name against the host: stricter than
//! libpq's `require`, as `verify-full` is. Otherwise (`prefer`, the default, or `disable`) the
//! connection is plaintext, for a database on this host or a private network.

use std::future::Future;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use super::db::{DbError, StatementCache};

/// How many connections one controller opens at most.
const MAX_CONNECTIONS: usize = 16;
/// How long a call waits for a free connection before it fails.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long opening a connection may take, unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Drives `future` to completion on the calling thread, parking it while the future waits.
/// The futures given here wait on the store's runtime thread (a connection's IO, a spawned
/// task), never on the calling thread's own runtime, so this is safe inside one.
pub(super) fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// One open connection and its prepared statements.
pub(crate) struct PgConn {
    pub(super) client: tokio_postgres::Client,
    pub(super) statements: StatementCache,
    /// A rollback failed: the connection may still be inside a transaction, so it is closed
    /// rather than given back.
    pub(super) broken: bool,
}

/// Connections to one PostgreSQL database.
pub(crate) struct PgPool {
    config: tokio_postgres::Config,
    /// TLS with the server's certificate verified (`sslmode=require`), or `None`: plaintext.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// What the database is called in messages: user, host, port and name, never the password.
    pub(super) display: String,
    runtime: tokio::runtime::Handle,
    /// Stops the runtime thread when the pool goes.
    _stop: tokio::sync::oneshot::Sender<()>,
    /// How many connections it opens at most.
    max: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
}

struct PoolState {
    idle: Vec<PgConn>,
    open: usize,
}

/// A connection taken from the pool, given back when dropped (or closed, if it broke).
pub(crate) struct Pooled<'a> {
    pool: &'a PgPool,
    conn: Option<PgConn>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = PgConn;
    fn deref(&self) -> &PgConn {
        self.conn.as_ref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut PgConn {
        self.conn.as_mut().expect("held until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let conn = self.conn.take().expect("held until dropped");
        let mut state = self.pool.lock();
        if conn.client.is_closed() || conn.broken {
            state.open -= 1;
        } else {
            state.idle.push(conn);
        }
        self.pool.freed.notify_one();
    }
}

/// Why the database could not be reached.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("the --database URL does not parse: {0}")]
    Url(String),
    #[error("cannot start the database's runtime thread: {0}")]
    Runtime(std::io::Error),
    #[error("sslrootcert {path}: {message}")]
    RootCert { path: String, message: String },
}

impl PgPool {
    /// A pool for `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`, or key=value pairs). No
    /// connection is opened yet.
    pub(crate) fn new(url: &str) -> Result<PgPool, ConnectError> {
        let (url, root_cert) = tls_options(url);
        // The URL is not repeated in the message: it may hold a password.
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| ConnectError::Url(e.to_string()))?;
        let tls = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Require => Some(tls_connector(root_cert.as_deref())?),
            _ => None,
        };
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // PostgreSQL's notices (`relation ... already exists, skipping`) are not news.
        if config.get_options().is_none() {
            config.options("-c client_min_messages=warning");
        }
        if config.get_application_name().is_none() {
            config.application_name("edgefleet");
        }
        let display = describe(&config);
        PgPool::from_config(config, tls, display, MAX_CONNECTIONS)
    }

    fn from_config(
        config: tokio_postgres::Config,
        tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
        display: String,
        max: usize,
    ) -> Result<PgPool, ConnectError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ConnectError::Runtime)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("postgres".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                })
            })
            .map_err(ConnectError::Runtime)?;
        Ok(PgPool {
            config,
            tls,
            display,
            runtime: handle,
            _stop: stop,
            max,
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection, a new one, or the first one freed within [`CHECKOUT_TIMEOUT`].
    pub(crate) fn get(&self) -> Result<Pooled<'_>, DbError> {
        let deadline = std::time::Instant::now() + CHECKOUT_TIMEOUT;
        let mut state = self.lock();
        loop {
            while let Some(conn) = state.idle.pop() {
                if conn.client.is_closed() {
                    state.open -= 1;
                    continue;
                }
                return Ok(Pooled {
                    pool: self,
                    conn: Some(conn),
                });
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return match self.connect() {
                    Ok(conn) => Ok(Pooled {
                        pool: self,
                        conn: Some(conn),
                    }),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(DbError::PoolTimeout(self.max));
            }
            state = self
                .freed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn connect(&self) -> Result<PgConn, DbError> {
        let connecting = self.open_client(|e| {
            tracing::warn!(error = %e, "a PostgreSQL connection ended");
        });
        // Unconstrained: a JoinHandle polled on a runtime worker whose task spent its
        // cooperative budget answers Pending and wakes itself, which here would spin.
        let client = block_on(tokio::task::unconstrained(connecting))
            .map_err(|e| DbError::Join(e.to_string()))??;
        Ok(PgConn {
            client,
            statements: StatementCache::new(),
            broken: false,
        })
    }
}

impl PgPool {
    /// A pool of at most `max` connections to the same database whose sessions start with
    /// these settings (`-c NAME=VALUE`): the leader's fenced connections, the rollout lock's.
    pub(crate) fn with_settings(
        &self,
        settings: &[(&str, &str)],
        max: usize,
    ) -> Result<PgPool, ConnectError> {
        let mut config = self.config.clone();
        let mut options = config.get_options().unwrap_or("").to_string();
        for (name, value) in settings {
            options.push_str(&format!(" -c {name}={value}"));
        }
        config.options(options.trim());
        PgPool::from_config(config, self.tls.clone(), self.display.clone(), max)
    }

    /// A client of its own, outside the pool, whose connection runs on the store's runtime
    /// (the rollout lock's session; it is closed when dropped).
    pub(crate) async fn own_client(&self) -> Result<tokio_postgres::Client, DbError> {
        let connecting = self.open_client(|e| {
            tracing::debug!(error = %e, "a PostgreSQL session of its own ended");
        });
        Ok(connecting
            .await
            .map_err(|e| DbError::Join(e.to_string()))??)
    }

    /// Opens a connection on the store's runtime, which also drives it until it ends (`ended`
    /// hears why).
    fn open_client(
        &self,
        ended: fn(tokio_postgres::Error),
    ) -> tokio::task::JoinHandle<Result<tokio_postgres::Client, tokio_postgres::Error>> {
        let config = self.config.clone();
        let tls = self.tls.clone();
        self.runtime.spawn(async move {
            let client = match tls {
                Some(tls) => {
                    let (client, connection) = config.connect(tls).await?;
                    tokio::spawn(async move { connection.await.unwrap_or_else(ended) });
                    client
                }
                None => {
                    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                    tokio::spawn(async move { connection.await.unwrap_or_else(ended) });
                    client
                }
            };
            Ok(client)
        })
    }

    /// Listens on `channel` from a connection of its own, for as long as the receiver lives:
    /// each notification's payload, and [`Heard::Listening`] each time the listening (re)starts
    /// (anything announced while it was not listening is lost: look at the store again).
    pub(crate) fn listen(&self, channel: &str) -> tokio::sync::mpsc::UnboundedReceiver<Heard> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let config = self.config.clone();
        let tls = self.tls.clone();
        let channel = channel.to_string();
        self.runtime.spawn(async move {
            let mut pause = Duration::from_millis(250);
            while !tx.is_closed() {
                let ended = match &tls {
                    Some(tls) => listen_once(&config, tls.clone(), &channel, &tx).await,
                    None => listen_once(&config, tokio_postgres::NoTls, &channel, &tx).await,
                };
                if let Err(e) = ended {
                    tracing::warn!(%channel, error = %e, "listening for notifications stopped; listening again");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        });
        rx
    }
}

/// What a listening connection hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// Listening (again): notifications sent before now were not heard.
    Listening,
    Payload(String),
}

/// One listening connection, until it ends or nobody reads what it hears.
async fn listen_once<T>(
    config: &tokio_postgres::Config,
    tls: T,
    channel: &str,
    tx: &tokio::sync::mpsc::UnboundedSender<Heard>,
) -> Result<(), tokio_postgres::Error>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = config.connect(tls).await?;
    let (heard_tx, mut heard_rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    if heard_tx.send(n.payload().to_string()).is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    // A channel name is one of ours, never input; quoted all the same.
    client
        .batch_execute(&format!("LISTEN \"{}\"", channel.replace('"', "")))
        .await?;
    if tx.send(Heard::Listening).is_err() {
        return Ok(());
    }
    while let Some(payload) = heard_rx.recv().await {
        if tx.send(Heard::Payload(payload)).is_err() {
            return Ok(());
        }
    }
    drop(client);
    driver.await.unwrap_or(Ok(()))
}

/// Takes libpq's TLS options out of a `postgres://` URL that tokio-postgres does not read:
/// `sslrootcert=PATH` (returned) and `sslmode=verify-full` / `verify-ca` (read as `require`,
/// which here always verifies).
pub(super) fn tls_options(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sslrootcert", path)) => root_cert = Some(percent_decode(path)),
            Some(("sslmode", "verify-full" | "verify-ca")) => kept.push("sslmode=require"),
            _ => kept.push(pair),
        }
    }
    if kept.is_empty() {
        (base.to_string(), root_cert)
    } else {
        (format!("{base}?{}", kept.join("&")), root_cert)
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// TLS that verifies the server: against the CA file given, else the system's roots.
fn tls_connector(
    root_cert: Option<&str>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, ConnectError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let path = root_cert.unwrap_or(SYSTEM_ROOTS);
    let bad = |message: String| ConnectError::RootCert {
        path: path.to_string(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        // The system's bundle may hold a certificate rustls cannot use; one given is needed.
        if let Err(e) = roots.add(cert) {
            if root_cert.is_some() {
                return Err(bad(e.to_string()));
            }
        }
    }
    if roots.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Debian's bundle of the system's trusted roots (`ca-certificates`).
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `user@host:port/db` of a configuration, for messages (never its password).
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}
