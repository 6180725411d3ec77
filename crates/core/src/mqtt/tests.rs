use super::*;
use crate::both_targets_test;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::num::NonZeroU16;

const MAX: usize = 1 << 20;

fn id(n: u16) -> PacketId {
    NonZeroU16::new(n).unwrap()
}

fn round_trip(p: &Packet<'_>, protocol: Protocol) -> Vec<u8> {
    let mut out = Vec::new();
    p.encode(protocol, &mut out);
    let (decoded, used) = decode(&out, protocol, MAX).unwrap().unwrap();
    assert_eq!(used, out.len());
    assert_eq!(&decoded, p, "{protocol:?}");
    out
}

fn props() -> Properties<'static> {
    Properties {
        reason_string: Some("why"),
        user_properties: vec![("k", "v"), ("k", "v2")],
        ..Properties::default()
    }
}

fn every_packet(v5: bool) -> Vec<Packet<'static>> {
    let p = if v5 { props() } else { Properties::default() };
    let reason = if v5 {
        ReasonCode::NOT_AUTHORIZED
    } else {
        ReasonCode::SUCCESS
    };
    let ack = Ack {
        packet_id: id(7),
        reason,
        properties: p.clone(),
    };
    let publish_props = if v5 {
        Properties {
            message_expiry_interval: Some(30),
            topic_alias: Some(3),
            response_topic: Some("r/1"),
            correlation_data: Some(b"c"),
            subscription_identifiers: vec![1, 268_435_455],
            user_properties: vec![("a", "b")],
            payload_format_indicator: Some(1),
            content_type: Some("text/plain"),
            ..Properties::default()
        }
    } else {
        Properties::default()
    };
    vec![
        Packet::Connect(Connect {
            protocol: if v5 { Protocol::V5 } else { Protocol::V311 },
            clean_start: true,
            keep_alive: 60,
            properties: if v5 {
                Properties {
                    session_expiry_interval: Some(3600),
                    receive_maximum: Some(10),
                    authentication_method: Some("cloudsignal-token"),
                    authentication_data: Some(b"tkn_x"),
                    ..Properties::default()
                }
            } else {
                Properties::default()
            },
            client_id: "c1",
            will: Some(Will {
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: if v5 {
                    Properties {
                        will_delay_interval: Some(5),
                        ..Properties::default()
                    }
                } else {
                    Properties::default()
                },
                topic: "w/t",
                payload: b"bye",
            }),
            username: Some("alice@org_k7xm4pqr2n5t"),
            password: Some(b"tkn_abc"),
        }),
        Packet::Connack(Connack {
            session_present: true,
            reason: ReasonCode(if v5 { 0x87 } else { 5 }),
            properties: if v5 {
                Properties {
                    assigned_client_identifier: Some("auto-1"),
                    maximum_qos: Some(1),
                    topic_alias_maximum: Some(10),
                    ..Properties::default()
                }
            } else {
                Properties::default()
            },
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "a/b",
            packet_id: None,
            properties: Properties::default(),
            payload: b"",
        }),
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: "a/b",
            packet_id: Some(id(65535)),
            properties: publish_props,
            payload: b"hello",
        }),
        Packet::Puback(ack.clone()),
        Packet::Pubrec(ack.clone()),
        Packet::Pubrel(ack.clone()),
        Packet::Pubcomp(ack),
        Packet::Puback(Ack {
            packet_id: id(1),
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }),
        Packet::Subscribe(Subscribe {
            packet_id: id(2),
            properties: if v5 {
                Properties {
                    subscription_identifiers: vec![9],
                    ..Properties::default()
                }
            } else {
                Properties::default()
            },
            filters: vec![
                (
                    "a/+",
                    SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: v5,
                        retain_as_published: v5,
                        retain_handling: if v5 { 2 } else { 0 },
                    },
                ),
                (
                    "$share/g/b/#",
                    SubscriptionOptions {
                        qos: QoS::AtMostOnce,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: 0,
                    },
                ),
            ],
        }),
        Packet::Suback(SubAck {
            packet_id: id(2),
            properties: p.clone(),
            reasons: vec![ReasonCode::GRANTED_QOS_2, ReasonCode(0x80)],
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: id(3),
            properties: if v5 {
                Properties {
                    user_properties: vec![("x", "y")],
                    ..Properties::default()
                }
            } else {
                Properties::default()
            },
            filters: vec!["a/+", "b"],
        }),
        Packet::Unsuback(SubAck {
            packet_id: id(3),
            properties: p.clone(),
            reasons: if v5 {
                vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
            } else {
                vec![]
            },
        }),
        Packet::Pingreq,
        Packet::Pingresp,
        Packet::Disconnect(ReasonPacket {
            reason,
            properties: if v5 {
                Properties {
                    session_expiry_interval: Some(0),
                    reason_string: Some("token expired"),
                    ..Properties::default()
                }
            } else {
                Properties::default()
            },
        }),
    ]
}

