//! IdP keys in the Workers runtime: core's sans-IO [`JwksCache`] per JWKS URL in isolate
//! memory, backed by the Cache API so a fresh isolate in the same location starts warm, and
//! OpenID discovery (`issuer` → `jwks_uri`) cached the same way.
//!
//! An exchange never calls the IdP when its keys are cached: memory first, then the Cache
//! API (cold isolate only), then the IdP. An unknown `kid` goes straight to the IdP (a key
//! rotation is picked up on first use; core rate-limits such refetches), and a failed fetch
//! keeps the last good set.

use crate::http;
use cloudsignal_core::idp::{jwks_uri_from_discovery, KeySource};
use cloudsignal_core::jwks_cache::{
    parse_max_age, DiscoveryCache, JwksCache, JwksPolicy, Step, DISCOVERY_TTL,
};
use cloudsignal_core::keys::{Alg, KeyEntry, KeySet};
use cloudsignal_core::UnixTime;
use std::cell::RefCell;
use std::collections::HashMap;
use worker::{Cache, Date, Fetch, Headers, Response, Url};

thread_local! {
    /// JWKS caches per URL, per isolate.
    static JWKS: RefCell<HashMap<String, JwksCache>> = RefCell::new(HashMap::new());
    /// Discovery results per discovery URL (core's cache: fresh for an hour, last good kept).
    static DISCOVERED: RefCell<DiscoveryCache> = RefCell::new(DiscoveryCache::default());
}

/// Largest JWKS or discovery document accepted.
const MAX_DOCUMENT: usize = 256 * 1024;

pub(crate) fn now() -> UnixTime {
    UnixTime::from_millis(Date::now().as_millis())
}

/// Why a key could not be had.
pub(crate) enum KeyFailure {
    /// The keys are known and none matches.
    Unknown(Option<String>),
    /// The IdP could not be reached and nothing is cached.
    Unavailable,
}

/// The Cache API key for one of our cached documents (never the IdP URL itself, so the
/// runtime's own subrequest cache and ours cannot mix).
fn cache_key(kind: &str, url: &str) -> String {
    let mut encoded = String::with_capacity(url.len() * 3);
    for b in url.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("https://cache.cloudsignal.invalid/{kind}/{encoded}")
}

/// A document from the Cache API with the seconds it stays fresh.
async fn cache_get(kind: &str, url: &str) -> Option<(String, u64)> {
    let mut resp = Cache::default()
        .get(cache_key(kind, url), false)
        .await
        .ok()
        .flatten()?;
    let until = resp
        .headers()
        .get("x-fresh-until")
        .ok()
        .flatten()?
        .parse::<u64>()
        .ok()?;
    let left = until.checked_sub(now().secs()).filter(|l| *l > 0)?;
    Some((resp.text().await.ok()?, left))
}

async fn cache_put(kind: &str, url: &str, body: &str, ttl: u64) {
    let headers = Headers::new();
    let stored = (|| {
        headers.set("content-type", "application/json")?;
        headers.set("cache-control", &format!("max-age={ttl}"))?;
        headers.set("x-fresh-until", &now().plus(ttl).secs().to_string())?;
        Ok::<_, worker::Error>(Response::ok(body)?.with_headers(headers))
    })();
    let result = match stored {
        Ok(resp) => Cache::default().put(cache_key(kind, url), resp).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        http::log(
            "cache_put_failed",
            &[("url", url), ("reason", &e.to_string())],
        );
    }
}

/// GET a JSON document from the IdP: body and `Cache-Control: max-age`.
async fn fetch_document(url: &str) -> Result<(String, Option<u64>), String> {
    let parsed: Url = url.parse().map_err(|e| format!("bad URL: {e}"))?;
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
    if body.len() > MAX_DOCUMENT {
        return Err(format!("document larger than {MAX_DOCUMENT} bytes"));
    }
    Ok((body, max_age))
}

fn parse_jwks(url: &str, body: &str) -> Result<KeySet, String> {
    let (keys, skipped) = KeySet::from_jwks_json(body).map_err(|e| e.to_string())?;
    for s in skipped {
        let kid = s.kid.as_deref().unwrap_or("");
        http::log(
            "jwks_key_skipped",
            &[("url", url), ("kid", kid), ("reason", &s.reason)],
        );
    }
    Ok(keys)
}

