//! `POST /v1/token`: IdP JWT in, token response out.

use crate::config::Config;
use crate::http;
use cloudsignal_core::idp::IdpError;
use cloudsignal_core::jwks_cache::{parse_max_age, JwksCache, JwksPolicy, Lookup};
use cloudsignal_core::jws::JwsError;
use cloudsignal_core::keys::{KeyEntry, KeySet};
use cloudsignal_core::token::Jti;
use cloudsignal_core::UnixTime;
use std::cell::RefCell;
use std::collections::HashMap;
use worker::{Date, Fetch, Request, Response, Result, Url};

thread_local! {
    /// JWKS caches per URL, per isolate.
    static JWKS: RefCell<HashMap<String, JwksCache>> = RefCell::new(HashMap::new());
}

fn now() -> UnixTime {
    UnixTime::from_millis(Date::now().as_millis())
}

fn bearer(req: &Request) -> std::result::Result<String, Result<Response>> {
    let header = match req.headers().get("authorization") {
        Ok(Some(h)) => h,
        _ => {
            return Err(http::error(
                401,
                "missing_token",
                "send the identity provider's JWT as 'Authorization: Bearer <jwt>'",
            ))
        }
    };
    let (scheme, token) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(http::error(
            400,
            "invalid_request",
            "the Authorization header must be 'Bearer <jwt>'",
        ));
    }
    Ok(token.to_owned())
}

/// Why a key could not be had.
enum KeyFailure {
    Unknown(Option<String>),
    Unavailable,
}

/// Resolves a key through the per-isolate JWKS cache, fetching when the cache says so.
async fn jwks_key(
    url: &str,
    kid: Option<&str>,
    alg: cloudsignal_core::keys::Alg,
) -> std::result::Result<KeyEntry, KeyFailure> {
    for _ in 0..2 {
        let t = now();
        let decision = JWKS.with(|caches| {
            let mut caches = caches.borrow_mut();
            let cache = caches
                .entry(url.to_owned())
                .or_insert_with(|| JwksCache::new(JwksPolicy::default()));
            if cache.refresh_due(t) && cache.keys().is_some() {
                // scheduled refresh: done inline; stale keys keep working if it fails
                cache.fetch_started(t);
                return Err(());
            }
            match cache.lookup(kid, alg, t) {
                Lookup::Key(k) => Ok(Some(k.clone())),
                Lookup::Fetch => {
                    cache.fetch_started(t);
                    Err(())
                }
                Lookup::Unknown => Ok(None),
            }
        });
        match decision {
            Ok(Some(key)) => return Ok(key),
            Ok(None) => break,
            Err(()) => {
                let fetched = fetch_jwks(url).await;
                JWKS.with(|caches| {
                    let mut caches = caches.borrow_mut();
                    let Some(cache) = caches.get_mut(url) else {
                        return;
                    };
                    match fetched {
                        Ok((keys, max_age)) => cache.fetch_succeeded(keys, max_age, now()),
                        Err(reason) => {
                            http::log("jwks_fetch_failed", &[("url", url), ("reason", &reason)]);
                            cache.fetch_failed(now());
                        }
                    }
                });
            }
        }
    }
    let have_keys = JWKS.with(|c| c.borrow().get(url).is_some_and(|c| c.keys().is_some()));
    if have_keys {
        Err(KeyFailure::Unknown(kid.map(str::to_owned)))
    } else {
        Err(KeyFailure::Unavailable)
    }
}

async fn fetch_jwks(url: &str) -> std::result::Result<(KeySet, Option<u64>), String> {
    let parsed: Url = url.parse().map_err(|e| format!("bad JWKS URL: {e}"))?;
    let mut resp = Fetch::Url(parsed).send().await.map_err(|e| e.to_string())?;
    if resp.status_code() != 200 {
        return Err(format!("HTTP {}", resp.status_code()));
    }
    let max_age = resp
        .headers()
        .get("cache-control")
        .ok()
        .flatten()
        .and_then(|v| parse_max_age(&v));
    let body = resp.text().await.map_err(|e| e.to_string())?;
    let (keys, skipped) = KeySet::from_jwks_json(&body).map_err(|e| e.to_string())?;
    for s in skipped {
        http::log(
            "jwks_key_skipped",
            &[
                ("url", url),
                ("kid", s.kid.as_deref().unwrap_or("")),
                ("reason", &s.reason),
            ],
        );
    }
    Ok((keys, max_age))
}

fn refused(status: u16, code: &str, description: &str, provider: &str) -> Result<Response> {
    http::log(
        "exchange",
        &[
            ("outcome", "refused"),
            ("error", code),
            ("reason", description),
            ("provider", provider),
        ],
    );
    http::error(status, code, description)
}

/// Handles `POST /v1/token`.
pub(crate) async fn handle(req: Request, cfg: &Config) -> Result<Response> {
    let token = match bearer(&req) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let pending = match cfg.idp.inspect(&token) {
        Ok(p) => p,
        Err(e) => return refused(401, "invalid_token", &e.to_string(), ""),
    };
    let key = match cfg.idp.static_key(&pending) {
        Some(k) => k.clone(),
        None => {
            let Some(url) = cfg.idp.jwks_url(&pending) else {
                return refused(
                    401,
                    "invalid_token",
                    &JwsError::UnknownKey(pending.kid().map(str::to_owned)).to_string(),
                    "supabase",
                );
            };
            match jwks_key(url, pending.kid(), pending.alg()).await {
                Ok(k) => k,
                Err(KeyFailure::Unknown(kid)) => {
                    return refused(
                        401,
                        "invalid_token",
                        &JwsError::UnknownKey(kid).to_string(),
                        "supabase",
                    )
                }
                Err(KeyFailure::Unavailable) => {
                    return refused(
                        503,
                        "idp_unavailable",
                        "the identity provider's keys could not be fetched",
                        "supabase",
                    )
                }
            }
        }
    };
    let identity = match cfg.idp.verify(pending, &key, now()) {
        Ok(id) => id,
        Err(IdpError::Config(e)) => {
            http::log("config_error", &[("reason", &e)]);
            return http::error(
                500,
                "server_misconfigured",
                "the worker is not configured; see its logs",
            );
        }
        Err(e) => return refused(401, "invalid_token", &e.to_string(), "supabase"),
    };
    let mut jti = [0u8; 16];
    if getrandom::getrandom(&mut jti).is_err() {
        return http::error(500, "internal_error", "no randomness available");
    }
    match cfg
        .policy
        .exchange(&identity, now(), Jti::from_random(jti), &cfg.signing_key)
    {
        Ok(resp) => {
            http::log(
                "exchange",
                &[
                    ("outcome", "ok"),
                    ("provider", identity.provider.name()),
                    ("sub", identity.subject.as_str()),
                ],
            );
            let mut r = http::json(200, &resp)?;
            r.headers_mut().set("cache-control", "no-store")?;
            Ok(r)
        }
        Err(e) => refused(
            403,
            "access_denied",
            &e.to_string(),
            identity.provider.name(),
        ),
    }
}
