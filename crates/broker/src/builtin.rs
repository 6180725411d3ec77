//! The built-in methods of the authenticator chain, over [`Authenticator`]'s shared state:
//! `token` (`tkn_` tokens, as the password or MQTT 5 enhanced authentication), `api_key`
//! (`sk_`/`rk_` keys as the password) and `anonymous` (no credentials, development only).

use crate::auth::{is_api_key, Authenticator, Refusal, TOKEN_AUTH_METHOD};
use crate::chain::{AuthMethod, Decision, DecisionFuture, PeerInfo};
use cloudsignal_core::mqtt::ReasonCode;
use cloudsignal_core::session::ConnectRequest;
use cloudsignal_core::UnixTime;

fn decided(r: Result<crate::auth::Principal, Refusal>) -> Decision {
    match r {
        Ok(p) => Decision::Allow(std::sync::Arc::new(p)),
        Err(r) => Decision::Deny(r),
    }
}

fn half_credentials() -> Decision {
    Decision::Deny(Refusal {
        reason: ReasonCode::BAD_USERNAME_OR_PASSWORD,
        cause: "username and password must both be given".into(),
    })
}

/// The credential a token method reads: the password, or the MQTT 5 authentication data of
/// method `cloudsignal-token`.
fn token_credential(req: &ConnectRequest) -> Option<&[u8]> {
    req.password
        .as_deref()
        .or(if req.auth_method.as_deref() == Some(TOKEN_AUTH_METHOD) {
            req.auth_data.as_deref()
        } else {
            None
        })
}

/// `tkn_` tokens from any trusted issuer.
#[derive(Debug)]
pub struct TokenMethod(pub Authenticator);

impl AuthMethod for TokenMethod {
    fn name(&self) -> &'static str {
        "token"
    }

    fn decide<'a>(
        &'a self,
        req: &'a ConnectRequest,
        _peer: &'a PeerInfo,
        now: UnixTime,
    ) -> DecisionFuture<'a> {
        Box::pin(async move {
            let Some(password) = token_credential(req).filter(|p| p.starts_with(b"tkn_")) else {
                return Decision::NotMine;
            };
            let Some(username) = req.username.as_deref() else {
                return half_credentials();
            };
            if let Err(r) = self.0.prepare(Some(password), now).await {
                return Decision::Deny(r);
            }
            decided(self.0.token(req, username, password, now))
        })
    }
}

/// `sk_`/`rk_` API keys (verified by the control plane's key authority).
#[derive(Debug)]
pub struct ApiKeyMethod(pub Authenticator);

impl AuthMethod for ApiKeyMethod {
    fn name(&self) -> &'static str {
        "api_key"
    }

    fn decide<'a>(
        &'a self,
        req: &'a ConnectRequest,
        peer: &'a PeerInfo,
        now: UnixTime,
    ) -> DecisionFuture<'a> {
        Box::pin(async move {
            let Some(password) = req.password.as_deref().filter(|p| is_api_key(p)) else {
                return Decision::NotMine;
            };
            let Some(username) = req.username.as_deref() else {
                return half_credentials();
            };
            if let Err(r) = self.0.prepare(Some(password), now).await {
                return Decision::Deny(r);
            }
            decided(self.0.api_key(username, password, peer.addr.ip(), now))
        })
    }
}

/// No credentials at all, when `--allow-anonymous` is on (development only).
#[derive(Debug)]
pub struct AnonymousMethod(pub Authenticator);

impl AuthMethod for AnonymousMethod {
    fn name(&self) -> &'static str {
        "anonymous"
    }

    fn decide<'a>(
        &'a self,
        req: &'a ConnectRequest,
        peer: &'a PeerInfo,
        _now: UnixTime,
    ) -> DecisionFuture<'a> {
        Box::pin(async move {
            let bare = req.username.is_none() && req.password.is_none() && peer.cert.is_none();
            if !bare || !self.0.allows_anonymous() {
                return Decision::NotMine;
            }
            // one principal for every anonymous client (it is the same for all of them): an
            // idle anonymous connection holds no ACL of its own
            static ANONYMOUS: std::sync::OnceLock<std::sync::Arc<crate::auth::Principal>> =
                std::sync::OnceLock::new();
            if let Some(p) = ANONYMOUS.get() {
                return Decision::Allow(p.clone());
            }
            match self.0.anonymous() {
                Ok(p) => Decision::Allow(ANONYMOUS.get_or_init(|| std::sync::Arc::new(p)).clone()),
                Err(r) => Decision::Deny(r),
            }
        })
    }
}
