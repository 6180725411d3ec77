//! Connections route through the `Backplane` trait, not a concrete router: a broker given its
//! own backplane (here one that records every publish, then hands it to this process's router,
//! as a cluster's would before forwarding it to its peers) serves real clients through it.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use cloudsignal_broker::backplane::{Admitted, Backplane, Local, Registration};
use cloudsignal_broker::mailbox::Mailbox;
use cloudsignal_broker::router::{ConnId, QuotaExceeded, Routed, Router, Tenant, TenantFigures};
use cloudsignal_core::mqtt::SubscriptionOptions;
use cloudsignal_core::mqtt::{Packet, Properties, Protocol, Publish, QoS, ReasonCode};
use cloudsignal_core::revocation::{Credential, Entry};
use cloudsignal_core::session::{Delivery, Message, StoredSession};
use cloudsignal_core::topic::{SubscriptionFilter, TopicFilter};
use common::*;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Records the topics published through it, and routes with the local router.
#[derive(Debug)]
struct Recording {
    local: Local,
    published: Mutex<Vec<String>>,
}

impl Backplane for Recording {
    fn register(
        &self,
        r: Registration<'_>,
        keep: &dyn Fn(&TopicFilter) -> bool,
        now: Instant,
    ) -> Result<Admitted, QuotaExceeded> {
        self.local.register(r, keep, now)
    }
    fn publish(
        &self,
        from: ConnId,
        tenant: &Tenant,
        message: Arc<Message>,
        now: Instant,
    ) -> Result<Routed, QuotaExceeded> {
        self.published
            .lock()
            .unwrap()
            .push(message.topic.as_str().to_owned());
        self.local.publish(from, tenant, message, now)
    }
    fn subscribe(
        &self,
        conn: ConnId,
        filter: SubscriptionFilter,
        opts: SubscriptionOptions,
        id: Option<u32>,
        now: Instant,
    ) -> Result<Vec<Delivery>, QuotaExceeded> {
        self.local.subscribe(conn, filter, opts, id, now)
    }
    fn unsubscribe(&self, conn: ConnId, filter: SubscriptionFilter) -> bool {
        self.local.unsubscribe(conn, filter)
    }
    fn reauthenticated(
        &self,
        conn: ConnId,
        credential: Arc<Credential>,
        expires_at: Option<u64>,
        keep: &dyn Fn(&TopicFilter) -> bool,
    ) -> usize {
        self.local
            .reauthenticated(conn, credential, expires_at, keep)
    }
    fn count_stalled(&self, tenant: &Tenant) {
        self.local.count_stalled(tenant);
    }
    fn detach(
        &self,
        conn: ConnId,
        generation: u64,
        stored: StoredSession,
        mailbox: &Mailbox,
        expiry_secs: u32,
        delayed_will: Option<Message>,
        now: Instant,
    ) -> bool {
        self.local.detach(
            conn,
            generation,
            stored,
            mailbox,
            expiry_secs,
            delayed_will,
            now,
        )
    }
    fn take_delayed_will(&self, conn: ConnId, generation: u64) -> Option<Message> {
        self.local.take_delayed_will(conn, generation)
    }
    fn expire(&self, conn: ConnId, generation: u64) -> Option<Message> {
        self.local.expire(conn, generation)
    }
    fn revoke(&self, entry: &Entry) -> (Vec<String>, usize) {
        self.local.revoke(entry)
    }
    fn tenants(&self) -> Vec<TenantFigures> {
        self.local.tenants()
    }
    fn connections(&self) -> usize {
        self.local.connections()
    }
    fn live_sessions(&self, org: Option<&str>) -> Vec<cloudsignal_broker::router::LiveSession> {
        self.local.live_sessions(org)
    }
    fn kick(&self, id: ConnId, org: &str) -> bool {
        self.local.kick(id, org)
    }
    fn close_all(&self, reason: ReasonCode) {
        self.local.close_all(reason);
    }
}

#[tokio::test]
async fn a_broker_routes_through_the_backplane_it_is_given() {
    let recording = Arc::new(Recording {
        local: Local::new(Router::default()),
        published: Mutex::new(Vec::new()),
    });
    let backplane: Arc<dyn Backplane> = recording.clone();
    let addr = start_with(true, |c| c.backplane = Some(backplane)).await;

    let (mut sub, code) = Raw::connect(addr, Protocol::V311, "sub", None, None).await;
    assert_eq!(code, ReasonCode::SUCCESS);
    sub.send(&subscribe("cluster/t", 1)).await;
    assert!(matches!(sub.recv_within(5).await, Some(Packet::Suback(_))));
    let (mut publisher, code) = Raw::connect(addr, Protocol::V311, "pub", None, None).await;
    assert_eq!(code, ReasonCode::SUCCESS);
    publisher
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "cluster/t",
            packet_id: None,
            properties: Properties::default(),
            payload: b"through the trait",
        }))
        .await;
    match sub.recv_within(5).await {
        Some(Packet::Publish(p)) => assert_eq!(p.payload, b"through the trait"),
        other => panic!("expected the message, got {other:?}"),
    }
    assert!(recording
        .published
        .lock()
        .unwrap()
        .iter()
        .any(|t| t == "cluster/t"));
}
