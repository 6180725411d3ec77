//! The broker side of one MQTT connection, as a sans-IO state machine.
//!
//! [`ServerSession`] has no networking code and never reads a clock. Its driver (the tokio
//! broker, or a test) feeds it what the peer sent and the current time, and drains what it
//! produced:
//!
//! - [`ServerSession::handle_bytes`] with received bytes and `now` (milliseconds);
//! - [`ServerSession::poll_event`] for what the broker must decide or route ([`Event`]);
//! - [`ServerSession::poll_transmit`] for bytes to write to the peer;
//! - [`ServerSession::poll_timeout`] / [`ServerSession::handle_timeout`] for the connect timeout
//!   and keep-alive (1.5 × the negotiated value [MQTT-3.1.2-24]);
//! - decisions go back in through [`ServerSession::accept`], [`ServerSession::reject`],
//!   [`ServerSession::ack_publish`], [`ServerSession::ack_subscribe`],
//!   [`ServerSession::ack_unsubscribe`] and [`ServerSession::close`].
//!
//! After [`ServerSession::is_closed`] turns true the driver writes out the last transmit
//! bytes and closes the transport.
//!
//! Modules: `connect` (CONNECT, CONNACK, refusal), `outbound` (deliveries, packet ids, the
//! inflight window bounded by the client's Receive Maximum), `stored` (what a persistent session
//! keeps between connections); the inbound half (PUBLISH at QoS 0/1/2 with duplicate
//! suppression, receive maximum and topic aliases, SUBSCRIBE/UNSUBSCRIBE, PING, DISCONNECT,
//! protocol errors mapped to v5 reason codes or a close for v3.1.1) lives here.

mod connect;
mod outbound;
mod stored;
#[cfg(test)]
mod tests;
pub mod wire;

pub use outbound::{Deliver, Delivery};
pub use stored::StoredSession;

use connect::{announces_v5_connect, forwarded};

use crate::mqtt::{
    decode, Ack, Connack, DecodeError, Packet, PacketId, Properties, Protocol, QoS, ReasonCode,
    ReasonPacket, SubAck, SubscriptionOptions,
};
use crate::topic::{SubscriptionFilter, TopicName};
use std::collections::{BTreeSet, HashMap, VecDeque};

/// Time in milliseconds since an arbitrary epoch chosen by the driver.
pub type Millis = u64;

/// Limits the broker applies to every connection.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest packet accepted, in bytes (announced to v5 clients). Default 1 MiB.
    pub max_packet_size: u32,
    /// How many QoS 1/2 PUBLISHes a client may have unacknowledged (v5 Receive Maximum).
    /// Default 100.
    pub receive_maximum: u16,
    /// Topic aliases a client may use. Default 32.
    pub topic_alias_maximum: u16,
    /// Topic aliases the server uses towards a client, at most (and at most the client's
    /// Topic Alias Maximum). Default 64; 0 turns server-side aliases off.
    pub max_outbound_aliases: u16,
    /// Time allowed between accepting a connection and receiving CONNECT. Default 10 s.
    pub connect_timeout_ms: Millis,
    /// Upper bound on the keep-alive a client may ask for (0 = no bound). Default 0.
    pub max_keep_alive: u16,
    /// Topic depth cap.
    pub max_topic_levels: usize,
    /// QoS 1/2 messages queued behind a client's inflight window before it counts as a slow
    /// consumer (0x97). Default 1,000.
    pub max_queued: usize,
    /// Bytes (topics and payloads) those queued messages may hold, at most; one message is
    /// always accepted into an empty queue. Default 16 MiB.
    pub max_queued_bytes: usize,
    /// Longest Session Expiry Interval granted, in seconds; longer requests (and v3.1.1
    /// persistent sessions, which never expire on their own) are capped and v5 clients are
    /// told in CONNACK [MQTT-3.2.2-?]. Default 7 days.
    pub max_session_expiry: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_packet_size: 1 << 20,
            receive_maximum: 100,
            topic_alias_maximum: 32,
            max_outbound_aliases: 64,
            connect_timeout_ms: 10_000,
            max_keep_alive: 0,
            max_topic_levels: crate::topic::DEFAULT_MAX_LEVELS,
            max_queued: 1_000,
            max_queued_bytes: 16 << 20,
            max_session_expiry: 7 * 24 * 3600,
        }
    }
}

