//! `POST /v1/token/exchange`: the worker's IdP-JWT exchange, natively, for self-hosters without
//! Cloudflare. The same core verifier (`idp`) and policy (`exchange`) as the worker; the IdP's
//! JWKS (Supabase's ES256/RS256 keys) comes through core's sans-IO `JwksCache`, fetched with a
//! blocking HTTP client on a blocking thread.

use crate::unix_now;
use cloudsignal_core::exchange::RoleMap;
use cloudsignal_core::idp::IdpVerifier;
use cloudsignal_core::jwks_cache::{JwksCache, JwksPolicy, Lookup};
use cloudsignal_core::keys::{Alg, KeyEntry, KeySet};
use std::sync::Mutex;

/// How identity-provider JWTs are exchanged.
#[derive(Debug)]
pub struct NativeExchange {
    /// Trusted identity providers.
    pub idp: IdpVerifier,
    /// Role → ACL mapping.
    pub role_map: RoleMap,
    /// Token lifetime, seconds.
    pub ttl: u64,
    pub(crate) jwks: Mutex<JwksCache>,
}

impl NativeExchange {
    /// An exchange over `idp` with `role_map`.
    pub fn new(idp: IdpVerifier, role_map: RoleMap, ttl: u64) -> Self {
        Self {
            idp,
            role_map,
            ttl,
            jwks: Mutex::new(JwksCache::new(JwksPolicy::default())),
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

/// The key for (`kid`, `alg`) from the IdP's JWKS at `url`, fetching when the cache says so.
/// Blocking: call from a blocking thread.
pub(crate) fn jwks_key(
    x: &NativeExchange,
    url: &str,
    kid: Option<&str>,
    alg: Alg,
) -> Result<KeyEntry, KeyProblem> {
    let now = unix_now();
    let must_fetch = {
        let Ok(mut cache) = x.jwks.lock() else {
            return Err(KeyProblem::Unavailable);
        };
        match cache.lookup(kid, alg, now) {
            Lookup::Key(k) => return Ok(k.clone()),
            Lookup::Fetch => {
                cache.fetch_started(now);
                true
            }
            _ => false,
        }
    };
    if !must_fetch {
        return Err(KeyProblem::Unknown);
    }
    let fetched = fetch(url);
    let Ok(mut cache) = x.jwks.lock() else {
        return Err(KeyProblem::Unavailable);
    };
    match fetched {
        Ok((keys, max_age)) => cache.fetch_succeeded(keys, max_age, now),
        Err(e) => {
            tracing::warn!(url, error = %e, "identity provider JWKS fetch failed");
            cache.fetch_failed(now);
            return Err(KeyProblem::Unavailable);
        }
    }
    match cache.lookup(kid, alg, now) {
        Lookup::Key(k) => Ok(k.clone()),
        _ => Err(KeyProblem::Unknown),
    }
}
