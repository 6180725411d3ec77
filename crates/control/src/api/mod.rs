//! The control plane's HTTP API (axum). Errors are RFC 9457 problem documents with stable
//! codes; request bodies are JSON objects with no unknown fields, at most 64 KiB.
//!
//! | route | scope |
//! |---|---|
//! | `GET /healthz`, `GET /.well-known/jwks.json`, `GET /openapi.json` | public |
//! | `GET /v1/revocations?after=<seq>` | `revocations:read` (the feed brokers poll) |
//! | `GET /v1/audit?after=<seq>` | `audit:read` |
//! | `POST /v1/token/exchange` | `Authorization: Bearer <IdP JWT>` (Supabase…) |
//! | `POST /v1/tokens` | `tokens:issue` |
//! | `DELETE /v1/tokens/{jti}`, `POST /v1/users/{id}/revoke`, `POST /v1/certificates/{sha256}/revoke` | `tokens:revoke` |
//! | `POST /v1/keys`, `DELETE /v1/keys/{id}`, `POST /v1/keys/{id}/rotate` | `keys:write` |
//! | `GET /v1/keys` | `keys:read` |
//! | `GET /v1/keys/{id}/usage`, `GET /v1/usage?day=YYYY-MM-DD` | `usage:read` |
//! | `POST /v1/signing-keys/rotate` | an `sk_` key |
//! | `GET /v1/directory/status` | `directory:read` |
//! | `POST /v1/directory/sync` | `directory:sync` |
//! | `GET /v1/sessions`, `GET /v1/stats/stream` (and kick: `sessions:write`) | `sessions:read` |
//! | `GET /v1/cluster` (this node's view of its cluster) | `sessions:read`, the operator's org |
//!
//! Requests authenticate with `Authorization: Bearer <sk_… or rk_…>`; `sk_` keys hold every
//! scope in their org, `rk_` keys only the scopes they were created with. Key management is
//! least-privilege ([`privilege`]): a key acts only on keys no wider than itself, and the last
//! live `sk_` key cannot be revoked. Every key-management and revocation action, allowed or
//! refused, is appended to the audit log. Failed authentications are counted per source
//! address; too many ban the source for a while (429), before any bcrypt runs.

mod directory;
mod keys;
mod live;
mod people;
mod privilege;
mod tokens;

use crate::keys::{KeyRefusal, VerifiedKey};
use crate::{unix_now, ControlPlane};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use cloudsignal_core::ids::UserId;
use cloudsignal_core::revocation::{Feed, Revocation};
use cloudsignal_core::topic::TopicFilter;
use serde::Deserialize;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tracing::{info, warn};

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
const API_SCOPES: [&str; 11] = [
    "tokens:issue",
    "tokens:revoke",
    "keys:read",
    "keys:write",
    "usage:read",
    "audit:read",
    "revocations:read",
    "directory:read",
    "directory:sync",
    "sessions:read",
    "sessions:write",
];

/// An RFC 9457 problem document.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    code: &'static str,
    detail: String,
}

impl Problem {
    fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
        }
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        warn!(error = %e, "control plane internal error");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store could not complete the request; retry",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body =
            cloudsignal_core::problem::document(self.status.as_u16(), self.code, &self.detail);
        let mut r = (self.status, body.to_string()).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(cloudsignal_core::problem::CONTENT_TYPE),
        );
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            // the limits' window (exchanges) and the shortest ban a client should wait out
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"cloudsignal\""),
            );
        }
        r
    }
}

type ApiResult<T> = Result<T, Problem>;

