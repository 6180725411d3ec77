//! `GET /v1/directory/status` and `POST /v1/directory/sync`.

use super::{audit, authorize, parse_body, ApiResult, Problem};
use crate::ControlPlane;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

/// `GET /v1/directory/status`: each source's last sync (when, how long, counts, changes,
/// errors).
pub(super) async fn status(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    authorize(&cp, &headers, peer.ip(), "directory:read").await?;
    let cp2 = cp.clone();
    let sources = tokio::task::spawn_blocking(move || cp2.directory_status())
        .await
        .map_err(Problem::internal)?
        .map_err(Problem::internal)?;
    Ok(Json(json!({ "directories": sources })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncRequest {
    source: String,
    /// Removals allowed past the guard for this one sync (what the refused sync reported).
    #[serde(default)]
    confirm_removals: usize,
}

/// `POST /v1/directory/sync`: syncs one source now and answers with its status.
pub(super) async fn sync(
    State(cp): State<Arc<ControlPlane>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let by = authorize(&cp, &headers, peer.ip(), "directory:sync").await?;
    let req: SyncRequest = parse_body(body)?;
    let Some(status) = cp
        .sync_directory_now(&req.source, req.confirm_removals)
        .await
    else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown_directory",
            format!("no directory is named {:?}", req.source),
        ));
    };
    audit(
        &cp,
        &by,
        "directory.sync",
        Some(&req.source),
        peer.ip(),
        if status.error.is_none() {
            "ok"
        } else {
            "failed"
        },
        format!(
            "confirmed {} removals; {}",
            req.confirm_removals,
            status.error.as_deref().unwrap_or("applied")
        ),
    );
    Ok(Json(json!({ "directory": status })))
}