/// The JWKS URL named by an issuer's discovery document: memory, Cache API, then the IdP.
/// A failed refresh keeps the last known URL.
async fn discovered_jwks_uri(issuer: &str, url: &str) -> Option<String> {
    if let Some(fresh) = DISCOVERED.with(|d| d.borrow().fresh(url, now()).map(str::to_owned)) {
        return Some(fresh);
    }
    let known = DISCOVERED.with(|d| d.borrow().last(url).map(str::to_owned));
    let fetched = match cache_get("discovery", url).await {
        Some((body, left)) => Ok((body, left, false)),
        None => fetch_document(url)
            .await
            .map(|(body, _)| (body, DISCOVERY_TTL, true)),
    };
    let outcome = fetched.and_then(|(body, ttl, fresh)| {
        jwks_uri_from_discovery(&body, issuer)
            .map(|uri| (uri, body, ttl, fresh))
            .map_err(|e| e.to_string())
    });
    match outcome {
        Ok((jwks_uri, body, ttl, fresh)) => {
            if fresh {
                cache_put("discovery", url, &body, ttl).await;
            }
            DISCOVERED.with(|d| d.borrow_mut().insert(url, jwks_uri.clone(), now(), ttl));
            Some(jwks_uri)
        }
        Err(reason) => {
            http::log("discovery_failed", &[("url", url), ("reason", &reason)]);
            known
        }
    }
}

/// Core's one key-resolution rule on this isolate's cache for `url` (a `cold` fetch may be
/// answered from the Cache API).
fn step(url: &str, kid: Option<&str>, alg: Alg, policy: JwksPolicy) -> Step {
    JWKS.with(|caches| {
        caches
            .borrow_mut()
            .entry(url.to_owned())
            .or_insert_with(|| JwksCache::new(policy))
            .step(kid, alg, now())
    })
}

fn record(url: &str, outcome: Result<(KeySet, Option<u64>), String>) {
    JWKS.with(|caches| {
        let mut caches = caches.borrow_mut();
        let Some(cache) = caches.get_mut(url) else {
            return;
        };
        match outcome {
            Ok((keys, max_age)) => cache.fetch_succeeded(keys, max_age, now()),
            Err(reason) => {
                http::log("jwks_fetch_failed", &[("url", url), ("reason", &reason)]);
                cache.fetch_failed(now());
            }
        }
    });
}

/// One JWKS fetch: the Cache API for a cold isolate (when it has the token's key), else the
/// IdP, whose answer is then shared with the location's other isolates through the Cache API.
async fn load(
    url: &str,
    cold: bool,
    kid: Option<&str>,
    alg: Alg,
    p: JwksPolicy,
) -> Result<(KeySet, Option<u64>), String> {
    let mut shared = None;
    if cold {
        if let Some((body, left)) = cache_get("jwks", url).await {
            if let Ok(keys) = parse_jwks(url, &body) {
                if keys.find(kid, alg).is_some() {
                    return Ok((keys, Some(left)));
                }
                // a key rotated since: ask the IdP, but keep these if it is down
                shared = Some((keys, Some(left)));
            }
        }
    }
    let (body, max_age) = match fetch_document(url).await {
        Ok(fetched) => fetched,
        Err(e) => return shared.ok_or(e),
    };
    let keys = parse_jwks(url, &body)?;
    let ttl = max_age.unwrap_or(p.default_ttl).clamp(p.min_ttl, p.max_ttl);
    cache_put("jwks", url, &body, ttl).await;
    Ok((keys, max_age))
}

/// Resolves the key for a token whose profile fetches keys from `source`.
pub(crate) async fn resolve(
    source: KeySource<'_>,
    kid: Option<&str>,
    alg: Alg,
    policy: JwksPolicy,
) -> Result<KeyEntry, KeyFailure> {
    let url = match source {
        KeySource::None => return Err(KeyFailure::Unknown(kid.map(str::to_owned))),
        KeySource::Jwks(url) => url.to_owned(),
        KeySource::Discovery { issuer, url } => discovered_jwks_uri(issuer, url)
            .await
            .ok_or(KeyFailure::Unavailable)?,
    };
    for _ in 0..2 {
        match step(&url, kid, alg, policy) {
            Step::Found(key) => return Ok(key),
            Step::Unknown => break,
            Step::Fetch { cold } => {
                let outcome = load(&url, cold, kid, alg, policy).await;
                record(&url, outcome);
            }
        }
    }
    let have_keys = JWKS.with(|c| c.borrow().get(&url).is_some_and(|c| c.keys().is_some()));
    if have_keys {
        Err(KeyFailure::Unknown(kid.map(str::to_owned)))
    } else {
        Err(KeyFailure::Unavailable)
    }
}
