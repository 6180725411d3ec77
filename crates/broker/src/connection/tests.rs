//! The connection's policy, driven with no socket and no timer: packets in, packets out,
//! time passed by hand, actions carried out by the test (the real router behind the
//! backplane trait, the real authenticator chain where one runs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::auth::{Authenticator, Refusal};
use crate::mailbox::Mailbox;
use cloudsignal_core::acl::AclRules;
use cloudsignal_core::mqtt::{
    self, Connect, Packet, Properties, Protocol, Publish, QoS, ReasonPacket, Subscribe, Will,
};
use cloudsignal_core::revocation::Credential;

const ORG: &str = "org_testtesttest";

fn shared_with(tune: impl FnOnce(&mut crate::BrokerConfig)) -> Arc<Shared> {
    let auth = Authenticator::new(Default::default(), true);
    let mut config = crate::BrokerConfig::tcp("127.0.0.1:0".parse().unwrap(), auth);
    tune(&mut config);
    Arc::new(Shared::new(config, Default::default()))
}

fn shared() -> Arc<Shared> {
    shared_with(|_| {})
}

/// What the client read, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rx {
    Connack(ReasonCode, bool),
    Publish(String, Vec<u8>, QoS),
    Puback(ReasonCode),
    Suback(Vec<ReasonCode>),
    Disconnect(ReasonCode, Option<String>),
    Auth(ReasonCode),
    Other(u8),
}

/// One client of the connection under test.
struct Client {
    conn: Connection,
    mailbox: Arc<Mailbox>,
    out: Vec<u8>,
}

impl Client {
    fn open(shared: &Arc<Shared>, id: ConnId, ip: [u8; 4], t0: Instant) -> Self {
        Self::with_mailbox(shared, id, ip, t0, Arc::new(Mailbox::new(1024)))
    }

    fn with_mailbox(
        shared: &Arc<Shared>,
        id: ConnId,
        ip: [u8; 4],
        t0: Instant,
        mailbox: Arc<Mailbox>,
    ) -> Self {
        let peer = PeerInfo::plain((ip, 40000).into(), "tcp");
        let clock = Clock::new(t0, 1_800_000_000_000);
        Self {
            conn: Connection::new(shared.clone(), peer, id, mailbox.clone(), clock),
            mailbox,
            out: Vec::new(),
        }
    }

    fn send(&mut self, packet: &Packet<'_>, now: Instant) {
        let mut bytes = Vec::new();
        packet.encode(Protocol::V5, &mut bytes);
        self.conn.handle_bytes(&bytes, now);
    }

    fn connect(&mut self, client_id: &str, clean_start: bool, will: Option<Will<'_>>) -> Action {
        let properties = Properties {
            session_expiry_interval: Some(if clean_start { 0 } else { 300 }),
            ..Default::default()
        };
        let packet = Packet::Connect(Connect {
            protocol: Protocol::V5,
            clean_start,
            // no keep alive: the tests jump minutes ahead
            keep_alive: 0,
            properties,
            client_id,
            will,
            username: Some("alice@org_testtesttest"),
            password: Some(b"tkn_whatever"),
        });
        self.send(&packet, self.now());
        self.actions().pop().expect("an action")
    }

    fn now(&self) -> Instant {
        self.conn.clock.epoch
    }

    /// Handles everything pending; the actions asked for.
    fn actions(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        while let Some(a) = self.conn.poll_action(self.now()) {
            actions.push(a);
        }
        actions
    }

    /// Connects as `principal` (the chain's decision given by hand).
    fn admit(&mut self, client_id: &str, principal: Principal, will: Option<Will<'_>>) {
        let Action::Authenticate(req) = self.connect(client_id, true, will) else {
            panic!("the CONNECT goes to the authenticator chain");
        };
        self.conn
            .authenticated(*req, Ok((Arc::new(principal), "test")), self.now());
        assert_eq!(self.read(), vec![Rx::Connack(ReasonCode::SUCCESS, false)]);
    }

    fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, id: u16) {
        let packet = Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic,
            packet_id: (qos != QoS::AtMostOnce).then(|| mqtt::PacketId::new(id).unwrap()),
            properties: Properties::default(),
            payload,
        });
        self.send(&packet, self.now());
    }

    fn subscribe(&mut self, filter: &str) {
        let packet = Packet::Subscribe(Subscribe {
            packet_id: mqtt::PacketId::new(1).unwrap(),
            properties: Properties::default(),
            filters: vec![(
                filter,
                mqtt::SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                },
            )],
        });
        self.send(&packet, self.now());
        assert!(self.actions().is_empty());
    }

    /// Takes what the router queued for this client (as the driver would).
    fn take_mail(&mut self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let mail = rt.block_on(async {
            tokio::time::timeout(
                Duration::from_millis(50),
                self.mailbox.recv(100, usize::MAX),
            )
            .await
        });
        if let Ok(mail) = mail {
            self.conn.handle_mail(mail);
        }
    }

    /// Decodes everything written to the client.
    fn read(&mut self) -> Vec<Rx> {
        while let Some(bytes) = self.conn.poll_transmit() {
            self.out.extend(bytes);
        }
        let mut rx = Vec::new();
        let mut at = 0;
        while let Some((packet, used)) =
            mqtt::decode_from_server(&self.out[at..], Protocol::V5, 1 << 20).unwrap()
        {
            rx.push(match packet {
                Packet::Connack(c) => Rx::Connack(c.reason, c.session_present),
                Packet::Publish(p) => Rx::Publish(p.topic.into(), p.payload.to_vec(), p.qos),
                Packet::Puback(a) => Rx::Puback(a.reason),
                Packet::Suback(s) => Rx::Suback(s.reasons),
                Packet::Disconnect(d) => {
                    Rx::Disconnect(d.reason, d.properties.reason_string.map(Into::into))
                }
                Packet::Auth(a) => Rx::Auth(a.reason),
                other => Rx::Other(other.packet_type()),
            });
            at += used;
        }
        self.out.drain(..at);
        rx
    }
}

fn alice(exp: Option<u64>) -> Principal {
    let rules = AclRules::new(["users/{user}/#"], ["users/{user}/#"]).unwrap();
    let credential = Credential {
        org: Some(ORG.into()),
        user: Some("alice".into()),
        ..Default::default()
    };
    Principal::user(ORG, "alice", &rules, "c1", exp.map(UnixTime), credential).unwrap()
}

fn anonymous(shared: &Shared) -> Principal {
    shared.auth.anonymous().unwrap()
}

#[test]
fn a_refusal_waits_for_the_uniform_delay_whatever_its_cause() {
    let shared = shared();
    let mut c = Client::open(&shared, 1, [10, 0, 0, 1], Instant::now());
    let Action::Authenticate(req) = c.connect("c1", true, None) else {
        panic!("the CONNECT goes to the chain");
    };
    let refused = Refusal {
        reason: ReasonCode::BAD_USERNAME_OR_PASSWORD,
        cause: "forged".into(),
    };
    let t0 = c.now();
    c.conn.authenticated(*req, Err(refused), t0);
    assert!(c.read().is_empty(), "nothing is answered before the delay");
    let delay = shared.auth_failure_delay;
    assert_eq!(c.conn.poll_timeout(), Some(t0 + delay));
    c.conn.handle_timeout(t0 + delay - Duration::from_millis(1));
    assert!(c.read().is_empty());
    c.conn.handle_timeout(t0 + delay);
    assert_eq!(
        c.read(),
        vec![Rx::Connack(ReasonCode::BAD_USERNAME_OR_PASSWORD, false)]
    );
    assert!(c.conn.is_finished());
    assert!(c.conn.finish(t0 + delay).is_none(), "no session was made");
}

#[test]
fn a_banned_source_costs_no_authentication() {
    let shared = shared_with(|c| c.throttle.max_failures = 1);
    let t0 = Instant::now();
    let mut first = Client::open(&shared, 1, [10, 0, 0, 2], t0);
    let Action::Authenticate(req) = first.connect("c1", true, None) else {
        panic!("the first CONNECT goes to the chain");
    };
    let refused = Refusal {
        reason: ReasonCode::BAD_USERNAME_OR_PASSWORD,
        cause: "wrong password".into(),
    };
    first.conn.authenticated(*req, Err(refused), t0);
    let mut second = Client::open(&shared, 2, [10, 0, 0, 2], t0);
    let packet = Packet::Connect(Connect {
        protocol: Protocol::V5,
        clean_start: true,
        keep_alive: 60,
        properties: Properties::default(),
        client_id: "c2",
        will: None,
        username: Some("alice@org_testtesttest"),
        password: Some(b"tkn_x"),
    });
    second.send(&packet, t0);
    assert!(
        second.actions().is_empty(),
        "a banned source is not authenticated"
    );
    second.conn.handle_timeout(t0 + shared.auth_failure_delay);
    assert_eq!(second.read(), vec![Rx::Connack(ReasonCode::BANNED, false)]);
    // another source is unaffected
    let mut other = Client::open(&shared, 3, [10, 0, 0, 3], t0);
    assert!(matches!(
        other.connect("c3", true, None),
        Action::Authenticate(_)
    ));
}

