//! A sans-IO cache for one issuer's JWKS.
//!
//! The cache never fetches: it tells its driver (the worker, the broker) when a fetch is due
//! and is told the outcome. States and transitions:
//!
//! - **empty**: every lookup asks for a fetch (rate-limited after a failure);
//! - **fresh** (`now < fresh_until`): lookups are answered from memory; an unknown `kid`
//!   asks for a refetch at most once per [`JwksPolicy::refetch_interval`] (a key rotation
//!   at the IdP is picked up on first use, but a stream of forged `kid`s cannot make us hammer
//!   the IdP);
//! - **refresh due** (`now ≥ fresh_until`): keys are still served, and [`JwksCache::refresh_due`]
//!   says a refresh should run;
//! - a **failed fetch** keeps the last good set (an IdP outage does not lock users out) and
//!   retries no sooner than [`JwksPolicy::refetch_interval`].
//!
//! Driving it:
//!
//! ```
//! use cloudsignal_core::{jwks_cache::*, keys::{Alg, KeySet}, UnixTime};
//! let mut cache = JwksCache::new(JwksPolicy::default());
//! let now = UnixTime(1_000);
//! assert!(matches!(cache.lookup(Some("k1"), Alg::ES256, now), Lookup::Fetch));
//! cache.fetch_started(now);
//! // ... HTTP GET of the JWKS URL, then:
//! let (keys, _skipped) = KeySet::from_jwks_json(r#"{"keys": []}"#).unwrap();
//! cache.fetch_succeeded(keys, Some(300), now);
//! assert!(matches!(cache.lookup(Some("k1"), Alg::ES256, now), Lookup::Unknown));
//! ```

use crate::keys::{Alg, KeyEntry, KeySet};
use crate::time::UnixTime;

/// Timing rules for a JWKS cache. Defaults in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksPolicy {
    /// Freshness when the response carries no usable `max-age`. Default 600.
    pub default_ttl: u64,
    /// Lower bound on a response's `max-age`. Default 60.
    pub min_ttl: u64,
    /// Upper bound on a response's `max-age`. Default 86,400.
    pub max_ttl: u64,
    /// Minimum time between two fetches triggered by unknown `kid`s or failures. Default 30.
    pub refetch_interval: u64,
}

impl Default for JwksPolicy {
    fn default() -> Self {
        Self {
            default_ttl: 600,
            min_ttl: 60,
            max_ttl: 86_400,
            refetch_interval: 30,
        }
    }
}

/// The answer to a key lookup.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// The key to verify with.
    Key(&'a KeyEntry),
    /// Fetch the JWKS now (call [`JwksCache::fetch_started`]), then look up again.
    Fetch,
    /// No such key, and a fetch is not allowed yet: refuse the token.
    Unknown,
}

/// What an exchange does next for a token's key: the one key-resolution rule of the worker
/// and the control plane ([`JwksCache::step`]).
#[derive(Debug, Clone)]
pub enum Step {
    /// Verify with this key.
    Found(KeyEntry),
    /// The IdP publishes no such key (and may not be asked again yet): refuse the token.
    Unknown,
    /// Fetch the JWKS (already recorded as started), report the outcome, and step again.
    /// `cold`: the cache holds no keys yet.
    Fetch {
        /// Nothing was ever fetched.
        cold: bool,
    },
}

/// The JWKS URLs OpenID issuers named in their discovery documents, each trusted for a time
/// and then looked up again (an issuer may move its keys), the last good one kept when the
/// document cannot be read.
#[derive(Debug, Clone, Default)]
pub struct DiscoveryCache {
    found: std::collections::HashMap<String, (String, UnixTime)>,
}

/// How long a discovered `jwks_uri` is used before the document is read again (1 hour).
pub const DISCOVERY_TTL: u64 = 3600;

impl DiscoveryCache {
    /// The `jwks_uri` found at `url`, while fresh.
    pub fn fresh(&self, url: &str, now: UnixTime) -> Option<&str> {
        self.found
            .get(url)
            .filter(|(_, until)| now < *until)
            .map(|(u, _)| u.as_str())
    }

    /// The last `jwks_uri` found at `url`, fresh or not (used when a re-read fails).
    pub fn last(&self, url: &str) -> Option<&str> {
        self.found.get(url).map(|(u, _)| u.as_str())
    }

