//! What a cluster asks of a node's router: which filters it holds (so other nodes know where
//! to send), delivery of a message another node routed here, its retained messages kept in
//! step, and sessions taken over on another node.

use super::{ConnId, Router, SubKey, Tenant};
use cloudsignal_core::mqtt::ReasonCode;
use cloudsignal_core::session::Message;
use std::sync::Arc;
use std::time::Instant;

/// Which subscribers a message is delivered to.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Every matching subscription, a member of each matching shared group included.
    All,
    /// Plain subscriptions (if `plain`) and one member of each of `groups` (a cluster picks
    /// the node of each shared group; the node picks the member).
    Selected {
        /// Deliver to the matching plain subscriptions.
        plain: bool,
        /// Shared groups (group, filter) to deliver to.
        groups: &'a [SubKey],
        /// The message is in the cluster's message log: plain subscriptions of persistent
        /// sessions get it from there (see [`Router::route_logged`]), not here.
        logged: bool,
    },
}

/// A filter this node gained (its first subscriber here) or lost (its last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterestChange {
    /// The tenant.
    pub tenant: Tenant,
    /// The filter, and its shared group if any.
    pub key: SubKey,
    /// Gained (`true`) or lost.
    pub gained: bool,
}

/// Filters held, by subscriber count, and the changes not yet taken.
#[derive(Debug, Default)]
pub(super) struct Interest {
    changes: Vec<InterestChange>,
}

/// Records that a subscriber of `key` was added or removed (the index tells whether the key
/// itself appeared or went: this is called only then).
pub(super) fn note(interest: &mut Option<Interest>, tenant: &Tenant, key: &SubKey, gained: bool) {
    if let Some(i) = interest {
        i.changes.push(InterestChange {
            tenant: tenant.clone(),
            key: key.clone(),
            gained,
        });
    }
}

impl Router {
    /// Keeps the changes of which (tenant, filter) pairs have a subscriber here, for
    /// [`Self::take_interest_changes`].
    pub fn track_interest(&mut self) {
        self.interest.get_or_insert_with(Interest::default);
    }

    /// The changes since the last call (a key's first subscriber and its last), in order.
    pub fn take_interest_changes(&mut self) -> Vec<InterestChange> {
        self.interest
            .as_mut()
            .map(|i| std::mem::take(&mut i.changes))
            .unwrap_or_default()
    }

    /// Every (tenant, filter) pair with a subscriber here.
    pub fn interest(&self) -> Vec<(Tenant, SubKey)> {
        let mut all = Vec::new();
        for s in self.sessions.values() {
            for k in &s.filters {
                all.push((s.tenant.clone(), k.clone()));
            }
        }
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Stores (or clears) the retained message of a publish by `from` (a cluster's node routes
    /// with [`Self::route`] after this); refused past its owner's retained quota.
    pub fn accept_retained(
        &mut self,
        from: ConnId,
        tenant: &Tenant,
        message: &Arc<Message>,
        now: Instant,
    ) -> Result<(), super::QuotaExceeded> {
        if message.retain {
            self.retain(from, tenant, message, now)?;
        }
        Ok(())
    }

    /// Stores (or, with an empty payload, clears) a retained message another node accepted
    /// (counted against nobody's quota here: its publisher's node did that).
    pub fn store_retained(&mut self, tenant: &Tenant, message: &Arc<Message>, now: Instant) {
        // from 0: the broker's own, like `$SYS`
        let _ = self.retain(0, tenant, message, now);
    }

    /// Another node took over the session of `client_id` of `owner`: its live connection here
    /// is closed (0x8E, session taken over) and the session ends with it; a stored one ends
    /// now. Whether there was one.
    pub fn evict(&mut self, owner: &str, client_id: &str) -> bool {
        let Some(id) = self
            .clients
            .get(&(Arc::from(owner), Arc::from(client_id)))
            .copied()
        else {
            return false;
        };
        let Some(s) = self.sessions.get_mut(&id) else {
            return false;
        };
        let live = s.handle.is_some();
        if let Some(h) = &s.handle {
            h.kill(
                ReasonCode::SESSION_TAKEN_OVER,
                Some("session taken over on another node".into()),
            );
            // the session moved: it ends with this connection, it is not stored
            s.revoked = true;
        }
        self.durable_moved(id);
        if !live {
            let _ = self.end(id);
        }
        true
    }

    /// The session id of `client_id` of `owner`, if this node holds it.
    pub fn session_of(&self, owner: &str, client_id: &str) -> Option<ConnId> {
        self.clients
            .get(&(Arc::from(owner), Arc::from(client_id)))
            .copied()
    }
}
