//! # cloudsignal-broker
//!
//! CloudSignal's native MQTT broker (MQTT 3.1.1 and 5.0 over TCP, TLS, WebSocket and WSS).
//!
//! Layers, from the wire in:
//! - `conn` (private): one tokio task per connection, the thin driver that reads, writes,
//!   sleeps and carries out what the connection asks for.
//! - `connection` (private): the sans-IO connection policy over core's `ServerSession`: the
//!   authenticator chain's decision ([`chain`]), ACL checks on every PUBLISH, SUBSCRIBE and
//!   will, wills, takeover, credential expiry (0xA0), flow control, one timer table.
//! - [`backplane`]: what connections ask of routing, as a trait; [`backplane::Local`] is this
//!   process's [`router`] (topic trie per tenant, sessions, retained messages, quotas).
//! - [`auth`], [`builtin`], [`mtls`], [`webhook`]: the authentication methods; [`feed`] and
//!   [`BrokerHandle::revoke`]: revocation for the whole life of every connection.
#![forbid(unsafe_code)]

pub mod auth;
pub mod backplane;
pub mod builtin;
pub mod chain;
pub mod cluster;
mod conn;
mod connection;
pub mod feed;
pub mod jwks;
pub mod mailbox;
pub mod mtls;
pub mod rate;
pub mod router;
pub mod throttle;
pub mod tls;
pub mod usage;
pub mod webhook;
pub mod ws;

use auth::Authenticator;
use cloudsignal_core::mqtt::ReasonCode;
use cloudsignal_core::session::ServerConfig;
use parking_lot::Mutex;
use router::Router;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// A client id for a client that sent none [MQTT-3.1.3-6]: `cs-` and 128 random bits, so it
/// can be neither guessed nor taken ahead of its client.
/// Seconds since the Unix epoch, by the system clock.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn assigned_client_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        // no OS randomness is no reason to refuse a client; the id stays unique
        static FALLBACK: AtomicU64 = AtomicU64::new(0);
        let n = FALLBACK.fetch_add(1, Ordering::Relaxed);
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        bytes[8..].copy_from_slice(&t.to_le_bytes());
    }
    let mut id = String::with_capacity(35);
    id.push_str("cs-");
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// The transport a listener speaks.
#[derive(Clone)]
pub enum Transport {
    /// MQTT over TCP (default port 1883).
    Tcp,
    /// MQTT over TLS (default port 8883).
    Tls(Arc<tls::TlsSource>),
    /// MQTT over WebSocket (default port 18884).
    Ws,
    /// MQTT over WebSocket over TLS (default port 18885).
    Wss(Arc<tls::TlsSource>),
}

impl Transport {
    /// The listener's name for the authenticator chain (`tcp`, `tls`, `ws`, `wss`).
    fn listener(&self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls(_) => "tls",
            Self::Ws => "ws",
            Self::Wss(_) => "wss",
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Tls(_) => "TLS",
            Self::Ws => "WebSocket",
            Self::Wss(_) => "WebSocket over TLS",
        }
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One listener to open.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Address to bind.
    pub addr: SocketAddr,
    /// What it speaks.
    pub transport: Transport,
}

