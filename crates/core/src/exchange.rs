//! Exchange policy: a verified IdP [`Identity`] becomes MQTT credentials.
//!
//! The user's roles select ACL grants from a [`RoleMap`]; the grants are merged, `{user}` and
//! `{org}` are filled in, and a `tkn_` token is issued. The result is the token response
//! shared by the worker and the control plane:
//!
//! ```json
//! {"mqtt_credentials": {"username": "<sub>@<org>", "password": "tkn_…"},
//!  "expires_at": 1800003600, "refresh_at": 1800003240,
//!  "acl": {"pub": ["users/<sub>/#"], "sub": ["users/<sub>/#"]},
//!  "broker": {"wss_url": "wss://…", "mqtts_url": "mqtts://…"}}
//! ```
//!
//! Times are Unix seconds.

use crate::acl::{AclError, AclRules};
use crate::idp::Identity;
use crate::ids::OrgId;
use crate::keys::SigningKey;
use crate::time::UnixTime;
use crate::token::{issue, Jti, TokenClaims};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Maps roles to ACL grants (`CLOUDSIGNAL_ROLE_MAP`).
///
/// ```json
/// {"default": {"pub": ["users/{user}/#"], "sub": ["users/{user}/#"]},
///  "roles": {"editor": {"pub": ["orgs/{org}/posts/#"], "sub": ["orgs/{org}/posts/#"]}},
///  "deny_roles": ["anon"]}
/// ```
///
/// Every verified user gets `default` (when set) plus the grant of each role they hold. A user
/// holding a role in `deny_roles` is refused. A user who ends up with no grant at all is
/// refused, rather than given a token that can do nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleMap {
    /// Granted to every verified user. Default: `users/{user}/#` for publish and subscribe.
    #[serde(default)]
    pub default: Option<AclRules>,
    /// Extra grants per role.
    #[serde(default)]
    pub roles: BTreeMap<String, AclRules>,
    /// Roles that are refused outright. Default: `["anon"]`.
    #[serde(default)]
    pub deny_roles: Vec<String>,
}

impl Default for RoleMap {
    fn default() -> Self {
        Self {
            default: Some(AclRules {
                publish: vec!["users/{user}/#".into()],
                subscribe: vec!["users/{user}/#".into()],
            }),
            roles: BTreeMap::new(),
            deny_roles: vec!["anon".into()],
        }
    }
}

impl RoleMap {
    /// Parses and validates a role map from JSON.
    pub fn from_json(s: &str) -> Result<Self, ExchangeError> {
        let map: Self =
            serde_json::from_str(s).map_err(|e| ExchangeError::BadRoleMap(e.to_string()))?;
        for rules in map.default.iter().chain(map.roles.values()) {
            rules
                .validate()
                .map_err(|e| ExchangeError::BadRoleMap(e.to_string()))?;
        }
        Ok(map)
    }

    /// The merged grant for these roles, templates not yet filled in.
    pub fn grant(&self, roles: &[&str]) -> Result<AclRules, ExchangeError> {
        if let Some(r) = roles
            .iter()
            .find(|r| self.deny_roles.iter().any(|d| d == *r))
        {
            return Err(ExchangeError::RoleDenied((*r).to_owned()));
        }
        let mut acl = self.default.clone().unwrap_or_default();
        for role in roles {
            if let Some(extra) = self.roles.get(*role) {
                acl.extend(extra);
            }
        }
        if acl.publish.is_empty() && acl.subscribe.is_empty() {
            return Err(ExchangeError::NoGrant);
        }
        Ok(acl)
    }
}

/// Why an exchange was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// The role map is not valid JSON or has an invalid rule (a configuration error).
    #[error("invalid role map: {0}")]
    BadRoleMap(String),
    /// The user holds a denied role.
    #[error("role {0:?} may not obtain MQTT credentials")]
    RoleDenied(String),
    /// No grant applies to the user.
    #[error("no ACL grant applies to this user")]
    NoGrant,
    /// A template could not be filled in for this user.
    #[error(transparent)]
    Acl(#[from] AclError),
}

