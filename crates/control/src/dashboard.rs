//! Serves the dashboard embedded at build time (`build.rs`) under `/dashboard/`: the page at
//! `/dashboard/` and `/dashboard/callback` (where sign-in returns), hashed assets cached for a
//! year, a strict CSP (scripts from this origin only, no framing).

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

include!(concat!(env!("OUT_DIR"), "/dashboard_assets.rs"));

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn asset(path: &str) -> Option<&'static [u8]> {
    ASSETS.iter().find(|(p, _)| *p == path).map(|(_, b)| *b)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn page() -> Response {
    match asset("index.html") {
        Some(html) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
                (header::CONTENT_SECURITY_POLICY, CSP),
                (header::X_FRAME_OPTIONS, "DENY"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            html,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "This cloudsignal binary was built without the dashboard: run `cargo xtask build` (it needs Node.js) and rebuild, or serve www/dashboard/dist as static files at /dashboard/.\n",
        )
            .into_response(),
    }
}

async fn file(Path(path): Path<String>) -> Response {
    if path == "callback" || path.is_empty() {
        return page();
    }
    match asset(&path) {
        Some(bytes) => (
            [
                (header::CONTENT_TYPE, content_type(&path)),
                // Vite names assets by their content hash
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such dashboard file\n").into_response(),
    }
}

/// The dashboard's routes.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/dashboard",
            get(|| async { Redirect::permanent("/dashboard/") }),
        )
        .route("/dashboard/", get(|| async { page() }))
        .route("/dashboard/{*path}", get(file))
}

/// Whether the dashboard was built into this binary.
pub fn embedded() -> bool {
    asset("index.html").is_some()
}
