//! The router behind a trait: everything a connection (and the broker's own tasks) ask of
//! the rest of the broker. [`Local`] is this process's [`Router`] behind a mutex; a cluster
//! backplane (a message bus between brokers) implements the same trait, and connections do
//! not change.
//!
//! Every method is synchronous and must not block for long: connections call them from their
//! protocol state machine, between reading and writing. A backplane that talks to other
//! machines does so in its own tasks and answers from local state.

use crate::mailbox::Mailbox;
use crate::router::{
    ConnHandle, ConnId, QuotaExceeded, Registered, Routed, Router, Tenant, TenantFigures,
};
use cloudsignal_core::mqtt::{ReasonCode, SubscriptionOptions};
use cloudsignal_core::revocation::{Credential, Entry};
use cloudsignal_core::session::{Delivery, Message, StoredSession};
use cloudsignal_core::topic::{SubscriptionFilter, TopicFilter};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Instant;

/// A connection asking for its session (see [`Router::register`]).
#[derive(Debug)]
pub struct Registration<'a> {
    /// The connection.
    pub conn: ConnId,
    /// The client id (assigned, if the client sent none).
    pub client_id: &'a str,
    /// The identity's owner key (client ids are scoped to it).
    pub owner: &'a str,
    /// The identity's tenant.
    pub tenant: &'a Tenant,
    /// The credential (for revocation).
    pub credential: &'a Arc<Credential>,
    /// Where deliveries and close orders go.
    pub handle: ConnHandle,
    /// Clean Start (v5) / Clean Session (v3.1.1).
    pub clean_start: bool,
    /// The session outlives the connection.
    pub persistent: bool,
    /// Its Session Expiry Interval, in seconds (as granted).
    pub session_expiry: u32,
}

/// A registration the backplane accepted.
#[derive(Debug)]
pub struct Admitted {
    /// The session, and what it resumes.
    pub registered: Registered,
    /// Subscriptions of a resumed session that this login's ACL does not allow, removed.
    pub removed_subscriptions: usize,
    /// The session's tenant is new here (its `$SYS` figures are due now).
    pub new_tenant: bool,
}

/// Routing, sessions and subscriptions, as connections see them.
pub trait Backplane: Send + Sync + std::fmt::Debug {
    /// Registers a connection's session; a resumed session keeps only the subscriptions
    /// `keep` allows.
    fn register(
        &self,
        registration: Registration<'_>,
        keep: &dyn Fn(&TopicFilter) -> bool,
        now: Instant,
    ) -> Result<Admitted, QuotaExceeded>;
    /// Routes a message published by `from` in `tenant`.
    fn publish(
        &self,
        from: ConnId,
        tenant: &Tenant,
        message: Arc<Message>,
        now: Instant,
    ) -> Result<Routed, QuotaExceeded>;
    /// Adds a subscription; returns the retained messages to replay.
    fn subscribe(
        &self,
        conn: ConnId,
        filter: SubscriptionFilter,
        opts: SubscriptionOptions,
        id: Option<u32>,
        now: Instant,
    ) -> Result<Vec<Delivery>, QuotaExceeded>;
    /// Removes a subscription; whether it existed.
    fn unsubscribe(&self, conn: ConnId, filter: SubscriptionFilter) -> bool;
    /// A live session re-authenticated: records its credential and removes the subscriptions
    /// `keep` no longer allows (returns how many).
    fn reauthenticated(
        &self,
        conn: ConnId,
        credential: Arc<Credential>,
        expires_at: Option<u64>,
        keep: &dyn Fn(&TopicFilter) -> bool,
    ) -> usize;
    /// Counts a subscriber of `tenant` that made no room within the stall limit.
    fn count_stalled(&self, tenant: &Tenant);
    /// A connection ended (see [`Router::detach`]); whether its session was kept.
    #[allow(clippy::too_many_arguments)]
    fn detach(
        &self,
        conn: ConnId,
        generation: u64,
        stored: StoredSession,
        mailbox: &Mailbox,
        expiry_secs: u32,
        delayed_will: Option<Message>,
        now: Instant,
    ) -> bool;
    /// Takes a stored session's delayed will (its Will Delay Interval passed).
    fn take_delayed_will(&self, conn: ConnId, generation: u64) -> Option<Message>;
    /// Ends a stored session whose Session Expiry Interval passed; returns a will to publish.
    fn expire(&self, conn: ConnId, generation: u64) -> Option<Message>;
    /// Applies a revocation to live and stored sessions (client ids closed, stored ended).
    fn revoke(&self, entry: &Entry) -> (Vec<String>, usize);
    /// Each tenant's figures (for `$SYS`).
    fn tenants(&self) -> Vec<TenantFigures>;
    /// Live connections.
    fn connections(&self) -> usize;
    /// The live connections of `org` (every org: `None`), newest first.
    fn live_sessions(&self, org: Option<&str>) -> Vec<crate::router::LiveSession>;
    /// How many live connections `org` has.
    fn live_count(&self, org: &str) -> usize {
        self.live_sessions(Some(org)).len()
    }
    /// Closes live connection `id` of `org` (0x98); whether there was one.
    fn kick(&self, id: ConnId, org: &str) -> bool;
    /// Tells every live connection to close with `reason`.
    fn close_all(&self, reason: ReasonCode);
    /// The cluster this node belongs to, if any.
    fn cluster(&self) -> Option<crate::cluster::ClusterStatus> {
        None
    }
}

