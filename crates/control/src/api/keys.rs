//! API-key routes: create, list, rotate, revoke, and usage.

use super::{
    authorize, cidr_contains, mqtt_scopes, parse_body, within, ApiResult, Problem, API_SCOPES,
};
use crate::store::StoredKey;
use crate::{new_api_key, unix_now, ControlPlane};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use cloudsignal_core::apikey::KeyKind;
use cloudsignal_core::revocation::Revocation;
use cloudsignal_core::topic::TopicFilter;
use cloudsignal_core::UnixTime;
use serde::Deserialize;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tracing::{info, warn};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    kind: String,
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    allow_cidrs: Vec<String>,
    expires_at: Option<UnixTime>,
}

fn key_json(k: &StoredKey) -> serde_json::Value {
    json!({
        "id": k.id, "kind": k.kind, "name": k.name, "scopes": k.scopes,
        "allow_cidrs": k.allow_cidrs, "created_at": k.created_at,
        "expires_at": k.expires_at, "revoked_at": k.revoked_at,
    })
}

/// A fresh key of `kind` and the hash to store for it (bcrypt on a blocking thread).
async fn new_key_and_hash(kind: KeyKind) -> ApiResult<(cloudsignal_core::apikey::ApiKey, String)> {
    let key = new_api_key(kind).map_err(Problem::internal)?;
    let secret = key.secret().to_owned();
    let hash = tokio::task::spawn_blocking(move || crate::keys::hash_secret(&secret))
        .await
        .map_err(Problem::internal)?
        .map_err(Problem::internal)?;
    Ok((key, hash))
}

pub(super) async fn create_key(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let creator = authorize(&cp, &headers, peer.ip(), "keys:write").await?;
    let req: KeyRequest = parse_body(body)?;
    let bad = |code, detail: String| Problem::new(StatusCode::BAD_REQUEST, code, detail);
    let kind = match req.kind.as_str() {
        "sk" => KeyKind::Secret,
        "rk" => KeyKind::Restricted,
        other => {
            return Err(bad(
                "invalid_kind",
                format!("kind must be \"sk\" or \"rk\", not {other:?}"),
            ))
        }
    };
    if req.name.trim().is_empty() || req.name.len() > 100 {
        return Err(bad("invalid_name", "name must be 1-100 characters".into()));
    }
    for s in &req.scopes {
        let ok = API_SCOPES.contains(&s.as_str())
            || ["mqtt:publish:", "mqtt:subscribe:"].iter().any(|p| {
                s.strip_prefix(p)
                    .is_some_and(|f| TopicFilter::parse(f).is_ok())
            });
        if !ok {
            return Err(bad("invalid_scope", format!("unknown scope {s:?}")));
        }
    }
    for c in &req.allow_cidrs {
        if cidr_contains(c, IpAddr::from([0, 0, 0, 0])).is_none() {
            return Err(bad(
                "invalid_cidr",
                format!("{c:?} is not an address or CIDR block"),
            ));
        }
    }
    if creator.key.kind != "sk" {
        // an rk_ key creates only rk_ keys no wider than itself
        if kind == KeyKind::Secret {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "scope_escalation",
                "an rk_ key cannot create an sk_ key",
            ));
        }
        for s in &req.scopes {
            let fine = if let Some(f) = s.strip_prefix("mqtt:publish:") {
                within(f, mqtt_scopes(&creator.key, "publish"))
            } else if let Some(f) = s.strip_prefix("mqtt:subscribe:") {
                within(f, mqtt_scopes(&creator.key, "subscribe"))
            } else {
                creator.key.scopes.contains(s)
            };
            if !fine {
                return Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "scope_escalation",
                    format!("scope {s:?} is wider than the creating key's"),
                ));
            }
        }
    }
    let (key, hash) = new_key_and_hash(kind).await?;
    let stored = StoredKey {
        id: key.id().into(),
        org: cp.org.as_str().into(),
        kind: kind.name().into(),
        name: req.name,
        secret_hash: hash,
        scopes: if kind == KeyKind::Secret {
            Vec::new()
        } else {
            req.scopes
        },
        allow_cidrs: req.allow_cidrs,
        created_at: unix_now(),
        expires_at: req.expires_at,
        revoked_at: None,
    };
    cp.store.insert_key(&stored).map_err(Problem::internal)?;
    info!(by = %creator.key.id, key = %stored.id, kind = %stored.kind, "API key created");
    let mut body = key_json(&stored);
    body["key"] = json!(key.expose());
    Ok((StatusCode::CREATED, Json(body)))
}

pub(super) async fn list_keys(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    authorize(&cp, &headers, peer.ip(), "keys:read").await?;
    let keys = cp
        .store
        .list_keys(cp.org.as_str())
        .map_err(Problem::internal)?;
    Ok(Json(
        json!({ "keys": keys.iter().map(key_json).collect::<Vec<_>>() }),
    ))
}

