//! Revocation at the edge, stored in KV (binding `REVOCATIONS`):
//!
//! - `POST /v1/revoke` (`Authorization: Bearer <CLOUDSIGNAL_ADMIN_SECRET>`) with
//!   `{"jti": "…", "exp": 1767229200}` or `{"user": "<sub>", "at": 1767225600}` (`at`
//!   defaults to now; a later `at` suspends the user until then);
//! - `GET /v1/revocations?after=<cursor>` (`Authorization: Bearer <CLOUDSIGNAL_FEED_SECRET>`,
//!   or the admin secret): the feed brokers poll, core's
//!   [`Feed`](cloudsignal_core::revocation::Feed) shape. It names users and tokens, so it is
//!   never public;
//! - exchanges for a user whose IdP token was issued at or before a user revocation's `at` are
//!   refused, so "sign out everywhere" also stops new credentials until the user signs in again.
//!
//! KV layout: `rev:<seq>` → the entry (also as key metadata, so the feed is one `list`), and
//! `user:<sub>` → the latest user revocation time. `seq` is the revocation time in
//! milliseconds × 1024 plus 10 random bits: increasing without a shared counter, which KV
//! cannot offer. KV is eventually consistent (up to 60 s between locations), so the feed's
//! `next` cursor trails the present by [`FEED_LAG_MS`]: an entry written late elsewhere with an
//! older `seq` is still delivered, and recent entries are delivered again until they are older
//! than the lag (brokers apply entries idempotently). Entries expire from KV once no token
//! they cover can still be valid.

use crate::config::Config;
use crate::http;
use crate::keys::now;
use cloudsignal_core::exchange::MAX_TTL;
use cloudsignal_core::ids::UserId;
use cloudsignal_core::revocation::{Entry, Feed, Revocation};
use cloudsignal_core::UnixTime;
use serde::Deserialize;
use std::cell::RefCell;
use std::collections::HashMap;
use subtle::ConstantTimeEq;
use worker::{Date, Env, KvStore, Request, Response, Result};

/// The KV namespace binding.
pub(crate) const BINDING: &str = "REVOCATIONS";
/// How far the feed cursor trails the present (KV's propagation window).
const FEED_LAG_MS: u64 = 60_000;
/// Entries per feed page.
const PAGE: usize = 1000;
/// How long an isolate trusts a `user:<sub>` lookup (KV itself may lag 60 s between locations).
const USER_CHECK_TTL: u64 = 10;
/// The furthest in the future a suspension may reach.
const MAX_SUSPENSION: u64 = 365 * 86_400;

thread_local! {
    /// `user:<sub>` lookups per isolate: (revoked at, checked at).
    static USERS: RefCell<HashMap<String, (Option<u64>, UnixTime)>> = RefCell::new(HashMap::new());
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    jti: Option<String>,
    exp: Option<u64>,
    user: Option<String>,
    at: Option<u64>,
}

fn kv(env: &Env) -> std::result::Result<KvStore, Result<Response>> {
    env.kv(BINDING).map_err(|_| {
        http::error(
            501,
            "not_configured",
            "revocation needs the REVOCATIONS KV namespace binding (see worker/README.md)",
        )
    })
}

/// Whether the request's bearer credential equals one of `secrets` (constant time).
fn bearer_is(req: &Request, secrets: &[&str]) -> bool {
    let given = req
        .headers()
        .get("authorization")
        .ok()
        .flatten()
        .unwrap_or_default();
    let given = given
        .strip_prefix("Bearer ")
        .or_else(|| given.strip_prefix("bearer "))
        .unwrap_or("")
        .trim();
    // equal lengths compared in constant time; the length itself is not secret
    secrets.iter().fold(false, |ok, secret| {
        ok | (given.len() == secret.len() && bool::from(given.as_bytes().ct_eq(secret.as_bytes())))
    })
}

fn admin(req: &Request, cfg: &Config) -> std::result::Result<(), Result<Response>> {
    let Some(secret) = cfg.admin_secret.as_deref() else {
        return Err(http::error(
            501,
            "not_configured",
            "revocation needs the CLOUDSIGNAL_ADMIN_SECRET secret (see worker/README.md)",
        ));
    };
    if bearer_is(req, &[secret]) {
        Ok(())
    } else {
        http::log(
            "revoke",
            &[("outcome", "refused"), ("error", "bad_admin_secret")],
        );
        Err(http::error(
            401,
            "invalid_token",
            "POST /v1/revoke needs 'Authorization: Bearer <CLOUDSIGNAL_ADMIN_SECRET>'",
        ))
    }
}