/// Where clients connect, as announced in the token response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerUrls {
    /// MQTT over secure WebSocket, for browsers.
    pub wss_url: String,
    /// MQTT over TLS, for devices and backends.
    pub mqtts_url: String,
}

/// The `mqtt_credentials` object of a token response.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttCredentials {
    /// `<user>@<org>`.
    pub username: String,
    /// The `tkn_` token.
    pub password: String,
    /// The client id the token is bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl std::fmt::Debug for MqttCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("client_id", &self.client_id)
            .finish()
    }
}

/// The token response shared by the worker and the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// Username and password for MQTT CONNECT.
    pub mqtt_credentials: MqttCredentials,
    /// When the token expires (Unix seconds).
    pub expires_at: UnixTime,
    /// When the client should fetch a new token (Unix seconds).
    pub refresh_at: UnixTime,
    /// The ACL the token grants.
    pub acl: AclRules,
    /// Where to connect.
    pub broker: BrokerUrls,
}

impl TokenResponse {
    /// Parses a token response (what the browser package does with the backend's answer).
    pub fn from_json(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }

    /// Seconds until the client should refresh, from `now` (0 when already due).
    pub fn refresh_in(&self, now: UnixTime) -> u64 {
        self.refresh_at.secs().saturating_sub(now.secs())
    }
}

/// When a client should refresh a token valid from `iat` to `exp`: 10% of the lifetime before
/// expiry, at least 60 s before, but never earlier than half-way through the lifetime (so a
/// 20-second token refreshes after 10 s, not at once).
pub fn refresh_at(iat: UnixTime, exp: UnixTime) -> UnixTime {
    let ttl = exp.secs().saturating_sub(iat.secs());
    let lead = (ttl / 10).max(60).min(ttl / 2);
    exp.minus(lead)
}

/// Whether an identity is refused because its user was revoked at `revoked_at`: an IdP token
/// issued at or before the revocation (or with no `iat`) is refused, and so is every token
/// while the revocation lies in the future (a suspension). The one rule of the worker and the
/// control plane.
pub fn user_revoked(revoked_at: Option<UnixTime>, identity: &Identity, now: UnixTime) -> bool {
    revoked_at.is_some_and(|at| identity.issued_at.is_none_or(|iat| iat <= at) || now <= at)
}

/// A fixed-window rate limit per key (an exchange's user or address), sans-IO: `limit` requests
/// per `period` seconds. The control plane's counterpart of the worker's rate-limiting
/// bindings, with the same defaults (10 per user and 60 per address per minute). At most
/// `max_keys` keys are tracked; when full, expired windows are dropped first and a key that
/// still finds no room is refused (a flood of fresh keys is itself abuse).
#[derive(Debug, Clone)]
pub struct WindowLimiter {
    limit: u32,
    period: u64,
    max_keys: usize,
    windows: std::collections::HashMap<String, (UnixTime, u32)>,
}

impl WindowLimiter {
    /// `limit` requests per `period` seconds per key.
    pub fn new(limit: u32, period: u64, max_keys: usize) -> Self {
        Self {
            limit,
            period: period.max(1),
            max_keys,
            windows: std::collections::HashMap::new(),
        }
    }

    /// Counts a request for `key` at `now`; whether it is within the limit.
    pub fn allow(&mut self, key: &str, now: UnixTime) -> bool {
        let period = self.period;
        if !self.windows.contains_key(key) && self.windows.len() >= self.max_keys {
            self.windows
                .retain(|_, (start, _)| now < start.plus(period));
            if self.windows.len() >= self.max_keys {
                return false;
            }
        }
        let w = self.windows.entry(key.to_owned()).or_insert((now, 0));
        if now >= w.0.plus(period) {
            *w = (now, 0);
        }
        w.1 = w.1.saturating_add(1);
        w.1 <= self.limit
    }
}

