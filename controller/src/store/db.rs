//! One connection to either backend, SQLite or PostgreSQL, with the few calls the store makes:
//! execute, query rows, query one row, transactions. SQL is passed through as written (numbered
//! `?1` parameters become PostgreSQL's `$1`), so each statement can use its backend's own
//! features (where the dialects differ, an operation asks `Store::backend` which one it runs
//! on; none needs to yet: upserts, `RETURNING` and `ON CONFLICT DO NOTHING` read the same).
//!
//! Rows are read by column index into [`Column`] types that both backends can produce (a
//! PostgreSQL `BIGINT` and an SQLite `INTEGER` are both `i64`, a `BYTEA` and a `BLOB` both
//! `Vec<u8>`). Nothing here knows a table: the store's families of tables above it do.

use std::collections::HashMap;
use std::sync::MutexGuard;

use tokio_postgres::types::{FromSql, ToSql, Type};

use super::postgres::{block_on, PgConn};

/// Which database a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a `--database` value names: PostgreSQL for a `postgres://` or
    /// `postgresql://` URL, SQLite (a file) otherwise.
    pub fn of_url(database: &str) -> Backend {
        if database.starts_with("postgres://") || database.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// A table `ids` of one column `id`: the texts of the JSON array bound as parameter `?N`
    /// (`n`), for `FROM {ids} JOIN t ON t.key = ids.id`: a list of any length in one statement
    /// text, read once and joined to the table's index. (Not `IN (subquery)`: PostgreSQL may
    /// evaluate that once per row of the table, parsing the list each time.)
    pub(crate) fn json_ids(self, n: usize) -> String {
        match self {
            Backend::Sqlite => format!("(SELECT value AS id FROM json_each(?{n})) AS ids"),
            Backend::Postgres => {
                format!("(SELECT json_array_elements_text(?{n}::json) AS id) AS ids")
            }
        }
    }
}

/// A list of ids as the JSON array [`Backend::json_ids`] reads from a parameter.
pub(crate) fn json_list(ids: &[String]) -> String {
    serde_json::to_string(ids).expect("strings serialize")
}

/// Rows a multi-row INSERT holds at most; fewer are inserted in powers of two, so that a few
/// statement texts (each prepared once per connection) cover any count.
const ROWS_PER_INSERT: usize = 256;

/// How many rows each statement of [`Conn::insert_rows`] holds, for `n` rows.
fn insert_sizes(mut n: usize) -> Vec<usize> {
    let mut sizes = vec![ROWS_PER_INSERT; n / ROWS_PER_INSERT];
    n %= ROWS_PER_INSERT;
    let mut size = ROWS_PER_INSERT / 2;
    while n > 0 {
        if n >= size {
            sizes.push(size);
            n -= size;
        }
        size /= 2;
    }
    sizes
}

/// A database call that failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", postgres_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// A query that must return a row returned none.
    #[error("no row where one was expected")]
    NoRows,
    /// Every pooled connection stayed busy past the checkout timeout.
    #[error("all {0} database connections stayed busy for 30 s")]
    PoolTimeout(usize),
    /// The task opening a connection ended without an answer (the store is shutting down).
    #[error("opening a database connection: {0}")]
    Join(String),
    /// A column whose value does not fit the type it is read as.
    #[error("column {index}: {detail}")]
    Column { index: usize, detail: String },
}

/// PostgreSQL's own message (`ERROR: ...`, with its detail) rather than the driver's
/// one-word summary.
fn postgres_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {} ({detail})", db.severity(), db.message()),
            None => format!("{}: {}", db.severity(), db.message()),
        },
        None if e.is_closed() => "the connection to PostgreSQL was closed".to_string(),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

pub(crate) type Result<T, E = DbError> = std::result::Result<T, E>;

