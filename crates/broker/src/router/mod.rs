//! Routing: sessions by client id (takeover, persistence), subscriptions (plain and shared,
//! in a topic trie) and retained messages.
//!
//! Every org is a *tenant* with its own space: subscription index, retained messages, shared
//! subscription groups and counters. A session belongs to its identity's tenant and a
//! publish reaches only subscribers of its publisher's tenant, so traffic cannot cross orgs
//! whatever the ACLs say: there is no topic, filter or `$share` group that names another
//! tenant's space. Clients keep writing `users/alice/…`; identities with no org (anonymous
//! development clients) share the tenant `""`.
//!
//! A *session* outlives its network connection when the client asked for it (Session Expiry
//! Interval > 0, or Clean Session 0 in v3.1.1). While the client is away the session keeps
//! its subscriptions and a bounded queue of QoS 1/2 messages; QoS 0 messages for an absent
//! client are dropped. Sessions live in memory: they survive reconnects and takeovers, not a
//! broker restart; in a cluster, persistent sessions also survive the loss of their node
//! ([`durable`]).

mod durable;
mod retained;
use retained::retained_matching;
pub(crate) mod index;
mod quota;
mod tenant;

mod live;
mod remote;
pub use durable::{RecordSub, RecordWrite, ReplayStep, Replayed, SessionRecord};
pub(crate) use index::SubKey as Key;
pub use live::{LiveInfo, LiveSession};
pub use quota::{QuotaExceeded, Quotas};
pub use remote::{InterestChange, Scope};
use tenant::Space;
pub use tenant::{Stats, Tenant, TenantFigures};

use crate::mailbox::{Mailbox, Refused};
use cloudsignal_core::mqtt::{QoS, ReasonCode, SubscriptionOptions};
use cloudsignal_core::revocation::{Credential, Entry};
use cloudsignal_core::session::{Delivery, Message, StoredSession};
use cloudsignal_core::topic::{SubscriptionFilter, TopicFilter};
use index::{Sub, SubKey};
use remote::Interest;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// Identifies a session (the id of the connection that created it).
pub type ConnId = u64;

/// The handle the router keeps for a connection: its mailbox, bounded (full means a slow
/// consumer), which also carries close orders.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    /// Deliveries and close orders.
    pub mailbox: Arc<Mailbox>,
    /// What the live-sessions list shows (set once the connection is authenticated).
    pub info: Option<Arc<LiveInfo>>,
}

impl ConnHandle {
    /// Tells the connection to close with `reason` (never blocks; overtakes deliveries).
    pub fn kill(&self, reason: ReasonCode, text: Option<String>) {
        self.mailbox.kill(reason, text);
    }
}

#[derive(Debug)]
struct Retained {
    message: Arc<Message>,
    at: Instant,
    /// Who stored it (counted against their retained quota); `None` for the broker's own.
    owner: Option<Arc<str>>,
}

/// What a publish did: how many sessions it reached, and the mailboxes it left at or above their
/// high-water mark (the publisher should wait for room in them before reading on).
#[derive(Debug, Default)]
pub struct Routed {
    /// Sessions the message reached.
    pub reached: usize,
    /// Congested subscribers' mailboxes.
    pub congested: Vec<Arc<Mailbox>>,
    /// The message is being written to a cluster's message log: acknowledge it to its
    /// publisher once this says it is there (`true`), not before.
    pub logged: Option<oneshot::Receiver<bool>>,
}

/// What one identity holds, for its quotas.
#[derive(Debug, Default)]
struct OwnerUse {
    sessions: BTreeSet<ConnId>,
    retained: usize,
    retained_bytes: u64,
}