/// Broker configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Listeners to open (TCP, TLS, WS, WSS).
    pub listeners: Vec<ListenerConfig>,
    /// WebSocket rules (origin allowlist, message size).
    pub ws: ws::WsPolicy,
    /// Per-connection protocol limits.
    pub session: ServerConfig,
    /// Who may connect: the credentials' shared state (trusted issuers, keys, revocations).
    pub auth: Authenticator,
    /// The authenticator chain; `None`: [`Authenticator::default_chain`] with no extras.
    pub chain: Option<Vec<chain::ChainEntry>>,
    /// Every refused CONNECT is answered this long after it arrived, whatever the cause.
    pub auth_failure_delay: Duration,
    /// Brute-force defence.
    pub throttle: throttle::ThrottlePolicy,
    /// How long a session may outlive its token's `exp` before it is closed (default 0).
    pub expiry_grace: Duration,
    /// How long before expiry a client subscribed to [`EXPIRY_WARNING_TOPIC`] is told (`None`:
    /// never).
    pub expiry_warning: Option<Duration>,
    /// New connections accepted per second on each listener (burst: twice as many).
    pub connect_rate: u32,
    /// Remote revocation feeds to poll (e.g. the worker's `GET /v1/revocations`).
    pub revocation_feeds: Vec<feed::FeedSource>,
    /// Where usage counters go (the control plane), if anywhere.
    pub usage: Option<Arc<dyn usage::UsageSink>>,
    /// Per-identity and per-client limits (0x97 quota exceeded past them).
    pub quotas: router::Quotas,
    /// Routing between connections; `None`: this process's router ([`backplane::Local`], with
    /// `session.max_queued`, `session.max_queued_bytes` and `quotas`). A cluster passes its own.
    pub backplane: Option<Arc<dyn backplane::Backplane>>,
}

/// The topic on which a client is warned, and only that client, that its token expires soon.
/// Any client may subscribe to exactly this filter; the payload is
/// `{"expires_at": <unix seconds>}`.
pub const EXPIRY_WARNING_TOPIC: &str = "$cloudsignal/session/expiring";

impl BrokerConfig {
    /// A configuration with one plain TCP listener.
    pub fn tcp(addr: SocketAddr, auth: Authenticator) -> Self {
        Self {
            listeners: vec![ListenerConfig {
                addr,
                transport: Transport::Tcp,
            }],
            ws: ws::WsPolicy::default(),
            session: ServerConfig::default(),
            auth,
            chain: None,
            auth_failure_delay: Duration::from_millis(500),
            throttle: throttle::ThrottlePolicy::default(),
            expiry_grace: Duration::ZERO,
            expiry_warning: Some(Duration::from_secs(60)),
            connect_rate: 1_000,
            revocation_feeds: Vec::new(),
            usage: None,
            quotas: router::Quotas::default(),
            backplane: None,
        }
    }
}

/// State shared by all connections.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Routing and sessions (this process's router, or a cluster's backplane).
    pub(crate) router: Arc<dyn backplane::Backplane>,
    pub(crate) auth: Authenticator,
    pub(crate) chain: chain::Chain,
    pub(crate) session_config: Arc<ServerConfig>,
    pub(crate) ws_policy: ws::WsPolicy,
    pub(crate) ids: AtomicU64,
    /// Wakes the `$SYS` publisher (a tenant got its first session).
    pub(crate) sys_wake: tokio::sync::Notify,
    pub(crate) auth_failure_delay: Duration,
    pub(crate) throttle: Mutex<throttle::Throttle>,
    pub(crate) expiry_grace: Duration,
    pub(crate) expiry_warning: Option<Duration>,
    pub(crate) connect_rate: u32,
    pub(crate) revocations: Arc<parking_lot::RwLock<cloudsignal_core::revocation::RevocationList>>,
    pub(crate) usage: Option<Arc<dyn usage::UsageSink>>,
    /// Refused CONNECTs by (org the username named, or "", reason): the dashboard's figures.
    pub(crate) refusals: Mutex<std::collections::BTreeMap<(String, String), u64>>,
}

impl Shared {
    /// The state a broker's connections share, built from `config` (no socket is opened).
    pub(crate) fn new(config: BrokerConfig, ws_policy: ws::WsPolicy) -> Self {
        Self {
            router: config.backplane.clone().unwrap_or_else(|| {
                Arc::new(backplane::Local::new(
                    Router::new(config.session.max_queued, config.quotas)
                        .with_max_stored_bytes(config.session.max_queued_bytes),
                ))
            }),
            revocations: config.auth.revocations(),
            usage: config.usage.clone(),
            chain: chain::Chain::new(
                config
                    .chain
                    .unwrap_or_else(|| config.auth.default_chain(Vec::new())),
                config.auth.revocations(),
            ),
            auth: config.auth,
            session_config: Arc::new(config.session),
            ws_policy,
            ids: AtomicU64::new(1),
            sys_wake: tokio::sync::Notify::new(),
            auth_failure_delay: config.auth_failure_delay,
            throttle: Mutex::new(throttle::Throttle::new(config.throttle)),
            expiry_grace: config.expiry_grace,
            expiry_warning: config.expiry_warning,
            connect_rate: config.connect_rate,
            refusals: Mutex::new(std::collections::BTreeMap::new()),
        }
    }
}

