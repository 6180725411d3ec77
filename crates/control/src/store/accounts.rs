//! People, one-time links, and OAuth sign-in state: requests, codes, sessions and tokens.
//! Single-use steps (a code, a refresh token, a link) are one conditional UPDATE each, so two
//! racing redemptions cannot both succeed.

use super::{secs, time, SqliteStore};
use crate::oauth::flow::ValidRequest;
use anyhow::Result;
use cloudsignal_core::UnixTime;
use rusqlite::{params, OptionalExtension};

/// A person who signs in to the CLI and the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Account {
    /// `acct_…`.
    pub id: String,
    /// Their org.
    pub org: String,
    /// Their e-mail address (unique, case ignored).
    pub email: String,
    /// Display name.
    pub name: String,
    /// `owner`, `admin` or `viewer`.
    pub role: String,
    /// argon2id PHC string (`None`: no password set).
    #[serde(skip)]
    pub password_hash: Option<String>,
    /// Created at.
    pub created_at: UnixTime,
    /// Disabled at.
    pub disabled_at: Option<UnixTime>,
}

/// A one-time link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    /// The org.
    pub org: String,
    /// The address it is for (`None`: the person gives it).
    pub email: Option<String>,
    /// The role it grants.
    pub role: String,
}

/// A redeemed authorization code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    /// Who signed in.
    pub account_id: String,
    /// For which client.
    pub client_id: String,
    /// The redirect URI of its request.
    pub redirect_uri: String,
    /// The PKCE challenge of its request.
    pub code_challenge: String,
    /// When it was issued.
    pub created_at: UnixTime,
}

/// What presenting a single-use secret found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed<T> {
    /// Its first use.
    Fresh(T),
    /// Already used: the session it started (or belongs to), to be revoked.
    Replayed(Option<String>),
    /// Unknown.
    Unknown,
}

/// A sign-in session (a refresh-token family).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuthSession {
    /// `ses_…`.
    pub id: String,
    /// Whose.
    pub account_id: String,
    /// The account's e-mail.
    pub email: String,
    /// The account's role.
    pub role: String,
    /// The org.
    pub org: String,
    /// The client (CLI or dashboard).
    pub client_id: String,
    /// Created.
    pub created_at: UnixTime,
    /// Ends at (absolute).
    pub expires_at: UnixTime,
    /// Last refreshed or used.
    pub last_used_at: UnixTime,
    /// Revoked.
    pub revoked_at: Option<UnixTime>,
    /// The address it signed in from.
    pub peer: Option<String>,
}

/// What the sign-in flows keep.
pub trait AccountStore {
    /// Adds a person; `false` when the e-mail address is taken.
    fn create_account(&self, a: &Account) -> Result<bool>;
    /// A person by e-mail (case ignored).
    fn account_by_email(&self, email: &str) -> Result<Option<Account>>;
    /// A person by id.
    fn account_by_id(&self, id: &str) -> Result<Option<Account>>;
    /// Sets a person's role.
    fn set_account_role(&self, id: &str, role: &str) -> Result<()>;
    /// People in `org`.
    fn count_accounts(&self, org: &str) -> Result<usize>;
    /// Records a one-time link by its digest.
    fn add_invitation(&self, digest: &str, inv: &Invitation, now: UnixTime, ttl: u64)
        -> Result<()>;
    /// What an unused, unexpired link grants (without using it).
    fn invitation(&self, digest: &str, now: UnixTime) -> Result<Option<Invitation>>;
    /// Uses a link once (unused and unexpired), returning what it grants.
    fn take_invitation(&self, digest: &str, now: UnixTime) -> Result<Option<Invitation>>;
    /// Records a validated authorization request.
    fn add_auth_request(&self, id: &str, r: &ValidRequest, now: UnixTime) -> Result<()>;
    /// A pending (unused) request and when it was made.
    fn auth_request(&self, id: &str) -> Result<Option<(ValidRequest, UnixTime)>>;
    /// Marks a request used; `false` if it already was.
    fn use_auth_request(&self, id: &str, now: UnixTime) -> Result<bool>;
    /// Records an authorization code by its digest.
    fn add_code(&self, digest: &str, code: &Code) -> Result<()>;
    /// Redeems a code once; a second presentation reports the session the first started.
    fn redeem_code(&self, digest: &str, now: UnixTime) -> Result<Redeemed<Code>>;
    /// Creates a session and ties the code that started it to it.
    fn create_session(&self, s: &AuthSession, code_digest: Option<&str>) -> Result<()>;
    /// Records an access or refresh token by its digest.
    fn add_auth_token(
        &self,
        digest: &str,
        session: &str,
        kind: &str,
        now: UnixTime,
        expires: UnixTime,
    ) -> Result<()>;
    /// The live session (and its live account) of a valid access token; marks it used.
    fn session_by_access(
        &self,
        digest: &str,
        now: UnixTime,
    ) -> Result<Option<(AuthSession, Account)>>;
    /// Rotates a refresh token once: its session, or the session to revoke on reuse.
    fn rotate_refresh(&self, digest: &str, now: UnixTime) -> Result<Redeemed<AuthSession>>;
    /// The session a token (access or refresh) belongs to.
    fn session_of_token(&self, digest: &str) -> Result<Option<String>>;
    /// Revokes a session (all its tokens); whether it was live.
    fn revoke_session(&self, id: &str, now: UnixTime) -> Result<bool>;
    /// One session.
    fn auth_session(&self, id: &str) -> Result<Option<AuthSession>>;
    /// The sessions of `org`, newest first.
    fn auth_sessions(&self, org: &str, now: UnixTime) -> Result<Vec<AuthSession>>;
}

