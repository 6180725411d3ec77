//! One store, two engines: the control plane's queries are written once, in the SQL that SQLite
//! (≥ 3.35) and PostgreSQL (≥ 12) both speak (`ON CONFLICT`, `RETURNING`, `lower()` for
//! case-insensitive matches, `CASE` for a scalar minimum), against [`Conn`]; [`Sqlite`] and
//! [`Postgres`] run them. Parameters are written `?1`, `?2`… and become `$1`, `$2`… for
//! PostgreSQL. Values are integers (Unix seconds, counters), text and NULL: nothing else is
//! stored.
//!
//! The `postgres` client is synchronous (its own small runtime, one connection per node, like
//! SQLite's one connection): a call made on a tokio worker thread runs on a scoped thread so the
//! client's runtime never nests inside the caller's, and a lost connection is opened again on
//! the next call.

use anyhow::{bail, Context, Result};
use parking_lot::Mutex;

/// A value in or out of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Self::Text(v.clone())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

/// The values of a query's parameters, in order: `params![a, b, c]`.
macro_rules! params {
    ($($v:expr),* $(,)?) => { &[$($crate::store::sql::Value::from($v)),*][..] };
}
pub(crate) use params;

/// One result row.
#[derive(Debug, Clone)]
pub struct Row(Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value> {
        self.0.get(i).with_context(|| format!("no column {i}"))
    }

    /// Column `i` as text.
    pub fn text(&self, i: usize) -> Result<String> {
        self.opt_text(i)?
            .with_context(|| format!("column {i} is NULL"))
    }

    /// Column `i` as text or NULL.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            Value::Int(n) => bail!("column {i} is the integer {n}, not text"),
        }
    }

    /// Column `i` as an integer.
    pub fn int(&self, i: usize) -> Result<i64> {
        self.opt_int(i)?
            .with_context(|| format!("column {i} is NULL"))
    }

    /// Column `i` as an integer or NULL.
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Int(n) => Ok(Some(*n)),
            Value::Text(_) => bail!("column {i} is text, not an integer"),
        }
    }
}

/// A connection (or a transaction on one).
pub trait Conn {
    /// Runs a statement; the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64>;
    /// Runs a query; its rows.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>>;
    /// The first row of a query, if any.
    fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
    /// The only row of a query (an error without one).
    fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Row> {
        self.query_opt(sql, params)?
            .context("the query returned no row")
    }
}

/// An engine: runs work on its connection, alone or in a transaction.
pub trait Db: Send + Sync + std::fmt::Debug {
    /// Runs `f` on the connection.
    fn with<T: Send>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T> + Send) -> Result<T>;
    /// Runs `f` in a transaction: committed if it returns `Ok`, rolled back otherwise.
    fn tx<T: Send>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T> + Send) -> Result<T>;
}

// ---- SQLite ----------------------------------------------------------------------------

/// The embedded engine: one SQLite connection.
#[derive(Debug)]
pub struct Sqlite(pub(crate) Mutex<rusqlite::Connection>);

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Self::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Self::Int(n) => ToSqlOutput::Borrowed(ValueRef::Integer(*n)),
            Self::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

fn sqlite_rows(stmt: &mut rusqlite::Statement<'_>, params: &[Value]) -> Result<Vec<Row>> {
    use rusqlite::types::ValueRef;
    let n = stmt.column_count();
    let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut row = Vec::with_capacity(n);
        for i in 0..n {
            row.push(match r.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Int(v),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Real(f) => bail!("column {i} is the real number {f}"),
                ValueRef::Blob(_) => bail!("column {i} is a blob"),
            });
        }
        out.push(Row(row));
    }
    Ok(out)
}

impl Conn for rusqlite::Connection {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let n = rusqlite::Connection::execute(self, sql, rusqlite::params_from_iter(params))?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        sqlite_rows(&mut *self.prepare_cached(sql)?, params)
    }
}

