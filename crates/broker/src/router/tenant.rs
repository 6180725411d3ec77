//! Tenants: every org's topics live in a space of their own (see the router's docs).

use super::index::Index;
use super::Retained;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A tenant: an org id, or `""` for identities with no org.
pub type Tenant = Arc<str>;

/// One tenant's topics: its subscriptions, retained messages and counters.
#[derive(Debug, Default)]
pub(super) struct Space {
    pub(super) subs: Index,
    pub(super) retained: BTreeMap<String, Retained>,
    pub(super) stats: Stats,
}

impl Space {
    /// Holds nothing but the broker's own retained `$SYS` messages (anonymous clients' retained
    /// messages have no owner either, but never a `$` topic: they are kept).
    pub(super) fn is_idle(&self) -> bool {
        self.subs.len() == 0
            && self
                .retained
                .values()
                .all(|r| r.owner.is_none() && r.message.topic.is_dollar())
    }
}

/// One tenant's figures for its `$SYS` topics.
#[derive(Debug, Clone, Default)]
pub struct TenantFigures {
    /// The tenant.
    pub tenant: Tenant,
    /// Live connections.
    pub connections: usize,
    /// Sessions kept for absent clients.
    pub stored_sessions: usize,
    /// Subscriptions.
    pub subscriptions: usize,
    /// Message counters.
    pub stats: Stats,
}

/// Counters for `$SYS` and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Messages routed to subscribers.
    pub delivered: u64,
    /// QoS 0 messages dropped because a subscriber's queue was full.
    pub dropped_qos0: u64,
    /// Connections closed as slow consumers.
    pub slow_consumers: u64,
    /// Times a publisher waited the stall limit for a subscriber that made no room.
    pub stalled: u64,
    /// Messages for absent clients dropped (QoS 0, or the stored queue was full).
    pub dropped_offline: u64,
    /// Messages for absent clients stored for later delivery.
    pub stored: u64,
}

impl Stats {
    pub(super) fn add(&mut self, o: &Stats) {
        self.delivered += o.delivered;
        self.dropped_qos0 += o.dropped_qos0;
        self.slow_consumers += o.slow_consumers;
        self.stalled += o.stalled;
        self.dropped_offline += o.dropped_offline;
        self.stored += o.stored;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{ConnHandle, Router};
    use super::*;
    use crate::mailbox::Mailbox;
    use cloudsignal_core::mqtt::{QoS, SubscriptionOptions};
    use cloudsignal_core::session::Message;
    use cloudsignal_core::topic::{SubscriptionFilter, TopicName};
    use std::time::Instant;

    fn join(r: &mut Router, id: u64, owner: &str, tenant: &str) -> Arc<Mailbox> {
        let mailbox = Arc::new(Mailbox::new(16));
        let handle = ConnHandle {
            info: None,
            mailbox: mailbox.clone(),
        };
        let now = Instant::now();
        r.register(
            id,
            "same-client-id",
            owner,
            &Tenant::from(tenant),
            &Default::default(),
            handle,
            true,
            false,
            now,
        )
        .unwrap();
        mailbox
    }

    fn sub(r: &mut Router, id: u64, filter: &str) -> usize {
        let opts = SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        };
        let f = SubscriptionFilter::parse(filter).unwrap();
        r.subscribe(id, f, opts, None, Instant::now())
            .unwrap()
            .len()
    }

    fn publish(r: &mut Router, id: u64, tenant: &str, topic: &str, retain: bool) -> usize {
        let m = Message {
            topic: TopicName::parse(topic).unwrap(),
            payload: b"x".to_vec(),
            qos: QoS::AtLeastOnce,
            retain,
            expiry: None,
            forwarded: Default::default(),
        };
        r.publish(id, &Tenant::from(tenant), Arc::new(m), Instant::now())
            .unwrap()
            .reached
    }

    /// No filter, shared group or retained message reaches across tenants, with the same
    /// user, client id and topics in both; `$SYS` figures are each tenant's own.
    #[test]
    fn tenants_are_disjoint() {
        let mut r = Router::default();
        join(&mut r, 1, "user:org_a:alice", "org_a");
        join(&mut r, 2, "user:org_b:alice", "org_b");
        join(&mut r, 3, "service:org_b:backend", "org_b");
        for (id, f) in [
            (1, "#"),
            (2, "users/alice/#"),
            (3, "$share/g/#"),
            (1, "$share/g/#"),
        ] {
            assert_eq!(sub(&mut r, id, f), 0);
        }
        assert_eq!(
            publish(&mut r, 1, "org_a", "users/alice/x", true),
            1,
            "only org_a's #"
        );
        assert_eq!(
            publish(&mut r, 2, "org_b", "users/alice/x", false),
            2,
            "org_b's filter and group"
        );
        assert_eq!(
            publish(&mut r, 9, "org_c", "users/alice/x", false),
            0,
            "an empty tenant"
        );
        // the retained message of org_a is replayed only in org_a
        assert_eq!(sub(&mut r, 2, "users/#"), 0);
        assert_eq!(sub(&mut r, 1, "users/#"), 1);
        let mut figures = r.tenants();
        figures.sort_by(|x, y| x.tenant.cmp(&y.tenant));
        let seen: Vec<(&str, usize, usize, u64)> = figures
            .iter()
            .map(|f| {
                (
                    &*f.tenant,
                    f.connections,
                    f.subscriptions,
                    f.stats.delivered,
                )
            })
            .collect();
        assert_eq!(seen, [("org_a", 1, 3, 1), ("org_b", 2, 3, 2)]);
    }

    /// A tenant is forgotten only when it holds nothing of its clients': an anonymous client's
    /// retained message (no owner, no quota) outlives every session of its tenant.
    #[test]
    fn retained_messages_outlive_their_tenants_sessions() {
        let mut r = Router::default();
        join(&mut r, 1, "anonymous", "");
        assert_eq!(publish(&mut r, 1, "", "status/lamp", true), 0);
        r.remove(1);
        assert!(r.tenants().is_empty() || r.tenants().iter().all(|f| f.connections == 0));
        join(&mut r, 2, "anonymous", "");
        assert_eq!(
            sub(&mut r, 2, "status/#"),
            1,
            "the retained message is still there"
        );
    }
}
