//! API keys as MQTT credentials: username `<name>@<org>`, password `sk_…` or `rk_…`.
//!
//! A key is **one identity**: its name in its org, fixed when it was created (the create
//! response's `mqtt_username`). A CONNECT naming any other username is refused 0x86, so a key
//! can never act as a user or as another service. `sk_` keys may publish and subscribe
//! anywhere in their org; `rk_` keys only where their `mqtt:publish:<filter>` /
//! `mqtt:subscribe:<filter>` scopes allow, and an `rk_` key without any `mqtt:` scope cannot
//! connect at all (0x87). The key's CIDR allowlist is checked against the TCP peer address. bcrypt runs in [`KeyAuthority::warm`] on a blocking
//! thread; [`KeyAuthority::check`] answers from the verification cache.

use crate::api::cidr_contains;
use crate::ControlPlane;
use cloudsignal_broker::auth::{Identity, KeyAuthority, Principal, Refusal};
use cloudsignal_core::acl::{AclContext, AclRules};
use cloudsignal_core::ids::Username;
use cloudsignal_core::mqtt::ReasonCode;
use cloudsignal_core::revocation::Credential;
use cloudsignal_core::UnixTime;
use std::net::IpAddr;
use std::sync::Arc;
use tracing::debug;

/// The control plane's keys, as the broker sees them.
#[derive(Debug, Clone)]
pub struct MqttKeys(pub Arc<ControlPlane>);

impl KeyAuthority for MqttKeys {
    fn is_warm(&self, key: &str, now: UnixTime) -> bool {
        matches!(self.0.keys.cached(key, now), Ok(Some(_)))
    }

    fn bcrypt_slots(&self) -> Arc<tokio::sync::Semaphore> {
        self.0.bcrypt_slots.clone()
    }

    fn warm(&self, key: &str, now: UnixTime) {
        if let Err(e) = self.0.keys.verify(self.0.store.as_ref(), key, now) {
            debug!(error = %e, "API key not verified");
        }
    }

    fn check(
        &self,
        username: &str,
        key: &str,
        peer: IpAddr,
        now: UnixTime,
    ) -> Result<Principal, Refusal> {
        let refuse = |reason, cause: String| Refusal { reason, cause };
        let verified = self
            .0
            .keys
            .cached(key, now)
            .map_err(|e| refuse(ReasonCode::BAD_USERNAME_OR_PASSWORD, e.to_string()))?
            .ok_or_else(|| {
                let why = self.0.keys.take_refusal(key);
                refuse(
                    ReasonCode::BAD_USERNAME_OR_PASSWORD,
                    why.unwrap_or_else(|| "unknown API key or wrong secret".into()),
                )
            })?;
        let k = &verified.key;
        let name = Username::parse(username)
            .map_err(|e| refuse(ReasonCode::BAD_USERNAME_OR_PASSWORD, e.to_string()))?;
        let Some(identity) = k.mqtt_username() else {
            return Err(refuse(
                ReasonCode::NOT_AUTHORIZED,
                format!(
                    "key {} has a name ({:?}) that is not an MQTT identity; create a key with a valid name",
                    k.id, k.name
                ),
            ));
        };
        if username != identity {
            return Err(refuse(
                ReasonCode::BAD_USERNAME_OR_PASSWORD,
                format!(
                    "key {} is the identity {identity}, not {username:?} (a key is one identity)",
                    k.id
                ),
            ));
        }
        if k.kind != "sk" && !k.scopes.iter().any(|s| s.starts_with("mqtt:")) {
            return Err(refuse(
                ReasonCode::NOT_AUTHORIZED,
                format!("key {} has no mqtt: scope, so it may not connect", k.id),
            ));
        }
        if !k.allow_cidrs.is_empty()
            && !k
                .allow_cidrs
                .iter()
                .any(|c| cidr_contains(c, peer).unwrap_or(false))
        {
            return Err(refuse(
                ReasonCode::NOT_AUTHORIZED,
                format!("key {} may not be used from {peer}", k.id),
            ));
        }
        let rules = if k.kind == "sk" {
            AclRules::new(["#"], ["#"])
        } else {
            let scoped =
                |kind: &str| -> Vec<String> { k.mqtt_scopes(kind).map(str::to_owned).collect() };
            AclRules::new(scoped("publish"), scoped("subscribe"))
        };
        let acl = rules
            .and_then(|r| {
                r.compile(&AclContext::new(
                    name.user.as_str(),
                    name.org.as_str(),
                    None,
                ))
            })
            .map_err(|e| {
                refuse(
                    ReasonCode::NOT_AUTHORIZED,
                    format!("key {} scopes: {e}", k.id),
                )
            })?;
        Ok(Principal {
            username: username.to_owned(),
            identity: Identity::Service {
                org: k.org.clone(),
                name: k.name.clone(),
            },
            acl,
            expires_at: k.expires_at,
            credential: std::sync::Arc::new(Credential {
                org: Some(k.org.clone()),
                user: Some(name.user.as_str().to_owned()),
                key_id: Some(k.id.clone()),
                ..Credential::default()
            }),
        })
    }
}
