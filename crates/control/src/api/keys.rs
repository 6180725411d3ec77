//! API-key routes: create, list, rotate, revoke, and usage.

use super::privilege::wider_than;
use super::{audit, authorize, cidr_contains, parse_body, ApiResult, Problem, API_SCOPES};
use crate::keys::VerifiedKey;
use crate::store::{RevokeOutcome, StoredKey};
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
        "id": k.id, "kind": k.kind, "name": k.name, "org": k.org,
        "mqtt_username": k.mqtt_username(), "scopes": k.scopes,
        "allow_cidrs": k.allow_cidrs, "created_at": k.created_at,
        "expires_at": k.expires_at, "revoked_at": k.revoked_at,
    })
}

/// Refuses acting on `target` when it is wider than `by` in any dimension (see
/// [`super::privilege`]).
fn no_wider(by: &VerifiedKey, target: &StoredKey) -> ApiResult<()> {
    match wider_than(&by.key, target) {
        None => Ok(()),
        Some(why) => Err(Problem::new(StatusCode::FORBIDDEN, "scope_escalation", why)),
    }
}

/// Writes the audit entry for an action by `by`, allowed or refused, and passes the result on.
fn audited<T>(
    cp: &ControlPlane,
    by: &VerifiedKey,
    action: &str,
    target: Option<&str>,
    peer: IpAddr,
    result: ApiResult<T>,
) -> ApiResult<T> {
    let outcome = match &result {
        Ok(_) => "ok",
        Err(p) => p.code,
    };
    let detail = result.as_ref().err().map(|p| p.detail.clone());
    audit(
        cp,
        by,
        action,
        target,
        peer,
        outcome,
        detail.unwrap_or_default(),
    );
    result
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
    let result = create(&cp, &creator, req).await;
    let target = result.as_ref().ok().map(|(_, body)| body["id"].to_string());
    audited(
        &cp,
        &creator,
        "key.create",
        target.as_deref().map(|t| t.trim_matches('"')),
        peer.ip(),
        result,
    )
}

async fn create(
    cp: &Arc<ControlPlane>,
    creator: &VerifiedKey,
    req: KeyRequest,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
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
    if cloudsignal_core::ids::UserId::parse(&req.name).is_err() {
        return Err(bad(
            "invalid_name",
            "a key's name is its MQTT identity (<name>@<org>): 1-128 of A-Z a-z 0-9 . _ : | ~ -"
                .into(),
        ));
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
    let now = unix_now();
    if req.expires_at.is_some_and(|e| e <= now) {
        return Err(bad(
            "invalid_expiry",
            "expires_at must be in the future".into(),
        ));
    }
    let mut stored = StoredKey {
        id: String::new(),
        // a key is created in its creator's org: an org's keys never reach another org
        org: creator.key.org.clone(),
        kind: kind.name().into(),
        name: req.name,
        secret_hash: String::new(),
        scopes: if kind == KeyKind::Secret {
            Vec::new()
        } else {
            req.scopes
        },
        // a limited creator's limits are the default, never silently dropped
        allow_cidrs: if req.allow_cidrs.is_empty() {
            creator.key.allow_cidrs.clone()
        } else {
            req.allow_cidrs
        },
        created_at: now,
        expires_at: req.expires_at.or(creator.key.expires_at),
        revoked_at: None,
    };
    no_wider(creator, &stored)?;
    let taken = cp
        .store
        .list_keys(&creator.key.org)
        .map_err(Problem::internal)?
        .into_iter()
        .any(|k| k.name == stored.name && k.is_live(now));
    if taken {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "name_taken",
            format!(
                "a live key is already named {:?}: a name is an MQTT identity, held by one key (rotate it to replace its secret)",
                stored.name
            ),
        ));
    }
    let (key, hash) = new_key_and_hash(kind).await?;
    stored.id = key.id().into();
    stored.secret_hash = hash;
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
    let by = authorize(&cp, &headers, peer.ip(), "keys:read").await?;
    let keys = cp.store.list_keys(&by.key.org).map_err(Problem::internal)?;
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
    let result = revoke(&cp, &by, &id);
    audited(&cp, &by, "key.revoke", Some(&id), peer.ip(), result)
}

/// A live key of `org` by id, or 404 (another org's key is as absent as a missing one).
fn live_key(cp: &ControlPlane, org: &str, id: &str) -> ApiResult<StoredKey> {
    cp.store
        .find_key(id)
        .map_err(Problem::internal)?
        .filter(|k| k.revoked_at.is_none() && k.org == org)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "key_not_found",
                "no live key with this id",
            )
        })
}