/// A value bound to a statement: anything both drivers can bind, with the PostgreSQL type it
/// is sent as (statements are prepared with their parameters' types, so `?1 IS NULL OR c = ?1`
/// needs no casts).
pub(crate) trait Param {
    fn sqlite(&self) -> &dyn rusqlite::ToSql;
    fn postgres(&self) -> &(dyn ToSql + Sync);
    /// `None`: PostgreSQL infers it from the statement (a [`Value`] of any column).
    fn postgres_type(&self) -> Option<Type>;
}

impl<T: rusqlite::ToSql + ToSql + Sync + PostgresType> Param for T {
    fn sqlite(&self) -> &dyn rusqlite::ToSql {
        self
    }
    fn postgres(&self) -> &(dyn ToSql + Sync) {
        self
    }
    fn postgres_type(&self) -> Option<Type> {
        T::postgres_type()
    }
}

/// The PostgreSQL type a Rust value is bound as. Unsigned integers have none on purpose
/// (PostgreSQL's `BIGINT` is signed): they are converted to `i64` where they are bound.
pub(crate) trait PostgresType {
    fn postgres_type() -> Option<Type>;
}

macro_rules! postgres_type {
    ($($t:ty => $pg:ident),* $(,)?) => {$(
        impl PostgresType for $t {
            fn postgres_type() -> Option<Type> {
                Some(Type::$pg)
            }
        }
    )*};
}
postgres_type!(i64 => INT8, f64 => FLOAT8, bool => BOOL, String => TEXT, str => TEXT, Vec<u8> => BYTEA, [u8] => BYTEA);

impl<T: PostgresType + ?Sized> PostgresType for &T {
    fn postgres_type() -> Option<Type> {
        T::postgres_type()
    }
}

impl<T: PostgresType> PostgresType for Option<T> {
    fn postgres_type() -> Option<Type> {
        T::postgres_type()
    }
}

/// The parameters of one statement, in order (`?1` is the first).
macro_rules! params {
    () => { &[] as &[&dyn $crate::store::db::Param] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::store::db::Param),+] as &[&dyn $crate::store::db::Param] };
}
pub(crate) use params;