#[derive(Debug)]
struct Session {
    client_id: Arc<str>,
    /// Shared with the `clients` and `owners` keys.
    owner: Arc<str>,
    tenant: Tenant,
    /// Bumped whenever a new connection takes the session over.
    generation: u64,
    /// The live connection, or `None` while the client is away.
    handle: Option<ConnHandle>,
    /// While away: the protocol state, and since when (boxed: most sessions are live).
    stored: Option<Box<(StoredSession, Instant)>>,
    /// A connection taking over a live session waits here for the old one's state.
    handoff: Option<oneshot::Sender<StoredSession>>,
    /// A will waiting for its Will Delay Interval [MQTT-3.1.3-9].
    delayed_will: Option<Box<Message>>,
    filters: BTreeSet<SubKey>,
    /// The client asked for a session that outlives the connection.
    persistent: bool,
    /// The live connection's credential (for revocation).
    credential: Arc<Credential>,
    /// Its credential was revoked: the session ends with its connection, never stored.
    revoked: bool,
    /// A cluster's persistent session: its place in the message log.
    durable: Option<Box<durable::Durable>>,
}

/// What a new connection gets from [`Router::register`].
#[derive(Debug)]
pub struct Registered {
    /// The session id to use from now on (the resumed session's id when resuming).
    pub id: ConnId,
    /// Identifies this connection's tenure of the session (for [`Router::detach`]).
    pub generation: u64,
    /// The session state to resume with.
    pub resume: Resume,
    /// The will of a session that this CONNECT ended (Clean Start 1), to publish now.
    pub ended_will: Option<Message>,
}

/// The state a connection resumes.
#[derive(Debug)]
pub enum Resume {
    /// A new session (Session Present 0).
    New,
    /// A stored session (Session Present 1).
    Stored(StoredSession),
    /// A session still held by a live connection, which was told to close: its state
    /// arrives here once it has.
    Handoff(oneshot::Receiver<StoredSession>),
}

/// The broker's routing state. Lives behind a mutex that is never held across an await.
#[derive(Debug)]
pub struct Router {
    spaces: HashMap<Tenant, Space>,
    /// Boxed: a table's buckets are sized for twice its entries at worst, and a session is
    /// ~160 bytes.
    sessions: HashMap<ConnId, Box<Session>>,
    /// Sessions by (owner, client id): client ids are scoped to the identity that uses them,
    /// so one identity can never take over, resume or squat another's session.
    clients: HashMap<(Arc<str>, Arc<str>), ConnId>,
    /// Sessions and retained messages per owner (for quotas).
    owners: HashMap<Arc<str>, OwnerUse>,
    quotas: Quotas,
    max_stored: usize,
    /// Bytes (topics and payloads) kept per absent client, at most.
    max_stored_bytes: usize,
    /// Counters over all tenants.
    pub stats: Stats,
    /// A tenant got its first session since [`Self::take_new_tenant`] was last asked.
    new_tenant: bool,
    /// Filters gained and lost, kept for a cluster (`None`: not asked for).
    interest: Option<Interest>,
    /// The last message-log entry handed out (cluster mode).
    log_position: u64,
    /// Sessions with a place in the message log.
    durable_ids: HashSet<ConnId>,
    /// Registry records (key, revision) of durable sessions that ended here.
    durable_gone: Vec<(Arc<str>, u64)>,
}

impl Default for Router {
    fn default() -> Self {
        Self::new(1_000, Quotas::default())
    }
}

/// Owners no quota applies to (development clients).
fn unlimited(owner: &str) -> bool {
    owner == "anonymous"
}

fn remaining_expiry(m: &Message, at: Instant, now: Instant) -> Result<Option<u32>, ()> {
    match m.expiry {
        None => Ok(None),
        Some(e) => {
            let elapsed = u32::try_from(now.duration_since(at).as_secs()).unwrap_or(u32::MAX);
            if elapsed >= e {
                Err(())
            } else {
                Ok(Some(e - elapsed))
            }
        }
    }
}

fn key(filter: SubscriptionFilter) -> SubKey {
    match filter {
        SubscriptionFilter::Plain(f) => (None, f),
        SubscriptionFilter::Shared { group, filter } => (Some(group.into()), filter),
    }
}

