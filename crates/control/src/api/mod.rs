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

use crate::keys::{KeyRefusal, VerifiedKey};
use crate::{unix_now, ControlPlane};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use cloudsignal_core::acl::AclRules;
use cloudsignal_core::exchange::{refresh_at, MqttCredentials, TokenResponse, MAX_TTL, MIN_TTL};
use cloudsignal_core::ids::{OrgId, UserId};
use cloudsignal_core::revocation::{Feed, Revocation};
use cloudsignal_core::token::{Jti, TokenClaims};
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
        .route("/v1/tokens", post(issue_token))
        .route("/v1/token/exchange", post(exchange_token))
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    user: String,
    ttl: Option<u64>,
    acl: Option<AclRules>,
}

async fn issue_token(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Json<TokenResponse>> {
    let key = authorize(&cp, &headers, peer.ip(), "tokens:issue").await?;
    let req: TokenRequest = parse_body(body)?;
    let mut user = UserId::parse(&req.user)
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "invalid_user", e.to_string()))?;
    // a token is for a user of the issuing key's org
    let org = OrgId::parse(&key.key.org).map_err(Problem::internal)?;
    // a directory user's token carries their groups' roles, and nothing wider
    let grant = directory_grant(&cp, &org, &mut user).await?;
    let acl = match (req.acl, key.key.kind.as_str(), &grant) {
        (Some(acl), ..) => acl,
        (None, _, Some(grant)) => grant.clone(),
        (None, "sk", None) => {
            AclRules::new(["users/{user}/#"], ["users/{user}/#"]).map_err(Problem::internal)?
        }
        (None, _, None) => AclRules {
            publish: key.key.mqtt_scopes("publish").map(str::to_owned).collect(),
            subscribe: key
                .key
                .mqtt_scopes("subscribe")
                .map(str::to_owned)
                .collect(),
        },
    };
    acl.validate()
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "invalid_acl", e.to_string()))?;
    let acl = acl
        .resolve_identity(user.as_str(), org.as_str())
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "invalid_acl", e.to_string()))?;
    if let Some(grant) = &grant {
        for (kind, filters, allowed) in [
            ("publish", &acl.publish, &grant.publish),
            ("subscribe", &acl.subscribe, &grant.subscribe),
        ] {
            if let Some(f) = filters
                .iter()
                .find(|f| !within(f, allowed.iter().map(String::as_str)))
            {
                return Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "outside_directory_grant",
                    format!(
                        "{kind} filter {f:?} is wider than what {}'s directory groups grant",
                        user.as_str()
                    ),
                ));
            }
        }
    }
    if key.key.kind != "sk" {
        // an rk_ key may not issue a token wider than itself
        for (kind, filters) in [("publish", &acl.publish), ("subscribe", &acl.subscribe)] {
            if let Some(f) = filters
                .iter()
                .find(|f| !within(f, key.key.mqtt_scopes(kind)))
            {
                return Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "scope_escalation",
                    format!("{kind} filter {f:?} is wider than this key's mqtt:{kind} scopes"),
                ));
            }
        }
    }
    let max = cp.config.max_ttl.min(MAX_TTL);
    let ttl = req.ttl.unwrap_or(3600).clamp(MIN_TTL, max);
    if let Some(at) = cp
        .broker
        .get()
        .and_then(|b| b.user_revoked_at(org.as_str(), user.as_str()))
    {
        after_second(at).await;
    }
    let now = unix_now();
    let jti = Jti::from_random(crate::random::<16>().map_err(Problem::internal)?);
    let claims = TokenClaims::new(&cp.config.issuer, user, org, acl.clone(), now, ttl, jti);
    info!(key = %key.key.id, user = %claims.sub.as_str(), ttl, jti = %claims.jti.as_str(), "token issued");
    Ok(Json(TokenResponse {
        mqtt_credentials: MqttCredentials {
            username: claims.username(),
            password: cp.sign(&claims).map_err(Problem::internal)?,
            client_id: None,
        },
        expires_at: claims.exp,
        refresh_at: refresh_at(claims.iat, claims.exp),
        acl,
        broker: cp.config.broker.clone(),
    }))
}