impl Db for Sqlite {
    fn with<T: Send>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T> + Send) -> Result<T> {
        let mut conn = self.0.lock();
        f(&mut *conn)
    }

    fn tx<T: Send>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T> + Send) -> Result<T> {
        let mut conn = self.0.lock();
        conn.execute_batch("BEGIN IMMEDIATE")?;
        match f(&mut *conn) {
            Ok(v) => {
                conn.execute_batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

// ---- PostgreSQL ------------------------------------------------------------------------

/// A shared PostgreSQL database (several nodes of a cluster use one).
pub struct Postgres {
    url: String,
    /// TLS when the server offers it (`sslmode=prefer`, the default) or must (`require`): the
    /// certificate is always verified.
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    client: Mutex<Option<PgClient>>,
}

/// A connection and its prepared statements (one parse per query text, not per call: a
/// 10,000-user directory sync is 10,000 executions of one statement).
struct PgClient {
    client: postgres::Client,
    statements: std::collections::HashMap<String, postgres::Statement>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("url", &redact(&self.url))
            .finish_non_exhaustive()
    }
}

/// A PostgreSQL database to use: its URL (printed without the password) and the CA file its
/// TLS certificate is checked against.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    url: String,
    ca_file: Option<std::path::PathBuf>,
}

impl DatabaseUrl {
    /// Wraps `url` (`postgres://user:pass@host:5432/db`, `?sslmode=require` for TLS), checking
    /// its scheme.
    pub fn parse(url: &str) -> Result<Self> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!(
                "a database URL starts with postgres:// (got {})",
                redact(url)
            );
        }
        Ok(Self {
            url: url.to_owned(),
            ca_file: None,
        })
    }

    /// Checks the server's certificate against the CAs of the PEM file `ca` (default: the
    /// public web roots).
    pub fn with_ca_file(mut self, ca: Option<std::path::PathBuf>) -> Self {
        self.ca_file = ca;
        self
    }

    /// The whole URL, password included.
    pub fn expose(&self) -> &str {
        &self.url
    }

    /// From `CLOUDSIGNAL_DATABASE_URL` and `CLOUDSIGNAL_DATABASE_CA_FILE`, if the first is set.
    pub fn from_env() -> Result<Option<Self>> {
        let Some(url) = std::env::var("CLOUDSIGNAL_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            return Ok(None);
        };
        let ca = std::env::var_os("CLOUDSIGNAL_DATABASE_CA_FILE")
            .filter(|c| !c.is_empty())
            .map(std::path::PathBuf::from);
        Ok(Some(Self::parse(&url)?.with_ca_file(ca)))
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.url))
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.url))
    }
}

/// `url` without its password, for messages (the broker's rule for every URL it prints).
pub(crate) use cloudsignal_broker::cluster::redact;

/// `?1` → `$1` (outside string literals, which these queries never put a `?` in).
fn dollar(sql: &str) -> String {
    sql.replace('?', "$")
}

struct PgValue<'a>(&'a Value);

impl std::fmt::Debug for PgValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl postgres::types::ToSql for PgValue<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        use postgres::types::Type;
        match self.0 {
            Value::Null => Ok(postgres::types::IsNull::Yes),
            Value::Int(n) => match *ty {
                Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*n)?.to_sql(ty, out),
                _ => n.to_sql(ty, out),
            },
            Value::Text(s) => s.as_str().to_sql(ty, out),
        }
    }

    fn accepts(ty: &postgres::types::Type) -> bool {
        use postgres::types::Type;
        matches!(
            *ty,
            Type::INT8 | Type::INT4 | Type::INT2 | Type::TEXT | Type::VARCHAR | Type::BPCHAR
        )
    }

    postgres::types::to_sql_checked!();
}

fn pg_rows(rows: Vec<postgres::Row>) -> Result<Vec<Row>> {
    use postgres::types::Type;
    rows.into_iter()
        .map(|r| {
            let mut row = Vec::with_capacity(r.len());
            for (i, col) in r.columns().iter().enumerate() {
                let v = match *col.type_() {
                    Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Value::Int),
                    Type::INT4 => r
                        .try_get::<_, Option<i32>>(i)?
                        .map(|v| Value::Int(v.into())),
                    Type::INT2 => r
                        .try_get::<_, Option<i16>>(i)?
                        .map(|v| Value::Int(v.into())),
                    Type::BOOL => r
                        .try_get::<_, Option<bool>>(i)?
                        .map(|v| Value::Int(v.into())),
                    Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                        r.try_get::<_, Option<String>>(i)?.map(Value::Text)
                    }
                    ref other => bail!("column {} has the unexpected type {other}", col.name()),
                };
                row.push(v.unwrap_or(Value::Null));
            }
            Ok(Row(row))
        })
        .collect()
}

struct PgConn<'a, C: postgres::GenericClient> {
    client: &'a mut C,
    statements: &'a mut std::collections::HashMap<String, postgres::Statement>,
}

impl<C: postgres::GenericClient> PgConn<'_, C> {
    fn statement(&mut self, sql: &str) -> Result<postgres::Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(&dollar(sql))?;
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }
}

/// `params` as the client takes them.
fn pg_params(params: &[Value]) -> Vec<PgValue<'_>> {
    params.iter().map(PgValue).collect()
}

