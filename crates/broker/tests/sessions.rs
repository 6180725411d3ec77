//! Sessions that outlive their connection, over real sockets: resume with Session Present,
//! messages stored while the client is away, unacknowledged messages resent with DUP, session
//! expiry, will delay, and a takeover that hands the session to the new connection.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use cloudsignal_core::mqtt::{self, Connect, Packet, Properties, Protocol, QoS, ReasonCode};
use common::*;
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

fn connect(client_id: &str, clean_start: bool, session_expiry: Option<u32>) -> Connect<'_> {
    Connect {
        protocol: Protocol::V5,
        clean_start,
        keep_alive: 0,
        properties: Properties {
            session_expiry_interval: session_expiry,
            ..Properties::default()
        },
        client_id,
        will: None,
        username: None,
        password: None,
    }
}

fn publish(topic: &str, qos: QoS, pid: u16, payload: &'static [u8]) -> Packet<'static> {
    let topic: &'static str = Box::leak(topic.to_owned().into_boxed_str());
    Packet::Publish(mqtt::Publish {
        dup: false,
        qos,
        retain: false,
        topic,
        packet_id: NonZeroU16::new(pid),
        properties: Properties::default(),
        payload,
    })
}

fn disconnect() -> Packet<'static> {
    Packet::Disconnect(mqtt::ReasonPacket {
        reason: ReasonCode::SUCCESS,
        properties: Properties::default(),
    })
}