#[test]
fn the_acl_is_checked_on_every_publish_and_subscribe() {
    let shared = shared();
    let t0 = Instant::now();
    let mut bob = Client::open(&shared, 1, [10, 0, 0, 1], t0);
    bob.admit("watcher", anonymous(&shared), None);
    let mut alice_c = Client::open(&shared, 2, [10, 0, 0, 2], t0);
    alice_c.admit("c1", alice(None), None);

    alice_c.subscribe("users/bob/#");
    alice_c.subscribe("users/alice/#");
    assert_eq!(
        alice_c.read(),
        vec![
            Rx::Suback(vec![ReasonCode::NOT_AUTHORIZED]),
            Rx::Suback(vec![ReasonCode(1)])
        ]
    );
    alice_c.publish("users/bob/inbox", b"forged", QoS::AtLeastOnce, 7);
    alice_c.publish("users/alice/out", b"mine", QoS::AtLeastOnce, 8);
    assert!(alice_c.actions().is_empty());
    assert_eq!(
        alice_c.read(),
        vec![
            Rx::Puback(ReasonCode::NOT_AUTHORIZED),
            Rx::Puback(ReasonCode::SUCCESS)
        ]
    );
    // alice's own message reaches her; the refused one reached nobody (alice's org is another
    // tenant than the anonymous watcher's, so nothing crosses to it either)
    alice_c.take_mail();
    assert_eq!(
        alice_c.read(),
        vec![Rx::Publish(
            "users/alice/out".into(),
            b"mine".to_vec(),
            QoS::AtLeastOnce
        )]
    );
    bob.take_mail();
    assert!(bob.read().is_empty());
}

#[test]
fn an_expired_credential_closes_0xa0_and_its_will_is_discarded() {
    let shared = shared_with(|c| c.expiry_grace = Duration::from_secs(5));
    let t0 = Instant::now();
    let mut watcher = Client::open(&shared, 1, [10, 0, 0, 1], t0);
    watcher.admit("w", alice(None), None);
    watcher.subscribe("users/alice/#");
    watcher.read();
    let exp = 1_800_000_000 + 120;
    let mut c = Client::open(&shared, 2, [10, 0, 0, 2], t0);
    let will = Will {
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties::default(),
        topic: "users/alice/gone",
        payload: b"bye",
    };
    c.admit("c1", alice(Some(exp)), Some(will));
    let closes = t0 + Duration::from_secs(125);
    let timers = c.conn.timers();
    assert!(
        timers.contains(&Some((Timer::Expiry, closes))),
        "{timers:?}"
    );
    c.conn.handle_timeout(closes - Duration::from_millis(1));
    assert!(c.read().is_empty());
    c.conn.handle_timeout(closes);
    assert_eq!(
        c.read(),
        vec![Rx::Disconnect(
            ReasonCode::MAXIMUM_CONNECT_TIME,
            Some("token expired".into())
        )]
    );
    assert!(c.actions().is_empty());
    assert!(c.conn.is_finished());
    c.conn.finish(closes);
    watcher.take_mail();
    assert!(watcher.read().is_empty(), "the will was not published");
}

#[test]
fn the_expiry_warning_comes_once_its_lead_before_exp() {
    let shared = shared();
    let t0 = Instant::now();
    let mut c = Client::open(&shared, 1, [10, 0, 0, 1], t0);
    c.admit("c1", alice(Some(1_800_000_000 + 600)), None);
    assert!(!c
        .conn
        .timers()
        .iter()
        .flatten()
        .any(|t| t.0 == Timer::ExpiryWarning));
    c.subscribe(crate::EXPIRY_WARNING_TOPIC);
    assert_eq!(c.read(), vec![Rx::Suback(vec![ReasonCode(1)])]);
    let lead = shared.expiry_warning.unwrap();
    let at = t0 + Duration::from_secs(600) - lead;
    assert!(c.conn.timers().contains(&Some((Timer::ExpiryWarning, at))));
    c.conn.handle_timeout(at);
    assert_eq!(
        c.read(),
        vec![Rx::Publish(
            crate::EXPIRY_WARNING_TOPIC.into(),
            format!("{{\"expires_at\":{}}}", 1_800_000_600).into_bytes(),
            QoS::AtMostOnce
        )]
    );
    assert!(!c
        .conn
        .timers()
        .iter()
        .flatten()
        .any(|t| t.0 == Timer::ExpiryWarning));
}

