//! The list of bad input, over real sockets: each offender is refused with the right
//! MQTT 5 reason code (or closed, where the protocol allows nothing else), and a well-behaved
//! client connected throughout notices nothing.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use cloudsignal_core::mqtt::{Packet, Protocol, ReasonCode};
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A v5 CONNECT for client id `c` (anonymous, clean start).
const CONNECT_V5: [u8; 16] = [
    0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 1, b'c',
];

/// What the broker does with a connection that sends `bytes`.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Closed without an MQTT answer.
    Closed,
    /// CONNACK with this reason code, then closed.
    Connack(ReasonCode),
    /// (After a successful CONNACK) DISCONNECT with this reason code.
    Disconnect(ReasonCode),
    /// (After a successful CONNACK) this SUBACK reason code.
    Suback(ReasonCode),
}

async fn offend(addr: SocketAddr, bytes: &[u8]) -> Outcome {
    let mut raw = Raw {
        stream: TcpStream::connect(addr).await.unwrap(),
        buf: Vec::new(),
        protocol: Protocol::V5,
    };
    raw.stream.write_all(bytes).await.unwrap();
    let mut connected = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), raw.recv()).await {
            Err(_) => panic!("no answer to {bytes:02x?}"),
            Ok(None) => return Outcome::Closed,
            Ok(Some(Packet::Connack(c))) if c.reason == ReasonCode::SUCCESS && !connected => {
                connected = true
            }
            Ok(Some(Packet::Connack(c))) => return Outcome::Connack(c.reason),
            Ok(Some(Packet::Disconnect(d))) => return Outcome::Disconnect(d.reason),
            Ok(Some(Packet::Suback(s))) => return Outcome::Suback(s.reasons[0]),
            Ok(Some(other)) => panic!("unexpected {other:?} for {bytes:02x?}"),
        }
    }
}

fn after_connect(tail: &[u8]) -> Vec<u8> {
    let mut v = CONNECT_V5.to_vec();
    v.extend_from_slice(tail);
    v
}

/// MQTT's variable byte integer (§1.5.5), written here by hand so the test does not trust the
/// codec under test.
fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return out;
        }
    }
}

