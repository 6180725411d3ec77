//! The broker's side of one connection, sans-IO (as `quinn-proto` is to `quinn`): a state
//! machine over core's [`ServerSession`] that owns the connection's policy: who it is (the
//! principal the authenticator chain decided), what it may do (ACL checks on every PUBLISH,
//! SUBSCRIBE and will), its will and Will Delay, session takeover, credential expiry and the
//! uniform refusal delay, in one timer table. It never touches a socket, a runtime or the
//! clock: time is passed in, bytes go in and out, and what needs waiting is returned as an
//! [`Action`] for the I/O driver (`conn.rs`, tokio) to carry out and report back. Routing goes
//! through the [`Backplane`](crate::backplane::Backplane) trait.
//!
//! The driver's loop, in full:
//!
//! ```text
//! loop {
//!     while let Some(action) = conn.poll_action(now) { carry it out; report back }
//!     write every conn.poll_transmit()
//!     if conn.is_finished() { break }
//!     wait for the first of: bytes (if conn.wants_input()), mail (if conn.room() > 0),
//!                            the handoff, conn.poll_timeout()
//! }
//! conn.finish(now)  // hands the session on, stores it, or ends it
//! ```

mod policy;
#[cfg(test)]
mod tests;

use crate::auth::Principal;
use crate::chain::PeerInfo;
use crate::mailbox::{Mail, Mailbox};
use crate::router::{ConnHandle, ConnId, Tenant};
use crate::Shared;
use cloudsignal_core::mqtt::{QoS, ReasonCode, SubscriptionOptions};
use cloudsignal_core::session::{
    ConnectRequest, Delivery, Event, Message, ServerSession, StoredSession,
};
use cloudsignal_core::topic::SubscriptionFilter;
use cloudsignal_core::UnixTime;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most deliveries taken from the mailbox at once (the session writes them in one go).
const BATCH: usize = 1024;
/// Flow control holds a publisher for a subscriber that is behind at most this long in all.
pub(crate) const STALL_LIMIT: Duration = Duration::from_secs(5);
/// A publisher whose every recipient is behind (a pipe) waits through a subscriber's pause of
/// up to this long before counting it stalled: holding it costs nobody else.
const PIPE_PATIENCE: Duration = Duration::from_secs(2);
/// A publisher whose message other subscribers took in stride (a fan-out) waits for a
/// subscriber that is behind at most this long without progress, and not at all for one whose
/// client reads nothing (lagging): the others must not pay for it.
const FAN_OUT_PATIENCE: Duration = Duration::from_millis(250);

/// What the driver must do for the connection before it can go on. Each one ends with the
/// call named in its documentation.
#[derive(Debug)]
pub(crate) enum Action {
    /// Run the authenticator chain on this CONNECT (methods may fetch keys, verify bcrypt,
    /// call a webhook) and report with [`Connection::authenticated`]. Nothing more is read
    /// meanwhile: what the client pipelines waits in its socket.
    Authenticate(Box<ConnectRequest>),
    /// Fetch what verifying this re-authentication token needs (its issuer's keys), then
    /// call [`Connection::keys_fetched`].
    FetchKeys(Option<Vec<u8>>),
    /// The CONNECT takes over a live session: wait (bounded) for the old connection's state
    /// and report it with [`Connection::handed_over`] (`None` if it did not come in time).
    AwaitHandoff(oneshot::Receiver<StoredSession>),
    /// Flow control: the last publish left these subscribers' mailboxes full. Write what is
    /// pending, read nothing more from this client, wait for each to have room (at most
    /// [`STALL_LIMIT`], and at most `patience` while it takes nothing) and report how many did
    /// not with [`Connection::subscribers_waited`].
    WaitForSubscribers {
        /// The congested mailboxes.
        mailboxes: Vec<Arc<Mailbox>>,
        /// How long a subscriber may take nothing before it counts as stalled.
        patience: Duration,
    },
}

