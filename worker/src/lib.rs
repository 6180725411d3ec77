//! # cloudsignal-worker
//!
//! CloudSignal's token exchange at the edge: a Cloudflare Worker that verifies an identity
//! provider's JWT (Supabase, Firebase, Auth0, Clerk or any OpenID Connect issuer) and answers
//! with short-lived `tkn_` MQTT credentials.
//! All verification and issuance logic is `cloudsignal-core`; this crate adapts it to the
//! Workers runtime (env bindings, `fetch` for JWKS, `Date.now()`, `crypto.getRandomValues`).
//!
//! Routes: `POST /v1/token` (`Authorization: Bearer <IdP JWT>`), `GET /.well-known/jwks.json`,
//! `POST /v1/revoke` (admin secret), `GET /v1/revocations?after=` (the brokers' feed),
//! `GET /healthz`; `OPTIONS` preflights for allowed origins. Errors are RFC 9457 problem
//! documents (`application/problem+json`: `type`, `title`, `status`, a stable `code` and a
//! human `detail`), the same shape as the control plane's.
#![forbid(unsafe_code)]

mod config;
mod cors;
mod exchange;
mod http;
mod keys;
mod limits;
mod revoke;
mod roles;
mod webcrypto;

use config::Config;
use std::cell::RefCell;
use std::rc::Rc;
use worker::{event, Context, Env, Method, Request, Response, Result};

thread_local! {
    /// Parsed configuration, built once per isolate.
    static CONFIG: RefCell<Option<Rc<Config>>> = const { RefCell::new(None) };
}

fn config(env: &Env) -> std::result::Result<Rc<Config>, String> {
    if let Some(c) = CONFIG.with(|c| c.borrow().clone()) {
        return Ok(c);
    }
    let c = Rc::new(Config::from_env(env)?);
    CONFIG.with(|slot| *slot.borrow_mut() = Some(c.clone()));
    Ok(c)
}

/// Routes and the methods each accepts.
const ROUTES: &[(&str, &str)] = &[
    ("/healthz", "GET"),
    ("/v1/token", "POST"),
    ("/.well-known/jwks.json", "GET"),
    ("/v1/revoke", "POST"),
    ("/v1/revocations", "GET"),
];

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let path = req.path();
    let method = req.method();
    let Some((_, allowed)) = ROUTES.iter().find(|(p, _)| *p == path) else {
        return http::error(404, "not_found", "no such route");
    };
    if path == "/healthz" && method == Method::Get {
        return http::json(200, &serde_json::json!({"status": "ok"}));
    }
    let cfg = match config(&env) {
        Ok(c) => c,
        Err(e) => {
            return http::misconfigured(&e);
        }
    };
    if method == Method::Options {
        return cors::preflight(&req, &cfg.origins, allowed);
    }
    let origin = cors::origin(&req);
    if let Some(o) = &origin {
        if !cfg.origins.allows(o) {
            return cors::refuse(o);
        }
    }
    let mut resp = match (path.as_str(), method) {
        ("/v1/token", Method::Post) => exchange::handle(req, &env, &cfg).await?,
        ("/.well-known/jwks.json", Method::Get) => {
            let mut resp = http::json_text(200, cfg.jwks.clone())?;
            resp.headers_mut()
                .set("cache-control", "public, max-age=300")?;
            resp
        }
        ("/v1/revoke", Method::Post) => revoke::revoke(req, &env, &cfg).await?,
        ("/v1/revocations", Method::Get) => revoke::feed(&req, &env, &cfg).await?,
        _ => {
            let mut resp = http::error(
                405,
                "method_not_allowed",
                "method not allowed for this route",
            )?;
            resp.headers_mut().set("allow", allowed)?;
            resp
        }
    };
    if let Some(o) = &origin {
        cors::allow(&mut resp, o)?;
    }
    Ok(resp)
}
