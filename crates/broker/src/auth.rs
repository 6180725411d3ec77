//! Authentication: turns a CONNECT into a principal (username, ACL, expiry) or a refusal.
//! The cause of a refusal is logged; the client only sees the reason code.

use crate::jwks::RemoteIssuer;
use cloudsignal_core::acl::{AclContext, AclRules, AclSet};
use cloudsignal_core::apikey::ApiKey;
use cloudsignal_core::mqtt::ReasonCode;
use cloudsignal_core::revocation::{Credential, RevocationList};
use cloudsignal_core::session::ConnectRequest;
use cloudsignal_core::token::TokenVerifier;
use cloudsignal_core::token::VerifiedToken;
use cloudsignal_core::UnixTime;
use parking_lot::{Mutex, RwLock};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Verifies API keys (`sk_…`/`rk_…`) given as MQTT passwords; the control plane implements
/// it. Verification that needs the store or bcrypt happens in [`KeyAuthority::warm`], on a
/// blocking thread, before [`KeyAuthority::check`] answers from memory on the connection's
/// task.
pub trait KeyAuthority: Send + Sync + std::fmt::Debug {
    /// Whether `key` is already verified (memory only, cheap).
    fn is_warm(&self, key: &str, now: UnixTime) -> bool;
    /// Verifies `key` (store, bcrypt) and remembers the outcome. Blocking.
    fn warm(&self, key: &str, now: UnixTime);
    /// Bounds how many cold verifications (bcrypt) run at once, so a storm of never-seen keys
    /// takes at most these threads from the connections already being served.
    fn bcrypt_slots(&self) -> Arc<tokio::sync::Semaphore>;
    /// The principal for `username` (`<service>@<org>`) presenting `key` from `peer`, from
    /// what [`Self::warm`] established.
    fn check(
        &self,
        username: &str,
        key: &str,
        peer: IpAddr,
        now: UnixTime,
    ) -> Result<Principal, Refusal>;
}

/// Whether a password is an API key rather than a token.
pub(crate) fn is_api_key(password: &[u8]) -> bool {
    password.starts_with(b"sk_") || password.starts_with(b"rk_")
}

/// The MQTT 5 authentication method carrying a `tkn_` token (CONNECT and AUTH).
pub const TOKEN_AUTH_METHOD: &str = "cloudsignal-token";

/// Who a credential authenticates: the owner of the sessions it opens. Two credentials share
/// sessions (and client ids) only when their identities are equal, whatever usernames they sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// `--allow-anonymous` development clients (one shared identity).
    Anonymous,
    /// A user, authenticated by a `tkn_` token (`sub` in `org`).
    User {
        /// Organisation id.
        org: String,
        /// User id (`sub`).
        user: String,
    },
    /// A service, authenticated by an API key (the key's name in its org).
    Service {
        /// Organisation id.
        org: String,
        /// The key's name (its fixed MQTT identity `<name>@<org>`).
        name: String,
    },
}

impl Identity {
    /// The owner key sessions are stored under: kind, org and name, never the username text
    /// (so a service named like a user is still another owner).
    pub fn owner(&self) -> String {
        match self {
            Self::Anonymous => "anonymous".into(),
            Self::User { org, user } => format!("user:{org}:{user}"),
            Self::Service { org, name } => format!("service:{org}:{name}"),
        }
    }

    /// The org, if the identity has one.
    pub fn org(&self) -> Option<&str> {
        match self {
            Self::Anonymous => None,
            Self::User { org, .. } | Self::Service { org, .. } => Some(org),
        }
    }

    /// The tenant whose topics this identity lives in: its org; anonymous development clients
    /// share the tenant of no org.
    pub fn tenant(&self) -> crate::router::Tenant {
        crate::router::Tenant::from(self.org().unwrap_or(""))
    }
}

/// Who a connection is, and what it may do, for its whole life.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The authenticated username (`<user>@<org>`, or `anonymous`).
    pub username: String,
    /// Who it is: the owner of its sessions.
    pub identity: Identity,
    /// The compiled ACL.
    pub acl: AclSet,
    /// When the credential expires (the session is closed then, 0xA0).
    pub expires_at: Option<UnixTime>,
    /// What revocation checks look at (token id, org, user, issue time, key id).
    /// Shared with the router's record of the session.
    pub credential: Arc<Credential>,
}

