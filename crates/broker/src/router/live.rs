//! The live-sessions list an operator sees (the dashboard, `GET /v1/sessions`), and kicking a
//! connection.

use super::{ConnId, Router};
use cloudsignal_core::mqtt::ReasonCode;
use cloudsignal_core::revocation::Credential;
use std::sync::Arc;

/// A live connection as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveInfo {
    /// The TCP peer.
    pub addr: std::net::SocketAddr,
    /// The listener: `tcp`, `tls`, `ws` or `wss`.
    pub listener: &'static str,
    /// `3.1.1` or `5`.
    pub protocol: &'static str,
    /// The authentication method: `token`, `api_key`, `mtls`, `webhook`, `anonymous`.
    pub method: &'static str,
    /// The username it authenticated as.
    pub username: String,
    /// When it connected (Unix seconds).
    pub connected_at: u64,
    /// When its credential expires (Unix seconds).
    pub expires_at: Option<u64>,
}

/// One row of the live-sessions list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    /// The connection's id (for kicking it).
    pub id: ConnId,
    /// The client id.
    pub client_id: String,
    /// The identity that owns the session.
    pub owner: String,
    /// The org (tenant).
    pub org: String,
    /// Subscriptions it holds.
    pub subscriptions: usize,
    /// The connection.
    pub info: Arc<LiveInfo>,
    /// What revocation looks at (its token id, key id, user, certificate).
    pub credential: Arc<Credential>,
}

impl Router {
    /// The live connections of `org` (every org: `None`), newest first.
    pub fn live_sessions(&self, org: Option<&str>) -> Vec<LiveSession> {
        let mut out: Vec<LiveSession> = self
            .sessions
            .iter()
            .filter(|(_, s)| org.is_none_or(|o| &*s.tenant == o))
            .filter_map(|(id, s)| {
                let info = s.handle.as_ref()?.info.clone()?;
                Some(LiveSession {
                    id: *id,
                    client_id: s.client_id.to_string(),
                    owner: s.owner.to_string(),
                    org: s.tenant.to_string(),
                    subscriptions: s.filters.len(),
                    info,
                    credential: s.credential.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| {
            b.info
                .connected_at
                .cmp(&a.info.connected_at)
                .then(a.id.cmp(&b.id))
        });
        out
    }

    /// How many live connections `org` has (counted, nothing copied).
    pub fn live_count(&self, org: &str) -> usize {
        self.sessions
            .values()
            .filter(|s| s.handle.is_some() && &*s.tenant == org)
            .count()
    }

    /// Closes live connection `id` of `org` (DISCONNECT 0x98, administrative action); whether
    /// there was one. The client may reconnect: kicking is not revoking.
    pub fn kick(&self, id: ConnId, org: &str) -> bool {
        match self.sessions.get(&id) {
            Some(s) if &*s.tenant == org => match &s.handle {
                Some(h) => {
                    h.kill(
                        ReasonCode::ADMINISTRATIVE_ACTION,
                        Some("disconnected by an operator".into()),
                    );
                    true
                }
                None => false,
            },
            _ => false,
        }
    }
}
