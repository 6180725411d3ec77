//! `POST /v1/token/exchange`: the worker's IdP-JWT exchange, natively, for self-hosters without
//! Cloudflare. The same core verifier (`idp`: Supabase, Firebase, Auth0, Clerk, any OIDC issuer)
//! and policy (`exchange`) as the worker; IdP keys come through core's sans-IO `JwksCache`, one
//! per JWKS URL (OIDC issuers' URLs found by discovery), fetched with a blocking HTTP client on
//! a blocking thread.

use crate::unix_now;
use cloudsignal_core::exchange::RoleMap;
use cloudsignal_core::idp::{jwks_uri_from_discovery, IdpVerifier, KeySource};
use cloudsignal_core::jwks_cache::{JwksCache, JwksPolicy, Lookup};
use cloudsignal_core::keys::{Alg, KeyEntry, KeySet};
use std::collections::HashMap;
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
    /// One cache per JWKS URL.
    jwks: Mutex<HashMap<String, JwksCache>>,
    /// Discovery URL → the `jwks_uri` its document named.
    discovered: Mutex<HashMap<String, String>>,
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
            discovered: Mutex::new(HashMap::new()),
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

/// The JWKS URL for `source`: fixed, or from the issuer's discovery document (fetched once,
/// its `issuer` checked to be identical).
fn jwks_url(x: &NativeExchange, source: &Source) -> Result<String, KeyProblem> {
    let (issuer, url) = match source {
        Source::Jwks(u) => return Ok(u.clone()),
        Source::Discovery { issuer, url } => (issuer, url),
    };
    if let Some(known) = x.discovered.lock().ok().and_then(|d| d.get(url).cloned()) {
        return Ok(known);
    }
    let found = cloudsignal_broker::jwks::http_get(url, 256 * 1024)
        .and_then(|(body, _)| jwks_uri_from_discovery(&body, issuer).map_err(|e| e.to_string()));
    match found {
        Ok(jwks_uri) => {
            if let Ok(mut d) = x.discovered.lock() {
                d.insert(url.clone(), jwks_uri.clone());
            }
            Ok(jwks_uri)
        }
        Err(e) => {
            tracing::warn!(url, error = %e, "OpenID discovery failed");
            Err(KeyProblem::Unavailable)
        }
    }
}

/// The key for (`kid`, `alg`) from the IdP's JWKS, fetching when the cache says so.
/// Blocking: call from a blocking thread.
pub(crate) fn jwks_key(
    x: &NativeExchange,
    source: &Source,
    kid: Option<&str>,
    alg: Alg,
) -> Result<KeyEntry, KeyProblem> {
    let url = jwks_url(x, source)?;
    let url = url.as_str();
    let now = unix_now();
    let must_fetch = {
        let Ok(mut caches) = x.jwks.lock() else {
            return Err(KeyProblem::Unavailable);
        };
        let cache = caches
            .entry(url.to_owned())
            .or_insert_with(|| JwksCache::new(JwksPolicy::default()));
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
    let Ok(mut caches) = x.jwks.lock() else {
        return Err(KeyProblem::Unavailable);
    };
    let Some(cache) = caches.get_mut(url) else {
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
