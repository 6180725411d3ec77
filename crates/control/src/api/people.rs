//! `GET /v1/me` (who is calling), and people's sign-in sessions: `GET /v1/auth/sessions`
//! (`sessions:read`), `DELETE /v1/auth/sessions/{id}` (`sessions:write`).

use super::{audit, authorize, ApiResult, Problem};
use crate::{unix_now, ControlPlane};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

/// `GET /v1/me`: the caller (a person or a key), its org and what it may do. Any valid
/// credential may ask.
pub(super) async fn me(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    // any valid credential (no scope)
    let by = authorize(&cp, &headers, peer.ip(), "").await?;
    let scopes: Vec<String> = if by.key.kind == "sk" {
        vec!["*".into()]
    } else {
        by.key.scopes.clone()
    };
    Ok(Json(match &by.person {
        Some(p) => json!({
            "kind": "person", "email": p.email, "role": p.role, "account": p.account_id,
            "session": p.session, "org": by.key.org, "scopes": scopes,
        }),
        None => json!({
            "kind": "key", "key": by.key.id, "key_kind": by.key.kind, "name": by.key.name,
            "org": by.key.org, "scopes": scopes,
        }),
    }))
}

/// `GET /v1/auth/sessions`: the org's live sign-in sessions.
pub(super) async fn sessions(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let by = authorize(&cp, &headers, peer.ip(), "sessions:read").await?;
    let cp2 = cp.clone();
    let org = by.key.org.clone();
    let list = tokio::task::spawn_blocking(move || cp2.store.auth_sessions(&org, unix_now()))
        .await
        .map_err(Problem::internal)?
        .map_err(Problem::internal)?;
    Ok(Json(json!({ "sessions": list })))
}

/// `DELETE /v1/auth/sessions/{id}`: ends a sign-in session of the caller's org.
pub(super) async fn end_session(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let by = authorize(&cp, &headers, peer.ip(), "sessions:write").await?;
    let cp2 = cp.clone();
    let (org, id2) = (by.key.org.clone(), id.clone());
    let ended = tokio::task::spawn_blocking(move || {
        // another org's session is as absent as a missing one
        match cp2.store.auth_session(&id2)? {
            Some(s) if s.org == org => cp2.store.revoke_session(&id2, unix_now()),
            _ => Ok(false),
        }
    })
    .await
    .map_err(Problem::internal)?
    .map_err(Problem::internal)?;
    if !ended {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "session_not_found",
            "no live sign-in session with this id in your org",
        ));
    }
    audit(
        &cp,
        &by,
        "session.revoke",
        Some(&id),
        peer.ip(),
        "ok",
        String::new(),
    );
    Ok(Json(json!({ "ended": id })))
}
