//! Cluster mode: several brokers behind one address, joined by NATS.
//!
//! Each node routes its own connections with its own [`Router`]; [`Cluster`] is the
//! [`Backplane`] that joins them:
//!
//! - **Routes.** Every node tells the others which filters its sessions hold (a change when a
//!   filter gets its first subscriber here or loses its last; its whole set when a node joins or
//!   asks) and keeps the whole cluster's table ([`routes`]). A publish goes to the local
//!   subscribers, then **once** to each other node that holds a matching filter, and for each
//!   matching shared group to **one** node holding members (round robin), which picks the
//!   member. Each node receives on one NATS subscription, so messages from one publisher reach
//!   a subscriber in the order they were published [MQTT-4.6.0-6] and once however many of its
//!   filters match [MQTT-3.3.4-2].
//! - **Links.** What goes to a node waits in a [`Mailbox`] (a link) drained into NATS: a
//!   publisher faster than the link is slowed down like one faster than a subscriber, and what
//!   a full link cannot take is counted and logged (QoS 0 first), never dropped silently.
//! - **Retained messages** live in a JetStream key-value bucket: a node stores what its
//!   publishers retain and keeps a copy of every other node's, so a node that starts later has
//!   them all.
//! - **Revocations** and **takeovers** are broadcast: a revocation applied on one node closes the
//!   credential's sessions on every node (one NATS hop); a client id that connects on one node
//!   ends its session on the others (0x8E).
//! - **Persistent sessions** outlive their node: QoS 1/2 messages they want go through a
//!   message log in JetStream, and a registry of sessions lets another node resume them
//!   ([`durable`]).
//! - **Liveness.** Nodes beat every `heartbeat`; a node not heard from for `peer_timeout`
//!   (while this node is connected to NATS) is forgotten. After NATS comes back every node
//!   says hello again and the tables are rebuilt; async-nats reconnects and resubscribes.

pub mod durable;
mod log;
pub mod routes;
mod tasks;
pub mod wire;

use crate::backplane::{Admitted, Backplane, Registration};
use crate::mailbox::{Mailbox, Refused};
use crate::router::{
    ConnId, InterestChange, LiveSession, QuotaExceeded, Resume, Routed, Router, Scope, Tenant,
    TenantFigures,
};
use cloudsignal_core::mqtt::{QoS, ReasonCode, SubscriptionOptions};
use cloudsignal_core::revocation::{Credential, Entry, RevocationList};
use cloudsignal_core::session::{Delivery, Message, StoredSession};
use cloudsignal_core::topic::{SubscriptionFilter, TopicFilter, TopicName};
use parking_lot::{Mutex, RwLock};
use routes::Routes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tasks::{beat, drive, on_control, on_inbox, pump, retained_changed, watch_bucket};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use wire::{Control, NodeId};

/// How a node joins its cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS server URL(s), comma-separated (`nats://user:pass@host:4222`, `tls://…`).
    pub nats_url: String,
    /// The cluster's name: the prefix of its subjects and bucket (letters, digits, `-`, `_`).
    /// Nodes with the same name on the same NATS form one cluster.
    pub name: String,
    /// Time between a node's beats.
    pub heartbeat: Duration,
    /// A node not heard from for this long is forgotten.
    pub peer_timeout: Duration,
    /// Largest MQTT message accepted from another node, in bytes.
    pub max_message: usize,
    /// Messages waiting for one other node before publishers are slowed down.
    pub link_capacity: usize,
    /// Bytes waiting for one other node before publishers are slowed down.
    pub link_bytes: usize,
    /// How long the message log keeps a message for persistent sessions whose client is away.
    pub log_max_age: Duration,
    /// The message log's size at most, in bytes (the oldest messages go first).
    pub log_max_bytes: i64,
}

impl ClusterConfig {
    /// A cluster on `nats_url` named `name`, with the default timings.
    pub fn new(nats_url: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            name: name.into(),
            heartbeat: Duration::from_secs(1),
            peer_timeout: Duration::from_secs(5),
            max_message: 1 << 20,
            link_capacity: 10_000,
            link_bytes: 64 << 20,
            log_max_age: Duration::from_secs(24 * 3600),
            log_max_bytes: 1 << 30,
        }
    }
}

