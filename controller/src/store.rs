//! The controller's SQLite database: the only module that uses rusqlite. WAL mode, a busy
//! timeout, and numbered schema migrations recorded in `PRAGMA user_version`.
//!
//! One file per family of tables: [`agents`] (agents and what they have installed), [`models`]
//! (the registry and artifacts), [`runs`] (benchmark runs, jobs and results), [`rollouts`]
//! (rollouts, targets, gates, events), [`schedules`] (scheduled runs and their fires),
//! [`regressions`] (baselines, regressions, judged runs), [`trust`] (tokens, revocations, who
//! may fetch what). Every stored blob (protobuf, JSON) and every state column is decoded here; a
//! row that does not decode is a [`StoreError::Corrupt`] naming its table and key, never a
//! default value.

mod agents;
mod migrations;
mod models;
mod regressions;
mod rollouts;
mod runs;
mod schedules;
mod trust;

pub use agents::{AgentModelRow, AgentRow};
pub use models::{ModelFile, ModelRow, ModelSignature, TensorShape};
pub use regressions::{BaselineRow, RegressionKind, RegressionRow};
pub use rollouts::{EventRow, GateRow, RolloutRow, TargetRow};
pub use runs::{JobRow, JobState, Recorded, ResultFilter, ResultRow, RunRow};
pub use schedules::{FireKind, FireOutcome, FireRow, ScheduleRow, StoredInput};
pub use trust::{AdminTokenRow, AgentTrust, EnrollRefusal, Enrolled};

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
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
}

impl StoreError {
    fn corrupt(table: &'static str, key: impl Into<String>, detail: impl ToString) -> StoreError {
        StoreError::Corrupt {
            table,
            key: key.into(),
            detail: detail.to_string(),
        }
    }
}

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
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(open_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        Store::init(conn).map_err(open_error)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> Result<Store, StoreError> {
        Ok(Store::init(Connection::open_in_memory()?)?)
    }

    fn init(mut conn: Connection) -> Result<Store, rusqlite::Error> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        migrations::apply(&mut conn)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs raw SQL, for tests that damage rows on purpose (CHECK constraints off, as a file
    /// edited by hand or damaged on disk would not have honoured them).
    #[cfg(test)]
    pub(crate) fn execute_for_test(&self, sql: &str) {
        let conn = self.conn();
        conn.pragma_update(None, "ignore_check_constraints", true)
            .expect("pragma");
        conn.execute_batch(sql).expect("test SQL runs");
        conn.pragma_update(None, "ignore_check_constraints", false)
            .expect("pragma");
    }
}

/// Rows of `table` counted by their `state` column (a table name from this module, never input).
fn count_by_state(
    conn: &Connection,
    table: &'static str,
) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT state, COUNT(*) FROM {table} GROUP BY state"
    ))?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut counts = std::collections::BTreeMap::new();
    for row in rows {
        let (state, n) = row?;
        counts.insert(state, n.max(0) as u64);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests;
