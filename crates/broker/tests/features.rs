//! MQTT 5 features over real sockets, one scenario each: subscription options (No Local,
//! Retain As Published, Retain Handling), subscription identifiers, topic aliases, message
//! expiry, and Receive Maximum flow control in both directions.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use cloudsignal_core::mqtt::{
    self, Ack, Connect, Packet, Properties, Protocol, QoS, ReasonCode, SubscriptionOptions,
};
use common::*;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

fn pid(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap()
}

async fn v5(addr: SocketAddr, client_id: &str, properties: Properties<'_>) -> Raw {
    let (raw, c) = Raw::open(
        addr,
        Connect {
            protocol: Protocol::V5,
            clean_start: true,
            keep_alive: 0,
            properties,
            client_id,
            will: None,
            username: None,
            password: None,
        },
    )
    .await;
    assert_eq!(c.reason, ReasonCode::SUCCESS);
    raw
}

fn opts(qos: QoS, no_local: bool, rap: bool, rh: u8) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        no_local,
        retain_as_published: rap,
        retain_handling: rh,
    }
}

async fn sub(raw: &mut Raw, id: u16, filter: &str, o: SubscriptionOptions, sid: Option<u32>) {
    raw.send(&Packet::Subscribe(mqtt::Subscribe {
        packet_id: pid(id),
        properties: Properties {
            subscription_identifiers: sid.into_iter().collect(),
            ..Properties::default()
        },
        filters: vec![(filter, o)],
    }))
    .await;
    match raw.recv_within(3).await {
        Some(Packet::Suback(s)) => assert_eq!(s.reasons, [ReasonCode(o.qos as u8)]),
        other => panic!("{other:?}"),
    }
}

fn publish<'a>(
    topic: &'a str,
    payload: &'a [u8],
    qos: QoS,
    id: u16,
    retain: bool,
    properties: Properties<'a>,
) -> Packet<'a> {
    Packet::Publish(mqtt::Publish {
        dup: false,
        qos,
        retain,
        topic,
        packet_id: (qos != QoS::AtMostOnce).then(|| pid(id)),
        properties,
        payload,
    })
}

async fn next_publish(raw: &mut Raw) -> mqtt::Publish<'static> {
    match raw.recv_within(3).await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

