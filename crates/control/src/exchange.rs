//! `POST /v1/token/exchange`: the worker's IdP-JWT exchange, natively, for self-hosters without
//! Cloudflare. The same core verifier (`idp`: Supabase, Firebase, Auth0, Clerk, any OIDC issuer),
//! policy (`exchange`), key-resolution rule ([`JwksCache::step`]: refresh when due, refetch on
//! an unknown `kid`, rate-limited), discovery cache (re-read hourly), user-revocation rule
//! ([`cloudsignal_core::exchange::user_revoked`]) and rate limits (10 per user, 60 per address
//! per minute, as the worker's bindings) as the worker. Fetches use a blocking HTTP client on a
//! blocking thread.

use crate::unix_now;
use cloudsignal_core::exchange::{RoleMap, WindowLimiter};
use cloudsignal_core::idp::{jwks_uri_from_discovery, IdpVerifier, KeySource};
use cloudsignal_core::jwks_cache::{DiscoveryCache, JwksCache, JwksPolicy, Step, DISCOVERY_TTL};
use cloudsignal_core::keys::{Alg, KeyEntry, KeySet};
use parking_lot::Mutex;
use std::collections::HashMap;

/// Exchanges per verified user per minute (the worker's `EXCHANGE_USER_LIMITER`).
pub const PER_USER_PER_MINUTE: u32 = 10;
/// Exchanges per client address per minute (the worker's `EXCHANGE_IP_LIMITER`).
pub const PER_ADDRESS_PER_MINUTE: u32 = 60;

/// How identity-provider JWTs are exchanged.
#[derive(Debug)]
pub struct NativeExchange {
    /// Trusted identity providers.
    pub idp: IdpVerifier,
    /// Role → ACL mapping.
    pub role_map: RoleMap,
    /// Token lifetime, seconds.
    pub ttl: u64,
    /// One cache per JWKS URL.
    jwks: Mutex<HashMap<String, JwksCache>>,
    /// Discovery URL → the `jwks_uri` its document named.
    discovered: Mutex<DiscoveryCache>,
    /// Per-user and per-address limits.
    pub(crate) per_user: Mutex<WindowLimiter>,
    pub(crate) per_address: Mutex<WindowLimiter>,
}

/// Where a token's key is fetched from, owned (to cross into a blocking thread).
#[derive(Debug, Clone)]
pub(crate) enum Source {
    Jwks(String),
    Discovery { issuer: String, url: String },
}

impl Source {
    /// `None` when the profile fetches no keys.
    pub(crate) fn of(source: KeySource<'_>) -> Option<Self> {
        match source {
            KeySource::Jwks(u) => Some(Self::Jwks(u.to_owned())),
            KeySource::Discovery { issuer, url } => Some(Self::Discovery {
                issuer: issuer.to_owned(),
                url: url.to_owned(),
            }),
            _ => None,
        }
    }
}

impl NativeExchange {
    /// An exchange over `idp` with `role_map`.
    pub fn new(idp: IdpVerifier, role_map: RoleMap, ttl: u64) -> Self {
        Self {
            idp,
            role_map,
            ttl,
            jwks: Mutex::new(HashMap::new()),
            discovered: Mutex::new(DiscoveryCache::default()),
            per_user: Mutex::new(WindowLimiter::new(PER_USER_PER_MINUTE, 60, 100_000)),
            per_address: Mutex::new(WindowLimiter::new(PER_ADDRESS_PER_MINUTE, 60, 100_000)),
        }
    }
}

/// Why a key could not be found.
pub(crate) enum KeyProblem {
    /// The IdP does not publish this `kid`.
    Unknown,
    /// The IdP's JWKS could not be fetched.
    Unavailable,
}

fn fetch(url: &str) -> Result<(KeySet, Option<u64>), String> {
    let (body, max_age) = cloudsignal_broker::jwks::http_get(url, 1 << 20)?;
    let (keys, _) = KeySet::from_jwks_json(&body).map_err(|e| e.to_string())?;
    Ok((keys, max_age))
}

/// The JWKS URL for `source`: fixed, or from the issuer's discovery document (re-read hourly,
/// its `issuer` checked to be identical; the last good answer kept when a re-read fails).
fn jwks_url(x: &NativeExchange, source: &Source) -> Result<String, KeyProblem> {
    let (issuer, url) = match source {
        Source::Jwks(u) => return Ok(u.clone()),
        Source::Discovery { issuer, url } => (issuer, url),
    };
    let now = unix_now();
    if let Some(fresh) = x.discovered.lock().fresh(url, now) {
        return Ok(fresh.to_owned());
    }
    let found = cloudsignal_broker::jwks::http_get(url, 256 * 1024)
        .and_then(|(body, _)| jwks_uri_from_discovery(&body, issuer).map_err(|e| e.to_string()));
    let mut discovered = x.discovered.lock();
    match found {
        Ok(jwks_uri) => {
            discovered.insert(url, jwks_uri.clone(), now, DISCOVERY_TTL);
            Ok(jwks_uri)
        }
        Err(e) => {
            tracing::warn!(url, error = %e, "OpenID discovery failed");
            discovered
                .last(url)
                .map(str::to_owned)
                .ok_or(KeyProblem::Unavailable)
        }
    }
}

/// The key for (`kid`, `alg`) from the IdP's JWKS, by core's rule: refresh when due, refetch
/// on an unknown `kid` (rate-limited), keep the last good set on failure. Blocking: call from
/// a blocking thread.
pub(crate) fn jwks_key(
    x: &NativeExchange,
    source: &Source,
    kid: Option<&str>,
    alg: Alg,
) -> Result<KeyEntry, KeyProblem> {
    let url = jwks_url(x, source)?;
    let url = url.as_str();
    // at most one refresh and one unknown-kid fetch per request
    for _ in 0..2 {
        let step = x
            .jwks
            .lock()
            .entry(url.to_owned())
            .or_insert_with(|| JwksCache::new(JwksPolicy::default()))
            .step(kid, alg, unix_now());
        match step {
            Step::Found(k) => return Ok(k),
            Step::Unknown => break,
            Step::Fetch { .. } => {
                let fetched = fetch(url);
                let now = unix_now();
                let mut caches = x.jwks.lock();
                let Some(cache) = caches.get_mut(url) else {
                    return Err(KeyProblem::Unavailable);
                };
                match fetched {
                    Ok((keys, max_age)) => cache.fetch_succeeded(keys, max_age, now),
                    Err(e) => {
                        tracing::warn!(url, error = %e, "identity provider JWKS fetch failed");
                        cache.fetch_failed(now);
                    }
                }
            }
        }
    }
    let have_keys = x.jwks.lock().get(url).is_some_and(|c| c.keys().is_some());
    if have_keys {
        Err(KeyProblem::Unknown)
    } else {
        Err(KeyProblem::Unavailable)
    }
}