/// The API's routes over `cp`.
pub fn router(cp: Arc<ControlPlane>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/openapi.json", get(openapi))
        .route("/v1/revocations", get(revocations))
        .route("/v1/tokens", post(tokens::issue_token))
        .route("/v1/token/exchange", post(tokens::exchange_token))
        .route("/v1/tokens/{jti}", delete(revoke_token))
        .route("/v1/users/{id}/revoke", post(revoke_user))
        .route("/v1/certificates/{sha256}/revoke", post(revoke_certificate))
        .route("/v1/keys", post(keys::create_key).get(keys::list_keys))
        .route("/v1/keys/{id}", delete(keys::revoke_key))
        .route("/v1/keys/{id}/rotate", post(keys::rotate_key))
        .route("/v1/keys/{id}/usage", get(keys::key_usage))
        .route("/v1/usage", get(keys::usage_today))
        .route("/v1/audit", get(audit_log))
        .route("/v1/signing-keys/rotate", post(rotate_signing_key))
        .route("/v1/directory/status", get(directory::status))
        .route("/v1/directory/sync", post(directory::sync))
        .route("/v1/me", get(people::me))
        .route("/v1/sessions", get(live::sessions))
        .route("/v1/sessions/{id}/kick", post(live::kick))
        .route("/v1/stats/stream", get(live::stats_stream))
        .route("/v1/identity", get(live::identity))
        .route("/v1/cluster", get(live::cluster))
        .route("/v1/auth/sessions", get(people::sessions))
        .route("/v1/auth/sessions/{id}", delete(people::end_session))
        .merge(crate::oauth::routes())
        .merge(crate::dashboard::routes())
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(cp)
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cp: Arc<ControlPlane>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // usage reaches the store every few seconds, off the runtime threads
    let flusher = {
        let cp = cp.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::usage::FLUSH_EVERY);
            loop {
                tick.tick().await;
                let cp = cp.clone();
                let _ = tokio::task::spawn_blocking(move || cp.flush_usage()).await;
            }
        })
    };
    let syncs = crate::directory::sync::spawn(&cp);
    let app = router(cp.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    flusher.abort();
    for s in syncs {
        s.abort();
    }
    let _ = tokio::task::spawn_blocking(move || cp.flush_usage()).await;
    served
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../../openapi.json"),
    )
        .into_response()
}

async fn jwks(State(cp): State<Arc<ControlPlane>>) -> ApiResult<Response> {
    let keys = cp
        .store
        .published_keys(unix_now())
        .map_err(Problem::internal)?;
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .filter_map(|k| serde_json::from_str(k).ok())
        .collect();
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(json!({ "keys": keys })),
    )
        .into_response())
}

/// `?after=<seq>&limit=<n>`: a cursor into an append-only list (the feed, the audit log).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct After {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

async fn revocations(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    q: Result<Query<After>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Feed>> {
    // the feed names users, tokens and keys: only for brokers holding a credential
    authorize(&cp, &headers, peer.ip(), "revocations:read").await?;
    let Query(q) =
        q.map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 1000);
    let entries = cp
        .store
        .revocations_after(q.after, limit)
        .map_err(Problem::internal)?;
    let next = entries.last().map_or(q.after, |e| e.seq);
    Ok(Json(Feed {
        revocations: entries,
        next,
    }))
}

