//! Scripted-peer tests: a client made of encoded packets, the session in memory, time as data.

use super::*;
use crate::both_targets_test;
use crate::mqtt::{Connect, Publish, Subscribe, Will};
use std::num::NonZeroU16;

fn id(n: u16) -> PacketId {
    NonZeroU16::new(n).unwrap()
}

fn bytes(p: &Packet<'_>, protocol: Protocol) -> Vec<u8> {
    let mut out = Vec::new();
    p.encode(protocol, &mut out);
    out
}

fn connect(protocol: Protocol, keep_alive: u16, will: bool) -> Vec<u8> {
    bytes(
        &Packet::Connect(Connect {
            protocol,
            clean_start: true,
            keep_alive,
            properties: Properties::default(),
            client_id: "c1",
            will: will.then(|| Will {
                qos: QoS::AtMostOnce,
                retain: false,
                properties: Properties::default(),
                topic: "w",
                payload: b"gone",
            }),
            username: Some("alice@org_k7xm4pqr2n5t"),
            password: Some(b"tkn_x"),
        }),
        protocol,
    )
}

fn publish(qos: QoS, pid: u16, topic: &'static str, alias: Option<u16>) -> Packet<'static> {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic,
        packet_id: (qos != QoS::AtMostOnce).then(|| id(pid)),
        properties: Properties {
            topic_alias: alias,
            ..Properties::default()
        },
        payload: b"hi",
    })
}

/// Decodes everything the session transmitted.
fn sent(s: &mut ServerSession) -> Vec<Packet<'static>> {
    let data: &'static [u8] = Box::leak(s.poll_transmit().unwrap_or_default().into_boxed_slice());
    let mut out = Vec::new();
    let mut rest = data;
    while let Ok(Some((p, n))) = decode(rest, s.protocol(), 1 << 20) {
        out.push(p);
        rest = &rest[n..];
    }
    assert!(rest.is_empty(), "undecodable transmit bytes");
    out
}

fn events(s: &mut ServerSession) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// A connected session (CONNECT accepted at t=0).
fn connected(protocol: Protocol, keep_alive: u16) -> ServerSession {
    let mut s = ServerSession::new(ServerConfig::default(), 0);
    s.handle_bytes(&connect(protocol, keep_alive, true), 0);
    assert!(matches!(events(&mut s)[..], [Event::Connect(_)]));
    s.accept(0, None, None, true, keep_alive);
    let connack = sent(&mut s);
    assert!(matches!(&connack[..], [Packet::Connack(c)] if c.reason == ReasonCode::SUCCESS));
    s
}

both_targets_test! {
    fn connect_is_surfaced_then_accepted() {
        let mut s = ServerSession::new(ServerConfig::default(), 0);
        // CONNECT split across two reads
        let c = connect(Protocol::V5, 30, true);
        s.handle_bytes(&c[..5], 0);
        assert!(s.poll_event().is_none());
        s.handle_bytes(&c[5..], 1);
        match &events(&mut s)[..] {
            [Event::Connect(r)] => {
                assert_eq!(r.client_id, "c1");
                assert_eq!(r.username.as_deref(), Some("alice@org_k7xm4pqr2n5t"));
                assert_eq!(r.password.as_deref(), Some(&b"tkn_x"[..]));
                assert_eq!(r.will.as_ref().unwrap().topic.as_str(), "w");
            }
            other => panic!("{other:?}"),
        }
        s.accept(1, None, None, true, 30);
        match &sent(&mut s)[..] {
            [Packet::Connack(c)] => {
                assert_eq!(c.properties.receive_maximum, Some(100));
                assert_eq!(c.properties.maximum_packet_size, Some(1 << 20));
            }
            other => panic!("{other:?}"),
        }
    }
}

