//! Revocation on a running broker, over real sockets: by token id and by user, each closing
//! exactly the matching live sessions with DISCONNECT 0x98 and refusing them afterwards.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use cloudsignal_core::mqtt::{Packet, Protocol, ReasonCode};
use cloudsignal_core::revocation::{Entry, Revocation};
use cloudsignal_core::token::issue;
use cloudsignal_core::UnixTime;
use common::*;

/// A token for `user` issued `age` seconds ago, with token id `seed` repeated.
fn token_aged(user: &str, age: u64, seed: u8) -> (String, String) {
    let c = claims(
        user,
        600,
        &["users/{user}/#"],
        seed,
        UnixTime(now().secs() - age),
    );
    (issue(&c, &key()), c.jti.as_str().to_owned())
}

async fn connect(
    addr: std::net::SocketAddr,
    client_id: &str,
    user: &str,
    token: &str,
) -> (Raw, ReasonCode) {
    let username = format!("{user}@{ORG}");
    Raw::connect(
        addr,
        Protocol::V5,
        client_id,
        Some((&username, token)),
        None,
    )
    .await
}

async fn expect_revoked(raw: &mut Raw) {
    match raw.recv_within(3).await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason, ReasonCode::ADMINISTRATIVE_ACTION);
            assert_eq!(d.properties.reason_string, Some("credential revoked"));
        }
        other => panic!("expected DISCONNECT 0x98, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_by_jti_and_by_user_closes_exactly_the_matching_sessions() {
    let (addr, broker) = start_handle(false, |c| {
        c.auth_failure_delay = std::time::Duration::from_millis(50)
    })
    .await;
    let (alice1, alice1_jti) = token_aged("alice", 0, 1);
    let (alice2, _) = token_aged("alice", 0, 2);
    let (bob_old, _) = token_aged("bob", 30, 3);
    let (carol, _) = token_aged("carol", 30, 4);
    let (mut a1, c) = connect(addr, "a1", "alice", &alice1).await;
    assert_eq!(c, ReasonCode::SUCCESS);
    let (mut a2, _) = connect(addr, "a2", "alice", &alice2).await;
    let (mut b, _) = connect(addr, "b", "bob", &bob_old).await;
    let (mut c3, _) = connect(addr, "c", "carol", &carol).await;

    // one token
    let closed = broker.revoke(&Entry {
        seq: 1,
        at: now(),
        revocation: Revocation::Token {
            jti: alice1_jti,
            exp: None,
        },
    });
    assert_eq!(closed, ["a1"]);
    expect_revoked(&mut a1).await;
    let (_, code) = connect(addr, "a1", "alice", &alice1).await;
    assert_eq!(
        code,
        ReasonCode::BAD_USERNAME_OR_PASSWORD,
        "a revoked token cannot reconnect"
    );

    // every token bob had up to 10 s ago
    let closed = broker.revoke(&Entry {
        seq: 2,
        at: UnixTime(now().secs() - 10),
        revocation: Revocation::User {
            org: ORG.into(),
            user: "bob".into(),
        },
    });
    assert_eq!(closed, ["b"]);
    expect_revoked(&mut b).await;
    let (_, code) = connect(addr, "b", "bob", &bob_old).await;
    assert_eq!(code, ReasonCode::BAD_USERNAME_OR_PASSWORD);
    let (fresh, _) = token_aged("bob", 0, 5);
    let (_, code) = connect(addr, "b", "bob", &fresh).await;
    assert_eq!(
        code,
        ReasonCode::SUCCESS,
        "a token issued after the revocation works"
    );

    // nobody else noticed
    for other in [&mut a2, &mut c3] {
        other.send(&Packet::Pingreq).await;
        assert_eq!(other.recv_within(3).await, Some(Packet::Pingresp));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_authentication_with_a_revoked_token_is_refused() {
    let (addr, broker) = start_handle(false, |_| {}).await;
    let (first, _) = token_aged("dave", 0, 6);
    let (next, next_jti) = token_aged("dave", 0, 7);
    let (mut d, _) = connect(addr, "d", "dave", &first).await;
    broker.revoke(&Entry {
        seq: 1,
        at: now(),
        revocation: Revocation::Token {
            jti: next_jti,
            exp: None,
        },
    });
    assert!(
        d.silent_for(200).await,
        "the live token is not the revoked one"
    );
    d.send(&auth_packet(&next)).await;
    match d.recv_within(3).await {
        Some(Packet::Disconnect(x)) => assert_eq!(x.reason, ReasonCode::NOT_AUTHORIZED),
        other => panic!("{other:?}"),
    }
}
