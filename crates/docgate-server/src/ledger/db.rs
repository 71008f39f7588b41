//! The connection a ledger write runs on, whichever driver holds it.
//!
//! Every write is written once ([`super::sql_writes`], [`super::sql_ops`],
//! [`super::sql_sessions`]) and runs on two kinds of connection:
//! - PostgreSQL (and the SQLite readers): sqlx's `Any` driver, asynchronous;
//! - the SQLite writer ([`super::writer`]): rusqlite, called directly on the writer's own
//!   thread. sqlx would send each statement to a worker thread of its own and wait for the
//!   answer: two thread hand-offs per statement, about a dozen statements per upload, which
//!   cost more CPU than the statements themselves.
//!
//! So a write takes a [`Conn`], builds its statements with [`query`] and reads its rows
//! through [`DbRow`]. Both drivers understand the same SQL: `$N` parameters are numbered, not
//! positional, in SQLite as in PostgreSQL.

use std::{borrow::Cow, future::Future, sync::Arc};

use sqlx::{any::AnyRow, Any, AnyConnection, Row};

use super::{LedgerError, LedgerResult};

/// One bound value. NULLs keep their type: PostgreSQL infers parameter types from them.
#[derive(Debug, Clone)]
pub enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
}

/// What [`Query::bind`] takes.
pub trait Bind {
    fn arg(self) -> Arg;
}

impl Bind for i64 {
    fn arg(self) -> Arg {
        Arg::Int(Some(self))
    }
}

impl Bind for Option<i64> {
    fn arg(self) -> Arg {
        Arg::Int(self)
    }
}

impl Bind for String {
    fn arg(self) -> Arg {
        Arg::Text(Some(self))
    }
}

impl Bind for &str {
    fn arg(self) -> Arg {
        Arg::Text(Some(self.to_owned()))
    }
}

impl Bind for Option<String> {
    fn arg(self) -> Arg {
        Arg::Text(self)
    }
}

/// A statement and its arguments (`$1` is the first).
#[derive(Debug, Clone)]
pub struct Query {
    sql: Cow<'static, str>,
    args: Vec<Arg>,
}

/// A statement to run on a [`Conn`].
pub fn query(sql: impl Into<Cow<'static, str>>) -> Query {
    Query {
        sql: sql.into(),
        args: Vec::new(),
    }
}

/// What a statement that returns no rows changed.
#[derive(Debug, Clone, Copy)]
pub struct Done(u64);

impl Done {
    pub fn rows_affected(self) -> u64 {
        self.0
    }
}

impl Query {
    pub fn bind(mut self, value: impl Bind) -> Query {
        self.args.push(value.arg());
        self
    }

    pub async fn fetch_all<C: Conn>(self, c: &mut C) -> LedgerResult<Vec<C::Row>> {
        c.fetch_all(self).await
    }

    pub async fn fetch_optional<C: Conn>(self, c: &mut C) -> LedgerResult<Option<C::Row>> {
        Ok(c.fetch_all(self).await?.into_iter().next())
    }

    pub async fn fetch_one<C: Conn>(self, c: &mut C) -> LedgerResult<C::Row> {
        self.fetch_optional(c)
            .await?
            .ok_or_else(|| LedgerError::Corrupt("a statement returned no row".into()))
    }

    pub async fn execute<C: Conn>(self, c: &mut C) -> LedgerResult<Done> {
        c.execute(self).await.map(Done)
    }
}

/// A column type both drivers decode.
pub trait Col:
    Sized + sqlx::Type<Any> + for<'r> sqlx::Decode<'r, Any> + rusqlite::types::FromSql
{
}

impl Col for i64 {}
impl Col for Option<i64> {}
impl Col for String {}
impl Col for Option<String> {}

/// A row of either driver, read by column name.
pub trait DbRow {
    fn col<T: Col>(&self, name: &str) -> LedgerResult<T>;
}