const ACCOUNT_COLUMNS: &str = "id, org, email, name, role, password_hash, created_at, disabled_at";

fn account_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        id: r.get(0)?,
        org: r.get(1)?,
        email: r.get(2)?,
        name: r.get(3)?,
        role: r.get(4)?,
        password_hash: r.get(5)?,
        created_at: time(r.get(6)?).unwrap_or(UnixTime(0)),
        disabled_at: time(r.get(7)?),
    })
}

const SESSION_COLUMNS: &str = "s.id, s.account_id, a.email, a.role, s.org, s.client_id, s.created_at, s.expires_at, s.last_used_at, s.revoked_at, s.peer";

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuthSession> {
    Ok(AuthSession {
        id: r.get(0)?,
        account_id: r.get(1)?,
        email: r.get(2)?,
        role: r.get(3)?,
        org: r.get(4)?,
        client_id: r.get(5)?,
        created_at: time(r.get(6)?).unwrap_or(UnixTime(0)),
        expires_at: time(r.get(7)?).unwrap_or(UnixTime(0)),
        last_used_at: time(r.get(8)?).unwrap_or(UnixTime(0)),
        revoked_at: time(r.get(9)?),
        peer: r.get(10)?,
    })
}

/// The account matching `condition` on `?1` (a constant condition, never input).
fn account_where(
    c: &rusqlite::Connection,
    condition: &str,
    value: &str,
) -> rusqlite::Result<Option<Account>> {
    c.query_row(
        &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE {condition}"),
        [value],
        account_row,
    )
    .optional()
}