pub(super) async fn revoke_key(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let by = authorize(&cp, &headers, peer.ip(), "keys:write").await?;
    let live = cp
        .store
        .revoke_key(&id, unix_now())
        .map_err(Problem::internal)?;
    if !live {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "key_not_found",
            "no live key with this id",
        ));
    }
    let (entry, closed) = cp
        .revoke(Revocation::Key { key_id: id.clone() })
        .map_err(Problem::internal)?;
    info!(by = %by.key.id, key = %id, closed = closed.len(), "API key revoked");
    Ok(super::revoked(entry, closed))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    #[serde(default)]
    grace_seconds: u64,
}

/// Longest rotation grace period (7 days).
const MAX_GRACE: u64 = 7 * 24 * 3600;

pub(super) async fn rotate_key(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let by = authorize(&cp, &headers, peer.ip(), "keys:write").await?;
    let req: RotateRequest = parse_body(body)?;
    if req.grace_seconds > MAX_GRACE {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_grace",
            format!("grace_seconds is at most {MAX_GRACE}"),
        ));
    }
    let old = cp
        .store
        .find_key(&id)
        .map_err(Problem::internal)?
        .filter(|k| k.revoked_at.is_none() && k.org == cp.org.as_str())
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "key_not_found",
                "no live key with this id",
            )
        })?;
    if by.key.kind != "sk" && old.kind == "sk" {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "scope_escalation",
            "an rk_ key cannot rotate an sk_ key",
        ));
    }
    let kind = if old.kind == "sk" {
        KeyKind::Secret
    } else {
        KeyKind::Restricted
    };
    let (key, hash) = new_key_and_hash(kind).await?;
    let now = unix_now();
    let fresh = StoredKey {
        id: key.id().into(),
        secret_hash: hash,
        created_at: now,
        revoked_at: None,
        ..old.clone()
    };
    cp.store.insert_key(&fresh).map_err(Problem::internal)?;
    // whole seconds, rounded up: the old key works for at least the grace period
    let old_until = UnixTime(now.secs() + req.grace_seconds + 1);
    cp.store
        .expire_key(&old.id, old_until)
        .map_err(Problem::internal)?;
    cp.keys.invalidate(&old.id);
    // when the grace period ends, sessions still using the old key are closed (0x98)
    let (cp2, old_id) = (cp.clone(), old.id.clone());
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(req.grace_seconds + 1)).await;
        if let Err(e) = cp2.revoke(Revocation::Key { key_id: old_id }) {
            warn!(error = %e, "closing a rotated-out key's sessions failed");
        }
    });
    info!(by = %by.key.id, old = %old.id, new = %fresh.id, grace = req.grace_seconds, "API key rotated");
    let mut body = key_json(&fresh);
    body["key"] = json!(key.expose());
    body["replaces"] = json!(old.id);
    body["old_key_expires_at"] = json!(old_until);
    Ok((StatusCode::CREATED, Json(body)))
}

pub(super) async fn key_usage(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    authorize(&cp, &headers, peer.ip(), "usage:read").await?;
    let key = cp
        .store
        .find_key(&id)
        .map_err(Problem::internal)?
        .filter(|k| k.org == cp.org.as_str())
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "key_not_found",
                "no key with this id",
            )
        })?;
    let cp2 = cp.clone();
    let rows = tokio::task::spawn_blocking(move || {
        cp2.flush_usage();
        cp2.store.usage_of("key", &key.id)
    })
    .await
    .map_err(Problem::internal)?
    .map_err(Problem::internal)?;
    let last = rows
        .iter()
        .filter_map(|r| r.last_used.map(|t| (t, r.last_ip.clone())))
        .max_by_key(|(t, _)| *t);
    Ok(Json(json!({
        "key_id": id,
        "last_used": last.as_ref().map(|l| l.0),
        "last_ip": last.and_then(|l| l.1),
        "days": rows,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DayQuery {
    day: Option<String>,
}

pub(super) async fn usage_today(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    q: Result<Query<DayQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    authorize(&cp, &headers, peer.ip(), "usage:read").await?;
    let Query(q) =
        q.map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let day = q.day.unwrap_or_else(|| crate::usage::day_of(unix_now()));
    let valid = day.len() == 10
        && day.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !valid {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_day",
            "day is YYYY-MM-DD",
        ));
    }
    let (cp2, d) = (cp.clone(), day.clone());
    let rows = tokio::task::spawn_blocking(move || {
        cp2.flush_usage();
        cp2.store.usage_on(&d)
    })
    .await
    .map_err(Problem::internal)?
    .map_err(Problem::internal)?;
    let (keys, users): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.subject_kind == "key");
    Ok(Json(json!({ "day": day, "keys": keys, "users": users })))
}
