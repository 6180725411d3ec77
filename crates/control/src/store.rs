//! The store: one SQLite file under the data directory (the embedded default), or a shared
//! PostgreSQL database (`--database-url`) for several nodes; one set of queries for both
//! ([`sql`]).
//!
//! WAL mode with `synchronous = FULL`, so a write the API has acknowledged survives a crash
//! or SIGKILL; migrations are SQL files in `migrations/`, applied in order and recorded in
//! `PRAGMA user_version`. The [`Store`] trait is what the rest of the control plane uses, so a
//! shared PostgreSQL can stand behind it later for several brokers.

use anyhow::{bail, Context, Result};
use cloudsignal_core::revocation::{Entry, Revocation};
use cloudsignal_core::UnixTime;
use parking_lot::Mutex;
use rusqlite::Connection;
use sql::{params, Db, Postgres, Row, Sqlite};
use std::path::Path;

/// Schema migrations, in order; entry `i` moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_usage.sql"),
    include_str!("../migrations/0003_seen.sql"),
    include_str!("../migrations/0004_audit.sql"),
    include_str!("../migrations/0005_directory.sql"),
    include_str!("../migrations/0006_accounts.sql"),
    include_str!("../migrations/0007_usage_hourly.sql"),
    include_str!("../migrations/0008_lower_indexes.sql"),
];

/// One audit-log entry: who did what, when, from where, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// Position in the log (strictly increasing; 0 before it is written).
    pub seq: u64,
    /// When.
    pub at: UnixTime,
    /// The org it happened in.
    pub org: String,
    /// Who: an API key id, or `local` for a command run on the server with its files.
    pub actor: String,
    /// `sk`, `rk` or `local`.
    pub actor_kind: String,
    /// What, e.g. `key.create`, `key.revoke`, `key.rotate`, `token.revoke`, `user.revoke`,
    /// `signing_key.rotate`, `admin.recover`.
    pub action: String,
    /// What it was done to (a key id, a user id, a token id), if anything.
    pub target: Option<String>,
    /// The client address, for API calls.
    pub peer: Option<String>,
    /// `ok`, or the refusal's problem code (`scope_escalation`, `last_admin_key`…).
    pub outcome: String,
    /// Free text (never a secret).
    pub detail: String,
}

/// An API key as stored (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Lookup id.
    pub id: String,
    /// Org it belongs to.
    pub org: String,
    /// `sk` or `rk`.
    pub kind: String,
    /// Human name.
    pub name: String,
    /// bcrypt of the secret's SHA-256 (hex).
    pub secret_hash: String,
    /// Scope strings.
    pub scopes: Vec<String>,
    /// CIDR allowlist (empty: anywhere).
    pub allow_cidrs: Vec<String>,
    /// Creation time.
    pub created_at: UnixTime,
    /// Expiry, if any.
    pub expires_at: Option<UnixTime>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<UnixTime>,
}

impl StoredKey {
    /// The key's one MQTT identity, `<name>@<org>`; `None` for a key whose name is not a valid
    /// identity (only keys created before names were identities), which cannot connect.
    pub fn mqtt_username(&self) -> Option<String> {
        cloudsignal_core::ids::UserId::parse(&self.name)
            .ok()
            .map(|n| format!("{}@{}", n.as_str(), self.org))
    }

