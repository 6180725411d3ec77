//! The authentication benchmarks (issues 4 and 5): authenticated CONNECT rate against
//! Mosquitto with a `password_file`, CloudSignal's API-key CONNECT rate with a warm cache
//! against its `tkn_` rate, the MQTT 5 re-authentication round trip, and the time from a
//! revocation API call to the DISCONNECT 0x98 on the revoked session.

use crate::{free_port, wait_listening, Broker};
use anyhow::{bail, Context, Result};
use cloudsignal_core::acl::AclRules;
use cloudsignal_core::ids::{OrgId, UserId};
use cloudsignal_core::keys::{KeySet, SigningKey};
use cloudsignal_core::mqtt::{
    self, Connect, Packet, Properties, Protocol, ReasonCode, ReasonPacket,
};
use cloudsignal_core::token::{issue, Jti, TokenClaims};
use cloudsignal_core::UnixTime;
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) const ISSUER: &str = "https://bench.invalid";
pub(crate) const ORG: &str = "org_benchbenchbe";

fn dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("cs-bench-auth-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

pub(crate) fn key() -> SigningKey {
    SigningKey::from_seed("bench-1", [9; 32])
}

/// A `tkn_` for `user` with token id `n`.
pub(crate) fn token(user: &str, n: u64) -> String {
    let rules = AclRules::new(["users/{user}/#"], ["users/{user}/#"]).unwrap_or_default();
    let mut jti = [0u8; 16];
    jti[..8].copy_from_slice(&n.to_be_bytes());
    let claims = TokenClaims::new(
        ISSUER,
        UserId::parse(user).unwrap_or_else(|_| UserId::parse("u").expect("valid")),
        OrgId::parse(ORG).expect("valid org"),
        rules,
        now(),
        3600,
        Jti::from_random(jti),
    );
    issue(&claims, &key())
}

/// Mosquitto with allow_anonymous false and a password_file holding `bench`/`bench-secret`.
pub(crate) fn start_mosquitto_password() -> Result<Broker> {
    let port = free_port();
    let d = dir()?;
    let passwd = d.join("passwd");
    let _ = std::fs::remove_file(&passwd);
    let status = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwd)
        .args(["bench", "bench-secret"])
        .status()
        .context("running mosquitto_passwd")?;
    if !status.success() {
        bail!("mosquitto_passwd failed");
    }
    let conf = d.join("mosquitto-auth.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
            passwd.display()
        ),
    )?;
    crate::spawn_mosquitto(&conf, port)
}

/// CloudSignal trusting the bench issuer (JWKS file), with its control plane on `api_port`.
pub(crate) fn start_cloudsignal_auth(api_port: u16) -> Result<Broker> {
    let exe = std::env::current_exe()?.with_file_name("cloudsignal");
    start_auth_binary(&exe, api_port)
}

/// [`start_cloudsignal_auth`] with another `cloudsignal` binary (an earlier build, to compare).
pub(crate) fn start_auth_binary(exe: &std::path::Path, api_port: u16) -> Result<Broker> {
    start_auth_binary_with(exe, api_port, &[])
}

/// [`start_auth_binary`] with `extra` flags (e.g. `--database-url`).
pub(crate) fn start_auth_binary_with(
    exe: &std::path::Path,
    api_port: u16,
    extra: &[&str],
) -> Result<Broker> {
    let port = free_port();
    let d = dir()?;
    let jwks = d.join("jwks.json");
    let mut set = KeySet::default();
    set.push(key().verifying_entry());
    std::fs::write(&jwks, set.to_jwks_json())?;
    let data = d.join(format!("data-{api_port}"));
    let _ = std::fs::remove_dir_all(&data);
    let child = Command::new(exe)
        .args([
            "serve",
            "--ws-addr",
            "off",
            "--issuer",
            ISSUER,
            "--issuer-jwks",
        ])
        .arg(&jwks)
        .args(["--mqtt-addr", &format!("127.0.0.1:{port}")])
        .args(["--control-addr", &format!("127.0.0.1:{api_port}")])
        .arg("--data-dir")
        .arg(&data)
        // the bench measures the broker, not its per-listener connect-rate limit
        .args(["--connect-rate", "1000000"])
        .args(extra)
        .env("CLOUDSIGNAL_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr)?;
    wait_listening(SocketAddr::from(([127, 0, 0, 1], api_port)))?;
    Ok(Broker {
        name: "cloudsignal",
        child,
        addr,
    })
}

struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
    protocol: Protocol,
}

