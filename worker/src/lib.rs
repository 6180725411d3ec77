//! # cloudsignal-worker
//!
//! CloudSignal's token exchange at the edge: a Cloudflare Worker that verifies an identity
//! provider's JWT (Supabase first) and answers with short-lived `tkn_` MQTT credentials.
//! All verification and issuance logic is `cloudsignal-core`; this crate adapts it to the
//! Workers runtime (env bindings, `fetch` for JWKS, `Date.now()`, `crypto.getRandomValues`).
//!
//! Routes: `POST /v1/token` (`Authorization: Bearer <IdP JWT>`), `GET /.well-known/jwks.json`,
//! `GET /healthz`. Errors are JSON `{"error": "<stable code>", "error_description": "..."}`.
#![forbid(unsafe_code)]

mod config;
mod exchange;
mod http;

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

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let path = req.path();
    let method = req.method();
    match (path.as_str(), method) {
        ("/healthz", Method::Get) => http::json(200, &serde_json::json!({"status": "ok"})),
        ("/v1/token", Method::Post) | ("/.well-known/jwks.json", Method::Get) => {
            let cfg = match config(&env) {
                Ok(c) => c,
                Err(e) => {
                    http::log("config_error", &[("reason", &e)]);
                    return http::error(
                        500,
                        "server_misconfigured",
                        "the worker is not configured; see its logs",
                    );
                }
            };
            if path == "/v1/token" {
                exchange::handle(req, &cfg).await
            } else {
                let mut resp = http::json_text(200, cfg.jwks.clone())?;
                resp.headers_mut()
                    .set("cache-control", "public, max-age=300")?;
                Ok(resp)
            }
        }
        ("/healthz" | "/v1/token" | "/.well-known/jwks.json", _) => http::error(
            405,
            "method_not_allowed",
            "method not allowed for this route",
        ),
        _ => http::error(404, "not_found", "no such route"),
    }
}
