//! Trusting an issuer by JWKS URL: core's sans-IO `JwksCache` driven over HTTP(S).
//!
//! Keys are fetched at start-up, refreshed when they are due (honouring `Cache-Control:
//! max-age` within core's bounds), and refetched when a token names an unknown `kid` (a key
//! rotation at the issuer), at most once per 30 s; on failure the last good set stays trusted.
//! The start-up fetch does not hold the listeners back: a CONNECT that needs a key while a
//! fetch is in flight waits for that fetch instead of being refused.

use cloudsignal_core::jwks_cache::{parse_max_age, JwksCache, JwksPolicy, Lookup};
use cloudsignal_core::jws::{Inspected, DEFAULT_MAX_TOKEN_LEN};
use cloudsignal_core::keys::{Alg, KeySet};
use cloudsignal_core::token::{TokenVerifier, TOKEN_PREFIX};
use cloudsignal_core::UnixTime;
use parking_lot::{Mutex, RwLock};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Time allowed for one JWKS fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One issuer whose keys come from a URL.
#[derive(Debug)]
pub struct RemoteIssuer {
    issuer: String,
    url: String,
    cache: Mutex<JwksCache>,
    /// Held for the whole of a fetch, so a token waiting on a key can wait for it to land.
    in_flight: tokio::sync::Mutex<()>,
}

impl RemoteIssuer {
    /// An issuer `issuer` with keys at `url`.
    pub fn new(issuer: &str, url: &str) -> Self {
        Self {
            issuer: issuer.to_owned(),
            url: url.to_owned(),
            cache: Mutex::new(JwksCache::new(JwksPolicy::default())),
            in_flight: tokio::sync::Mutex::new(()),
        }
    }

    /// Makes sure the keys a token needs are loaded, fetching them if the cache says so.
    /// `password` is the CONNECT password or AUTH data; anything else is ignored.
    pub(crate) async fn prepare(
        &self,
        password: Option<&[u8]>,
        tokens: &Arc<RwLock<TokenVerifier>>,
        now: UnixTime,
    ) {
        let kid = password
            .and_then(|p| std::str::from_utf8(p).ok())
            .and_then(|p| p.strip_prefix(TOKEN_PREFIX))
            .and_then(|jws| Inspected::parse(jws, DEFAULT_MAX_TOKEN_LEN, &[Alg::EdDSA]).ok())
            .filter(|i| {
                i.unverified_claim("iss")
                    .is_some_and(|iss| iss == self.issuer.as_str())
            })
            .map(|i| i.kid().map(str::to_owned));
        let Some(kid) = kid else { return };
        let (guard, known) = {
            let mut cache = self.cache.lock();
            let lookup = cache.lookup(kid.as_deref(), Alg::EdDSA, now);
            let known = matches!(lookup, Lookup::Key(_));
            let due = cache.refresh_due(now) || matches!(lookup, Lookup::Fetch);
            // the fetch is ours only if no other one is in flight
            let guard = due.then(|| self.in_flight.try_lock().ok()).flatten();
            if guard.is_some() {
                cache.fetch_started(now);
            }
            (guard, known)
        };
        match guard {
            Some(guard) => self.fetch(guard, tokens, now).await,
            // another fetch (the start-up one, or another connection's) may bring this key
            None if !known => drop(self.in_flight.lock().await),
            None => {}
        }
    }

    /// Fetches the JWKS now (start-up) and installs the keys.
    pub async fn refresh(&self, tokens: &Arc<RwLock<TokenVerifier>>, now: UnixTime) {
        let guard = self.in_flight.lock().await;
        self.cache.lock().fetch_started(now);
        self.fetch(guard, tokens, now).await;
    }

    /// Fetches and installs the keys; `_in_flight` is held until they are installed.
    async fn fetch(
        &self,
        _in_flight: tokio::sync::MutexGuard<'_, ()>,
        tokens: &Arc<RwLock<TokenVerifier>>,
        now: UnixTime,
    ) {
        let url = self.url.clone();
        let result = tokio::task::spawn_blocking(move || http_get(&url, 1 << 20))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let mut cache = self.cache.lock();
        match result.and_then(|(body, max_age)| {
            let (keys, skipped) = KeySet::from_jwks_json(&body).map_err(|e| e.to_string())?;
            for s in skipped {
                warn!(kid = s.kid.as_deref().unwrap_or(""), reason = %s.reason, "JWKS key skipped");
            }
            Ok((keys, max_age))
        }) {
            Ok((keys, max_age)) => {
                info!(issuer = %self.issuer, url = %self.url, keys = keys.keys().len(), "issuer keys loaded");
                tokens
                    .write()
                    .trust(&self.issuer, keys.keys().iter().cloned());
                cache.fetch_succeeded(keys, max_age, now);
            }
            Err(e) => {
                warn!(issuer = %self.issuer, url = %self.url, error = %e, "JWKS fetch failed; keeping the last good keys");
                cache.fetch_failed(now);
            }
        }
    }
}

/// GETs `url` (at most `limit` bytes, 5 s); the body and any `Cache-Control: max-age`.
/// Blocking: call it from a blocking thread.
pub fn http_get(url: &str, limit: u64) -> Result<(String, Option<u64>), String> {
    http_get_with(url, limit, None)
}

/// [`http_get`] with an optional `Authorization: Bearer` credential (a revocation feed's).
///
/// The URL must be `https://`, or `http://` to this machine; an https fetch follows
/// redirects only to https (a redirect to http fails), a loopback http fetch follows none;
/// the body is read up to `limit` bytes and a longer one is an error.
pub fn http_get_with(
    url: &str,
    limit: u64,
    bearer: Option<&str>,
) -> Result<(String, Option<u64>), String> {
    let url = cloudsignal_core::idp::checked_url("URL", url).map_err(|e| e.to_string())?;
    let https = url.starts_with("https://");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(FETCH_TIMEOUT))
        .https_only(https)
        .max_redirects(if https { 5 } else { 0 })
        .build()
        .into();
    let mut req = agent.get(&url);
    if let Some(token) = bearer {
        req = req.header("Authorization", &format!("Bearer {token}"));
    }
    let mut resp = req.call().map_err(|e| e.to_string())?;
    // 4xx/5xx surface as errors from call(); anything else that is not 200 is refused too
    if resp.status() != 200 {
        return Err(format!("HTTP {}", resp.status()));
    }
    let max_age = resp
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_max_age);
    let body = resp
        .body_mut()
        .with_config()
        .limit(limit)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((body, max_age))
}