/// Figures of a node's cluster links.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Messages sent to other nodes.
    pub sent: AtomicU64,
    /// Messages received from other nodes.
    pub received: AtomicU64,
    /// Messages a full link or a failed NATS publish lost (logged).
    pub dropped: AtomicU64,
    /// Malformed messages from NATS (logged, ignored).
    pub malformed: AtomicU64,
    /// QoS 1/2 messages written to the message log (persistent sessions wanted them).
    pub logged: AtomicU64,
    /// Sessions resumed here from the registry (another node held them).
    pub resumed: AtomicU64,
}

/// A node's view of its cluster (for the control plane's `GET /v1/cluster`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterStatus {
    /// The cluster's name.
    pub name: String,
    /// This node's id (hex).
    pub node: String,
    /// Connected to NATS now.
    pub connected: bool,
    /// The other nodes it knows (hex ids).
    pub peers: Vec<String>,
    /// Messages sent to other nodes.
    pub sent: u64,
    /// Messages received from other nodes.
    pub received: u64,
    /// Messages for other nodes lost (full link, NATS refused; each logged).
    pub dropped: u64,
    /// Malformed messages from NATS, ignored.
    pub malformed: u64,
    /// QoS 1/2 messages written to the message log.
    pub logged: u64,
    /// Persistent sessions in the registry (every node's).
    pub recorded_sessions: usize,
    /// Sessions resumed here from the registry.
    pub resumed: u64,
}

/// Where a remote message's publisher is: no connection of this node.
const REMOTE: ConnId = ConnId::MAX;

/// What the driver sends, in order.
#[derive(Debug)]
enum Command {
    /// NATS is back: peers' silence meanwhile is not their death; say hello again.
    Rejoin,
    Control(Control),
    /// This node's whole route set, to everyone.
    Full,
    Retain(Tenant, Arc<Message>),
}

/// A node of a cluster: this process's router, joined to the others by NATS.
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &format_args!("{:016x}", self.inner.me))
            .field("name", &self.inner.config.name)
            .finish_non_exhaustive()
    }
}

type RevocationHook = Box<dyn Fn(&Entry) + Send + Sync>;

struct Inner {
    me: NodeId,
    config: ClusterConfig,
    client: async_nats::Client,
    router: Mutex<Router>,
    routes: Mutex<Routes>,
    links: Mutex<HashMap<NodeId, Arc<Mailbox>>>,
    tx: mpsc::UnboundedSender<Command>,
    revocations: Arc<RwLock<RevocationList>>,
    hooks: Mutex<Vec<RevocationHook>>,
    /// Connected to NATS (shared with the client's event callback, which lowers it at once).
    connected: Arc<AtomicBool>,
    stats: ClusterStats,
    /// Every node's persistent sessions, as the registry holds them.
    mirror: Mutex<durable::Mirror>,
    /// Messages for the log, in order.
    log_tx: mpsc::UnboundedSender<log::LogWrite>,
    /// The message log (replays read it).
    log: async_nats::jetstream::stream::Stream,
    /// Bumped each time NATS comes back (watches and the log reader start again at once).
    rejoined: tokio::sync::watch::Sender<u64>,
}

/// Why a node could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The cluster name has characters subjects and buckets cannot hold.
    #[error("cluster name {0:?}: use letters, digits, '-' and '_'")]
    Name(String),
    /// NATS could not be reached.
    #[error("connecting to NATS at {url}: {why}")]
    Connect {
        /// The URL (credentials removed).
        url: String,
        /// The cause.
        why: String,
    },
    /// JetStream (for retained messages) is not available.
    #[error("the cluster keeps retained messages in JetStream; start nats-server with -js ({0})")]
    JetStream(String),
    /// A subscription failed.
    #[error("subscribing on NATS: {0}")]
    Subscribe(String),
}

/// `url` (or a comma-separated list of URLs) without user information, for logs and errors.
pub fn redact(url: &str) -> String {
    let one = |u: &str| match (u.find("://"), u.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &u[..s], &u[at + 1..]),
        _ => u.to_owned(),
    };
    let parts: Vec<&str> = url.split(',').collect();
    // a list only if every part is a URL: a comma may also sit in a password
    if parts.len() > 1 && parts.iter().all(|p| p.contains("://")) {
        parts.into_iter().map(one).collect::<Vec<_>>().join(",")
    } else {
        one(url)
    }
}