/// The invitation matching `condition` (a constant condition, never input).
fn invitation_where(
    c: &rusqlite::Connection,
    condition: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Option<Invitation>> {
    c.query_row(
        &format!("SELECT org, email, role FROM invitations WHERE {condition}"),
        params,
        |r| {
            Ok(Invitation {
                org: r.get(0)?,
                email: r.get(1)?,
                role: r.get(2)?,
            })
        },
    )
    .optional()
}

fn session_by_id(c: &rusqlite::Connection, id: &str) -> rusqlite::Result<Option<AuthSession>> {
    c.query_row(
        &format!("SELECT {SESSION_COLUMNS} FROM auth_sessions s JOIN accounts a ON a.id = s.account_id WHERE s.id = ?1"),
        [id],
        session_row,
    )
    .optional()
}

impl AccountStore for SqliteStore {
    fn create_account(&self, a: &Account) -> Result<bool> {
        self.with(|c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO accounts (id, org, email, name, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![a.id, a.org, a.email, a.name, a.role, a.password_hash, secs(a.created_at)],
            )?;
            Ok(n == 1)
        })
    }

    fn account_by_email(&self, email: &str) -> Result<Option<Account>> {
        self.with(|c| account_where(c, "email = ?1 COLLATE NOCASE", email))
    }

    fn account_by_id(&self, id: &str) -> Result<Option<Account>> {
        self.with(|c| account_where(c, "id = ?1", id))
    }

    fn set_account_role(&self, id: &str, role: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE accounts SET role = ?2 WHERE id = ?1",
                params![id, role],
            )
            .map(drop)
        })
    }

    fn count_accounts(&self, org: &str) -> Result<usize> {
        self.with(|c| {
            c.query_row("SELECT COUNT(*) FROM accounts WHERE org = ?1", [org], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| usize::try_from(n).unwrap_or(0))
        })
    }

    fn add_invitation(
        &self,
        digest: &str,
        inv: &Invitation,
        now: UnixTime,
        ttl: u64,
    ) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO invitations (digest, org, email, role, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![digest, inv.org, inv.email, inv.role, secs(now), secs(now.plus(ttl))],
            )
            .map(drop)
        })
    }

    fn invitation(&self, digest: &str, now: UnixTime) -> Result<Option<Invitation>> {
        self.with(|c| {
            invitation_where(
                c,
                "digest = ?1 AND used_at IS NULL AND expires_at > ?2",
                params![digest, secs(now)],
            )
        })
    }

    fn take_invitation(&self, digest: &str, now: UnixTime) -> Result<Option<Invitation>> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE invitations SET used_at = ?2 WHERE digest = ?1 AND used_at IS NULL AND expires_at > ?2",
                params![digest, secs(now)],
            )?;
            if n != 1 {
                return Ok(None);
            }
            invitation_where(c, "digest = ?1", [digest])
        })
    }

    fn add_auth_request(&self, id: &str, r: &ValidRequest, now: UnixTime) -> Result<()> {
        self.with(|c| {
            // requests older than a day are of no use to anyone
            c.execute("DELETE FROM oauth_requests WHERE created_at < ?1", [secs(now) - 86_400])?;
            c.execute(
                "INSERT INTO oauth_requests (id, client_id, redirect_uri, code_challenge, state, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, r.client_id, r.redirect_uri, r.code_challenge, r.state, secs(now)],
            )
            .map(drop)
        })
    }

    fn auth_request(&self, id: &str) -> Result<Option<(ValidRequest, UnixTime)>> {
        self.with(|c| {
            c.query_row(
                "SELECT client_id, redirect_uri, code_challenge, state, created_at FROM oauth_requests WHERE id = ?1 AND used_at IS NULL",
                [id],
                |r| {
                    Ok((
                        ValidRequest {
                            client_id: r.get(0)?,
                            redirect_uri: r.get(1)?,
                            code_challenge: r.get(2)?,
                            state: r.get(3)?,
                        },
                        time(r.get(4)?).unwrap_or(UnixTime(0)),
                    ))
                },
            )
            .optional()
        })
    }

    fn use_auth_request(&self, id: &str, now: UnixTime) -> Result<bool> {
        self.with(|c| {
            c.execute(
                "UPDATE oauth_requests SET used_at = ?2 WHERE id = ?1 AND used_at IS NULL",
                params![id, secs(now)],
            )
            .map(|n| n == 1)
        })
    }

    fn add_code(&self, digest: &str, code: &Code) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO oauth_codes (digest, account_id, client_id, redirect_uri, code_challenge, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![digest, code.account_id, code.client_id, code.redirect_uri, code.code_challenge, secs(code.created_at)],
            )
            .map(drop)
        })
    }

    fn redeem_code(&self, digest: &str, now: UnixTime) -> Result<Redeemed<Code>> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE oauth_codes SET used_at = ?2 WHERE digest = ?1 AND used_at IS NULL",
                params![digest, secs(now)],
            )?;
            let row = c
                .query_row(
                    "SELECT account_id, client_id, redirect_uri, code_challenge, created_at, session_id FROM oauth_codes WHERE digest = ?1",
                    [digest],
                    |r| {
                        Ok((
                            Code {
                                account_id: r.get(0)?,
                                client_id: r.get(1)?,
                                redirect_uri: r.get(2)?,
                                code_challenge: r.get(3)?,
                                created_at: time(r.get(4)?).unwrap_or(UnixTime(0)),
                            },
                            r.get::<_, Option<String>>(5)?,
                        ))
                    },
                )
                .optional()?;
            Ok(match (row, n) {
                (None, _) => Redeemed::Unknown,
                (Some((code, _)), 1) => Redeemed::Fresh(code),
                (Some((_, session)), _) => Redeemed::Replayed(session),
            })
        })
    }

    fn create_session(&self, s: &AuthSession, code_digest: Option<&str>) -> Result<()> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "INSERT INTO auth_sessions (id, account_id, org, client_id, created_at, expires_at, last_used_at, peer) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![s.id, s.account_id, s.org, s.client_id, secs(s.created_at), secs(s.expires_at), secs(s.last_used_at), s.peer],
            )?;
            if let Some(d) = code_digest {
                tx.execute("UPDATE oauth_codes SET session_id = ?2 WHERE digest = ?1", params![d, s.id])?;
            }
            tx.commit()
        })
    }

    fn add_auth_token(
        &self,
        digest: &str,
        session: &str,
        kind: &str,
        now: UnixTime,
        expires: UnixTime,
    ) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO auth_tokens (digest, session_id, kind, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![digest, session, kind, secs(now), secs(expires)],
            )
            .map(drop)
        })
    }

    fn session_by_access(
        &self,
        digest: &str,
        now: UnixTime,
    ) -> Result<Option<(AuthSession, Account)>> {
        self.with(|c| {
            let id: Option<String> = c
                .query_row(
                    "SELECT t.session_id FROM auth_tokens t JOIN auth_sessions s ON s.id = t.session_id JOIN accounts a ON a.id = s.account_id
                     WHERE t.digest = ?1 AND t.kind = 'access' AND t.expires_at > ?2 AND s.revoked_at IS NULL AND s.expires_at > ?2 AND a.disabled_at IS NULL",
                    params![digest, secs(now)],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(id) = id else { return Ok(None) };
            c.execute("UPDATE auth_sessions SET last_used_at = ?2 WHERE id = ?1", params![id, secs(now)])?;
            let Some(session) = session_by_id(c, &id)? else { return Ok(None) };
            Ok(account_where(c, "id = ?1", &session.account_id)?.map(|a| (session, a)))
        })
    }

    fn rotate_refresh(&self, digest: &str, now: UnixTime) -> Result<Redeemed<AuthSession>> {
        self.with(|c| {
            let row: Option<(String, Option<i64>, i64)> = c
                .query_row(
                    "SELECT session_id, rotated_at, expires_at FROM auth_tokens WHERE digest = ?1 AND kind = 'refresh'",
                    [digest],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((session_id, rotated, expires)) = row else { return Ok(Redeemed::Unknown) };
            if rotated.is_some() {
                return Ok(Redeemed::Replayed(Some(session_id)));
            }
            if expires <= secs(now) {
                return Ok(Redeemed::Unknown);
            }
            let n = c.execute(
                "UPDATE auth_tokens SET rotated_at = ?2 WHERE digest = ?1 AND rotated_at IS NULL",
                params![digest, secs(now)],
            )?;
            if n != 1 {
                return Ok(Redeemed::Replayed(Some(session_id)));
            }
            c.execute("UPDATE auth_sessions SET last_used_at = ?2 WHERE id = ?1", params![session_id, secs(now)])?;
            Ok(match session_by_id(c, &session_id)? {
                Some(s) => Redeemed::Fresh(s),
                None => Redeemed::Unknown,
            })
        })
    }

    fn session_of_token(&self, digest: &str) -> Result<Option<String>> {
        self.with(|c| {
            c.query_row(
                "SELECT session_id FROM auth_tokens WHERE digest = ?1",
                [digest],
                |r| r.get(0),
            )
            .optional()
        })
    }

    fn revoke_session(&self, id: &str, now: UnixTime) -> Result<bool> {
        self.with(|c| {
            c.execute(
                "UPDATE auth_sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, secs(now)],
            )
            .map(|n| n == 1)
        })
    }

    fn auth_session(&self, id: &str) -> Result<Option<AuthSession>> {
        self.with(|c| session_by_id(c, id))
    }

    fn auth_sessions(&self, org: &str, now: UnixTime) -> Result<Vec<AuthSession>> {
        self.with(|c| {
            let mut q = c.prepare(&format!(
                "SELECT {SESSION_COLUMNS} FROM auth_sessions s JOIN accounts a ON a.id = s.account_id
                 WHERE s.org = ?1 AND s.revoked_at IS NULL AND s.expires_at > ?2 ORDER BY s.created_at DESC"
            ))?;
            let rows = q.query_map(params![org, secs(now)], session_row)?;
            rows.collect()
        })
    }
}