impl Router {
    /// A router that stores at most `max_stored` messages per absent client and enforces
    /// `quotas`.
    pub fn new(max_stored: usize, quotas: Quotas) -> Self {
        Self {
            spaces: HashMap::new(),
            sessions: HashMap::new(),
            clients: HashMap::new(),
            owners: HashMap::new(),
            quotas,
            max_stored,
            max_stored_bytes: usize::MAX,
            stats: Stats::default(),
            new_tenant: false,
            interest: None,
            log_position: 0,
            durable_ids: HashSet::new(),
            durable_gone: Vec::new(),
        }
    }

    /// Keeps at most `bytes` (topics and payloads) per absent client (default: no byte bound).
    pub fn with_max_stored_bytes(mut self, bytes: usize) -> Self {
        self.max_stored_bytes = bytes;
        self
    }

    /// Registers connection `conn` for `client_id` of `owner` (an [`crate::auth::Identity`]'s
    /// owner key) in `tenant` (the identity's org).
    ///
    /// Client ids are scoped to their owner: the same id used by another identity names
    /// another session. A live connection on the same session is told to close (0x8E, session
    /// taken over). With `clean_start` any existing session ends (its subscriptions go; a
    /// delayed will is returned to publish); without it, the
    /// existing session is resumed (its delayed will is cancelled) [MQTT-3.1.2-4..6].
    ///
    /// Refused when the owner would exceed its connection or persistent-session quota
    /// (taking over or resuming its own session never counts twice).
    #[allow(clippy::too_many_arguments)]
    pub fn register(
        &mut self,
        conn: ConnId,
        client_id: &str,
        owner: &str,
        tenant: &Tenant,
        credential: &Arc<Credential>,
        handle: ConnHandle,
        clean_start: bool,
        persistent: bool,
        now: Instant,
    ) -> Result<Registered, QuotaExceeded> {
        // one allocation of the owner's name for all its sessions
        let owner_key = match self.owners.get_key_value(owner) {
            Some((k, _)) => k.clone(),
            None => Arc::from(owner),
        };
        let slot: (Arc<str>, Arc<str>) = (owner_key.clone(), Arc::from(client_id));
        let existing = self.clients.get(&slot).copied();
        self.check_session_quota(owner, existing, persistent)?;
        if let Some(old) = existing.and_then(|id| self.sessions.get_mut(&id)) {
            if let Some(h) = old.handle.take() {
                h.kill(ReasonCode::SESSION_TAKEN_OVER, None);
            }
            if !clean_start {
                old.generation += 1;
                old.persistent = persistent;
                old.handle = Some(handle);
                old.credential = credential.clone();
                old.delayed_will = None;
                let resume = match old.stored.take().map(|b| *b) {
                    Some((mut stored, since)) => {
                        stored.elapse(now.duration_since(since).as_secs());
                        Resume::Stored(stored)
                    }
                    None => {
                        let (tx, rx) = oneshot::channel();
                        old.handoff = Some(tx);
                        Resume::Handoff(rx)
                    }
                };
                return Ok(Registered {
                    id: existing.unwrap_or(conn),
                    generation: old.generation,
                    resume,
                    ended_will: None,
                });
            }
        }
        let ended_will = existing.and_then(|id| self.end(id));
        if !self.spaces.contains_key(tenant) {
            // a tenant's first session: its `$SYS` figures are due now, not at the next tick
            self.spaces.insert(tenant.clone(), Space::default());
            self.new_tenant = true;
        }
        let client_id = slot.1.clone();
        self.clients.insert(slot, conn);
        self.owners
            .entry(owner_key.clone())
            .or_default()
            .sessions
            .insert(conn);
        self.sessions.insert(
            conn,
            Box::new(Session {
                client_id,
                owner: owner_key,
                tenant: tenant.clone(),
                generation: 0,
                handle: Some(handle),
                stored: None,
                handoff: None,
                delayed_will: None,
                filters: BTreeSet::new(),
                persistent,
                credential: credential.clone(),
                revoked: false,
                durable: None,
            }),
        );
        Ok(Registered {
            id: conn,
            generation: 0,
            resume: Resume::New,
            ended_will,
        })
    }