both_targets_test! {
    fn every_packet_round_trips_in_both_versions() {
        for p in every_packet(false) {
            round_trip(&p, Protocol::V311);
        }
        for p in every_packet(true) {
            round_trip(&p, Protocol::V5);
        }
        round_trip(
            &Packet::Auth(ReasonPacket {
                reason: ReasonCode::REAUTHENTICATE,
                properties: Properties { authentication_method: Some("cloudsignal-token"), authentication_data: Some(b"tkn_new"), ..Properties::default() },
            }),
            Protocol::V5,
        );
    }
}

both_targets_test! {
    fn literal_wire_bytes() {
        // v3.1.1 CONNECT, clean session, keep alive 60, client id "c"
        let connect = [0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0b10, 0, 60, 0, 1, b'c'];
        match decode(&connect, Protocol::V311, MAX).unwrap().unwrap().0 {
            Packet::Connect(c) => {
                assert_eq!((c.protocol, c.clean_start, c.keep_alive, c.client_id), (Protocol::V311, true, 60, "c"));
                assert!(c.will.is_none() && c.username.is_none());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(round_trip(&Packet::Pingreq, Protocol::V5), [0xc0, 0]);
        assert_eq!(round_trip(&Packet::Pingresp, Protocol::V311), [0xd0, 0]);
        // v5 DISCONNECT 0xA0 with no properties, and the short form of a normal DISCONNECT
        assert_eq!(
            round_trip(&Packet::Disconnect(ReasonPacket { reason: ReasonCode::MAXIMUM_CONNECT_TIME, properties: Properties::default() }), Protocol::V5),
            [0xe0, 1, 0xa0]
        );
        assert_eq!(round_trip(&Packet::Disconnect(ReasonPacket { reason: ReasonCode::SUCCESS, properties: Properties::default() }), Protocol::V5), [0xe0, 0]);
        // QoS 1 PUBLISH "a" id 10 payload "x", v3.1.1
        let p = Packet::Publish(Publish { dup: false, qos: QoS::AtLeastOnce, retain: false, topic: "a", packet_id: Some(id(10)), properties: Properties::default(), payload: b"x" });
        assert_eq!(round_trip(&p, Protocol::V311), [0x32, 6, 0, 1, b'a', 0, 10, b'x']);
        // v5 PUBACK success with no properties is 2 bytes of body
        let a = Packet::Puback(Ack { packet_id: id(10), reason: ReasonCode::SUCCESS, properties: Properties::default() });
        assert_eq!(round_trip(&a, Protocol::V5), [0x40, 2, 0, 10]);
        // v5 SUBACK 0x87
        let s = Packet::Suback(SubAck { packet_id: id(1), properties: Properties::default(), reasons: vec![ReasonCode::NOT_AUTHORIZED] });
        assert_eq!(round_trip(&s, Protocol::V5), [0x90, 4, 0, 1, 0, 0x87]);
    }
}

fn err(bytes: &[u8], protocol: Protocol) -> DecodeError {
    decode(bytes, protocol, MAX).unwrap_err()
}

both_targets_test! {
    fn a_client_refuses_packets_only_clients_send() {
        use super::decode_from_server;
        let mut connect = Vec::new();
        every_packet(true)[0].encode(Protocol::V5, &mut connect);
        let pingreq = [0xc0, 0];
        let subscribe = [0x82, 6, 0, 1, 0, 1, b'a', 0];
        let unsubscribe = [0xa2, 5, 0, 1, 0, 1, b'a'];
        for (bytes, kind) in [(&connect[..], 1), (&subscribe, 8), (&unsubscribe, 10), (&pingreq, 12)] {
            let protocol = if kind == 1 { Protocol::V5 } else { Protocol::V311 };
            assert_eq!(
                decode_from_server(bytes, protocol, MAX).unwrap_err(),
                DecodeError::UnexpectedPacketType(kind)
            );
            assert!(decode(bytes, protocol, MAX).is_ok(), "a server decodes type {kind}");
        }
        // what servers send decodes the same either way
        for bytes in [&[0xd0u8, 0][..], &[0x20, 2, 0, 0], &[0x40, 2, 0, 7], &[0x90, 3, 0, 1, 1]] {
            assert_eq!(
                decode_from_server(bytes, Protocol::V311, MAX),
                decode(bytes, Protocol::V311, MAX)
            );
        }
    }
}

both_targets_test! {
    fn malformed_packets_are_refused_with_the_rule() {
        use DecodeError::*;
        // five-byte remaining length
        assert_eq!(err(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], Protocol::V5), MalformedVarint);
        // packet types 0 and 15 (v3.1.1)
        assert_eq!(err(&[0x00, 0], Protocol::V5), ReservedPacketType(0));
        assert_eq!(err(&[0xf0, 0], Protocol::V311), ReservedPacketType(15));
        // reserved flags on PINGREQ, SUBSCRIBE without 0b0010
        assert_eq!(err(&[0xc1, 0], Protocol::V5), InvalidFlags(12));
        assert_eq!(err(&[0x80, 5, 0, 1, 0, 1, b'a'], Protocol::V311), InvalidFlags(8));
        // QoS 3, DUP on QoS 0
        assert_eq!(err(&[0x36, 3, 0, 1, b'a'], Protocol::V311), InvalidQos);
        assert_eq!(err(&[0x38, 3, 0, 1, b'a'], Protocol::V311), DupOnQos0);
        // QoS 1 publish without a packet id; zero packet id
        assert_eq!(err(&[0x32, 3, 0, 1, b'a'], Protocol::V311), Truncated);
        assert_eq!(err(&[0x32, 5, 0, 1, b'a', 0, 0], Protocol::V311), ZeroPacketId);
        // wildcard in a topic name, NUL and U+D800 in a topic
        assert_eq!(err(&[0x30, 4, 0, 2, b'a', b'#'], Protocol::V311), WildcardInTopicName);
        assert_eq!(err(&[0x30, 3, 0, 1, 0], Protocol::V311), NulInString);
        assert_eq!(err(&[0x30, 5, 0, 3, 0xed, 0xa0, 0x80], Protocol::V311), InvalidUtf8);
        // SUBSCRIBE with no filters; retain handling 3
        assert_eq!(err(&[0x82, 2, 0, 1], Protocol::V311), NoTopicFilters);
        assert_eq!(err(&[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x30], Protocol::V5), InvalidSubscriptionOptions);
        // duplicate and misplaced v5 properties
        assert_eq!(err(&[0x40, 9, 0, 1, 0x80, 5, 0x1f, 0, 0, 0x1f, 0], Protocol::V5), Truncated);
        assert_eq!(err(&[0x40, 10, 0, 1, 0x80, 6, 0x1f, 0, 0, 0x1f, 0, 0], Protocol::V5), DuplicateProperty(0x1f));
        assert_eq!(err(&[0x40, 7, 0, 1, 0x80, 3, 0x23, 0, 1], Protocol::V5), PropertyNotAllowed(0x23));
        assert_eq!(err(&[0x40, 6, 0, 1, 0x80, 2, 0x7f, 0], Protocol::V5), UnknownProperty(0x7f));
        // trailing bytes
        assert_eq!(err(&[0xc0, 1, 0], Protocol::V5), TrailingBytes(1));
        // CONNECT: bad name, level, reserved flag
        assert_eq!(err(&[0x10, 10, 0, 4, b'M', b'Q', b'T', b'X', 4, 2, 0, 60], Protocol::V311), BadProtocolName);
        assert_eq!(err(&[0x10, 10, 0, 4, b'M', b'Q', b'T', b'T', 3, 2, 0, 60], Protocol::V311), UnsupportedProtocolLevel(3));
        assert_eq!(err(&[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 3, 0, 60, 0, 0], Protocol::V311), InvalidConnectFlags);
    }
}

both_targets_test! {
    fn size_is_checked_before_buffering() {
        // a first packet declaring 268,435,455 bytes is refused from its first five bytes
        assert_eq!(FixedHeader::parse(&[0x30, 0xff, 0xff, 0xff, 0x7f], MAX), Err(DecodeError::TooLarge(268_435_460)));
        // incomplete headers and bodies ask for more bytes
        assert_eq!(FixedHeader::parse(&[0x30], MAX), Ok(None));
        assert_eq!(FixedHeader::parse(&[0x30, 0x80], MAX), Ok(None));
        assert_eq!(decode(&[0x30, 5, 0, 1], Protocol::V5, MAX), Ok(None));
    }
}

both_targets_test! {
    fn user_properties_are_capped() {
        let mut body = vec![0u8, 1]; // packet id
        body.push(0x80); // reason
        let mut props = Vec::new();
        for _ in 0..=MAX_USER_PROPERTIES {
            props.extend_from_slice(&[0x26, 0, 1, b'k', 0, 1, b'v']);
        }
        codec::put_varint(&mut body, props.len() as u32);
        body.extend_from_slice(&props);
        let mut packet = vec![0x40];
        codec::put_varint(&mut packet, body.len() as u32);
        packet.extend_from_slice(&body);
        assert_eq!(err(&packet, Protocol::V5), DecodeError::TooManyUserProperties(MAX_USER_PROPERTIES));
    }
}

both_targets_test! {
    /// Random bytes never panic the decoder, and whatever decodes re-encodes to bytes that
    /// decode to the same packet.
    fn decode_reencode_agreement() {
        let mut runner = TestRunner::new(Config { cases: 3000, ..Config::default() });
        let valid: Vec<Vec<u8>> = every_packet(true).iter().map(|p| { let mut o = Vec::new(); p.encode(Protocol::V5, &mut o); o }).collect();
        let strategy = (prop::sample::select(valid), prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4), any::<bool>());
        runner
            .run(&strategy, |(mut bytes, edits, v5)| {
                for (i, b) in edits {
                    let n = bytes.len();
                    bytes[i.index(n)] = b;
                }
                let protocol = if v5 { Protocol::V5 } else { Protocol::V311 };
                if let Ok(Some((p, used))) = decode(&bytes, protocol, MAX) {
                    prop_assert!(used <= bytes.len());
                    let mut again = Vec::new();
                    p.encode(protocol, &mut again);
                    let (q, _) = decode(&again, protocol, MAX).unwrap().unwrap();
                    prop_assert_eq!(p, q);
                }
                Ok(())
            })
            .unwrap();
    }
}