both_targets_test! {
    fn packets_pipelined_after_connect_wait_for_connack() {
        let mut s = ServerSession::new(ServerConfig::default(), 0);
        let mut data = connect(Protocol::V311, 0, false);
        data.extend(bytes(&Packet::Pingreq, Protocol::V311));
        s.handle_bytes(&data, 0);
        assert!(s.poll_transmit().is_none(), "nothing is processed before CONNACK [MQTT-3.1.4-7]");
        s.accept(0, None, None, false, 0);
        let out = sent(&mut s);
        assert!(matches!(&out[..], [Packet::Connack(_), Packet::Pingresp]), "{out:?}");
    }
}

both_targets_test! {
    fn rejection_maps_to_v311_return_codes() {
        for (reason, code) in [(ReasonCode::BAD_USERNAME_OR_PASSWORD, 4), (ReasonCode::NOT_AUTHORIZED, 5), (ReasonCode::SERVER_BUSY, 3)] {
            let mut s = ServerSession::new(ServerConfig::default(), 0);
            s.handle_bytes(&connect(Protocol::V311, 0, false), 0);
            events(&mut s);
            s.reject(reason);
            assert!(matches!(&sent(&mut s)[..], [Packet::Connack(c)] if c.reason == ReasonCode(code)));
            assert!(s.is_closed());
            assert!(matches!(&events(&mut s)[..], [Event::Closed { publish_will: false, .. }]));
        }
    }
}

