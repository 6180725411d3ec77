//! CORS for browser callers: only origins in `CLOUDSIGNAL_ALLOWED_ORIGINS` may read responses,
//! preflights are answered here, and a request from any other origin is refused before any
//! token is looked at.

use crate::config::Origins;
use crate::http;
use worker::{Request, Response, Result};

/// The request's `Origin`, if it sent one (browsers do on cross-origin requests).
pub(crate) fn origin(req: &Request) -> Option<String> {
    req.headers().get("origin").ok().flatten()
}

/// Answers a preflight (`OPTIONS` with `Access-Control-Request-Method`).
pub(crate) fn preflight(req: &Request, origins: &Origins, methods: &str) -> Result<Response> {
    let Some(origin) = origin(req) else {
        return http::error(400, "invalid_request", "a preflight needs an Origin header");
    };
    if !origins.allows(&origin) {
        return refuse(&origin);
    }
    let mut resp = Response::empty()?.with_status(204);
    let h = resp.headers_mut();
    h.set("access-control-allow-methods", methods)?;
    h.set(
        "access-control-allow-headers",
        "authorization, content-type",
    )?;
    h.set("access-control-max-age", "600")?;
    allow(&mut resp, &origin)?;
    Ok(resp)
}

/// 403 for an origin not in the allowlist (logged).
pub(crate) fn refuse(origin: &str) -> Result<Response> {
    http::log("cors", &[("outcome", "refused"), ("origin", origin)]);
    http::error(
        403,
        "origin_not_allowed",
        "this origin may not call the worker",
    )
}

/// Lets `origin` read `resp`.
pub(crate) fn allow(resp: &mut Response, origin: &str) -> Result<()> {
    let h = resp.headers_mut();
    h.set("access-control-allow-origin", origin)?;
    h.set(
        "access-control-expose-headers",
        "retry-after, www-authenticate",
    )?;
    h.append("vary", "Origin")?;
    Ok(())
}
