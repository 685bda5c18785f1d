//! The controller's database, SQLite or PostgreSQL: the only module that talks to either.
//! SQLite (the default, a file in the data folder) runs in WAL mode with a busy timeout and
//! numbered migrations recorded in `PRAGMA user_version`; PostgreSQL (`serve --database
//! postgres://...`) has its own migration history ([`migrations_postgres`]) and a small pool
//! of connections ([`postgres`]). Every operation below runs on both through [`db::Conn`]; the
//! rest of the controller never knows which one it talks to.
//!
//! One file per family of tables: [`agents`] (agents and what they have installed), [`models`]
//! (the registry and artifacts), [`runs`] (benchmark runs, jobs and results), [`rollouts`]
//! (rollouts, targets, gates, events), [`schedules`] (scheduled runs and their fires),
//! [`regressions`] (baselines, regressions, judged runs), [`trust`] (tokens, revocations, who
//! may fetch what). Every stored blob (protobuf, JSON) and every state column is decoded here; a
//! row that does not decode is a [`StoreError::Corrupt`] naming its table and key, never a
//! default value.

mod agents;
mod copy;
mod db;
mod migrations;
mod migrations_postgres;
mod models;
mod postgres;
mod regressions;
mod replicas;
mod retention;
mod rollouts;
mod runs;
mod schedules;
mod trust;

pub use agents::{AgentModelRow, AgentRow};
pub use copy::{TableCopy, TABLES};
pub use models::{ModelFile, ModelRow, ModelSignature, TensorShape};
pub use postgres::Heard;
pub(crate) use postgres::PgPool as SessionPool;
pub use regressions::{BaselineRow, RegressionKind, RegressionRow};
pub use replicas::{parse_wakes, LeaseRow, ReplicaRow, Taken, WAKE_CHANNEL};
pub use retention::{Summarized, TableStats};
pub use rollouts::{EventRow, GateRow, RolloutRow, TargetRow};
pub use runs::{FinishedJob, JobRow, JobState, Recorded, ResultFilter, ResultRow, RunRow};
pub use schedules::{FireKind, FireOutcome, FireRow, ScheduleRow, StoredInput};
pub use trust::{AdminTokenRow, AgentTrust, EnrollRefusal, Enrolled};

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use db::Conn;
pub use db::{Backend, DbError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open { path: String, source: DbError },
    /// PostgreSQL did not answer at start (the controller exits 69, EX_UNAVAILABLE).
    #[error("cannot reach the database {database}: {source}")]
    Unreachable { database: String, source: DbError },
    /// A URL that is not a database the controller can use.
    #[error("{0}")]
    Url(String),
    /// The database was migrated by a newer edgefleet (the controller exits 64, EX_USAGE).
    #[error("the database has schema version {found}, newer than this controller knows ({known}); upgrade edgefleet")]
    NewerSchema { found: usize, known: usize },
    #[error("database: {0}")]
    Sql(#[from] DbError),
    #[error("model {0} is already registered; pick another version")]
    ModelExists(String),
    #[error("an admin token named {0} exists already; revoke it or pick another name")]
    AdminTokenExists(String),
    #[error("a schedule named {0} exists already; remove it first or pick another name")]
    ScheduleExists(String),
    /// A stored row that does not decode: nothing was read from it, and nothing is written on
    /// its account.
    #[error("corrupt row in table {table} ({key}): {detail}")]
    Corrupt {
        table: &'static str,
        key: String,
        detail: String,
    },
    /// A write made with others in one transaction that failed (why, and whether asking again
    /// may work): nothing of it was stored.
    #[error("{why}")]
    Batch { why: String, transient: bool },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Sql(DbError::Sqlite(e))
    }
}

impl StoreError {
    /// Whether the database may answer if asked again: it was out of reach (a connection
    /// closed or refused, every connection busy, SQLite's lock held too long), as opposed to a
    /// statement it refused or a row that does not decode.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Sql(DbError::Postgres(e)) => match e.code() {
                // No answer from the server at all: closed, refused, timed out.
                None => true,
                // Connection exceptions, too many connections or out of resources, a server
                // shutting down or starting up ("the database system is starting up"), and a
                // transaction PostgreSQL gave up to resolve a conflict.
                Some(code) => {
                    let code = code.code();
                    code.starts_with("08")
                        || code.starts_with("53")
                        || code.starts_with("57P")
                        || code == "40001"
                        || code == "40P01"
                }
            },
            StoreError::Sql(DbError::PoolTimeout(_) | DbError::Join(_)) => true,
            StoreError::Batch { transient, .. } => *transient,
            StoreError::Sql(DbError::Sqlite(e)) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }

    /// Whether the database refused a write of the leader's loops because their lease is over
    /// (another replica leads now, or nobody renewed it in time): the loops must stop.
    pub fn is_fenced(&self) -> bool {
        matches!(self, StoreError::Sql(DbError::Postgres(e))
            if e.code().is_some_and(|c| c.code() == FENCED))
    }

    fn corrupt(table: &'static str, key: impl Into<String>, detail: impl ToString) -> StoreError {
        StoreError::Corrupt {
            table,
            key: key.into(),
            detail: detail.to_string(),
        }
    }
}

