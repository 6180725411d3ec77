//! One task per connection: the tokio adapter around core's `ServerSession`.

use crate::auth::Principal;
use crate::mailbox::Mail;
use crate::router::{ConnHandle, ConnId, Resume, Tenant};
use crate::Shared;
use cloudsignal_core::mqtt::{Protocol, ReasonCode};
use cloudsignal_core::session::{
    CloseReason, ConnectRequest, Deliver, Event, Message, ServerSession, StoredSession,
};
use cloudsignal_core::UnixTime;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tracing::{info, warn};

/// Deliveries buffered per connection before the router counts it as a slow consumer (or
/// `--max-queued-messages`, if larger).
const CHANNEL_CAPACITY: usize = 1024;
/// The read buffer of a quiet connection; it grows ×4 after each read that fills it, up to
/// [`MAX_READ`], and falls back after a short read, so idle connections hold 256 bytes and busy
/// ones read in large chunks.
const MIN_READ: usize = 256;
const MAX_READ: usize = 64 * 1024;
/// A write that cannot complete in this time ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a publisher is held (not read) waiting for a subscriber's mailbox to drain below
/// its high-water mark, before that subscriber counts as stalled and the slow-consumer policy
/// applies to it.
const STALL_LIMIT: Duration = Duration::from_secs(5);
/// How long a closed connection drains what its client still sends (see the end of [`serve`]).
const LINGER: Duration = Duration::from_secs(2);
/// Most deliveries taken from the mailbox at once (the session writes them in one go).
const BATCH: usize = 1024;
/// How long a connection taking over a live session waits for the old connection's state.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(5);

