//! 10,000 bad CONNECTs from one address while 100 good clients connect and exchange QoS 1
//! messages: every good client gets in and every message arrives; the storm is refused and its
//! source banned. Latency is measured for a calm run and under the storm and printed (timing is
//! reported by `cloudsignal-bench`, never asserted here).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use cloudsignal_core::mqtt::{self, Packet, Properties, Protocol, QoS, ReasonCode};
use common::*;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BAD: usize = 10_000;
const GOOD: usize = 100;
const MESSAGES: u16 = 20;

/// One good client: connect, subscribe to its own topic, publish QoS 1 messages to itself and
/// time each round trip. Returns the round trips in microseconds.
async fn good_client(addr: SocketAddr, n: usize) -> Vec<u64> {
    let user = format!("good{n}");
    let username = format!("{user}@{ORG}");
    let tok = token_with(&user, 600, &["users/{user}/#"], n as u8);
    let (mut c, code) = Raw::connect(
        addr,
        Protocol::V5,
        &format!("good-{n}"),
        Some((&username, &tok)),
        None,
    )
    .await;
    assert_eq!(code, ReasonCode::SUCCESS, "good client {n} refused");
    let topic = format!("users/{user}/echo");
    c.send(&subscribe(&topic, 1)).await;
    assert!(matches!(c.recv_within(30).await, Some(Packet::Suback(_))));
    let mut rtts = Vec::new();
    for i in 1..=MESSAGES {
        let started = Instant::now();
        c.send(&Packet::Publish(mqtt::Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: &topic,
            packet_id: NonZeroU16::new(i),
            properties: Properties::default(),
            payload: b"ping",
        }))
        .await;
        let mut got_message = false;
        let mut got_ack = false;
        while !(got_message && got_ack) {
            match c.recv_within(30).await {
                Some(Packet::Puback(_)) => got_ack = true,
                Some(Packet::Publish(p)) => {
                    c.send(&Packet::Puback(mqtt::Ack {
                        packet_id: p.packet_id.unwrap(),
                        reason: ReasonCode::SUCCESS,
                        properties: Properties::default(),
                    }))
                    .await;
                    got_message = true;
                }
                other => panic!("good client {n}: unexpected {other:?}"),
            }
        }
        rtts.push(started.elapsed().as_micros() as u64);
    }
    rtts
}

async fn good_round(addr: SocketAddr) -> Vec<u64> {
    let tasks: Vec<_> = (0..GOOD)
        .map(|n| tokio::spawn(good_client(addr, n)))
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    all
}

fn p99(sorted: &[u64]) -> u64 {
    sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_bad_connects_do_not_stop_good_clients() {
    let addr = start_with(false, |c| {
        c.auth_failure_delay = Duration::from_millis(20);
        c.throttle.max_delay = Duration::from_millis(500);
        c.connect_rate = 20_000;
    })
    .await;
    let calm = good_round(addr).await;
    assert_eq!(calm.len(), GOOD * MESSAGES as usize);

    let refused = Arc::new(AtomicU64::new(0));
    let banned = Arc::new(AtomicU64::new(0));
    let storm: Vec<_> = (0..100)
        .map(|w| {
            let (refused, banned) = (refused.clone(), banned.clone());
            tokio::spawn(async move {
                for i in 0..BAD / 100 {
                    let (_, code) = Raw::connect_from(
                        [127, 0, 0, 9],
                        addr,
                        Protocol::V5,
                        &format!("bad-{w}-{i}"),
                        Some((&format!("mallory@{ORG}"), "tkn_not.a.token")),
                        None,
                    )
                    .await;
                    match code {
                        ReasonCode::BANNED => banned.fetch_add(1, Ordering::Relaxed),
                        ReasonCode::BAD_USERNAME_OR_PASSWORD => {
                            refused.fetch_add(1, Ordering::Relaxed)
                        }
                        other => panic!("bad CONNECT answered {other:?}"),
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stormy = good_round(addr).await;
    for t in storm {
        t.await.unwrap();
    }
    assert_eq!(
        stormy.len(),
        GOOD * MESSAGES as usize,
        "every good message arrived"
    );
    let (refused, banned) = (
        refused.load(Ordering::Relaxed),
        banned.load(Ordering::Relaxed),
    );
    assert_eq!(refused + banned, BAD as u64);
    assert!(
        banned > refused,
        "the source was banned after its first failures ({refused} refused, {banned} banned)"
    );
    eprintln!(
        "good-client QoS 1 round trip p99: calm {} µs, under a {BAD}-CONNECT storm {} µs",
        p99(&calm),
        p99(&stormy)
    );
}