/// A column type both backends produce.
pub(crate) trait Column: Sized {
    fn from_sqlite(value: rusqlite::types::ValueRef<'_>) -> std::result::Result<Self, String>;
    fn from_postgres(row: &tokio_postgres::Row, index: usize) -> std::result::Result<Self, String>;
}

/// Accepts any PostgreSQL value, to ask whether it is NULL.
struct AnyValue;

impl<'a> FromSql<'a> for AnyValue {
    fn from_sql(
        _: &Type,
        _: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(AnyValue)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

fn is_postgres_null(row: &tokio_postgres::Row, index: usize) -> std::result::Result<bool, String> {
    row.try_get::<_, Option<AnyValue>>(index)
        .map(|v| v.is_none())
        .map_err(|e| e.to_string())
}

impl Column for i64 {
    fn from_sqlite(value: rusqlite::types::ValueRef<'_>) -> std::result::Result<Self, String> {
        value.as_i64().map_err(|e| e.to_string())
    }
    fn from_postgres(row: &tokio_postgres::Row, index: usize) -> std::result::Result<Self, String> {
        let ty = row.columns()[index].type_().clone();
        let got = if ty == Type::INT8 {
            row.try_get::<_, i64>(index)
        } else if ty == Type::INT4 {
            row.try_get::<_, i32>(index).map(i64::from)
        } else if ty == Type::INT2 {
            row.try_get::<_, i16>(index).map(i64::from)
        } else if ty == Type::BOOL {
            row.try_get::<_, bool>(index).map(i64::from)
        } else {
            return Err(format!("a {ty} where an integer was expected"));
        };
        got.map_err(|e| e.to_string())
    }
}

/// Integers stored as `i64`, read as a narrower or unsigned type.
macro_rules! integer_column {
    ($($t:ty),*) => {$(
        impl Column for $t {
            fn from_sqlite(value: rusqlite::types::ValueRef<'_>) -> std::result::Result<Self, String> {
                let wide = i64::from_sqlite(value)?;
                <$t>::try_from(wide).map_err(|_| format!("{wide} is out of range for {}", stringify!($t)))
            }
            fn from_postgres(row: &tokio_postgres::Row, index: usize) -> std::result::Result<Self, String> {
                let wide = i64::from_postgres(row, index)?;
                <$t>::try_from(wide).map_err(|_| format!("{wide} is out of range for {}", stringify!($t)))
            }
        }
    )*};
}
integer_column!(i32, u32, u64, usize);

impl Column for bool {
    fn from_sqlite(value: rusqlite::types::ValueRef<'_>) -> std::result::Result<Self, String> {
        Ok(i64::from_sqlite(value)? != 0)
    }
    fn from_postgres(row: &tokio_postgres::Row, index: usize) -> std::result::Result<Self, String> {
        Ok(i64::from_postgres(row, index)? != 0)
    }
}

impl Column for f64 {
    fn from_sqlite(value: rusqlite::types::ValueRef<'_>) -> std::result::Result<Self, String> {
        match value {
            rusqlite::types::ValueRef::Integer(i) => Ok(i as f64),
            other => other.as_f64().map_err(|e| e.to_string()),
        }
    }
    fn from_postgres(row: &tokio_postgres::Row, index: usize) -> std::result::Result<Self, String> {
        let ty = row.columns()[index].type_().clone();
        let got = if ty == Type::FLOAT8 {
            row.try_get::<_, f64>(index)
        } else if ty == Type::FLOAT4 {
            row.try_get::<_, f32>(index).map(f64::from)
        } else if ty == Type::INT8 {
            row.try_get::<_, i64>(index).map(|i| i as f64)
        } else {
            return Err(format!("a {ty} where a real number was expected"));
        };
        got.map_err(|e| e.to_string())
    }
}

impl Column for String {
    fn from_sqlite(value: rusqlite::types::ValueRef<'_>) -> std::result::Result<Self, String> {
        value
            .as_str()
            .map(str::to_string)
            .map_err(|e| e.to_string())
    }
    fn from_postgres(row: &tokio_postgres::Row, index: usize) -> std::result::Result<Self, String> {
        row.try_get::<_, String>(index).map_err(|e| e.to_string())
    }
}

impl Column for Vec<u8> {
    fn from_sqlite(value: rusqlite::types::ValueRef<'_>) -> std::result::Result<Self, String> {
        value
            .as_blob()
            .map(<[u8]>::to_vec)
            .map_err(|e| e.to_string())
    }
    fn from_postgres(row: &tokio_postgres::Row, index: usize) -> std::result::Result<Self, String> {
        row.try_get::<_, Vec<u8>>(index).map_err(|e| e.to_string())
    }
}

impl<T: Column> Column for Option<T> {
    fn from_sqlite(value: rusqlite::types::ValueRef<'_>) -> std::result::Result<Self, String> {
        match value {
            rusqlite::types::ValueRef::Null => Ok(None),
            other => T::from_sqlite(other).map(Some),
        }
    }
    fn from_postgres(row: &tokio_postgres::Row, index: usize) -> std::result::Result<Self, String> {
        if is_postgres_null(row, index)? {
            Ok(None)
        } else {
            T::from_postgres(row, index).map(Some)
        }
    }
}

/// Any one value of any column, for code that copies rows it does not interpret
/// (`edgefleet store migrate`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Column for Value {
    fn from_sqlite(value: rusqlite::types::ValueRef<'_>) -> std::result::Result<Self, String> {
        use rusqlite::types::ValueRef;
        Ok(match value {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Int(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(t) => {
                Value::Text(String::from_utf8(t.to_vec()).map_err(|e| e.to_string())?)
            }
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        })
    }
    fn from_postgres(row: &tokio_postgres::Row, index: usize) -> std::result::Result<Self, String> {
        if is_postgres_null(row, index)? {
            return Ok(Value::Null);
        }
        let ty = row.columns()[index].type_().clone();
        Ok(if ty == Type::FLOAT8 || ty == Type::FLOAT4 {
            Value::Real(f64::from_postgres(row, index)?)
        } else if ty == Type::BYTEA {
            Value::Blob(Vec::<u8>::from_postgres(row, index)?)
        } else if ty == Type::TEXT || ty == Type::VARCHAR {
            Value::Text(String::from_postgres(row, index)?)
        } else {
            Value::Int(i64::from_postgres(row, index)?)
        })
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut tokio_postgres::types::private::BytesMut,
    ) -> std::result::Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        match self {
            Value::Null => Ok(tokio_postgres::types::IsNull::Yes),
            Value::Int(i) if *ty == Type::INT8 => i.to_sql(ty, out),
            Value::Int(i) if *ty == Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
            Value::Int(i) if *ty == Type::BOOL => (*i != 0).to_sql(ty, out),
            Value::Int(i) if *ty == Type::FLOAT8 => (*i as f64).to_sql(ty, out),
            Value::Real(f) if *ty == Type::FLOAT8 => f.to_sql(ty, out),
            Value::Text(t) if *ty == Type::TEXT || *ty == Type::VARCHAR => t.to_sql(ty, out),
            Value::Blob(b) if *ty == Type::BYTEA => b.to_sql(ty, out),
            // A value of another kind than its column (a damaged SQLite row): refused, never
            // written as the column's bytes.
            other => {
                let kind = match other {
                    Value::Null => "NULL",
                    Value::Int(_) => "integer",
                    Value::Real(_) => "real",
                    Value::Text(_) => "text",
                    Value::Blob(_) => "blob",
                };
                Err(format!("a {kind} value cannot be stored in a {ty} column").into())
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

impl PostgresType for Value {
    fn postgres_type() -> Option<Type> {
        None
    }
}

/// One row of a query's result.
pub(crate) enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Postgres(&'a tokio_postgres::Row),
}

impl Row<'_> {
    /// The value of column `index` (0-based).
    pub(crate) fn get<T: Column>(&self, index: usize) -> Result<T> {
        let got = match self {
            Row::Sqlite(r) => r
                .get_ref(index)
                .map_err(|e| e.to_string())
                .and_then(T::from_sqlite),
            Row::Postgres(r) => {
                if index >= r.len() {
                    Err(format!("no column {index} (the row has {})", r.len()))
                } else {
                    T::from_postgres(r, index)
                }
            }
        };
        got.map_err(|detail| DbError::Column { index, detail })
    }
}

/// A connection to one of the backends, held for the length of one store operation.
// One lives on the stack for one store operation: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Conn<'a> {
    Sqlite(MutexGuard<'a, rusqlite::Connection>),
    Postgres(super::postgres::Pooled<'a>),
}

impl<'a> Conn<'a> {
    /// Inserts rows with few statements: `insert` is the statement up to `VALUES`
    /// (`INSERT INTO t (a, b, c)`), `row` one row's values with bare `?` for its parameters
    /// (`(?, ?, 'pending')`), `tail` what follows (`ON CONFLICT DO NOTHING`, or nothing), and
    /// `params` every row's parameters in order. The number of rows inserted.
    pub(crate) fn insert_rows(
        &mut self,
        insert: &str,
        row: &str,
        tail: &str,
        params: &[&dyn Param],
    ) -> Result<usize> {
        let width = row.matches('?').count();
        assert!(
            width > 0 && params.len().is_multiple_of(width),
            "whole rows of {row}"
        );
        let mut done = 0;
        let mut inserted = 0;
        for size in insert_sizes(params.len() / width) {
            let sql = format!("{insert} VALUES {} {tail}", vec![row; size].join(", "));
            inserted += self.execute(&sql, &params[done..done + size * width])?;
            done += size * width;
        }
        Ok(inserted)
    }

    /// Runs one statement; the number of rows it changed.
    pub(crate) fn execute(&mut self, sql: &str, params: &[&dyn Param]) -> Result<usize> {
        match self {
            Conn::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                Ok(stmt.execute(sqlite_params(params).as_slice())?)
            }
            Conn::Postgres(c) => {
                let n = c.execute(sql, params)?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        }
    }

    /// Runs statements with no parameters, separated by `;`.
    pub(crate) fn execute_batch(&mut self, sql: &str) -> Result<()> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Postgres(c) => c.batch_execute(sql),
        }
    }

    /// Every row of a query, each read by `read`.
    pub(crate) fn query_map<T>(
        &mut self,
        sql: &str,
        params: &[&dyn Param],
        mut read: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        match self {
            Conn::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let mut rows = stmt.query(sqlite_params(params).as_slice())?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(read(&Row::Sqlite(r))?);
                }
                Ok(out)
            }
            Conn::Postgres(c) => {
                let rows = c.query(sql, params)?;
                rows.iter().map(|r| read(&Row::Postgres(r))).collect()
            }
        }
    }

    /// The first row of a query, read by `read`; [`DbError::NoRows`] if there is none.
    pub(crate) fn query_row<T>(
        &mut self,
        sql: &str,
        params: &[&dyn Param],
        read: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        match self {
            Conn::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let mut rows = stmt.query(sqlite_params(params).as_slice())?;
                match rows.next()? {
                    Some(r) => read(&Row::Sqlite(r)),
                    None => Err(DbError::NoRows),
                }
            }
            Conn::Postgres(c) => {
                let rows = c.query(sql, params)?;
                match rows.first() {
                    Some(r) => read(&Row::Postgres(r)),
                    None => Err(DbError::NoRows),
                }
            }
        }
    }