impl Cluster {
    /// Joins the cluster: connects to NATS, opens the retained-message bucket, subscribes, and
    /// starts the node's tasks (on the current tokio runtime). `revocations` is the broker's
    /// list (a revocation from another node is applied to it).
    pub async fn join(
        config: ClusterConfig,
        router: Router,
        revocations: Arc<RwLock<RevocationList>>,
    ) -> Result<Arc<Self>, JoinError> {
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if config.name.is_empty() || !config.name.chars().all(valid) {
            return Err(JoinError::Name(config.name.clone()));
        }
        let mut me = [0u8; 8];
        getrandom::getrandom(&mut me).map_err(|e| JoinError::Subscribe(e.to_string()))?;
        let me = u64::from_be_bytes(me);
        let (tx, rx) = mpsc::unbounded_channel();
        let events = tx.clone();
        let connected = Arc::new(AtomicBool::new(true));
        let flag = connected.clone();
        let client = async_nats::ConnectOptions::new()
            .name(format!("cloudsignal-{}-{me:016x}", config.name))
            // a node never hears its own messages back
            .no_echo()
            .max_reconnects(None)
            .event_callback(move |event| {
                let events = events.clone();
                let flag = flag.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            info!("cluster: connected to NATS");
                            // the flag goes up once the node has caught up (see `drive`)
                            let _ = events.send(Command::Rejoin);
                        }
                        async_nats::Event::Disconnected => {
                            warn!("cluster: NATS connection lost; reconnecting");
                            flag.store(false, Ordering::SeqCst);
                        }
                        other => debug!(event = %other, "cluster: NATS event"),
                    }
                }
            })
            .connect(config.nats_url.as_str())
            .await
            .map_err(|e| JoinError::Connect {
                url: redact(&config.nats_url),
                why: e.to_string(),
            })?;
        let js = async_nats::jetstream::new(client.clone());
        let stores = log::open(
            &js,
            &config.name,
            config.max_message,
            config.log_max_age,
            config.log_max_bytes,
        )
        .await
        .map_err(JoinError::JetStream)?;
        let (store, log, registry) = (stores.retained, stores.log, stores.registry);
        let control = client
            .subscribe(wire::control_subject(&config.name))
            .await
            .map_err(|e| JoinError::Subscribe(e.to_string()))?;
        let inbox = client
            .subscribe(wire::inbox_subject(&config.name, me))
            .await
            .map_err(|e| JoinError::Subscribe(e.to_string()))?;
        let mut router = router;
        router.track_interest();
        // the log reader starts after what the log holds now
        router.start_log(log.cached_info().state.last_sequence);
        let (log_tx, log_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            me,
            routes: Mutex::new(Routes::new(me, Instant::now())),
            router: Mutex::new(router),
            links: Mutex::new(HashMap::new()),
            client,
            tx,
            revocations,
            hooks: Mutex::new(Vec::new()),
            connected,
            stats: ClusterStats::default(),
            mirror: Mutex::new(durable::Mirror::default()),
            log_tx,
            log: log.clone(),
            rejoined: tokio::sync::watch::Sender::new(0),
            config,
        });
        tokio::spawn(log::write_log(
            js.clone(),
            inner.config.name.clone(),
            log_rx,
        ));
        tokio::spawn(log::read_log(inner.clone(), log));
        tokio::spawn(watch_bucket(
            inner.clone(),
            registry.clone(),
            "session registry",
            log::registry_changed,
        ));
        tokio::spawn(log::write_registry(inner.clone(), registry));
        tokio::spawn(drive(inner.clone(), rx, store.clone()));
        tokio::spawn(on_control(inner.clone(), control));
        tokio::spawn(on_inbox(inner.clone(), inbox));
        tokio::spawn(watch_bucket(
            inner.clone(),
            store,
            "retained messages",
            retained_changed,
        ));
        tokio::spawn(beat(inner.clone()));
        let _ = inner.tx.send(Command::Control(Control::Hello { node: me }));
        let _ = inner.tx.send(Command::Full);
        info!(node = %format_args!("{me:016x}"), cluster = %inner.config.name, nats = %redact(&inner.config.nats_url), "joined the cluster");
        Ok(Arc::new(Self { inner }))
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.inner.me
    }

    /// The other nodes this one knows.
    pub fn peers(&self) -> Vec<NodeId> {
        self.inner.routes.lock().peers()
    }

    /// The links' figures.
    pub fn stats(&self) -> &ClusterStats {
        &self.inner.stats
    }

    /// Calls `hook` with every revocation another node applied (after the broker has), e.g. to
    /// drop a cached API key.
    pub fn on_revocation(&self, hook: impl Fn(&Entry) + Send + Sync + 'static) {
        self.inner.hooks.lock().push(Box::new(hook));
    }

    /// Tells the others this node is leaving (its routes go at once, not after the timeout).
    /// Bounded: with NATS unreachable the node stops anyway (the others forget it after the
    /// peer timeout).
    pub async fn leave(&self) {
        let bye = Control::Bye {
            node: self.inner.me,
        };
        let said = tokio::time::timeout(Duration::from_secs(2), async {
            self.inner.send_control(&bye).await;
            let _ = self.inner.client.flush().await;
        })
        .await;
        if said.is_err() {
            warn!("cluster: NATS unreachable; leaving without saying goodbye");
        }
    }
}

