//! The authenticator chain: every way of authenticating a CONNECT is one [`AuthMethod`]
//! (`tkn_` tokens, API keys, client certificates, the auth webhook, anonymous development
//! access). The chain asks its methods in order; the first that claims the CONNECT decides it
//! (allow with a principal, or deny with a reason); a method that does not recognise the
//! credentials answers [`Decision::NotMine`] and the next is asked. Each entry may be limited
//! to some listeners (`tcp`, `tls`, `ws`, `wss`). Every decision is logged with the method that
//! made it.

use crate::auth::{Principal, Refusal};
use crate::mtls::ClientCert;
use cloudsignal_core::session::ConnectRequest;
use cloudsignal_core::UnixTime;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

/// Who is connecting, as the transport knows it.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The TCP peer.
    pub addr: SocketAddr,
    /// The listener's transport: `tcp`, `tls`, `ws` or `wss`.
    pub listener: &'static str,
    /// The client certificate the TLS handshake verified, if the client presented one.
    pub cert: Option<Arc<ClientCert>>,
}

impl PeerInfo {
    /// A peer on a listener without client certificates.
    pub fn plain(addr: SocketAddr, listener: &'static str) -> Self {
        Self {
            addr,
            listener,
            cert: None,
        }
    }
}

/// What a method decided.
#[derive(Debug)]
pub enum Decision {
    /// Authenticated: who it is and what it may do.
    Allow(Arc<Principal>),
    /// Refused, with the reason code sent and the cause logged.
    Deny(Refusal),
    /// Not this method's credentials: ask the next.
    NotMine,
}

/// A boxed decision in the making (methods may wait: a key fetch, bcrypt, an HTTP call).
pub type DecisionFuture<'a> = Pin<Box<dyn Future<Output = Decision> + Send + 'a>>;

/// One way of authenticating.
pub trait AuthMethod: Send + Sync + std::fmt::Debug {
    /// Its name in logs and configuration.
    fn name(&self) -> &'static str;
    /// Decides `req` from `peer` at `now`.
    fn decide<'a>(
        &'a self,
        req: &'a ConnectRequest,
        peer: &'a PeerInfo,
        now: UnixTime,
    ) -> DecisionFuture<'a>;
}

/// One entry of the chain.
#[derive(Debug, Clone)]
pub struct ChainEntry {
    /// The method.
    pub method: Arc<dyn AuthMethod>,
    /// The listeners it applies to (empty: all).
    pub listeners: Vec<String>,
}

impl ChainEntry {
    /// `method` on every listener.
    pub fn everywhere(method: Arc<dyn AuthMethod>) -> Self {
        Self {
            method,
            listeners: Vec::new(),
        }
    }

    /// Its name in logs: the method, and its listeners when limited (`mtls (tls, wss)`).
    pub fn label(&self) -> String {
        match self.listeners.as_slice() {
            [] => self.method.name().to_owned(),
            l => format!("{} ({})", self.method.name(), l.join(", ")),
        }
    }

    /// Whether it applies on `listener`.
    pub fn applies(&self, listener: &str) -> bool {
        self.listeners.is_empty() || self.listeners.iter().any(|l| l == listener)
    }
}

/// The chain a broker asks, in order.
#[derive(Debug, Clone)]
pub struct Chain {
    entries: Arc<Vec<ChainEntry>>,
    revocations: Arc<parking_lot::RwLock<cloudsignal_core::revocation::RevocationList>>,
}

impl Chain {
    /// A chain of `entries`, checking every principal against `revocations`.
    pub fn new(
        entries: Vec<ChainEntry>,
        revocations: Arc<parking_lot::RwLock<cloudsignal_core::revocation::RevocationList>>,
    ) -> Self {
        Self {
            entries: Arc::new(entries),
            revocations,
        }
    }

    /// The methods' names, in order (for the start-up log).
    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(ChainEntry::label).collect()
    }

    /// Decides a CONNECT: the first method that claims it decides; the principal's credential
    /// is checked against the revocations whatever the method. Returns the principal and the
    /// method's name, or the refusal (its cause prefixed with the method's name).
    pub async fn connect(
        &self,
        req: &ConnectRequest,
        peer: &PeerInfo,
        now: UnixTime,
    ) -> Result<(Arc<Principal>, &'static str), Refusal> {
        use cloudsignal_core::mqtt::ReasonCode;
        let refuse = |reason, cause: String| Refusal { reason, cause };
        if let Some(method) = &req.auth_method {
            if method != crate::auth::TOKEN_AUTH_METHOD {
                return Err(refuse(
                    ReasonCode::BAD_AUTHENTICATION_METHOD,
                    format!("unsupported authentication method {method:?}"),
                ));
            }
        }
        for entry in self.entries.iter().filter(|e| e.applies(peer.listener)) {
            let name = entry.method.name();
            match entry.method.decide(req, peer, now).await {
                Decision::NotMine => {}
                Decision::Deny(r) => {
                    return Err(refuse(r.reason, format!("{name}: {}", r.cause)));
                }
                Decision::Allow(p) => {
                    if let Some(why) = self.revocations.read().check(&p.credential) {
                        return Err(refuse(
                            ReasonCode::BAD_USERNAME_OR_PASSWORD,
                            format!("{name}: {why}"),
                        ));
                    }
                    return Ok((p, name));
                }
            }
        }
        let credentials = (req.username.is_some(), req.password.is_some());
        Err(match credentials {
            (false, false) if peer.cert.is_none() => refuse(
                ReasonCode::NOT_AUTHORIZED,
                "no credentials and anonymous access is disabled".into(),
            ),
            (true, false) | (false, true) if peer.cert.is_none() => refuse(
                ReasonCode::BAD_USERNAME_OR_PASSWORD,
                "username and password must both be given".into(),
            ),
            _ => refuse(
                ReasonCode::BAD_USERNAME_OR_PASSWORD,
                format!(
                    "no authentication method accepts these credentials on the {} listener (methods: {})",
                    peer.listener,
                    self.names().join(", ")
                ),
            ),
        })
    }
}