impl Raw {
    async fn connect(
        addr: SocketAddr,
        protocol: Protocol,
        client_id: &str,
        user: &str,
        pass: &str,
    ) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut raw = Raw {
            stream,
            buf: Vec::with_capacity(1024),
            protocol,
        };
        raw.send(&Packet::Connect(Connect {
            protocol,
            clean_start: true,
            keep_alive: 0,
            properties: Properties::default(),
            client_id,
            will: None,
            username: Some(user),
            password: Some(pass.as_bytes()),
        }))
        .await?;
        match raw.recv().await? {
            Some(Packet::Connack(c)) if c.reason == ReasonCode::SUCCESS => Ok(raw),
            other => bail!("CONNACK success expected, got {other:?}"),
        }
    }

    async fn send(&mut self, p: &Packet<'_>) -> Result<()> {
        let mut out = Vec::new();
        p.encode(self.protocol, &mut out);
        self.stream.write_all(&out).await?;
        Ok(())
    }

    async fn recv(&mut self) -> Result<Option<Packet<'static>>> {
        loop {
            if let Some((_, n)) = mqtt::decode(&self.buf, self.protocol, 1 << 20)? {
                let bytes: Vec<u8> = self.buf.drain(..n).collect();
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                return Ok(mqtt::decode(bytes, self.protocol, 1 << 20)?.map(|(p, _)| p));
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// New connections per second: `workers` tasks each doing `per` CONNECT/CONNACK/DISCONNECT
/// cycles on fresh TCP connections.
pub(crate) async fn connect_rate(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    workers: usize,
    per: usize,
) -> Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (user, pass) = (user.to_owned(), pass.to_owned());
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let mut c =
                    Raw::connect(addr, Protocol::V311, &format!("rate-{w}-{i}"), &user, &pass)
                        .await?;
                c.send(&Packet::Disconnect(ReasonPacket {
                    reason: ReasonCode::SUCCESS,
                    properties: Properties::default(),
                }))
                .await?;
                let _ = c.stream.shutdown().await;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((workers * per) as f64 / started.elapsed().as_secs_f64())
}

/// Re-authentication round trips (AUTH 0x19 with a new token → AUTH 0x00), in microseconds.
pub(crate) async fn reauth_rtt(addr: SocketAddr, count: usize) -> Result<Histogram<u64>> {
    let user = format!("bench@{ORG}");
    let mut c = Raw::connect(addr, Protocol::V5, "reauth", &user, &token("bench", 0)).await?;
    let tokens: Vec<String> = (1..=count as u64).map(|n| token("bench", n)).collect();
    let mut h = Histogram::<u64>::new(3)?;
    for t in &tokens {
        let started = Instant::now();
        c.send(&Packet::Auth(ReasonPacket {
            reason: ReasonCode::REAUTHENTICATE,
            properties: Properties {
                authentication_method: Some("cloudsignal-token"),
                authentication_data: Some(t.as_bytes()),
                ..Properties::default()
            },
        }))
        .await?;
        match c.recv().await? {
            Some(Packet::Auth(a)) if a.reason == ReasonCode::SUCCESS => {}
            other => bail!("AUTH success expected, got {other:?}"),
        }
        h.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))?;
    }
    Ok(h)
}

fn http(method: &str, url: &str, key: &str, body: Option<&str>) -> Result<serde_json::Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let auth = format!("Bearer {key}");
    let mut resp = match (method, body) {
        ("POST", Some(b)) => agent
            .post(url)
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .send(b)?,
        ("POST", None) => agent
            .post(url)
            .header("Authorization", &auth)
            .send_empty()?,
        ("DELETE", _) => agent.delete(url).header("Authorization", &auth).call()?,
        _ => agent.get(url).header("Authorization", &auth).call()?,
    };
    Ok(serde_json::from_str(&resp.body_mut().read_to_string()?)?)
}