/// A CONNECT the broker must authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// Protocol version.
    pub protocol: Protocol,
    /// Client identifier (empty when the client wants one assigned).
    pub client_id: String,
    /// Clean start / clean session.
    pub clean_start: bool,
    /// Keep alive requested (seconds).
    pub keep_alive: u16,
    /// User name.
    pub username: Option<String>,
    /// Password (a `tkn_` token or an API key).
    pub password: Option<Vec<u8>>,
    /// v5 Authentication Method, if enhanced authentication is used.
    pub auth_method: Option<String>,
    /// v5 Authentication Data.
    pub auth_data: Option<Vec<u8>>,
    /// Session Expiry Interval granted (seconds): the client's request (v3.1.1: 0 when
    /// clean, else "never") capped by [`ServerConfig::max_session_expiry`].
    pub session_expiry: u32,
    /// The will message, if any.
    pub will: Option<Message>,
    /// Will Delay Interval (seconds).
    pub will_delay: u32,
}

/// An application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic.
    pub topic: TopicName,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS it was published with.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Message Expiry Interval (seconds), if set.
    pub expiry: Option<u32>,
    /// Properties forwarded unchanged (content type, response topic, correlation data,
    /// payload format, user properties), re-encoded by the driver for subscribers.
    pub forwarded: ForwardedProperties,
}

/// The v5 PUBLISH properties of `f` with `expiry` (the Message Expiry Interval left): what a
/// subscriber, or another broker, is sent. Per-connection properties (topic alias,
/// subscription identifiers) are the caller's.
pub(crate) fn forwarded_properties(f: &ForwardedProperties, expiry: Option<u32>) -> Properties<'_> {
    Properties {
        payload_format_indicator: f.payload_format_indicator,
        message_expiry_interval: expiry,
        content_type: f.content_type.as_deref(),
        response_topic: f.response_topic.as_deref(),
        correlation_data: f.correlation_data.as_deref(),
        user_properties: f
            .user_properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        ..Properties::default()
    }
}

/// The PUBLISH properties that travel with a message to its subscribers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardedProperties {
    /// Payload Format Indicator.
    pub payload_format_indicator: Option<u8>,
    /// Content Type.
    pub content_type: Option<String>,
    /// Response Topic.
    pub response_topic: Option<String>,
    /// Correlation Data.
    pub correlation_data: Option<Vec<u8>>,
    /// User properties, in order.
    pub user_properties: Vec<(String, String)>,
}

/// What the broker must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A client asks to connect: answer with [`ServerSession::accept`] or [`ServerSession::reject`].
    Connect(ConnectRequest),
    /// A message to authorize and route. For QoS > 0 answer with [`ServerSession::ack_publish`].
    Publish {
        /// The message.
        message: Message,
        /// The packet id to acknowledge (QoS 1 and 2).
        packet_id: Option<PacketId>,
    },
    /// Subscriptions to authorize: answer with [`ServerSession::ack_subscribe`].
    Subscribe {
        /// Packet id to acknowledge.
        packet_id: PacketId,
        /// Filters with options; an unparsable filter is `Err` and must get 0x8F.
        filters: Vec<(Result<SubscriptionFilter, String>, SubscriptionOptions)>,
        /// Subscription Identifier (v5).
        subscription_id: Option<u32>,
    },
    /// Unsubscriptions: answer with [`ServerSession::ack_unsubscribe`].
    Unsubscribe {
        /// Packet id to acknowledge.
        packet_id: PacketId,
        /// Filters as sent.
        filters: Vec<String>,
    },
    /// v5 AUTH from the client (re-authentication, reason 0x19).
    Auth {
        /// Reason code.
        reason: ReasonCode,
        /// Authentication Method.
        method: Option<String>,
        /// Authentication Data.
        data: Option<Vec<u8>>,
    },
    /// The connection ended. `publish_will` is false after a normal DISCONNECT.
    Closed {
        /// Why (for logs).
        reason: CloseReason,
        /// Whether the will message must be published [MQTT-3.1.2-8] [MQTT-3.14.4-3].
        publish_will: bool,
    },
}

