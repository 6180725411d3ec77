//! The MQTT client side, sans-IO: one [`ClientSession`] per logical client, across any number
//! of connections. The adapter (the browser package over a WebSocket, a test over a byte
//! buffer) opens a connection, calls [`ClientSession::connect`], feeds received bytes to
//! [`ClientSession::handle_bytes`], writes [`ClientSession::take_outgoing`], calls
//! [`ClientSession::handle_timeout`] at [`ClientSession::next_timeout`], and reads
//! [`ClientSession::poll_event`]. Time is passed in (milliseconds).
//!
//! What it keeps across connections, so a reconnect loses nothing:
//! - the subscriptions asked for (re-sent when the server has no session, Session Present 0);
//! - unacknowledged QoS 1/2 publishes, resent with DUP on a resumed session
//!   [MQTT-4.4.0-1] or as new publishes on a fresh one;
//! - publishes made while offline, in a bounded queue ([`ClientConfig::max_queued`]).
//!
//! Flow control: no more QoS 1/2 publishes in flight than the server's Receive Maximum
//! [MQTT-4.9.0-2]. Inbound: QoS 2 delivered exactly once (ids awaiting PUBREL), topic
//! aliases resolved (up to [`ClientConfig::topic_alias_maximum`]), keep-alive PINGREQs.
//! Outbound: a topic published again on the same connection goes as its topic alias alone,
//! within the server's Topic Alias Maximum.
//!
//! Token refresh: [`ClientSession::reauthenticate`] sends MQTT 5 AUTH (Re-authenticate 0x19,
//! method `cloudsignal-token`) on the open connection; when that is impossible (MQTT 3.1.1)
//! it says so and the adapter reconnects with the new token, resuming the session.

mod schedule;
#[cfg(test)]
mod tests;
mod vecmap;

pub use schedule::{Backoff, RefreshPlan};

use crate::mqtt::{
    self, Ack, Connect, DecodeError, Packet, PacketId, Properties, Protocol, Publish, QoS,
    ReasonCode, ReasonPacket, SubAck, Subscribe, SubscriptionOptions, Unsubscribe,
};
use crate::session::Millis;
use crate::topic::{SubscriptionFilter, TopicName};
use std::collections::VecDeque;
use vecmap::VecMap;

/// The AUTH method CloudSignal brokers accept for token re-authentication.
pub const TOKEN_AUTH_METHOD: &str = "cloudsignal-token";

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Client identifier; keep it stable so the session can be resumed.
    pub client_id: String,
    /// Protocol version to speak. Default MQTT 5.
    pub protocol: Protocol,
    /// Keep-alive in seconds (0 disables). Default 30.
    pub keep_alive: u16,
    /// Session Expiry Interval asked for (v5), seconds; > 0 lets a reconnect resume the
    /// session. Default 300. (v3.1.1: Clean Session 0 when > 0.)
    pub session_expiry: u32,
    /// How many QoS 1/2 publishes the server may have in flight to us. Default 64.
    pub receive_maximum: u16,
    /// Topic aliases the server may use towards us. Default 32.
    pub topic_alias_maximum: u16,
    /// Send repeated topics as topic aliases, as many as the server's Topic Alias Maximum
    /// allows (v5). Default true.
    pub outbound_topic_aliases: bool,
    /// Largest packet accepted from the server. Default 1 MiB.
    pub max_packet_size: u32,
    /// Publishes kept while offline (or over the server's flow-control window). Default 1000.
    pub max_queued: usize,
}

impl ClientConfig {
    /// Defaults for `client_id`.
    pub fn new(client_id: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            protocol: Protocol::V5,
            keep_alive: 30,
            session_expiry: 300,
            receive_maximum: 64,
            topic_alias_maximum: 32,
            outbound_topic_aliases: true,
            max_packet_size: 1 << 20,
            max_queued: 1000,
        }
    }
}

/// Why a close happened, from the client's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// Reconnect (with a fresh token if needed): network loss, keep-alive timeout, token
    /// expired (0xA0), server shutting down or busy, session taken over.
    Retry,
    /// Do not retry without a change: revoked (0x98), not authorized (0x87), bad
    /// credentials (0x86), banned (0x8A), bad authentication method, protocol errors.
    Fatal,
}