/// Controls a running broker from outside its connections: the control plane and the
/// revocation feed poller use it.
#[derive(Debug, Clone)]
pub struct BrokerHandle {
    shared: Arc<Shared>,
}

impl BrokerHandle {
    /// Applies a revocation: CONNECTs and re-authentications with the credential are refused
    /// from now on, live sessions using it are closed at once with DISCONNECT 0x98
    /// (administrative action), and sessions it stored for absent clients end. Returns the
    /// client ids closed.
    pub fn revoke(&self, entry: &cloudsignal_core::revocation::Entry) -> Vec<String> {
        self.shared.revocations.write().apply(entry);
        let (closed, stored) = self.shared.router.revoke(entry);
        info!(revocation = ?entry.revocation, seq = entry.seq, closed = closed.len(), stored_sessions_ended = stored, "revocation applied");
        closed
    }

    /// Trusts `keys` for `issuer` from now on (the control plane's key rotation).
    pub fn trust(&self, issuer: &str, keys: Vec<cloudsignal_core::keys::KeyEntry>) {
        self.shared.auth.trust(issuer, keys);
    }

    /// Whether tokens of `issuer` may claim `org` (see `TokenVerifier::bind_orgs`).
    pub fn may_issue(&self, issuer: &str, org: &str) -> bool {
        self.shared.auth.may_issue(issuer, org)
    }

    /// Loads stored revocations at start (no session is live yet, so nothing is closed).
    pub fn load_revocations(&self, entries: &[cloudsignal_core::revocation::Entry]) {
        let mut list = self.shared.revocations.write();
        for e in entries {
            list.apply(e);
        }
    }

    /// When `user` of `org` was last revoked, if ever (the exchange refuses IdP logins from
    /// before it).
    pub fn user_revoked_at(&self, org: &str, user: &str) -> Option<cloudsignal_core::UnixTime> {
        self.shared.revocations.read().user_revoked_at(org, user)
    }

    /// Live connections.
    pub fn connections(&self) -> usize {
        self.shared.router.connections()
    }

    /// The live connections of `org` (every org: `None`), newest first.
    pub fn live_sessions(&self, org: Option<&str>) -> Vec<router::LiveSession> {
        self.shared.router.live_sessions(org)
    }

    /// How many live connections `org` has.
    pub fn live_count(&self, org: &str) -> usize {
        self.shared.router.live_count(org)
    }

    /// Closes live connection `id` of `org` (DISCONNECT 0x98); whether there was one.
    pub fn kick(&self, id: router::ConnId, org: &str) -> bool {
        let kicked = self.shared.router.kick(id, org);
        if kicked {
            info!(conn = id, org, "connection closed by an operator (0x98)");
        }
        kicked
    }

    /// The cluster this broker is a node of, if any.
    pub fn cluster(&self) -> Option<cluster::ClusterStatus> {
        self.shared.router.cluster()
    }

    /// Refused CONNECTs of `org` by reason, since the broker started.
    pub fn refusals(&self, org: &str) -> Vec<(String, u64)> {
        self.shared
            .refusals
            .lock()
            .iter()
            .filter(|((o, _), _)| o == org)
            .map(|((_, reason), n)| (reason.clone(), *n))
            .collect()
    }
}

/// A bound broker, ready to run.
#[derive(Debug)]
pub struct Broker {
    listeners: Vec<(TcpListener, Transport)>,
    shared: Arc<Shared>,
    feeds: Vec<feed::FeedSource>,
}