/// Everything the issuer side needs to turn identities into token responses.
#[derive(Debug, Clone)]
pub struct ExchangePolicy {
    /// `iss` of issued tokens (`CLOUDSIGNAL_ISSUER`).
    pub issuer: String,
    /// The org users are placed in (`CLOUDSIGNAL_ORG`).
    pub org: OrgId,
    /// Token lifetime in seconds (`CLOUDSIGNAL_TOKEN_TTL`, default 3600).
    pub ttl: u64,
    /// Role → ACL mapping (`CLOUDSIGNAL_ROLE_MAP`).
    pub role_map: RoleMap,
    /// Broker URLs announced to clients.
    pub broker: BrokerUrls,
}

/// Default token lifetime in seconds.
pub const DEFAULT_TTL: u64 = 3600;
/// Hard upper bound on a token lifetime (24 h): `tkn_` tokens are short-lived by design.
pub const MAX_TTL: u64 = 86_400;
/// Lower bound on a token lifetime in seconds.
pub const MIN_TTL: u64 = 5;

impl ExchangePolicy {
    /// Issues MQTT credentials for a verified identity at `now`, with token id `jti`.
    pub fn exchange(
        &self,
        identity: &Identity,
        now: UnixTime,
        jti: Jti,
        key: &SigningKey,
    ) -> Result<TokenResponse, ExchangeError> {
        self.exchange_with_roles(&self.role_map, identity, now, jti, key)
    }