impl DbRow for AnyRow {
    fn col<T: Col>(&self, name: &str) -> LedgerResult<T> {
        Ok(self.try_get(name)?)
    }
}

/// A connection a write runs on. The futures of the SQLite writer's connection are ready at
/// once (it runs each statement when called).
pub trait Conn: Send {
    type Row: DbRow + Send;

    fn fetch_all(&mut self, q: Query) -> impl Future<Output = LedgerResult<Vec<Self::Row>>> + Send;

    /// Rows changed.
    fn execute(&mut self, q: Query) -> impl Future<Output = LedgerResult<u64>> + Send;
}

fn sqlx_query(q: &Query) -> sqlx::query::Query<'_, Any, sqlx::any::AnyArguments<'_>> {
    let mut query = sqlx::query(&q.sql);
    for arg in &q.args {
        query = match arg {
            Arg::Int(v) => query.bind(*v),
            Arg::Text(v) => query.bind(v.clone()),
        };
    }
    query
}

impl Conn for AnyConnection {
    type Row = AnyRow;

    async fn fetch_all(&mut self, q: Query) -> LedgerResult<Vec<AnyRow>> {
        Ok(sqlx_query(&q).fetch_all(&mut *self).await?)
    }

    async fn execute(&mut self, q: Query) -> LedgerResult<u64> {
        Ok(sqlx_query(&q).execute(&mut *self).await?.rows_affected())
    }
}

/// A row read by the SQLite writer, copied out of the statement.
#[derive(Debug)]
pub struct SqliteRow {
    names: Arc<[String]>,
    values: Vec<rusqlite::types::Value>,
}

impl DbRow for SqliteRow {
    fn col<T: Col>(&self, name: &str) -> LedgerResult<T> {
        let i = self
            .names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| LedgerError::Corrupt(format!("no column `{name}`")))?;
        let value = self
            .values
            .get(i)
            .ok_or_else(|| LedgerError::Corrupt(format!("no value for `{name}`")))?;
        T::column_result(value.into()).map_err(|e| LedgerError::Corrupt(format!("{name}: {e}")))
    }
}

/// Run `q` on the writer's connection: bind each `$N` to argument N, step through every row.
fn run_sqlite(conn: &rusqlite::Connection, q: &Query) -> LedgerResult<(Vec<SqliteRow>, u64)> {
    let mut stmt = conn.prepare_cached(&q.sql)?;
    for i in 1..=stmt.parameter_count() {
        let n = stmt
            .parameter_name(i)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| LedgerError::Corrupt(format!("parameter {i} is not $N")))?;
        match q.args.get(n.wrapping_sub(1)) {
            Some(Arg::Int(v)) => stmt.raw_bind_parameter(i, v)?,
            Some(Arg::Text(v)) => stmt.raw_bind_parameter(i, v.as_deref())?,
            None => return Err(LedgerError::Corrupt(format!("${n} is not bound"))),
        }
    }
    let names: Arc<[String]> = stmt.column_names().into_iter().map(str::to_owned).collect();
    let width = names.len();
    let mut out = Vec::new();
    let mut rows = stmt.raw_query();
    while let Some(row) = rows.next()? {
        let values = (0..width)
            .map(|i| row.get_ref(i).map(rusqlite::types::Value::from))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(SqliteRow {
            names: names.clone(),
            values,
        });
    }
    drop(rows);
    Ok((out, conn.changes()))
}

impl Conn for rusqlite::Connection {
    type Row = SqliteRow;

    fn fetch_all(&mut self, q: Query) -> impl Future<Output = LedgerResult<Vec<SqliteRow>>> + Send {
        std::future::ready(run_sqlite(self, &q).map(|(rows, _)| rows))
    }

    fn execute(&mut self, q: Query) -> impl Future<Output = LedgerResult<u64>> + Send {
        std::future::ready(run_sqlite(self, &q).map(|(_, changed)| changed))
    }
}