fn unix_now() -> UnixTime {
    UnixTime(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

struct Conn<W> {
    id: ConnId,
    peer: SocketAddr,
    /// The listener's transport (`tcp`, `tls`, `ws`, `wss`).
    listener: &'static str,
    /// The verified client certificate (mTLS), if any.
    cert: Option<Arc<crate::mtls::ClientCert>>,
    shared: Arc<Shared>,
    session: ServerSession,
    writer: W,
    epoch: Instant,
    principal: Option<Principal>,
    /// The principal's tenant (its org): where its messages are routed.
    tenant: Tenant,
    client_id: String,
    will: Option<Box<Message>>,
    will_delay: u32,
    /// Usage counted on this connection, reported to the usage sink.
    meter: crate::usage::Meter,
    /// Deliveries that arrived as the connection closed (a persistent session keeps them).
    undelivered: Vec<cloudsignal_core::session::Delivery>,
    /// A will whose Will Delay Interval runs after the connection ends.
    delayed_will: Option<Box<Message>>,
    /// This connection's tenure of its session, once registered.
    generation: Option<u64>,
    /// Taking over a live session: CONNACK waits for the old connection's state.
    pending_handoff: Option<(oneshot::Receiver<StoredSession>, Option<String>, u16)>,
    handle: ConnHandle,
    /// A refused CONNECT waits here until the uniform failure delay has passed.
    pending_reject: Option<(ReasonCode, tokio::time::Instant)>,
    /// When the CONNECT arrived (the failure delay counts from here).
    connect_at: tokio::time::Instant,
    /// The client subscribed to the expiry warning topic.
    wants_expiry_warning: bool,
    /// The `exp` an expiry warning was already sent for.
    warned_for: Option<UnixTime>,
    /// Subscribers' mailboxes this connection's last publish left congested: it reads nothing
    /// more from its client until they have room (or stall).
    congested: Vec<Arc<crate::mailbox::Mailbox>>,
}

impl<W: AsyncWrite + Unpin> Conn<W> {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        while let Some(bytes) = self.session.poll_transmit() {
            tokio::time::timeout(WRITE_TIMEOUT, self.writer.write_all(&bytes))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out")
                })??;
        }
        Ok(())
    }

    /// Refuses the CONNECT after the same delay whatever the cause, so the timing of a refusal
    /// tells an attacker nothing about why.
    fn refuse(&mut self, reason: ReasonCode) {
        self.refuse_after(reason, Duration::ZERO);
    }

    fn refuse_after(&mut self, reason: ReasonCode, extra: Duration) {
        let at = self.connect_at + self.shared.auth_failure_delay.max(extra);
        self.pending_reject = Some((reason, at));
    }

    /// Whether the CONNECT's source is banned (checked before any credential work: a banned
    /// source never costs a bcrypt or a key fetch). Usernames are never banned: a username's
    /// failures only slow down further failures, so nobody can lock a user out by naming them.
    fn banned(&mut self, req: &ConnectRequest) -> bool {
        let banned = self
            .shared
            .throttle
            .lock()
            .is_banned(self.peer.ip(), Instant::now());
        if banned {
            self.connect_at = tokio::time::Instant::now();
            warn!(peer = %self.peer, username = req.username.as_deref().unwrap_or(""), "refused: source temporarily banned after repeated failures");
            self.refuse(ReasonCode::BANNED);
        }
        banned
    }

    /// Completes a CONNECT the authenticator chain decided (`decided`: the principal and the
    /// method that accepted it, or the refusal).
    fn on_connect(
        &mut self,
        req: ConnectRequest,
        decided: Result<(Principal, &'static str), crate::auth::Refusal>,
    ) {
        self.connect_at = tokio::time::Instant::now();
        let now = self.now_ms();
        let mut client_id = req.client_id.clone();
        let mut assigned = None;
        if client_id.is_empty() {
            if req.protocol == Protocol::V311 && !req.clean_start {
                // [MQTT-3.1.3-8] an empty id needs a clean session in v3.1.1
                warn!(peer = %self.peer, "refused: empty client id without clean session");
                return self.refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
            }
            // unpredictable, so nobody can guess (or pre-empt) the id a client will get
            client_id = crate::assigned_client_id();
            assigned = Some(client_id.clone());
        }
        let principal = match decided {
            Ok((p, method)) => {
                self.shared.throttle.lock().record_success(&p.username);
                info!(peer = %self.peer, client_id, username = %p.username, method = %method, listener = %self.listener, "authenticated");
                p
            }
            Err(refusal) => {
                let extra = self.shared.throttle.lock().record_failure(
                    self.peer.ip(),
                    req.username.as_deref(),
                    Instant::now(),
                );
                warn!(peer = %self.peer, client_id, username = req.username.as_deref().unwrap_or(""), cause = %refusal.cause, reason = %refusal.reason, "connect refused");
                if let (Some(sink), Some(subject)) = (
                    &self.shared.usage,
                    crate::usage::refused_subject(req.username.as_deref(), req.password.as_deref()),
                ) {
                    let failed = crate::usage::Counters {
                        auth_failures: 1,
                        ..Default::default()
                    };
                    sink.record(subject, self.peer.ip(), failed);
                }
                return self.refuse_after(refusal.reason, extra);
            }
        };
        self.tenant = principal.identity.tenant();
        let registered = {
            let mut router = self.shared.router.lock();
            let registered = router
                .register(
                    self.id,
                    &client_id,
                    &principal.identity.owner(),
                    &self.tenant,
                    &principal.credential,
                    self.handle.clone(),
                    req.clean_start,
                    req.session_expiry > 0,
                    Instant::now(),
                )
                .map(|registered| {
                    // a resumed session keeps only what this login's ACL allows
                    let removed = match registered.resume {
                        Resume::New => 0,
                        _ => router.retain_subscriptions(registered.id, |f| {
                            principal.acl.may_subscribe(f)
                        }),
                    };
                    (registered, removed)
                });
            if router.take_new_tenant() {
                self.shared.sys_wake.notify_one();
            }
            registered
        };
        let (registered, removed) = match registered {
            Ok(r) => r,
            Err(quota) => {
                warn!(peer = %self.peer, client_id, username = %principal.username, %quota, "connect refused: quota exceeded");
                return self.refuse(ReasonCode::QUOTA_EXCEEDED);
            }
        };
        if removed > 0 {
            warn!(peer = %self.peer, client_id, username = %principal.username, removed_subscriptions = removed, "resumed session: subscriptions this login's ACL does not allow were removed");
        }
        if let Some(will) = registered.ended_will {
            self.publish(will);
        }
        self.id = registered.id;
        self.generation = Some(registered.generation);
        self.will = req.will.map(Box::new);
        self.will_delay = req.will_delay;
        self.client_id = client_id;
        let stored = match registered.resume {
            Resume::New => None,
            Resume::Stored(s) => Some(s),
            Resume::Handoff(rx) => {
                info!(peer = %self.peer, client_id = %self.client_id, username = %principal.username, "taking over a live session");
                self.principal = Some(principal);
                self.pending_handoff = Some((rx, assigned, req.keep_alive));
                return;
            }
        };
        info!(peer = %self.peer, client_id = %self.client_id, username = %principal.username, protocol = ?req.protocol, resumed = stored.is_some(), session_expiry = req.session_expiry, "connected");
        self.meter.counters.connects += 1;
        self.principal = Some(principal);
        let will = self.will.is_some();
        self.session
            .accept(now, stored, assigned.as_deref(), will, req.keep_alive);
    }

    /// The old connection handed its session over (or did not in time: the subscriptions
    /// remain, the messages it held are lost, and the log says so).
    fn on_handoff(&mut self, stored: Option<StoredSession>) {
        let Some((_, assigned, keep_alive)) = self.pending_handoff.take() else {
            return;
        };
        let stored = stored.unwrap_or_else(|| {
            warn!(client_id = %self.client_id, "session handoff timed out; resuming without the old connection's messages");
            StoredSession::new()
        });
        info!(peer = %self.peer, client_id = %self.client_id, inherited = stored.len(), "connected (session taken over)");
        self.meter.counters.connects += 1;
        let now = self.now_ms();
        let will = self.will.is_some();
        self.session
            .accept(now, Some(stored), assigned.as_deref(), will, keep_alive);
    }

    /// How many deliveries the session can take now without refusing one: QoS 1/2 messages
    /// wait in its queue of `max_queued`; when it is full, deliveries stay in the mailbox and
    /// publishers are slowed instead.
    fn room(&self) -> usize {
        let (queued, _) = self.session.backlog();
        self.shared
            .session_config
            .max_queued
            .saturating_sub(queued)
            .min(BATCH)
    }

    /// Waits (at most [`STALL_LIMIT`] each) for the mailboxes this connection's publishes
    /// congested to have room; a subscriber that makes none is counted as stalled.
    async fn wait_for_subscribers(&mut self) {
        for mailbox in std::mem::take(&mut self.congested) {
            if !mailbox.wait_space(STALL_LIMIT).await {
                self.shared.router.lock().count_stalled(&self.tenant);
                warn!(client_id = %self.client_id, "a subscriber made no room for {STALL_LIMIT:?}: it is stalled, and publishers no longer wait for it");
            }
        }
    }

    /// Whether deliveries may be fed to the session.
    fn ready(&self) -> bool {
        self.principal.is_some() && self.pending_handoff.is_none()
    }

    /// Routes a message from this session (a will).
    fn publish(&self, message: Message) {
        let topic = message.topic.clone();
        let routed = self.shared.router.lock().publish(
            self.id,
            &self.tenant,
            Arc::new(message),
            Instant::now(),
        );
        if let Err(quota) = routed {
            warn!(client_id = %self.client_id, %topic, %quota, "will not published: quota exceeded");
        }
    }

    fn on_event(&mut self, event: Event) -> bool {
        let Some(principal) = self.principal.clone() else {
            return match event {
                // a CONNECT is decided in the read loop, where the chain may wait
                Event::Connect(_) => true,
                Event::Closed { reason, .. } => {
                    self.log_close(&reason);
                    false
                }
                _ => true,
            };
        };
        match event {
            Event::Connect(_) => {}
            Event::Publish { message, packet_id } => {
                let qos = message.qos;
                let reason = if principal.acl.may_publish(&message.topic) {
                    let size = message.payload.len() as u64;
                    let topic = message.topic.clone();
                    let routed = self.shared.router.lock().publish(
                        self.id,
                        &self.tenant,
                        Arc::new(message),
                        Instant::now(),
                    );
                    match routed {
                        Ok(routed) => {
                            let own = &self.handle.mailbox;
                            self.congested.extend(
                                routed
                                    .congested
                                    .into_iter()
                                    .filter(|m| !Arc::ptr_eq(m, own)),
                            );
                            self.meter.counters.published += 1;
                            self.meter.counters.published_bytes += size;
                            ReasonCode::SUCCESS
                        }
                        Err(quota) => {
                            warn!(client_id = %self.client_id, username = %principal.username, %topic, %quota, "publish refused: quota exceeded");
                            ReasonCode::QUOTA_EXCEEDED
                        }
                    }
                } else {
                    warn!(client_id = %self.client_id, username = %principal.username, topic = %message.topic, "publish denied by ACL");
                    ReasonCode::NOT_AUTHORIZED
                };
                if let Some(id) = packet_id {
                    self.session.ack_publish(id, qos, reason);
                }
            }
            Event::Subscribe {
                packet_id,
                filters,
                subscription_id,
            } => {
                let mut reasons = Vec::with_capacity(filters.len());
                let mut replay = Vec::new();
                for (filter, opts) in filters {
                    let code = match filter {
                        Err(why) => {
                            warn!(client_id = %self.client_id, why, "invalid topic filter");
                            ReasonCode::TOPIC_FILTER_INVALID
                        }
                        Ok(f) if f.filter().as_str() == crate::EXPIRY_WARNING_TOPIC => {
                            self.wants_expiry_warning = true;
                            ReasonCode(opts.qos as u8)
                        }
                        Ok(f) if !principal.acl.may_subscribe(f.filter()) => {
                            warn!(client_id = %self.client_id, username = %principal.username, filter = %f.filter(), "subscribe denied by ACL");
                            ReasonCode::NOT_AUTHORIZED
                        }
                        Ok(f) => {
                            let added = self.shared.router.lock().subscribe(
                                self.id,
                                f,
                                opts,
                                subscription_id,
                                Instant::now(),
                            );
                            match added {
                                Ok(deliveries) => {
                                    replay.extend(deliveries);
                                    ReasonCode(opts.qos as u8)
                                }
                                Err(quota) => {
                                    warn!(client_id = %self.client_id, username = %principal.username, %quota, "subscribe refused: quota exceeded");
                                    ReasonCode::QUOTA_EXCEEDED
                                }
                            }
                        }
                    };
                    reasons.push(code);
                }
                self.session.ack_subscribe(packet_id, reasons);
                for d in replay {
                    self.deliver(d);
                }
            }
            Event::Unsubscribe { packet_id, filters } => {
                let reasons = filters
                    .iter()
                    .map(|f| {
                        let existed = cloudsignal_core::topic::SubscriptionFilter::parse(f)
                            .is_ok_and(|f| self.shared.router.lock().unsubscribe(self.id, f));
                        if existed {
                            ReasonCode::SUCCESS
                        } else {
                            ReasonCode::NO_SUBSCRIPTION_EXISTED
                        }
                    })
                    .collect();
                self.session.ack_unsubscribe(packet_id, reasons);
            }
            Event::Auth {
                reason,
                method,
                data,
            } => self.on_reauth(&principal, reason, method, data),
            Event::Closed {
                reason,
                publish_will,
            } => {
                self.log_close(&reason);
                // a session ended for a revoked or expired credential speaks no more: its will
                // would be a message sent with a credential that is no longer valid
                let ended_by_credential = matches!(
                    reason,
                    CloseReason::ServerClosed(
                        ReasonCode::ADMINISTRATIVE_ACTION | ReasonCode::MAXIMUM_CONNECT_TIME
                    )
                );
                if ended_by_credential && self.will.is_some() {
                    info!(client_id = %self.client_id, ?reason, "will discarded: the session ended with its credential");
                    self.will = None;
                }
                if let Some(will) = self.will.take().filter(|_| publish_will) {
                    // a will is published only if the ACL allows it at disconnect time
                    if !principal.acl.may_publish(&will.topic) {
                        warn!(client_id = %self.client_id, topic = %will.topic, "will denied by ACL");
                    } else if self.will_delay > 0 && self.session.session_expiry() > 0 {
                        // sent when the delay or the session ends, unless the client
                        // returns first [MQTT-3.1.3-9]
                        self.delayed_will = Some(will);
                    } else {
                        self.publish(*will);
                    }
                }
                return false;
            }
        }
        true
    }

    /// MQTT 5 re-authentication: AUTH 0x19, method `cloudsignal-token`, data = a new `tkn_`
    /// for the same user. Success swaps ACL and expiry at once, drops subscriptions the new ACL
    /// no longer allows and answers AUTH 0x00; anything else closes with 0x87.
    fn on_reauth(
        &mut self,
        principal: &Principal,
        reason: ReasonCode,
        method: Option<String>,
        data: Option<Vec<u8>>,
    ) {
        if reason != ReasonCode::REAUTHENTICATE
            || method.as_deref() != Some(crate::auth::TOKEN_AUTH_METHOD)
        {
            warn!(client_id = %self.client_id, ?reason, ?method, "unsupported AUTH");
            return self.session.close(
                ReasonCode::BAD_AUTHENTICATION_METHOD,
                Some("use AUTH 0x19 with method cloudsignal-token"),
            );
        }
        match self.shared.auth.reauthenticate(
            principal,
            data.as_deref().unwrap_or_default(),
            &self.client_id,
            unix_now(),
        ) {
            Ok(next) => {
                let removed = {
                    let mut router = self.shared.router.lock();
                    router.set_credential(self.id, next.credential.clone());
                    router.retain_subscriptions(self.id, |f| next.acl.may_subscribe(f))
                };
                info!(client_id = %self.client_id, username = %next.username, expires_at = ?next.expires_at, removed_subscriptions = removed, "re-authenticated");
                self.principal = Some(next);
                self.session
                    .send_auth(ReasonCode::SUCCESS, crate::auth::TOKEN_AUTH_METHOD);
            }
            Err(refusal) => {
                warn!(client_id = %self.client_id, cause = %refusal.cause, "re-authentication refused");
                self.session
                    .close(ReasonCode::NOT_AUTHORIZED, Some("re-authentication failed"));
            }
        }
    }

    fn deliver(&mut self, d: cloudsignal_core::session::Delivery) {
        if self.session.is_closed() {
            // arrived after the close: kept for a persistent session
            self.undelivered.push(d);
            return;
        }
        let keep = (d.qos != cloudsignal_core::mqtt::QoS::AtMostOnce).then(|| d.clone());
        self.meter.counters.delivered += 1;
        self.meter.counters.delivered_bytes += d.message.payload.len() as u64;
        match self.session.deliver(d) {
            Deliver::Sent | Deliver::Queued => {}
            Deliver::TooLarge => {
                warn!(client_id = %self.client_id, "message larger than the client's maximum packet size dropped")
            }
            Deliver::QueueFull => {
                warn!(client_id = %self.client_id, "slow consumer: queue full, disconnecting");
                self.undelivered.extend(keep);
                self.session
                    .close(ReasonCode::QUOTA_EXCEEDED, Some("slow consumer"));
            }
        }
    }

    /// Tells the client, on the expiry warning topic only, that its token expires at `exp`.
    fn warn_expiry(&mut self, exp: UnixTime) {
        self.warned_for = Some(exp);
        let Ok(topic) = cloudsignal_core::topic::TopicName::parse(crate::EXPIRY_WARNING_TOPIC)
        else {
            return;
        };
        let message = Message {
            topic,
            payload: format!("{{\"expires_at\":{}}}", exp.secs()).into_bytes(),
            qos: cloudsignal_core::mqtt::QoS::AtMostOnce,
            retain: false,
            expiry: None,
            forwarded: Default::default(),
        };
        self.deliver(cloudsignal_core::session::Delivery {
            message: Arc::new(message),
            qos: cloudsignal_core::mqtt::QoS::AtMostOnce,
            retain: false,
            subscription_ids: Vec::new(),
            expiry: None,
        });
    }

    /// Reports the usage counted so far (when due, or now with `force`).
    fn report_usage(&mut self, force: bool) {
        let (Some(sink), Some(p)) = (&self.shared.usage, &self.principal) else {
            return;
        };
        let Some(subject) = crate::usage::Subject::of(&p.credential) else {
            return;
        };
        if let Some(counters) = self.meter.take(force) {
            sink.record(subject, self.peer.ip(), counters);
        }
    }

    fn log_close(&self, reason: &CloseReason) {
        info!(peer = %self.peer, client_id = %self.client_id, ?reason, "connection closed");
    }
}