impl Inner {
    /// Tells the others about the filters this node gained or lost.
    fn announce(&self, changes: Vec<InterestChange>) {
        if changes.is_empty() {
            return;
        }
        let mut routes = self.routes.lock();
        let mut out = Vec::with_capacity(changes.len());
        let mut version = 0;
        for c in changes {
            let (v, change) = routes.local_change(&c.tenant, &c.key, c.gained);
            version = v;
            out.push(change);
        }
        drop(routes);
        let _ = self.tx.send(Command::Control(Control::Routes {
            node: self.me,
            version,
            reset: false,
            changes: out,
        }));
    }

    /// Runs `f` on the router, then announces the filters it gained or lost.
    fn with_router<T>(&self, f: impl FnOnce(&mut Router) -> T) -> T {
        let mut router = self.router.lock();
        let out = f(&mut router);
        let changes = router.take_interest_changes();
        drop(router);
        self.announce(changes);
        out
    }

    /// The link to `node`, opened (with its pump) on first use.
    fn link(self: &Arc<Self>, node: NodeId) -> Arc<Mailbox> {
        let mut links = self.links.lock();
        links
            .entry(node)
            .or_insert_with(|| {
                let mailbox = Arc::new(Mailbox::with_max_bytes(
                    self.config.link_capacity,
                    self.config.link_bytes,
                ));
                tokio::spawn(pump(self.clone(), mailbox.clone()));
                mailbox
            })
            .clone()
    }

    fn close_link(&self, node: NodeId) {
        if let Some(link) = self.links.lock().remove(&node) {
            link.kill(ReasonCode::SUCCESS, None);
            let left = link.close();
            self.count_dropped(left.len() as u64, "its node left the cluster");
        }
    }

    fn count_dropped(&self, n: u64, why: &str) {
        if n > 0 {
            let total = self.stats.dropped.fetch_add(n, Ordering::Relaxed) + n;
            warn!(
                dropped = n,
                total, why, "cluster: messages for another node lost"
            );
        }
    }

    async fn send_control(&self, c: &Control) {
        let Ok(json) = serde_json::to_vec(c) else {
            return;
        };
        let subject = wire::control_subject(&self.config.name);
        if let Err(e) = self.client.publish(subject, json.into()).await {
            warn!(error = %e, "cluster: control message not sent");
        }
    }

    /// Sends this node's whole route set.
    async fn send_routes(&self) {
        let (version, changes) = self.routes.lock().own();
        let c = Control::Routes {
            node: self.me,
            version,
            reset: true,
            changes,
        };
        self.send_control(&c).await;
    }

    /// Forgets a node: its routes and its link.
    fn forget(&self, node: NodeId, why: &str) {
        if self.routes.lock().forget(node) {
            info!(node = %format_args!("{node:016x}"), why, "cluster: node forgotten");
        }
        self.close_link(node);
    }

    /// A revocation another node applied.
    fn revoked(&self, entry: &Entry) {
        self.revocations.write().apply(entry);
        let (closed, stored) = self.with_router(|r| r.revoke(entry));
        info!(revocation = ?entry.revocation, closed = closed.len(), stored_sessions_ended = stored, "cluster: revocation from another node applied");
        for hook in self.hooks.lock().iter() {
            hook(entry);
        }
    }
}