    /// The MQTT filters of its `mqtt:<kind>:<filter>` scopes (`kind`: `publish` or
    /// `subscribe`), templates unresolved.
    pub fn mqtt_scopes<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.scopes.iter().filter_map(move |s| {
            s.strip_prefix("mqtt:")?
                .strip_prefix(kind)?
                .strip_prefix(':')
        })
    }

    /// A new admin (`sk_`) key record: every scope of its org, from anywhere, never expiring.
    pub fn admin(id: &str, org: &str, name: &str, secret_hash: String, now: UnixTime) -> Self {
        Self {
            id: id.into(),
            org: org.into(),
            kind: "sk".into(),
            name: name.into(),
            secret_hash,
            scopes: Vec::new(),
            allow_cidrs: Vec::new(),
            created_at: now,
            expires_at: None,
            revoked_at: None,
        }
    }

    /// Whether the key can be used at `now` (not revoked, not expired).
    pub fn is_live(&self, now: UnixTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

mod accounts;
mod directory;
pub mod sql;
pub use accounts::{Account, AccountStore, AuthSession, Code, Invitation, Redeemed};
pub use directory::{DirectoryRow, DirectoryStore};

/// What the control plane keeps.
pub trait Store: DirectoryStore + AccountStore + Send + Sync {
    /// The default org, if one exists.
    fn default_org(&self) -> Result<Option<String>>;
    /// Creates an org.
    fn create_org(&self, id: &str, name: &str, now: UnixTime) -> Result<()>;
    /// Every org: (id, name), oldest first.
    fn list_orgs(&self) -> Result<Vec<(String, String)>>;
    /// Records a signing key's public JWK.
    fn add_signing_key(&self, kid: &str, public_jwk: &str, now: UnixTime) -> Result<()>;
    /// Sets when a signing key stops being published (tokens it signed have expired by then).
    fn retire_signing_key(&self, kid: &str, at: UnixTime) -> Result<()>;
    /// Public JWKs still published at `now`.
    fn published_keys(&self, now: UnixTime) -> Result<Vec<String>>;
    /// Stores an API key.
    fn insert_key(&self, key: &StoredKey) -> Result<()>;
    /// Finds a key by lookup id.
    fn find_key(&self, id: &str) -> Result<Option<StoredKey>>;
    /// Keys of an org, newest first.
    fn list_keys(&self, org: &str) -> Result<Vec<StoredKey>>;
    /// Marks a key revoked; whether it existed and was live.
    fn revoke_key(&self, id: &str, now: UnixTime) -> Result<bool>;
    /// Brings a live key's expiry forward to `at` (rotation grace); whether it was live.
    fn expire_key(&self, id: &str, at: UnixTime) -> Result<bool>;
    /// Appends a revocation to the feed and returns it with its sequence number.
    fn add_revocation(&self, revocation: &Revocation, at: UnixTime) -> Result<Entry>;
    /// Feed entries after `after`, oldest first, at most `limit`.
    fn revocations_after(&self, after: u64, limit: usize) -> Result<Vec<Entry>>;
    /// Adds usage rows (counters add up; last use and address are replaced).
    fn add_usage(&self, rows: &[crate::usage::UsageRow]) -> Result<()>;
    /// Usage rows for one subject (`key`/`user`, name), newest day first.
    fn usage_of(&self, kind: &str, subject: &str) -> Result<Vec<crate::usage::UsageRow>>;
    /// Every usage row of one day.
    fn usage_on(&self, day: &str) -> Result<Vec<crate::usage::UsageRow>>;
    /// Adds hourly usage rows (`day` holds the hour, `YYYY-MM-DDTHH`).
    fn add_usage_hourly(&self, rows: &[crate::usage::UsageRow]) -> Result<()>;
    /// Every hourly usage row of one day, by hour.
    fn usage_hours(&self, day: &str) -> Result<Vec<crate::usage::UsageRow>>;
    /// Revokes a live key unless it is the org's last live `sk_` key (one atomic step).
    fn revoke_key_keeping_admin(&self, id: &str, now: UnixTime) -> Result<RevokeOutcome>;
    /// Appends to the audit log; returns the entry's `seq`.
    fn append_audit(&self, entry: &AuditEntry) -> Result<u64>;
    /// Audit entries of `org` after `after`, oldest first, at most `limit`.
    fn audit_after(&self, org: &str, after: u64, limit: usize) -> Result<Vec<AuditEntry>>;
}

/// What [`Store::revoke_key_keeping_admin`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// Revoked.
    Revoked,
    /// No live key with this id.
    NotLive,
    /// Refused: it is the org's last live `sk_` key.
    LastAdminKey,
}

/// The store: the control plane's queries, written once (see [`sql`]), on an engine.
#[derive(Debug)]
pub struct SqlStore<D> {
    pub(crate) db: D,
}