    /// Whether `owner` may hold one more live connection (and, if `persistent`, one more
    /// persistent session); `existing` is the session the CONNECT takes over, if any.
    fn check_session_quota(
        &self,
        owner: &str,
        existing: Option<ConnId>,
        persistent: bool,
    ) -> Result<(), QuotaExceeded> {
        if unlimited(owner) {
            return Ok(());
        }
        let Some(usage) = self.owners.get(owner) else {
            return Ok(());
        };
        let (mut live, mut kept) = (0, 0);
        for id in usage.sessions.iter().filter(|id| Some(**id) != existing) {
            if let Some(s) = self.sessions.get(id) {
                live += usize::from(s.handle.is_some());
                kept += usize::from(s.persistent);
            }
        }
        if live >= self.quotas.connections_per_identity {
            return Err(QuotaExceeded::Connections(
                self.quotas.connections_per_identity,
            ));
        }
        if persistent && kept >= self.quotas.sessions_per_identity {
            return Err(QuotaExceeded::Sessions(self.quotas.sessions_per_identity));
        }
        Ok(())
    }

    /// Ends a session: its subscriptions go; returns its pending delayed will.
    fn end(&mut self, id: ConnId) -> Option<Message> {
        let mut s = *self.sessions.remove(&id)?;
        self.durable_ended(id, s.durable.take());
        if let Some(usage) = self.owners.get_mut(&*s.owner) {
            usage.sessions.remove(&id);
            if usage.sessions.is_empty() && usage.retained == 0 {
                self.owners.remove(&*s.owner);
            }
        }
        let slot = (s.owner, s.client_id);
        if self.clients.get(&slot) == Some(&id) {
            self.clients.remove(&slot);
        }
        if let Some(space) = self.spaces.get_mut(&s.tenant) {
            for k in &s.filters {
                if space.subs.remove(k, id) {
                    remote::note(&mut self.interest, &s.tenant, k, false);
                }
            }
        }
        s.delayed_will.map(|w| *w)
    }

    /// The connection of `generation` on session `id` ended. Deliveries still in `rx` join
    /// `stored`. A session taken over hands its state to the new connection; one with
    /// `expiry_secs` > 0 is kept (with `delayed_will`, if any); otherwise it ends.
    /// Returns whether the session was kept for the client's return (then its timers run).
    #[allow(clippy::too_many_arguments)]
    pub fn detach(
        &mut self,
        id: ConnId,
        generation: u64,
        mut stored: StoredSession,
        mailbox: &Mailbox,
        expiry_secs: u32,
        delayed_will: Option<Message>,
        now: Instant,
    ) -> bool {
        let (max, max_bytes) = (self.max_stored, self.max_stored_bytes);
        let Some(s) = self.sessions.get_mut(&id) else {
            return false;
        };
        for d in mailbox.close() {
            stored.enqueue(d, max, max_bytes);
        }
        if s.generation != generation {
            if let Some(tx) = s.handoff.take() {
                let _ = tx.send(stored);
            }
            return false;
        }
        if expiry_secs == 0 || s.revoked {
            self.end(id);
            return false;
        }
        s.handle = None;
        s.stored = Some(Box::new((stored, now)));
        s.delayed_will = delayed_will.map(Box::new);
        true
    }

    /// Takes the delayed will of session `id` if the client has not returned since
    /// `generation` left.
    pub fn take_delayed_will(&mut self, id: ConnId, generation: u64) -> Option<Message> {
        let s = self.sessions.get_mut(&id)?;
        (s.generation == generation && s.handle.is_none())
            .then(|| s.delayed_will.take())
            .flatten()
            .map(|w| *w)
    }

    /// Ends session `id` if it is still the absent one left by `generation` (its Session
    /// Expiry Interval has passed); returns a will still waiting, to publish now.
    pub fn expire(&mut self, id: ConnId, generation: u64) -> Option<Message> {
        let s = self.sessions.get(&id)?;
        if s.generation != generation || s.handle.is_some() {
            return None;
        }
        self.end(id)
    }