/// Publishes a cluster's message log has not confirmed yet, and the acknowledgements queued
/// behind them: PUBACKs go out in the order the PUBLISHes came [MQTT-4.6.0-3]. At most this
/// many wait before the connection stops reading.
const LOG_WINDOW: usize = 256;

/// An acknowledgement waiting its turn.
#[derive(Debug)]
enum Awaited {
    /// The log will say whether it stored the message.
    Log(oneshot::Receiver<bool>),
    /// The driver waits for the log's answer (see [`Connection::take_log_wait`]).
    Taken,
    /// Decided: the reason code to acknowledge with.
    Ready(ReasonCode),
}

/// A session kept for an absent client: its delayed will and its expiry run on timers.
#[derive(Debug)]
pub(crate) struct Parked {
    pub(crate) tenant: Tenant,
    pub(crate) id: ConnId,
    pub(crate) generation: u64,
    pub(crate) will_delay: u32,
    pub(crate) expiry: u32,
}

/// The wall clock at a monotonic instant: tokens expire in Unix time, timers run on
/// [`Instant`]s, and the connection converts between them with this anchor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
    unix_ms: u64,
}

impl Clock {
    /// `epoch` is Unix time `unix_ms` (milliseconds).
    pub(crate) fn new(epoch: Instant, unix_ms: u64) -> Self {
        Self { epoch, unix_ms }
    }

    /// The system's clock, now.
    pub(crate) fn system() -> Self {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self::new(Instant::now(), unix_ms)
    }

    /// Milliseconds since the epoch (the session's time base).
    fn millis(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Unix time at `now`.
    pub(crate) fn unix(&self, now: Instant) -> UnixTime {
        UnixTime((self.unix_ms + self.millis(now)) / 1000)
    }

    /// The instant Unix time `secs` begins (the epoch, if that is earlier).
    fn instant(&self, secs: u64) -> Instant {
        self.epoch + Duration::from_millis(secs.saturating_mul(1000).saturating_sub(self.unix_ms))
    }
}

/// The deadlines a connection keeps, in one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// A refused CONNECT is answered (the uniform failure delay has passed).
    Refusal,
    /// The session's own: keep alive, CONNECT timeout, retransmission.
    Session,
    /// Warn the client its credential expires soon.
    ExpiryWarning,
    /// The credential expired (plus the configured grace): close 0xA0.
    Expiry,
}

/// An AUTH packet waiting for its keys.
#[derive(Debug)]
struct PendingAuth {
    reason: ReasonCode,
    method: Option<String>,
    data: Option<Vec<u8>>,
}

/// One connection's policy state. See the module documentation.
#[derive(Debug)]
pub(crate) struct Connection {
    shared: Arc<Shared>,
    peer: PeerInfo,
    clock: Clock,
    session: ServerSession,
    /// The session id (the resumed session's, once registered).
    id: ConnId,
    /// Who the client is (shared: one principal serves every anonymous client).
    principal: Option<Arc<Principal>>,
    /// The principal's tenant (its org): where its messages are routed.
    tenant: Tenant,
    client_id: String,
    will: Option<Box<Message>>,
    will_delay: u32,
    /// A will whose Will Delay Interval runs after the connection ends.
    delayed_will: Option<Box<Message>>,
    /// Usage counted on this connection, reported to the usage sink.
    meter: crate::usage::Meter,
    /// Deliveries that arrived as the connection closed (a persistent session keeps them).
    undelivered: Vec<Delivery>,
    /// This connection's tenure of its session, once registered.
    generation: Option<u64>,
    /// Taking over a live session: CONNACK waits for the old connection's state
    /// (the assigned client id, if any, and the keep alive to accept with).
    handoff: Option<Box<(Option<String>, u16)>>,
    /// Where the old connection's state arrives (given to the driver to wait on).
    handoff_rx: Option<oneshot::Receiver<StoredSession>>,
    handle: ConnHandle,
    /// A refused CONNECT waits here until the uniform failure delay has passed.
    refusal: Option<(ReasonCode, Instant)>,
    /// A re-authentication waiting for its keys.
    reauth: Option<Box<PendingAuth>>,
    /// The client subscribed to the expiry warning topic.
    wants_expiry_warning: bool,
    /// The `exp` an expiry warning was already sent for.
    warned_for: Option<UnixTime>,
    /// Subscribers' mailboxes the last publish left congested.
    congested: Vec<Arc<Mailbox>>,
    /// Whether a publish since the last wait reached subscribers that kept up.
    fan_out: bool,
    /// The session's `Closed` event was handled: nothing more to do but [`Self::finish`].
    ended: bool,
    /// Acknowledgements waiting for the message log, in order (empty unless in a cluster).
    logging: std::collections::VecDeque<(cloudsignal_core::mqtt::PacketId, QoS, Awaited)>,
}