/// The grant of `user` if a directory lists them (their name then spelled as the directory
/// spells it), `None` if none does; refused if they are deprovisioned.
async fn directory_grant(
    cp: &Arc<ControlPlane>,
    org: &OrgId,
    user: &mut UserId,
) -> ApiResult<Option<AclRules>> {
    use crate::directory::sync::Listing;
    let (cp2, org2, name) = (
        cp.clone(),
        org.as_str().to_owned(),
        user.as_str().to_owned(),
    );
    let listing = tokio::task::spawn_blocking(move || {
        cp2.directory_standing(&org2, crate::directory::sync::Lookup::Username(&name))
    })
    .await
    .map_err(Problem::internal)?
    .map_err(Problem::internal)?;
    match listing {
        Listing::NotListed => Ok(None),
        Listing::Deprovisioned(standing) => {
            info!(user = %user.as_str(), standing = standing.as_str(), "token refused: the user is deprovisioned in the directory");
            Err(Problem::new(
                StatusCode::FORBIDDEN,
                "user_deprovisioned",
                format!("{} is {} in the directory; no token is issued for them", user.as_str(), standing.as_str()),
            ))
        }
        Listing::Ambiguous => Err(Problem::new(
            StatusCode::FORBIDDEN,
            "directory_conflict",
            format!("two directories list an active user named {}; no token is issued until one of them changes", user.as_str()),
        )),
        Listing::Active { username, roles } => {
            *user = UserId::parse(&username).map_err(Problem::internal)?;
            let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
            let grant = cp.config.role_map.grant(&roles).map_err(|e| {
                Problem::new(StatusCode::FORBIDDEN, "access_denied", e.to_string())
            })?;
            let grant = grant
                .resolve_identity(user.as_str(), org.as_str())
                .map_err(|e| Problem::new(StatusCode::FORBIDDEN, "access_denied", e.to_string()))?;
            Ok(Some(grant))
        }
    }
}

/// Links an identity provider's user to a directory user (their subject is the directory's
/// user name, or their e-mail address, verified by the provider, is the directory user's):
/// the token is then issued for the directory user, with their groups' roles added. Whether a
/// directory user was linked; refused if they are deprovisioned.
async fn link_directory_user(
    cp: &Arc<ControlPlane>,
    identity: &mut cloudsignal_core::idp::Identity,
) -> ApiResult<bool> {
    use crate::directory::sync::{Listing, Lookup};
    let cp2 = cp.clone();
    let org = cp.org.as_str().to_owned();
    let subject = identity.subject.as_str().to_owned();
    let email = identity.email.clone().filter(|_| identity.email_verified);
    let listing = tokio::task::spawn_blocking(move || {
        let by_name = cp2.directory_standing(&org, Lookup::Username(&subject))?;
        match (&by_name, &email) {
            (Listing::NotListed, Some(email)) => cp2.directory_standing(&org, Lookup::Email(email)),
            _ => Ok(by_name),
        }
    })
    .await
    .map_err(Problem::internal)?
    .map_err(Problem::internal)?;
    match listing {
        Listing::NotListed => Ok(false),
        Listing::Deprovisioned(standing) => {
            info!(sub = %identity.subject.as_str(), standing = standing.as_str(), "exchange refused: the directory user is deprovisioned");
            Err(Problem::new(
                StatusCode::FORBIDDEN,
                "user_deprovisioned",
                format!("this user is {} in the directory", standing.as_str()),
            ))
        }
        Listing::Ambiguous => Err(Problem::new(
            StatusCode::FORBIDDEN,
            "directory_conflict",
            "two directories list this user; no token is issued until one of them changes",
        )),
        Listing::Active { username, roles } => {
            info!(sub = %identity.subject.as_str(), directory_user = %username, "identity linked to a directory user");
            identity.subject = UserId::parse(&username).map_err(Problem::internal)?;
            identity.roles.extend(roles);
            Ok(true)
        }
    }
}

/// Waits until the Unix second after `at`: a token issued in the second a user was revoked
/// would be revoked too (revocations cover tokens issued at or before their second).
async fn after_second(at: cloudsignal_core::UnixTime) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let next_ms = u128::from(at.secs().saturating_add(1)) * 1000;
    if let Some(wait) = next_ms.checked_sub(now_ms).filter(|w| *w > 0 && *w <= 2000) {
        tokio::time::sleep(std::time::Duration::from_millis(
            u64::try_from(wait).unwrap_or(0),
        ))
        .await;
    }
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