    /// Forgets a connection that never registered a session, or ends its session.
    pub fn remove(&mut self, conn: ConnId) {
        self.end(conn);
    }

    /// Adds (or replaces) a subscription; returns the retained messages to replay to it.
    /// Refused when the session already holds its quota of other subscriptions.
    pub fn subscribe(
        &mut self,
        conn: ConnId,
        filter: SubscriptionFilter,
        opts: SubscriptionOptions,
        id: Option<u32>,
        now: Instant,
    ) -> Result<Vec<Delivery>, QuotaExceeded> {
        let Some(session) = self.sessions.get_mut(&conn) else {
            return Ok(Vec::new());
        };
        let k = key(filter);
        let max = self.quotas.subscriptions_per_client;
        if !unlimited(&session.owner)
            && !session.filters.contains(&k)
            && session.filters.len() >= max
        {
            return Err(QuotaExceeded::Subscriptions(max));
        }
        let space = self.spaces.entry(session.tenant.clone()).or_default();
        let existed = space.subs.insert(&k, conn, Sub { opts, id });
        if !existed {
            remote::note(&mut self.interest, &session.tenant, &k, true);
        }
        session.filters.insert(k.clone());
        let replay = match opts.retain_handling {
            0 => true,
            1 => !existed,
            _ => false,
        };
        // retained messages are not sent to shared subscriptions [MQTT-4.8.2]
        if !replay || k.0.is_some() {
            return Ok(Vec::new());
        }
        Ok(retained_matching(&space.retained, &k.1)
            .filter_map(|r| {
                let expiry = remaining_expiry(&r.message, r.at, now).ok()?;
                Some(Delivery {
                    qos: r.message.qos.min(opts.qos),
                    message: r.message.clone(),
                    retain: true,
                    subscription_ids: id.into_iter().collect(),
                    expiry,
                })
            })
            .collect())
    }
}

/// What one session gets of a message: the highest QoS of its matching subscriptions, the
/// RETAIN flag as any of them sees it, and all their subscription ids [MQTT-3.3.4-2].
type Target = (QoS, bool, Vec<u32>);

/// Adds subscription `sub` of session `conn` matching `message` to `targets`.
fn merge(targets: &mut BTreeMap<ConnId, Target>, conn: ConnId, message: &Message, sub: &Sub) {
    let qos = message.qos.min(sub.opts.qos);
    let retain = sub.opts.retain_as_published && message.retain;
    let t = targets.entry(conn).or_insert((qos, retain, Vec::new()));
    t.0 = t.0.max(qos);
    t.1 |= retain;
    t.2.extend(sub.id);
}

/// Gives `delivery` to session `s`: its live connection's mailbox, or its stored queue while the
/// client is away (within `limits`: messages, bytes); counts what happened.
fn hand(
    s: &mut Session,
    delivery: Delivery,
    (max, max_bytes): (usize, usize),
    stats: &mut Stats,
    congested: &mut Vec<Arc<Mailbox>>,
) {
    let qos = delivery.qos;
    let Some(handle) = &s.handle else {
        let kept = s
            .stored
            .as_mut()
            .is_some_and(|b| b.0.enqueue(delivery, max, max_bytes));
        if kept {
            stats.stored += 1;
        } else {
            stats.dropped_offline += 1;
        }
        return;
    };
    match handle.mailbox.try_send(delivery) {
        Ok(queued) => {
            stats.delivered += 1;
            stats.dropped_qos0 += queued.evicted;
            if queued.congested {
                congested.push(handle.mailbox.clone());
            }
        }
        Err(Refused::Full) if qos == QoS::AtMostOnce => stats.dropped_qos0 += 1,
        Err(Refused::Full) => {
            // slow consumer: it cannot take a message it must not lose; close it
            stats.slow_consumers += 1;
            handle.kill(ReasonCode::QUOTA_EXCEEDED, Some("slow consumer".into()));
        }
        Err(Refused::Closed) => {}
    }
}