impl Connection {
    /// A new connection `id` from `peer`, whose deliveries arrive in `mailbox`.
    pub(crate) fn new(
        shared: Arc<Shared>,
        peer: PeerInfo,
        id: ConnId,
        mailbox: Arc<Mailbox>,
        clock: Clock,
    ) -> Self {
        Self {
            session: ServerSession::new(shared.session_config.clone(), 0),
            shared,
            peer,
            clock,
            id,
            principal: None,
            tenant: Tenant::default(),
            client_id: String::new(),
            will: None,
            will_delay: 0,
            delayed_will: None,
            meter: crate::usage::Meter::default(),
            undelivered: Vec::new(),
            generation: None,
            handoff: None,
            handoff_rx: None,
            handle: ConnHandle {
                mailbox,
                info: None,
            },
            refusal: None,
            reauth: None,
            wants_expiry_warning: false,
            warned_for: None,
            congested: Vec::new(),
            fan_out: false,
            ended: false,
            logging: std::collections::VecDeque::new(),
        }
    }

    /// Who is connected, as the transport knows it.
    pub(crate) fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// Unix time at `now`, on the connection's clock.
    pub(crate) fn unix(&self, now: Instant) -> UnixTime {
        self.clock.unix(now)
    }

    /// Bytes from the client.
    pub(crate) fn handle_bytes(&mut self, bytes: &[u8], now: Instant) {
        let now = self.clock.millis(now);
        self.session.handle_bytes(bytes, now);
    }

    /// The transport failed or the client closed it.
    pub(crate) fn connection_lost(&mut self) {
        self.session.handle_connection_lost();
    }

    /// Whether the driver should read from the client.
    pub(crate) fn wants_input(&self) -> bool {
        self.session.wants_input() && self.logging.len() < LOG_WINDOW
    }