#[test]
fn a_will_is_published_on_loss_not_after_disconnect() {
    let shared = shared();
    let t0 = Instant::now();
    let mut watcher = Client::open(&shared, 1, [10, 0, 0, 1], t0);
    watcher.admit("w", anonymous(&shared), None);
    watcher.subscribe("wills/#");
    watcher.read();
    for (id, lost) in [(2, true), (3, false)] {
        let mut c = Client::open(&shared, id, [10, 0, 0, 2], t0);
        let will = Will {
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::default(),
            topic: "wills/c",
            payload: b"lost",
        };
        c.admit(&format!("c{id}"), anonymous(&shared), Some(will));
        if lost {
            c.conn.connection_lost();
        } else {
            let packet = Packet::Disconnect(ReasonPacket {
                reason: ReasonCode::SUCCESS,
                properties: Properties::default(),
            });
            c.send(&packet, t0);
        }
        assert!(c.actions().is_empty());
        assert!(c.conn.is_finished());
        c.conn.finish(t0);
        watcher.take_mail();
        let expected = if lost {
            vec![Rx::Publish(
                "wills/c".into(),
                b"lost".to_vec(),
                QoS::AtMostOnce,
            )]
        } else {
            vec![]
        };
        assert_eq!(watcher.read(), expected, "lost: {lost}");
    }
}

#[test]
fn a_takeover_waits_for_the_old_connections_state() {
    let shared = shared();
    let t0 = Instant::now();
    let mut old = Client::open(&shared, 1, [10, 0, 0, 1], t0);
    let Action::Authenticate(req) = old.connect("same", false, None) else {
        panic!()
    };
    old.conn
        .authenticated(*req, Ok((Arc::new(alice(None)), "test")), t0);
    assert_eq!(old.read(), vec![Rx::Connack(ReasonCode::SUCCESS, false)]);
    old.subscribe("users/alice/#");
    old.read();

    let mut new = Client::open(&shared, 2, [10, 0, 0, 2], t0);
    let Action::Authenticate(req) = new.connect("same", false, None) else {
        panic!()
    };
    new.conn
        .authenticated(*req, Ok((Arc::new(alice(None)), "test")), t0);
    let mut actions = new.actions();
    let Some(Action::AwaitHandoff(rx)) = actions.pop() else {
        panic!("the new connection waits for the old one's state");
    };
    assert!(new.read().is_empty(), "no CONNACK before the state arrives");
    assert_eq!(
        new.conn.room().0,
        0,
        "no deliveries before the state arrives"
    );

    // the old connection is told to close 0x8E, closes and hands its state on
    old.take_mail();
    assert_eq!(
        old.read(),
        vec![Rx::Disconnect(ReasonCode::SESSION_TAKEN_OVER, None)]
    );
    assert!(old.actions().is_empty());
    assert!(old.conn.finish(t0).is_none(), "not parked: handed on");
    let stored = rx.blocking_recv().ok();
    assert!(stored.is_some());
    new.conn.handed_over(stored, t0);
    assert_eq!(new.read(), vec![Rx::Connack(ReasonCode::SUCCESS, true)]);
    // the subscription came along
    new.publish("users/alice/x", b"hi", QoS::AtMostOnce, 0);
    assert!(new.actions().is_empty());
    new.take_mail();
    assert_eq!(
        new.read(),
        vec![Rx::Publish(
            "users/alice/x".into(),
            b"hi".to_vec(),
            QoS::AtMostOnce
        )]
    );
}

#[test]
fn a_publish_that_fills_a_subscriber_holds_the_publisher() {
    let shared = shared();
    let t0 = Instant::now();
    let mut slow = Client::with_mailbox(&shared, 1, [10, 0, 0, 1], t0, Arc::new(Mailbox::new(2)));
    slow.admit("slow", anonymous(&shared), None);
    slow.subscribe("t");
    slow.read();
    let mut publisher = Client::open(&shared, 2, [10, 0, 0, 2], t0);
    publisher.admit("pub", anonymous(&shared), None);
    publisher.publish("t", b"1", QoS::AtMostOnce, 0);
    assert!(publisher.actions().is_empty(), "room for one more");
    publisher.publish("t", b"2", QoS::AtMostOnce, 0);
    publisher.publish("t", b"3", QoS::AtMostOnce, 0);
    let Some(Action::WaitForSubscribers {
        mailboxes: full,
        patience,
    }) = publisher.conn.poll_action(t0)
    else {
        panic!("the publisher is held");
    };
    assert_eq!(patience, PIPE_PATIENCE, "its only subscriber: a pipe");
    assert!(Arc::ptr_eq(&full[0], &slow.mailbox));
    // the driver waits (here 10 ms) for room that never comes: the subscriber is stalled
    let limit = Duration::from_millis(10);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    assert!(!rt.block_on(full[0].wait_space(limit, limit)));
    publisher.conn.subscribers_waited(1, limit);
    // the third publish was not handled before: now it is, and a stalled subscriber holds
    // nobody
    assert!(publisher.actions().is_empty());
    let stalled: u64 = shared
        .router
        .tenants()
        .iter()
        .map(|t| t.stats.stalled)
        .sum();
    assert_eq!(stalled, 1);
    slow.take_mail();
    let got = slow.read();
    assert_eq!(got.len(), 3, "nothing was dropped: {got:?}");
}