fn deep_subscribe(levels: usize) -> Vec<u8> {
    // empty levels keep 65,000 of them within a UTF-8 string's 65,535 bytes
    let filter = "/".repeat(levels - 1);
    let mut body = vec![0, 1, 0]; // packet id 1, no properties
    body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(0);
    let mut p = vec![0x82];
    p.extend(varint(body.len()));
    p.extend(body);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_offender_is_refused_and_nobody_else_notices() {
    let addr = start_with(true, |c| c.session.connect_timeout_ms = 500).await;
    let (mut good, _) = Raw::connect(addr, Protocol::V5, "bystander", None, None).await;
    good.send(&subscribe("calm/#", 1)).await;
    good.recv_within(3).await;

    let v311_nul_client_id = {
        let mut v = vec![
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, 0,
        ];
        v[1] = (v.len() - 2) as u8;
        v
    };
    let mut many_user_props = vec![0x30];
    {
        // PUBLISH "t" with 5,000 user properties "a"="b" (7 bytes each)
        let mut props = Vec::new();
        for _ in 0..5_000 {
            props.extend_from_slice(&[0x26, 0, 1, b'a', 0, 1, b'b']);
        }
        let mut body = vec![0, 1, b't'];
        body.extend(varint(props.len()));
        body.extend(props);
        many_user_props.extend(varint(body.len()));
        many_user_props.extend(body);
    }
    let cases: Vec<(&str, Vec<u8>, Outcome)> = vec![
        (
            "TLS ClientHello on the plain port",
            vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc],
            Outcome::Closed,
        ),
        (
            "HTTP request on the plain port",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Outcome::Closed,
        ),
        ("packet type 0", vec![0x00, 0x00], Outcome::Closed),
        (
            "packet type 15 before CONNECT",
            vec![0xf0, 0x00],
            Outcome::Closed,
        ),
        (
            "5-byte remaining length",
            vec![0x10, 0xff, 0xff, 0xff, 0xff, 0x01],
            Outcome::Closed,
        ),
        (
            "CONNECT with reserved flag",
            {
                let mut v = CONNECT_V5.to_vec();
                v[9] |= 0x01;
                v
            },
            Outcome::Connack(ReasonCode::MALFORMED_PACKET),
        ),
        (
            "v3.1.1 client id with U+0000",
            v311_nul_client_id,
            Outcome::Closed,
        ),
        (
            "second CONNECT",
            after_connect(&CONNECT_V5),
            Outcome::Disconnect(ReasonCode::PROTOCOL_ERROR),
        ),
        (
            "CONNACK from a client",
            after_connect(&[0x20, 3, 0, 0, 0]),
            Outcome::Disconnect(ReasonCode::PROTOCOL_ERROR),
        ),
        (
            "SUBACK from a client",
            after_connect(&[0x90, 4, 0, 1, 0, 0]),
            Outcome::Disconnect(ReasonCode::PROTOCOL_ERROR),
        ),
        (
            "PINGRESP from a client",
            after_connect(&[0xd0, 0]),
            Outcome::Disconnect(ReasonCode::PROTOCOL_ERROR),
        ),
        (
            "unsolicited PUBACK",
            after_connect(&[0x40, 2, 0, 9]),
            Outcome::Disconnect(ReasonCode::PROTOCOL_ERROR),
        ),
        (
            "PUBLISH QoS 1 with packet id 0",
            after_connect(&[0x32, 6, 0, 1, b't', 0, 0, 0]),
            Outcome::Disconnect(ReasonCode::PROTOCOL_ERROR),
        ),
        (
            "PUBLISH QoS 3",
            after_connect(&[0x36, 6, 0, 1, b't', 0, 1, 0]),
            Outcome::Disconnect(ReasonCode::MALFORMED_PACKET),
        ),
        (
            "PUBLISH with a wildcard topic",
            after_connect(&[0x30, 4, 0, 1, b'#', 0]),
            Outcome::Disconnect(ReasonCode::TOPIC_NAME_INVALID),
        ),
        (
            "PUBLISH topic with U+D800 (CESU)",
            after_connect(&[0x30, 6, 0, 3, 0xed, 0xa0, 0x80, 0]),
            Outcome::Disconnect(ReasonCode::MALFORMED_PACKET),
        ),
        (
            "PUBLISH with a duplicate property",
            after_connect(&[0x30, 9, 0, 1, b't', 4, 0x01, 0, 0x01, 0, b'x']),
            Outcome::Disconnect(ReasonCode::PROTOCOL_ERROR),
        ),
        (
            "5,000 user properties",
            after_connect(&many_user_props),
            Outcome::Disconnect(ReasonCode::MALFORMED_PACKET),
        ),
        (
            "SUBSCRIBE with 65,000 levels",
            after_connect(&deep_subscribe(65_000)),
            Outcome::Suback(ReasonCode::TOPIC_FILTER_INVALID),
        ),
        (
            "packet above the maximum size",
            after_connect(&[0x30, 0x80, 0x80, 0x80, 0x01]),
            Outcome::Disconnect(ReasonCode::PACKET_TOO_LARGE),
        ),
    ];
    for (name, bytes, want) in cases {
        let got = offend(addr, &bytes).await;
        assert_eq!(got, want, "{name}");
    }

    // a client that sends nothing is closed after the connect timeout (0.5 s here)
    let started = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut b))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(450));

    // the bystander saw none of it and still works
    assert!(good.silent_for(200).await);
    good.send(&Packet::Pingreq).await;
    assert_eq!(good.recv_within(3).await, Some(Packet::Pingresp));
}