/// Authenticates the request's API key and checks it grants `scope` from `peer`.
async fn authorize(
    cp: &Arc<ControlPlane>,
    headers: &HeaderMap,
    peer: IpAddr,
    scope: &str,
) -> ApiResult<VerifiedKey> {
    let banned = cp
        .api_throttle
        .lock()
        .is_banned(peer, std::time::Instant::now());
    if banned {
        warn!(%peer, "API request refused: source temporarily banned after repeated failures");
        return Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failures",
            "too many failed authentications from this address; retry later",
        ));
    }
    let failed = |p: Problem| {
        if p.status == StatusCode::UNAUTHORIZED {
            cp.api_throttle
                .lock()
                .record_failure(peer, None, std::time::Instant::now());
        }
        p
    };
    let unauthorized = |detail: &str| Problem::new(StatusCode::UNAUTHORIZED, "invalid_key", detail);
    let text = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "missing_key",
                "send Authorization: Bearer <sk_… or rk_… key, or a sign-in access token>",
            )
        })
        .map_err(failed)?
        .trim()
        .to_owned();
    let now = unix_now();
    let refused = |e: KeyRefusal| match e {
        KeyRefusal::Store(s) => Problem::internal(s),
        other => unauthorized(&other.to_string()),
    };
    if text.starts_with("csa_") {
        // a person signed in through the CLI or the dashboard
        let digest = crate::oauth::flow::digest(&text);
        let cp2 = cp.clone();
        let found = tokio::task::spawn_blocking(move || cp2.store.session_by_access(&digest, now))
            .await
            .map_err(Problem::internal)?
            .map_err(Problem::internal)?;
        let Some((session, account)) = found else {
            return Err(failed(Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid_session",
                "this sign-in has expired or was revoked; refresh it, or run cloudsignal login",
            )));
        };
        let verified = VerifiedKey::person(&account, &session.id);
        if !scope.is_empty() && !verified.allows(scope) {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("your role ({}) does not allow {scope}", account.role),
            ));
        }
        return Ok(verified);
    }
    let verified = match cp.keys.cached(&text, now) {
        Ok(Some(v)) => v,
        Ok(None) => {
            // format and checksum are checked before any store access or bcrypt
            cloudsignal_core::apikey::ApiKey::parse(&text)
                .map_err(|e| failed(unauthorized(&e.to_string())))?;
            let _slot = cp
                .bcrypt_slots
                .clone()
                .acquire_owned()
                .await
                .map_err(Problem::internal)?;
            let cp2 = cp.clone();
            tokio::task::spawn_blocking(move || cp2.keys.verify(cp2.store.as_ref(), &text, now))
                .await
                .map_err(Problem::internal)?
                .map_err(|e| failed(refused(e)))?
        }
        Err(e) => return Err(failed(refused(e))),
    };
    if !verified.key.allow_cidrs.is_empty()
        && !verified
            .key
            .allow_cidrs
            .iter()
            .any(|c| cidr_contains(c, peer).unwrap_or(false))
    {
        warn!(key = %verified.key.id, %peer, "API key used from outside its allowlist");
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "ip_not_allowed",
            format!("this key may not be used from {peer}"),
        ));
    }
    if !scope.is_empty() && !verified.allows(scope) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this key lacks the {scope} scope"),
        ));
    }
    Ok(verified)
}

/// Appends an audit entry for an action by `by` (a failure to write it is logged: the action
/// itself has already happened or been refused).
pub(crate) fn audit(
    cp: &ControlPlane,
    by: &VerifiedKey,
    action: &str,
    target: Option<&str>,
    peer: IpAddr,
    outcome: &str,
    detail: String,
) {
    let entry = crate::store::AuditEntry {
        seq: 0,
        at: unix_now(),
        org: by.key.org.clone(),
        actor: by
            .person
            .as_ref()
            .map_or_else(|| by.key.id.clone(), |p| p.email.clone()),
        actor_kind: if by.person.is_some() {
            "user".into()
        } else {
            by.key.kind.clone()
        },
        action: action.to_owned(),
        target: target.map(str::to_owned),
        peer: Some(peer.to_string()),
        outcome: outcome.to_owned(),
        detail,
    };
    if let Err(e) = cp.store.append_audit(&entry) {
        warn!(error = %e, action, "writing the audit log failed");
    }
}

/// `GET /v1/audit?after=<seq>&limit=<n>`: the org's audit log, oldest first.
async fn audit_log(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    q: Result<Query<After>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let by = authorize(&cp, &headers, peer.ip(), "audit:read").await?;
    let Query(q) =
        q.map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let entries = cp
        .store
        .audit_after(&by.key.org, q.after, limit)
        .map_err(Problem::internal)?;
    let next = entries.last().map_or(q.after, |e| e.seq);
    Ok(Json(json!({ "entries": entries, "next": next })))
}

/// Whether `cidr` (`a.b.c.d/n` or `x::y/n`; a bare address means /32 or /128) contains `ip`.
pub fn cidr_contains(cidr: &str, ip: IpAddr) -> Option<bool> {
    let (addr, bits) = match cidr.split_once('/') {
        Some((a, b)) => (a.parse::<IpAddr>().ok()?, Some(b.parse::<u32>().ok()?)),
        None => (cidr.parse::<IpAddr>().ok()?, None),
    };
    match (addr, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let bits = bits.unwrap_or(32);
            (bits <= 32).then(|| {
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            })
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let bits = bits.unwrap_or(128);
            (bits <= 128).then(|| {
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            })
        }
        _ => Some(false),
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<T> {
    let body = body.map_err(|e| {
        let status = e.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "invalid_body"
        };
        Problem::new(status, code, e.body_text())
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))
}