impl Backplane for Cluster {
    fn register(
        &self,
        r: Registration<'_>,
        keep: &dyn Fn(&TopicFilter) -> bool,
        now: Instant,
    ) -> Result<Admitted, QuotaExceeded> {
        let (owner, client_id) = (r.owner.to_owned(), r.client_id.to_owned());
        let key: Arc<str> = wire::session_key(&owner, &client_id).into();
        let me = format!("{:016x}", self.inner.me);
        // a session another node held (and maybe lost): resumable from the registry
        let recorded = self.inner.mirror.lock().get(&key).cloned();
        let (persistent, clean_start, expiry) = (r.persistent, r.clean_start, r.session_expiry);
        let (admitted, replay) = self.inner.with_router(|router| {
            let mut admitted = crate::backplane::admit(router, r, keep, now)?;
            let id = admitted.registered.id;
            let mut replay = None;
            if let Some((revision, record)) = &recorded {
                if clean_start || !matches!(admitted.registered.resume, Resume::New) {
                    // ended by this CONNECT, or held here: the record is not what resumes
                    if clean_start && record.node != me {
                        router.forget_record(key.clone(), *revision);
                    }
                } else {
                    router.restore_subscriptions(id, &record.subscriptions, keep, now);
                    admitted.registered.resume = Resume::Stored(StoredSession::new());
                    replay = Some((record.cursor, *revision));
                }
            }
            if persistent || replay.is_some() {
                router.make_durable(id, key.clone(), expiry, replay);
            }
            Ok::<_, QuotaExceeded>((admitted, replay))
        })?;
        if let Some((cursor, _)) = replay {
            let id = admitted.registered.id;
            info!(%client_id, cursor, "cluster: resuming a session another node held");
            self.inner.stats.resumed.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(log::replay(
                self.inner.clone(),
                self.inner.log.clone(),
                id,
                key,
                cursor,
            ));
        }
        // the same client id elsewhere in the cluster ends there
        let _ = self.inner.tx.send(Command::Control(Control::Takeover {
            node: self.inner.me,
            owner,
            client_id,
        }));
        Ok(admitted)
    }

    fn publish(
        &self,
        from: ConnId,
        tenant: &Tenant,
        message: Arc<Message>,
        now: Instant,
    ) -> Result<Routed, QuotaExceeded> {
        if from == 0 {
            // the broker's own `$SYS` figures are this node's
            return self.inner.router.lock().publish(from, tenant, message, now);
        }
        let inner = &self.inner;
        let mut router = inner.router.lock();
        router.accept_retained(from, tenant, &message, now)?;
        let plan = inner.routes.lock().plan(tenant, &message.topic);
        // a QoS 1/2 message a persistent session wants goes through the log
        let logged =
            message.qos != QoS::AtMostOnce && inner.mirror.lock().wants(tenant, &message.topic);
        let scope = Scope::Selected {
            plain: true,
            groups: &plan.local_groups,
            logged,
        };
        let mut routed = router.route(from, tenant, message.clone(), &scope);
        drop(router);
        if logged {
            let (done, stored) = tokio::sync::oneshot::channel();
            let _ = inner.log_tx.send(log::LogWrite {
                subject: wire::log_subject(&inner.config.name, tenant, &message.topic),
                payload: wire::encode_frame(tenant, (true, true), &[], &message),
                done,
            });
            routed.logged = Some(stored);
            inner.stats.logged.fetch_add(1, Ordering::Relaxed);
        }
        for (node, (plain, groups)) in &plan.remote {
            let groups: Vec<(&str, &TopicFilter)> = groups
                .iter()
                .filter_map(|(g, f)| Some((g.as_deref()?, f)))
                .collect();
            let frame = wire::encode_frame(tenant, (*plain, logged), &groups, &message);
            let subject = wire::message_subject(&inner.config.name, *node, tenant, &message.topic);
            let Ok(subject) = TopicName::parse(&subject) else {
                inner.count_dropped(1, "topic too long for a NATS subject");
                continue;
            };
            let envelope = Message {
                topic: subject,
                payload: frame,
                qos: message.qos,
                retain: false,
                expiry: None,
                forwarded: Default::default(),
            };
            let link = inner.link(*node);
            let sent = link.try_send(Delivery {
                message: Arc::new(envelope),
                qos: message.qos,
                retain: false,
                subscription_ids: Vec::new(),
                expiry: None,
            });
            match sent {
                Ok(queued) => {
                    routed.reached += 1;
                    inner.count_dropped(queued.evicted, "link full (QoS 0 made room)");
                    if queued.congested {
                        routed.congested.push(link);
                    }
                }
                Err(Refused::Full) => inner.count_dropped(1, "link full"),
                Err(Refused::Closed) => inner.count_dropped(1, "node gone"),
            }
        }
        if message.retain {
            let _ = inner.tx.send(Command::Retain(tenant.clone(), message));
        }
        Ok(routed)
    }