/// One build's authentication figures on a fresh process: tkn_ and API-key CONNECT rates, and
/// the re-authentication round trip's p50 and p99 (µs).
pub(crate) async fn sample(
    exe: &std::path::Path,
    user: &str,
    workers: usize,
    per: usize,
    reauths: usize,
) -> Result<[f64; 4]> {
    let api = free_port();
    let b = start_auth_binary(exe, api)?;
    let tkn = connect_rate(b.addr, user, &token("bench", 1), workers, per).await?;
    let (admin, org) = admin(api)?;
    let svc = format!("admin@{org}");
    connect_rate(b.addr, &svc, &admin, 1, 1).await?; // warms the bcrypt cache
    let key = connect_rate(b.addr, &svc, &admin, workers, per).await?;
    let h = reauth_rtt(b.addr, reauths).await?;
    Ok([
        tkn,
        key,
        h.value_at_quantile(0.5) as f64,
        h.value_at_quantile(0.99) as f64,
    ])
}

/// The admin key of the bench's control plane and its org.
pub(crate) fn admin(api_port: u16) -> Result<(String, String)> {
    let key = std::fs::read_to_string(dir()?.join(format!("data-{api_port}")).join("admin.key"))?
        .trim()
        .to_owned();
    let probe = http(
        "POST",
        &format!("http://127.0.0.1:{api_port}/v1/tokens"),
        &key,
        Some(r#"{"user":"probe"}"#),
    )?;
    let username = probe["mqtt_credentials"]["username"]
        .as_str()
        .context("token response")?;
    let org = username.rsplit('@').next().context("username")?.to_owned();
    Ok((key, org))
}

/// Time from `DELETE /v1/tokens/{jti}` being sent to DISCONNECT 0x98 arriving at the revoked
/// client, in microseconds (the HTTP round trip included).
pub(crate) async fn revocation_latency(
    addr: SocketAddr,
    api_port: u16,
    count: usize,
) -> Result<Histogram<u64>> {
    let (admin, _) = admin(api_port)?;
    let api = format!("http://127.0.0.1:{api_port}");
    let mut h = Histogram::<u64>::new(3)?;
    for i in 0..count {
        let (a2, url) = (admin.clone(), format!("{api}/v1/tokens"));
        let body = format!(r#"{{"user":"rev{i}"}}"#);
        let resp =
            tokio::task::spawn_blocking(move || http("POST", &url, &a2, Some(&body))).await??;
        let user = resp["mqtt_credentials"]["username"]
            .as_str()
            .context("username")?
            .to_owned();
        let pass = resp["mqtt_credentials"]["password"]
            .as_str()
            .context("password")?
            .to_owned();
        let jws = pass.strip_prefix("tkn_").context("tkn_")?;
        let jti = cloudsignal_core::jws::Inspected::parse(
            jws,
            8192,
            &[cloudsignal_core::keys::Alg::EdDSA],
        )
        .ok()
        .and_then(|i| i.unverified_claim("jti"))
        .and_then(|v| v.as_str().map(str::to_owned))
        .context("jti")?;
        let mut c = Raw::connect(addr, Protocol::V5, &format!("rev{i}"), &user, &pass).await?;
        let started = Instant::now();
        let (a2, url) = (admin.clone(), format!("{api}/v1/tokens/{jti}"));
        let call = tokio::task::spawn_blocking(move || http("DELETE", &url, &a2, None));
        match tokio::time::timeout(Duration::from_secs(5), c.recv()).await {
            Ok(Ok(Some(Packet::Disconnect(d))))
                if d.reason == ReasonCode::ADMINISTRATIVE_ACTION => {}
            other => bail!("DISCONNECT 0x98 expected, got {other:?}"),
        }
        h.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))?;
        call.await??;
    }
    Ok(h)
}