fn pg_refs<'a>(values: &'a [PgValue<'a>]) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    values
        .iter()
        .map(|v| v as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

impl<C: postgres::GenericClient> Conn for PgConn<'_, C> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let statement = self.statement(sql)?;
        let values = pg_params(params);
        Ok(self.client.execute(&statement, &pg_refs(&values))?)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let statement = self.statement(sql)?;
        let values = pg_params(params);
        pg_rows(self.client.query(&statement, &pg_refs(&values))?)
    }
}

impl Postgres {
    /// Connects to `url`.
    pub fn connect(url: &DatabaseUrl) -> Result<Self> {
        let tls = crate::tls_client::client_config(url.ca_file.as_deref())?;
        let db = Self {
            url: url.url.clone(),
            tls: tokio_postgres_rustls::MakeRustlsConnect::new(tls),
            client: Mutex::new(None),
        };
        db.with(|_| Ok(()))?;
        Ok(db)
    }

    /// Runs `f` on a live client, off the caller's runtime.
    fn run<T: Send>(&self, f: impl FnOnce(&mut PgClient) -> Result<T> + Send) -> Result<T> {
        let (client, url, tls) = (&self.client, self.url.as_str(), &self.tls);
        let work = move || -> Result<T> {
            // locked on the thread that uses it (a guard cannot move between threads)
            let mut slot = client.lock();
            if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
                let client = postgres::Client::connect(url, tls.clone())
                    .with_context(|| format!("connecting to PostgreSQL at {}", redact(url)))?;
                *slot = Some(PgClient {
                    client,
                    statements: std::collections::HashMap::new(),
                });
            }
            let client = slot.as_mut().context("no PostgreSQL connection")?;
            f(client)
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // the client blocks on a runtime of its own, which may not run inside the caller's
            std::thread::scope(|s| {
                s.spawn(work)
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a PostgreSQL call panicked")))
            })
        } else {
            work()
        }
    }
}

impl Db for Postgres {
    fn with<T: Send>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T> + Send) -> Result<T> {
        self.run(|c| {
            f(&mut PgConn {
                client: &mut c.client,
                statements: &mut c.statements,
            })
        })
    }

    fn tx<T: Send>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T> + Send) -> Result<T> {
        self.run(|c| {
            let mut tx = c.client.transaction()?;
            let v = f(&mut PgConn {
                client: &mut tx,
                statements: &mut c.statements,
            })?;
            tx.commit()?;
            Ok(v)
        })
    }
}

/// PostgreSQL's migrations, in order (the schema SQLite reached with its seven, in one step;
/// later steps are added to both lists).
pub(crate) const PG_MIGRATIONS: &[&str] =
    &[include_str!("../../migrations/postgres/0001_init.sql")];

/// Brings a PostgreSQL database to the current schema. Nodes starting at once serialize on an
/// advisory lock; each step and its version are one transaction.
pub(crate) fn migrate_postgres(db: &Postgres) -> Result<()> {
    db.run(|c| {
        let c = &mut c.client;
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS cloudsignal_schema (version INTEGER NOT NULL)",
        )?;
        let mut tx = c.transaction()?;
        // one lock id for CloudSignal's migrations ("CSIG")
        tx.execute("SELECT pg_advisory_xact_lock(1129531719)", &[])?;
        let version: i64 = match tx.query_opt("SELECT version FROM cloudsignal_schema", &[])? {
            Some(r) => i64::from(r.get::<_, i32>(0)),
            None => {
                tx.execute("INSERT INTO cloudsignal_schema (version) VALUES (0)", &[])?;
                0
            }
        };
        let known = PG_MIGRATIONS.len() as i64;
        if version > known {
            bail!("the database has schema version {version}, newer than this binary knows ({known}); upgrade cloudsignal");
        }
        for (i, sql) in PG_MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.batch_execute(sql)
                .with_context(|| format!("applying PostgreSQL migration {}", i + 1))?;
            let v = i32::try_from(i + 1)?;
            tx.execute("UPDATE cloudsignal_schema SET version = $1", &[&v])?;
        }
        tx.commit()?;
        Ok(())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_redaction() {
        assert_eq!(dollar("a = ?1 AND b = ?12"), "a = $1 AND b = $12");
        assert_eq!(
            redact("postgres://u:secret@db:5432/x"),
            "postgres://…@db:5432/x"
        );
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
    }

    #[test]
    fn rows_are_typed() {
        let r = Row(vec![Value::Int(3), Value::Null, Value::Text("t".into())]);
        assert_eq!(r.int(0).unwrap(), 3);
        assert_eq!(r.opt_int(1).unwrap(), None);
        assert!(r.int(1).is_err());
        assert_eq!(r.text(2).unwrap(), "t");
        assert!(r.int(2).is_err());
        assert!(r.text(9).is_err());
    }
}