both_targets_test! {
    /// The fuzzers' seed inputs (fuzz/seeds) are what they claim: whole, valid packets.
    fn fuzz_seeds_are_valid_packets() {
        let flows: [(&[u8], Protocol, usize); 2] = [
            (include_bytes!("../../../../fuzz/seeds/server_session/v5-flow.bin"), Protocol::V5, 7),
            (include_bytes!("../../../../fuzz/seeds/server_session/v311-flow.bin"), Protocol::V311, 5),
        ];
        for (bytes, protocol, packets) in flows {
            let mut rest = &bytes[1..]; // the first byte is the fuzzer's chunk size
            let mut n = 0;
            while !rest.is_empty() {
                let (_, used) = decode(rest, protocol, MAX).unwrap().unwrap();
                rest = &rest[used..];
                n += 1;
            }
            assert_eq!(n, packets);
        }
        let single: [&[u8]; 3] = [
            include_bytes!("../../../../fuzz/seeds/mqtt_decode/connect-v5.bin"),
            include_bytes!("../../../../fuzz/seeds/mqtt_decode/subscribe-v5.bin"),
            include_bytes!("../../../../fuzz/seeds/mqtt_decode/publish-qos1.bin"),
        ];
        for bytes in single {
            let (_, used) = decode(bytes, Protocol::V5, MAX).unwrap().unwrap();
            assert_eq!(used, bytes.len());
        }
    }
}
