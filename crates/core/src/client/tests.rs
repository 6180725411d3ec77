//! The client against core's real server session, byte for byte, in memory: the same state
//! machine the broker runs, so these are protocol conversations, not mocks of one. They run
//! natively and, in wasm32, in headless Chromium: the browser package's logic on its target.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::session::{Delivery, Event, Message, ServerConfig, ServerSession, StoredSession};
use std::sync::Arc;

const T: Millis = 1_000_000;

/// A client and a server session joined by a byte pipe, with the broker's decisions made here.
struct Pair {
    client: ClientSession,
    server: ServerSession,
    /// Every server-side event, for assertions.
    seen: Vec<Event>,
    /// Ack client publishes (a broker would; off to keep them in flight).
    ack_publishes: bool,
    /// SUBACK reason for each filter.
    sub_reason: ReasonCode,
    /// Echo client publishes back (as if subscribed to everything).
    echo: bool,
}

impl Pair {
    fn new(config: ClientConfig, server: ServerConfig) -> Self {
        Self {
            client: ClientSession::new(config),
            server: ServerSession::new(server, T),
            seen: Vec::new(),
            ack_publishes: true,
            sub_reason: ReasonCode::GRANTED_QOS_1,
            echo: true,
        }
    }

    fn v5() -> Self {
        Self::new(ClientConfig::new("c1"), ServerConfig::default())
    }

    /// Moves bytes both ways and lets the "broker" act until nothing moves.
    fn run(&mut self, resumed: &mut Option<StoredSession>) {
        for _ in 0..50 {
            let up = self.client.take_outgoing();
            if !up.is_empty() {
                self.server.handle_bytes(&up, T);
            }
            while let Some(ev) = self.server.poll_event() {
                self.seen.push(ev.clone());
                match ev {
                    Event::Connect(_) => self.server.accept(T, resumed.take(), None, false, 0),
                    Event::Publish { message, packet_id } => {
                        if let (Some(id), true) = (packet_id, self.ack_publishes) {
                            self.server
                                .ack_publish(id, message.qos, ReasonCode::SUCCESS);
                        }
                        if self.echo {
                            let qos = message.qos;
                            self.server.deliver(Delivery {
                                message: Arc::new(message),
                                qos,
                                retain: false,
                                subscription_ids: Vec::new(),
                                expiry: None,
                            });
                        }
                    }
                    Event::Subscribe {
                        packet_id, filters, ..
                    } => {
                        let reasons = filters.iter().map(|_| self.sub_reason).collect();
                        self.server.ack_subscribe(packet_id, reasons);
                    }
                    Event::Unsubscribe { packet_id, filters } => self.server.ack_unsubscribe(
                        packet_id,
                        filters.iter().map(|_| ReasonCode::SUCCESS).collect(),
                    ),
                    Event::Auth { .. } | Event::Closed { .. } => {}
                }
            }
            let mut down = Vec::new();
            while let Some(b) = self.server.poll_transmit() {
                down.extend(b);
            }
            if up.is_empty() && down.is_empty() {
                return;
            }
            if !down.is_empty() {
                self.client.handle_bytes(&down, T);
            }
        }
        panic!("the conversation did not settle");
    }

    fn events(&mut self) -> Vec<ClientEvent> {
        std::iter::from_fn(|| self.client.poll_event()).collect()
    }

    /// The reason of the one event pending, which must be a disconnect.
    fn closed_with(&mut self) -> Option<ReasonCode> {
        match self.events().as_slice() {
            [ClientEvent::Disconnected { reason, .. }] => *reason,
            other => panic!("expected a disconnect, got {other:?}"),
        }
    }

    fn connect(&mut self, resumed: Option<StoredSession>) -> Vec<ClientEvent> {
        self.client.connect("alice@org_k7xm4pqr2n5t", "tkn_x", T);
        let mut r = resumed;
        self.run(&mut r);
        self.events()
    }