#[test]
fn re_authentication_with_another_method_or_a_forged_token_closes() {
    let shared = shared();
    let t0 = Instant::now();
    for (method, data, expected) in [
        (
            "SCRAM-SHA-1",
            b"x".as_slice(),
            ReasonCode::BAD_AUTHENTICATION_METHOD,
        ),
        (
            crate::auth::TOKEN_AUTH_METHOD,
            b"tkn_forged".as_slice(),
            ReasonCode::NOT_AUTHORIZED,
        ),
    ] {
        let mut c = Client::open(&shared, 1, [10, 0, 0, 1], t0);
        c.admit("c1", alice(None), None);
        let packet = Packet::Auth(ReasonPacket {
            reason: ReasonCode::REAUTHENTICATE,
            properties: Properties {
                authentication_method: Some(method),
                authentication_data: Some(data),
                ..Default::default()
            },
        });
        c.send(&packet, t0);
        let mut actions = c.actions();
        assert!(matches!(actions.pop(), Some(Action::FetchKeys(Some(d))) if d == data));
        c.conn.keys_fetched(t0);
        let rx = c.read();
        assert!(
            matches!(rx.as_slice(), [Rx::Disconnect(r, _)] if *r == expected),
            "{method}: {rx:?}"
        );
        assert_eq!(
            c.conn.principal().unwrap().username,
            "alice@org_testtesttest"
        );
    }
}

#[test]
fn the_real_chain_decides_an_anonymous_connect() {
    let shared = shared();
    let t0 = Instant::now();
    let mut c = Client::open(&shared, 1, [10, 0, 0, 1], t0);
    let packet = Packet::Connect(Connect {
        protocol: Protocol::V5,
        clean_start: true,
        keep_alive: 0,
        properties: Properties::default(),
        client_id: "anon",
        will: None,
        username: None,
        password: None,
    });
    c.send(&packet, t0);
    let Some(Action::Authenticate(req)) = c.actions().pop() else {
        panic!()
    };
    let peer = PeerInfo::plain(([10, 0, 0, 1], 40000).into(), "tcp");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let decided = rt.block_on(shared.chain.connect(&req, &peer, c.conn.clock.unix(t0)));
    c.conn.authenticated(*req, decided, t0);
    assert_eq!(c.read(), vec![Rx::Connack(ReasonCode::SUCCESS, false)]);
    assert_eq!(c.conn.principal().unwrap().username, "anonymous");
}

#[test]
fn a_fan_out_waits_briefly_for_a_slow_reader_and_not_at_all_for_one_that_reads_nothing() {
    let shared = shared();
    let t0 = Instant::now();
    let mut keeps_up = Client::open(&shared, 1, [10, 0, 0, 1], t0);
    keeps_up.admit("fast", anonymous(&shared), None);
    keeps_up.subscribe("t");
    keeps_up.read();
    let mut slow = Client::with_mailbox(&shared, 2, [10, 0, 0, 2], t0, Arc::new(Mailbox::new(1)));
    slow.admit("slow", anonymous(&shared), None);
    slow.subscribe("t");
    let mut publisher = Client::open(&shared, 3, [10, 0, 0, 3], t0);
    publisher.admit("pub", anonymous(&shared), None);

    // a slow reader (it still reads): the publisher is held, briefly
    publisher.publish("t", b"1", QoS::AtMostOnce, 0);
    let Some(Action::WaitForSubscribers {
        mailboxes,
        patience,
    }) = publisher.conn.poll_action(t0)
    else {
        panic!("the publisher waits for the slow reader");
    };
    assert!(Arc::ptr_eq(&mailboxes[0], &slow.mailbox));
    assert_eq!(patience, FAN_OUT_PATIENCE);

    // the same reader's client reads nothing (its connection found its writes stuck): the
    // publisher does not wait for it, the one that keeps up gets everything
    assert!(slow.mailbox.mark_lagging());
    publisher.publish("t", b"2", QoS::AtMostOnce, 0);
    assert!(publisher.actions().is_empty(), "nobody is waited for");
    keeps_up.take_mail();
    assert_eq!(keeps_up.read().len(), 2);
}
