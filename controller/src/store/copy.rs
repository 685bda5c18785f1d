//! Copying a whole SQLite store into PostgreSQL (`edgefleet store migrate`): every table, in
//! foreign-key order, in batches keyed by SQLite's rowid, each batch one PostgreSQL transaction
//! whose rows skip what the target already holds. A second copy (or one after an interrupted
//! first) adds only what is missing. Each table is then read back from both sides and compared
//! by content (the sum of a hash of every row, with the row count), so a target whose rows clash
//! with the source's (an id both used for different rows) reads as different, never as copied.

use sha2::{Digest, Sha256};

use super::db::{params, Param, Value};
use super::{Backend, Store, StoreError};

/// Every table of the store, parents before the tables that refer to them.
pub const TABLES: &[&str] = &[
    "agents",
    "artifacts",
    "models",
    "model_files",
    "bench_runs",
    "bench_jobs",
    "results",
    "agent_models",
    "rollouts",
    "rollout_targets",
    "rollout_gates",
    "events",
    "enrollment_tokens",
    "admin_tokens",
    "agent_artifacts",
    "baselines",
    "regressions",
    "regression_checks",
    "schedules",
    "schedule_fires",
    "schedule_fire_claims",
];

/// Tables whose `id` PostgreSQL numbers itself: after a copy its sequence continues after the
/// largest id copied.
const NUMBERED: &[&str] = &["events", "regressions", "schedule_fires"];

/// Rows read, and written in one transaction, at a time.
const BATCH: i64 = 1000;
/// Rows in one INSERT (the widest table has 15 columns: 1,500 parameters, far below
/// PostgreSQL's 65,535).
const ROWS_PER_INSERT: usize = 100;

/// What a copy found and did for one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCopy {
    pub table: &'static str,
    /// Rows in the source.
    pub source_rows: u64,
    /// Rows in the target once the copy is done.
    pub target_rows: u64,
    /// Rows this copy added (0 on a second run).
    pub copied: u64,
    /// Both sides hold the same rows (the same multiset of rows, compared by hash).
    pub same_rows: bool,
}

impl TableCopy {
    /// Both sides hold the same rows.
    pub fn matches(&self) -> bool {
        self.source_rows == self.target_rows && self.same_rows
    }
}

/// The rows of a table as an order-free fingerprint: the wrapping sum of the first 8 bytes of
/// each row's SHA-256 over a tagged encoding of its values.
#[derive(Default, PartialEq, Eq)]
struct Fingerprint {
    rows: u64,
    sum: u64,
}

impl Fingerprint {
    fn add(&mut self, values: &[Value]) {
        let mut hash = Sha256::new();
        for value in values {
            match value {
                Value::Null => hash.update([0u8]),
                Value::Int(i) => {
                    hash.update([1u8]);
                    hash.update(i.to_le_bytes());
                }
                Value::Real(f) => {
                    hash.update([2u8]);
                    hash.update(f.to_bits().to_le_bytes());
                }
                Value::Text(t) => {
                    hash.update([3u8]);
                    hash.update((t.len() as u64).to_le_bytes());
                    hash.update(t.as_bytes());
                }
                Value::Blob(b) => {
                    hash.update([4u8]);
                    hash.update((b.len() as u64).to_le_bytes());
                    hash.update(b);
                }
            }
        }
        let digest = hash.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        self.rows += 1;
        self.sum = self.sum.wrapping_add(u64::from_le_bytes(first));
    }
}

impl Store {
    /// Copies every row of this (SQLite) store into `target` (PostgreSQL), table by table;
    /// `progress` hears each table when it is done.
    pub fn copy_into(
        &self,
        target: &Store,
        mut progress: impl FnMut(&TableCopy),
    ) -> Result<Vec<TableCopy>, StoreError> {
        if self.backend() != Backend::Sqlite || target.backend() != Backend::Postgres {
            return Err(StoreError::Url(
                "a store is copied from SQLite into PostgreSQL".to_string(),
            ));
        }
        // A table this list does not know (a migration added it) must not be left behind.
        let tables: Vec<String> = self.conn()?.query_map(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            params![],
            |r| r.get(0),
        )?;
        if let Some(unknown) = tables.iter().find(|t| !TABLES.contains(&t.as_str())) {
            return Err(StoreError::Url(format!(
                "the SQLite store has a table `{unknown}` this edgefleet does not know how to copy; \
                 use the edgefleet that made it"
            )));
        }
        let mut copies = Vec::with_capacity(TABLES.len());
        for table in TABLES {
            let copy = self.copy_table(target, table)?;
            progress(&copy);
            copies.push(copy);
        }
        let mut to = target.conn()?;
        for table in NUMBERED {
            to.query_row(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'),
                                   COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
                ),
                params![],
                |_| Ok(()),
            )?;
        }
        Ok(copies)
    }

    fn copy_table(&self, target: &Store, table: &'static str) -> Result<TableCopy, StoreError> {
        let columns: Vec<String> = self.conn()?.query_map(
            &format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"),
            params![],
            |r| r.get(0),
        )?;
        let list = columns.join(", ");
        let select = format!(
            "SELECT rowid, {list} FROM {table} WHERE rowid > ?1 ORDER BY rowid LIMIT {BATCH}"
        );
        // `rows` rows in one statement: one round trip for many.
        let insert = |rows: usize| {
            let tuples: Vec<String> = (0..rows)
                .map(|row| {
                    let numbers: Vec<String> = (1..=columns.len())
                        .map(|column| format!("?{}", row * columns.len() + column))
                        .collect();
                    format!("({})", numbers.join(", "))
                })
                .collect();
            format!(
                "INSERT INTO {table} ({list}) VALUES {} ON CONFLICT DO NOTHING",
                tuples.join(", ")
            )
        };
        let count = format!("SELECT COUNT(*) FROM {table}");
        let source_rows: i64 = self.conn()?.query_row(&count, params![], |r| r.get(0))?;
        let mut copied = 0u64;
        let mut source = Fingerprint::default();
        let mut after = i64::MIN;
        loop {
            let rows: Vec<(i64, Vec<Value>)> =
                self.conn()?.query_map(&select, params![after], |r| {
                    let rowid = r.get(0)?;
                    let values = (1..=columns.len())
                        .map(|i| r.get::<Value>(i))
                        .collect::<Result<_, _>>()?;
                    Ok((rowid, values))
                })?;
            let Some((last, _)) = rows.last() else {
                break;
            };
            after = *last;
            for (_, values) in &rows {
                source.add(values);
            }
            let mut to = target.conn()?;
            let mut tx = to.transaction()?;
            for chunk in rows.chunks(ROWS_PER_INSERT) {
                let bound: Vec<&dyn Param> = chunk
                    .iter()
                    .flat_map(|(_, values)| values.iter().map(|v| v as &dyn Param))
                    .collect();
                copied += tx.execute(&insert(chunk.len()), &bound)? as u64;
            }
            tx.commit()?;
        }
        let target_rows: i64 = target.conn()?.query_row(&count, params![], |r| r.get(0))?;
        let mut copy = Fingerprint::default();
        for values in
            target
                .conn()?
                .query_map(&format!("SELECT {list} FROM {table}"), params![], |r| {
                    (0..columns.len())
                        .map(|i| r.get::<Value>(i))
                        .collect::<Result<Vec<_>, _>>()
                })?
        {
            copy.add(&values);
        }
        Ok(TableCopy {
            table,
            source_rows: source_rows.max(0) as u64,
            target_rows: target_rows.max(0) as u64,
            copied,
            same_rows: source == copy,
        })
    }
}