/// `POST /v1/token/exchange`: an identity provider's JWT (`Authorization: Bearer`) for `tkn_`
/// MQTT credentials, the worker's exchange run natively.
async fn exchange_token(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<Json<TokenResponse>> {
    let Some(x) = cp.config.exchange.clone() else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "exchange_not_configured",
            "no identity provider is configured (see --supabase-url)",
        ));
    };
    let rate_limited = |what: &str| {
        info!(what, "exchange refused: rate limited");
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many exchanges for this {what}; retry in a minute"),
        )
    };
    // before any cryptography, as the worker
    if !x
        .per_address
        .lock()
        .allow(&format!("ip:{}", peer.ip()), unix_now())
    {
        return Err(rate_limited("address"));
    }
    let jwt = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
        .ok_or_else(|| {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "send Authorization: Bearer <identity provider JWT>",
            )
        })?;
    let invalid = |e: String| {
        info!(reason = %e, "exchange refused");
        Problem::new(StatusCode::UNAUTHORIZED, "invalid_token", e)
    };
    let pending = x.idp.inspect(&jwt).map_err(|e| invalid(e.to_string()))?;
    let key = match x.idp.static_key(&pending) {
        Some(k) => k.clone(),
        None => {
            let source = crate::exchange::Source::of(x.idp.key_source(&pending))
                .ok_or_else(|| invalid("no key for this token".into()))?;
            let (kid, alg) = (pending.kid().map(str::to_owned), pending.alg());
            let x2 = x.clone();
            tokio::task::spawn_blocking(move || {
                crate::exchange::jwks_key(&x2, &source, kid.as_deref(), alg)
            })
            .await
            .map_err(Problem::internal)?
            .map_err(|p| match p {
                crate::exchange::KeyProblem::Unknown => {
                    invalid("the identity provider does not publish this token's key".into())
                }
                crate::exchange::KeyProblem::Unavailable => Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "idp_unavailable",
                    "the identity provider's keys could not be fetched",
                ),
            })?
        }
    };
    let mut identity = x
        .idp
        .verify(pending, &key, unix_now())
        .map_err(|e| invalid(e.to_string()))?;
    let directory_user = link_directory_user(&cp, &mut identity).await?;
    let user = identity.subject.as_str();
    if !x
        .per_user
        .lock()
        .allow(&format!("user:{}|{user}", identity.issuer), unix_now())
    {
        return Err(rate_limited("user"));
    }
    let revoked_at = cp
        .broker
        .get()
        .and_then(|b| b.user_revoked_at(cp.org.as_str(), user));
    // a directory user's standing is the directory's to say (it is synced every interval);
    // their revocations still close sessions and refuse older tkn_ tokens
    if let (true, Some(at)) = (directory_user, revoked_at) {
        after_second(at).await;
    } else if cloudsignal_core::exchange::user_revoked(revoked_at, &identity, unix_now()) {
        info!(sub = %user, "exchange refused: the user's credentials were revoked");
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "user_revoked",
            "this user's credentials were revoked; sign in again",
        ));
    }
    let policy = cloudsignal_core::exchange::ExchangePolicy {
        issuer: cp.config.issuer.clone(),
        org: cp.org.clone(),
        ttl: x.ttl.min(cp.config.max_ttl),
        role_map: x.role_map.clone(),
        broker: cp.config.broker.clone(),
    };
    let jti = Jti::from_random(crate::random::<16>().map_err(Problem::internal)?);
    let key = cp
        .signing
        .read()
        .map_err(|_| Problem::internal("signing key lock poisoned"))?;
    let resp = policy
        .exchange(&identity, unix_now(), jti, &key)
        .map_err(|e| Problem::new(StatusCode::FORBIDDEN, "access_denied", e.to_string()))?;
    cp.exchanges
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    info!(provider = identity.provider.name(), sub = %identity.subject.as_str(), "identity exchanged for a token");
    Ok(Json(resp))
}