impl Broker {
    /// Binds every listener; fails if any address cannot be bound.
    pub async fn bind(config: BrokerConfig) -> std::io::Result<Self> {
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let bound = TcpListener::bind(l.addr).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "binding the {} listener on {}: {e}",
                        l.transport.name(),
                        l.addr
                    ),
                )
            })?;
            listeners.push((bound, l.transport.clone()));
        }
        let mut ws_policy = config.ws.clone();
        if ws_policy.max_message_size == 0 {
            ws_policy.max_message_size = config.session.max_packet_size as usize + 16;
        }
        let feeds = config.revocation_feeds.clone();
        Ok(Self {
            listeners,
            feeds,
            shared: Arc::new(Shared::new(config, ws_policy)),
        })
    }

    /// A handle to control the broker while it runs (revocations, statistics).
    pub fn handle(&self) -> BrokerHandle {
        BrokerHandle {
            shared: self.shared.clone(),
        }
    }

    /// The bound addresses, in configuration order (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` completes, then tells every v5 client DISCONNECT 0x8B (server
    /// shutting down) and waits briefly for connections to close.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut tasks = Vec::new();
        for (listener, transport) in self.listeners {
            let addr = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            info!(%addr, transport = transport.name(), "MQTT listening");
            tasks.push(tokio::spawn(accept_loop(
                listener,
                transport,
                self.shared.clone(),
            )));
        }
        tasks.push(tokio::spawn(sys_stats(self.shared.clone())));
        for source in self.feeds.clone() {
            let handle = BrokerHandle {
                shared: self.shared.clone(),
            };
            tasks.push(tokio::spawn(feed::poll(handle, source)));
        }
        shutdown.await;
        for t in &tasks {
            t.abort();
        }
        info!("shutting down: disconnecting clients (0x8B)");
        self.shared
            .router
            .close_all(ReasonCode::SERVER_SHUTTING_DOWN);
        for _ in 0..50 {
            let open = self.shared.router.connections();
            if open == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Handshake time allowed for TLS and WebSocket upgrades.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn accept_loop(listener: TcpListener, transport: Transport, shared: Arc<Shared>) {
    let rate = shared.connect_rate;
    let mut bucket =
        rate::TokenBucket::new(rate, rate.saturating_mul(2), std::time::Instant::now());
    loop {
        if let Err(wait) = bucket.take(std::time::Instant::now()) {
            // over the connect-rate limit: leave newcomers in the kernel backlog for a moment
            tokio::time::sleep(wait).await;
            continue;
        }
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = shared.ids.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        // one spawn per transport: a task's allocation is the size of its future, so a plain
        // TCP connection must not carry the TLS and WebSocket states (≈ 8 KB) with it
        let listener = transport.listener();
        let transport = match &transport {
            Transport::Tcp => {
                let info = chain::PeerInfo::plain(peer, listener);
                tokio::spawn(conn::serve(stream, info, id, shared));
                continue;
            }
            other => other.clone(),
        };
        tokio::spawn(async move {
            let handshake = async {
                match transport {
                    Transport::Tcp => {}
                    Transport::Tls(source) => {
                        let tls = tls_handshake(&source.acceptor(), stream).await?;
                        let info = chain::PeerInfo {
                            cert: client_cert(&tls, peer),
                            ..chain::PeerInfo::plain(peer, listener)
                        };
                        conn::serve(tls, info, id, shared).await;
                    }
                    Transport::Ws => {
                        let ws = ws_handshake(stream, &shared.ws_policy).await?;
                        let info = chain::PeerInfo::plain(peer, listener);
                        conn::serve(ws, info, id, shared).await;
                    }
                    Transport::Wss(source) => {
                        let tls = tls_handshake(&source.acceptor(), stream).await?;
                        let info = chain::PeerInfo {
                            cert: client_cert(&tls, peer),
                            ..chain::PeerInfo::plain(peer, listener)
                        };
                        let ws = ws_handshake(tls, &shared.ws_policy).await?;
                        conn::serve(ws, info, id, shared).await;
                    }
                }
                Ok(())
            };
            let result: Result<(), String> = handshake.await;
            if let Err(why) = result {
                warn!(%peer, why, "connection refused before MQTT");
            }
        });
    }
}

/// The client certificate the handshake verified, if the client sent one.
fn client_cert(
    tls: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    peer: SocketAddr,
) -> Option<Arc<mtls::ClientCert>> {
    let der = tls.get_ref().1.peer_certificates()?.first()?;
    match mtls::ClientCert::parse(der) {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            warn!(%peer, error = %e, "client certificate verified but unreadable; ignored");
            None
        }
    }
}