impl Router {
    /// Removes a subscription; whether it existed.
    pub fn unsubscribe(&mut self, conn: ConnId, filter: SubscriptionFilter) -> bool {
        let k = key(filter);
        let Some(s) = self.sessions.get_mut(&conn) else {
            return false;
        };
        s.filters.remove(&k);
        let removed = self
            .spaces
            .get_mut(&s.tenant)
            .is_some_and(|space| space.subs.remove(&k, conn));
        if removed {
            remote::note(&mut self.interest, &s.tenant, &k, false);
        }
        removed
    }

    /// Removes every subscription of `conn` that `keep` refuses (after a narrower re-auth).
    pub fn retain_subscriptions(
        &mut self,
        conn: ConnId,
        keep: impl Fn(&TopicFilter) -> bool,
    ) -> usize {
        let Some(s) = self.sessions.get_mut(&conn) else {
            return 0;
        };
        let gone: Vec<SubKey> = s.filters.iter().filter(|k| !keep(&k.1)).cloned().collect();
        for k in &gone {
            s.filters.remove(k);
            if let Some(space) = self.spaces.get_mut(&s.tenant) {
                if space.subs.remove(k, conn) {
                    remote::note(&mut self.interest, &s.tenant, k, false);
                }
            }
        }
        gone.len()
    }

    /// Routes a message published by `from` in `tenant` (the publisher's org: nobody outside
    /// it can receive the message); returns how many sessions it reached. A retained message
    /// its publisher's owner has no quota left for is refused whole (not routed).
    pub fn publish(
        &mut self,
        from: ConnId,
        tenant: &Tenant,
        message: Arc<Message>,
        now: Instant,
    ) -> Result<Routed, QuotaExceeded> {
        if message.retain {
            self.retain(from, tenant, &message, now)?;
        }
        Ok(self.route(from, tenant, message, &Scope::All))
    }

    /// Delivers `message` to the subscribers `scope` selects (a retained message is not
    /// stored: [`Self::publish`] did that).
    pub fn route(
        &mut self,
        from: ConnId,
        tenant: &Tenant,
        message: Arc<Message>,
        scope: &Scope<'_>,
    ) -> Routed {
        let Some(space) = self.spaces.get_mut(tenant) else {
            return Routed::default();
        };
        let mut congested = Vec::new();
        let mut stats = Stats::default();
        // one delivery per session: highest QoS, all subscription ids [MQTT-3.3.4-2]
        // one delivery per session: highest QoS, all subscription ids [MQTT-3.3.4-2]; and
        // whether only plain subscriptions reached it
        let mut targets: BTreeMap<ConnId, Target> = BTreeMap::new();
        let mut grouped: BTreeSet<ConnId> = BTreeSet::new();
        let mut add = |conn: ConnId, sub: &Sub, plain: bool| {
            if sub.opts.no_local && conn == from {
                return;
            }
            merge(&mut targets, conn, &message, sub);
            if !plain {
                grouped.insert(conn);
            }
        };
        let mut logged = false;
        match scope {
            Scope::All => space
                .subs
                .for_each_match(&message.topic, |c, s| add(c, s, false)),
            Scope::Selected {
                plain,
                groups,
                logged: l,
            } => {
                logged = *l;
                if *plain {
                    space
                        .subs
                        .for_each_plain_match(&message.topic, |c, s| add(c, s, true));
                }
                for key in *groups {
                    if let Some((conn, sub)) = space.subs.pick(key) {
                        add(conn, sub, false);
                    }
                }
            }
        }
        let mut reached = 0;
        for (conn, (qos, retain, subscription_ids)) in targets {
            let Some(s) = self.sessions.get_mut(&conn) else {
                continue;
            };
            reached += 1;
            if logged && !grouped.contains(&conn) && Self::takes_from_log(s) {
                // a persistent session takes a logged message from the log, in log order
                continue;
            }
            let delivery = Delivery {
                message: message.clone(),
                qos,
                retain,
                subscription_ids,
                expiry: message.expiry,
            };
            let limits = (self.max_stored, self.max_stored_bytes);
            hand(s, delivery, limits, &mut stats, &mut congested);
        }
        space.stats.add(&stats);
        self.stats.add(&stats);
        Routed {
            reached,
            congested,
            logged: None,
        }
    }

