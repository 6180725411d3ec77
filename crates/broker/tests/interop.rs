//! The broker over real sockets, with clients nobody here wrote (`mosquitto_pub`/`mosquitto_sub`
//! from Debian's mosquitto-clients) and with a raw client built on core's codec for the cases
//! where exact reason codes and timing matter.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use cloudsignal_core::mqtt::{self, Connect, Packet, Properties, Protocol, QoS, ReasonCode};
use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_qos_0_1_2_and_retained_in_both_versions() {
    let addr = start(true).await;
    for version in ["mqttv311", "mqttv5"] {
        let topic = format!("interop/{version}");
        let mut sub = client("mosquitto_sub", addr, version);
        sub.args(["-t", &format!("{topic}/#"), "-C", "3", "-v", "-q", "2"]);
        let sub = tokio::spawn(async move { run(&mut sub).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        for qos in ["0", "1", "2"] {
            let out = run(client("mosquitto_pub", addr, version).args([
                "-t",
                &format!("{topic}/q{qos}"),
                "-m",
                &format!("m{qos}"),
                "-q",
                qos,
            ]))
            .await;
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
        let out = sub.await.unwrap();
        assert_eq!(
            text(&out.stdout),
            format!("{topic}/q0 m0\n{topic}/q1 m1\n{topic}/q2 m2\n")
        );
    }
    // retained message replayed to a late subscriber, then cleared by an empty retained publish
    run(client("mosquitto_pub", addr, "mqttv5").args([
        "-t",
        "state/lamp",
        "-m",
        "on",
        "-r",
        "-q",
        "1",
    ]))
    .await;
    let out =
        run(client("mosquitto_sub", addr, "mqttv311").args(["-t", "state/#", "-C", "1", "-v"]))
            .await;
    assert_eq!(text(&out.stdout), "state/lamp on\n");
    run(client("mosquitto_pub", addr, "mqttv5").args(["-t", "state/lamp", "-n", "-r"])).await;
    let out =
        run(client("mosquitto_sub", addr, "mqttv5").args(["-t", "state/#", "-C", "1", "-W", "1"]))
            .await;
    assert_eq!(text(&out.stdout), "", "retained message was cleared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_acl_with_mosquitto_clients() {
    let addr = start(false).await;
    let alice = format!("alice@{ORG}");
    let tok = token("alice", 600);
    for version in ["mqttv311", "mqttv5"] {
        // denied on another user's topics, allowed on its own
        let denied = run(client("mosquitto_sub", addr, version).args([
            "-u",
            &alice,
            "-P",
            &tok,
            "-t",
            "users/+/notifications",
            "-C",
            "1",
            "-W",
            "2",
        ]))
        .await;
        assert!(
            text(&denied.stderr).contains("All subscription requests were denied"),
            "{version}: {}",
            text(&denied.stderr)
        );
        let mut sub = client("mosquitto_sub", addr, version);
        sub.args([
            "-u",
            &alice,
            "-P",
            &tok,
            "-t",
            "users/alice/notifications",
            "-C",
            "1",
            "-q",
            "1",
        ]);
        let sub = tokio::spawn(async move { run(&mut sub).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let out = run(client("mosquitto_pub", addr, version).args([
            "-u",
            &alice,
            "-P",
            &tok,
            "-t",
            "users/alice/notifications",
            "-m",
            "hello",
            "-q",
            "1",
        ]))
        .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&sub.await.unwrap().stdout), "hello\n");
    }
    // v5 publish outside the ACL: PUBACK 0x87
    let out = run(client("mosquitto_pub", addr, "mqttv5").args([
        "-u",
        &alice,
        "-P",
        &tok,
        "-t",
        "users/bob/x",
        "-m",
        "x",
        "-q",
        "1",
        "-d",
    ]))
    .await;
    assert!(
        text(&out.stdout).contains("RC:135"),
        "{}",
        text(&out.stdout)
    );
    // bad credentials: refused with the right code in each version
    let bad = run(client("mosquitto_sub", addr, "mqttv311").args([
        "-u",
        &alice,
        "-P",
        "tkn_forged",
        "-t",
        "users/alice/x",
        "-C",
        "1",
    ]))
    .await;
    assert!(
        text(&bad.stderr).contains("bad user name or password"),
        "{}",
        text(&bad.stderr)
    );
    let wrong_user = run(client("mosquitto_sub", addr, "mqttv5").args([
        "-u",
        &format!("bob@{ORG}"),
        "-P",
        &tok,
        "-t",
        "users/bob/x",
        "-C",
        "1",
    ]))
    .await;
    assert!(
        text(&wrong_user.stderr).contains("Bad User Name or Password"),
        "{}",
        text(&wrong_user.stderr)
    );
    let anonymous = run(client("mosquitto_sub", addr, "mqttv5").args(["-t", "x", "-C", "1"])).await;
    assert!(
        text(&anonymous.stderr).contains("Not authorized"),
        "{}",
        text(&anonymous.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_closes_v5_with_0xa0_and_v311_too() {
    let addr = start(false).await;
    let alice = format!("alice@{ORG}");
    let tok = token("alice", 3);
    let started = Instant::now();
    let (mut v5, code) =
        Raw::connect(addr, Protocol::V5, "exp-v5", Some((&alice, &tok)), None).await;
    assert_eq!(code, ReasonCode::SUCCESS);
    let (mut v3, code) =
        Raw::connect(addr, Protocol::V311, "exp-v3", Some((&alice, &tok)), None).await;
    assert_eq!(code, ReasonCode::SUCCESS);
    match tokio::time::timeout(Duration::from_secs(6), v5.recv())
        .await
        .unwrap()
    {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason, ReasonCode::MAXIMUM_CONNECT_TIME);
            assert_eq!(d.properties.reason_string, Some("token expired"));
        }
        other => panic!("expected DISCONNECT 0xA0, got {other:?}"),
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed <= Duration::from_millis(4000),
        "closed after {elapsed:?}"
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(3), v3.recv())
            .await
            .unwrap()
            .is_none(),
        "v3.1.1 connection closed"
    );
    // and the expired token cannot reconnect
    let (_, code) = Raw::connect(addr, Protocol::V5, "exp-v5", Some((&alice, &tok)), None).await;
    assert_eq!(code, ReasonCode::BAD_USERNAME_OR_PASSWORD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_on_abrupt_close_only() {
    let addr = start(true).await;
    let mut sub = client("mosquitto_sub", addr, "mqttv5");
    sub.args(["-t", "wills/#", "-C", "1", "-v"]);
    let sub = tokio::spawn(async move { run(&mut sub).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // a clean DISCONNECT: no will
    let (mut clean, _) = Raw::connect(
        addr,
        Protocol::V5,
        "w1",
        None,
        Some(("wills/clean", b"should not appear")),
    )
    .await;
    clean
        .send(&Packet::Disconnect(mqtt::ReasonPacket {
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }))
        .await;
    // an abrupt close: the will goes out
    let (abrupt, _) = Raw::connect(
        addr,
        Protocol::V311,
        "w2",
        None,
        Some(("wills/abrupt", b"gone")),
    )
    .await;
    drop(abrupt);
    assert_eq!(text(&sub.await.unwrap().stdout), "wills/abrupt gone\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_same_user_0x8e_other_user_has_its_own_session() {
    let addr = start(false).await;
    let (alice, bob) = (format!("alice@{ORG}"), format!("bob@{ORG}"));
    let (ta, tb) = (token("alice", 600), token("bob", 600));
    let (mut first, code) =
        Raw::connect(addr, Protocol::V5, "phone", Some((&alice, &ta)), None).await;
    assert_eq!(code, ReasonCode::SUCCESS);
    // client ids are scoped to their identity: bob's "phone" is another session, and alice's
    // live connection is not touched (the next packet it gets is the takeover below)
    let (_bob, code) = Raw::connect(addr, Protocol::V5, "phone", Some((&bob, &tb)), None).await;
    assert_eq!(code, ReasonCode::SUCCESS, "bob gets his own session");
    let (_second, code) =
        Raw::connect(addr, Protocol::V5, "phone", Some((&alice, &ta)), None).await;
    assert_eq!(code, ReasonCode::SUCCESS);
    match tokio::time::timeout(Duration::from_secs(3), first.recv())
        .await
        .unwrap()
    {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::SESSION_TAKEN_OVER),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_disconnects_one_client_and_nobody_else_notices() {
    let addr = start(true).await;
    let (mut good, _) = Raw::connect(addr, Protocol::V5, "good", None, None).await;
    let (mut bad, _) = Raw::connect(addr, Protocol::V5, "bad", None, None).await;
    // a PUBLISH with a wildcard in its topic name
    bad.stream
        .write_all(&[0x30, 4, 0, 2, b'a', b'+'])
        .await
        .unwrap();
    match bad.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::TOPIC_NAME_INVALID),
        other => panic!("{other:?}"),
    }
    assert!(bad.recv().await.is_none());
    // a first packet declaring 268,435,455 bytes is refused at once
    let mut huge = TcpStream::connect(addr).await.unwrap();
    huge.write_all(&[0x10, 0xff, 0xff, 0xff, 0x7f])
        .await
        .unwrap();
    let mut b = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), huge.read(&mut b))
        .await
        .unwrap()
        .unwrap_or(0);
    assert!(n == 0 || b[0] >> 4 == 2, "closed or answered with CONNACK");
    // the good client still works
    good.send(&Packet::Pingreq).await;
    assert_eq!(good.recv().await, Some(Packet::Pingresp));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_in_session_refreshes_during_a_qos1_stream_lose_nothing() {
    const N: usize = 10_000;
    // this test is about refresh atomicity, not slow consumers: the raw client acknowledges
    // one message per write while sharing two threads with the broker, so give it room
    let addr = start_with(false, |c| c.session.max_queued = 10 * N).await;
    let alice = format!("alice@{ORG}");
    let (mut sub, code) = Raw::connect(
        addr,
        Protocol::V5,
        "stream-sub",
        Some((&alice, &token("alice", 600))),
        None,
    )
    .await;
    assert_eq!(code, ReasonCode::SUCCESS);
    sub.send(&subscribe("users/alice/stream", 1)).await;
    assert!(matches!(sub.recv().await, Some(Packet::Suback(_))));
    let publisher = tokio::spawn(async move {
        let payloads: Vec<String> = (0..N).map(|i| i.to_string()).collect();
        let mut cmd = client("mosquitto_pub", addr, "mqttv5");
        cmd.args([
            "-u",
            &alice,
            "-P",
            &token_with("alice", 600, &["users/{user}/#"], 99),
            "-t",
            "users/alice/stream",
            "-q",
            "1",
            "-l",
        ]);
        cmd.stdin(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all((payloads.join("\n") + "\n").as_bytes())
            .await
            .unwrap();
        drop(stdin);
        tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .unwrap()
            .unwrap()
    });
    let mut seen = vec![0u32; N];
    let (mut received, mut refreshes, mut auth_ok) = (0, 0, 0);
    while received < N {
        let packet = tokio::time::timeout(Duration::from_secs(10), sub.recv())
            .await
            .expect("stream stalled");
        match packet {
            Some(Packet::Publish(p)) => {
                let i: usize = std::str::from_utf8(p.payload).unwrap().parse().unwrap();
                seen[i] += 1;
                received += 1;
                let id = p.packet_id.unwrap();
                sub.send(&Packet::Puback(mqtt::Ack {
                    packet_id: id,
                    reason: ReasonCode::SUCCESS,
                    properties: Properties::default(),
                }))
                .await;
                if received % (N / 6) == 0 && refreshes < 5 {
                    refreshes += 1;
                    let fresh = token_with("alice", 600, &["users/{user}/#"], refreshes as u8);
                    sub.send(&auth_packet(&fresh)).await;
                }
            }
            Some(Packet::Auth(a)) => {
                assert_eq!(a.reason, ReasonCode::SUCCESS);
                assert_eq!(
                    a.properties.authentication_method,
                    Some("cloudsignal-token")
                );
                auth_ok += 1;
            }
            other => panic!("unexpected {other:?} after {received} messages"),
        }
    }
    assert!(publisher.await.unwrap().success());
    // collect any AUTH answers still in flight
    while auth_ok < refreshes {
        match tokio::time::timeout(Duration::from_secs(3), sub.recv())
            .await
            .unwrap()
        {
            Some(Packet::Auth(_)) => auth_ok += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((refreshes, auth_ok), (5, 5));
    assert!(
        seen.iter().all(|&n| n == 1),
        "every message exactly once; missing or repeated: {:?}",
        seen.iter()
            .enumerate()
            .filter(|(_, n)| **n != 1)
            .take(5)
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauth_narrowing_the_acl_drops_subscriptions_and_foreign_tokens_close_0x87() {
    let addr = start(false).await;
    let alice = format!("alice@{ORG}");
    let wide = token_with("alice", 600, &["users/{user}/#"], 1);
    let (mut c, _) = Raw::connect(addr, Protocol::V5, "narrow", Some((&alice, &wide)), None).await;
    c.send(&subscribe("users/alice/a/#", 1)).await;
    assert!(
        matches!(c.recv().await, Some(Packet::Suback(s)) if s.reasons == [ReasonCode::GRANTED_QOS_1])
    );
    c.send(&auth_packet(&token_with(
        "alice",
        600,
        &["users/{user}/b/#"],
        2,
    )))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::Auth(a)) if a.reason == ReasonCode::SUCCESS));
    // users/alice/a/# is gone: a publish there no longer arrives, one under b/ still would
    let publisher_token = token_with("alice", 600, &["users/{user}/#"], 3);
    run(client("mosquitto_pub", addr, "mqttv5").args([
        "-u",
        &alice,
        "-P",
        &publisher_token,
        "-t",
        "users/alice/a/x",
        "-m",
        "late",
        "-q",
        "1",
    ]))
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), c.recv())
            .await
            .is_err(),
        "nothing delivered on the dropped subscription"
    );
    // the narrowed ACL also applies to new subscriptions
    c.send(&subscribe("users/alice/a/#", 2)).await;
    assert!(
        matches!(c.recv().await, Some(Packet::Suback(s)) if s.reasons == [ReasonCode::NOT_AUTHORIZED])
    );
    // another user's token is refused and closes the session
    c.send(&auth_packet(&token("bob", 600))).await;
    match c.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::NOT_AUTHORIZED),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_enhanced_auth_method_from_the_start() {
    let addr = start(false).await;
    let alice = format!("alice@{ORG}");
    let tok = token("alice", 600);
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut raw = Raw {
        stream,
        buf: Vec::new(),
        protocol: Protocol::V5,
    };
    raw.send(&Packet::Connect(Connect {
        protocol: Protocol::V5,
        clean_start: true,
        keep_alive: 0,
        properties: Properties {
            authentication_method: Some("cloudsignal-token"),
            authentication_data: Some(tok.as_bytes()),
            ..Properties::default()
        },
        client_id: "enhanced",
        will: None,
        username: Some(&alice),
        password: None,
    }))
    .await;
    match raw.recv().await {
        Some(Packet::Connack(c)) => {
            assert_eq!(c.reason, ReasonCode::SUCCESS);
            assert_eq!(
                c.properties.authentication_method,
                Some("cloudsignal-token")
            );
        }
        other => panic!("{other:?}"),
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap())
        })
        .unwrap()
}

/// One subscriber never reads while 100,000 messages are published: broker memory stays
/// bounded and another subscriber keeps receiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_does_not_grow_memory_or_block_others() {
    const N: usize = 100_000;
    let addr = start(true).await;
    // the slow consumer: subscribes, then never reads its socket again
    let (mut slow, _) = Raw::connect(addr, Protocol::V5, "slow", None, None).await;
    slow.send(&Packet::Subscribe(mqtt::Subscribe {
        packet_id: std::num::NonZeroU16::new(1).unwrap(),
        properties: Properties::default(),
        filters: vec![(
            "load/#",
            mqtt::SubscriptionOptions {
                qos: QoS::AtMostOnce,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            },
        )],
    }))
    .await;
    assert!(matches!(slow.recv().await, Some(Packet::Suback(_))));
    // the healthy subscriber counts what it gets until the end marker
    let mut fast = client("mosquitto_sub", addr, "mqttv5");
    fast.args(["-t", "load/#", "-t", "done", "-q", "1", "-v"]);
    fast.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut fast = fast.spawn().unwrap();
    let mut fast_err = fast.stderr.take().unwrap();
    let mut fast_out = fast.stdout.take().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib();
    let payload = "0123456789abcdef\n".repeat(N);
    let mut publisher = client("mosquitto_pub", addr, "mqttv5");
    publisher
        .args(["-t", "load/x", "-q", "0", "-l"])
        .stdin(std::process::Stdio::piped());
    let mut publisher = publisher.spawn().unwrap();
    let mut stdin = publisher.stdin.take().unwrap();
    stdin.write_all(payload.as_bytes()).await.unwrap();
    drop(stdin);
    assert!(
        tokio::time::timeout(Duration::from_secs(60), publisher.wait())
            .await
            .unwrap()
            .unwrap()
            .success()
    );
    run(client("mosquitto_pub", addr, "mqttv5").args(["-t", "done", "-m", "end", "-q", "1"])).await;
    let mut text_out = String::new();
    let mut chunk = vec![0u8; 1 << 16];
    while !text_out.contains("done end") {
        let n = tokio::time::timeout(Duration::from_secs(30), fast_out.read(&mut chunk))
            .await
            .expect("healthy subscriber stalled")
            .unwrap();
        if n == 0 {
            let mut err = String::new();
            let _ = fast_err.read_to_string(&mut err).await;
            panic!("healthy subscriber disconnected: {err}");
        }
        text_out.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    let received = text_out.lines().filter(|l| l.starts_with("load/x")).count();
    let growth_mib = rss_kib().saturating_sub(before) / 1024;
    let _ = fast.kill().await;
    eprintln!(
        "healthy subscriber received {received} of {N} QoS 0 messages; RSS grew {growth_mib} MiB"
    );
    assert!(
        received > N / 10,
        "the healthy subscriber kept receiving ({received})"
    );
    // 100k messages of ~60 bytes queued would be several MiB per copy; the bound is the
    // per-connection channel (1,024 messages) plus socket buffers
    assert!(growth_mib < 64, "broker memory grew by {growth_mib} MiB");
    drop(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_take_the_same_delay_whatever_the_cause() {
    let addr = start(false).await;
    let alice = format!("alice@{ORG}");
    let good = token("alice", 600);
    type Credentials<'a> = Option<(&'a str, &'a str)>;
    let cases: Vec<(&str, Credentials<'_>, ReasonCode)> = vec![
        (
            "forged token",
            Some((&alice, "tkn_eyJhbGciOiJFZERTQSJ9.e30.AAAA")),
            ReasonCode::BAD_USERNAME_OR_PASSWORD,
        ),
        (
            "token of another user",
            Some(("bob@org_k7xm4pqr2n5t", &good)),
            ReasonCode::BAD_USERNAME_OR_PASSWORD,
        ),
        ("no credentials", None, ReasonCode::NOT_AUTHORIZED),
    ];
    for (name, user, want) in cases {
        let started = Instant::now();
        let (_, code) = Raw::connect(addr, Protocol::V5, "delay", user, None).await;
        let took = started.elapsed();
        assert_eq!(code, want, "{name}");
        assert!(
            took >= Duration::from_millis(500),
            "{name}: refused after {took:?}, before the uniform delay"
        );
    }
    // and a good client still gets in
    let (_, code) = Raw::connect(addr, Protocol::V5, "fast", Some((&alice, &good)), None).await;
    assert_eq!(code, ReasonCode::SUCCESS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_ban_the_source_not_other_clients() {
    let addr = start_with(false, |c| {
        c.auth_failure_delay = Duration::from_millis(50);
        c.throttle = cloudsignal_broker::throttle::ThrottlePolicy {
            max_failures: 3,
            ..Default::default()
        };
    })
    .await;
    let alice = format!("alice@{ORG}");
    let good = token("alice", 600);
    let attacker = [127, 0, 0, 9];
    let mut delays = Vec::new();
    for i in 0..3 {
        let started = Instant::now();
        let (_, code) = Raw::connect_from(
            attacker,
            addr,
            Protocol::V5,
            &format!("x{i}"),
            Some((&format!("mallory{i}@{ORG}"), "tkn_guess")),
            None,
        )
        .await;
        assert_eq!(code, ReasonCode::BAD_USERNAME_OR_PASSWORD);
        delays.push(started.elapsed());
    }
    assert!(
        delays[2] >= Duration::from_millis(400),
        "the delay grows with failures: {delays:?}"
    );
    // now banned: even a valid token from that source is refused with 0x8A
    let (_, code) = Raw::connect_from(
        attacker,
        addr,
        Protocol::V5,
        "x9",
        Some((&alice, &good)),
        None,
    )
    .await;
    assert_eq!(code, ReasonCode::BANNED);
    // clients from other sources are unaffected
    let (_, code) = Raw::connect_from(
        [127, 0, 0, 10],
        addr,
        Protocol::V5,
        "ok",
        Some((&alice, &good)),
        None,
    )
    .await;
    assert_eq!(code, ReasonCode::SUCCESS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_warning_to_that_client_only_and_grace_period() {
    let addr = start_with(false, |c| c.expiry_grace = Duration::from_secs(2)).await;
    let alice = format!("alice@{ORG}");
    let tok = token("alice", 2);
    let started = Instant::now();
    let (mut c, code) =
        Raw::connect(addr, Protocol::V5, "warned", Some((&alice, &tok)), None).await;
    assert_eq!(code, ReasonCode::SUCCESS);
    c.send(&subscribe("$cloudsignal/session/expiring", 1)).await;
    assert!(
        matches!(c.recv().await, Some(Packet::Suback(s)) if s.reasons == [ReasonCode::GRANTED_QOS_1])
    );
    match c.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(p.topic, "$cloudsignal/session/expiring");
            let body: serde_json::Value = serde_json::from_slice(p.payload).unwrap();
            assert!(body["expires_at"].as_u64().unwrap() > 0);
        }
        other => panic!("expected the expiry warning, got {other:?}"),
    }
    match tokio::time::timeout(Duration::from_secs(8), c.recv())
        .await
        .unwrap()
    {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::MAXIMUM_CONNECT_TIME),
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the grace period was honoured ({:?})",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_statistics_are_retained_under_dollar_sys() {
    let addr = start(true).await;
    let (_idle, _) = Raw::connect(addr, Protocol::V311, "idle", None, None).await;
    let out = run(client("mosquitto_sub", addr, "mqttv5").args([
        "-t",
        "$SYS/broker/#",
        "-C",
        "10",
        "-v",
        "-W",
        "5",
    ]))
    .await;
    let sys = text(&out.stdout);
    assert!(sys.contains("$SYS/broker/version cloudsignal "), "{sys}");
    assert!(sys.contains("$SYS/broker/clients/connected "), "{sys}");
    assert!(sys.contains("$SYS/broker/subscriptions/count "), "{sys}");
    // a wildcard-first filter does not see $SYS topics [MQTT-4.7.2-1]
    let all =
        run(client("mosquitto_sub", addr, "mqttv5").args(["-t", "#", "-C", "1", "-W", "1"])).await;
    assert!(
        !text(&all.stdout).contains("cloudsignal"),
        "{}",
        text(&all.stdout)
    );
}
