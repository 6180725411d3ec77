//! People, one-time links, and OAuth sign-in state: requests, codes, sessions and tokens.
//! Single-use steps (a code, a refresh token, a link) are one conditional UPDATE each, so two
//! racing redemptions cannot both succeed.

use super::sql::{params, Conn, Db, Row, Value};
use super::{secs, time, SqlStore};
use crate::oauth::flow::ValidRequest;
use anyhow::Result;
use cloudsignal_core::UnixTime;

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

fn account_row(r: &Row) -> Result<Account> {
    Ok(Account {
        id: r.text(0)?,
        org: r.text(1)?,
        email: r.text(2)?,
        name: r.text(3)?,
        role: r.text(4)?,
        password_hash: r.opt_text(5)?,
        created_at: time(r.opt_int(6)?).unwrap_or(UnixTime(0)),
        disabled_at: time(r.opt_int(7)?),
    })
}

const SESSION_COLUMNS: &str = "s.id, s.account_id, a.email, a.role, s.org, s.client_id, s.created_at, s.expires_at, s.last_used_at, s.revoked_at, s.peer";

fn session_row(r: &Row) -> Result<AuthSession> {
    Ok(AuthSession {
        id: r.text(0)?,
        account_id: r.text(1)?,
        email: r.text(2)?,
        role: r.text(3)?,
        org: r.text(4)?,
        client_id: r.text(5)?,
        created_at: time(r.opt_int(6)?).unwrap_or(UnixTime(0)),
        expires_at: time(r.opt_int(7)?).unwrap_or(UnixTime(0)),
        last_used_at: time(r.opt_int(8)?).unwrap_or(UnixTime(0)),
        revoked_at: time(r.opt_int(9)?),
        peer: r.opt_text(10)?,
    })
}

/// The account matching `condition` on `?1` (a constant condition, never input).
fn account_where(c: &mut dyn Conn, condition: &str, value: &str) -> Result<Option<Account>> {
    c.query_opt(
        &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE {condition}"),
        params![value],
    )?
    .as_ref()
    .map(account_row)
    .transpose()
}

/// The invitation matching `condition` (a constant condition, never input).
fn invitation_where(
    c: &mut dyn Conn,
    condition: &str,
    values: &[Value],
) -> Result<Option<Invitation>> {
    c.query_opt(
        &format!("SELECT org, email, role FROM invitations WHERE {condition}"),
        values,
    )?
    .map(|r| {
        Ok(Invitation {
            org: r.text(0)?,
            email: r.opt_text(1)?,
            role: r.text(2)?,
        })
    })
    .transpose()
}

fn session_by_id(c: &mut dyn Conn, id: &str) -> Result<Option<AuthSession>> {
    c.query_opt(
        &format!("SELECT {SESSION_COLUMNS} FROM auth_sessions s JOIN accounts a ON a.id = s.account_id WHERE s.id = ?1"),
        params![id],
    )?
    .as_ref()
    .map(session_row)
    .transpose()
}

impl<D: Db> AccountStore for SqlStore<D> {
    fn create_account(&self, a: &Account) -> Result<bool> {
        self.db.with(|c| {
            // any unique conflict (the id, or the e-mail address in any letter case) inserts
            // nothing
            let n = c.execute(
                "INSERT INTO accounts (id, org, email, name, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT DO NOTHING",
                params![a.id.as_str(), a.org.as_str(), a.email.as_str(), a.name.as_str(), a.role.as_str(), a.password_hash.as_deref(), secs(a.created_at)],
            )?;
            Ok(n == 1)
        })
    }

    fn account_by_email(&self, email: &str) -> Result<Option<Account>> {
        self.db
            .with(|c| account_where(c, "lower(email) = lower(?1)", email))
    }

    fn account_by_id(&self, id: &str) -> Result<Option<Account>> {
        self.db.with(|c| account_where(c, "id = ?1", id))
    }

    fn set_account_role(&self, id: &str, role: &str) -> Result<()> {
        self.db
            .with(|c| {
                c.execute(
                    "UPDATE accounts SET role = ?2 WHERE id = ?1",
                    params![id, role],
                )
            })
            .map(drop)
    }

