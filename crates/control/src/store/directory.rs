//! The directory sync's tables: users per source with their standing, and each source's status.

use super::sql::{params, Db, Row};
use super::{secs, SqlStore};
use crate::directory::plan::{Standing, Stored};
use crate::directory::sync::Lookup;
use crate::directory::DirUser;
use anyhow::Result;
use cloudsignal_core::UnixTime;

/// A stored directory user with its source and org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryRow {
    /// The source's name.
    pub source: String,
    /// The org its users belong to.
    pub org: String,
    /// The user and standing.
    pub stored: Stored,
}

/// What the directory sync keeps.
pub trait DirectoryStore {
    /// Every user stored for `source`.
    fn directory_users(&self, source: &str) -> Result<Vec<Stored>>;
    /// Writes one sync's rows for `source` (users of `org`) in one transaction.
    fn apply_directory(
        &self,
        source: &str,
        org: &str,
        rows: &[Stored],
        now: UnixTime,
    ) -> Result<()>;
    /// The rows, of every source, of the person `who` in `org` (by user name or e-mail
    /// address; ASCII case ignored, as LDAP compares them).
    fn directory_lookup(&self, org: &str, who: Lookup<'_>) -> Result<Vec<DirectoryRow>>;
    /// Saves `source`'s status document.
    fn save_directory_status(&self, source: &str, status: &str) -> Result<()>;
    /// Every source's status document: (source, JSON).
    fn directory_status(&self) -> Result<Vec<(String, String)>>;
}

const COLUMNS: &str = "source, org, id, username, dn, email, name, groups, standing";

fn row(r: &Row) -> Result<DirectoryRow> {
    let standing = r.text(8)?;
    Ok(DirectoryRow {
        source: r.text(0)?,
        org: r.text(1)?,
        stored: Stored {
            user: DirUser {
                id: r.text(2)?,
                username: r.text(3)?,
                dn: r.text(4)?,
                email: r.opt_text(5)?,
                name: r.opt_text(6)?,
                groups: super::json_list(&r.text(7)?),
                disabled: standing == "disabled",
            },
            // the CHECK constraint admits no other value; an unknown one reads as removed
            standing: Standing::parse(&standing).unwrap_or(Standing::Removed),
        },
    })
}

/// Rows per upsert statement: one round trip per chunk, not per user (a 10,000-user first
/// sync on PostgreSQL); 10 parameters a row stays far below both engines' limits.
const CHUNK: usize = 200;

/// The upsert of `n` rows.
fn upsert(n: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO directory_users (source, org, id, username, dn, email, name, groups, standing, changed_at) VALUES ",
    );
    for i in 0..n {
        let p = i * 10;
        if i > 0 {
            sql.push(',');
        }
        sql.push('(');
        for k in 1..=10 {
            if k > 1 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("?{}", p + k));
        }
        sql.push(')');
    }
    sql.push_str(
        " ON CONFLICT (source, id) DO UPDATE SET org = excluded.org, username = excluded.username,
           dn = excluded.dn, email = excluded.email, name = excluded.name, groups = excluded.groups,
           standing = excluded.standing, changed_at = excluded.changed_at",
    );
    sql
}

impl<D: Db> DirectoryStore for SqlStore<D> {
    fn directory_users(&self, source: &str) -> Result<Vec<Stored>> {
        let rows = self.db.with(|c| {
            c.query(
                &format!("SELECT {COLUMNS} FROM directory_users WHERE source = ?1"),
                params![source],
            )
        })?;
        rows.iter().map(|r| row(r).map(|r| r.stored)).collect()
    }

    fn apply_directory(
        &self,
        source: &str,
        org: &str,
        rows: &[Stored],
        now: UnixTime,
    ) -> Result<()> {
        self.db.tx(|c| {
            for chunk in rows.chunks(CHUNK) {
                let mut values = Vec::with_capacity(chunk.len() * 10);
                for s in chunk {
                    let u = &s.user;
                    let groups = serde_json::to_string(&u.groups).unwrap_or_else(|_| "[]".into());
                    values.extend_from_slice(params![
                        source,
                        org,
                        u.id.as_str(),
                        u.username.as_str(),
                        u.dn.as_str(),
                        u.email.as_deref(),
                        u.name.as_deref(),
                        groups,
                        s.standing.as_str(),
                        secs(now)
                    ]);
                }
                c.execute(&upsert(chunk.len()), &values)?;
            }
            Ok(())
        })
    }

    fn directory_lookup(&self, org: &str, who: Lookup<'_>) -> Result<Vec<DirectoryRow>> {
        // a constant column, never input
        let (column, value) = match who {
            Lookup::Username(name) => ("username", name),
            Lookup::Email(email) => ("email", email),
        };
        let rows = self.db.with(|c| {
            c.query(
                &format!(
                    "SELECT {COLUMNS} FROM directory_users WHERE org = ?1 AND lower({column}) = lower(?2) ORDER BY source, id"
                ),
                params![org, value],
            )
        })?;
        rows.iter().map(row).collect()
    }

    fn save_directory_status(&self, source: &str, status: &str) -> Result<()> {
        self.db
            .with(|c| {
                c.execute(
                    "INSERT INTO directory_status (source, status) VALUES (?1, ?2)
                     ON CONFLICT (source) DO UPDATE SET status = ?2",
                    params![source, status],
                )
            })
            .map(drop)
    }

    fn directory_status(&self) -> Result<Vec<(String, String)>> {
        let rows = self.db.with(|c| {
            c.query(
                "SELECT source, status FROM directory_status ORDER BY source",
                &[],
            )
        })?;
        rows.iter().map(|r| Ok((r.text(0)?, r.text(1)?))).collect()
    }
}