/// The SQLSTATE of a write refused by the fence (`edgefleet_fence()` in the migrations).
const FENCED: &str = "EF001";

/// Decodes a stored protobuf blob, or says which row is corrupt.
fn decode_proto<M: prost::Message + Default>(
    blob: &[u8],
    table: &'static str,
    key: impl Into<String>,
) -> Result<M, StoreError> {
    M::decode(blob).map_err(|e| StoreError::corrupt(table, key, e))
}

/// Decodes a stored JSON column, or says which row is corrupt.
fn decode_json<T: serde::de::DeserializeOwned>(
    text: &str,
    table: &'static str,
    key: impl Into<String>,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::corrupt(table, key, e))
}

/// Parses a stored state column into its enum, or says which row is corrupt.
fn decode_state<S: std::str::FromStr>(
    text: &str,
    table: &'static str,
    key: impl Into<String>,
) -> Result<S, StoreError> {
    text.parse()
        .map_err(|_| StoreError::corrupt(table, key, format!("unknown state `{text}`")))
}

/// A handle to the database, cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Database>,
}

enum Database {
    Sqlite(Mutex<Connection>),
    Postgres(Box<postgres::PgPool>),
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and brings its schema up to
    /// date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_error = |source: rusqlite::Error| StoreError::Open {
            path: path.display().to_string(),
            source: source.into(),
        };
        let conn = Connection::open(path).map_err(open_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        Store::init(conn).map_err(|e| match e {
            StoreError::Sql(DbError::Sqlite(source)) => open_error(source),
            other => other,
        })
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`)
    /// and brings its schema up to date.
    pub fn connect(url: &str) -> Result<Store, StoreError> {
        let pool = postgres::PgPool::new(url).map_err(|e| StoreError::Url(e.to_string()))?;
        let database = pool.display.clone();
        let store = Store {
            backend: Arc::new(Database::Postgres(Box::new(pool))),
        };
        let mut conn = match store.conn() {
            Ok(conn) => conn,
            Err(StoreError::Sql(source)) => {
                return Err(StoreError::Unreachable { database, source })
            }
            Err(other) => return Err(other),
        };
        migrations_postgres::apply(&mut conn)?;
        drop(conn);
        Ok(store)
    }

    /// Opens the database a `--database` value names: a `postgres://` (or `postgresql://`)
    /// URL; anything else is refused.
    pub fn open_database(database: &str) -> Result<Store, StoreError> {
        if Backend::of_url(database) == Backend::Postgres {
            Store::connect(database)
        } else {
            // Not a file path either: a typo (`postgress://`) must not make an SQLite file
            // somewhere; the embedded database lives in the data folder.
            Err(StoreError::Url(
                "--database takes a postgres:// (or postgresql://) URL; without it the state is in \
                 SQLite in --data-dir"
                    .to_string(),
            ))
        }
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> Result<Store, StoreError> {
        Store::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Store, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.set_prepared_statement_cache_capacity(128);
        migrations::apply(&mut conn)?;
        Ok(Store {
            backend: Arc::new(Database::Sqlite(Mutex::new(conn))),
        })
    }

    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        match &*self.backend {
            Database::Sqlite(_) => Backend::Sqlite,
            Database::Postgres(_) => Backend::Postgres,
        }
    }

    /// The same database for the leader's loops of term `epoch` held by `holder`: each of its
    /// writes is refused (`StoreError::is_fenced`) once that term is over, checked by the
    /// database in the write's own transaction. A session of it left idle inside a transaction
    /// (its process stopped, a frozen VM) is ended by PostgreSQL after `stall`, releasing
    /// what it held. SQLite has one controller, always the leader: the store itself.
    pub fn fenced(
        &self,
        holder: &str,
        epoch: i64,
        stall: std::time::Duration,
    ) -> Result<Store, StoreError> {
        match &*self.backend {
            Database::Sqlite(_) => Ok(self.clone()),
            Database::Postgres(pool) => {
                let fence = format!("{holder}/{epoch}");
                let stall = format!("{}", stall.as_millis());
                let pool = pool
                    .with_settings(
                        &[
                            ("edgefleet.fence", &fence),
                            ("idle_in_transaction_session_timeout", &stall),
                        ],
                        4,
                    )
                    .map_err(|e| StoreError::Url(e.to_string()))?;
                Ok(Store {
                    backend: Arc::new(Database::Postgres(Box::new(pool))),
                })
            }
        }
    }

    /// Notifications on `channel` (PostgreSQL only), from a connection of its own that listens
    /// again by itself after a cut.
    pub fn listen(&self, channel: &str) -> Option<tokio::sync::mpsc::UnboundedReceiver<Heard>> {
        match &*self.backend {
            Database::Sqlite(_) => None,
            Database::Postgres(pool) => Some(pool.listen(channel)),
        }
    }

    /// The same database through `max` connections of its own (PostgreSQL; SQLite's one
    /// connection otherwise): for calls that must not queue behind the others for a pooled
    /// connection (a replica's lease renewal, when a run's results keep every one busy).
    pub fn with_own_connections(&self, max: usize) -> Result<Store, StoreError> {
        match &*self.backend {
            Database::Sqlite(_) => Ok(self.clone()),
            Database::Postgres(pool) => {
                let pool = pool
                    .with_settings(&[], max)
                    .map_err(|e| StoreError::Url(e.to_string()))?;
                Ok(Store {
                    backend: Arc::new(Database::Postgres(Box::new(pool))),
                })
            }
        }
    }

    /// A PostgreSQL session of its own whose idle transactions end after `stall` (the rollout
    /// lock's); `None` on SQLite.
    pub(crate) fn session_pool(
        &self,
        stall: std::time::Duration,
    ) -> Result<Option<postgres::PgPool>, StoreError> {
        match &*self.backend {
            Database::Sqlite(_) => Ok(None),
            Database::Postgres(pool) => {
                let stall = format!("{}", stall.as_millis());
                pool.with_settings(&[("idle_in_transaction_session_timeout", &stall)], 1)
                    .map(Some)
                    .map_err(|e| StoreError::Url(e.to_string()))
            }
        }
    }

    /// A connection for one operation: SQLite's, under its lock, or one from the PostgreSQL
    /// pool (which fails if PostgreSQL cannot be reached).
    pub(crate) fn conn(&self) -> Result<Conn<'_>, StoreError> {
        match &*self.backend {
            // A panic while holding the lock cannot leave SQLite inconsistent (transactions
            // roll back), so a poisoned lock is still usable.
            Database::Sqlite(conn) => {
                Ok(Conn::Sqlite(conn.lock().unwrap_or_else(|p| p.into_inner())))
            }
            Database::Postgres(pool) => Ok(Conn::Postgres(pool.get()?)),
        }
    }

    /// Runs raw SQL, for tests that damage rows on purpose (CHECK constraints off, as a file
    /// edited by hand or damaged on disk would not have honoured them).
    #[cfg(test)]
    pub(crate) fn execute_for_test(&self, sql: &str, params: &[&dyn db::Param]) {
        let mut conn = self.conn().expect("a connection");
        match self.backend() {
            Backend::Sqlite => conn
                .execute_batch("PRAGMA ignore_check_constraints = ON")
                .expect("pragma"),
            // PostgreSQL cannot ignore them: this test's database drops its own.
            Backend::Postgres => conn
                .execute_batch(
                    "DO $$ DECLARE c record; BEGIN
                       FOR c IN SELECT conrelid::regclass AS t, conname FROM pg_constraint
                                WHERE contype = 'c' AND connamespace = 'public'::regnamespace LOOP
                         EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', c.t, c.conname);
                       END LOOP;
                     END $$",
                )
                .expect("dropping CHECK constraints"),
        }
        conn.execute(sql, params).expect("test SQL runs");
        if self.backend() == Backend::Sqlite {
            conn.execute_batch("PRAGMA ignore_check_constraints = OFF")
                .expect("pragma");
        }
    }
}

/// Rows of `table` counted by their `state` column (a table name from this module, never input).
fn count_by_state(
    conn: &mut Conn<'_>,
    table: &'static str,
) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
    let rows = conn.query_map(
        &format!("SELECT state, COUNT(*) FROM {table} GROUP BY state"),
        db::params![],
        |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)),
    )?;
    Ok(rows
        .into_iter()
        .map(|(state, n)| (state, n.max(0) as u64))
        .collect())
}

#[cfg(test)]
mod tests;