/// Publishes QoS 1 messages from a fresh client and waits for each PUBACK.
async fn publish_all(addr: std::net::SocketAddr, topic: &str, payloads: &[(&'static [u8], QoS)]) {
    let (mut p, c) = Raw::open(addr, connect("publisher", true, None)).await;
    assert_eq!(c.reason, ReasonCode::SUCCESS);
    for (n, (payload, qos)) in payloads.iter().enumerate() {
        p.send(&publish(topic, *qos, n as u16 + 1, payload)).await;
        if *qos == QoS::AtLeastOnce {
            assert!(matches!(p.recv_within(3).await, Some(Packet::Puback(_))));
        }
    }
    p.send(&disconnect()).await;
}

async fn expect_publish(raw: &mut Raw) -> mqtt::Publish<'static> {
    match raw.recv_within(3).await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_while_away_wait_in_the_session() {
    let addr = start(true).await;
    let (mut s, c) = Raw::open(addr, connect("keeper", true, Some(60))).await;
    assert!(!c.session_present);
    s.send(&subscribe("away/#", 1)).await;
    assert!(matches!(s.recv_within(3).await, Some(Packet::Suback(_))));
    s.send(&disconnect()).await;
    assert!(s.recv_within(3).await.is_none());

    publish_all(
        addr,
        "away/news",
        &[
            (b"one", QoS::AtLeastOnce),
            (b"lost-qos0", QoS::AtMostOnce),
            (b"two", QoS::AtLeastOnce),
        ],
    )
    .await;

    let (mut s, c) = Raw::open(addr, connect("keeper", false, Some(60))).await;
    assert!(
        c.session_present,
        "[MQTT-3.2.2-2] Session Present after a resume"
    );
    for want in [&b"one"[..], b"two"] {
        let p = expect_publish(&mut s).await;
        assert_eq!((p.payload, p.qos), (want, QoS::AtLeastOnce));
        s.send(&Packet::Puback(mqtt::Ack {
            packet_id: p.packet_id.unwrap(),
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }))
        .await;
    }
    assert!(
        s.silent_for(300).await,
        "QoS 0 messages are not stored for absent clients"
    );
    // the subscription is still there on the resumed connection
    publish_all(addr, "away/live", &[(b"live", QoS::AtLeastOnce)]).await;
    assert_eq!(expect_publish(&mut s).await.payload, b"live");
    s.send(&disconnect()).await;

    // Clean Start 1 discards the session [MQTT-3.1.2-4]
    let (mut s, c) = Raw::open(addr, connect("keeper", true, None)).await;
    assert!(!c.session_present);
    publish_all(addr, "away/after", &[(b"gone", QoS::AtLeastOnce)]).await;
    assert!(
        s.silent_for(300).await,
        "the old subscription went with the old session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_are_resent_with_dup_after_a_dropped_connection() {
    let addr = start(true).await;
    let (mut s, _) = Raw::open(addr, connect("flaky", true, Some(60))).await;
    s.send(&subscribe("flaky/#", 1)).await;
    s.recv_within(3).await;
    publish_all(addr, "flaky/x", &[(b"m1", QoS::AtLeastOnce)]).await;
    let first = expect_publish(&mut s).await;
    assert!(!first.dup);
    drop(s); // no PUBACK, no DISCONNECT

    // whether or not the broker has noticed the close yet, the session comes back whole
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut s, c) = Raw::open(addr, connect("flaky", false, Some(60))).await;
    assert!(c.session_present);
    let again = expect_publish(&mut s).await;
    assert!(again.dup, "[MQTT-4.4.0-1] resent with DUP");
    assert_eq!(
        (again.packet_id, again.payload),
        (first.packet_id, &b"m1"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_persistent_session_with_mosquitto_sub() {
    let addr = start(true).await;
    // mosquitto_sub -c: Clean Session 0, QoS 1
    let mut first = client("mosquitto_sub", addr, "mqttv311");
    first.args([
        "-i",
        "durable",
        "-c",
        "-q",
        "1",
        "-t",
        "durable/#",
        "-C",
        "1",
        "-v",
    ]);
    let first = tokio::spawn(async move { run(&mut first).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish_all(addr, "durable/1", &[(b"first", QoS::AtLeastOnce)]).await;
    assert_eq!(text(&first.await.unwrap().stdout), "durable/1 first\n");
    // away: two messages arrive
    publish_all(
        addr,
        "durable/2",
        &[(b"second", QoS::AtLeastOnce), (b"third", QoS::AtLeastOnce)],
    )
    .await;
    let mut back = client("mosquitto_sub", addr, "mqttv311");
    back.args([
        "-i",
        "durable",
        "-c",
        "-q",
        "1",
        "-t",
        "durable/#",
        "-C",
        "2",
        "-v",
    ]);
    assert_eq!(
        text(&run(&mut back).await.stdout),
        "durable/2 second\ndurable/2 third\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_after_their_interval() {
    let addr = start(true).await;
    let (mut s, _) = Raw::open(addr, connect("brief", true, Some(1))).await;
    s.send(&subscribe("brief/#", 1)).await;
    s.recv_within(3).await;
    s.send(&disconnect()).await;
    s.recv_within(3).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (_, c) = Raw::open(addr, connect("brief", false, Some(1))).await;
    assert!(!c.session_present, "the session expired after 1 s");
}

fn with_will<'a>(c: Connect<'a>, topic: &'a str, delay: u32) -> Connect<'a> {
    Connect {
        will: Some(mqtt::Will {
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties {
                will_delay_interval: Some(delay),
                ..Properties::default()
            },
            topic,
            payload: b"offline",
        }),
        ..c
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_delay_waits_and_a_returning_client_cancels_it() {
    let addr = start(true).await;
    let (mut watcher, _) = Raw::open(addr, connect("watcher", true, None)).await;
    watcher.send(&subscribe("status/#", 1)).await;
    watcher.recv_within(3).await;

    // dropped and not back: the will comes after its 2 s delay, not at once
    let (gone, _) = Raw::open(
        addr,
        with_will(connect("gone", true, Some(60)), "status/gone", 2),
    )
    .await;
    let dropped = Instant::now();
    drop(gone);
    let will = expect_publish_within(&mut watcher, 5).await;
    assert_eq!((will.topic, will.payload), ("status/gone", &b"offline"[..]));
    assert!(
        dropped.elapsed() >= Duration::from_millis(1900),
        "will after {:?}",
        dropped.elapsed()
    );

    // dropped and back within the delay: no will [MQTT-3.1.3-9]
    let (blip, _) = Raw::open(
        addr,
        with_will(connect("blip", true, Some(60)), "status/blip", 2),
    )
    .await;
    drop(blip);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_back, c) = Raw::open(addr, connect("blip", false, Some(60))).await;
    assert!(c.session_present);
    assert!(
        watcher.silent_for(3000).await,
        "the returning client cancelled its will"
    );

    // a session that ends before the delay publishes the will at its end
    let (short, _) = Raw::open(
        addr,
        with_will(connect("short", true, Some(1)), "status/short", 30),
    )
    .await;
    drop(short);
    let will = expect_publish_within(&mut watcher, 4).await;
    assert_eq!(will.topic, "status/short");
}

async fn expect_publish_within(raw: &mut Raw, secs: u64) -> mqtt::Publish<'static> {
    match raw.recv_within(secs).await {
        Some(Packet::Publish(p)) => {
            if let Some(id) = p.packet_id {
                raw.send(&Packet::Puback(mqtt::Ack {
                    packet_id: id,
                    reason: ReasonCode::SUCCESS,
                    properties: Properties::default(),
                }))
                .await;
            }
            p
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_hands_the_live_session_to_the_new_connection() {
    let addr = start(true).await;
    let (mut old, _) = Raw::open(addr, connect("roamer", true, Some(60))).await;
    old.send(&subscribe("roam/#", 1)).await;
    old.recv_within(3).await;
    publish_all(addr, "roam/a", &[(b"unacked", QoS::AtLeastOnce)]).await;
    let held = expect_publish(&mut old).await; // received, never acknowledged

    let (mut new, c) = Raw::open(addr, connect("roamer", false, Some(60))).await;
    assert!(
        c.session_present,
        "the live session moved to the new connection"
    );
    match old.recv_within(3).await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::SESSION_TAKEN_OVER),
        other => panic!("{other:?}"),
    }
    let again = expect_publish_within(&mut new, 3).await;
    assert!(again.dup);
    assert_eq!(
        (again.packet_id, again.payload),
        (held.packet_id, &b"unacked"[..])
    );
    publish_all(addr, "roam/b", &[(b"next", QoS::AtLeastOnce)]).await;
    assert_eq!(expect_publish_within(&mut new, 3).await.payload, b"next");
}