async fn tls_handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
) -> Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, String> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS handshake failed: {e}"))
}

async fn ws_handshake<S>(
    stream: S,
    policy: &ws::WsPolicy,
) -> Result<tokio::io::DuplexStream, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::time::timeout(HANDSHAKE_TIMEOUT, ws::accept(stream, policy))
        .await
        .map_err(|_| "WebSocket handshake timed out".to_owned())?
}

/// How often `$SYS/broker/...` statistics are refreshed.
const SYS_INTERVAL: Duration = Duration::from_secs(10);

/// Publishes statistics as retained messages under `$SYS/broker/` in every tenant with
/// sessions, each tenant its own figures (readable by clients whose ACL allows `$SYS/#`, e.g.
/// anonymous development clients).
async fn sys_stats(shared: Arc<Shared>) {
    let started = std::time::Instant::now();
    let mut tick = tokio::time::interval(SYS_INTERVAL);
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // a new tenant gets its figures at once
            () = shared.sys_wake.notified() => {}
        }
        ticks += 1;
        if ticks.is_multiple_of(6) {
            // once a minute: forget revocations no token that could still verify can match
            let now = cloudsignal_core::UnixTime(unix_now());
            let pruned = shared.revocations.write().prune(now);
            if pruned > 0 {
                info!(pruned, "expired revocations forgotten");
            }
        }
        let uptime = started.elapsed().as_secs();
        for figures in shared.router.tenants() {
            for (topic, value) in sys_values(&figures, uptime) {
                let Ok(topic) = cloudsignal_core::topic::TopicName::parse(topic) else {
                    continue;
                };
                let message = cloudsignal_core::session::Message {
                    topic,
                    payload: value.into_bytes(),
                    qos: cloudsignal_core::mqtt::QoS::AtMostOnce,
                    retain: true,
                    expiry: None,
                    forwarded: Default::default(),
                };
                // publisher id 0 is no connection: the broker's own messages count against no
                // quota
                let _ = shared.router.publish(
                    0,
                    &figures.tenant,
                    Arc::new(message),
                    std::time::Instant::now(),
                );
            }
        }
    }
}

/// One tenant's `$SYS/broker/…` topics: its own figures only (orgs see nothing of each other).
fn sys_values(f: &router::TenantFigures, uptime: u64) -> [(&'static str, String); 10] {
    let s = f.stats;
    [
        (
            "$SYS/broker/version",
            format!("cloudsignal {}", env!("CARGO_PKG_VERSION")),
        ),
        ("$SYS/broker/uptime", format!("{uptime} seconds")),
        ("$SYS/broker/clients/connected", f.connections.to_string()),
        (
            "$SYS/broker/clients/disconnected",
            f.stored_sessions.to_string(),
        ),
        (
            "$SYS/broker/subscriptions/count",
            f.subscriptions.to_string(),
        ),
        ("$SYS/broker/messages/stored", s.stored.to_string()),
        ("$SYS/broker/messages/delivered", s.delivered.to_string()),
        ("$SYS/broker/messages/dropped", s.dropped_qos0.to_string()),
        (
            "$SYS/broker/clients/slow_consumers_disconnected",
            s.slow_consumers.to_string(),
        ),
        ("$SYS/broker/clients/stalled", s.stalled.to_string()),
    ]
}
