//! No silent loss: what a plain `mosquitto_pub -l` → `mosquitto_sub` pipe sends through the
//! broker arrives, every message, at QoS 0, 1 and 2. Clients nobody here wrote; the broker is
//! the real one over real sockets. A publisher faster than its subscriber is slowed down (the
//! broker stops reading it), not dropped.
#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

mod common;

use cloudsignal_core::mqtt::{Packet, Protocol};
use common::{client, start, start_with};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// A `mosquitto_sub -d -q <qos> -t pipe/t -C <n>`, subscribed (its SUBACK seen), whose
/// payload lines are read by the returned task: (lines in order?, count).
async fn subscriber(
    addr: std::net::SocketAddr,
    qos: &str,
    n: usize,
) -> tokio::task::JoinHandle<(usize, bool)> {
    // line-buffered: its stdout is a pipe, and the SUBACK line must arrive when it happens
    let mut sub = tokio::process::Command::new("stdbuf");
    sub.args(["-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p"])
        .arg(addr.port().to_string())
        .args([
            "-V",
            "mqttv311",
            "-t",
            "pipe/t",
            "-q",
            qos,
            "-C",
            &n.to_string(),
            "-d",
        ])
        .kill_on_drop(true);
    let mut sub = sub.stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    // wait for its SUBACK so nothing published after it can be missed
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("mosquitto_sub did not subscribe")
            .unwrap()
            .expect("mosquitto_sub ended before subscribing");
        if line.starts_with("Subscribed (mid") {
            break;
        }
    }
    tokio::spawn(async move {
        let (mut got, mut ordered, mut next) = (0usize, true, 0usize);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
        while got < n {
            let Ok(Ok(Some(line))) = tokio::time::timeout_at(deadline, lines.next_line()).await
            else {
                break;
            };
            let Some(i) = line
                .split_once('-')
                .filter(|(p, _)| *p == "payload")
                .and_then(|(_, rest)| rest.split('-').next())
                .and_then(|i| i.parse::<usize>().ok())
            else {
                continue; // -d debug lines
            };
            ordered &= i == next;
            next = i + 1;
            got += 1;
        }
        let _ = sub.kill().await;
        (got, ordered)
    })
}