impl Principal {
    /// A user `user` of `org` (username `<user>@<org>`), with `rules` compiled for this
    /// connection (`client_id` fills `{client_id}`; an empty one leaves it unresolved).
    pub fn user(
        org: &str,
        user: &str,
        rules: &AclRules,
        client_id: &str,
        expires_at: Option<UnixTime>,
        credential: Credential,
    ) -> Result<Self, cloudsignal_core::acl::AclError> {
        let ctx = AclContext::new(user, org, Some(client_id).filter(|c| !c.is_empty()));
        Ok(Self {
            username: format!("{user}@{org}"),
            identity: Identity::User {
                org: org.to_owned(),
                user: user.to_owned(),
            },
            acl: rules.compile(&ctx)?,
            expires_at,
            credential: Arc::new(credential),
        })
    }
}

/// A refused CONNECT: the reason code sent, and the cause that is only logged.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Sent to the client.
    pub reason: ReasonCode,
    /// Logged, never sent.
    pub cause: String,
}

/// Decides CONNECTs.
#[derive(Debug, Clone)]
pub struct Authenticator {
    tokens: Arc<RwLock<TokenVerifier>>,
    remote: Vec<Arc<RemoteIssuer>>,
    allow_anonymous: bool,
    revocations: Arc<RwLock<RevocationList>>,
    keys: Option<Arc<dyn KeyAuthority>>,
    verified: Arc<Mutex<HashMap<[u8; 32], VerifiedToken>>>,
    /// CONNECTs waiting for a bcrypt slot.
    bcrypt_waiting: Arc<AtomicUsize>,
}

/// Most CONNECTs waiting for a bcrypt slot at once; more are refused 0x89 (server busy).
pub const BCRYPT_QUEUE: usize = 256;
/// Longest wait for a bcrypt slot before the CONNECT is refused 0x89 (server busy).
pub const BCRYPT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Counts one waiter for as long as it lives.
struct WaitingGuard<'a> {
    counter: &'a AtomicUsize,
    count: usize,
}

impl<'a> WaitingGuard<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        let count = counter.fetch_add(1, Ordering::AcqRel) + 1;
        Self { counter, count }
    }
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Tokens whose signature was verified, remembered (by SHA-256 of the token) so a client that
/// reconnects with the same token costs a hash instead of an Ed25519 verification. Time
/// window, key trust, username and revocation are checked again on every use.
const VERIFIED_CACHE: usize = 10_000;

impl Authenticator {
    /// An authenticator trusting `tokens`; `allow_anonymous` lets credential-less clients in
    /// with full access (development only).
    pub fn new(tokens: TokenVerifier, allow_anonymous: bool) -> Self {
        Self {
            tokens: Arc::new(RwLock::new(tokens)),
            remote: Vec::new(),
            allow_anonymous,
            revocations: Arc::default(),
            keys: None,
            verified: Arc::default(),
            bcrypt_waiting: Arc::default(),
        }
    }

    /// Also trusts `issuer` with keys fetched from `url` (refreshed as they come due and on an
    /// unknown `kid`). May be called once per issuer.
    pub fn with_remote_issuer(mut self, issuer: &str, url: &str) -> Self {
        self.remote.push(Arc::new(RemoteIssuer::new(issuer, url)));
        self
    }

    /// Trusts `keys` for `issuer` from now on (replacing its earlier keys), e.g. after the
    /// control plane rotated its signing key.
    pub fn trust(&self, issuer: &str, keys: Vec<cloudsignal_core::keys::KeyEntry>) {
        self.tokens.write().trust(issuer, keys);
    }

    /// Binds `issuer` to `orgs`: see [`TokenVerifier::bind_orgs`]. Takes effect at once, also
    /// for cached tokens (checked again at every use).
    pub fn bind_orgs(&self, issuer: &str, orgs: impl IntoIterator<Item = String>) {
        self.tokens.write().bind_orgs(issuer, orgs);
    }

    /// Whether tokens of `issuer` may claim `org` (see [`TokenVerifier::may_issue`]).
    pub fn may_issue(&self, issuer: &str, org: &str) -> bool {
        self.tokens.read().may_issue(issuer, org)
    }