/// Why a connection closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent DISCONNECT with this reason.
    ClientDisconnect(ReasonCode),
    /// The client broke a protocol rule; the v5 DISCONNECT carried this reason code.
    ProtocolViolation(ReasonCode, String),
    /// No CONNECT within the connect timeout.
    ConnectTimeout,
    /// Nothing received within 1.5 × keep-alive [MQTT-3.1.2-24].
    KeepAliveTimeout,
    /// CONNECT was refused with this reason.
    Rejected(ReasonCode),
    /// The broker closed the session (revocation, expiry, takeover, shutdown…).
    ServerClosed(ReasonCode),
    /// The network connection ended without DISCONNECT.
    ConnectionLost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingConnect,
    Authenticating,
    Connected,
    Closed,
}

/// One client connection, broker side.
#[derive(Debug)]
pub struct ServerSession {
    /// Shared by every connection of a broker.
    config: std::sync::Arc<ServerConfig>,
    state: State,
    protocol: Protocol,
    buffer: Vec<u8>,
    transmit: Vec<u8>,
    events: VecDeque<Event>,
    keep_alive_ms: Millis,
    deadline: Option<Millis>,
    /// QoS 1/2 PUBLISHes received and not yet acknowledged (receive maximum window).
    inbound_unacked: BTreeSet<u16>,
    /// QoS 2 packet ids acknowledged with PUBREC, awaiting PUBREL (duplicate suppression).
    awaiting_pubrel: BTreeSet<u16>,
    /// The client's topic aliases (allocated when it sets its first: 8 bytes in every
    /// connection instead of a 48-byte empty map; most clients never set one).
    #[allow(clippy::box_collection)]
    topic_aliases: Option<Box<HashMap<u16, TopicName>>>,
    will_pending: bool,
    outbound: outbound::Outbound,
    /// The CONNECT's Authentication Method, echoed in CONNACK [MQTT-3.2.2-?] and AUTH.
    auth_method: Option<String>,
    /// The first bytes of an undecodable first packet (to tell MQTT 5 from anything else).
    buffer_at_error: Vec<u8>,
    /// Session Expiry Interval granted, and the one requested in CONNECT.
    session_expiry: u32,
    requested_expiry: u32,
}

impl ServerSession {
    /// A new connection accepted at `now`.
    pub fn new(config: impl Into<std::sync::Arc<ServerConfig>>, now: Millis) -> Self {
        let config = config.into();
        let deadline = Some(now + config.connect_timeout_ms);
        Self {
            state: State::AwaitingConnect,
            protocol: Protocol::V5,
            buffer: Vec::new(),
            transmit: Vec::new(),
            events: VecDeque::new(),
            keep_alive_ms: 0,
            deadline,
            inbound_unacked: BTreeSet::new(),
            awaiting_pubrel: BTreeSet::new(),
            topic_aliases: None,
            will_pending: false,
            outbound: outbound::Outbound::new(config.max_queued, config.max_queued_bytes),
            auth_method: None,
            session_expiry: 0,
            requested_expiry: 0,
            buffer_at_error: Vec::new(),
            config,
        }
    }