/// Serves one connection until it closes.
pub(crate) async fn serve<S>(
    stream: S,
    peer_info: crate::chain::PeerInfo,
    id: ConnId,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let peer = peer_info.addr;
    let listener = peer_info.listener;
    let cert = peer_info.cert;
    let (mut reader, writer) = tokio::io::split(stream);
    let epoch = Instant::now();
    let capacity = CHANNEL_CAPACITY.max(shared.session_config.max_queued);
    let mailbox = Arc::new(crate::mailbox::Mailbox::new(capacity));
    let mut conn = Conn {
        id,
        peer,
        listener,
        cert,
        session: ServerSession::new(shared.session_config.clone(), 0),
        shared,
        writer,
        epoch,
        principal: None,
        tenant: Tenant::default(),
        client_id: String::new(),
        will: None,
        will_delay: 0,
        delayed_will: None,
        meter: crate::usage::Meter::default(),
        undelivered: Vec::new(),
        generation: None,
        pending_handoff: None,
        handle: ConnHandle {
            mailbox: mailbox.clone(),
        },
        pending_reject: None,
        connect_at: tokio::time::Instant::now(),
        wants_expiry_warning: false,
        warned_for: None,
        congested: Vec::new(),
    };
    let mut buf = vec![0u8; MIN_READ];
    let mut quiet = false;
    loop {
        let mut open = true;
        while let Some(ev) = conn.session.poll_event() {
            // keys for a remote issuer are fetched (and API keys bcrypt-verified) here, in this
            // connection's own task; the rare events that wait are boxed so the connection's
            // future stays small
            match ev {
                Event::Connect(req) if conn.principal.is_none() => {
                    // a banned source costs no bcrypt and no key fetch
                    if conn.banned(&req) {
                        continue;
                    }
                    let req = Box::new(req);
                    let peer = crate::chain::PeerInfo {
                        addr: conn.peer,
                        listener: conn.listener,
                        cert: conn.cert.clone(),
                    };
                    let chain = conn.shared.chain.clone();
                    let decided = Box::pin(chain.connect(&req, &peer, unix_now())).await;
                    conn.on_connect(*req, decided);
                }
                Event::Auth {
                    data,
                    reason,
                    method,
                } if conn.principal.is_some() => {
                    let data = Box::new(data);
                    let _ = Box::pin(conn.shared.auth.prepare(data.as_deref(), unix_now())).await;
                    open &= conn.on_event(Event::Auth {
                        reason,
                        method,
                        data: *data,
                    });
                }
                ev => open &= conn.on_event(ev),
            }
            if !conn.congested.is_empty() {
                // flow control: answer what was handled, then hold this publisher (its
                // further packets stay unread, in its socket) until the subscribers it fed
                // have room
                if conn.flush().await.is_err() {
                    conn.session.handle_connection_lost();
                }
                Box::pin(conn.wait_for_subscribers()).await;
            }
        }
        if conn.flush().await.is_err() {
            conn.session.handle_connection_lost();
            continue;
        }
        if !open || (conn.session.is_closed() && conn.session.poll_event().is_none()) {
            break;
        }
        conn.report_usage(false);
        if std::mem::take(&mut quiet) {
            // everything is handled and written: drop what the last burst allocated
            conn.session.release_memory();
        }
        let timer = conn
            .session
            .poll_timeout()
            .map(|ms| tokio::time::Instant::from_std(epoch + Duration::from_millis(ms)));
        let exp = conn.principal.as_ref().and_then(|p| p.expires_at);
        let at = |secs: u64| {
            tokio::time::Instant::now()
                + Duration::from_secs(secs.saturating_sub(unix_now().secs()))
        };
        let expiry = exp.map(|e| at(e.secs()) + conn.shared.expiry_grace);
        let warning = match (exp, conn.shared.expiry_warning) {
            (Some(e), Some(lead)) if conn.wants_expiry_warning && conn.warned_for != Some(e) => {
                Some((e, at(e.secs().saturating_sub(lead.as_secs()))))
            }
            _ => None,
        };
        let next_deadline = [
            timer,
            conn.pending_reject.map(|(_, at)| at),
            warning.map(|(_, at)| at),
            expiry,
        ]
        .into_iter()
        .flatten()
        .min();
        let room = conn.room();
        tokio::select! {
            // while a CONNECT awaits its decision nothing is read: the socket's own window
            // holds what the client pipelines, not this process's memory
            read = reader.read(&mut buf), if conn.session.wants_input() => match read {
                Ok(0) | Err(_) => conn.session.handle_connection_lost(),
                Ok(n) => {
                    let now = conn.now_ms();
                    conn.session.handle_bytes(&buf[..n], now);
                    if n == buf.len() && n < MAX_READ {
                        buf = vec![0u8; n * 4];
                    } else if n <= MIN_READ {
                        if buf.len() > MIN_READ {
                            buf = vec![0u8; MIN_READ];
                        }
                        quiet = true;
                    }
                }
            },
            stored = wait_handoff(&mut conn.pending_handoff) => conn.on_handoff(stored),
            mail = mailbox.recv(room), if conn.ready() && room > 0 => match mail {
                Mail::Close(reason, text) => conn.session.close(reason, text.as_deref()),
                Mail::Deliveries(batch) => {
                    for d in batch {
                        conn.deliver(d);
                    }
                }
            },
            // one timer for every deadline: each pending `Sleep` would cost its own space in
            // this connection's future
            _ = sleep_until(next_deadline) => {
                let now = tokio::time::Instant::now();
                let due = |at: Option<tokio::time::Instant>| at.is_some_and(|at| at <= now);
                if due(conn.pending_reject.map(|(_, at)| at)) {
                    if let Some((reason, _)) = conn.pending_reject.take() {
                        conn.session.reject(reason);
                    }
                }
                if due(timer) {
                    let now = conn.now_ms();
                    conn.session.handle_timeout(now);
                }
                if let Some((e, at)) = warning {
                    if due(Some(at)) {
                        conn.warn_expiry(e);
                    }
                }
                if due(expiry) {
                    let credential = conn.principal.as_ref().map(|p| &p.credential);
                    let what = match credential {
                        Some(c) if c.key_id.is_some() => "API key expired",
                        Some(c) if c.cert.is_some() => "client certificate expired",
                        _ => "token expired",
                    };
                    conn.session.close(ReasonCode::MAXIMUM_CONNECT_TIME, Some(what));
                }
            }
        }
    }
    let _ = conn.writer.shutdown().await;
    conn.report_usage(true);
    // the session is handed on (takeover) or stored first: a client that lingers must not
    // delay the connection taking its place
    detach(&mut conn, &mailbox);
    // lingering close: the write side is shut (FIN after the DISCONNECT or CONNACK); read and
    // discard what the client still sends, briefly, so closing with unread data does not reset
    // the connection before the client has read why it was closed (0x93, 0x98, 0xA0, 0x8E…)
    let _ = tokio::time::timeout(LINGER, async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// Hands the session of a connection that ended to its successor, stores it for the client's
/// return, or ends it.
fn detach<W>(conn: &mut Conn<W>, mailbox: &crate::mailbox::Mailbox) {
    let Some(generation) = conn.generation else {
        return;
    };
    let expiry = conn.session.session_expiry();
    let mut stored = conn.session.take_stored();
    for d in conn.undelivered.drain(..) {
        stored.enqueue(d, conn.shared.session_config.max_queued);
    }
    let will = conn.delayed_will.take().map(|w| *w);
    let will_delay = conn.will_delay;
    let kept = conn.shared.router.lock().detach(
        conn.id,
        generation,
        stored,
        mailbox,
        expiry,
        will,
        Instant::now(),
    );
    if kept {
        tokio::spawn(session_timers(
            conn.shared.clone(),
            conn.tenant.clone(),
            conn.id,
            generation,
            will_delay,
            expiry,
        ));
    }
}

/// While a session waits for its client: publishes its delayed will after the Will Delay
/// Interval, and ends it after the Session Expiry Interval (publishing a will still waiting)
/// [MQTT-3.1.3-9]. Both are no-ops once the client has returned.
async fn session_timers(
    shared: Arc<Shared>,
    tenant: Tenant,
    id: ConnId,
    generation: u64,
    will_delay: u32,
    expiry: u32,
) {
    let start = tokio::time::Instant::now();
    let publish = |will: Message| {
        info!(topic = %will.topic, "publishing delayed will");
        let topic = will.topic.clone();
        if let Err(quota) =
            shared
                .router
                .lock()
                .publish(id, &tenant, Arc::new(will), Instant::now())
        {
            warn!(%topic, %quota, "delayed will not published: quota exceeded");
        }
    };
    if will_delay > 0 && will_delay < expiry {
        tokio::time::sleep_until(start + Duration::from_secs(will_delay.into())).await;
        let will = shared.router.lock().take_delayed_will(id, generation);
        if let Some(will) = will {
            publish(will);
        }
    }
    tokio::time::sleep_until(start + Duration::from_secs(expiry.into())).await;
    let will = shared.router.lock().expire(id, generation);
    if let Some(will) = will {
        publish(will);
    }
}

async fn wait_handoff(
    pending: &mut Option<(oneshot::Receiver<StoredSession>, Option<String>, u16)>,
) -> Option<StoredSession> {
    match pending {
        Some((rx, _, _)) => tokio::time::timeout(HANDOFF_TIMEOUT, rx)
            .await
            .ok()
            .and_then(Result::ok),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod footprint {
    //! What one connection costs while idle, by part (issue 13 asks what each byte is). The
    //! figures are printed (`cargo test -p cloudsignal-broker footprint -- --nocapture`) and
    //! held to a budget so a change that grows them is seen.
    use super::*;
    use std::mem::size_of;

    #[tokio::test]
    async fn idle_connection_parts() {
        let auth = crate::auth::Authenticator::new(Default::default(), true);
        let config = crate::BrokerConfig::tcp("127.0.0.1:0".parse().unwrap(), auth);
        let broker = crate::Broker::bind(config).await.unwrap();
        let (stream, _peer) = tokio::io::duplex(64);
        let peer = crate::chain::PeerInfo::plain("127.0.0.1:1".parse().unwrap(), "tcp");
        let task = serve(stream, peer, 1, broker.shared.clone());
        let parts = [
            (
                "connection task (its future: Conn, read buffer handle, await states)",
                std::mem::size_of_val(&task),
            ),
            (
                "Conn",
                size_of::<Conn<tokio::io::WriteHalf<tokio::net::TcpStream>>>(),
            ),
            (
                "ServerSession (sans-IO protocol state)",
                size_of::<ServerSession>(),
            ),
            (
                "Mailbox (shared with the router)",
                size_of::<crate::mailbox::Mailbox>(),
            ),
            (
                "Principal (who, ACL, credential; inside Conn)",
                size_of::<Principal>(),
            ),
            ("read buffer while idle (heap)", MIN_READ),
        ];
        for (what, bytes) in parts {
            eprintln!("{bytes:>6} B  {what}");
        }
        drop(task);
        // the suspended task is the largest part: keep it from growing unseen
        assert!(
            parts[0].1 <= 4096,
            "the connection future grew to {} bytes",
            parts[0].1
        );
    }
}