both_targets_test! {
    fn first_packet_must_be_connect_and_only_once() {
        let mut s = ServerSession::new(ServerConfig::default(), 0);
        s.handle_bytes(&bytes(&Packet::Pingreq, Protocol::V5), 0);
        assert!(s.is_closed());
        let mut s = connected(Protocol::V5, 0);
        s.handle_bytes(&connect(Protocol::V5, 0, false), 1);
        assert!(matches!(&sent(&mut s)[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::PROTOCOL_ERROR));
        assert!(matches!(&events(&mut s)[..], [Event::Closed { publish_will: true, .. }]));
    }
}

both_targets_test! {
    fn connect_timeout_and_keep_alive() {
        let mut s = ServerSession::new(ServerConfig::default(), 1_000);
        assert_eq!(s.poll_timeout(), Some(11_000));
        s.handle_timeout(10_999);
        assert!(!s.is_closed());
        s.handle_timeout(11_000);
        assert!(matches!(&events(&mut s)[..], [Event::Closed { reason: CloseReason::ConnectTimeout, .. }]));

        let mut s = connected(Protocol::V5, 10);
        assert_eq!(s.poll_timeout(), Some(15_000), "1.5 x keep-alive [MQTT-3.1.2-24]");
        s.handle_bytes(&bytes(&Packet::Pingreq, Protocol::V5), 14_000);
        assert!(matches!(&sent(&mut s)[..], [Packet::Pingresp]));
        s.handle_timeout(28_999);
        assert!(!s.is_closed());
        s.handle_timeout(29_000);
        assert!(matches!(&sent(&mut s)[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::KEEP_ALIVE_TIMEOUT));
        assert!(matches!(&events(&mut s)[..], [Event::Closed { reason: CloseReason::KeepAliveTimeout, publish_will: true }]));
    }
}

both_targets_test! {
    fn qos1_and_qos2_inbound_flows() {
        let mut s = connected(Protocol::V5, 0);
        s.handle_bytes(&bytes(&publish(QoS::AtLeastOnce, 1, "users/alice/x", None), Protocol::V5), 1);
        assert!(matches!(&events(&mut s)[..], [Event::Publish { packet_id: Some(p), .. }] if p.get() == 1));
        s.ack_publish(id(1), QoS::AtLeastOnce, ReasonCode::NOT_AUTHORIZED);
        assert!(matches!(&sent(&mut s)[..], [Packet::Puback(a)] if a.reason == ReasonCode::NOT_AUTHORIZED));

        // QoS 2: delivered once even when retransmitted before PUBREL
        let p = bytes(&publish(QoS::ExactlyOnce, 2, "users/alice/x", None), Protocol::V5);
        s.handle_bytes(&p, 2);
        assert_eq!(events(&mut s).len(), 1);
        s.ack_publish(id(2), QoS::ExactlyOnce, ReasonCode::SUCCESS);
        assert!(matches!(&sent(&mut s)[..], [Packet::Pubrec(_)]));
        s.handle_bytes(&p, 3);
        assert!(events(&mut s).is_empty(), "no duplicate delivery [MQTT-4.3.3-9]");
        assert!(matches!(&sent(&mut s)[..], [Packet::Pubrec(_)]));
        let rel = Packet::Pubrel(Ack { packet_id: id(2), reason: ReasonCode::SUCCESS, properties: Properties::default() });
        s.handle_bytes(&bytes(&rel, Protocol::V5), 4);
        assert!(matches!(&sent(&mut s)[..], [Packet::Pubcomp(a)] if a.reason == ReasonCode::SUCCESS));
        // the id is free again: a new QoS 2 message with it is a new message
        s.handle_bytes(&p, 5);
        assert_eq!(events(&mut s).len(), 1);
    }
}

both_targets_test! {
    fn receive_maximum_exceeded_disconnects_with_0x93() {
        let mut s = ServerSession::new(ServerConfig { receive_maximum: 2, ..ServerConfig::default() }, 0);
        s.handle_bytes(&connect(Protocol::V5, 0, false), 0);
        events(&mut s);
        s.accept(0, None, None, false, 0);
        sent(&mut s);
        for pid in 1..=3 {
            s.handle_bytes(&bytes(&publish(QoS::AtLeastOnce, pid, "t", None), Protocol::V5), 1);
        }
        assert!(matches!(&sent(&mut s)[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::RECEIVE_MAXIMUM_EXCEEDED));
        assert!(s.is_closed());
    }
}

both_targets_test! {
    fn topic_aliases() {
        let mut s = connected(Protocol::V5, 0);
        s.handle_bytes(&bytes(&publish(QoS::AtMostOnce, 0, "sensors/1/temp", Some(4)), Protocol::V5), 1);
        s.handle_bytes(&bytes(&publish(QoS::AtMostOnce, 0, "", Some(4)), Protocol::V5), 2);
        let topics: Vec<String> = events(&mut s)
            .into_iter()
            .map(|e| match e { Event::Publish { message, .. } => message.topic.to_string(), other => panic!("{other:?}") })
            .collect();
        assert_eq!(topics, ["sensors/1/temp", "sensors/1/temp"]);
        s.handle_bytes(&bytes(&publish(QoS::AtMostOnce, 0, "", Some(5)), Protocol::V5), 3);
        assert!(matches!(&sent(&mut s)[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::PROTOCOL_ERROR));
        let mut s = connected(Protocol::V5, 0);
        s.handle_bytes(&bytes(&publish(QoS::AtMostOnce, 0, "t", Some(33)), Protocol::V5), 1);
        assert!(matches!(&sent(&mut s)[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::TOPIC_ALIAS_INVALID));
    }
}

both_targets_test! {
    fn subscribe_surfaces_parsed_filters_and_acks_map_per_version() {
        let mut s = connected(Protocol::V311, 0);
        let opts = SubscriptionOptions { qos: QoS::AtLeastOnce, no_local: false, retain_as_published: false, retain_handling: 0 };
        let sub = Packet::Subscribe(Subscribe { packet_id: id(9), properties: Properties::default(), filters: vec![("users/+/notifications", opts), ("a/#/b", opts)] });
        s.handle_bytes(&bytes(&sub, Protocol::V311), 1);
        match &events(&mut s)[..] {
            [Event::Subscribe { packet_id, filters, .. }] => {
                assert_eq!(packet_id.get(), 9);
                assert!(filters[0].0.is_ok());
                assert!(filters[1].0.is_err());
            }
            other => panic!("{other:?}"),
        }
        s.ack_subscribe(id(9), vec![ReasonCode::NOT_AUTHORIZED, ReasonCode::TOPIC_FILTER_INVALID]);
        assert!(matches!(&sent(&mut s)[..], [Packet::Suback(a)] if a.reasons == [ReasonCode(0x80), ReasonCode(0x80)]));
    }
}

both_targets_test! {
    fn disconnect_suppresses_the_will_unless_asked() {
        let mut s = connected(Protocol::V5, 0);
        s.handle_bytes(&bytes(&Packet::Disconnect(ReasonPacket { reason: ReasonCode::SUCCESS, properties: Properties::default() }), Protocol::V5), 1);
        assert!(matches!(&events(&mut s)[..], [Event::Closed { publish_will: false, .. }]));
        let mut s = connected(Protocol::V5, 0);
        s.handle_bytes(&bytes(&Packet::Disconnect(ReasonPacket { reason: ReasonCode::DISCONNECT_WITH_WILL, properties: Properties::default() }), Protocol::V5), 1);
        assert!(matches!(&events(&mut s)[..], [Event::Closed { publish_will: true, .. }]));
    }
}

both_targets_test! {
    fn bad_input_gets_the_right_reason_code() {
        // server-only packets, a wildcard topic, and an oversized packet, each on a fresh session
        let cases: Vec<(Vec<u8>, ReasonCode)> = vec![
            (bytes(&Packet::Pingresp, Protocol::V5), ReasonCode::PROTOCOL_ERROR),
            (bytes(&Packet::Suback(SubAck { packet_id: id(1), properties: Properties::default(), reasons: vec![ReasonCode::SUCCESS] }), Protocol::V5), ReasonCode::PROTOCOL_ERROR),
            (bytes(&Packet::Puback(Ack { packet_id: id(1), reason: ReasonCode::SUCCESS, properties: Properties::default() }), Protocol::V5), ReasonCode::PROTOCOL_ERROR),
            (vec![0x30, 4, 0, 2, b'a', b'+'], ReasonCode::TOPIC_NAME_INVALID),
            (vec![0x30, 0xff, 0xff, 0xff, 0x7f], ReasonCode::PACKET_TOO_LARGE),
            (vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01], ReasonCode::MALFORMED_PACKET),
        ];
        for (data, want) in cases {
            let mut s = connected(Protocol::V5, 0);
            s.handle_bytes(&data, 1);
            assert!(matches!(&sent(&mut s)[..], [Packet::Disconnect(d)] if d.reason == want), "{data:?}");
            assert!(s.is_closed());
        }
    }
}

both_targets_test! {
    fn server_close_sends_the_reason() {
        let mut s = connected(Protocol::V5, 0);
        s.close(ReasonCode::MAXIMUM_CONNECT_TIME, Some("token expired"));
        match &sent(&mut s)[..] {
            [Packet::Disconnect(d)] => {
                assert_eq!(d.reason, ReasonCode::MAXIMUM_CONNECT_TIME);
                assert_eq!(d.properties.reason_string, Some("token expired"));
            }
            other => panic!("{other:?}"),
        }
        let mut s = connected(Protocol::V311, 0);
        s.close(ReasonCode::ADMINISTRATIVE_ACTION, None);
        assert!(s.poll_transmit().is_none(), "v3.1.1 has no server DISCONNECT");
        assert!(s.is_closed());
    }
}

fn connected_with(
    window: Option<u16>,
    max_packet: Option<u32>,
    max_queued: usize,
) -> ServerSession {
    let config = ServerConfig {
        max_queued,
        ..ServerConfig::default()
    };
    connected_config(window, max_packet, config)
}

fn connected_config(
    window: Option<u16>,
    max_packet: Option<u32>,
    config: ServerConfig,
) -> ServerSession {
    let mut s = ServerSession::new(config, 0);
    let c = Packet::Connect(Connect {
        protocol: Protocol::V5,
        clean_start: true,
        keep_alive: 0,
        properties: Properties {
            receive_maximum: window,
            maximum_packet_size: max_packet,
            ..Properties::default()
        },
        client_id: "c2",
        will: None,
        username: None,
        password: None,
    });
    s.handle_bytes(&bytes(&c, Protocol::V5), 0);
    events(&mut s);
    s.accept(0, None, None, false, 0);
    sent(&mut s);
    s
}

fn delivery(qos: QoS, payload: &[u8]) -> Delivery {
    Delivery {
        message: std::sync::Arc::new(Message {
            topic: TopicName::parse("users/alice/notifications").unwrap(),
            payload: payload.to_vec(),
            qos,
            retain: false,
            expiry: None,
            forwarded: ForwardedProperties {
                user_properties: vec![("trace".into(), "1".into())],
                ..ForwardedProperties::default()
            },
        }),
        qos,
        retain: false,
        subscription_ids: vec![7],
        expiry: Some(60),
    }
}

fn ack(kind: u8, pid: u16) -> Vec<u8> {
    let a = Ack {
        packet_id: id(pid),
        reason: ReasonCode::SUCCESS,
        properties: Properties::default(),
    };
    let p = match kind {
        4 => Packet::Puback(a),
        5 => Packet::Pubrec(a),
        _ => Packet::Pubcomp(a),
    };
    bytes(&p, Protocol::V5)
}

both_targets_test! {
    fn outbound_qos1_respects_the_clients_receive_maximum() {
        let mut s = connected_with(Some(2), None, 10);
        for _ in 0..3 {
            s.deliver(delivery(QoS::AtLeastOnce, b"m"));
        }
        let first = sent(&mut s);
        assert_eq!(first.len(), 2, "window of 2");
        match &first[0] {
            Packet::Publish(p) => {
                assert_eq!(p.packet_id, Some(id(1)));
                assert_eq!(p.properties.subscription_identifiers, [7]);
                assert_eq!(p.properties.message_expiry_interval, Some(60));
                assert_eq!(p.properties.user_properties, [("trace", "1")]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.backlog(), (1, 2));
        s.handle_bytes(&ack(4, 1), 1);
        match &sent(&mut s)[..] {
            [Packet::Publish(p)] => assert_eq!(p.packet_id, Some(id(3))),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.backlog(), (0, 2));
        // QoS 0 is not subject to the window
        assert_eq!(s.deliver(delivery(QoS::AtMostOnce, b"q0")), Deliver::Sent);
    }
}

both_targets_test! {
    fn outbound_qos2_flow() {
        let mut s = connected_with(None, None, 10);
        assert_eq!(s.deliver(delivery(QoS::ExactlyOnce, b"m")), Deliver::Sent);
        sent(&mut s);
        s.handle_bytes(&ack(5, 1), 1);
        assert!(matches!(&sent(&mut s)[..], [Packet::Pubrel(a)] if a.packet_id == id(1)));
        // a second PUBREC for the same id is now out of order
        s.handle_bytes(&ack(7, 1), 2);
        assert!(s.poll_transmit().is_none());
        assert_eq!(s.backlog(), (0, 0));
        s.handle_bytes(&ack(7, 1), 3);
        assert!(matches!(&sent(&mut s)[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::PROTOCOL_ERROR), "unsolicited PUBCOMP");
    }
}

both_targets_test! {
    fn slow_consumer_queue_is_bounded() {
        let mut s = connected_with(Some(1), None, 2);
        assert_eq!(s.deliver(delivery(QoS::AtLeastOnce, b"1")), Deliver::Sent);
        assert_eq!(s.deliver(delivery(QoS::AtLeastOnce, b"2")), Deliver::Queued);
        assert_eq!(s.deliver(delivery(QoS::AtLeastOnce, b"3")), Deliver::Queued);
        assert_eq!(s.deliver(delivery(QoS::AtLeastOnce, b"4")), Deliver::QueueFull);
        assert_eq!(s.unacknowledged().count(), 3);
    }
}

both_targets_test! {
    fn the_queue_is_bounded_by_bytes_as_well_as_count() {
        // each delivery weighs 25 (topic) + 100 (payload) bytes; 300 bytes may wait
        let config = ServerConfig {
            max_queued: 1_000,
            max_queued_bytes: 300,
            ..ServerConfig::default()
        };
        let mut s = connected_config(Some(1), None, config);
        let d = || delivery(QoS::AtLeastOnce, &[7; 100]);
        assert_eq!(d().size(), 125);
        assert_eq!(s.deliver(d()), Deliver::Sent, "in flight: not queued");
        assert_eq!(s.deliver(d()), Deliver::Queued);
        assert_eq!(s.deliver(d()), Deliver::Queued);
        assert_eq!(s.deliver(d()), Deliver::QueueFull, "375 bytes > 300");
        // a stored session keeps the bound: 250 bytes queued, no room for 125 more
        let mut stored = s.take_stored();
        assert!(!stored.enqueue(d(), 1_000, 300));
        assert!(stored.enqueue(d(), 1_000, 400));
        // one message always fits an empty queue, whatever its size
        let mut empty = StoredSession::new();
        assert!(empty.enqueue(delivery(QoS::AtLeastOnce, &[0; 1_000]), 10, 300));
    }
}

both_targets_test! {
    fn messages_above_the_clients_maximum_packet_size_are_dropped() {
        let mut s = connected_with(None, Some(64), 10);
        assert_eq!(s.deliver(delivery(QoS::AtLeastOnce, &[0; 100])), Deliver::TooLarge);
        assert!(s.poll_transmit().is_none());
        assert_eq!(s.backlog(), (0, 0), "a dropped message takes no packet id");
        assert_eq!(s.deliver(delivery(QoS::AtLeastOnce, b"small")), Deliver::Sent);
    }
}

both_targets_test! {
    fn acknowledgement_of_the_wrong_kind_is_a_protocol_error() {
        let mut s = connected_with(None, None, 10);
        s.deliver(delivery(QoS::AtLeastOnce, b"m"));
        sent(&mut s);
        s.handle_bytes(&ack(5, 1), 1);
        assert!(matches!(&sent(&mut s)[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::PROTOCOL_ERROR));
    }
}

both_targets_test! {
    /// Receive Maximum is an MQTT 5 concept: a 3.1.1 client may pipeline many QoS 1 PUBLISHes
    /// in one read without being disconnected.
    fn v311_clients_may_pipeline_beyond_the_v5_receive_maximum() {
        let mut s = connected(Protocol::V311, 0);
        let mut data = Vec::new();
        for pid in 1..=150 {
            data.extend(bytes(&publish(QoS::AtLeastOnce, pid, "t", None), Protocol::V311));
        }
        s.handle_bytes(&data, 1);
        assert!(!s.is_closed());
        let published = events(&mut s).into_iter().filter(|e| matches!(e, Event::Publish { .. })).count();
        assert_eq!(published, 150);
    }
}

/// A v5 session resuming `stored` (Clean Start 0), with the given Receive Maximum.
fn resumed(
    stored: Option<StoredSession>,
    window: Option<u16>,
) -> (ServerSession, Vec<Packet<'static>>) {
    let mut s = ServerSession::new(ServerConfig::default(), 0);
    let c = Packet::Connect(Connect {
        protocol: Protocol::V5,
        clean_start: false,
        keep_alive: 0,
        properties: Properties {
            receive_maximum: window,
            session_expiry_interval: Some(300),
            ..Properties::default()
        },
        client_id: "c2",
        will: None,
        username: None,
        password: None,
    });
    s.handle_bytes(&bytes(&c, Protocol::V5), 0);
    match &events(&mut s)[..] {
        [Event::Connect(r)] => assert_eq!(r.session_expiry, 300),
        other => panic!("{other:?}"),
    }
    s.accept(0, stored, None, false, 0);
    let out = sent(&mut s);
    (s, out)
}

both_targets_test! {
    /// [MQTT-4.4.0-1]: on resume, unacknowledged PUBLISHes go again with DUP and their
    /// original ids, PUBRELs go again, and the queue follows in order.
    fn a_resumed_session_resends_what_was_unacknowledged() {
        let mut s = connected_with(Some(2), None, 10);
        s.deliver(delivery(QoS::AtLeastOnce, b"1"));
        s.deliver(delivery(QoS::ExactlyOnce, b"2"));
        s.deliver(delivery(QoS::AtLeastOnce, b"3"));
        sent(&mut s);
        s.handle_bytes(&ack(5, 2), 1); // PUBREC for 2: PUBREL goes out, PUBCOMP pending
        sent(&mut s);
        s.handle_connection_lost();
        let mut stored = s.take_stored();
        assert_eq!(stored.len(), 3);
        assert!(stored.enqueue(delivery(QoS::AtLeastOnce, b"4"), 10, usize::MAX));
        assert!(!stored.enqueue(delivery(QoS::AtMostOnce, b"q0"), 10, usize::MAX), "QoS 0 is not stored");

        let (_, out) = resumed(Some(stored), Some(3));
        match &out[..] {
            [Packet::Connack(c), Packet::Publish(p1), Packet::Pubrel(r2), Packet::Publish(p3)] => {
                assert!(c.session_present);
                assert_eq!((p1.packet_id, p1.dup, p1.payload), (Some(id(1)), true, &b"1"[..]));
                assert_eq!(r2.packet_id, id(2));
                // "3" was queued behind the old window of 2: it is new, not a duplicate
                assert_eq!((p3.packet_id, p3.dup, p3.payload), (Some(id(3)), false, &b"3"[..]));
            }
            other => panic!("{other:?}"),
        }
        let (mut s, out) = resumed(None, None);
        assert!(matches!(&out[..], [Packet::Connack(c)] if !c.session_present));
        assert_eq!(s.take_stored().len(), 0);
    }
}

both_targets_test! {
    fn stored_messages_age_and_expire() {
        let mut stored = StoredSession::new();
        stored.enqueue(delivery(QoS::AtLeastOnce, b"60s"), 10, usize::MAX);
        let mut forever = delivery(QoS::AtLeastOnce, b"forever");
        forever.expiry = None;
        stored.enqueue(forever, 10, usize::MAX);
        assert_eq!(stored.elapse(20), 0);
        let (_, out) = resumed(Some(stored.clone()), None);
        assert!(matches!(&out[1], Packet::Publish(p) if p.properties.message_expiry_interval == Some(40)));
        assert_eq!(stored.elapse(40), 1, "[MQTT-3.3.2-5] expired messages are not sent");
        assert_eq!(stored.len(), 1);
        assert!(!stored.enqueue(delivery(QoS::AtLeastOnce, b"x"), 1, usize::MAX), "bounded");
    }
}

both_targets_test! {
    fn session_expiry_is_capped_and_may_change_on_disconnect() {
        let config = ServerConfig { max_session_expiry: 100, ..ServerConfig::default() };
        let mut s = ServerSession::new(config.clone(), 0);
        s.handle_bytes(&connect(Protocol::V311, 0, false), 0); // clean session: expiry 0
        events(&mut s);
        s.accept(0, None, None, false, 0);
        sent(&mut s);
        assert_eq!(s.session_expiry(), 0);
        let d = Packet::Disconnect(ReasonPacket {
            reason: ReasonCode::SUCCESS,
            properties: Properties { session_expiry_interval: Some(50), ..Properties::default() },
        });
        // a v5 client that asked for 0 may not ask for more on DISCONNECT [MQTT-3.14.2-2]
        let mut s = connected(Protocol::V5, 0);
        s.handle_bytes(&bytes(&d, Protocol::V5), 1);
        assert!(matches!(&sent(&mut s)[..], [Packet::Disconnect(x)] if x.reason == ReasonCode::PROTOCOL_ERROR));

        let mut s = ServerSession::new(config, 0);
        let c = Packet::Connect(Connect {
            protocol: Protocol::V5,
            clean_start: true,
            keep_alive: 0,
            properties: Properties { session_expiry_interval: Some(u32::MAX), ..Properties::default() },
            client_id: "c",
            will: None,
            username: None,
            password: None,
        });
        s.handle_bytes(&bytes(&c, Protocol::V5), 0);
        assert!(matches!(&events(&mut s)[..], [Event::Connect(r)] if r.session_expiry == 100));
        s.accept(0, None, None, false, 0);
        assert!(matches!(&sent(&mut s)[..], [Packet::Connack(c)] if c.properties.session_expiry_interval == Some(100)), "the cap is announced");
        s.handle_bytes(&bytes(&d, Protocol::V5), 1);
        assert_eq!(s.session_expiry(), 50);
        assert!(s.is_closed());
    }
}

/// A v5 session whose client allows `max` topic aliases.
fn connected_with_aliases(max: u16) -> ServerSession {
    let mut s = ServerSession::new(ServerConfig::default(), 0);
    let c = Packet::Connect(Connect {
        protocol: Protocol::V5,
        clean_start: true,
        keep_alive: 0,
        properties: Properties {
            topic_alias_maximum: Some(max),
            ..Properties::default()
        },
        client_id: "c1",
        will: None,
        username: Some("alice@org_k7xm4pqr2n5t"),
        password: Some(b"tkn_x"),
    });
    s.handle_bytes(&bytes(&c, Protocol::V5), 0);
    events(&mut s);
    s.accept(0, None, None, false, 0);
    sent(&mut s);
    s
}

fn on_topic(topic: &str, qos: QoS) -> Delivery {
    let mut d = delivery(qos, b"x");
    std::sync::Arc::make_mut(&mut d.message).topic = TopicName::parse(topic).unwrap();
    d
}

/// (topic name on the wire, alias) of each PUBLISH sent.
fn naming(s: &mut ServerSession) -> Vec<(String, Option<u16>)> {
    sent(s)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.topic.to_owned(), p.properties.topic_alias)),
            _ => None,
        })
        .collect()
}

both_targets_test! {
    /// Server-sent topic aliases: set with the name on first use, the alias alone after,
    /// never above the client's maximum, the oldest replaced when all are taken; none for a
    /// client that allows none.
    fn outbound_topic_aliases() {
        let mut s = connected_with_aliases(2);
        for t in ["a/1", "a/1", "b/2", "a/1", "c/3", "c/3", "b/2", "a/1"] {
            assert_eq!(s.deliver(on_topic(t, QoS::AtMostOnce)), Deliver::Sent);
        }
        let want: Vec<(String, Option<u16>)> = [
            ("a/1", Some(1)), ("", Some(1)), ("b/2", Some(2)), ("", Some(1)),
            ("c/3", Some(1)), ("", Some(1)), ("", Some(2)), ("a/1", Some(2)),
        ]
        .iter()
        .map(|(t, a)| (t.to_string(), *a))
        .collect();
        assert_eq!(naming(&mut s), want);
        // QoS 1 deliveries alias too
        assert_eq!(s.deliver(on_topic("a/1", QoS::AtLeastOnce)), Deliver::Sent);
        assert_eq!(naming(&mut s), [(String::new(), Some(2))]);
        let mut none = connected_with_aliases(0);
        none.deliver(on_topic("a/1", QoS::AtMostOnce));
        none.deliver(on_topic("a/1", QoS::AtMostOnce));
        assert_eq!(naming(&mut none), [("a/1".into(), None), ("a/1".into(), None)]);
    }
}