    /// Records what the document at `url` named, fresh for `ttl` seconds.
    pub fn insert(&mut self, url: &str, jwks_uri: String, now: UnixTime, ttl: u64) {
        self.found.insert(url.to_owned(), (jwks_uri, now.plus(ttl)));
    }
}

/// One issuer's cached JWKS.
#[derive(Debug, Clone)]
pub struct JwksCache {
    policy: JwksPolicy,
    keys: Option<KeySet>,
    fresh_until: UnixTime,
    last_attempt: Option<UnixTime>,
    last_success: Option<UnixTime>,
    consecutive_failures: u32,
}

impl JwksCache {
    /// An empty cache.
    pub fn new(policy: JwksPolicy) -> Self {
        Self {
            policy,
            keys: None,
            fresh_until: UnixTime(0),
            last_attempt: None,
            last_success: None,
            consecutive_failures: 0,
        }
    }

    fn fetch_allowed(&self, now: UnixTime) -> bool {
        self.last_attempt
            .is_none_or(|t| now >= t.plus(self.policy.refetch_interval))
    }

    /// Finds the key for a token header, or says to fetch.
    pub fn lookup(&self, kid: Option<&str>, alg: Alg, now: UnixTime) -> Lookup<'_> {
        if let Some(key) = self.keys.as_ref().and_then(|k| k.find(kid, alg)) {
            return Lookup::Key(key);
        }
        if self.fetch_allowed(now) {
            Lookup::Fetch
        } else {
            Lookup::Unknown
        }
    }

    /// The next step for a token's key: refresh first when the keys are due (so a key the IdP
    /// withdrew stops verifying), then the key, else a fetch for an unknown `kid` when allowed,
    /// else unknown. A fetch step is recorded as started.
    pub fn step(&mut self, kid: Option<&str>, alg: Alg, now: UnixTime) -> Step {
        let cold = self.keys.is_none();
        if !cold && self.refresh_due(now) {
            self.fetch_started(now);
            return Step::Fetch { cold };
        }
        match self.lookup(kid, alg, now) {
            Lookup::Key(k) => Step::Found(k.clone()),
            Lookup::Fetch => {
                self.fetch_started(now);
                Step::Fetch { cold }
            }
            Lookup::Unknown => Step::Unknown,
        }
    }

    /// Whether a scheduled refresh should run (keys are stale and fetching is allowed).
    pub fn refresh_due(&self, now: UnixTime) -> bool {
        (self.keys.is_none() || now >= self.fresh_until) && self.fetch_allowed(now)
    }

    /// Records that a fetch began (this is what rate-limits fetches).
    pub fn fetch_started(&mut self, now: UnixTime) {
        self.last_attempt = Some(now);
    }

    /// Stores a fetched key set. `max_age` is the response's `Cache-Control: max-age`, if any.
    pub fn fetch_succeeded(&mut self, keys: KeySet, max_age: Option<u64>, now: UnixTime) {
        let ttl = max_age
            .unwrap_or(self.policy.default_ttl)
            .clamp(self.policy.min_ttl, self.policy.max_ttl);
        self.keys = Some(keys);
        self.fresh_until = now.plus(ttl);
        self.last_success = Some(now);
        self.consecutive_failures = 0;
    }

    /// Records a failed fetch; the last good set stays in use.
    pub fn fetch_failed(&mut self, _now: UnixTime) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
    }

    /// The cached keys, if any fetch ever succeeded.
    pub fn keys(&self) -> Option<&KeySet> {
        self.keys.as_ref()
    }

    /// Failures since the last success (for health reporting).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// When the keys stop being fresh.
    pub fn fresh_until(&self) -> UnixTime {
        self.fresh_until
    }
}