/// The embedded store: one SQLite file under the data directory.
pub type SqliteStore = SqlStore<Sqlite>;

/// The shared store: a PostgreSQL database several nodes use.
pub type PgStore = SqlStore<Postgres>;

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            // key hashes and revocations: readable by the owner only (SQLite gives the WAL
            // and shared-memory files the database file's mode)
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
        }
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&conn)?;
        Ok(Self {
            db: Sqlite(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the SQLite connection itself (tests, `PRAGMA`s).
    pub(crate) fn raw<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self.db.0.lock();
        Ok(f(&conn)?)
    }

    /// `PRAGMA integrity_check` (for tests and `cloudsignal doctor`).
    pub fn integrity_check(&self) -> Result<String> {
        self.raw(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get(0)))
    }
}

impl PgStore {
    /// Connects to the PostgreSQL database at `url` and migrates it.
    pub fn connect(url: &sql::DatabaseUrl) -> Result<Self> {
        let db = Postgres::connect(url)?;
        sql::migrate_postgres(&db)?;
        Ok(Self { db })
    }
}

impl<D: Db> SqlStore<D> {
    /// Upserts usage rows into `table` (`usage` or `usage_hourly`: a constant, never input).
    fn add_usage_to(&self, table: &str, rows: &[crate::usage::UsageRow]) -> Result<()> {
        let sql = format!(
            "INSERT INTO {table} ({USAGE_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (day, subject_kind, subject) DO UPDATE SET
                   connects = {table}.connects + excluded.connects,
                   auth_failures = {table}.auth_failures + excluded.auth_failures,
                   published = {table}.published + excluded.published,
                   published_bytes = {table}.published_bytes + excluded.published_bytes,
                   delivered = {table}.delivered + excluded.delivered,
                   delivered_bytes = {table}.delivered_bytes + excluded.delivered_bytes,
                   last_used = COALESCE(excluded.last_used, {table}.last_used),
                   last_ip = COALESCE(excluded.last_ip, {table}.last_ip)"
        );
        self.db.tx(|c| {
            for r in rows {
                c.execute(
                    &sql,
                    params![
                        r.day.as_str(),
                        r.subject_kind.as_str(),
                        r.subject.as_str(),
                        big(r.counts.connects),
                        big(r.counts.auth_failures),
                        big(r.counts.published),
                        big(r.counts.published_bytes),
                        big(r.counts.delivered),
                        big(r.counts.delivered_bytes),
                        r.last_used.map(big),
                        r.last_ip.as_deref()
                    ],
                )?;
            }
            Ok(())
        })
    }

    fn usage_where(
        &self,
        condition: &str,
        values: &[sql::Value],
    ) -> Result<Vec<crate::usage::UsageRow>> {
        let rows = self
            .db
            .with(|c| c.query(&format!("SELECT {USAGE_COLUMNS} FROM {condition}"), values))?;
        rows.iter().map(usage_from_row).collect()
    }
}

