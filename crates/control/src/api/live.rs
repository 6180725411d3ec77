//! What the dashboard watches: live MQTT sessions (`GET /v1/sessions`, `sessions:read`;
//! `POST /v1/sessions/{id}/kick`, `sessions:write`), live figures as server-sent events
//! (`GET /v1/stats/stream`, `usage:read`), and the identity setup (`GET /v1/identity`,
//! `audit:read`). Everything is the caller's org only.

use super::{audit, authorize, ApiResult, Problem};
use crate::{unix_now, ControlPlane};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use serde_json::json;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// `GET /v1/sessions`: the org's live MQTT connections, newest first.
pub(super) async fn sessions(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let by = authorize(&cp, &headers, peer.ip(), "sessions:read").await?;
    let list = cp
        .broker
        .get()
        .map(|b| b.live_sessions(Some(&by.key.org)))
        .unwrap_or_default();
    let rows: Vec<serde_json::Value> = list
        .iter()
        .map(|s| {
            let c = &s.credential;
            json!({
                "id": s.id, "client_id": s.client_id, "identity": s.owner, "username": s.info.username,
                "address": s.info.addr.to_string(), "protocol": s.info.protocol, "listener": s.info.listener,
                "method": s.info.method, "connected_at": s.info.connected_at, "expires_at": s.info.expires_at,
                "subscriptions": s.subscriptions,
                "credential": { "jti": c.jti, "key_id": c.key_id, "user": c.user, "cert": c.cert },
            })
        })
        .collect();
    Ok(Json(json!({ "sessions": rows })))
}

/// `POST /v1/sessions/{id}/kick`: closes one live connection (0x98); it may reconnect (revoke
/// its credential to keep it out).
pub(super) async fn kick(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> ApiResult<Json<serde_json::Value>> {
    let by = authorize(&cp, &headers, peer.ip(), "sessions:write").await?;
    let kicked = cp.broker.get().is_some_and(|b| b.kick(id, &by.key.org));
    if !kicked {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "session_not_found",
            "no live connection with this id in your org",
        ));
    }
    audit(
        &cp,
        &by,
        "session.kick",
        Some(&id.to_string()),
        peer.ip(),
        "ok",
        String::new(),
    );
    Ok(Json(json!({ "closed_sessions": 1 })))
}

/// The org's figures now.
fn figures(cp: &ControlPlane, org: &str, keys: &HashSet<String>) -> serde_json::Value {
    let suffix = format!("@{org}");
    let mut total = cloudsignal_broker::usage::Counters::default();
    for ((kind, subject), c) in cp.usage.totals() {
        let ours = match kind.as_str() {
            "key" => keys.contains(&subject),
            _ => subject.ends_with(&suffix),
        };
        if ours {
            total.add(&c);
        }
    }
    let broker = cp.broker.get();
    let refusals: serde_json::Map<String, serde_json::Value> = broker
        .map(|b| b.refusals(org))
        .unwrap_or_default()
        .into_iter()
        .map(|(reason, n)| (reason, json!(n)))
        .collect();
    json!({
        "t": unix_now().secs(),
        "connections": broker.map_or(0, |b| b.live_count(org)),
        "published": total.published, "delivered": total.delivered,
        "connects": total.connects, "auth_failures": total.auth_failures,
        "refusals": refusals,
        "exchanges": cp.exchanges.load(std::sync::atomic::Ordering::Relaxed),
    })
}

/// `GET /v1/stats/stream`: the org's live figures once a second (server-sent events). Message
/// counts arrive as connections report them (every 2 s while active, and when they close).
pub(super) async fn stats_stream(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>>> {
    let by = authorize(&cp, &headers, peer.ip(), "usage:read").await?;
    let org = by.key.org.clone();
    let stream = futures_util::stream::unfold(
        (cp, org, HashSet::new(), 0u64),
        |(cp, org, mut keys, tick)| async move {
            if tick > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // the org's key ids, re-read every 10 s (keys are few; created ones count soon)
            if tick % 10 == 0 {
                let (cp2, org2) = (cp.clone(), org.clone());
                if let Ok(Ok(list)) =
                    tokio::task::spawn_blocking(move || cp2.store.list_keys(&org2)).await
                {
                    keys = list.into_iter().map(|k| k.id).collect();
                }
            }
            let data = figures(&cp, &org, &keys);
            let event = Event::default().json_data(data).unwrap_or_default();
            Some((Ok(event), (cp, org, keys, tick + 1)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// `GET /v1/identity`: who issues tokens this broker trusts, the exchange's identity
/// providers, single sign-on, and the control plane's own issuer.
pub(super) async fn identity(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    authorize(&cp, &headers, peer.ip(), "audit:read").await?;
    let mut issuers = vec![format!("{} (this control plane)", cp.config.issuer)];
    issuers.extend(cp.config.trusted_issuers.iter().cloned());
    let providers: Vec<String> = cp
        .config
        .exchange
        .as_ref()
        .map(|x| {
            x.idp
                .profiles()
                .iter()
                .map(|p| format!("{} ({})", p.provider().name(), p.issuer()))
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(json!({
        "issuers": issuers,
        "providers": providers,
        "sso": cp.config.sso.as_ref().map(|s| format!("{} ({} rules)", s.issuer, s.rules.len())),
    })))
}

/// `GET /v1/cluster`: this node's view of its cluster (`null` for a single broker). Server-wide
/// figures, so only the operator's org (the control plane's first) may read them.
pub(super) async fn cluster(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let by = authorize(&cp, &headers, peer.ip(), "sessions:read").await?;
    if by.key.org != cp.org().as_str() {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "operator_only",
            "the cluster's figures are the operator's (the control plane's first org)",
        ));
    }
    let status = cp
        .broker
        .get()
        .and_then(cloudsignal_broker::BrokerHandle::cluster);
    Ok(Json(json!({ "cluster": status })))
}