fn within<'a>(filter: &str, mut allowed: impl Iterator<Item = &'a str>) -> bool {
    let Ok(f) = TopicFilter::parse(filter) else {
        return false;
    };
    allowed.any(|a| TopicFilter::parse(a).is_ok_and(|a| f.is_subset_of(&a)))
}

fn revoked(
    entry: cloudsignal_core::revocation::Entry,
    closed: Vec<String>,
) -> Json<serde_json::Value> {
    Json(
        json!({ "seq": entry.seq, "at": entry.at, "revocation": entry.revocation, "closed_sessions": closed.len() }),
    )
}

async fn revoke_token(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(jti): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let key = authorize(&cp, &headers, peer.ip(), "tokens:revoke").await?;
    if jti.is_empty()
        || jti.len() > 128
        || !jti
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_jti",
            "a token id is 1-128 letters, digits, - or _",
        ));
    }
    let (entry, closed) = cp
        .revoke(Revocation::Token {
            jti: jti.clone(),
            exp: None,
        })
        .map_err(Problem::internal)?;
    info!(key = %key.key.id, jti, closed = closed.len(), "token revoked");
    audit(
        &cp,
        &key,
        "token.revoke",
        Some(&jti),
        peer.ip(),
        "ok",
        format!("closed {} sessions", closed.len()),
    );
    Ok(revoked(entry, closed))
}

async fn revoke_user(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let key = authorize(&cp, &headers, peer.ip(), "tokens:revoke").await?;
    let user = UserId::parse(&id)
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "invalid_user", e.to_string()))?;
    let (entry, closed) = cp
        .revoke(Revocation::User {
            org: key.key.org.clone(),
            user: user.as_str().to_owned(),
        })
        .map_err(Problem::internal)?;
    info!(key = %key.key.id, user = %user.as_str(), closed = closed.len(), "user's tokens revoked");
    audit(
        &cp,
        &key,
        "user.revoke",
        Some(user.as_str()),
        peer.ip(),
        "ok",
        format!("closed {} sessions", closed.len()),
    );
    Ok(revoked(entry, closed))
}

/// `POST /v1/certificates/{sha256}/revoke`: a client certificate (mTLS), by the SHA-256 of its
/// DER; its live sessions close (0x98) and it is refused from now on.
async fn revoke_certificate(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(sha256): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let key = authorize(&cp, &headers, peer.ip(), "tokens:revoke").await?;
    let sha256 = sha256.trim().to_ascii_lowercase().replace(':', "");
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_fingerprint",
            "a certificate is named by the SHA-256 of its DER: 64 hex digits (colons allowed)",
        ));
    }
    let (entry, closed) = cp
        .revoke(Revocation::Certificate {
            sha256: sha256.clone(),
        })
        .map_err(Problem::internal)?;
    info!(key = %key.key.id, %sha256, closed = closed.len(), "client certificate revoked");
    audit(
        &cp,
        &key,
        "certificate.revoke",
        Some(&sha256),
        peer.ip(),
        "ok",
        format!("closed {} sessions", closed.len()),
    );
    Ok(revoked(entry, closed))
}

async fn rotate_signing_key(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let by = authorize(&cp, &headers, peer.ip(), "keys:write").await?;
    if by.key.kind != "sk" {
        audit(
            &cp,
            &by,
            "signing_key.rotate",
            None,
            peer.ip(),
            "insufficient_scope",
            String::new(),
        );
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "rotating the signing key takes an sk_ key",
        ));
    }
    let cp2 = cp.clone();
    let (kid, previous, until) = tokio::task::spawn_blocking(move || cp2.rotate_signing_key())
        .await
        .map_err(Problem::internal)?
        .map_err(Problem::internal)?;
    audit(
        &cp,
        &by,
        "signing_key.rotate",
        Some(&kid),
        peer.ip(),
        "ok",
        format!("previous {previous}"),
    );
    Ok(Json(
        json!({ "kid": kid, "previous": previous, "previous_published_until": until }),
    ))
}
