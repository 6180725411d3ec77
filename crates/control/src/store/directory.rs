//! The directory sync's tables: users per source with their standing, and each source's status.

use super::{secs, SqliteStore};
use crate::directory::plan::{Standing, Stored};
use crate::directory::sync::Lookup;
use crate::directory::DirUser;
use anyhow::Result;
use cloudsignal_core::UnixTime;
use rusqlite::params;

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

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DirectoryRow> {
    let standing: String = r.get(8)?;
    Ok(DirectoryRow {
        source: r.get(0)?,
        org: r.get(1)?,
        stored: Stored {
            user: DirUser {
                id: r.get(2)?,
                username: r.get(3)?,
                dn: r.get(4)?,
                email: r.get(5)?,
                name: r.get(6)?,
                groups: super::json_list(&r.get::<_, String>(7)?),
                disabled: standing == "disabled",
            },
            // the CHECK constraint admits no other value; an unknown one reads as removed
            standing: Standing::parse(&standing).unwrap_or(Standing::Removed),
        },
    })
}

impl DirectoryStore for SqliteStore {
    fn directory_users(&self, source: &str) -> Result<Vec<Stored>> {
        self.with(|c| {
            let mut q = c.prepare(&format!(
                "SELECT {COLUMNS} FROM directory_users WHERE source = ?1"
            ))?;
            let rows = q.query_map([source], row)?;
            rows.map(|r| r.map(|r| r.stored)).collect()
        })
    }

    fn apply_directory(
        &self,
        source: &str,
        org: &str,
        rows: &[Stored],
        now: UnixTime,
    ) -> Result<()> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            {
                let mut up = tx.prepare(
                    "INSERT INTO directory_users (source, org, id, username, dn, email, name, groups, standing, changed_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (source, id) DO UPDATE SET org = ?2, username = ?4, dn = ?5, email = ?6,
                       name = ?7, groups = ?8, standing = ?9, changed_at = ?10",
                )?;
                for s in rows {
                    let u = &s.user;
                    let groups = serde_json::to_string(&u.groups).unwrap_or_else(|_| "[]".into());
                    up.execute(params![
                        source,
                        org,
                        u.id,
                        u.username,
                        u.dn,
                        u.email,
                        u.name,
                        groups,
                        s.standing.as_str(),
                        secs(now)
                    ])?;
                }
            }
            tx.commit()
        })
    }

    fn directory_lookup(&self, org: &str, who: Lookup<'_>) -> Result<Vec<DirectoryRow>> {
        // a constant column, never input
        let (column, value) = match who {
            Lookup::Username(name) => ("username", name),
            Lookup::Email(email) => ("email", email),
        };
        self.with(|c| {
            let mut q = c.prepare(&format!(
                "SELECT {COLUMNS} FROM directory_users WHERE org = ?1 AND {column} = ?2 COLLATE NOCASE ORDER BY source, id"
            ))?;
            let rows = q.query_map([org, value], row)?;
            rows.collect()
        })
    }

    fn save_directory_status(&self, source: &str, status: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO directory_status (source, status) VALUES (?1, ?2)
                 ON CONFLICT (source) DO UPDATE SET status = ?2",
                params![source, status],
            )
            .map(drop)
        })
    }

    fn directory_status(&self) -> Result<Vec<(String, String)>> {
        self.with(|c| {
            let mut q = c.prepare("SELECT source, status FROM directory_status ORDER BY source")?;
            let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }
}