    /// [`ExchangePolicy::exchange`] with another role map than the configured one (one kept
    /// in storage and changed without a redeploy).
    pub fn exchange_with_roles(
        &self,
        role_map: &RoleMap,
        identity: &Identity,
        now: UnixTime,
        jti: Jti,
        key: &SigningKey,
    ) -> Result<TokenResponse, ExchangeError> {
        let grant = role_map.grant(&identity.all_roles())?;
        let acl = grant.resolve_identity(identity.subject.as_str(), self.org.as_str())?;
        let ttl = self.ttl.clamp(MIN_TTL, MAX_TTL);
        let claims = TokenClaims::new(
            &self.issuer,
            identity.subject.clone(),
            self.org.clone(),
            acl.clone(),
            now,
            ttl,
            jti,
        );
        Ok(TokenResponse {
            mqtt_credentials: MqttCredentials {
                username: claims.username(),
                password: issue(&claims, key),
                client_id: None,
            },
            expires_at: claims.exp,
            refresh_at: refresh_at(claims.iat, claims.exp),
            acl,
            broker: self.broker.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::both_targets_test;
    use crate::idp::Provider;
    use crate::ids::UserId;
    use crate::test_vectors as tv;
    use crate::token::TokenVerifier;

    both_targets_test! {
        fn user_revocation_and_rate_limits() {
            let mut id = identity("authenticated", &[]);
            let now = UnixTime(1_000);
            assert!(!user_revoked(None, &id, now));
            assert!(user_revoked(Some(UnixTime(900)), &id, now), "no iat: refused");
            id.issued_at = Some(UnixTime(900));
            assert!(user_revoked(Some(UnixTime(900)), &id, now), "issued at the revocation");
            id.issued_at = Some(UnixTime(950));
            assert!(!user_revoked(Some(UnixTime(900)), &id, now), "signed in again after it");
            assert!(user_revoked(Some(UnixTime(2_000)), &id, now), "a suspension");
            let mut l = WindowLimiter::new(2, 60, 2);
            assert!(l.allow("a", now) && l.allow("a", now));
            assert!(!l.allow("a", now.plus(59)));
            assert!(l.allow("a", now.plus(60)), "a new window");
            assert!(l.allow("b", now.plus(60)));
            assert!(!l.allow("c", now.plus(61)), "full of live windows: refused");
            assert!(l.allow("c", now.plus(200)), "expired windows make room");
        }
    }

    fn identity(role: &str, roles: &[&str]) -> Identity {
        Identity {
            provider: Provider::Supabase,
            issuer: "https://x.supabase.co/auth/v1".into(),
            subject: UserId::parse("3f1c2a9e-1b2c-4d5e-8f90-123456789abc").unwrap(),
            role: Some(role.into()),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            email: None,
            email_verified: false,
            expires_at: None,
            issued_at: None,
        }
    }

    fn policy(role_map: RoleMap) -> ExchangePolicy {
        ExchangePolicy {
            issuer: "https://cloudsignal.test".into(),
            org: OrgId::parse("org_k7xm4pqr2n5t").unwrap(),
            ttl: 3600,
            role_map,
            broker: BrokerUrls {
                wss_url: "wss://localhost:18885/mqtt".into(),
                mqtts_url: "mqtts://localhost:8883".into(),
            },
        }
    }

    both_targets_test! {
        fn refresh_schedule() {
            let t = UnixTime(1_000_000);
            assert_eq!(refresh_at(t, t.plus(3600)), t.plus(3600 - 360));
            assert_eq!(refresh_at(t, t.plus(300)), t.plus(240), "at least 60 s before expiry");
            assert_eq!(refresh_at(t, t.plus(20)), t.plus(10), "never before half-way");
            assert_eq!(refresh_at(t, t.plus(86_400)), t.plus(86_400 - 8640));
        }
    }

    both_targets_test! {
        fn exchange_issues_a_verifiable_token_with_the_mapped_acl() {
            let map = RoleMap::from_json(
                r#"{"default": {"pub": ["users/{user}/#"], "sub": ["users/{user}/#"]},
                    "roles": {"editor": {"pub": ["orgs/{org}/posts/#"], "sub": ["orgs/{org}/posts/#", "users/{user}/#"]}}}"#,
            )
            .unwrap();
            let key = SigningKey::from_jwk_json(&tv::get("cs_signing_jwk")).unwrap();
            let now = tv::t0();
            let resp = policy(map).exchange(&identity("authenticated", &["editor"]), now, Jti::from_random([3; 16]), &key).unwrap();
            let user = "3f1c2a9e-1b2c-4d5e-8f90-123456789abc";
            assert_eq!(resp.mqtt_credentials.username, format!("{user}@org_k7xm4pqr2n5t"));
            assert_eq!(resp.acl.publish, [format!("users/{user}/#"), "orgs/org_k7xm4pqr2n5t/posts/#".into()]);
            assert_eq!(resp.acl.subscribe.len(), 2, "duplicates merged");
            assert_eq!(resp.expires_at, now.plus(3600));
            assert_eq!(resp.refresh_at, now.plus(3240));
            let mut v = TokenVerifier::default();
            v.trust("https://cloudsignal.test", [key.verifying_entry()]);
            let verified = v.verify(&resp.mqtt_credentials.password, &resp.mqtt_credentials.username, now).unwrap();
            assert_eq!(verified.claims.acl, resp.acl);
            // JSON round trip, and the password never appears in Debug output
            let json = serde_json::to_string(&resp).unwrap();
            assert_eq!(TokenResponse::from_json(&json).unwrap(), resp);
            assert!(!format!("{resp:?}").contains("tkn_"));
        }
    }

    both_targets_test! {
        fn denied_and_empty_grants() {
            let key = SigningKey::from_seed("k", [1; 32]);
            let p = policy(RoleMap::default());
            assert_eq!(
                p.exchange(&identity("anon", &[]), tv::t0(), Jti::from_random([0; 16]), &key).unwrap_err(),
                ExchangeError::RoleDenied("anon".into())
            );
            let p = policy(RoleMap { default: None, ..RoleMap::default() });
            assert_eq!(
                p.exchange(&identity("authenticated", &[]), tv::t0(), Jti::from_random([0; 16]), &key).unwrap_err(),
                ExchangeError::NoGrant
            );
        }
    }

    both_targets_test! {
        fn role_map_validation() {
            assert!(RoleMap::from_json(r#"{"default": {"pub": ["a/#/b"]}}"#).is_err());
            assert!(RoleMap::from_json(r#"{"defaults": {}}"#).is_err(), "typos are reported");
            assert!(RoleMap::from_json(r#"{"roles": {"x": {"sub": ["users/{nope}"]}}}"#).is_err());
            assert_eq!(RoleMap::from_json("{}").unwrap().default, None);
        }
    }
}