fn migrate(conn: &Connection) -> Result<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > MIGRATIONS.len() {
        bail!(
            "the database has schema version {version}, newer than this binary knows ({}); upgrade cloudsignal",
            MIGRATIONS.len()
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)
            .with_context(|| format!("applying migration {}", i + 1))?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

fn secs(t: UnixTime) -> i64 {
    i64::try_from(t.secs()).unwrap_or(i64::MAX)
}

fn time(v: Option<i64>) -> Option<UnixTime> {
    v.map(|s| UnixTime(u64::try_from(s).unwrap_or(0)))
}

fn json_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn key_from_row(r: &Row) -> Result<StoredKey> {
    Ok(StoredKey {
        id: r.text(0)?,
        org: r.text(1)?,
        kind: r.text(2)?,
        name: r.text(3)?,
        secret_hash: r.text(4)?,
        scopes: json_list(&r.text(5)?),
        allow_cidrs: json_list(&r.text(6)?),
        created_at: time(r.opt_int(7)?).unwrap_or(UnixTime(0)),
        expires_at: time(r.opt_int(8)?),
        revoked_at: time(r.opt_int(9)?),
    })
}

const USAGE_COLUMNS: &str = "day, subject_kind, subject, connects, auth_failures, published, published_bytes, delivered, delivered_bytes, last_used, last_ip";

fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn usage_from_row(r: &Row) -> Result<crate::usage::UsageRow> {
    Ok(crate::usage::UsageRow {
        day: r.text(0)?,
        subject_kind: r.text(1)?,
        subject: r.text(2)?,
        counts: cloudsignal_broker::usage::Counters {
            connects: count(r.int(3)?),
            auth_failures: count(r.int(4)?),
            published: count(r.int(5)?),
            published_bytes: count(r.int(6)?),
            delivered: count(r.int(7)?),
            delivered_bytes: count(r.int(8)?),
        },
        last_used: r.opt_int(9)?.map(count),
        last_ip: r.opt_text(10)?,
    })
}

const KEY_COLUMNS: &str =
    "id, org, kind, name, secret_hash, scopes, allow_cidrs, created_at, expires_at, revoked_at";

fn keys(rows: &[Row]) -> Result<Vec<StoredKey>> {
    rows.iter().map(key_from_row).collect()
}

impl<D: Db> Store for SqlStore<D> {
    fn default_org(&self) -> Result<Option<String>> {
        let row = self
            .db
            .with(|c| c.query_opt("SELECT id FROM orgs ORDER BY created_at, id LIMIT 1", &[]))?;
        row.map(|r| r.text(0)).transpose()
    }

    fn create_org(&self, id: &str, name: &str, now: UnixTime) -> Result<()> {
        self.db
            .with(|c| {
                c.execute(
                    "INSERT INTO orgs (id, name, created_at) VALUES (?1, ?2, ?3)",
                    params![id, name, secs(now)],
                )
            })
            .map(drop)
    }

    fn list_orgs(&self) -> Result<Vec<(String, String)>> {
        let rows = self
            .db
            .with(|c| c.query("SELECT id, name FROM orgs ORDER BY created_at, id", &[]))?;
        rows.iter().map(|r| Ok((r.text(0)?, r.text(1)?))).collect()
    }

    fn add_signing_key(&self, kid: &str, public_jwk: &str, now: UnixTime) -> Result<()> {
        self.db
            .with(|c| {
                c.execute(
                    "INSERT INTO signing_keys (kid, public_jwk, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (kid) DO NOTHING",
                    params![kid, public_jwk, secs(now)],
                )
            })
            .map(drop)
    }

    fn retire_signing_key(&self, kid: &str, at: UnixTime) -> Result<()> {
        self.db
            .with(|c| {
                c.execute(
                    "UPDATE signing_keys SET retire_at = ?2 WHERE kid = ?1 AND retire_at IS NULL",
                    params![kid, secs(at)],
                )
            })
            .map(drop)
    }

    fn published_keys(&self, now: UnixTime) -> Result<Vec<String>> {
        let rows = self.db.with(|c| {
            c.query(
                "SELECT public_jwk FROM signing_keys WHERE retire_at IS NULL OR retire_at > ?1 ORDER BY created_at DESC",
                params![secs(now)],
            )
        })?;
        rows.iter().map(|r| r.text(0)).collect()
    }

    fn insert_key(&self, k: &StoredKey) -> Result<()> {
        let scopes = serde_json::to_string(&k.scopes)?;
        let cidrs = serde_json::to_string(&k.allow_cidrs)?;
        self.db
            .with(|c| {
                c.execute(
                    &format!("INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                    params![
                        k.id.as_str(),
                        k.org.as_str(),
                        k.kind.as_str(),
                        k.name.as_str(),
                        k.secret_hash.as_str(),
                        scopes,
                        cidrs,
                        secs(k.created_at),
                        k.expires_at.map(secs),
                        k.revoked_at.map(secs)
                    ],
                )
            })
            .map(drop)
    }

    fn find_key(&self, id: &str) -> Result<Option<StoredKey>> {
        let row = self.db.with(|c| {
            c.query_opt(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"),
                params![id],
            )
        })?;
        row.as_ref().map(key_from_row).transpose()
    }

    fn list_keys(&self, org: &str) -> Result<Vec<StoredKey>> {
        let rows = self.db.with(|c| {
            c.query(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE org = ?1 ORDER BY created_at DESC, id"
                ),
                params![org],
            )
        })?;
        keys(&rows)
    }

    fn revoke_key(&self, id: &str, now: UnixTime) -> Result<bool> {
        self.db.with(|c| {
            c.execute(
                "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, secs(now)],
            )
            .map(|n| n == 1)
        })
    }

    fn expire_key(&self, id: &str, at: UnixTime) -> Result<bool> {
        self.db.with(|c| {
            c.execute(
                "UPDATE api_keys SET expires_at = CASE WHEN expires_at IS NULL OR expires_at > ?2 THEN ?2 ELSE expires_at END
                 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, secs(at)],
            )
            .map(|n| n == 1)
        })
    }

    fn add_revocation(&self, revocation: &Revocation, at: UnixTime) -> Result<Entry> {
        let body = serde_json::to_string(revocation)?;
        let row = self.db.with(|c| {
            c.query_one(
                "INSERT INTO revocations (at, entry) VALUES (?1, ?2) RETURNING seq",
                params![secs(at), body],
            )
        })?;
        Ok(Entry {
            seq: count(row.int(0)?),
            at,
            revocation: revocation.clone(),
        })
    }

    fn add_usage(&self, rows: &[crate::usage::UsageRow]) -> Result<()> {
        self.add_usage_to("usage", rows)
    }

    fn add_usage_hourly(&self, rows: &[crate::usage::UsageRow]) -> Result<()> {
        self.add_usage_to("usage_hourly", rows)
    }

    fn usage_hours(&self, day: &str) -> Result<Vec<crate::usage::UsageRow>> {
        self.usage_where(
            "usage_hourly WHERE day >= ?1 AND day <= ?2 ORDER BY day, subject_kind, subject",
            params![format!("{day}T00"), format!("{day}T23")],
        )
    }

    fn usage_of(&self, kind: &str, subject: &str) -> Result<Vec<crate::usage::UsageRow>> {
        self.usage_where(
            "usage WHERE subject_kind = ?1 AND subject = ?2 ORDER BY day DESC",
            params![kind, subject],
        )
    }

    fn usage_on(&self, day: &str) -> Result<Vec<crate::usage::UsageRow>> {
        self.usage_where(
            "usage WHERE day = ?1 ORDER BY subject_kind, subject",
            params![day],
        )
    }

    fn revoke_key_keeping_admin(&self, id: &str, now: UnixTime) -> Result<RevokeOutcome> {
        self.db.with(|c| {
            // one statement: two concurrent calls can never revoke the last two sk_ keys
            let n = c.execute(
                "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL
                 AND (kind != 'sk' OR (SELECT COUNT(*) FROM api_keys o
                      WHERE o.org = api_keys.org AND o.kind = 'sk' AND o.revoked_at IS NULL
                        AND (o.expires_at IS NULL OR o.expires_at > ?2)) > 1)",
                params![id, secs(now)],
            )?;
            if n == 1 {
                return Ok(RevokeOutcome::Revoked);
            }
            let live = c
                .query_one(
                    "SELECT COUNT(*) FROM api_keys WHERE id = ?1 AND revoked_at IS NULL",
                    params![id],
                )?
                .int(0)?;
            Ok(if live > 0 {
                RevokeOutcome::LastAdminKey
            } else {
                RevokeOutcome::NotLive
            })
        })
    }

    fn append_audit(&self, e: &AuditEntry) -> Result<u64> {
        let row = self.db.with(|c| {
            c.query_one(
                "INSERT INTO audit_log (at, org, actor, actor_kind, action, target, peer, outcome, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING seq",
                params![
                    secs(e.at),
                    e.org.as_str(),
                    e.actor.as_str(),
                    e.actor_kind.as_str(),
                    e.action.as_str(),
                    e.target.as_deref(),
                    e.peer.as_deref(),
                    e.outcome.as_str(),
                    e.detail.as_str()
                ],
            )
        })?;
        Ok(count(row.int(0)?))
    }

    fn audit_after(&self, org: &str, after: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        let rows = self.db.with(|c| {
            c.query(
                "SELECT seq, at, org, actor, actor_kind, action, target, peer, outcome, detail
                 FROM audit_log WHERE org = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                params![
                    org,
                    i64::try_from(after).unwrap_or(i64::MAX),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
            )
        })?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    seq: count(r.int(0)?),
                    at: UnixTime(count(r.int(1)?)),
                    org: r.text(2)?,
                    actor: r.text(3)?,
                    actor_kind: r.text(4)?,
                    action: r.text(5)?,
                    target: r.opt_text(6)?,
                    peer: r.opt_text(7)?,
                    outcome: r.text(8)?,
                    detail: r.text(9)?,
                })
            })
            .collect()
    }

    fn revocations_after(&self, after: u64, limit: usize) -> Result<Vec<Entry>> {
        let rows = self.db.with(|c| {
            c.query(
                "SELECT seq, at, entry FROM revocations WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                params![
                    i64::try_from(after).unwrap_or(i64::MAX),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
            )
        })?;
        rows.iter()
            .map(|r| {
                let seq = r.int(0)?;
                Ok(Entry {
                    seq: count(seq),
                    at: UnixTime(count(r.int(1)?)),
                    revocation: serde_json::from_str(&r.text(2)?)
                        .with_context(|| format!("revocation {seq} is unreadable"))?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn migrations_revocations_and_keys_persist() {
        let dir = std::env::temp_dir().join(format!("cs-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let _ = std::fs::remove_file(&path);
        {
            let s = SqliteStore::open(&path).unwrap();
            s.create_org("org_aaaaaaaaaaaa", "default", UnixTime(1))
                .unwrap();
            let e = s
                .add_revocation(
                    &Revocation::Token {
                        jti: "j".into(),
                        exp: None,
                    },
                    UnixTime(5),
                )
                .unwrap();
            assert_eq!(e.seq, 1);
            s.add_revocation(&Revocation::Key { key_id: "k".into() }, UnixTime(6))
                .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(
            s.default_org().unwrap().as_deref(),
            Some("org_aaaaaaaaaaaa")
        );
        let feed = s.revocations_after(0, 10).unwrap();
        assert_eq!(feed.len(), 2);
        assert_eq!(s.revocations_after(1, 10).unwrap()[0].seq, 2);
        assert_eq!(s.integrity_check().unwrap(), "ok");
        let version: usize = s
            .raw(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len());
        s.add_usage(&[crate::usage::UsageRow {
            day: "2026-11-30".into(),
            subject_kind: "user".into(),
            subject: "alice@org_aaaaaaaaaaaa".into(),
            counts: cloudsignal_broker::usage::Counters {
                connects: 2,
                ..Default::default()
            },
            ..Default::default()
        }])
        .unwrap();
        let seen: (String, i64) = s
            .raw(|c| {
                c.query_row("SELECT user, connects FROM users_seen", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
            })
            .unwrap();
        assert_eq!(seen, ("alice@org_aaaaaaaaaaaa".into(), 2));
        // the audit log is append-only, in the database itself
        let entry = AuditEntry {
            seq: 0,
            at: UnixTime(7),
            org: "org_aaaaaaaaaaaa".into(),
            actor: "k1".into(),
            actor_kind: "sk".into(),
            action: "key.revoke".into(),
            target: Some("k2".into()),
            peer: Some("127.0.0.1".into()),
            outcome: "ok".into(),
            detail: String::new(),
        };
        assert_eq!(s.append_audit(&entry).unwrap(), 1);
        let listed = s.audit_after("org_aaaaaaaaaaaa", 0, 10).unwrap();
        assert_eq!(listed, vec![AuditEntry { seq: 1, ..entry }]);
        assert!(s
            .raw(|c| c.execute("UPDATE audit_log SET outcome = 'forged'", []))
            .is_err());
        assert!(s.raw(|c| c.execute("DELETE FROM audit_log", [])).is_err());
        assert!(s.audit_after("org_bbbbbbbbbbbb", 0, 10).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