    /// A statement to run once or several times (prepared, and cached, on first use).
    pub(crate) fn prepare<'c>(&'c mut self, sql: &str) -> Result<Statement<'c, 'a>> {
        Ok(Statement {
            conn: self,
            sql: sql.to_string(),
        })
    }

    /// Begins a transaction: it commits with [`Transaction::commit`] and rolls back if dropped
    /// before.
    pub(crate) fn transaction(&mut self) -> Result<Transaction<'_, 'a>> {
        match self {
            Conn::Sqlite(c) => c.execute_batch("BEGIN")?,
            Conn::Postgres(c) => c.batch_execute("BEGIN")?,
        }
        Ok(Transaction {
            conn: self,
            done: false,
        })
    }
}

/// A statement of a [`Conn`], run with its parameters.
pub(crate) struct Statement<'c, 'a> {
    conn: &'c mut Conn<'a>,
    sql: String,
}

impl Statement<'_, '_> {
    pub(crate) fn execute(&mut self, params: &[&dyn Param]) -> Result<usize> {
        self.conn.execute(&self.sql, params)
    }

    /// Every row, each read by `read`.
    pub(crate) fn query_map<T>(
        &mut self,
        params: &[&dyn Param],
        read: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let rows = self.conn.query_map(&self.sql, params, read)?;
        Ok(rows.into_iter().map(Ok).collect::<Vec<_>>().into_iter())
    }
}