/// Classifies a server's reason code.
pub fn close_kind(reason: ReasonCode) -> CloseKind {
    match reason.0 {
        // token expired, server busy/shutting down/unavailable, keep-alive, takeover, rate,
        // quota, connection rate, max connect time, normal disconnection
        0x00 | 0x04 | 0x88 | 0x89 | 0x8B | 0x8D | 0x8E | 0x96 | 0x97 | 0x9C | 0x9D | 0x9F
        | 0xA0 | 0xA1 => CloseKind::Retry,
        _ => CloseKind::Fatal,
    }
}

/// What the client tells its adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// CONNACK success.
    Connected {
        /// The server resumed our session.
        session_present: bool,
    },
    /// A message arrived.
    Message {
        /// Topic (aliases resolved).
        topic: String,
        /// Payload.
        payload: Vec<u8>,
        /// QoS it was delivered with.
        qos: QoS,
        /// Retained.
        retain: bool,
    },
    /// A SUBACK result for one filter.
    Subscribed {
        /// The filter.
        filter: String,
        /// Granted QoS, or the server's refusal (e.g. 0x87 not authorized).
        result: Result<QoS, ReasonCode>,
    },
    /// An UNSUBACK for one filter.
    Unsubscribed {
        /// The filter.
        filter: String,
    },
    /// A QoS 1/2 publish of ours was acknowledged (PUBACK/PUBCOMP), or refused.
    Delivered {
        /// The publish's topic.
        topic: String,
        /// `Ok` or the server's reason.
        result: Result<(), ReasonCode>,
    },
    /// Re-authentication succeeded: the new token is in force.
    Reauthenticated,
    /// The connection ended. The session (subscriptions, unacknowledged publishes, queue) is
    /// kept; connect again to resume, unless `kind` is [`CloseKind::Fatal`].
    Disconnected {
        /// The server's reason (CONNACK or DISCONNECT), or `None` when the network failed.
        reason: Option<ReasonCode>,
        /// The server's reason string, if it sent one.
        reason_string: Option<String>,
        /// Whether to retry.
        kind: CloseKind,
    },
}

/// A caller mistake, refused before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The topic or filter is not valid [MQTT-4.7].
    #[error("invalid topic: {0}")]
    Topic(String),
    /// The offline queue is full.
    #[error("the offline queue is full ({0} messages)")]
    QueueFull(usize),
    /// The call needs an open connection in another state.
    #[error("not possible in the current state")]
    State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Offline,
    Connecting,
    Connected,
}

/// A publish we own until it is acknowledged.
#[derive(Debug, Clone)]
struct Outgoing {
    topic: String,
    payload: Vec<u8>,
    qos: QoS,
    retain: bool,
    /// QoS 2: PUBREC received, PUBREL sent, awaiting PUBCOMP.
    released: bool,
}

/// One client's MQTT session, across connections.
#[derive(Debug)]
pub struct ClientSession {
    config: ClientConfig,
    state: State,
    protocol: Protocol,
    out: Vec<u8>,
    inbuf: Vec<u8>,
    events: VecDeque<ClientEvent>,
    next_id: u16,
    /// QoS 1/2 publishes sent and not yet complete, by packet id, in send order.
    inflight: VecMap<u16, Outgoing>,
    /// Waiting for a connection or for flow-control room.
    queue: VecDeque<Outgoing>,
    /// Inbound QoS 2 ids awaiting PUBREL (exactly-once).
    awaiting_pubrel: Vec<u16>,
    /// Subscriptions asked for: filter → QoS.
    subscriptions: VecMap<String, QoS>,
    pending_subs: VecMap<u16, Vec<String>>,
    pending_unsubs: VecMap<u16, Vec<String>>,
    aliases: VecMap<u16, String>,
    /// Topic aliases we assigned on this connection: topic → alias.
    out_aliases: VecMap<String, u16>,
    /// The server's Topic Alias Maximum on this connection (0: no aliases).
    server_alias_max: u16,
    server_receive_max: u16,
    keep_alive_ms: Millis,
    last_sent: Millis,
    ping_sent: Option<Millis>,
    reauth_pending: bool,
    has_session: bool,
}