    /// Accepts API keys as MQTT passwords, verified by `keys`.
    pub fn with_key_authority(mut self, keys: Arc<dyn KeyAuthority>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// The revocations checked at CONNECT and re-authentication (shared with the broker,
    /// which also closes live sessions when an entry arrives).
    pub fn revocations(&self) -> Arc<RwLock<RevocationList>> {
        self.revocations.clone()
    }

    /// Loads remote keys now (at start-up, in the background: a CONNECT needing them waits for
    /// the fetch in flight); failures are logged and retried on demand.
    pub async fn load_remote_keys(&self, now: UnixTime) {
        for r in &self.remote {
            r.refresh(&self.tokens, now).await;
        }
    }

    /// Does the slow work a credential needs before it is checked: fetches remote keys (see
    /// [`RemoteIssuer`]) or bcrypt-verifies a never-seen API key. bcrypt runs on a bounded
    /// queue: at most [`KeyAuthority::bcrypt_slots`] at once, at most [`BCRYPT_QUEUE`] waiting,
    /// each waiting at most [`BCRYPT_WAIT`]; past either bound the CONNECT is refused 0x89
    /// (server busy) instead of queueing without end.
    pub async fn prepare(&self, password: Option<&[u8]>, now: UnixTime) -> Result<(), Refusal> {
        if let (Some(keys), Some(p)) = (&self.keys, password) {
            if is_api_key(p) {
                let key = String::from_utf8_lossy(p).into_owned();
                if keys.is_warm(&key, now) || ApiKey::parse(&key).is_err() {
                    // a malformed key is refused by its checksum, with no bcrypt
                    return Ok(());
                }
                let busy = |cause: &str| Refusal {
                    reason: ReasonCode::SERVER_BUSY,
                    cause: cause.into(),
                };
                let waiting = WaitingGuard::enter(&self.bcrypt_waiting);
                if waiting.count > BCRYPT_QUEUE {
                    return Err(busy("too many API keys waiting for verification"));
                }
                let slot = tokio::time::timeout(BCRYPT_WAIT, keys.bcrypt_slots().acquire_owned())
                    .await
                    .map_err(|_| busy("API key verification queue timed out"))?
                    .map_err(|_| busy("API key verification is shut down"))?;
                drop(waiting);
                if keys.is_warm(&key, now) {
                    return Ok(()); // verified while this connection waited for a slot
                }
                let keys = keys.clone();
                // bcrypt on a cold key takes tens of milliseconds: never on a runtime thread
                let _ = tokio::task::spawn_blocking(move || keys.warm(&key, now)).await;
                drop(slot);
                return Ok(());
            }
        }
        for r in &self.remote {
            r.prepare(password, &self.tokens, now).await;
        }
        Ok(())
    }

    /// Re-authentication (MQTT 5 AUTH, method `cloudsignal-token`): `token` must be a valid
    /// `tkn_` for the same user and org as `current`. The result replaces the session's ACL and
    /// expiry at once.
    pub fn reauthenticate(
        &self,
        current: &Principal,
        token: &[u8],
        client_id: &str,
        now: UnixTime,
    ) -> Result<Principal, Refusal> {
        let req = ConnectRequest {
            protocol: cloudsignal_core::mqtt::Protocol::V5,
            client_id: client_id.to_owned(),
            clean_start: false,
            keep_alive: 0,
            username: Some(current.username.clone()),
            password: Some(token.to_vec()),
            auth_method: None,
            auth_data: None,
            session_expiry: 0,
            will: None,
            will_delay: 0,
        };
        if !token.starts_with(b"tkn_") {
            return Err(Refusal {
                reason: ReasonCode::NOT_AUTHORIZED,
                cause: "re-authentication takes a tkn_ token".into(),
            });
        }
        self.token(&req, &current.username, token, now)
            .and_then(|p| match self.revocations.read().check(&p.credential) {
                Some(why) => Err(Refusal {
                    reason: ReasonCode::BAD_USERNAME_OR_PASSWORD,
                    cause: why.into(),
                }),
                None => Ok(p),
            })
            .map_err(|r| Refusal {
                reason: ReasonCode::NOT_AUTHORIZED,
                cause: format!("re-authentication: {}", r.cause),
            })
    }

    /// Verifies a `tkn_` for `username`, from the cache of verified tokens when it can.
    fn verify_token(
        &self,
        password: &str,
        username: &str,
        now: UnixTime,
    ) -> Result<VerifiedToken, Refusal> {
        let bad = |e: cloudsignal_core::token::TokenError| Refusal {
            reason: ReasonCode::BAD_USERNAME_OR_PASSWORD,
            cause: e.to_string(),
        };
        let tokens = self.tokens.read();
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let hit = self.verified.lock().get(&digest).cloned();
        if let Some(hit) = hit {
            tokens.recheck(&hit, username, now).map_err(bad)?;
            return Ok(hit);
        }
        let verified = tokens.verify(password, username, now).map_err(bad)?;
        let mut cache = self.verified.lock();
        if cache.len() >= VERIFIED_CACHE {
            cache.clear();
        }
        cache.insert(digest, verified.clone());
        Ok(verified)
    }

    /// Whether clients without credentials are let in (development).
    pub fn allows_anonymous(&self) -> bool {
        self.allow_anonymous
    }

    /// The principal of an anonymous development client (full access in the tenant of no org).
    pub fn anonymous(&self) -> Result<Principal, Refusal> {
        Ok(Principal {
            username: "anonymous".into(),
            identity: Identity::Anonymous,
            acl: AclRules::new(["#"], ["#", "$SYS/#"])
                .and_then(|r| r.compile(&AclContext::new("anonymous", "anonymous", None)))
                .map_err(|e| Refusal {
                    reason: ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
                    cause: e.to_string(),
                })?,
            expires_at: None,
            credential: Arc::default(),
        })
    }

    /// The principal of API key `password` presented with `username` from `peer` (after
    /// [`Self::prepare`] verified a never-seen key).
    pub fn api_key(
        &self,
        username: &str,
        password: &[u8],
        peer: IpAddr,
        now: UnixTime,
    ) -> Result<Principal, Refusal> {
        let refuse = |reason: ReasonCode, cause: &str| Refusal {
            reason,
            cause: cause.into(),
        };
        let Some(keys) = &self.keys else {
            return Err(refuse(
                ReasonCode::BAD_USERNAME_OR_PASSWORD,
                "API keys need the control plane (it is off)",
            ));
        };
        let key = std::str::from_utf8(password)
            .map_err(|_| refuse(ReasonCode::BAD_USERNAME_OR_PASSWORD, "key is not UTF-8"))?;
        keys.check(username, key, peer, now)
    }

    /// The principal of `tkn_` token `password` presented with `username` (after
    /// [`Self::prepare`] fetched its issuer's keys if needed).
    pub fn token(
        &self,
        req: &ConnectRequest,
        username: &str,
        password: &[u8],
        now: UnixTime,
    ) -> Result<Principal, Refusal> {
        let refuse = |reason: ReasonCode, cause: String| Refusal { reason, cause };
        let password = std::str::from_utf8(password).map_err(|_| {
            refuse(
                ReasonCode::BAD_USERNAME_OR_PASSWORD,
                "password is not UTF-8".into(),
            )
        })?;
        let verified = self.verify_token(password, username, now)?;
        verified
            .check_client_id(&req.client_id)
            .map_err(|e| refuse(ReasonCode::NOT_AUTHORIZED, e.to_string()))?;
        let c = &verified.claims;
        let credential = Credential {
            jti: Some(c.jti.as_str().to_owned()),
            org: Some(c.org.as_str().to_owned()),
            user: Some(c.sub.as_str().to_owned()),
            iat: Some(c.iat),
            ..Credential::default()
        };
        // the chain checks every principal against the revocations (and re-authentication
        // does below): not here as well
        Principal::user(
            c.org.as_str(),
            c.sub.as_str(),
            &c.acl,
            &req.client_id,
            Some(c.exp),
            credential,
        )
        .map_err(|e| {
            let reason = match e {
                // e.g. a `$…` client id under a {client_id} template
                cloudsignal_core::acl::AclError::UnsafeValue("{client_id}") => {
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID
                }
                _ => ReasonCode::NOT_AUTHORIZED,
            };
            refuse(reason, e.to_string())
        })
    }

    /// The built-in chain methods, by name: `token`, `api_key`, `anonymous`.
    pub fn method(&self, name: &str) -> Option<std::sync::Arc<dyn crate::chain::AuthMethod>> {
        use crate::builtin::{AnonymousMethod, ApiKeyMethod, TokenMethod};
        Some(match name {
            "token" => Arc::new(TokenMethod(self.clone())),
            "api_key" => Arc::new(ApiKeyMethod(self.clone())),
            "anonymous" => Arc::new(AnonymousMethod(self.clone())),
            _ => return None,
        })
    }

    /// The default chain: `token`, `api_key`, then `extra` (client certificates, webhooks),
    /// then `anonymous`.
    pub fn default_chain(
        &self,
        extra: Vec<crate::chain::ChainEntry>,
    ) -> Vec<crate::chain::ChainEntry> {
        let builtin = |n: &str| self.method(n).map(crate::chain::ChainEntry::everywhere);
        builtin("token")
            .into_iter()
            .chain(builtin("api_key"))
            .chain(extra)
            .chain(builtin("anonymous"))
            .collect()
    }
}