/// Registers `r` with `router`; a resumed session keeps only the subscriptions `keep` allows
/// (what every backplane's [`Backplane::register`] does on the node that holds the session).
pub(crate) fn admit(
    router: &mut Router,
    r: Registration<'_>,
    keep: &dyn Fn(&TopicFilter) -> bool,
    now: Instant,
) -> Result<Admitted, QuotaExceeded> {
    let registered = router.register(
        r.conn,
        r.client_id,
        r.owner,
        r.tenant,
        r.credential,
        r.handle,
        r.clean_start,
        r.persistent,
        now,
    )?;
    let removed_subscriptions = match registered.resume {
        crate::router::Resume::New => 0,
        _ => router.retain_subscriptions(registered.id, keep),
    };
    Ok(Admitted {
        registered,
        removed_subscriptions,
        new_tenant: router.take_new_tenant(),
    })
}

/// This process's router: a mutex never held across an await.
#[derive(Debug, Default)]
pub struct Local(Mutex<Router>);

impl Local {
    /// The backplane of a single broker.
    pub fn new(router: Router) -> Self {
        Self(Mutex::new(router))
    }
}

impl Backplane for Local {
    fn register(
        &self,
        r: Registration<'_>,
        keep: &dyn Fn(&TopicFilter) -> bool,
        now: Instant,
    ) -> Result<Admitted, QuotaExceeded> {
        admit(&mut self.0.lock(), r, keep, now)
    }

    fn publish(
        &self,
        from: ConnId,
        tenant: &Tenant,
        message: Arc<Message>,
        now: Instant,
    ) -> Result<Routed, QuotaExceeded> {
        self.0.lock().publish(from, tenant, message, now)
    }

    fn subscribe(
        &self,
        conn: ConnId,
        filter: SubscriptionFilter,
        opts: SubscriptionOptions,
        id: Option<u32>,
        now: Instant,
    ) -> Result<Vec<Delivery>, QuotaExceeded> {
        self.0.lock().subscribe(conn, filter, opts, id, now)
    }

    fn unsubscribe(&self, conn: ConnId, filter: SubscriptionFilter) -> bool {
        self.0.lock().unsubscribe(conn, filter)
    }

    fn reauthenticated(
        &self,
        conn: ConnId,
        credential: Arc<Credential>,
        expires_at: Option<u64>,
        keep: &dyn Fn(&TopicFilter) -> bool,
    ) -> usize {
        let mut router = self.0.lock();
        router.set_credential(conn, credential, expires_at);
        router.retain_subscriptions(conn, keep)
    }

    fn count_stalled(&self, tenant: &Tenant) {
        self.0.lock().count_stalled(tenant);
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
        self.0.lock().detach(
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
        self.0.lock().take_delayed_will(conn, generation)
    }

    fn expire(&self, conn: ConnId, generation: u64) -> Option<Message> {
        self.0.lock().expire(conn, generation)
    }

    fn revoke(&self, entry: &Entry) -> (Vec<String>, usize) {
        self.0.lock().revoke(entry)
    }

    fn tenants(&self) -> Vec<TenantFigures> {
        self.0.lock().tenants()
    }

    fn connections(&self) -> usize {
        self.0.lock().connections()
    }

    fn live_sessions(&self, org: Option<&str>) -> Vec<crate::router::LiveSession> {
        self.0.lock().live_sessions(org)
    }

    fn live_count(&self, org: &str) -> usize {
        self.0.lock().live_count(org)
    }

    fn kick(&self, id: ConnId, org: &str) -> bool {
        self.0.lock().kick(id, org)
    }

    fn close_all(&self, reason: ReasonCode) {
        self.0.lock().close_all(reason);
    }
}