    fn count_accounts(&self, org: &str) -> Result<usize> {
        let n = self.db.with(|c| {
            c.query_one("SELECT COUNT(*) FROM accounts WHERE org = ?1", params![org])?
                .int(0)
        })?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn add_invitation(
        &self,
        digest: &str,
        inv: &Invitation,
        now: UnixTime,
        ttl: u64,
    ) -> Result<()> {
        self.db
            .with(|c| {
                c.execute(
                    "INSERT INTO invitations (digest, org, email, role, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![digest, inv.org.as_str(), inv.email.as_deref(), inv.role.as_str(), secs(now), secs(now.plus(ttl))],
                )
            })
            .map(drop)
    }

    fn invitation(&self, digest: &str, now: UnixTime) -> Result<Option<Invitation>> {
        self.db.with(|c| {
            invitation_where(
                c,
                "digest = ?1 AND used_at IS NULL AND expires_at > ?2",
                params![digest, secs(now)],
            )
        })
    }

    fn take_invitation(&self, digest: &str, now: UnixTime) -> Result<Option<Invitation>> {
        self.db.with(|c| {
            let n = c.execute(
                "UPDATE invitations SET used_at = ?2 WHERE digest = ?1 AND used_at IS NULL AND expires_at > ?2",
                params![digest, secs(now)],
            )?;
            if n != 1 {
                return Ok(None);
            }
            invitation_where(c, "digest = ?1", params![digest])
        })
    }

    fn add_auth_request(&self, id: &str, r: &ValidRequest, now: UnixTime) -> Result<()> {
        self.db.with(|c| {
            // requests older than a day are of no use to anyone
            c.execute(
                "DELETE FROM oauth_requests WHERE created_at < ?1",
                params![secs(now) - 86_400],
            )?;
            c.execute(
                "INSERT INTO oauth_requests (id, client_id, redirect_uri, code_challenge, state, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, r.client_id.as_str(), r.redirect_uri.as_str(), r.code_challenge.as_str(), r.state.as_str(), secs(now)],
            )
            .map(drop)
        })
    }

    fn auth_request(&self, id: &str) -> Result<Option<(ValidRequest, UnixTime)>> {
        let row = self.db.with(|c| {
            c.query_opt(
                "SELECT client_id, redirect_uri, code_challenge, state, created_at FROM oauth_requests WHERE id = ?1 AND used_at IS NULL",
                params![id],
            )
        })?;
        row.map(|r| {
            Ok((
                ValidRequest {
                    client_id: r.text(0)?,
                    redirect_uri: r.text(1)?,
                    code_challenge: r.text(2)?,
                    state: r.text(3)?,
                },
                time(r.opt_int(4)?).unwrap_or(UnixTime(0)),
            ))
        })
        .transpose()
    }

    fn use_auth_request(&self, id: &str, now: UnixTime) -> Result<bool> {
        self.db.with(|c| {
            c.execute(
                "UPDATE oauth_requests SET used_at = ?2 WHERE id = ?1 AND used_at IS NULL",
                params![id, secs(now)],
            )
            .map(|n| n == 1)
        })
    }

    fn add_code(&self, digest: &str, code: &Code) -> Result<()> {
        self.db
            .with(|c| {
                c.execute(
                    "INSERT INTO oauth_codes (digest, account_id, client_id, redirect_uri, code_challenge, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![digest, code.account_id.as_str(), code.client_id.as_str(), code.redirect_uri.as_str(), code.code_challenge.as_str(), secs(code.created_at)],
                )
            })
            .map(drop)
    }

    fn redeem_code(&self, digest: &str, now: UnixTime) -> Result<Redeemed<Code>> {
        self.db.with(|c| {
            let n = c.execute(
                "UPDATE oauth_codes SET used_at = ?2 WHERE digest = ?1 AND used_at IS NULL",
                params![digest, secs(now)],
            )?;
            let row = c.query_opt(
                "SELECT account_id, client_id, redirect_uri, code_challenge, created_at, session_id FROM oauth_codes WHERE digest = ?1",
                params![digest],
            )?;
            let Some(r) = row else {
                return Ok(Redeemed::Unknown);
            };
            if n == 1 {
                return Ok(Redeemed::Fresh(Code {
                    account_id: r.text(0)?,
                    client_id: r.text(1)?,
                    redirect_uri: r.text(2)?,
                    code_challenge: r.text(3)?,
                    created_at: time(r.opt_int(4)?).unwrap_or(UnixTime(0)),
                }));
            }
            Ok(Redeemed::Replayed(r.opt_text(5)?))
        })
    }

    fn create_session(&self, s: &AuthSession, code_digest: Option<&str>) -> Result<()> {
        self.db.tx(|c| {
            c.execute(
                "INSERT INTO auth_sessions (id, account_id, org, client_id, created_at, expires_at, last_used_at, peer) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![s.id.as_str(), s.account_id.as_str(), s.org.as_str(), s.client_id.as_str(), secs(s.created_at), secs(s.expires_at), secs(s.last_used_at), s.peer.as_deref()],
            )?;
            if let Some(d) = code_digest {
                c.execute(
                    "UPDATE oauth_codes SET session_id = ?2 WHERE digest = ?1",
                    params![d, s.id.as_str()],
                )?;
            }
            Ok(())
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
        self.db
            .with(|c| {
                c.execute(
                    "INSERT INTO auth_tokens (digest, session_id, kind, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![digest, session, kind, secs(now), secs(expires)],
                )
            })
            .map(drop)
    }

    fn session_by_access(
        &self,
        digest: &str,
        now: UnixTime,
    ) -> Result<Option<(AuthSession, Account)>> {
        self.db.with(|c| {
            let row = c.query_opt(
                "SELECT t.session_id FROM auth_tokens t JOIN auth_sessions s ON s.id = t.session_id JOIN accounts a ON a.id = s.account_id
                 WHERE t.digest = ?1 AND t.kind = 'access' AND t.expires_at > ?2 AND s.revoked_at IS NULL AND s.expires_at > ?2 AND a.disabled_at IS NULL",
                params![digest, secs(now)],
            )?;
            let Some(row) = row else { return Ok(None) };
            let id = row.text(0)?;
            c.execute(
                "UPDATE auth_sessions SET last_used_at = ?2 WHERE id = ?1",
                params![id.as_str(), secs(now)],
            )?;
            let Some(session) = session_by_id(c, &id)? else {
                return Ok(None);
            };
            Ok(account_where(c, "id = ?1", &session.account_id)?.map(|a| (session, a)))
        })
    }

    fn rotate_refresh(&self, digest: &str, now: UnixTime) -> Result<Redeemed<AuthSession>> {
        self.db.with(|c| {
            let row = c.query_opt(
                "SELECT session_id, rotated_at, expires_at FROM auth_tokens WHERE digest = ?1 AND kind = 'refresh'",
                params![digest],
            )?;
            let Some(row) = row else {
                return Ok(Redeemed::Unknown);
            };
            let (session_id, rotated, expires) = (row.text(0)?, row.opt_int(1)?, row.int(2)?);
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
            c.execute(
                "UPDATE auth_sessions SET last_used_at = ?2 WHERE id = ?1",
                params![session_id.as_str(), secs(now)],
            )?;
            Ok(match session_by_id(c, &session_id)? {
                Some(s) => Redeemed::Fresh(s),
                None => Redeemed::Unknown,
            })
        })
    }

    fn session_of_token(&self, digest: &str) -> Result<Option<String>> {
        let row = self.db.with(|c| {
            c.query_opt(
                "SELECT session_id FROM auth_tokens WHERE digest = ?1",
                params![digest],
            )
        })?;
        row.map(|r| r.text(0)).transpose()
    }

    fn revoke_session(&self, id: &str, now: UnixTime) -> Result<bool> {
        self.db.with(|c| {
            c.execute(
                "UPDATE auth_sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, secs(now)],
            )
            .map(|n| n == 1)
        })
    }

    fn auth_session(&self, id: &str) -> Result<Option<AuthSession>> {
        self.db.with(|c| session_by_id(c, id))
    }

    fn auth_sessions(&self, org: &str, now: UnixTime) -> Result<Vec<AuthSession>> {
        let rows = self.db.with(|c| {
            c.query(
                &format!(
                    "SELECT {SESSION_COLUMNS} FROM auth_sessions s JOIN accounts a ON a.id = s.account_id
                     WHERE s.org = ?1 AND s.revoked_at IS NULL AND s.expires_at > ?2 ORDER BY s.created_at DESC"
                ),
                params![org, secs(now)],
            )
        })?;
        rows.iter().map(session_row).collect()
    }
}