/// An open transaction on a [`Conn`]; its calls are the connection's.
pub(crate) struct Transaction<'c, 'a> {
    conn: &'c mut Conn<'a>,
    done: bool,
}

impl<'a> std::ops::Deref for Transaction<'_, 'a> {
    type Target = Conn<'a>;
    fn deref(&self) -> &Conn<'a> {
        self.conn
    }
}

impl<'a> std::ops::DerefMut for Transaction<'_, 'a> {
    fn deref_mut(&mut self) -> &mut Conn<'a> {
        self.conn
    }
}

impl Transaction<'_, '_> {
    pub(crate) fn commit(mut self) -> Result<()> {
        // A COMMIT that fails (SQLite busy, a disk error) leaves the transaction open: the drop
        // then rolls it back, as it does for one never committed.
        self.conn.execute_batch("COMMIT")?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Transaction<'_, '_> {
    fn drop(&mut self) {
        if !self.done {
            // A failed rollback leaves a broken connection: SQLite's next BEGIN fails loudly,
            // and a PostgreSQL connection is marked so the pool closes it.
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, "rolling back a transaction failed");
                if let Conn::Postgres(c) = &mut *self.conn {
                    c.broken = true;
                }
            }
        }
    }
}

/// `Result<T>` of a query for one row, as `Option<T>`: no row is `None`.
pub(crate) trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(DbError::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn sqlite_params<'p>(params: &'p [&'p dyn Param]) -> Vec<&'p dyn rusqlite::ToSql> {
    params.iter().map(|p| p.sqlite()).collect()
}

fn postgres_params<'p>(params: &'p [&'p dyn Param]) -> Vec<&'p (dyn ToSql + Sync)> {
    params.iter().map(|p| p.postgres()).collect()
}

/// SQL as PostgreSQL reads it: `?N` parameters become `$N`, and bare `?` take the next number.
/// Text in quotes is left alone.
pub(super) fn postgres_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    let mut next = 0;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                if digits.is_empty() {
                    next += 1;
                    digits = next.to_string();
                }
                out.push('$');
                out.push_str(&digits);
            }
            None => out.push(c),
        }
    }
    out
}