impl ClientSession {
    /// A session that has never connected.
    pub fn new(config: ClientConfig) -> Self {
        Self {
            protocol: config.protocol,
            config,
            state: State::Offline,
            out: Vec::new(),
            inbuf: Vec::new(),
            events: VecDeque::new(),
            next_id: 0,
            inflight: VecMap::default(),
            queue: VecDeque::new(),
            awaiting_pubrel: Vec::new(),
            subscriptions: VecMap::default(),
            pending_subs: VecMap::default(),
            pending_unsubs: VecMap::default(),
            aliases: VecMap::default(),
            out_aliases: VecMap::default(),
            server_alias_max: 0,
            server_receive_max: u16::MAX,
            keep_alive_ms: 0,
            last_sent: 0,
            ping_sent: None,
            reauth_pending: false,
            has_session: false,
        }
    }

    /// The protocol version in use.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Falls back to MQTT 3.1.1 for the following connections (after a server answered a v5
    /// CONNECT with "unsupported protocol version").
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
    }

    /// Whether CONNACK has been received on the current connection.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Publishes waiting (offline or over the flow-control window) plus those in flight.
    pub fn pending_publishes(&self) -> usize {
        self.queue.len() + self.inflight.len()
    }

    /// Starts a connection (the transport is open): queues CONNECT with these credentials.
    pub fn connect(&mut self, username: &str, password: &str, now: Millis) {
        self.inbuf.clear();
        self.out.clear();
        self.aliases.clear();
        self.ping_sent = None;
        self.reauth_pending = false;
        self.state = State::Connecting;
        let v5 = self.protocol == Protocol::V5;
        let properties = if v5 {
            Properties {
                session_expiry_interval: Some(self.config.session_expiry),
                receive_maximum: Some(self.config.receive_maximum),
                topic_alias_maximum: Some(self.config.topic_alias_maximum),
                maximum_packet_size: Some(self.config.max_packet_size),
                authentication_method: Some(TOKEN_AUTH_METHOD),
                ..Properties::default()
            }
        } else {
            Properties::default()
        };
        let clean_start = if v5 {
            !self.has_session
        } else {
            self.config.session_expiry == 0
        };
        let client_id = self.config.client_id.clone();
        self.send(
            &Packet::Connect(Connect {
                protocol: self.protocol,
                clean_start,
                keep_alive: self.config.keep_alive,
                properties,
                client_id: &client_id,
                will: None,
                username: Some(username),
                password: Some(password.as_bytes()),
            }),
            now,
        );
    }

    /// The transport closed without a DISCONNECT from the server.
    pub fn connection_lost(&mut self, now: Millis) {
        let _ = now;
        if self.state != State::Offline {
            self.close(None, None, CloseKind::Retry);
        }
    }

    /// Sends DISCONNECT (normal) and ends the session on the server (expiry 0).
    pub fn disconnect(&mut self, now: Millis) {
        if self.state == State::Connected {
            let properties = if self.protocol == Protocol::V5 {
                Properties {
                    session_expiry_interval: Some(0),
                    ..Properties::default()
                }
            } else {
                Properties::default()
            };
            self.send(
                &Packet::Disconnect(ReasonPacket {
                    reason: ReasonCode::SUCCESS,
                    properties,
                }),
                now,
            );
        }
        self.has_session = false;
        self.state = State::Offline;
    }

    /// Re-authenticates with a new token on the open connection (MQTT 5 AUTH 0x19). `false`
    /// when that is not possible (not connected, MQTT 3.1.1): reconnect with the token.
    pub fn reauthenticate(&mut self, token: &str, now: Millis) -> bool {
        if self.state != State::Connected || self.protocol != Protocol::V5 {
            return false;
        }
        self.reauth_pending = true;
        self.send(
            &Packet::Auth(ReasonPacket {
                reason: ReasonCode::REAUTHENTICATE,
                properties: Properties {
                    authentication_method: Some(TOKEN_AUTH_METHOD),
                    authentication_data: Some(token.as_bytes()),
                    ..Properties::default()
                },
            }),
            now,
        );
        true
    }

    /// Subscribes (now if connected, else at the next connection).
    pub fn subscribe(&mut self, filter: &str, qos: QoS, now: Millis) -> Result<(), ClientError> {
        SubscriptionFilter::parse(filter).map_err(|e| ClientError::Topic(e.to_string()))?;
        self.subscriptions.insert(filter.to_owned(), qos);
        if self.state == State::Connected {
            self.send_subscribe(vec![(filter.to_owned(), qos)], now);
        }
        Ok(())
    }

    /// Unsubscribes (the subscription is forgotten at once; UNSUBSCRIBE is sent if connected).
    pub fn unsubscribe(&mut self, filter: &str, now: Millis) -> Result<(), ClientError> {
        SubscriptionFilter::parse(filter).map_err(|e| ClientError::Topic(e.to_string()))?;
        self.subscriptions.remove(filter);
        if self.state == State::Connected {
            let id = self.next_packet_id();
            self.pending_unsubs
                .insert(id.get(), vec![filter.to_owned()]);
            self.send(
                &Packet::Unsubscribe(Unsubscribe {
                    packet_id: id,
                    properties: Properties::default(),
                    filters: vec![filter],
                }),
                now,
            );
        }
        Ok(())
    }

    /// Publishes. While offline every message is queued (up to [`ClientConfig::max_queued`])
    /// and sent on the next connection; QoS 1/2 are kept until acknowledged.
    pub fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        now: Millis,
    ) -> Result<(), ClientError> {
        TopicName::parse(topic).map_err(|e| ClientError::Topic(e.to_string()))?;
        let msg = Outgoing {
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            qos,
            retain,
            released: false,
        };
        if self.state == State::Connected && qos == QoS::AtMostOnce {
            self.send_publish(None, &msg, false, now);
            return Ok(());
        }
        if self.queue.len() >= self.config.max_queued {
            return Err(ClientError::QueueFull(self.config.max_queued));
        }
        // offline, QoS 0 is queued too: the bounded queue is the user's buffer
        self.queue.push_back(msg);
        if self.state == State::Connected {
            self.pump(now);
        }
        Ok(())
    }

    /// Bytes to write to the transport (drained).
    pub fn take_outgoing(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The next event for the adapter.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`ClientSession::handle_timeout`] should next run, if anything is scheduled.
    pub fn next_timeout(&self) -> Option<Millis> {
        if self.state != State::Connected || self.keep_alive_ms == 0 {
            return None;
        }
        Some(match self.ping_sent {
            // no PINGRESP within half the keep-alive: the connection is dead
            Some(sent) => sent + self.keep_alive_ms / 2,
            None => self.last_sent + self.keep_alive_ms,
        })
    }

    /// Runs due timers: sends PINGREQ, or declares the connection dead.
    pub fn handle_timeout(&mut self, now: Millis) {
        let Some(due) = self.next_timeout() else {
            return;
        };
        if now < due {
            return;
        }
        if self.ping_sent.is_some() {
            self.close(
                None,
                Some("no PINGRESP: keep-alive timeout".into()),
                CloseKind::Retry,
            );
        } else {
            self.ping_sent = Some(now);
            self.send(&Packet::Pingreq, now);
        }
    }

    /// Feeds bytes received from the server.
    pub fn handle_bytes(&mut self, bytes: &[u8], now: Millis) {
        if self.state == State::Offline {
            return;
        }
        self.inbuf.extend_from_slice(bytes);
        if self.state == State::Connecting && self.protocol == Protocol::V5 {
            if let [0x20, 0x02, _, code, ..] = self.inbuf[..] {
                // a two-byte CONNACK is MQTT 3.1.1's: that broker does not speak 5
                // [MQTT-3.1.2-2] (return code 1, "unacceptable protocol version") or refuses
                // us for another reason, given in 3.1.1's return codes
                self.inbuf.clear();
                let reason = match code {
                    1 => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                    2 => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                    3 => ReasonCode::SERVER_UNAVAILABLE,
                    4 => ReasonCode::BAD_USERNAME_OR_PASSWORD,
                    5 => ReasonCode::NOT_AUTHORIZED,
                    _ => ReasonCode::PROTOCOL_ERROR,
                };
                let kind = if code == 1 {
                    CloseKind::Retry
                } else {
                    close_kind(reason)
                };
                self.close(
                    Some(reason),
                    Some("the broker answered in MQTT 3.1.1".into()),
                    kind,
                );
                return;
            }
        }
        let mut used_total = 0;
        loop {
            let buf = &self.inbuf[used_total..];
            let decoded =
                mqtt::decode_from_server(buf, self.protocol, self.config.max_packet_size as usize);
            match decoded {
                Ok(Some((packet, used))) => {
                    let owned = OwnedPacket::from(packet);
                    used_total += used;
                    self.on_packet(owned, now);
                    if self.state == State::Offline {
                        self.inbuf.clear();
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let reason = match e {
                        DecodeError::UnexpectedPacketType(_) => ReasonCode::PROTOCOL_ERROR,
                        _ => ReasonCode::MALFORMED_PACKET,
                    };
                    self.protocol_error(reason, &e.to_string(), now);
                    return;
                }
            }
        }
        self.inbuf.drain(..used_total);
    }

    fn protocol_error(&mut self, reason: ReasonCode, why: &str, now: Millis) {
        if self.protocol == Protocol::V5 && self.state == State::Connected {
            self.send(
                &Packet::Disconnect(ReasonPacket {
                    reason,
                    properties: Properties::default(),
                }),
                now,
            );
        }
        self.close(Some(reason), Some(why.to_owned()), CloseKind::Retry);
    }

    fn close(
        &mut self,
        reason: Option<ReasonCode>,
        reason_string: Option<String>,
        kind: CloseKind,
    ) {
        self.state = State::Offline;
        self.ping_sent = None;
        self.reauth_pending = false;
        self.pending_subs.clear();
        self.pending_unsubs.clear();
        // unacknowledged publishes stay in `inflight`: resent with DUP if the session resumes,
        // as new publishes if not (see on_connack)
        self.events.push_back(ClientEvent::Disconnected {
            reason,
            reason_string,
            kind,
        });
    }

    fn next_packet_id(&mut self) -> PacketId {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if let Some(id) = PacketId::new(self.next_id) {
                if !self.inflight.contains_key(&id.get())
                    && !self.pending_subs.contains_key(&id.get())
                    && !self.pending_unsubs.contains_key(&id.get())
                {
                    return id;
                }
            }
        }
    }

    fn send(&mut self, packet: &Packet<'_>, now: Millis) {
        packet.encode(self.protocol, &mut self.out);
        self.last_sent = now;
    }

    fn send_publish(&mut self, id: Option<PacketId>, m: &Outgoing, dup: bool, now: Millis) {
        let (send_topic, topic_alias) = self.outbound_alias(&m.topic);
        self.send(
            &Packet::Publish(Publish {
                dup,
                qos: m.qos,
                retain: m.retain,
                topic: if send_topic { &m.topic } else { "" },
                packet_id: id,
                properties: Properties {
                    topic_alias,
                    ..Properties::default()
                },
                payload: &m.payload,
            }),
            now,
        );
    }

    /// Whether to send the topic name, and the alias to send with it: a topic seen on this
    /// connection goes as its alias alone; the first ones get aliases while the server's Topic
    /// Alias Maximum allows [MQTT-3.3.2-9]; the rest go as names.
    fn outbound_alias(&mut self, topic: &str) -> (bool, Option<u16>) {
        if let Some(&alias) = self.out_aliases.get(topic) {
            return (false, Some(alias));
        }
        match u16::try_from(self.out_aliases.len() + 1) {
            Ok(alias) if alias <= self.server_alias_max => {
                self.out_aliases.insert(topic.to_owned(), alias);
                (true, Some(alias))
            }
            _ => (true, None),
        }
    }

    fn send_subscribe(&mut self, filters: Vec<(String, QoS)>, now: Millis) {
        if filters.is_empty() {
            return;
        }
        let id = self.next_packet_id();
        self.pending_subs
            .insert(id.get(), filters.iter().map(|(f, _)| f.clone()).collect());
        let list = filters
            .iter()
            .map(|(f, qos)| {
                (
                    f.as_str(),
                    SubscriptionOptions {
                        qos: *qos,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: 0,
                    },
                )
            })
            .collect();
        self.send(
            &Packet::Subscribe(Subscribe {
                packet_id: id,
                properties: Properties::default(),
                filters: list,
            }),
            now,
        );
    }

    /// Sends queued publishes while the server's Receive Maximum allows.
    fn pump(&mut self, now: Millis) {
        while let Some(front) = self.queue.front() {
            if front.qos != QoS::AtMostOnce
                && self.inflight.len() >= usize::from(self.server_receive_max)
            {
                break;
            }
            let Some(msg) = self.queue.pop_front() else {
                break;
            };
            if msg.qos == QoS::AtMostOnce {
                self.send_publish(None, &msg, false, now);
            } else {
                let id = self.next_packet_id();
                self.send_publish(Some(id), &msg, false, now);
                self.inflight.insert(id.get(), msg);
            }
        }
    }

    fn on_packet(&mut self, packet: OwnedPacket, now: Millis) {
        match packet {
            OwnedPacket::Connack(c) => self.on_connack(c, now),
            _ if self.state != State::Connected => {
                self.protocol_error(ReasonCode::PROTOCOL_ERROR, "packet before CONNACK", now)
            }
            OwnedPacket::Publish(p) => self.on_publish(p, now),
            OwnedPacket::Puback(id, reason) => self.complete(id, reason, now),
            OwnedPacket::Pubrec(id, reason) => {
                if reason.is_error() {
                    self.complete(id, reason, now);
                } else if let Some(m) = self.inflight.get_mut(&id) {
                    m.released = true;
                    self.send_ack(AckKind::Pubrel, id, now);
                } else {
                    // not ours any more: release it anyway so the server can finish
                    self.send_ack(AckKind::Pubrel, id, now);
                }
            }
            OwnedPacket::Pubrel(id) => {
                self.awaiting_pubrel.retain(|&a| a != id);
                self.send_ack(AckKind::Pubcomp, id, now);
            }
            OwnedPacket::Pubcomp(id, reason) => self.complete(id, reason, now),
            OwnedPacket::Suback(id, reasons) => {
                for (filter, reason) in self
                    .pending_subs
                    .remove(&id)
                    .unwrap_or_default()
                    .into_iter()
                    .zip(reasons)
                {
                    let result = match reason.0 {
                        0 => Ok(QoS::AtMostOnce),
                        1 => Ok(QoS::AtLeastOnce),
                        2 => Ok(QoS::ExactlyOnce),
                        _ => {
                            // refused: forget it, or every reconnect would ask again
                            self.subscriptions.remove(&filter);
                            Err(reason)
                        }
                    };
                    self.events
                        .push_back(ClientEvent::Subscribed { filter, result });
                }
            }
            OwnedPacket::Unsuback(id) => {
                for filter in self.pending_unsubs.remove(&id).unwrap_or_default() {
                    self.events.push_back(ClientEvent::Unsubscribed { filter });
                }
            }
            OwnedPacket::Pingresp => self.ping_sent = None,
            OwnedPacket::Disconnect(reason, reason_string) => {
                self.close(Some(reason), reason_string, close_kind(reason));
            }
            OwnedPacket::Auth(reason) => {
                if self.reauth_pending && reason == ReasonCode::SUCCESS {
                    self.reauth_pending = false;
                    self.events.push_back(ClientEvent::Reauthenticated);
                } else {
                    self.protocol_error(ReasonCode::PROTOCOL_ERROR, "unexpected AUTH", now);
                }
            }
            OwnedPacket::Other => self.protocol_error(
                ReasonCode::PROTOCOL_ERROR,
                "unexpected packet from the server",
                now,
            ),
        }
    }

    fn on_connack(&mut self, c: OwnedConnack, now: Millis) {
        let OwnedConnack {
            session_present,
            reason,
            receive_maximum,
            server_keep_alive,
            topic_alias_maximum,
            reason_string,
        } = c;
        if self.state != State::Connecting {
            self.protocol_error(ReasonCode::PROTOCOL_ERROR, "second CONNACK", now);
            return;
        }
        if reason.is_error() {
            self.close(Some(reason), reason_string, close_kind(reason));
            return;
        }
        self.state = State::Connected;
        self.server_receive_max = receive_maximum.unwrap_or(u16::MAX).max(1);
        // topic aliases are per connection [MQTT-3.3.2-7]; none unless the server allows them
        self.out_aliases.clear();
        self.server_alias_max = match self.protocol {
            Protocol::V5 if self.config.outbound_topic_aliases => topic_alias_maximum.unwrap_or(0),
            _ => 0,
        };
        self.keep_alive_ms =
            Millis::from(server_keep_alive.unwrap_or(self.config.keep_alive)) * 1000;
        let resumed = session_present && self.has_session;
        self.has_session = self.config.session_expiry > 0;
        self.events.push_back(ClientEvent::Connected {
            session_present: resumed,
        });
        if resumed {
            // [MQTT-4.4.0-1]: resend unacknowledged PUBLISHes with DUP and their ids, and
            // PUBRELs for QoS 2 messages the server has already received
            let inflight: Vec<(u16, Outgoing)> =
                self.inflight.iter().map(|(k, v)| (*k, v.clone())).collect();
            for (id, m) in inflight {
                let Some(pid) = PacketId::new(id) else {
                    continue;
                };
                if m.released {
                    self.send_ack(AckKind::Pubrel, id, now);
                } else {
                    self.send_publish(Some(pid), &m, true, now);
                }
            }
        } else {
            // a fresh session: the server knows nothing; our unacknowledged messages are
            // still ours to deliver, first, as new publishes; subscriptions are asked again
            self.awaiting_pubrel.clear();
            let unacked: Vec<Outgoing> = self
                .inflight
                .drain_values()
                .map(|mut m| {
                    m.released = false;
                    m
                })
                .collect();
            for m in unacked.into_iter().rev() {
                self.queue.push_front(m);
            }
            let subs: Vec<(String, QoS)> = self
                .subscriptions
                .iter()
                .map(|(f, q)| (f.clone(), *q))
                .collect();
            self.send_subscribe(subs, now);
        }
        self.pump(now);
    }

    fn on_publish(&mut self, p: OwnedPublish, now: Millis) {
        let topic = match (p.topic.is_empty(), p.alias) {
            (_, Some(0)) => {
                return self.protocol_error(ReasonCode::TOPIC_ALIAS_INVALID, "topic alias 0", now)
            }
            (_, Some(a)) if a > self.config.topic_alias_maximum => {
                return self.protocol_error(
                    ReasonCode::TOPIC_ALIAS_INVALID,
                    "topic alias above our maximum",
                    now,
                )
            }
            (false, Some(a)) => {
                self.aliases.insert(a, p.topic.clone());
                p.topic
            }
            (true, Some(a)) => match self.aliases.get(&a) {
                Some(t) => t.clone(),
                None => {
                    return self.protocol_error(
                        ReasonCode::PROTOCOL_ERROR,
                        "unknown topic alias",
                        now,
                    )
                }
            },
            (true, None) => {
                return self.protocol_error(ReasonCode::PROTOCOL_ERROR, "empty topic", now)
            }
            (false, None) => p.topic,
        };
        let deliver = match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) => true,
            (QoS::AtLeastOnce, Some(id)) => {
                self.send_ack(AckKind::Puback, id, now);
                true
            }
            (QoS::ExactlyOnce, Some(id)) => {
                // delivered once: a resent PUBLISH with an id awaiting PUBREL is not new
                let first = !self.awaiting_pubrel.contains(&id);
                if first {
                    if self.protocol == Protocol::V5
                        && self.awaiting_pubrel.len() >= usize::from(self.config.receive_maximum)
                    {
                        // [MQTT-3.3.4-9]: no more unacknowledged QoS 2 than our Receive Maximum
                        return self.protocol_error(
                            ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                            "more QoS 2 publishes in flight than the Receive Maximum",
                            now,
                        );
                    }
                    self.awaiting_pubrel.push(id);
                }
                self.send_ack(AckKind::Pubrec, id, now);
                first
            }
            _ => return self.protocol_error(ReasonCode::PROTOCOL_ERROR, "QoS > 0 without id", now),
        };
        if deliver {
            self.events.push_back(ClientEvent::Message {
                topic,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
            });
        }
    }

    fn complete(&mut self, id: u16, reason: ReasonCode, now: Millis) {
        if let Some(m) = self.inflight.remove(&id) {
            let result = if reason.is_error() {
                Err(reason)
            } else {
                Ok(())
            };
            self.events.push_back(ClientEvent::Delivered {
                topic: m.topic,
                result,
            });
        }
        self.pump(now);
    }

    fn send_ack(&mut self, kind: AckKind, id: u16, now: Millis) {
        let Some(packet_id) = PacketId::new(id) else {
            return;
        };
        let ack = Ack {
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        };
        let packet = match kind {
            AckKind::Puback => Packet::Puback(ack),
            AckKind::Pubrec => Packet::Pubrec(ack),
            AckKind::Pubrel => Packet::Pubrel(ack),
            AckKind::Pubcomp => Packet::Pubcomp(ack),
        };
        self.send(&packet, now);
    }
}