fn random_bits() -> u64 {
    let mut b = [0u8; 2];
    // without randomness, two revocations in one millisecond still get distinct seqs
    // from their content through the KV key; 0 is a safe fallback
    let _ = getrandom::getrandom(&mut b);
    u64::from(u16::from_le_bytes(b) & 0x3ff)
}

fn valid_jti(jti: &str) -> bool {
    (1..=64).contains(&jti.len())
        && jti
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn parse(
    body: &str,
    cfg: &Config,
    t: UnixTime,
) -> std::result::Result<(Revocation, UnixTime), String> {
    let r: RevokeRequest = serde_json::from_str(body).map_err(|e| format!("body: {e}"))?;
    match (r.jti, r.user) {
        (Some(jti), None) => {
            if r.at.is_some() {
                return Err("'at' goes with 'user', not 'jti'".into());
            }
            if !valid_jti(&jti) {
                return Err("jti must be 1-64 characters from [A-Za-z0-9_-]".into());
            }
            Ok((
                Revocation::Token {
                    jti,
                    exp: r.exp.map(UnixTime),
                },
                t,
            ))
        }
        (None, Some(user)) => {
            if r.exp.is_some() {
                return Err("'exp' goes with 'jti', not 'user'".into());
            }
            let user = UserId::parse(&user).map_err(|e| e.to_string())?;
            let at = UnixTime(r.at.unwrap_or(t.secs()));
            if at.secs() > t.secs().saturating_add(MAX_SUSPENSION) {
                return Err("'at' may be at most 365 days ahead".into());
            }
            Ok((
                Revocation::User {
                    org: cfg.policy.org.as_str().to_owned(),
                    user: user.as_str().to_owned(),
                },
                at,
            ))
        }
        _ => Err("give exactly one of 'jti' and 'user'".into()),
    }
}

/// Seconds an entry must outlive `now`: until no token it covers can still be valid.
fn retention(e: &Entry, now: UnixTime) -> u64 {
    let ahead = |t: UnixTime| t.secs().saturating_sub(now.secs());
    let keep = match &e.revocation {
        Revocation::Token { exp: Some(exp), .. } => ahead(*exp),
        Revocation::User { .. } => ahead(e.at) + MAX_TTL,
        _ => MAX_TTL,
    };
    keep.max(60) + 60
}

/// `POST /v1/revoke`.
pub(crate) async fn revoke(mut req: Request, env: &Env, cfg: &Config) -> Result<Response> {
    if let Err(resp) = admin(&req, cfg) {
        return resp;
    }
    let store = match kv(env) {
        Ok(k) => k,
        Err(resp) => return resp,
    };
    let body = req.text().await.unwrap_or_default();
    if body.len() > 4096 {
        return http::error(413, "payload_too_large", "the body may be at most 4 KiB");
    }
    let t = now();
    let (revocation, at) = match parse(&body, cfg, t) {
        Ok(r) => r,
        Err(e) => return http::error(400, "invalid_request", &e),
    };
    let entry = Entry {
        seq: Date::now().as_millis() * 1024 + random_bits(),
        at,
        revocation,
    };
    let ttl = retention(&entry, t);
    let stored = async {
        store
            .put(
                &format!("rev:{:020}", entry.seq),
                serde_json::to_string(&entry)?,
            )?
            .metadata(&entry)?
            .expiration_ttl(ttl)
            .execute()
            .await?;
        if let Revocation::User { user, .. } = &entry.revocation {
            let key = format!("user:{user}");
            let previous = store
                .get(&key)
                .text()
                .await?
                .and_then(|v| v.parse::<u64>().ok());
            let latest = previous.unwrap_or(0).max(entry.at.secs());
            store
                .put(&key, latest.to_string())?
                .expiration_ttl(ttl)
                .execute()
                .await?;
            USERS.with(|u| u.borrow_mut().insert(user.clone(), (Some(latest), t)));
        }
        Ok::<_, worker::Error>(())
    };
    if let Err(e) = stored.await {
        http::log(
            "revoke",
            &[("outcome", "error"), ("reason", &e.to_string())],
        );
        return http::error(
            503,
            "storage_unavailable",
            "the revocation could not be stored; retry",
        );
    }
    let kind = match &entry.revocation {
        Revocation::Token { .. } => "token",
        Revocation::User { .. } => "user",
        _ => "key",
    };
    http::log(
        "revoke",
        &[
            ("outcome", "ok"),
            ("kind", kind),
            ("seq", &entry.seq.to_string()),
        ],
    );
    http::json(201, &serde_json::json!({ "revocation": entry }))
}

/// `GET /v1/revocations?after=<cursor>`.
pub(crate) async fn feed(req: &Request, env: &Env, cfg: &Config) -> Result<Response> {
    let secrets: Vec<&str> = [cfg.feed_secret.as_deref(), cfg.admin_secret.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    if secrets.is_empty() {
        return http::error(
            501,
            "not_configured",
            "the revocation feed needs the CLOUDSIGNAL_FEED_SECRET secret (see worker/README.md)",
        );
    }
    if !bearer_is(req, &secrets) {
        http::log(
            "feed",
            &[("outcome", "refused"), ("error", "bad_feed_secret")],
        );
        return http::error(
            401,
            "invalid_token",
            "GET /v1/revocations needs 'Authorization: Bearer <CLOUDSIGNAL_FEED_SECRET>'",
        );
    }
    let store = match kv(env) {
        Ok(k) => k,
        Err(resp) => return resp,
    };
    let url = req.url()?;
    let after = match url.query_pairs().find(|(k, _)| k == "after") {
        None => 0,
        Some((_, v)) => match v.parse::<u64>() {
            Ok(a) => a,
            Err(_) => {
                return http::error(
                    400,
                    "invalid_request",
                    "'after' must be an unsigned integer",
                )
            }
        },
    };
    let mut entries: Vec<Entry> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut list = store.list().prefix("rev:".into());
        if let Some(c) = cursor.take() {
            list = list.cursor(c);
        }
        let page = match list.execute().await {
            Ok(p) => p,
            Err(e) => {
                http::log("feed", &[("outcome", "error"), ("reason", &e.to_string())]);
                return http::error(
                    503,
                    "storage_unavailable",
                    "the feed could not be read; retry",
                );
            }
        };
        for key in page.keys {
            if let Some(e) = key
                .metadata
                .and_then(|m| serde_json::from_value::<Entry>(m).ok())
            {
                if e.seq > after {
                    entries.push(e);
                }
            }
        }
        match page.cursor {
            Some(c) if !page.list_complete && !c.is_empty() => cursor = Some(c),
            _ => break,
        }
    }
    entries.sort_by_key(|e| e.seq);
    entries.truncate(PAGE);
    let settled = Date::now().as_millis().saturating_sub(FEED_LAG_MS) * 1024;
    let next = entries
        .last()
        .map_or(after, |e| e.seq.min(settled))
        .max(after);
    let mut resp = http::json(
        200,
        &Feed {
            revocations: entries,
            next,
        },
    )?;
    resp.headers_mut().set("cache-control", "no-store")?;
    Ok(resp)
}

/// When `user` was last revoked, if ever (isolate memory for a few seconds, else KV). A KV
/// failure counts as "not revoked" and is logged: an outage must not lock every user out,
/// and brokers still enforce the feed.
pub(crate) async fn user_revoked_at(env: &Env, user: &str) -> Option<u64> {
    let t = now();
    let cached = USERS.with(|u| u.borrow().get(user).copied());
    if let Some((at, checked)) = cached {
        if t.secs() < checked.secs() + USER_CHECK_TTL {
            return at;
        }
    }
    let store = env.kv(BINDING).ok()?;
    let at = match store.get(&format!("user:{user}")).text().await {
        Ok(v) => v.and_then(|v| v.parse::<u64>().ok()),
        Err(e) => {
            http::log("revocation_check_failed", &[("reason", &e.to_string())]);
            return None;
        }
    };
    USERS.with(|u| {
        let mut u = u.borrow_mut();
        if u.len() > 10_000 {
            u.clear();
        }
        u.insert(user.to_owned(), (at, t));
    });
    at
}