/// `POST /v1/tokens` requests per second from `threads` blocking HTTP clients.
pub(crate) fn issue_rate(api_port: u16, threads: usize, per: usize) -> Result<f64> {
    let (admin, _) = admin(api_port)?;
    let url = format!("http://127.0.0.1:{api_port}/v1/tokens");
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (admin, url) = (admin.clone(), url.clone());
            std::thread::spawn(move || -> Result<()> {
                for i in 0..per {
                    let body = format!(r#"{{"user":"issue{t}x{i}","ttl":600}}"#);
                    let resp = http("POST", &url, &admin, Some(&body))?;
                    if resp["mqtt_credentials"]["password"].as_str().is_none() {
                        bail!("no token in {resp}");
                    }
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("issuer thread panicked"))??;
    }
    Ok((threads * per) as f64 / started.elapsed().as_secs_f64())
}

/// QoS 1 PUBLISH→PUBACK round trips (µs) of `clients` connected publishers, each publishing
/// every `every`, for `duration`.
async fn publish_rtts(
    addr: SocketAddr,
    clients: usize,
    every: Duration,
    duration: Duration,
) -> Result<Histogram<u64>> {
    let user = format!("bench@{ORG}");
    let tok = token("bench", 7);
    let mut conns = Vec::with_capacity(clients);
    for i in 0..clients {
        conns.push(Raw::connect(addr, Protocol::V311, &format!("steady-{i}"), &user, &tok).await?);
    }
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            tokio::spawn(async move {
                let mut h = Histogram::<u64>::new(3)?;
                // spread the clients over the interval
                tokio::time::sleep(every.mul_f64(i as f64 / clients as f64)).await;
                let mut id: u16 = 1;
                while Instant::now() < deadline {
                    let started = Instant::now();
                    c.send(&Packet::Publish(mqtt::Publish {
                        dup: false,
                        qos: mqtt::QoS::AtLeastOnce,
                        retain: false,
                        topic: "users/bench/steady",
                        packet_id: std::num::NonZeroU16::new(id),
                        properties: Properties::default(),
                        payload: b"0123456789abcdef",
                    }))
                    .await?;
                    match c.recv().await? {
                        Some(Packet::Puback(_)) => {}
                        other => bail!("PUBACK expected, got {other:?}"),
                    }
                    h.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))?;
                    id = id.checked_add(1).unwrap_or(1);
                    tokio::time::sleep(every.saturating_sub(started.elapsed())).await;
                }
                anyhow::Ok(h)
            })
        })
        .collect();
    let mut all = Histogram::<u64>::new(3)?;
    for t in tasks {
        all.add(t.await??)?;
    }
    Ok(all)
}

/// p99 of steady publishers' PUBACK round trip, calm and while `keys` never-seen API keys
/// connect at once (each needing a cold bcrypt verification on the blocking pool).
pub(crate) async fn bcrypt_storm(
    addr: SocketAddr,
    api_port: u16,
    clients: usize,
    keys: usize,
) -> Result<(u64, u64)> {
    let (admin, org) = admin(api_port)?;
    let url = format!("http://127.0.0.1:{api_port}/v1/keys");
    let mut fresh = Vec::with_capacity(keys);
    for i in 0..keys {
        let (a, u) = (admin.clone(), url.clone());
        let body =
            format!(r#"{{"kind":"rk","name":"storm{i}","scopes":["mqtt:publish:storm/#"]}}"#);
        let k = tokio::task::spawn_blocking(move || http("POST", &u, &a, Some(&body))).await??;
        fresh.push(k["key"].as_str().context("key")?.to_owned());
    }
    let every = Duration::from_millis(500);
    let calm = publish_rtts(addr, clients, every, Duration::from_secs(5)).await?;
    let storm = {
        let steady = tokio::spawn(publish_rtts(addr, clients, every, Duration::from_secs(5)));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let cold: Vec<_> = fresh
            .into_iter()
            .enumerate()
            .map(|(i, k)| {
                // a key is one identity: its own name
                let user = format!("storm{i}@{org}");
                tokio::spawn(async move {
                    Raw::connect(addr, Protocol::V311, &format!("cold-{i}"), &user, &k)
                        .await
                        .map(drop)
                })
            })
            .collect();
        for c in cold {
            c.await??;
        }
        steady.await??
    };
    Ok((calm.value_at_quantile(0.99), storm.value_at_quantile(0.99)))
}