#[derive(Debug, Clone, Copy)]
enum AckKind {
    Puback,
    Pubrec,
    Pubrel,
    Pubcomp,
}

/// A received PUBLISH, owned.
#[derive(Debug)]
struct OwnedPublish {
    topic: String,
    alias: Option<u16>,
    payload: Vec<u8>,
    qos: QoS,
    retain: bool,
    packet_id: Option<u16>,
}

/// What the client uses of a CONNACK.
#[derive(Debug)]
struct OwnedConnack {
    session_present: bool,
    reason: ReasonCode,
    receive_maximum: Option<u16>,
    server_keep_alive: Option<u16>,
    topic_alias_maximum: Option<u16>,
    reason_string: Option<String>,
}

/// The parts of server packets the client uses, owned (the input buffer is reused).
#[derive(Debug)]
enum OwnedPacket {
    Connack(OwnedConnack),
    Publish(OwnedPublish),
    Puback(u16, ReasonCode),
    Pubrec(u16, ReasonCode),
    Pubrel(u16),
    Pubcomp(u16, ReasonCode),
    Suback(u16, Vec<ReasonCode>),
    Unsuback(u16),
    Pingresp,
    Disconnect(ReasonCode, Option<String>),
    Auth(ReasonCode),
    Other,
}

impl From<Packet<'_>> for OwnedPacket {
    fn from(p: Packet<'_>) -> Self {
        let reason_string = |props: &Properties<'_>| props.reason_string.map(str::to_owned);
        match p {
            Packet::Connack(c) => Self::Connack(OwnedConnack {
                session_present: c.session_present,
                reason: c.reason,
                receive_maximum: c.properties.receive_maximum,
                server_keep_alive: c.properties.server_keep_alive,
                topic_alias_maximum: c.properties.topic_alias_maximum,
                reason_string: reason_string(&c.properties),
            }),
            Packet::Publish(p) => Self::Publish(OwnedPublish {
                topic: p.topic.to_owned(),
                alias: p.properties.topic_alias,
                payload: p.payload.to_vec(),
                qos: p.qos,
                retain: p.retain,
                packet_id: p.packet_id.map(PacketId::get),
            }),
            Packet::Puback(a) => Self::Puback(a.packet_id.get(), a.reason),
            Packet::Pubrec(a) => Self::Pubrec(a.packet_id.get(), a.reason),
            Packet::Pubrel(a) => Self::Pubrel(a.packet_id.get()),
            Packet::Pubcomp(a) => Self::Pubcomp(a.packet_id.get(), a.reason),
            Packet::Suback(SubAck {
                packet_id, reasons, ..
            }) => Self::Suback(packet_id.get(), reasons),
            Packet::Unsuback(s) => Self::Unsuback(s.packet_id.get()),
            Packet::Pingresp => Self::Pingresp,
            Packet::Disconnect(d) => Self::Disconnect(d.reason, reason_string(&d.properties)),
            Packet::Auth(a) => Self::Auth(a.reason),
            _ => Self::Other,
        }
    }
}