    /// A new server session (the old connection is gone), as after a reconnect.
    fn new_connection(&mut self) {
        self.server = ServerSession::new(ServerConfig::default(), T);
        self.seen.clear();
    }
}

fn message(topic: &str, payload: &[u8], qos: QoS) -> ClientEvent {
    ClientEvent::Message {
        topic: topic.into(),
        payload: payload.to_vec(),
        qos,
        retain: false,
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn connect_subscribe_and_round_trip_every_qos() {
    let mut p = Pair::v5();
    assert_eq!(
        p.connect(None),
        [ClientEvent::Connected {
            session_present: false
        }]
    );
    let Some(Event::Connect(req)) = p.seen.first() else {
        panic!()
    };
    assert_eq!(
        req.auth_method.as_deref(),
        Some(TOKEN_AUTH_METHOD),
        "CONNECT names the AUTH method so AUTH may follow"
    );
    assert_eq!(req.password.as_deref(), Some(&b"tkn_x"[..]));
    assert_eq!(req.session_expiry, 300);
    p.client
        .subscribe("users/alice/#", QoS::AtLeastOnce, T)
        .unwrap();
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        p.client
            .publish("users/alice/n", &[i as u8], qos, false, T)
            .unwrap();
    }
    p.run(&mut None);
    let events = p.events();
    assert_eq!(
        events[0],
        ClientEvent::Subscribed {
            filter: "users/alice/#".into(),
            result: Ok(QoS::AtLeastOnce)
        }
    );
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        assert!(
            events.contains(&message("users/alice/n", &[i as u8], qos)),
            "{qos:?}: {events:?}"
        );
    }
    let delivered = events
        .iter()
        .filter(|e| matches!(e, ClientEvent::Delivered { result: Ok(()), .. }))
        .count();
    assert_eq!(delivered, 2, "QoS 1 and 2 acknowledged");
    assert_eq!(p.client.pending_publishes(), 0);
    assert!(
        p.server.backlog() == (0, 0),
        "every delivery to the client was acknowledged"
    );
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn reauthentication_over_the_open_connection() {
    let mut p = Pair::v5();
    p.connect(None);
    assert!(p.client.reauthenticate("tkn_new", T));
    p.run(&mut None);
    let auth = p.seen.iter().find_map(|e| match e {
        Event::Auth {
            reason,
            method,
            data,
        } => Some((*reason, method.clone(), data.clone())),
        _ => None,
    });
    assert_eq!(
        auth,
        Some((
            ReasonCode::REAUTHENTICATE,
            Some(TOKEN_AUTH_METHOD.into()),
            Some(b"tkn_new".to_vec())
        ))
    );
    p.server.send_auth(ReasonCode::SUCCESS, TOKEN_AUTH_METHOD);
    p.run(&mut None);
    assert_eq!(p.events(), [ClientEvent::Reauthenticated]);
    // MQTT 3.1.1 cannot: the adapter must reconnect instead
    let mut v3 = Pair::new(
        ClientConfig {
            protocol: Protocol::V311,
            ..ClientConfig::new("c3")
        },
        ServerConfig::default(),
    );
    v3.connect(None);
    assert!(v3.client.is_connected());
    assert!(!v3.client.reauthenticate("tkn_new", T));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_resumed_session_gets_unacknowledged_publishes_again_with_dup() {
    let mut p = Pair::v5();
    p.connect(None);
    p.ack_publishes = false;
    p.echo = false;
    p.client
        .publish("users/alice/a", b"1", QoS::AtLeastOnce, false, T)
        .unwrap();
    p.client
        .publish("users/alice/b", b"2", QoS::ExactlyOnce, false, T)
        .unwrap();
    p.run(&mut None);
    assert_eq!(p.client.pending_publishes(), 2);
    p.client.connection_lost(T);
    assert!(matches!(
        p.events().as_slice(),
        [ClientEvent::Disconnected {
            reason: None,
            kind: CloseKind::Retry,
            ..
        }]
    ));
    p.new_connection();
    p.ack_publishes = true;
    let events = p.connect(Some(StoredSession::new()));
    assert_eq!(
        events[0],
        ClientEvent::Connected {
            session_present: true
        }
    );
    assert!(matches!(p.seen.first(), Some(Event::Connect(c)) if !c.clean_start));
    let resent: Vec<_> = p
        .seen
        .iter()
        .filter_map(|e| match e {
            Event::Publish { message, packet_id } => {
                Some((message.topic.as_str().to_owned(), *packet_id))
            }
            _ => None,
        })
        .collect();
    assert_eq!(resent.len(), 2, "{resent:?}");
    assert_eq!(
        resent[0].1.map(PacketId::get),
        Some(1),
        "original packet ids"
    );
    assert_eq!(p.client.pending_publishes(), 0);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_fresh_session_resubscribes_and_replays_as_new_publishes() {
    let mut p = Pair::v5();
    p.connect(None);
    p.client
        .subscribe("users/alice/#", QoS::AtLeastOnce, T)
        .unwrap();
    p.ack_publishes = false;
    p.echo = false;
    p.client
        .publish("users/alice/a", b"1", QoS::AtLeastOnce, false, T)
        .unwrap();
    p.run(&mut None);
    p.client.connection_lost(T);
    // offline: publishes queue up
    p.client
        .publish("users/alice/b", b"2", QoS::AtLeastOnce, false, T)
        .unwrap();
    p.client
        .publish("users/alice/c", b"3", QoS::AtMostOnce, false, T)
        .unwrap();
    p.events();
    p.new_connection();
    p.ack_publishes = true;
    let events = p.connect(None); // the server lost the session: Session Present 0
    assert_eq!(
        events[0],
        ClientEvent::Connected {
            session_present: false
        }
    );
    let subscribed = p
        .seen
        .iter()
        .any(|e| matches!(e, Event::Subscribe { filters, .. } if filters.len() == 1));
    assert!(subscribed, "subscriptions asked again");
    let topics: Vec<_> = p
        .seen
        .iter()
        .filter_map(|e| match e {
            Event::Publish { message, .. } => Some(message.topic.as_str().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(
        topics,
        ["users/alice/a", "users/alice/b", "users/alice/c"],
        "in order, the unacknowledged one first"
    );
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn the_offline_queue_is_bounded() {
    let mut c = ClientSession::new(ClientConfig {
        max_queued: 2,
        ..ClientConfig::new("c")
    });
    c.publish("t", b"", QoS::AtLeastOnce, false, T).unwrap();
    c.publish("t", b"", QoS::AtLeastOnce, false, T).unwrap();
    assert_eq!(
        c.publish("t", b"", QoS::AtLeastOnce, false, T),
        Err(ClientError::QueueFull(2))
    );
    assert!(matches!(
        c.publish("a/+", b"", QoS::AtMostOnce, false, T),
        Err(ClientError::Topic(_))
    ));
    assert!(matches!(
        c.subscribe("a/#/b", QoS::AtMostOnce, T),
        Err(ClientError::Topic(_))
    ));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn receive_maximum_limits_publishes_in_flight() {
    let mut p = Pair::new(
        ClientConfig::new("c"),
        ServerConfig {
            receive_maximum: 2,
            ..ServerConfig::default()
        },
    );
    p.connect(None);
    p.ack_publishes = false;
    p.echo = false;
    for i in 0..5u8 {
        p.client
            .publish("t", &[i], QoS::AtLeastOnce, false, T)
            .unwrap();
    }
    p.run(&mut None);
    let sent = p
        .seen
        .iter()
        .filter(|e| matches!(e, Event::Publish { .. }))
        .count();
    assert_eq!(
        sent, 2,
        "never more than the server's Receive Maximum [MQTT-4.9.0-2]"
    );
    assert_eq!(p.client.pending_publishes(), 5);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn keep_alive_pings_and_detects_a_dead_connection() {
    let mut p = Pair::new(
        ClientConfig {
            keep_alive: 10,
            ..ClientConfig::new("c")
        },
        ServerConfig::default(),
    );
    p.connect(None);
    let due = p.client.next_timeout().unwrap();
    assert_eq!(due, T + 10_000);
    p.client.handle_timeout(due - 1);
    assert!(p.client.take_outgoing().is_empty());
    p.client.handle_timeout(due);
    assert_eq!(p.client.take_outgoing(), [0xC0, 0x00], "PINGREQ");
    // no PINGRESP within half the keep-alive: dead
    p.client.handle_timeout(due + 5_000);
    let ev = p.events();
    assert!(
        matches!(
            ev.as_slice(),
            [ClientEvent::Disconnected {
                reason: None,
                kind: CloseKind::Retry,
                ..
            }]
        ),
        "{ev:?}"
    );
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn server_reasons_are_classified() {
    assert_eq!(
        close_kind(ReasonCode(0xA0)),
        CloseKind::Retry,
        "token expired: refresh and reconnect"
    );
    assert_eq!(
        close_kind(ReasonCode::SERVER_SHUTTING_DOWN),
        CloseKind::Retry
    );
    assert_eq!(close_kind(ReasonCode(0x98)), CloseKind::Fatal, "revoked");
    assert_eq!(close_kind(ReasonCode::NOT_AUTHORIZED), CloseKind::Fatal);
    assert_eq!(
        close_kind(ReasonCode::BAD_USERNAME_OR_PASSWORD),
        CloseKind::Fatal
    );
    let mut p = Pair::v5();
    p.connect(None);
    p.server.close(ReasonCode(0x98), Some("credential revoked"));
    p.run(&mut None);
    assert_eq!(
        p.events(),
        [ClientEvent::Disconnected {
            reason: Some(ReasonCode(0x98)),
            reason_string: Some("credential revoked".into()),
            kind: CloseKind::Fatal
        }]
    );
    assert!(!p.client.is_connected());
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_refused_subscription_is_reported_and_forgotten() {
    let mut p = Pair::v5();
    p.connect(None);
    p.sub_reason = ReasonCode::NOT_AUTHORIZED;
    p.client
        .subscribe("users/bob/#", QoS::AtLeastOnce, T)
        .unwrap();
    p.run(&mut None);
    assert_eq!(
        p.events(),
        [ClientEvent::Subscribed {
            filter: "users/bob/#".into(),
            result: Err(ReasonCode::NOT_AUTHORIZED)
        }]
    );
    p.client.connection_lost(T);
    p.events();
    p.new_connection();
    p.connect(None);
    assert!(
        !p.seen.iter().any(|e| matches!(e, Event::Subscribe { .. })),
        "not asked again"
    );
}

fn publish_bytes(
    topic: &str,
    alias: Option<u16>,
    qos: QoS,
    id: Option<u16>,
    dup: bool,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    Packet::Publish(Publish {
        dup,
        qos,
        retain: false,
        topic,
        packet_id: id.and_then(PacketId::new),
        properties: Properties {
            topic_alias: alias,
            ..Properties::default()
        },
        payload,
    })
    .encode(Protocol::V5, &mut out);
    out
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn inbound_topic_aliases_and_exactly_once() {
    let mut p = Pair::v5();
    p.connect(None);
    p.client.handle_bytes(
        &publish_bytes(
            "users/alice/long/topic",
            Some(3),
            QoS::AtMostOnce,
            None,
            false,
            b"a",
        ),
        T,
    );
    p.client.handle_bytes(
        &publish_bytes("", Some(3), QoS::AtMostOnce, None, false, b"b"),
        T,
    );
    // QoS 2 sent twice before PUBREL (a resend): delivered once
    p.client.handle_bytes(
        &publish_bytes("q", None, QoS::ExactlyOnce, Some(9), false, b"c"),
        T,
    );
    p.client.handle_bytes(
        &publish_bytes("q", None, QoS::ExactlyOnce, Some(9), true, b"c"),
        T,
    );
    let events = p.events();
    assert_eq!(
        events,
        [
            message("users/alice/long/topic", b"a", QoS::AtMostOnce),
            message("users/alice/long/topic", b"b", QoS::AtMostOnce),
            message("q", b"c", QoS::ExactlyOnce),
        ]
    );
    // an alias never set is a protocol error
    p.client.handle_bytes(
        &publish_bytes("", Some(4), QoS::AtMostOnce, None, false, b"x"),
        T,
    );
    assert_eq!(p.closed_with(), Some(ReasonCode::PROTOCOL_ERROR));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_packet_only_clients_send_is_a_protocol_error() {
    let mut p = Pair::v5();
    p.connect(None);
    p.client.handle_bytes(&[0xc0, 0], T); // PINGREQ
    assert_eq!(p.closed_with(), Some(ReasonCode::PROTOCOL_ERROR));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_server_over_our_receive_maximum_is_disconnected_with_0x93() {
    let mut config = ClientConfig::new("rm");
    config.receive_maximum = 2;
    let mut p = Pair::new(config, ServerConfig::default());
    p.connect(None);
    for (id, dup) in [(1, false), (2, false), (2, true)] {
        // the third is a resend of id 2 (not new): still within the window
        p.client.handle_bytes(
            &publish_bytes("q", None, QoS::ExactlyOnce, Some(id), dup, b"x"),
            T,
        );
    }
    assert_eq!(p.events().len(), 2, "two messages, no disconnect");
    p.client.handle_bytes(
        &publish_bytes("q", None, QoS::ExactlyOnce, Some(3), false, b"x"),
        T,
    );
    assert_eq!(p.closed_with(), Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn split_and_coalesced_bytes_decode_the_same() {
    let mut p = Pair::v5();
    p.connect(None);
    let mut bytes = publish_bytes("a", None, QoS::AtMostOnce, None, false, b"1");
    bytes.extend(publish_bytes("b", None, QoS::AtMostOnce, None, false, b"2"));
    for chunk in bytes.chunks(1) {
        p.client.handle_bytes(chunk, T);
    }
    assert_eq!(
        p.events(),
        [
            message("a", b"1", QoS::AtMostOnce),
            message("b", b"2", QoS::AtMostOnce)
        ]
    );
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_refused_connect_is_fatal_or_retryable_by_reason() {
    let mut c = ClientSession::new(ClientConfig::new("c"));
    c.connect("u", "p", T);
    c.take_outgoing();
    let mut connack = Vec::new();
    Packet::Connack(crate::mqtt::Connack {
        session_present: false,
        reason: ReasonCode::BAD_USERNAME_OR_PASSWORD,
        properties: Properties::default(),
    })
    .encode(Protocol::V5, &mut connack);
    c.handle_bytes(&connack, T);
    assert!(matches!(
        c.poll_event(),
        Some(ClientEvent::Disconnected {
            kind: CloseKind::Fatal,
            ..
        })
    ));
    let _ = Message::clone; // the server's message type is what the broker routes
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_3_1_1_broker_refusing_version_5_means_fall_back() {
    let mut c = ClientSession::new(ClientConfig::new("c"));
    c.connect("u", "p", T);
    c.take_outgoing();
    // CONNACK, return code 1: unacceptable protocol version [MQTT-3.1.2-2]
    c.handle_bytes(&[0x20, 0x02, 0x00, 0x01], T);
    assert!(matches!(
        c.poll_event(),
        Some(ClientEvent::Disconnected {
            reason: Some(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
            kind: CloseKind::Retry,
            ..
        })
    ));
    // the adapter then speaks 3.1.1, and a 3.1.1 CONNACK is a success
    c.set_protocol(Protocol::V311);
    c.connect("u", "p", T);
    assert_eq!(c.take_outgoing()[8], 4, "protocol level 4");
    c.handle_bytes(&[0x20, 0x02, 0x00, 0x00], T);
    assert!(matches!(
        c.poll_event(),
        Some(ClientEvent::Connected { .. })
    ));
    // a 3.1.1 "bad user name or password" to a v5 CONNECT is fatal, not a fallback
    let mut d = ClientSession::new(ClientConfig::new("d"));
    d.connect("u", "p", T);
    d.handle_bytes(&[0x20, 0x02, 0x00, 0x04], T);
    assert!(matches!(
        d.poll_event(),
        Some(ClientEvent::Disconnected {
            reason: Some(ReasonCode::BAD_USERNAME_OR_PASSWORD),
            kind: CloseKind::Fatal,
            ..
        })
    ));
}

/// The topic and alias of each PUBLISH in `bytes`.
fn topics_on_the_wire(mut bytes: &[u8]) -> Vec<(String, Option<u16>)> {
    let mut out = Vec::new();
    while let Some((packet, used)) = mqtt::decode(bytes, Protocol::V5, 1 << 20).unwrap() {
        if let Packet::Publish(p) = packet {
            out.push((p.topic.to_owned(), p.properties.topic_alias));
        }
        bytes = &bytes[used..];
    }
    out
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn repeated_topics_go_as_topic_aliases_within_the_servers_maximum() {
    let server = ServerConfig {
        topic_alias_maximum: 2,
        ..ServerConfig::default()
    };
    let mut p = Pair::new(ClientConfig::new("ta"), server);
    p.echo = false;
    p.connect(None);
    let topics = ["u/a", "u/a", "u/b", "u/c", "u/c", "u/b", "u/a"];
    for t in topics {
        p.client
            .publish(t, b"x", QoS::AtMostOnce, false, T)
            .unwrap();
    }
    let wire = p.client.take_outgoing();
    let alias = |t: &str, a| (t.to_owned(), Some(a));
    let name = |t: &str| (t.to_owned(), None);
    assert_eq!(
        topics_on_the_wire(&wire),
        [
            alias("u/a", 1),
            alias("", 1),
            alias("u/b", 2),
            name("u/c"), // over the server's maximum of 2
            name("u/c"),
            alias("", 2),
            alias("", 1),
        ]
    );
    // the server resolves every alias back to its topic
    p.server.handle_bytes(&wire, T);
    let resolved: Vec<String> = std::iter::from_fn(|| p.server.poll_event())
        .filter_map(|e| match e {
            Event::Publish { message, .. } => Some(message.topic.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(resolved, topics);

    // aliases do not outlive the connection [MQTT-3.3.2-7]: a resend names its topic again
    p.client.connection_lost(T);
    p.events();
    p.new_connection();
    p.client.connect("alice@org_k7xm4pqr2n5t", "tkn_x", T);
    let mut resumed = None;
    p.run(&mut resumed);
    p.client
        .publish("u/a", b"y", QoS::AtMostOnce, false, T)
        .unwrap();
    assert_eq!(
        topics_on_the_wire(&p.client.take_outgoing()),
        [alias("u/a", 1)]
    );
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn no_topic_aliases_when_the_server_or_the_config_allows_none() {
    for (server_max, ours) in [(0, true), (32, false)] {
        let server = ServerConfig {
            topic_alias_maximum: server_max,
            ..ServerConfig::default()
        };
        let config = ClientConfig {
            outbound_topic_aliases: ours,
            ..ClientConfig::new("ta")
        };
        let mut p = Pair::new(config, server);
        p.connect(None);
        for _ in 0..2 {
            p.client
                .publish("u/a", b"x", QoS::AtMostOnce, false, T)
                .unwrap();
        }
        let wire = p.client.take_outgoing();
        assert_eq!(
            topics_on_the_wire(&wire),
            [("u/a".to_owned(), None), ("u/a".to_owned(), None)]
        );
    }
}