fn revoke(cp: &ControlPlane, by: &VerifiedKey, id: &str) -> ApiResult<Json<serde_json::Value>> {
    let target = live_key(cp, &by.key.org, id)?;
    no_wider(by, &target)?;
    match cp
        .store
        .revoke_key_keeping_admin(id, unix_now())
        .map_err(Problem::internal)?
    {
        RevokeOutcome::Revoked => {}
        RevokeOutcome::NotLive => {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "key_not_found",
                "no live key with this id",
            ))
        }
        RevokeOutcome::LastAdminKey => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "last_admin_key",
                "this is the org's last live sk_ key: create or rotate to another sk_ key first \
                 (or recover offline with `cloudsignal admin recover --data-dir …`)",
            ))
        }
    }
    let (entry, closed) = cp
        .revoke(Revocation::Key {
            key_id: id.to_owned(),
        })
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
    let result = rotate(&cp, &by, &id, req.grace_seconds).await;
    audited(&cp, &by, "key.rotate", Some(&id), peer.ip(), result)
}

async fn rotate(
    cp: &Arc<ControlPlane>,
    by: &VerifiedKey,
    id: &str,
    grace_seconds: u64,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let old = live_key(cp, &by.key.org, id)?;
    // rotating hands out the key's new secret: only to a key at least as wide
    no_wider(by, &old)?;
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
    let old_until = UnixTime(now.secs() + grace_seconds + 1);
    cp.store
        .expire_key(&old.id, old_until)
        .map_err(Problem::internal)?;
    cp.keys.invalidate(&old.id);
    // when the grace period ends, sessions still using the old key are closed (0x98)
    let (cp2, old_id) = (cp.clone(), old.id.clone());
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(grace_seconds + 1)).await;
        if let Err(e) = cp2.revoke(Revocation::Key { key_id: old_id }) {
            warn!(error = %e, "closing a rotated-out key's sessions failed");
        }
    });
    info!(by = %by.key.id, old = %old.id, new = %fresh.id, grace = grace_seconds, "API key rotated");
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
    let by = authorize(&cp, &headers, peer.ip(), "usage:read").await?;
    let key = cp
        .store
        .find_key(&id)
        .map_err(Problem::internal)?
        .filter(|k| k.org == by.key.org)
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
    /// `hour`: hourly rows (each with `hour`) instead of the day's totals.
    by: Option<String>,
}

pub(super) async fn usage_today(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    q: Result<Query<DayQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let by = authorize(&cp, &headers, peer.ip(), "usage:read").await?;
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
    let hourly = match q.by.as_deref() {
        None | Some("day") => false,
        Some("hour") => true,
        Some(_) => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "by is day or hour",
            ))
        }
    };
    let (cp2, d, org) = (cp.clone(), day.clone(), by.key.org.clone());
    let (rows, org_keys) = tokio::task::spawn_blocking(move || {
        cp2.flush_usage();
        let rows = if hourly {
            cp2.store.usage_hours(&d)?
        } else {
            cp2.store.usage_on(&d)?
        };
        anyhow::Ok((rows, cp2.store.list_keys(&org)?))
    })
    .await
    .map_err(Problem::internal)?
    .map_err(Problem::internal)?;
    // only this org's keys and users: usage is per tenant
    let user_suffix = format!("@{}", by.key.org);
    let (keys, users): (Vec<_>, Vec<_>) = rows
        .into_iter()
        .filter(|r| match r.subject_kind.as_str() {
            "key" => org_keys.iter().any(|k| k.id == r.subject),
            _ => r.subject.ends_with(&user_suffix),
        })
        .partition(|r| r.subject_kind == "key");
    if hourly {
        // each row's `day` is its hour here: named so
        let named = |rows: Vec<crate::usage::UsageRow>| -> Vec<serde_json::Value> {
            rows.into_iter()
                .map(|r| {
                    let mut v = serde_json::to_value(&r).unwrap_or_default();
                    if let Some(o) = v.as_object_mut() {
                        if let Some(h) = o.remove("day") {
                            o.insert("hour".into(), h);
                        }
                    }
                    v
                })
                .collect()
        };
        return Ok(Json(
            json!({ "day": day, "by": "hour", "keys": named(keys), "users": named(users) }),
        ));
    }
    Ok(Json(json!({ "day": day, "keys": keys, "users": users })))
}
