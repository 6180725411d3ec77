//! `POST /v1/token`: IdP JWT in, token response out.

use crate::config::Config;
use crate::keys::{now, resolve, KeyFailure};
use crate::roles::{self, RoleMapError};
use crate::{http, limits, revoke, webcrypto};
use cloudsignal_core::idp::IdpError;
use cloudsignal_core::jws::JwsError;
use cloudsignal_core::token::Jti;
use worker::{Env, Request, Response, Result};

/// Seconds a rate-limited client is told to wait (the limiters' period).
const RETRY_AFTER: &str = "60";

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

fn rate_limited(what: &str) -> Result<Response> {
    http::log(
        "exchange",
        &[
            ("outcome", "refused"),
            ("error", "rate_limited"),
            ("limit", what),
        ],
    );
    let mut resp = http::error(
        429,
        "rate_limited",
        &format!("too many exchanges for this {what}; retry later"),
    )?;
    resp.headers_mut().set("retry-after", RETRY_AFTER)?;
    Ok(resp)
}

/// Handles `POST /v1/token`.
pub(crate) async fn handle(req: Request, env: &Env, cfg: &Config) -> Result<Response> {
    let ip = req
        .headers()
        .get("cf-connecting-ip")
        .ok()
        .flatten()
        .unwrap_or_else(|| "unknown".into());
    if !limits::allow(env, limits::IP, format!("ip:{ip}")).await {
        return rate_limited("address");
    }
    let token = match bearer(&req) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let pending = match cfg.idp.inspect(&token) {
        Ok(p) => p,
        Err(e) => return refused(401, "invalid_token", &e.to_string(), ""),
    };
    let provider = cfg.idp.provider(&pending).name();
    let key = match cfg.idp.static_key(&pending) {
        Some(k) => k.clone(),
        None => match resolve(
            cfg.idp.key_source(&pending),
            pending.kid(),
            pending.alg(),
            cfg.jwks_policy,
        )
        .await
        {
            Ok(k) => k,
            Err(KeyFailure::Unknown(kid)) => {
                return refused(
                    401,
                    "invalid_token",
                    &JwsError::UnknownKey(kid).to_string(),
                    provider,
                )
            }
            Err(KeyFailure::Unavailable) => {
                return refused(
                    503,
                    "idp_unavailable",
                    "the identity provider's keys could not be fetched",
                    provider,
                )
            }
        },
    };
    let (signing_input, signature) = cfg.idp.signed_parts(&pending);
    let checked = webcrypto::verify(&key, signing_input, signature).await;
    let verified = match checked {
        Some(valid) => cfg.idp.verify_checked(pending, &key, valid, now()),
        None => cfg.idp.verify(pending, &key, now()),
    };
    let identity = match verified {
        Ok(id) => id,
        Err(IdpError::Config(e)) => {
            return http::misconfigured(&e);
        }
        Err(e) => return refused(401, "invalid_token", &e.to_string(), provider),
    };
    let user = identity.subject.as_str();
    if !limits::allow(
        env,
        limits::USER,
        format!("user:{}|{user}", identity.issuer),
    )
    .await
    {
        return rate_limited("user");
    }
    let revoked_at = revoke::user_revoked_at(env, user)
        .await
        .map(cloudsignal_core::UnixTime);
    if cloudsignal_core::exchange::user_revoked(revoked_at, &identity, now()) {
        return refused(
            403,
            "user_revoked",
            "this user's credentials were revoked; sign in again",
            provider,
        );
    }
    let stored_roles = match roles::current(env, cfg).await {
        Ok(map) => map,
        Err(RoleMapError::Invalid(e)) => {
            return http::misconfigured(&e);
        }
        Err(RoleMapError::Unavailable) => {
            return http::error(
                503,
                "storage_unavailable",
                "the role map could not be read; retry",
            )
        }
    };
    let role_map = stored_roles.as_deref().unwrap_or(&cfg.policy.role_map);
    let mut jti = [0u8; 16];
    if getrandom::getrandom(&mut jti).is_err() {
        return http::error(500, "internal_error", "no randomness available");
    }
    match cfg.policy.exchange_with_roles(
        role_map,
        &identity,
        now(),
        Jti::from_random(jti),
        &cfg.signing_key,
    ) {
        Ok(resp) => {
            http::log(
                "exchange",
                &[
                    ("outcome", "ok"),
                    ("provider", identity.provider.name()),
                    ("sub", identity.subject.as_str()),
                    // who checked the signature: the runtime's WebCrypto, or core in wasm
                    (
                        "signature",
                        if checked.is_some() {
                            "webcrypto"
                        } else {
                            "wasm"
                        },
                    ),
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