fn puback(id: NonZeroU16) -> Packet<'static> {
    Packet::Puback(Ack {
        packet_id: id,
        reason: ReasonCode::SUCCESS,
        properties: Properties::default(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_options_and_identifiers() {
    let addr = start(true).await;
    let q0 = QoS::AtMostOnce;
    let mut a = v5(addr, "opts-a", Properties::default()).await;
    // No Local: a's own messages do not come back to it [MQTT-3.8.3-3]
    sub(&mut a, 1, "opt/#", opts(q0, true, false, 0), Some(7)).await;
    let mut b = v5(addr, "opts-b", Properties::default()).await;
    sub(&mut b, 1, "opt/+", opts(q0, false, true, 0), Some(11)).await;
    sub(&mut b, 2, "opt/#", opts(q0, false, false, 2), Some(12)).await;
    a.send(&publish(
        "opt/r",
        b"kept",
        q0,
        0,
        true,
        Properties::default(),
    ))
    .await;
    let p = next_publish(&mut b).await;
    assert!(
        p.retain,
        "Retain As Published on one matching subscription [MQTT-3.3.1-12]"
    );
    let mut ids = p.properties.subscription_identifiers.clone();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [11, 12],
        "one delivery carrying every identifier [MQTT-3.3.4-3]"
    );
    assert!(a.silent_for(300).await, "No Local");

    // Retain Handling: 0 sends retained messages, 1 only for a new subscription, 2 never
    let mut c = v5(addr, "opts-c", Properties::default()).await;
    sub(&mut c, 1, "opt/#", opts(q0, false, false, 0), None).await;
    let p = next_publish(&mut c).await;
    assert_eq!(
        (p.topic, p.payload, p.retain),
        ("opt/r", &b"kept"[..], true)
    );
    sub(&mut c, 2, "opt/#", opts(q0, false, false, 1), None).await;
    assert!(
        c.silent_for(300).await,
        "Retain Handling 1 on an existing subscription"
    );
    sub(&mut c, 3, "opt/r", opts(q0, false, false, 1), None).await;
    assert_eq!(
        next_publish(&mut c).await.payload,
        b"kept",
        "1 on a new one"
    );
    sub(&mut c, 4, "opt/+", opts(q0, false, false, 2), None).await;
    assert!(c.silent_for(300).await, "Retain Handling 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_from_the_client() {
    let addr = start(true).await;
    let mut s = v5(addr, "alias-s", Properties::default()).await;
    sub(
        &mut s,
        1,
        "alias/#",
        opts(QoS::AtMostOnce, false, false, 0),
        None,
    )
    .await;
    let mut p = v5(addr, "alias-p", Properties::default()).await;
    let alias = |a| Properties {
        topic_alias: Some(a),
        ..Properties::default()
    };
    p.send(&publish(
        "alias/a/rather/long/topic",
        b"1",
        QoS::AtMostOnce,
        0,
        false,
        alias(1),
    ))
    .await;
    p.send(&publish("", b"2", QoS::AtMostOnce, 0, false, alias(1)))
        .await;
    for want in [&b"1"[..], b"2"] {
        let m = next_publish(&mut s).await;
        assert_eq!((m.topic, m.payload), ("alias/a/rather/long/topic", want));
    }
    // above the Topic Alias Maximum announced in CONNACK (32) [MQTT-3.3.2-9]
    p.send(&publish(
        "alias/x",
        b"3",
        QoS::AtMostOnce,
        0,
        false,
        alias(33),
    ))
    .await;
    match p.recv_within(3).await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::TOPIC_ALIAS_INVALID),
        other => panic!("{other:?}"),
    }
    assert!(s.silent_for(300).await);
}

/// Server-side topic aliases on the wire: a subscriber that allows 2 gets each topic's name
/// once with its alias, then the alias alone; a new connection starts a new table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_to_the_client() {
    let addr = start(true).await;
    let allows = |n| Properties {
        topic_alias_maximum: Some(n),
        ..Properties::default()
    };
    let mut s = v5(addr, "oalias-s", allows(2)).await;
    sub(
        &mut s,
        1,
        "oa/#",
        opts(QoS::AtLeastOnce, false, false, 0),
        None,
    )
    .await;
    let mut p = v5(addr, "oalias-p", Properties::default()).await;
    let long = "oa/a/rather/long/topic/name/for/a/sensor";
    for (topic, body) in [(long, "1"), (long, "2"), ("oa/other", "3"), (long, "4")] {
        p.send(&publish(
            topic,
            body.as_bytes(),
            QoS::AtMostOnce,
            0,
            false,
            Properties::default(),
        ))
        .await;
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        let m = next_publish(&mut s).await;
        seen.push((
            m.topic.to_owned(),
            m.properties.topic_alias,
            m.payload.to_vec(),
        ));
    }
    assert_eq!(
        seen,
        [
            (long.to_owned(), Some(1), b"1".to_vec()),
            (String::new(), Some(1), b"2".to_vec()),
            ("oa/other".to_owned(), Some(2), b"3".to_vec()),
            (String::new(), Some(1), b"4".to_vec()),
        ]
    );
    // a client that allows none gets names only; a new connection starts afresh
    let mut again = v5(addr, "oalias-s2", Properties::default()).await;
    sub(
        &mut again,
        1,
        "oa/#",
        opts(QoS::AtMostOnce, false, false, 0),
        None,
    )
    .await;
    p.send(&publish(
        long,
        b"5",
        QoS::AtMostOnce,
        0,
        false,
        Properties::default(),
    ))
    .await;
    let m = next_publish(&mut again).await;
    assert_eq!((m.topic, m.properties.topic_alias), (long, None));
    let m = next_publish(&mut s).await;
    assert_eq!((m.topic, m.properties.topic_alias), ("", Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_expiry_counts_down_and_removes_retained_messages() {
    let addr = start(true).await;
    let expiring = |secs| Properties {
        message_expiry_interval: Some(secs),
        ..Properties::default()
    };
    let mut p = v5(addr, "exp-p", Properties::default()).await;
    p.send(&publish(
        "exp/r",
        b"brief",
        QoS::AtMostOnce,
        0,
        true,
        expiring(1),
    ))
    .await;
    p.send(&publish(
        "exp/long",
        b"lasting",
        QoS::AtMostOnce,
        0,
        true,
        expiring(100),
    ))
    .await;
    let mut s = v5(addr, "exp-s", Properties::default()).await;
    sub(
        &mut s,
        1,
        "exp/#",
        opts(QoS::AtMostOnce, false, false, 0),
        None,
    )
    .await;
    let mut got: Vec<_> = vec![next_publish(&mut s).await, next_publish(&mut s).await];
    got.sort_by_key(|m| m.topic);
    assert_eq!(got[1].topic, "exp/r");
    assert!(got[1].properties.message_expiry_interval.unwrap() <= 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut late = v5(addr, "exp-late", Properties::default()).await;
    sub(
        &mut late,
        1,
        "exp/#",
        opts(QoS::AtMostOnce, false, false, 0),
        None,
    )
    .await;
    let m = next_publish(&mut late).await;
    assert_eq!(
        m.topic, "exp/long",
        "the expired retained message is gone [MQTT-3.3.2-5]"
    );
    let left = m.properties.message_expiry_interval.unwrap();
    assert!(
        (97..=99).contains(&left),
        "remaining expiry is sent, counted down: {left}"
    );
    assert!(late.silent_for(300).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_both_ways() {
    let addr = start(true).await;
    // outbound: the client's Receive Maximum of 2 bounds what the broker has in flight
    let mut s = v5(
        addr,
        "rm-s",
        Properties {
            receive_maximum: Some(2),
            ..Properties::default()
        },
    )
    .await;
    sub(
        &mut s,
        1,
        "rm/#",
        opts(QoS::AtLeastOnce, false, false, 0),
        None,
    )
    .await;
    let mut p = v5(addr, "rm-p", Properties::default()).await;
    for n in 1..=5u16 {
        p.send(&publish(
            "rm/x",
            b"m",
            QoS::AtLeastOnce,
            n,
            false,
            Properties::default(),
        ))
        .await;
        assert!(matches!(p.recv_within(3).await, Some(Packet::Puback(_))));
    }
    let first = next_publish(&mut s).await;
    next_publish(&mut s).await;
    assert!(s.silent_for(300).await, "only 2 in flight [MQTT-3.3.4-9]");
    s.send(&puback(first.packet_id.unwrap())).await;
    next_publish(&mut s).await;
    assert!(s.silent_for(300).await);

    // inbound: QoS 2 PUBLISHes count against the broker's Receive Maximum (100) until
    // PUBCOMP, so after 100 PUBRECs without PUBREL the 101st is one too many [MQTT-3.3.4-9]
    let mut flood = v5(addr, "rm-flood", Properties::default()).await;
    let mut bytes = Vec::new();
    for n in 1..=100u16 {
        publish(
            "rm/q2",
            b"x",
            QoS::ExactlyOnce,
            n,
            false,
            Properties::default(),
        )
        .encode(Protocol::V5, &mut bytes);
    }
    flood.stream.write_all(&bytes).await.unwrap();
    for _ in 0..100 {
        assert!(matches!(
            flood.recv_within(3).await,
            Some(Packet::Pubrec(_))
        ));
    }
    flood
        .send(&publish(
            "rm/q2",
            b"x",
            QoS::ExactlyOnce,
            101,
            false,
            Properties::default(),
        ))
        .await;
    match flood.recv_within(3).await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED),
        other => panic!("{other:?}"),
    }
}