    /// Whether a tenant got its first session since the last call (then its `$SYS` figures
    /// should be published at once).
    pub fn take_new_tenant(&mut self) -> bool {
        std::mem::take(&mut self.new_tenant)
    }

    /// Counts a subscriber in `tenant` that made no room within the stall limit.
    pub fn count_stalled(&mut self, tenant: &Tenant) {
        self.stats.stalled += 1;
        if let Some(space) = self.spaces.get_mut(tenant) {
            space.stats.stalled += 1;
        }
    }

    /// Each tenant's figures (tenants holding nothing but `$SYS` messages are forgotten first).
    pub fn tenants(&mut self) -> Vec<TenantFigures> {
        let mut figures: HashMap<Tenant, TenantFigures> = HashMap::new();
        for s in self.sessions.values() {
            let f = figures.entry(s.tenant.clone()).or_default();
            f.connections += usize::from(s.handle.is_some());
            f.stored_sessions += usize::from(s.handle.is_none());
        }
        self.spaces
            .retain(|t, space| figures.contains_key(t) || !space.is_idle());
        for (t, space) in &self.spaces {
            let f = figures.entry(t.clone()).or_default();
            f.subscriptions = space.subs.len();
            f.stats = space.stats;
        }
        figures
            .into_iter()
            .map(|(tenant, f)| TenantFigures { tenant, ..f })
            .collect()
    }

    /// Records the credential a live session re-authenticated with.
    pub fn set_credential(
        &mut self,
        id: ConnId,
        credential: Arc<Credential>,
        expires_at: Option<u64>,
    ) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.credential = credential;
            // the live-sessions list shows the new expiry
            if let Some(h) = s.handle.as_mut() {
                if let Some(info) = h.info.as_mut() {
                    Arc::make_mut(info).expires_at = expires_at;
                }
            }
        }
    }

    /// Ends everything `entry` revokes: live connections are closed (DISCONNECT 0x98,
    /// administrative action) and their sessions end with them; sessions stored for absent
    /// clients end now, their wills discarded. Returns the client ids of the live connections
    /// closed and the number of stored sessions ended.
    pub fn revoke(&mut self, entry: &Entry) -> (Vec<String>, usize) {
        let mut closed = Vec::new();
        let mut stored = Vec::new();
        for (id, s) in &mut self.sessions {
            if !entry.revocation.matches(entry.at, &s.credential) {
                continue;
            }
            match &s.handle {
                Some(h) => {
                    h.kill(
                        ReasonCode::ADMINISTRATIVE_ACTION,
                        Some("credential revoked".into()),
                    );
                    s.revoked = true;
                    closed.push(s.client_id.to_string());
                }
                None => stored.push(*id),
            }
        }
        for id in &stored {
            // a revoked credential's will is not published
            let _ = self.end(*id);
        }
        (closed, stored.len())
    }

    /// Sends `Close` to every live connection (graceful shutdown).
    pub fn close_all(&self, reason: ReasonCode) {
        for h in self.sessions.values().filter_map(|s| s.handle.as_ref()) {
            h.kill(reason, None);
        }
    }

    /// Number of live connections.
    pub fn connections(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| s.handle.is_some())
            .count()
    }

    /// Number of sessions kept for absent clients.
    pub fn stored_sessions(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| s.handle.is_none())
            .count()
    }

    /// Number of subscriptions.
    pub fn subscriptions(&self) -> usize {
        self.spaces.values().map(|s| s.subs.len()).sum()
    }
}
