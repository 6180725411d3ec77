//! The auth webhook: a method of the authenticator chain that asks the operator's HTTPS
//! endpoint whether a CONNECT may proceed ("validate credentials against your own database").
//!
//! The broker POSTs a JSON body:
//!
//! ```json
//! {"username": "alice", "password": "hunter2", "client_id": "phone-1",
//!  "peer": "203.0.113.7:50312", "listener": "tls", "certificate_subject": null}
//! ```
//!
//! signed with HMAC-SHA256 over `<timestamp>.<body>` with the shared secret:
//! `X-CloudSignal-Timestamp: <unix seconds>` and
//! `X-CloudSignal-Signature: v1=<lowercase hex>`. A receiver recomputes the MAC, compares it in
//! constant time and refuses timestamps more than [`REPLAY_WINDOW`] away from its clock. The
//! endpoint answers `200` with `{"result": "allow", "user": "alice", "acl": {"pub": [...],
//! "sub": [...]}, "ttl": 300}` or `{"result": "deny"}`; `user` defaults to the username's part
//! before `@`, `acl` to `users/{user}/#`, `ttl` (seconds an allow is cached) to 60.
//!
//! It **fails closed**: a timeout, a refused connection, a non-200 status or a malformed answer
//! refuses the CONNECT (0x88, server unavailable), never allows it. Decisions are cached by
//! the SHA-256 of the credentials (username, password, listener; allows for their `ttl`, denials for [`NEGATIVE_TTL`]);
//! concurrent CONNECTs with the same credentials share one call; at most `max_concurrency`
//! calls run at once; after [`BREAKER_FAILURES`] failures in a row the endpoint is not called
//! for [`BREAKER_OPEN`] (CONNECTs it would decide are refused at once, so they never wait on a
//! dead endpoint, and other methods of the chain are not slowed). A call is never retried, so
//! an endpoint with side effects sees each decision once.

use crate::auth::{Principal, Refusal};
use crate::chain::{AuthMethod, Decision, DecisionFuture, PeerInfo};
use cloudsignal_core::acl::AclRules;
use cloudsignal_core::ids::{OrgId, UserId};
use cloudsignal_core::mqtt::ReasonCode;
use cloudsignal_core::revocation::Credential;
use cloudsignal_core::session::ConnectRequest;
use cloudsignal_core::UnixTime;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, Semaphore};
use tracing::{info, warn};

/// How far a receiver should accept the timestamp from its own clock.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(300);
/// How long a denial is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Failures in a row that open the circuit breaker.
pub const BREAKER_FAILURES: u32 = 5;
/// How long an open breaker keeps the endpoint uncalled.
pub const BREAKER_OPEN: Duration = Duration::from_secs(10);
/// Longest answer read.
const MAX_ANSWER: u64 = 64 * 1024;
/// Longest allow cached, whatever the endpoint says.
const MAX_TTL: u64 = 3600;
/// Cached decisions kept at most (the cache is cleared when full).
const MAX_CACHED: usize = 100_000;

/// A webhook's configuration.
#[derive(Clone)]
pub struct WebhookConfig {
    /// `https://` (or `http://` to this machine).
    pub url: String,
    /// The HMAC secret.
    pub secret: String,
    /// The org the endpoint's users belong to.
    pub org: OrgId,
    /// Longest wait for an answer (and for a free call slot).
    pub timeout: Duration,
    /// Calls in flight at once.
    pub max_concurrency: usize,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("org", &self.org)
            .field("timeout", &self.timeout)
            .field("max_concurrency", &self.max_concurrency)
            .finish()
    }
}

/// What the endpoint decided (cached).
#[derive(Debug, Clone)]
enum Verdict {
    Allow {
        user: UserId,
        acl: AclRules,
    },
    Deny,
    /// The endpoint failed (not cached): the CONNECT is refused, fail closed.
    Failed(String),
}

/// Counters, for logs and tests.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Calls made to the endpoint.
    pub calls: AtomicU64,
    /// Decisions answered from the cache (or from a call another CONNECT made).
    pub cache_hits: AtomicU64,
    /// CONNECTs refused because the endpoint failed or the breaker was open.
    pub failures: AtomicU64,
}

type Slot = Arc<OnceCell<(Verdict, Instant)>>;