    /// The negotiated protocol version (meaningful once CONNECT arrived).
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Whether the connection is over; write out [`Self::poll_transmit`] and close.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The next event for the broker.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to send to the peer, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.transmit.is_empty()).then(|| std::mem::take(&mut self.transmit))
    }

    /// When [`Self::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.deadline
    }

    /// Advances timers to `now`.
    pub fn handle_timeout(&mut self, now: Millis) {
        match self.deadline {
            Some(d) if now >= d && self.state != State::Closed => {
                let reason = if self.state == State::AwaitingConnect {
                    CloseReason::ConnectTimeout
                } else {
                    CloseReason::KeepAliveTimeout
                };
                if self.state == State::Connected {
                    self.send_disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT, None);
                }
                self.finish(reason, true);
            }
            _ => {}
        }
    }

    fn send(&mut self, p: &Packet<'_>) {
        p.encode(self.protocol, &mut self.transmit);
    }

    fn send_disconnect(&mut self, reason: ReasonCode, reason_string: Option<&str>) {
        if self.protocol == Protocol::V5 {
            let properties = Properties {
                reason_string,
                ..Properties::default()
            };
            self.send(&Packet::Disconnect(ReasonPacket { reason, properties }));
        }
    }

    fn finish(&mut self, reason: CloseReason, publish_will: bool) {
        if self.state == State::Closed {
            return;
        }
        let publish_will = publish_will && self.will_pending;
        self.state = State::Closed;
        self.deadline = None;
        self.events.push_back(Event::Closed {
            reason,
            publish_will,
        });
    }

    /// Closes for a protocol violation: v5 DISCONNECT with `reason` (only once connected;
    /// before CONNACK a v5 client gets CONNACK with the reason), v3.1.1 plain close.
    fn violation(&mut self, reason: ReasonCode, why: String) {
        match self.state {
            State::Connected => self.send_disconnect(reason, Some(&why)),
            // before CONNECT is parsed, answer only a peer that announced MQTT 5: a TLS hello
            // or an HTTP request on this port gets a plain close, not MQTT bytes
            State::AwaitingConnect
                if reason == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
                    || announces_v5_connect(&self.buffer_at_error) =>
            {
                self.send(&Packet::Connack(Connack {
                    session_present: false,
                    reason,
                    properties: Properties::default(),
                }));
            }
            State::Authenticating if self.protocol == Protocol::V5 => {
                self.send(&Packet::Connack(Connack {
                    session_present: false,
                    reason,
                    properties: Properties::default(),
                }));
            }
            _ => {}
        }
        self.finish(CloseReason::ProtocolViolation(reason, why), true);
    }

    /// Feeds bytes received from the peer at `now`.
    pub fn handle_bytes(&mut self, data: &[u8], now: Millis) {
        if self.state == State::Closed {
            return;
        }
        if self.state == State::Authenticating
            && self.buffer.len() + data.len() > self.config.max_packet_size as usize
        {
            // bytes wait unprocessed while a CONNECT is decided: at most one packet's worth,
            // so a client cannot grow the buffer without bound before it is even accepted
            // (drivers should stop reading: see [`Self::wants_input`])
            return self.violation(
                ReasonCode::QUOTA_EXCEEDED,
                "more than the maximum packet size sent before CONNACK".into(),
            );
        }
        self.buffer.extend_from_slice(data);
        if self.state == State::Connected && self.keep_alive_ms > 0 {
            self.deadline = Some(now + self.keep_alive_ms);
        }
        let mut consumed = 0;
        let mut buffer = std::mem::take(&mut self.buffer);
        // [MQTT-3.1.4-7]: packets pipelined after CONNECT wait, unprocessed, for the CONNACK
        while !matches!(self.state, State::Closed | State::Authenticating) {
            match decode(
                &buffer[consumed..],
                self.protocol,
                self.config.max_packet_size as usize,
            ) {
                Ok(Some((packet, used))) => {
                    consumed += used;
                    self.handle_packet(packet);
                }
                Ok(None) => break,
                Err(e) => {
                    if self.state == State::AwaitingConnect {
                        self.buffer_at_error =
                            buffer[consumed..].iter().take(16).copied().collect();
                    }
                    let reason = match e {
                        DecodeError::TooLarge(_) => ReasonCode::PACKET_TOO_LARGE,
                        DecodeError::UnsupportedProtocolLevel(_) => {
                            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
                        }
                        DecodeError::WildcardInTopicName => ReasonCode::TOPIC_NAME_INVALID,
                        DecodeError::InvalidSubscriptionOptions
                        | DecodeError::DuplicateProperty(_)
                        | DecodeError::PropertyNotAllowed(_)
                        | DecodeError::ZeroPacketId => ReasonCode::PROTOCOL_ERROR,
                        _ => ReasonCode::MALFORMED_PACKET,
                    };
                    self.violation(reason, e.to_string());
                }
            }
        }
        if self.state != State::Closed {
            // keep the unprocessed tail in the same allocation (no copy of the whole buffer)
            buffer.drain(..consumed);
            self.buffer = buffer;
        }
    }

    /// Whether the driver should read more bytes now. `false` while a CONNECT awaits its
    /// decision: pipelined packets are not processed before CONNACK [MQTT-3.1.4-7], so reading
    /// on would only buffer them.
    pub fn wants_input(&self) -> bool {
        self.state != State::Authenticating
    }

    fn handle_packet(&mut self, packet: Packet<'_>) {
        match (self.state, packet) {
            (State::AwaitingConnect, Packet::Connect(c)) => self.on_connect(c),
            (State::AwaitingConnect, _) => {
                // [MQTT-3.1.0-1] the first packet must be CONNECT
                self.finish(
                    CloseReason::ProtocolViolation(
                        ReasonCode::PROTOCOL_ERROR,
                        "first packet was not CONNECT [MQTT-3.1.0-1]".into(),
                    ),
                    false,
                );
            }
            (_, Packet::Connect(_)) => {
                self.violation(
                    ReasonCode::PROTOCOL_ERROR,
                    "second CONNECT [MQTT-3.1.0-2]".into(),
                );
            }
            // never reached: handle_bytes does not decode while a CONNECT awaits its answer
            (State::Authenticating, _) => {}
            (State::Connected, p) => self.on_connected_packet(p),
            (State::Closed, _) => {}
        }
    }

    /// The transport closed (EOF or error) without a DISCONNECT: the will is due.
    pub fn handle_connection_lost(&mut self) {
        self.finish(CloseReason::ConnectionLost, true);
    }

    /// Closes the connection from the broker side with `reason` (v5 DISCONNECT; v3.1.1 close).
    pub fn close(&mut self, reason: ReasonCode, reason_string: Option<&str>) {
        if self.state == State::Connected {
            self.send_disconnect(reason, reason_string);
        }
        self.finish(CloseReason::ServerClosed(reason), true);
    }

    fn on_connected_packet(&mut self, p: Packet<'_>) {
        match p {
            Packet::Publish(p) => self.on_publish(p),
            Packet::Pubrel(a) => {
                // [MQTT-4.3.3-?] answer PUBREL with PUBCOMP; unknown ids get 0x92 in v5
                let known = self.awaiting_pubrel.remove(&a.packet_id.get());
                let reason = if known || self.protocol == Protocol::V311 {
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
                };
                self.send(&Packet::Pubcomp(Ack {
                    packet_id: a.packet_id,
                    reason,
                    properties: Properties::default(),
                }));
            }
            Packet::Subscribe(s) => {
                let filters = s
                    .filters
                    .iter()
                    .map(|(f, o)| {
                        (
                            SubscriptionFilter::parse_with_limit(f, self.config.max_topic_levels)
                                .map_err(|e| e.to_string()),
                            *o,
                        )
                    })
                    .collect();
                self.events.push_back(Event::Subscribe {
                    packet_id: s.packet_id,
                    filters,
                    subscription_id: s.properties.subscription_identifiers.first().copied(),
                });
            }
            Packet::Unsubscribe(u) => self.events.push_back(Event::Unsubscribe {
                packet_id: u.packet_id,
                filters: u.filters.iter().map(|f| (*f).to_owned()).collect(),
            }),
            Packet::Pingreq => self.send(&Packet::Pingresp),
            Packet::Disconnect(d) => {
                if let Some(e) = d.properties.session_expiry_interval {
                    if self.requested_expiry == 0 && e != 0 {
                        return self.violation(
                            ReasonCode::PROTOCOL_ERROR,
                            "session expiry set on DISCONNECT after 0 on CONNECT [MQTT-3.14.2-2]"
                                .into(),
                        );
                    }
                    self.session_expiry = e.min(self.config.max_session_expiry);
                }
                // [MQTT-3.14.4-3] no will after a normal disconnect; v5 0x04 asks for it
                let will = d.reason == ReasonCode::DISCONNECT_WITH_WILL;
                self.finish(CloseReason::ClientDisconnect(d.reason), will);
            }
            Packet::Auth(a) if self.protocol == Protocol::V5 => self.on_auth(a),
            ack @ (Packet::Puback(_) | Packet::Pubrec(_) | Packet::Pubcomp(_)) => {
                if let Err(why) = self
                    .outbound
                    .on_ack(&ack, self.protocol, &mut self.transmit)
                {
                    self.violation(ReasonCode::PROTOCOL_ERROR, why);
                }
            }
            other => {
                let t = other.packet_type();
                self.violation(
                    ReasonCode::PROTOCOL_ERROR,
                    format!("packet type {t} may not be sent by a client"),
                );
            }
        }
    }

    fn on_publish(&mut self, p: crate::mqtt::Publish<'_>) {
        let topic = match (p.topic.is_empty(), p.properties.topic_alias) {
            (_, Some(alias))
                if alias > self.config.topic_alias_maximum || self.protocol == Protocol::V311 =>
            {
                return self.violation(
                    ReasonCode::TOPIC_ALIAS_INVALID,
                    format!("topic alias {alias} is above the maximum"),
                );
            }
            (true, Some(alias)) => match self.topic_aliases.as_ref().and_then(|m| m.get(&alias)) {
                Some(t) => t.clone(),
                None => {
                    return self.violation(
                        ReasonCode::PROTOCOL_ERROR,
                        format!("unknown topic alias {alias}"),
                    )
                }
            },
            (true, None) => {
                return self.violation(
                    ReasonCode::TOPIC_NAME_INVALID,
                    "empty topic name without an alias".into(),
                )
            }
            (false, alias) => {
                match TopicName::parse_with_limit(p.topic, self.config.max_topic_levels) {
                    Ok(t) => {
                        if let Some(a) = alias {
                            self.topic_aliases
                                .get_or_insert_with(Default::default)
                                .insert(a, t.clone());
                        }
                        t
                    }
                    Err(e) => return self.violation(ReasonCode::TOPIC_NAME_INVALID, e.to_string()),
                }
            }
        };
        if let Some(id) = p.packet_id {
            if p.qos == QoS::ExactlyOnce && self.awaiting_pubrel.contains(&id.get()) {
                // a retransmission of a QoS 2 PUBLISH we already accepted: PUBREC again,
                // deliver once [MQTT-4.3.3-9]
                self.send(&Packet::Pubrec(Ack {
                    packet_id: id,
                    reason: ReasonCode::SUCCESS,
                    properties: Properties::default(),
                }));
                return;
            }
            // Receive Maximum exists in MQTT 5 only; a 3.1.1 client may pipeline freely (the
            // driver acknowledges each PUBLISH as soon as it is routed)
            // a QoS 2 PUBLISH counts until its PUBCOMP, i.e. while it awaits PUBREL
            if self.protocol == Protocol::V5
                && !self.inbound_unacked.contains(&id.get())
                && self.inbound_unacked.len() + self.awaiting_pubrel.len()
                    >= usize::from(self.config.receive_maximum)
            {
                return self.violation(
                    ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                    "receive maximum exceeded [MQTT-3.3.4-9]".into(),
                );
            }
            self.inbound_unacked.insert(id.get());
        }
        self.events.push_back(Event::Publish {
            message: Message {
                topic,
                payload: p.payload.to_vec(),
                qos: p.qos,
                retain: p.retain,
                expiry: p.properties.message_expiry_interval,
                forwarded: forwarded(&p.properties),
            },
            packet_id: p.packet_id,
        });
    }

    /// Acknowledges a QoS 1/2 PUBLISH: PUBACK or PUBREC with `reason` (v5; 0x87 when the ACL
    /// refused it). v3.1.1 always acknowledges with success.
    pub fn ack_publish(&mut self, packet_id: PacketId, qos: QoS, reason: ReasonCode) {
        if self.state != State::Connected || !self.inbound_unacked.remove(&packet_id.get()) {
            return;
        }
        let reason = if self.protocol == Protocol::V5 {
            reason
        } else {
            ReasonCode::SUCCESS
        };
        let ack = Ack {
            packet_id,
            reason,
            properties: Properties::default(),
        };
        match qos {
            QoS::AtLeastOnce => self.send(&Packet::Puback(ack)),
            QoS::ExactlyOnce => {
                if !reason.is_error() {
                    self.awaiting_pubrel.insert(packet_id.get());
                }
                self.send(&Packet::Pubrec(ack));
            }
            QoS::AtMostOnce => {}
        }
    }

    /// Answers a SUBSCRIBE with one reason code per filter (v3.1.1: errors become 0x80).
    pub fn ack_subscribe(&mut self, packet_id: PacketId, reasons: Vec<ReasonCode>) {
        let reasons = match self.protocol {
            Protocol::V5 => reasons,
            Protocol::V311 => reasons
                .into_iter()
                .map(|r| if r.is_error() { ReasonCode(0x80) } else { r })
                .collect(),
        };
        self.send(&Packet::Suback(SubAck {
            packet_id,
            properties: Properties::default(),
            reasons,
        }));
    }

    /// Answers an UNSUBSCRIBE (reason codes are sent to v5 clients only).
    pub fn ack_unsubscribe(&mut self, packet_id: PacketId, reasons: Vec<ReasonCode>) {
        self.send(&Packet::Unsuback(SubAck {
            packet_id,
            properties: Properties::default(),
            reasons,
        }));
    }

    /// Offers a message to this client (see [`Deliver`] for the outcomes).
    pub fn deliver(&mut self, delivery: Delivery) -> Deliver {
        if self.state != State::Connected {
            return Deliver::QueueFull;
        }
        self.outbound
            .deliver(delivery, self.protocol, &mut self.transmit)
    }

    /// QoS 1/2 messages waiting behind the inflight window, and messages in flight.
    pub fn backlog(&self) -> (usize, usize) {
        (self.outbound.queued(), self.outbound.inflight())
    }

    /// Bytes (topics and payloads) of the QoS 1/2 messages queued behind the window.
    pub fn queued_bytes(&self) -> usize {
        self.outbound.queued_bytes()
    }

    /// Messages sent but not acknowledged, and queued ones: what a persistent session keeps.
    pub fn unacknowledged(&self) -> impl Iterator<Item = &Delivery> {
        self.outbound.unacknowledged()
    }

    /// Frees the buffers a burst left behind when they are empty (call when the connection
    /// turns quiet): an idle connection then holds no heap memory here.
    pub fn release_memory(&mut self) {
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
        if self.buffer.is_empty() {
            self.buffer = Vec::new();
        }
        if self.transmit.is_empty() {
            self.transmit = Vec::new();
        }
        self.outbound.release_memory();
    }

    /// The Session Expiry Interval in force (seconds): granted at CONNECT, possibly changed
    /// by the client's DISCONNECT. 0 means the session ends with the connection.
    pub fn session_expiry(&self) -> u32 {
        self.session_expiry
    }

    /// Moves out the protocol state a persistent session keeps (call once closed).
    pub fn take_stored(&mut self) -> StoredSession {
        StoredSession {
            outbound: self.outbound.take(),
            awaiting_pubrel: std::mem::take(&mut self.awaiting_pubrel),
        }
    }

    /// Sends a v5 AUTH packet (e.g. success 0x00 after a re-authentication).
    pub fn send_auth(&mut self, reason: ReasonCode, method: &str) {
        if self.protocol == Protocol::V5 && self.state == State::Connected {
            let properties = Properties {
                authentication_method: Some(method),
                ..Properties::default()
            };
            self.send(&Packet::Auth(ReasonPacket { reason, properties }));
        }
    }
}