/// Reads `max-age` from a `Cache-Control` header value.
pub fn parse_max_age(cache_control: &str) -> Option<u64> {
    cache_control.split(',').find_map(|d| {
        let (k, v) = d.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| v.trim().trim_matches('"').parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::both_targets_test;
    use crate::test_vectors as tv;

    fn jwks() -> KeySet {
        KeySet::from_jwks_json(&tv::get("jwks")).unwrap().0
    }

    both_targets_test! {
        fn empty_then_fresh() {
            let mut c = JwksCache::new(JwksPolicy::default());
            let t = UnixTime(10_000);
            assert!(c.refresh_due(t));
            assert!(matches!(c.lookup(Some("es-1"), Alg::ES256, t), Lookup::Fetch));
            c.fetch_started(t);
            c.fetch_succeeded(jwks(), Some(120), t);
            assert!(matches!(c.lookup(Some("es-1"), Alg::ES256, t), Lookup::Key(_)));
            assert!(!c.refresh_due(t.plus(119)));
            assert!(c.refresh_due(t.plus(120)));
            // stale keys are still served while the refresh happens
            assert!(matches!(c.lookup(Some("es-1"), Alg::ES256, t.plus(5000)), Lookup::Key(_)));
        }
    }

    both_targets_test! {
        fn unknown_kid_refetch_is_rate_limited() {
            let mut c = JwksCache::new(JwksPolicy::default());
            let t = UnixTime(10_000);
            c.fetch_started(t);
            c.fetch_succeeded(jwks(), None, t);
            assert!(matches!(c.lookup(Some("new"), Alg::ES256, t.plus(29)), Lookup::Unknown));
            assert!(matches!(c.lookup(Some("new"), Alg::ES256, t.plus(30)), Lookup::Fetch));
            c.fetch_started(t.plus(30));
            c.fetch_succeeded(jwks(), None, t.plus(30));
            // still unknown after the refetch: refused without another fetch
            assert!(matches!(c.lookup(Some("new"), Alg::ES256, t.plus(31)), Lookup::Unknown));
            assert_eq!(c.fresh_until(), t.plus(30 + 600));
        }
    }

    both_targets_test! {
        fn failure_keeps_last_good_set() {
            let mut c = JwksCache::new(JwksPolicy::default());
            let t = UnixTime(10_000);
            c.fetch_started(t);
            c.fetch_succeeded(jwks(), Some(60), t);
            let later = t.plus(100);
            assert!(c.refresh_due(later));
            c.fetch_started(later);
            c.fetch_failed(later);
            assert_eq!(c.consecutive_failures(), 1);
            assert!(matches!(c.lookup(Some("rs-1"), Alg::RS256, later), Lookup::Key(_)));
            assert!(!c.refresh_due(later.plus(29)), "retries are rate-limited");
            assert!(c.refresh_due(later.plus(30)));
        }
    }

    both_targets_test! {
        fn step_refreshes_when_due_and_fetches_unknown_kids() {
            let mut c = JwksCache::new(JwksPolicy::default());
            let t = UnixTime(10_000);
            assert!(matches!(c.step(Some("es-1"), Alg::ES256, t), Step::Fetch { cold: true }));
            c.fetch_succeeded(jwks(), Some(120), t);
            assert!(matches!(c.step(Some("es-1"), Alg::ES256, t.plus(1)), Step::Found(_)));
            // due: refresh before answering, even for a known key
            assert!(matches!(c.step(Some("es-1"), Alg::ES256, t.plus(120)), Step::Fetch { cold: false }));
            c.fetch_succeeded(KeySet::default(), Some(120), t.plus(120));
            // the IdP withdrew the key: no longer found, and no second fetch yet
            assert!(matches!(c.step(Some("es-1"), Alg::ES256, t.plus(121)), Step::Unknown));
            assert!(matches!(c.step(Some("es-1"), Alg::ES256, t.plus(150)), Step::Fetch { cold: false }));
            let mut d = DiscoveryCache::default();
            d.insert("https://i/.well-known/openid-configuration", "https://i/jwks".into(), t, DISCOVERY_TTL);
            let url = "https://i/.well-known/openid-configuration";
            assert_eq!(d.fresh(url, t.plus(DISCOVERY_TTL - 1)), Some("https://i/jwks"));
            assert_eq!(d.fresh(url, t.plus(DISCOVERY_TTL)), None);
            assert_eq!(d.last(url), Some("https://i/jwks"));
        }
    }

    both_targets_test! {
        fn max_age_is_bounded() {
            let mut c = JwksCache::new(JwksPolicy::default());
            c.fetch_succeeded(KeySet::default(), Some(1), UnixTime(0));
            assert_eq!(c.fresh_until(), UnixTime(60));
            c.fetch_succeeded(KeySet::default(), Some(10_000_000), UnixTime(0));
            assert_eq!(c.fresh_until(), UnixTime(86_400));
            assert_eq!(parse_max_age("public, max-age=300, must-revalidate"), Some(300));
            assert_eq!(parse_max_age("no-store"), None);
            assert_eq!(parse_max_age("Max-Age=\"20\""), Some(20));
        }
    }
}