    /// Bytes to write to the client, in order.
    pub(crate) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.session.poll_transmit()
    }

    /// The connection has nothing more to do but [`Self::finish`].
    pub(crate) fn is_finished(&self) -> bool {
        self.ended || self.session.is_closed()
    }

    /// Whether deliveries may be fed to the session (it is accepted and not waiting for a
    /// takeover's state).
    pub(crate) fn ready(&self) -> bool {
        self.principal.is_some() && self.handoff.is_none()
    }

    /// How many deliveries, and how many bytes of them, the session can take now without
    /// refusing one: QoS 1/2 messages wait in its queue of `max_queued` messages and
    /// `max_queued_bytes` bytes; when it is full, deliveries stay in the mailbox and publishers
    /// are slowed instead (an empty queue takes one message of any size). `(0, _)`: take
    /// none.
    pub(crate) fn room(&self) -> (usize, usize) {
        if !self.ready() {
            return (0, 0);
        }
        let config = &self.shared.session_config;
        let (queued, _) = self.session.backlog();
        let bytes = match self.session.queued_bytes() {
            0 => usize::MAX,
            used => config.max_queued_bytes.saturating_sub(used),
        };
        if bytes == 0 {
            return (0, 0);
        }
        (config.max_queued.saturating_sub(queued).min(BATCH), bytes)
    }

    /// Handles what the client sent until something needs the driver; `None` when all is
    /// handled.
    pub(crate) fn poll_action(&mut self, now: Instant) -> Option<Action> {
        loop {
            if let Some(rx) = self.handoff_rx.take() {
                return Some(Action::AwaitHandoff(rx));
            }
            if !self.congested.is_empty() {
                let patience = if std::mem::take(&mut self.fan_out) {
                    FAN_OUT_PATIENCE
                } else {
                    PIPE_PATIENCE
                };
                return Some(Action::WaitForSubscribers {
                    mailboxes: std::mem::take(&mut self.congested),
                    patience,
                });
            }
            let event = self.session.poll_event()?;
            if let Some(action) = self.on_event(event, now) {
                return Some(action);
            }
        }
    }

    /// A message, or a close order, from the router.
    pub(crate) fn handle_mail(&mut self, mail: Mail) {
        match mail {
            Mail::Close(reason, text) => self.session.close(reason, text.as_deref()),
            Mail::Deliveries(batch) => {
                for d in batch {
                    self.deliver(d);
                }
            }
        }
    }

    /// The earliest deadline in the timer table.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers().into_iter().flatten().map(|(_, at)| at).min()
    }

    /// Fires every deadline that is due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        for (timer, at) in self.timers().into_iter().flatten() {
            if at > now {
                continue;
            }
            match timer {
                Timer::Refusal => {
                    if let Some((reason, _)) = self.refusal.take() {
                        self.session.reject(reason);
                    }
                }
                Timer::Session => {
                    let ms = self.clock.millis(now);
                    self.session.handle_timeout(ms);
                }
                Timer::ExpiryWarning => {
                    if let Some(exp) = self.principal.as_ref().and_then(|p| p.expires_at) {
                        self.warn_expiry(exp);
                    }
                }
                Timer::Expiry => {
                    let credential = self.principal.as_ref().map(|p| &p.credential);
                    let what = match credential {
                        Some(c) if c.key_id.is_some() => "API key expired",
                        Some(c) if c.cert.is_some() => "client certificate expired",
                        _ => "token expired",
                    };
                    self.session
                        .close(ReasonCode::MAXIMUM_CONNECT_TIME, Some(what));
                }
            }
        }
    }

    /// The timer table: each deadline that is set.
    pub(crate) fn timers(&self) -> [Option<(Timer, Instant)>; 4] {
        let session = self
            .session
            .poll_timeout()
            .map(|ms| (Timer::Session, self.clock.epoch + Duration::from_millis(ms)));
        let exp = self.principal.as_ref().and_then(|p| p.expires_at);
        let expiry = exp.map(|e| {
            let at = self.clock.instant(e.secs()) + self.shared.expiry_grace;
            (Timer::Expiry, at)
        });
        let warning = match (exp, self.shared.expiry_warning) {
            (Some(e), Some(lead)) if self.wants_expiry_warning && self.warned_for != Some(e) => {
                let at = self.clock.instant(e.secs().saturating_sub(lead.as_secs()));
                Some((Timer::ExpiryWarning, at))
            }
            _ => None,
        };
        [
            self.refusal.map(|(_, at)| (Timer::Refusal, at)),
            session,
            warning,
            expiry,
        ]
    }

    /// Reports usage if due (the driver calls this when it has nothing else to do).
    pub(crate) fn idle(&mut self, now: Instant) {
        self.report_usage(false, now);
    }

    /// Drops what the last burst allocated (everything is handled and written).
    pub(crate) fn release_memory(&mut self) {
        self.session.release_memory();
    }

    /// The connection ended: reports usage and hands its session to its successor, stores it
    /// for the client's return, or ends it. A kept session is returned for its timers.
    pub(crate) fn finish(&mut self, now: Instant) -> Option<Parked> {
        self.report_usage(true, now);
        let generation = self.generation?;
        let expiry = self.session.session_expiry();
        let mut stored = self.session.take_stored();
        for d in self.undelivered.drain(..) {
            let config = &self.shared.session_config;
            stored.enqueue(d, config.max_queued, config.max_queued_bytes);
        }
        let will = self.delayed_will.take().map(|w| *w);
        let kept = self.shared.router.detach(
            self.id,
            generation,
            stored,
            &self.handle.mailbox,
            expiry,
            will,
            now,
        );
        kept.then(|| Parked {
            tenant: self.tenant.clone(),
            id: self.id,
            generation,
            will_delay: self.will_delay,
            expiry,
        })
    }

    /// Handles one protocol event; an action if the driver must act before the next.
    fn on_event(&mut self, event: Event, now: Instant) -> Option<Action> {
        let Some(principal) = self.principal.clone() else {
            match event {
                Event::Connect(req) => return self.on_connect_received(req, now),
                Event::Closed { reason, .. } => {
                    self.log_close(&reason);
                    self.ended = true;
                }
                _ => {}
            }
            return None;
        };
        match event {
            Event::Connect(_) => {}
            Event::Publish { message, packet_id } => {
                let qos = message.qos;
                let (reason, logged) = self.on_publish(&principal, message, now);
                match (packet_id, logged) {
                    (Some(id), Some(stored)) => {
                        self.logging.push_back((id, qos, Awaited::Log(stored)));
                    }
                    (Some(id), None) if self.logging.is_empty() => {
                        self.session.ack_publish(id, qos, reason);
                    }
                    (Some(id), None) => self.logging.push_back((id, qos, Awaited::Ready(reason))),
                    (None, _) => {}
                }
            }
            Event::Subscribe {
                packet_id,
                filters,
                subscription_id,
            } => self.on_subscribe(&principal, packet_id, filters, subscription_id, now),
            Event::Unsubscribe { packet_id, filters } => {
                let reasons = filters
                    .iter()
                    .map(|f| {
                        let existed = SubscriptionFilter::parse(f)
                            .is_ok_and(|f| self.shared.router.unsubscribe(self.id, f));
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
            } => {
                let fetch = data.clone();
                self.reauth = Some(Box::new(PendingAuth {
                    reason,
                    method,
                    data,
                }));
                return Some(Action::FetchKeys(fetch));
            }
            Event::Closed {
                reason,
                publish_will,
            } => {
                self.log_close(&reason);
                self.on_closed(&principal, &reason, publish_will, now);
                self.ended = true;
            }
        }
        None
    }

    /// Routes a PUBLISH the ACL allows; the reason code for its acknowledgement, and, when a
    /// cluster logs it, what says it is stored (acknowledge only then).
    fn on_publish(
        &mut self,
        principal: &Principal,
        message: Message,
        now: Instant,
    ) -> (ReasonCode, Option<oneshot::Receiver<bool>>) {
        if !principal.acl.may_publish(&message.topic) {
            tracing::warn!(client_id = %self.client_id, username = %principal.username, topic = %message.topic, "publish denied by ACL");
            return (ReasonCode::NOT_AUTHORIZED, None);
        }
        let size = message.payload.len() as u64;
        let topic = message.topic.clone();
        let routed = self
            .shared
            .router
            .publish(self.id, &self.tenant, Arc::new(message), now);
        match routed {
            Ok(routed) => {
                let own = &self.handle.mailbox;
                let congested: Vec<Arc<Mailbox>> = routed
                    .congested
                    .into_iter()
                    .filter(|m| !Arc::ptr_eq(m, own))
                    .collect();
                if routed.reached > congested.len() && !congested.is_empty() {
                    // a fan-out: others took the message in stride, so a subscriber whose
                    // client reads nothing is not waited for, and the others only briefly
                    self.fan_out = true;
                    self.congested
                        .extend(congested.into_iter().filter(|m| !m.is_lagging()));
                } else {
                    self.congested.extend(congested);
                }
                self.meter.counters.published += 1;
                self.meter.counters.published_bytes += size;
                (ReasonCode::SUCCESS, routed.logged)
            }
            Err(quota) => {
                tracing::warn!(client_id = %self.client_id, username = %principal.username, %topic, %quota, "publish refused: quota exceeded");
                (ReasonCode::QUOTA_EXCEEDED, None)
            }
        }
    }

    fn on_subscribe(
        &mut self,
        principal: &Principal,
        packet_id: cloudsignal_core::mqtt::PacketId,
        filters: Vec<(Result<SubscriptionFilter, String>, SubscriptionOptions)>,
        subscription_id: Option<u32>,
        now: Instant,
    ) {
        let mut reasons = Vec::with_capacity(filters.len());
        let mut replay = Vec::new();
        for (filter, opts) in filters {
            let code = match filter {
                Err(why) => {
                    tracing::warn!(client_id = %self.client_id, why, "invalid topic filter");
                    ReasonCode::TOPIC_FILTER_INVALID
                }
                Ok(f) if f.filter().as_str() == crate::EXPIRY_WARNING_TOPIC => {
                    self.wants_expiry_warning = true;
                    ReasonCode(opts.qos as u8)
                }
                Ok(f) if !principal.acl.may_subscribe(f.filter()) => {
                    tracing::warn!(client_id = %self.client_id, username = %principal.username, filter = %f.filter(), "subscribe denied by ACL");
                    ReasonCode::NOT_AUTHORIZED
                }
                Ok(f) => {
                    let added =
                        self.shared
                            .router
                            .subscribe(self.id, f, opts, subscription_id, now);
                    match added {
                        Ok(deliveries) => {
                            replay.extend(deliveries);
                            ReasonCode(opts.qos as u8)
                        }
                        Err(quota) => {
                            tracing::warn!(client_id = %self.client_id, username = %principal.username, %quota, "subscribe refused: quota exceeded");
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

    /// Feeds one delivery to the session.
    fn deliver(&mut self, d: Delivery) {
        use cloudsignal_core::session::Deliver;
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
                tracing::warn!(client_id = %self.client_id, "message larger than the client's maximum packet size dropped")
            }
            Deliver::QueueFull => {
                tracing::warn!(client_id = %self.client_id, "slow consumer: queue full, disconnecting");
                self.undelivered.extend(keep);
                self.session
                    .close(ReasonCode::QUOTA_EXCEEDED, Some("slow consumer"));
            }
        }
    }

    /// Reports the usage counted so far (when due, or now with `force`).
    fn report_usage(&mut self, force: bool, now: Instant) {
        let (Some(sink), Some(p)) = (&self.shared.usage, &self.principal) else {
            return;
        };
        let Some(subject) = crate::usage::Subject::of(&p.credential) else {
            return;
        };
        if let Some(counters) = self.meter.take(force, now) {
            sink.record(subject, self.peer.addr.ip(), counters);
        }
    }

    /// Routes a message from this session (a will).
    fn publish_will(&self, message: Message, now: Instant) {
        let topic = message.topic.clone();
        let routed = self
            .shared
            .router
            .publish(self.id, &self.tenant, Arc::new(message), now);
        if let Err(quota) = routed {
            tracing::warn!(client_id = %self.client_id, %topic, %quota, "will not published: quota exceeded");
        }
    }

    fn log_close(&self, reason: &cloudsignal_core::session::CloseReason) {
        tracing::info!(peer = %self.peer.addr, client_id = %self.client_id, ?reason, "connection closed");
    }

    /// The principal, once authenticated.
    #[cfg(test)]
    pub(crate) fn principal(&self) -> Option<&Principal> {
        self.principal.as_deref()
    }

    /// Refuses the CONNECT with `reason` once the uniform failure delay (at least `extra`)
    /// has passed since it arrived at `connect_at`: the timing of a refusal tells an attacker
    /// nothing about its cause.
    fn refuse_after(&mut self, reason: ReasonCode, connect_at: Instant, extra: Duration) {
        let at = connect_at + self.shared.auth_failure_delay.max(extra);
        self.refusal = Some((reason, at));
    }
}