    fn subscribe(
        &self,
        conn: ConnId,
        filter: SubscriptionFilter,
        opts: SubscriptionOptions,
        id: Option<u32>,
        now: Instant,
    ) -> Result<Vec<Delivery>, QuotaExceeded> {
        self.inner
            .with_router(|r| r.subscribe(conn, filter, opts, id, now))
    }

    fn unsubscribe(&self, conn: ConnId, filter: SubscriptionFilter) -> bool {
        self.inner.with_router(|r| r.unsubscribe(conn, filter))
    }

    fn reauthenticated(
        &self,
        conn: ConnId,
        credential: Arc<Credential>,
        expires_at: Option<u64>,
        keep: &dyn Fn(&TopicFilter) -> bool,
    ) -> usize {
        self.inner.with_router(|r| {
            r.set_credential(conn, credential, expires_at);
            r.retain_subscriptions(conn, keep)
        })
    }

    fn count_stalled(&self, tenant: &Tenant) {
        self.inner.router.lock().count_stalled(tenant);
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
        self.inner.with_router(|r| {
            r.detach(
                conn,
                generation,
                stored,
                mailbox,
                expiry_secs,
                delayed_will,
                now,
            )
        })
    }

    fn take_delayed_will(&self, conn: ConnId, generation: u64) -> Option<Message> {
        self.inner.router.lock().take_delayed_will(conn, generation)
    }

    fn expire(&self, conn: ConnId, generation: u64) -> Option<Message> {
        self.inner.with_router(|r| r.expire(conn, generation))
    }

    fn revoke(&self, entry: &Entry) -> (Vec<String>, usize) {
        let out = self.inner.with_router(|r| r.revoke(entry));
        let _ = self.inner.tx.send(Command::Control(Control::Revoke {
            node: self.inner.me,
            entry: entry.clone(),
        }));
        out
    }

    fn tenants(&self) -> Vec<TenantFigures> {
        self.inner.router.lock().tenants()
    }

    fn connections(&self) -> usize {
        self.inner.router.lock().connections()
    }

    fn live_sessions(&self, org: Option<&str>) -> Vec<LiveSession> {
        self.inner.router.lock().live_sessions(org)
    }

    fn live_count(&self, org: &str) -> usize {
        self.inner.router.lock().live_count(org)
    }

    fn kick(&self, id: ConnId, org: &str) -> bool {
        self.inner.router.lock().kick(id, org)
    }

    fn close_all(&self, reason: ReasonCode) {
        self.inner.router.lock().close_all(reason);
    }

    fn cluster(&self) -> Option<ClusterStatus> {
        let i = &self.inner;
        let mut peers: Vec<String> = self
            .peers()
            .into_iter()
            .map(|n| format!("{n:016x}"))
            .collect();
        peers.sort();
        Some(ClusterStatus {
            name: i.config.name.clone(),
            node: format!("{:016x}", i.me),
            connected: i.connected.load(Ordering::SeqCst),
            peers,
            sent: i.stats.sent.load(Ordering::Relaxed),
            received: i.stats.received.load(Ordering::Relaxed),
            dropped: i.stats.dropped.load(Ordering::Relaxed),
            malformed: i.stats.malformed.load(Ordering::Relaxed),
            logged: i.stats.logged.load(Ordering::Relaxed),
            recorded_sessions: i.mirror.lock().len(),
            resumed: i.stats.resumed.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn urls_are_printed_without_credentials() {
        assert_eq!(
            redact("nats://u:p@a:4222,tls://b:4222"),
            "nats://…@a:4222,tls://b:4222"
        );
        assert_eq!(redact("postgres://u:a,b@h/db"), "postgres://…@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }
}