/// The webhook method.
#[derive(Debug)]
pub struct Webhook {
    config: WebhookConfig,
    slots: Arc<Semaphore>,
    /// Decisions (and calls in flight) by credential hash.
    cache: Mutex<HashMap<[u8; 32], Slot>>,
    breaker: Mutex<(u32, Option<Instant>)>,
    /// Counters.
    pub stats: Arc<WebhookStats>,
}

/// The signature header's value for `body` at `timestamp`: `v1=<hex HMAC-SHA256(secret,
/// "<timestamp>.<body>")>`.
pub fn signature(secret: &str, timestamp: u64, body: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(), // HMAC takes keys of any length
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let tag = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(3 + 64);
    hex.push_str("v1=");
    for b in tag {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

impl Webhook {
    /// A webhook method for `config`.
    pub fn new(config: WebhookConfig) -> Self {
        let n = config.max_concurrency.max(1);
        Self {
            config,
            slots: Arc::new(Semaphore::new(n)),
            cache: Mutex::default(),
            breaker: Mutex::default(),
            stats: Arc::default(),
        }
    }

    fn key(req: &ConnectRequest, peer: &PeerInfo) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [
            req.username.as_deref().unwrap_or("").as_bytes(),
            req.password.as_deref().unwrap_or(b""),
            peer.listener.as_bytes(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }

    /// The cached (or in-flight) decision slot for `key`, fresh if the cached one expired.
    fn slot(&self, key: [u8; 32]) -> (Slot, bool) {
        let mut cache = self.cache.lock();
        if let Some(slot) = cache.get(&key) {
            let fresh = match slot.get() {
                None => true, // a call in flight: share it
                Some((_, until)) => Instant::now() < *until,
            };
            if fresh {
                return (slot.clone(), true);
            }
        }
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        let slot: Slot = Arc::default();
        cache.insert(key, slot.clone());
        (slot, false)
    }

    fn breaker_open(&self) -> bool {
        let mut b = self.breaker.lock();
        match b.1 {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                // half open: let calls through; one more failure opens it again
                b.1 = None;
                b.0 = BREAKER_FAILURES - 1;
                false
            }
            None => false,
        }
    }

    fn record(&self, ok: bool) {
        let mut b = self.breaker.lock();
        if ok {
            *b = (0, None);
        } else {
            b.0 += 1;
            if b.0 >= BREAKER_FAILURES && b.1.is_none() {
                warn!(url = %self.config.url, "auth webhook failing: not called for {BREAKER_OPEN:?} (CONNECTs it decides are refused)");
                b.1 = Some(Instant::now() + BREAKER_OPEN);
            }
        }
    }

    /// One call: the verdict and how long it may be cached.
    async fn call(
        &self,
        req: &ConnectRequest,
        peer: &PeerInfo,
        now: UnixTime,
    ) -> (Verdict, Duration) {
        if self.breaker_open() {
            return (
                Verdict::Failed("circuit breaker open".into()),
                Duration::ZERO,
            );
        }
        let permit =
            match tokio::time::timeout(self.config.timeout, self.slots.clone().acquire_owned())
                .await
            {
                Ok(Ok(p)) => p,
                _ => {
                    return (
                        Verdict::Failed("no free call slot in time".into()),
                        Duration::ZERO,
                    )
                }
            };
        let body = serde_json::json!({
            "username": req.username,
            "password": req.password.as_deref().map(|p| String::from_utf8_lossy(p).into_owned()),
            "client_id": req.client_id,
            "peer": peer.addr.to_string(),
            "listener": peer.listener,
            "certificate_subject": peer.cert.as_ref().map(|c| c.subject.clone()),
        })
        .to_string();
        let sig = signature(&self.config.secret, now.secs(), &body);
        let (url, timeout) = (self.config.url.clone(), self.config.timeout);
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let answer = tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(timeout))
                .max_redirects(0)
                .http_status_as_error(false)
                .build()
                .into();
            let mut resp = agent
                .post(&url)
                .header("content-type", "application/json")
                .header("x-cloudsignal-timestamp", &now.secs().to_string())
                .header("x-cloudsignal-signature", &sig)
                .send(body.as_bytes())
                .map_err(|e| e.to_string())?;
            if resp.status() != 200 {
                return Err(format!("HTTP {}", resp.status()));
            }
            resp.body_mut()
                .with_config()
                .limit(MAX_ANSWER)
                .read_to_string()
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        drop(permit);
        let verdict = answer.and_then(|text| self.parse(req, &text));
        self.record(verdict.is_ok());
        match verdict {
            Ok((v @ Verdict::Allow { .. }, ttl)) => (v, ttl),
            Ok((v, _)) => (v, NEGATIVE_TTL),
            Err(why) => (Verdict::Failed(why), Duration::ZERO),
        }
    }

    fn parse(&self, req: &ConnectRequest, text: &str) -> Result<(Verdict, Duration), String> {
        #[derive(serde::Deserialize)]
        struct Answer {
            result: String,
            user: Option<String>,
            acl: Option<AclRules>,
            ttl: Option<u64>,
        }
        let a: Answer = serde_json::from_str(text).map_err(|e| format!("malformed answer: {e}"))?;
        match a.result.as_str() {
            "deny" => Ok((Verdict::Deny, NEGATIVE_TTL)),
            "allow" => {
                let user = a.user.or_else(|| {
                    req.username
                        .as_deref()
                        .map(|u| u.split('@').next().unwrap_or(u).to_owned())
                });
                let user = user
                    .as_deref()
                    .and_then(|u| UserId::parse(u).ok())
                    .ok_or("malformed answer: no valid user id")?;
                let acl = match a.acl {
                    Some(acl) => acl,
                    None => AclRules::new(["users/{user}/#"], ["users/{user}/#"])
                        .map_err(|e| e.to_string())?,
                };
                acl.validate()
                    .map_err(|e| format!("malformed answer: {e}"))?;
                let ttl = Duration::from_secs(a.ttl.unwrap_or(60).min(MAX_TTL));
                Ok((Verdict::Allow { user, acl }, ttl))
            }
            other => Err(format!("malformed answer: result {other:?}")),
        }
    }

    async fn decide_inner(&self, req: &ConnectRequest, peer: &PeerInfo, now: UnixTime) -> Decision {
        let key = Self::key(req, peer);
        let (slot, shared) = self.slot(key);
        let mut called = false;
        let (verdict, _) = slot
            .get_or_init(|| async {
                called = true;
                let (v, ttl) = self.call(req, peer, now).await;
                (v, Instant::now() + ttl)
            })
            .await
            .clone();
        if shared && !called {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
        }
        let org = self.config.org.as_str();
        match verdict {
            Verdict::Allow { user, acl } => {
                let credential = Credential {
                    org: Some(org.to_owned()),
                    user: Some(user.as_str().to_owned()),
                    iat: Some(now),
                    ..Credential::default()
                };
                match Principal::user(org, user.as_str(), &acl, &req.client_id, None, credential) {
                    Ok(p) => Decision::Allow(std::sync::Arc::new(p)),
                    Err(e) => Decision::Deny(Refusal {
                        reason: ReasonCode::NOT_AUTHORIZED,
                        cause: format!("webhook ACL: {e}"),
                    }),
                }
            }
            Verdict::Deny => Decision::Deny(Refusal {
                reason: ReasonCode::BAD_USERNAME_OR_PASSWORD,
                cause: "the auth webhook denied it".into(),
            }),
            Verdict::Failed(why) => {
                // not cached: the next CONNECT asks again (unless the breaker is open)
                self.cache.lock().remove(&key);
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                Decision::Deny(Refusal {
                    reason: ReasonCode::SERVER_UNAVAILABLE,
                    cause: format!("auth webhook unavailable (fail closed): {why}"),
                })
            }
        }
    }
}

impl AuthMethod for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    /// Claims every CONNECT with a username and a password (put it after the methods whose
    /// credentials it must not see).
    fn decide<'a>(
        &'a self,
        req: &'a ConnectRequest,
        peer: &'a PeerInfo,
        now: UnixTime,
    ) -> DecisionFuture<'a> {
        Box::pin(async move {
            if req.username.is_none() || req.password.is_none() {
                return Decision::NotMine;
            }
            let d = self.decide_inner(req, peer, now).await;
            if let Decision::Allow(p) = &d {
                info!(username = %p.username, "auth webhook allowed");
            }
            d
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The documented signature, byte for byte (computed independently with Python's
    /// `hmac.new(b"secret", b"1700000000.{}", hashlib.sha256).hexdigest()`).
    #[test]
    fn signature_known_answer() {
        assert_eq!(
            signature("secret", 1_700_000_000, "{}"),
            "v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
        assert_ne!(
            signature("secret", 1_700_000_001, "{}"),
            signature("secret", 1_700_000_000, "{}")
        );
    }
}