/// Prepared statements of one PostgreSQL connection, by their SQL as written.
pub(super) type StatementCache = HashMap<String, tokio_postgres::Statement>;

impl PgConn {
    fn statement(&mut self, sql: &str, params: &[&dyn Param]) -> Result<tokio_postgres::Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        // Every type known, or none given (PostgreSQL infers them all: a [`Value`] among them).
        let types: Vec<Type> = params
            .iter()
            .map(|p| p.postgres_type())
            .collect::<Option<_>>()
            .unwrap_or_default();
        let prepared = block_on(self.client.prepare_typed(&postgres_sql(sql), &types))?;
        self.statements.insert(sql.to_string(), prepared.clone());
        Ok(prepared)
    }

    fn execute(&mut self, sql: &str, params: &[&dyn Param]) -> Result<u64> {
        let statement = self.statement(sql, params)?;
        Ok(block_on(
            self.client.execute(&statement, &postgres_params(params)),
        )?)
    }

    fn query(&mut self, sql: &str, params: &[&dyn Param]) -> Result<Vec<tokio_postgres::Row>> {
        let statement = self.statement(sql, params)?;
        Ok(block_on(
            self.client.query(&statement, &postgres_params(params)),
        )?)
    }

    fn batch_execute(&mut self, sql: &str) -> Result<()> {
        Ok(block_on(self.client.batch_execute(sql))?)
    }
}

#[cfg(test)]
mod tests {
    use super::{insert_sizes, postgres_sql, ROWS_PER_INSERT};

    #[test]
    fn rows_go_in_full_statements_then_powers_of_two() {
        assert_eq!(insert_sizes(0), Vec::<usize>::new());
        assert_eq!(insert_sizes(1), [1]);
        assert_eq!(insert_sizes(7), [4, 2, 1]);
        assert_eq!(
            insert_sizes(2 * ROWS_PER_INSERT + 130),
            [ROWS_PER_INSERT, ROWS_PER_INSERT, 128, 2]
        );
        for n in 0..1000 {
            assert_eq!(insert_sizes(n).iter().sum::<usize>(), n);
        }
    }

    #[test]
    fn numbered_and_bare_parameters_become_dollar_numbers_outside_quotes() {
        assert_eq!(
            postgres_sql("SELECT a FROM t WHERE a = ?1 AND b = ?12 AND c = '?3' AND \"d?\" = ?"),
            "SELECT a FROM t WHERE a = $1 AND b = $12 AND c = '?3' AND \"d?\" = $1"
        );
        assert_eq!(postgres_sql("VALUES (?, ?)"), "VALUES ($1, $2)");
    }
}
