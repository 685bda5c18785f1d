//! The PostgreSQL backend's connections: a small pool of tokio-postgres clients whose
//! connections run on the store's own runtime thread, so that the store's calls stay
//! synchronous (as SQLite's are) and can be made from any thread, inside the controller's
//! runtime or not. A call parks its thread until PostgreSQL answers, as a call waiting for
//! SQLite's lock does.
//!
//! A connection found closed (PostgreSQL restarted, a network cut) is dropped and the next call
//! opens a new one; the call that found it closed fails with the reason and changes nothing.

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
    /// What the database is called in messages: user, host, port and name, never the password.
    pub(super) display: String,
    runtime: tokio::runtime::Handle,
    /// Stops the runtime thread when the pool goes.
    _stop: tokio::sync::oneshot::Sender<()>,
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
}

impl PgPool {
    /// A pool for `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`, or key=value pairs). No
    /// connection is opened yet.
    pub(crate) fn new(url: &str) -> Result<PgPool, ConnectError> {
        // The URL is not repeated in the message: it may hold a password.
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| ConnectError::Url(e.to_string()))?;
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
            display,
            runtime: handle,
            _stop: stop,
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
            if state.open < MAX_CONNECTIONS {
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
                return Err(DbError::PoolTimeout(MAX_CONNECTIONS));
            }
            state = self
                .freed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn connect(&self) -> Result<PgConn, DbError> {
        let config = self.config.clone();
        let connecting = self.runtime.spawn(async move {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "a PostgreSQL connection ended");
                }
            });
            Ok::<_, tokio_postgres::Error>(client)
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
