//! Helpers shared by the broker's socket tests: a broker on an ephemeral port, token
//! minting, the mosquitto command-line clients, and a raw client on core's codec.
#![allow(clippy::unwrap_used, dead_code, missing_docs, unreachable_pub)]

use cloudsignal_broker::auth::Authenticator;
use cloudsignal_broker::{Broker, BrokerConfig};
use cloudsignal_core::acl::AclRules;
use cloudsignal_core::ids::{OrgId, UserId};
use cloudsignal_core::keys::SigningKey;
use cloudsignal_core::mqtt::{self, Connect, Packet, Properties, Protocol, QoS, ReasonCode};
use cloudsignal_core::token::{issue, Jti, TokenClaims, TokenVerifier};
use cloudsignal_core::UnixTime;
use std::net::SocketAddr;
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

pub const ISS: &str = "https://issuer.test";
pub const ORG: &str = "org_k7xm4pqr2n5t";

pub fn key() -> SigningKey {
    SigningKey::from_seed("test-1", [5; 32])
}

pub fn now() -> UnixTime {
    UnixTime(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
}

/// Claims for `user` with `rules` (publish and subscribe), issued at `iat`, token id `seed`
/// repeated: the one place tests mint tokens.
pub fn claims(user: &str, ttl: u64, rules: &[&str], seed: u8, iat: UnixTime) -> TokenClaims {
    let rules = AclRules::new(rules.iter().copied(), rules.iter().copied()).unwrap();
    TokenClaims::new(
        ISS,
        UserId::parse(user).unwrap(),
        OrgId::parse(ORG).unwrap(),
        rules.resolve_identity(user, ORG).unwrap(),
        iat,
        ttl,
        Jti::from_random([seed; 16]),
    )
}

pub fn token(user: &str, ttl: u64) -> String {
    token_with(user, ttl, &["users/{user}/#"], ttl as u8)
}

pub async fn start(allow_anonymous: bool) -> SocketAddr {
    start_with(allow_anonymous, |_| {}).await
}

pub async fn start_with(allow_anonymous: bool, tune: impl FnOnce(&mut BrokerConfig)) -> SocketAddr {
    start_handle(allow_anonymous, tune).await.0
}

/// A broker and its control handle (revocations).
pub async fn start_handle(
    allow_anonymous: bool,
    tune: impl FnOnce(&mut BrokerConfig),
) -> (SocketAddr, cloudsignal_broker::BrokerHandle) {
    let mut tokens = TokenVerifier::default();
    tokens.trust(ISS, [key().verifying_entry()]);
    tokens.leeway = 0;
    let mut config = BrokerConfig::tcp(
        "127.0.0.1:0".parse().unwrap(),
        Authenticator::new(tokens, allow_anonymous),
    );
    tune(&mut config);
    let broker = Broker::bind(config).await.unwrap();
    let addr = broker.local_addrs()[0];
    let handle = broker.handle();
    tokio::spawn(broker.run(std::future::pending()));
    (addr, handle)
}

pub async fn run(cmd: &mut Command) -> Output {
    tokio::time::timeout(Duration::from_secs(10), cmd.output())
        .await
        .expect("client timed out")
        .unwrap()
}

pub fn client(bin: &str, addr: SocketAddr, version: &str) -> Command {
    let mut c = Command::new(bin);
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &addr.port().to_string(),
        "-V",
        version,
    ]);
    c.kill_on_drop(true);
    c
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A minimal client on core's codec, for exact reason codes and timing.
pub struct Raw {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    pub protocol: Protocol,
}

impl Raw {
    pub async fn connect(
        addr: SocketAddr,
        protocol: Protocol,
        client_id: &str,
        user: Option<(&str, &str)>,
        will: Option<(&str, &[u8])>,
    ) -> (Self, ReasonCode) {
        Self::connect_from([127, 0, 0, 1], addr, protocol, client_id, user, will).await
    }

    /// Sends any CONNECT and returns the CONNACK.
    pub async fn open(addr: SocketAddr, connect: Connect<'_>) -> (Self, mqtt::Connack<'static>) {
        let mut raw = Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
            protocol: connect.protocol,
        };
        raw.send(&Packet::Connect(connect)).await;
        match raw.recv().await {
            Some(Packet::Connack(c)) => (raw, c),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// The next packet within `secs` seconds (`None`: closed; panics on timeout).
    pub async fn recv_within(&mut self, secs: u64) -> Option<Packet<'static>> {
        tokio::time::timeout(Duration::from_secs(secs), self.recv())
            .await
            .expect("no packet in time")
    }

    /// Whether nothing arrives for `ms` milliseconds.
    pub async fn silent_for(&mut self, ms: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(ms), self.recv())
            .await
            .is_err()
    }

    /// Connects from a chosen loopback source address (127.0.0.0/8).
    pub async fn connect_from(
        source: [u8; 4],
        addr: SocketAddr,
        protocol: Protocol,
        client_id: &str,
        user: Option<(&str, &str)>,
        will: Option<(&str, &[u8])>,
    ) -> (Self, ReasonCode) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
            protocol,
        };
        let packet = Packet::Connect(Connect {
            protocol,
            clean_start: true,
            keep_alive: 0,
            properties: Properties::default(),
            client_id,
            will: will.map(|(topic, payload)| mqtt::Will {
                qos: QoS::AtMostOnce,
                retain: false,
                properties: Properties::default(),
                topic,
                payload,
            }),
            username: user.map(|u| u.0),
            password: user.map(|u| u.1.as_bytes()),
        });
        raw.send(&packet).await;
        match raw.recv().await {
            Some(Packet::Connack(c)) => (raw, c.reason),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, p: &Packet<'_>) {
        let mut out = Vec::new();
        p.encode(self.protocol, &mut out);
        self.stream.write_all(&out).await.unwrap();
    }

    /// The next packet, or `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Option<Packet<'static>> {
        loop {
            let complete = match mqtt::decode(&self.buf, self.protocol, 1 << 20) {
                Ok(Some((_, n))) => Some(n),
                _ => None,
            };
            if let Some(n) = complete {
                let bytes: &'static [u8] =
                    Box::leak(self.buf.drain(..n).collect::<Vec<u8>>().into_boxed_slice());
                return mqtt::decode(bytes, self.protocol, 1 << 20)
                    .unwrap()
                    .map(|(p, _)| p);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

pub fn token_with(user: &str, ttl: u64, rules: &[&str], seed: u8) -> String {
    issue(&claims(user, ttl, rules, seed, now()), &key())
}

pub fn auth_packet(token: &str) -> Packet<'_> {
    Packet::Auth(mqtt::ReasonPacket {
        reason: ReasonCode::REAUTHENTICATE,
        properties: Properties {
            authentication_method: Some("cloudsignal-token"),
            authentication_data: Some(token.as_bytes()),
            ..Properties::default()
        },
    })
}

pub fn subscribe(filter: &str, pid: u16) -> Packet<'_> {
    Packet::Subscribe(mqtt::Subscribe {
        packet_id: std::num::NonZeroU16::new(pid).unwrap(),
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
    })
}