/// `mosquitto_pub -l -q <qos> -t pipe/t` fed `n` lines `payload-<i>-<padding>`.
async fn publish(addr: std::net::SocketAddr, qos: &str, n: usize, padding: usize) {
    let mut publisher = client("mosquitto_pub", addr, "mqttv311")
        .args(["-t", "pipe/t", "-q", qos, "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = publisher.stdin.take().unwrap();
    let pad = "x".repeat(padding);
    let mut text = String::with_capacity(n * (padding + 24));
    for i in 0..n {
        text.push_str(&format!("payload-{i}-{pad}\n"));
    }
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let _ = publisher.wait().await;
}

/// Sends `n` lines through `mosquitto_pub -l -q <qos>` into one `mosquitto_sub -q <qos>` and
/// returns how many arrived (and whether in order).
async fn pipe(qos: &str, n: usize) -> (usize, bool) {
    let addr = start(true).await;
    let sub = subscriber(addr, qos, n).await;
    publish(addr, qos, n, 6).await;
    sub.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_pipe_delivers_every_message() {
    let n = 200_000;
    let (got, ordered) = pipe("0", n).await;
    println!("QoS 0 pipe: {got} of {n} delivered");
    assert_eq!(got, n, "a QoS 0 pipe lost messages");
    assert!(ordered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_pipe_delivers_every_message() {
    let n = 50_000;
    let (got, ordered) = pipe("1", n).await;
    println!("QoS 1 pipe: {got} of {n} delivered");
    assert_eq!(
        got, n,
        "a QoS 1 pipe lost messages or its subscriber was disconnected"
    );
    assert!(ordered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_pipe_delivers_every_message() {
    let n = 20_000;
    let (got, ordered) = pipe("2", n).await;
    println!("QoS 2 pipe: {got} of {n} delivered");
    assert_eq!(
        got, n,
        "a QoS 2 pipe lost messages or its subscriber was disconnected"
    );
    assert!(ordered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_bounded_by_bytes_slows_the_publisher_instead_of_dropping() {
    // 4 KiB payloads against a 64 KiB byte mark: the byte bound, not the count (1,024), is
    // what congests the subscriber's queue and the session's; nothing may be lost
    let addr = start_with(true, |c| c.session.max_queued_bytes = 64 << 10).await;
    let n = 5_000;
    for qos in ["0", "1"] {
        let sub = subscriber(addr, qos, n).await;
        publish(addr, qos, n, 4096).await;
        let (got, ordered) = sub.await.unwrap();
        println!("QoS {qos} pipe of {n} × 4 KiB through a 64 KiB queue: {got} delivered");
        assert_eq!(got, n, "QoS {qos}: the byte-bounded queue lost messages");
        assert!(ordered);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_does_not_cost_the_others_their_messages() {
    let addr = start(true).await;
    // subscribes, then never reads: its socket fills, then its mailbox
    let (mut stalled, _) = common::Raw::connect(addr, Protocol::V311, "stalled", None, None).await;
    stalled.send(&common::subscribe("pipe/t", 1)).await;
    assert!(matches!(
        stalled.recv_within(10).await,
        Some(Packet::Suback(_))
    ));
    let n = 20_000;
    let readers = [
        subscriber(addr, "0", n).await,
        subscriber(addr, "0", n).await,
    ];
    let started = std::time::Instant::now();
    // 1 KiB payloads: far more than the stalled client's socket buffers hold
    publish(addr, "0", n, 1000).await;
    for r in readers {
        let (got, ordered) = r.await.unwrap();
        assert_eq!(
            got, n,
            "a reading subscriber lost messages to the stalled one"
        );
        assert!(ordered);
    }
    println!(
        "fan-out of {n} × 1 KiB with one stalled subscriber: the two readers got everything in {:?}",
        started.elapsed()
    );
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_closed_while_it_still_sends_reads_the_reason_instead_of_a_reset() {
    use cloudsignal_core::mqtt::{Properties, QoS, ReasonCode};
    use tokio::io::AsyncReadExt;
    let addr = start(true).await;
    let (mut flood, code) = common::Raw::connect(addr, Protocol::V5, "linger", None, None).await;
    assert_eq!(code, ReasonCode::SUCCESS);
    // QoS 2 PUBLISHes never released: the 101st exceeds the Receive Maximum (100) and the
    // broker closes with 0x93 while a megabyte more is on its way
    let mut bytes = Vec::new();
    for n in 1..=20_000u16 {
        Packet::Publish(cloudsignal_core::mqtt::Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: "rm/q2",
            packet_id: std::num::NonZeroU16::new(n),
            properties: Properties::default(),
            payload: &[0u8; 40],
        })
        .encode(Protocol::V5, &mut bytes);
    }
    flood.stream.write_all(&bytes).await.unwrap();
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let outcome = loop {
        match tokio::time::timeout(Duration::from_secs(10), flood.stream.read(&mut chunk)).await {
            Err(_) => break "timed out".to_owned(),
            Ok(Ok(0)) => break "closed".to_owned(),
            Ok(Ok(n)) => received.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => break format!("{e}"),
        }
    };
    assert_eq!(outcome, "closed", "an orderly close (FIN), not a reset");
    let mut at = 0;
    let mut last = None;
    while let Ok(Some((p, used))) =
        cloudsignal_core::mqtt::decode_from_server(&received[at..], Protocol::V5, 1 << 20)
    {
        at += used;
        if let Packet::Disconnect(d) = p {
            last = Some(d.reason);
        }
    }
    assert_eq!(
        last,
        Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED),
        "the client read why it was closed"
    );
}
