//! `cloudsignal-bench`: the same MQTT load against Mosquitto and `cloudsignal serve`, one after
//! the other on this machine, printed side by side with ratios.
//!
//! ```text
//! cargo run --release -p cloudsignal-bench            # full run: medians of 3 rounds
//! cargo run --release -p cloudsignal-bench -- --quick # smaller loads, one round
//! cargo run --release -p cloudsignal-bench -- --rounds 5 --only memory   # or throughput, latency, pipes, stall, scale, auth, enterprise, cluster, store (comma-separated)
//! CLOUDSIGNAL_BENCH_BASELINE=/path/to/older/cloudsignal cargo run --release -p cloudsignal-bench -- --only auth
//! ```
//!
//! With `CLOUDSIGNAL_BENCH_BASELINE` set to another build of `cloudsignal`, the authentication
//! part also runs the CONNECT rates and the re-authentication round trip against it, in the
//! same rounds, and prints that build next to this one with ratios.
//!
//! Both brokers run anonymous on loopback with their defaults. The load generator is a small
//! async client on `cloudsignal-core`'s codec (so both brokers see identical bytes).
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::unwrap_used)]

mod auth;
mod client;
mod cluster;
mod delivery;
mod enterprise;
mod pg;
mod store;

use anyhow::{bail, Context, Result};
use client::Client;
use cloudsignal_core::mqtt::QoS;
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) struct Broker {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn wait_listening(addr: SocketAddr) -> Result<()> {
    for _ in 0..200 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    bail!("nothing listens on {addr}")
}

fn start_mosquitto() -> Result<Broker> {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("cs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000\n"),
    )?;
    spawn_mosquitto(&conf, port)
}

/// Starts Debian's Mosquitto with `conf` (which must listen on `port`) and waits for it.
pub(crate) fn spawn_mosquitto(conf: &std::path::Path, port: u16) -> Result<Broker> {
    let child = Command::new("/usr/sbin/mosquitto")
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting /usr/sbin/mosquitto (apt-get install mosquitto)")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr)?;
    Ok(Broker {
        name: "mosquitto",
        child,
        addr,
    })
}

fn start_cloudsignal() -> Result<Broker> {
    start_cloudsignal_with(&[])
}

/// `cloudsignal serve`, anonymous on loopback, with `extra` flags.
pub(crate) fn start_cloudsignal_with(extra: &[&str]) -> Result<Broker> {
    let port = free_port();
    let exe = std::env::current_exe()?.with_file_name("cloudsignal");
    let child = Command::new(&exe)
        .args([
            "serve",
            "--control-addr",
            "off",
            "--allow-anonymous",
            "--ws-addr",
            "off",
            "--mqtt-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .args(extra)
        .env("CLOUDSIGNAL_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (cargo build --release -p cloudsignal-cli)",
                exe.display()
            )
        })?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr)?;
    Ok(Broker {
        name: "cloudsignal",
        child,
        addr,
    })
}

pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
            })
        })
        .unwrap_or(0)
}

/// Point-to-point: `pairs` publishers each send `per` messages to their own subscriber.
async fn p2p(addr: SocketAddr, pairs: usize, per: usize, qos: QoS) -> Result<f64> {
    p2p_across(addr, addr, pairs, per, qos, None).await
}

/// [`p2p`] with the subscribers on `subs_at` and the publishers on `pubs_at` (two nodes of a
/// cluster).
pub(crate) async fn p2p_across(
    subs_at: SocketAddr,
    pubs_at: SocketAddr,
    pairs: usize,
    per: usize,
    qos: QoS,
    session_expiry: Option<u32>,
) -> Result<f64> {
    let addr = subs_at;
    let received = Arc::new(AtomicU64::new(0));
    let mut subs = Vec::new();
    for i in 0..pairs {
        let mut c = Client::connect_with(addr, &format!("s{i}"), session_expiry).await?;
        c.subscribe(&format!("bench/{i}"), qos).await?;
        subs.push(c);
    }
    if session_expiry.is_some() {
        // a cluster's session registry learns the subscriptions within a few hundred ms
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let total = (pairs * per) as u64;
    let mut readers = Vec::new();
    for c in subs {
        let received = received.clone();
        readers.push(tokio::spawn(async move {
            c.count_until(per as u64, received, Duration::from_secs(60))
                .await
        }));
    }
    let started = Instant::now();
    let mut pubs = Vec::new();
    for i in 0..pairs {
        let mut c = Client::connect(pubs_at, &format!("p{i}")).await?;
        pubs.push(tokio::spawn(async move {
            c.publish_many(&format!("bench/{i}"), per, qos, 16).await
        }));
    }
    for p in pubs {
        p.await??;
    }
    let mut last = started;
    for r in readers {
        last = last.max(r.await??);
    }
    let elapsed = last.duration_since(started).as_secs_f64().max(1e-6);
    Ok(received.load(Ordering::Relaxed).min(total) as f64 / elapsed)
}

/// Fan-out: one publisher, `subs` subscribers on the same topic.
async fn fan_out(addr: SocketAddr, subs: usize, per: usize) -> Result<f64> {
    let received = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for i in 0..subs {
        let mut c = Client::connect(addr, &format!("f{i}")).await?;
        c.subscribe("fan/out", QoS::AtMostOnce).await?;
        let received = received.clone();
        readers.push(tokio::spawn(async move {
            c.count_until(per as u64, received, Duration::from_secs(60))
                .await
        }));
    }
    let mut p = Client::connect(addr, "fan-pub").await?;
    let started = Instant::now();
    p.publish_paced("fan/out", per, QoS::AtMostOnce, Duration::from_micros(200))
        .await?;
    let mut last = started;
    for r in readers {
        last = last.max(r.await??);
    }
    Ok(received.load(Ordering::Relaxed) as f64
        / last.duration_since(started).as_secs_f64().max(1e-6))
}

/// Publish→deliver latency at `rate` messages per second over one pair.
async fn latency(addr: SocketAddr, rate: u64, count: usize) -> Result<Histogram<u64>> {
    latency_across(addr, addr, rate, count).await
}

/// [`latency`] with the subscriber on `sub_at` and the publisher on `pub_at`.
pub(crate) async fn latency_across(
    sub_at: SocketAddr,
    pub_at: SocketAddr,
    rate: u64,
    count: usize,
) -> Result<Histogram<u64>> {
    let mut sub = Client::connect(sub_at, "lat-sub").await?;
    sub.subscribe("lat", QoS::AtMostOnce).await?;
    let epoch = Instant::now();
    let reader =
        tokio::spawn(async move { sub.latencies(count, epoch, Duration::from_secs(60)).await });
    let mut p = Client::connect(pub_at, "lat-pub").await?;
    p.publish_timestamped("lat", count, rate, epoch, 16).await?;
    reader.await?
}

/// Resident memory per idle connection: RSS delta over `n` connected clients.
async fn memory_per_connection(broker: &Broker, n: usize) -> Result<f64> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(broker.child.id());
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        conns.push(Client::connect(broker.addr, &format!("idle{i}")).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(broker.child.id());
    drop(conns);
    Ok((after.saturating_sub(before) as f64 * 1024.0) / n as f64)
}

struct Row {
    name: String,
    unit: &'static str,
    higher_is_better: bool,
    /// Samples per broker (Mosquitto, CloudSignal), one per round.
    samples: [Vec<f64>; 2],
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn arg_value(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds: usize = arg_value("--rounds")
        .map(|r| r.parse().context("--rounds takes a number"))
        .transpose()?
        .unwrap_or(if quick { 1 } else { 3 });
    let only = arg_value("--only");
    let wants = |part: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|p| p == part))
    };
    let (per_pair, fan_subs, fan_msgs, lat_msgs, idle) = if quick {
        (200, 100, 200, 2_000, 1_000)
    } else {
        (2_000, 1_000, 1_000, 10_000, 10_000)
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut push = |name: String, unit, higher_is_better, value: f64, i: usize| {
        let at = match rows.iter().position(|r| r.name == name) {
            Some(at) => at,
            None => {
                rows.push(Row {
                    name,
                    unit,
                    higher_is_better,
                    samples: [Vec::new(), Vec::new()],
                });
                rows.len() - 1
            }
        };
        rows[at].samples[i].push(value);
    };
    // the latency test runs at half of Mosquitto's point-to-point rate (first round's)
    let mut saturation = 0.0;
    let broker_rounds = if wants("memory") || wants("throughput") || wants("latency") {
        rounds
    } else {
        0
    };
    for round in 0..broker_rounds {
        for (i, start) in [start_mosquitto as fn() -> Result<Broker>, start_cloudsignal]
            .into_iter()
            .enumerate()
        {
            let broker = start()?;
            eprintln!(
                "== round {}/{rounds}: {} on {}",
                round + 1,
                broker.name,
                broker.addr
            );
            if wants("memory") {
                // first, on a fresh process, so no freed memory from other tests is reused
                let mem = memory_per_connection(&broker, idle).await?;
                push(
                    format!("RSS per idle connection at {idle}"),
                    "bytes",
                    false,
                    mem,
                    i,
                );
            }
            if wants("throughput") || wants("latency") {
                let q0 = p2p(broker.addr, 100, per_pair, QoS::AtMostOnce).await?;
                if i == 0 && saturation == 0.0 {
                    saturation = q0;
                }
                if wants("throughput") {
                    push(
                        "QoS 0 point-to-point, 100 → 100, 16 B".into(),
                        "msg/s",
                        true,
                        q0,
                        i,
                    );
                    let q1 = p2p(broker.addr, 100, per_pair, QoS::AtLeastOnce).await?;
                    push(
                        "QoS 1 point-to-point, 100 → 100, 16 B".into(),
                        "msg/s",
                        true,
                        q1,
                        i,
                    );
                    let fo = fan_out(broker.addr, fan_subs, fan_msgs).await?;
                    push(
                        format!("QoS 0 fan-out, 1 → {fan_subs}, 16 B"),
                        "msg/s",
                        true,
                        fo,
                        i,
                    );
                }
            }
            if wants("latency") {
                // a fixed share of Mosquitto's single-pair capacity: 50% of its p2p rate / 100
                let rate = ((saturation / 100.0) * 0.5).clamp(100.0, 20_000.0) as u64;
                let h = latency(broker.addr, rate, lat_msgs).await?;
                for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
                    push(
                        format!("latency {label} at {rate} msg/s"),
                        "µs",
                        false,
                        h.value_at_quantile(q) as f64,
                        i,
                    );
                }
            }
        }
    }
    if wants("pipes") || wants("stall") || wants("scale") {
        delivery_rounds(rounds, quick, &wants, &mut push).await?;
    }
    if wants("cluster") {
        cluster::run(rounds, quick).await?;
    }
    if wants("store") {
        store::run(rounds, quick).await?;
    }
    // authentication (issues 4 and 5); CloudSignal-only measures get their own table
    let mut versus: Vec<Row> = Vec::new();
    let mut solo: Vec<(String, &'static str, Vec<f64>)> = Vec::new();
    let mut solo_push = |name: &str, unit, v: f64| match solo.iter_mut().find(|r| r.0 == name) {
        Some(r) => r.2.push(v),
        None => solo.push((name.to_owned(), unit, vec![v])),
    };
    if wants("auth") {
        let (workers, per, reauths, revocations) = if quick {
            (4, 50, 200, 20)
        } else {
            (8, 500, 2_000, 200)
        };
        for round in 0..rounds {
            eprintln!("== round {}/{rounds}: authentication", round + 1);
            let m = auth::start_mosquitto_password()?;
            let rate = auth::connect_rate(m.addr, "bench", "bench-secret", workers, per).await?;
            push(
                "authenticated CONNECT/CONNACK/DISCONNECT, new TCP each (password_file vs tkn_)"
                    .into(),
                "conn/s",
                true,
                rate,
                0,
            );
            drop(m);
            let api = free_port();
            let c = auth::start_cloudsignal_auth(api)?;
            let user = "bench@org_benchbenchbe";
            let tkn =
                auth::connect_rate(c.addr, user, &auth::token("bench", 1), workers, per).await?;
            push(
                "authenticated CONNECT/CONNACK/DISCONNECT, new TCP each (password_file vs tkn_)"
                    .into(),
                "conn/s",
                true,
                tkn,
                1,
            );
            let (admin, org) = auth::admin(api)?;
            // a key is one identity: the first admin key is admin@<org>
            let svc = format!("admin@{org}");
            auth::connect_rate(c.addr, &svc, &admin, 1, 1).await?; // warms the bcrypt cache
            let key = auth::connect_rate(c.addr, &svc, &admin, workers, per).await?;
            solo_push("tkn_ CONNECT rate", "conn/s", tkn);
            solo_push("API key (sk_) CONNECT rate, warm cache", "conn/s", key);
            solo_push("API key rate / tkn_ rate", "%", 100.0 * key / tkn);
            let h = auth::reauth_rtt(c.addr, reauths).await?;
            if let Some(base) = std::env::var_os("CLOUDSIGNAL_BENCH_BASELINE") {
                drop(c);
                // both builds on fresh processes, the same sequence each, in alternating order
                // (what runs second after a connect storm measures differently)
                let this = std::env::current_exe()?.with_file_name("cloudsignal");
                let base = std::path::PathBuf::from(base);
                let mut now = [0.0; 4];
                let mut then = [0.0; 4];
                for which in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
                    let exe = if which == 0 { &this } else { &base };
                    let sample = auth::sample(exe, user, workers, per, reauths).await?;
                    if which == 0 {
                        now = sample;
                    } else {
                        then = sample;
                    }
                }
                for (i, name) in [
                    "tkn_ CONNECT rate",
                    "API key (sk_) CONNECT rate, warm cache",
                    "re-authentication round trip p50",
                    "re-authentication round trip p99",
                ]
                .into_iter()
                .enumerate()
                {
                    let at = match versus.iter().position(|r: &Row| r.name == name) {
                        Some(at) => at,
                        None => {
                            versus.push(Row {
                                name: name.to_owned(),
                                unit: if i < 2 { "conn/s" } else { "µs" },
                                higher_is_better: i < 2,
                                samples: [Vec::new(), Vec::new()],
                            });
                            versus.len() - 1
                        }
                    };
                    versus[at].samples[0].push(then[i]);
                    versus[at].samples[1].push(now[i]);
                }
                continue;
            }
            solo_push(
                "re-authentication round trip p50",
                "µs",
                h.value_at_quantile(0.5) as f64,
            );
            solo_push(
                "re-authentication round trip p99",
                "µs",
                h.value_at_quantile(0.99) as f64,
            );
            let issued = auth::issue_rate(api, 4, if quick { 50 } else { 500 })?;
            solo_push("POST /v1/tokens (4 clients)", "req/s", issued);
            let (calm, storm) = auth::bcrypt_storm(
                c.addr,
                api,
                if quick { 200 } else { 1_000 },
                if quick { 20 } else { 200 },
            )
            .await?;
            solo_push("steady publishers' PUBACK p99, calm", "µs", calm as f64);
            solo_push(
                "same, while never-seen API keys connect at once (cold bcrypt)",
                "µs",
                storm as f64,
            );
            let h = auth::revocation_latency(c.addr, api, revocations).await?;
            solo_push(
                "DELETE /v1/tokens/{jti} sent → DISCONNECT 0x98 received, p50",
                "µs",
                h.value_at_quantile(0.5) as f64,
            );
            solo_push(
                "DELETE /v1/tokens/{jti} sent → DISCONNECT 0x98 received, p99",
                "µs",
                h.value_at_quantile(0.99) as f64,
            );
        }
    }
    if wants("enterprise") {
        use enterprise::Dial;
        let (workers, per, samples) = if quick { (4, 25, 100) } else { (8, 125, 1_000) };
        let pki = enterprise::pki()?;
        let (hook, calls) = enterprise::webhook().await?;
        // one token for every CONNECT, as one credential for the warm webhook: both paths
        // answer from their caches (the verified-token cache; the decision cache)
        let one = enterprise::token_creds(1);
        let tkn: Arc<dyn Fn(usize) -> Option<(String, String)> + Send + Sync> =
            Arc::new(move |_| Some(one.clone()));
        for round in 0..rounds {
            eprintln!("== round {}/{rounds}: mTLS and the auth webhook", round + 1);
            let names = ["full TLS handshake each", "TLS session resumed"];
            let m = enterprise::start_mosquitto_mtls(&pki)?;
            let rates = enterprise::mtls_rates(m.addr, &pki, workers, per).await?;
            for (name, r) in names.iter().zip(rates) {
                push(
                    format!("mTLS CONNECT/CONNACK/DISCONNECT, certificate identity, {name}"),
                    "conn/s",
                    true,
                    r,
                    0,
                );
            }
            drop(m);
            let (c, tls) = enterprise::start_cloudsignal(&pki, &hook)?;
            let mtls = enterprise::mtls_rates(tls, &pki, workers, per).await?;
            for (name, r) in names.iter().zip(mtls) {
                push(
                    format!("mTLS CONNECT/CONNACK/DISCONNECT, certificate identity, {name}"),
                    "conn/s",
                    true,
                    r,
                    1,
                );
            }
            let plain_tls = enterprise::tls_client(&pki, false, false)?;
            let tkn_tls =
                enterprise::rate(tls, Dial::Tls(plain_tls), tkn.clone(), workers, per).await?;
            solo_push("tkn_ over TLS, full handshake each", "conn/s", tkn_tls);
            solo_push(
                "mTLS (full handshake) rate / tkn_-over-TLS rate",
                "%",
                100.0 * mtls[0] / tkn_tls,
            );
            solo_push(
                "mTLS (resumed) rate / tkn_-over-TLS rate",
                "%",
                100.0 * mtls[1] / tkn_tls,
            );
            let tkn_tcp = enterprise::rate(c.addr, Dial::Tcp, tkn.clone(), workers, per).await?;
            let warm: Arc<dyn Fn(usize) -> Option<(String, String)> + Send + Sync> =
                Arc::new(|_| Some(("hook-user".to_owned(), "hook-password".to_owned())));
            let before = calls.load(Ordering::Relaxed);
            let hook_rate = enterprise::rate(c.addr, Dial::Tcp, warm, workers, per).await?;
            let made = calls.load(Ordering::Relaxed) - before;
            solo_push("tkn_ over TCP", "conn/s", tkn_tcp);
            solo_push("webhook, warm cache, over TCP", "conn/s", hook_rate);
            solo_push(
                "webhook (warm) rate / tkn_ rate",
                "%",
                100.0 * hook_rate / tkn_tcp,
            );
            solo_push(
                "webhook calls for those CONNECTs (one credential)",
                "calls",
                made as f64,
            );
            let (t, _) = enterprise::latencies(c.addr, enterprise::token_creds, samples).await?;
            let (h, _) = enterprise::latencies(
                c.addr,
                |i| (format!("cold-{round}-{i}"), "pw".to_owned()),
                samples,
            )
            .await?;
            solo_push(
                "CONNECT→CONNACK p50, tkn_",
                "µs",
                t.value_at_quantile(0.5) as f64,
            );
            solo_push(
                "CONNECT→CONNACK p50, webhook cold (one call each)",
                "µs",
                h.value_at_quantile(0.5) as f64,
            );
            solo_push(
                "CONNECT→CONNACK p99, tkn_",
                "µs",
                t.value_at_quantile(0.99) as f64,
            );
            solo_push(
                "CONNECT→CONNACK p99, webhook cold (one call each)",
                "µs",
                h.value_at_quantile(0.99) as f64,
            );
            drop(c);
            // the endpoint down: its clients refused (0x88) at once once the breaker opens;
            // token clients served as before
            let (down, _) = enterprise::start_cloudsignal(
                &pki,
                &format!("http://127.0.0.1:{}/gone", free_port()),
            )?;
            let calm = enterprise::rate(down.addr, Dial::Tcp, tkn.clone(), workers, per).await?;
            // webhook clients keep failing while token clients connect
            let addr = down.addr;
            let storm = tokio::spawn(async move {
                enterprise::latencies(addr, |i| (format!("out-{i}"), "pw".to_owned()), samples)
                    .await
            });
            let during = enterprise::rate(down.addr, Dial::Tcp, tkn.clone(), workers, per).await?;
            let (o, reasons) = storm.await??;
            let refused = reasons.iter().filter(|r| r.0 == 0x88).count();
            solo_push(
                "webhook down: its CONNECTs refused 0x88 (server unavailable)",
                "%",
                100.0 * refused as f64 / samples as f64,
            );
            solo_push(
                "webhook down: refusal p99",
                "µs",
                o.value_at_quantile(0.99) as f64,
            );
            solo_push(
                "webhook down: tkn_ rate during its clients' failures / before, same broker",
                "%",
                100.0 * during / calm,
            );
        }
    }
    println!("Medians of {rounds} round(s); each round runs Mosquitto, then CloudSignal.\n");
    println!("| measure | unit | Mosquitto 2.0.11 | CloudSignal | ratio (better > 1) |");
    println!("|---|---|---:|---:|---:|");
    for r in &rows {
        let (m, c) = (median(&r.samples[0]), median(&r.samples[1]));
        let ratio = if r.higher_is_better { c / m } else { m / c };
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2}× |",
            r.name, r.unit, m, c, ratio
        );
    }
    if !versus.is_empty() {
        println!("\nThis build against CLOUDSIGNAL_BENCH_BASELINE, same rounds:\n");
        println!("| measure | unit | baseline | this build | ratio (better > 1) |");
        println!("|---|---|---:|---:|---:|");
        for r in &versus {
            let (b, c) = (median(&r.samples[0]), median(&r.samples[1]));
            let ratio = if r.higher_is_better { c / b } else { b / c };
            println!(
                "| {} | {} | {:.0} | {:.0} | {:.2}× |",
                r.name, r.unit, b, c, ratio
            );
        }
    }
    if !solo.is_empty() {
        println!("\nCloudSignal alone (no Mosquitto equivalent):\n");
        println!("| measure | unit | CloudSignal |");
        println!("|---|---|---:|");
        for (name, unit, v) in &solo {
            println!("| {name} | {unit} | {:.0} |", median(v));
        }
    }
    Ok(())
}

/// Issue 13's measures: pipes of clients nobody here wrote, a fan-out with a subscriber that
/// never reads, and the most idle connections this machine allows.
async fn delivery_rounds(
    rounds: usize,
    quick: bool,
    wants: &dyn Fn(&str) -> bool,
    push: &mut dyn FnMut(String, &'static str, bool, f64, usize),
) -> Result<()> {
    let pipes: [(u8, usize); 3] = if quick {
        [(0, 20_000), (1, 5_000), (2, 2_000)]
    } else {
        [(0, 200_000), (1, 50_000), (2, 20_000)]
    };
    let (readers, rate, count, size) = if quick {
        (4, 1_000, 2_000, 1024)
    } else {
        (10, 2_000, 10_000, 1024)
    };
    let connections = delivery::max_connections().min(if quick { 5_000 } else { 100_000 });
    for round in 0..rounds {
        // CloudSignal's connect-rate limit (a defence, default 1,000/s) is lifted here so the
        // CONNECT rate compares the brokers, not the limit
        let starts: [fn() -> Result<Broker>; 2] = [start_mosquitto, || {
            start_cloudsignal_with(&["--connect-rate", "1000000"])
        }];
        for (i, start) in starts.into_iter().enumerate() {
            if wants("scale") {
                let broker = start()?;
                eprintln!("== round {}/{rounds}: {} scale", round + 1, broker.name);
                let (rate, per, total) =
                    delivery::scale(broker.addr, broker.child.id(), connections, 8).await?;
                push(
                    format!("CONNECT rate, {connections} connections held, 8 dialers"),
                    "conn/s",
                    true,
                    rate,
                    i,
                );
                push(
                    format!("RSS per idle connection at {connections}"),
                    "bytes",
                    false,
                    per,
                    i,
                );
                push(
                    format!("RSS with {connections} idle connections"),
                    "MiB",
                    false,
                    total as f64 / 1048576.0,
                    i,
                );
            }
            if wants("pipes") {
                for (qos, n) in pipes {
                    // a fresh broker per pipe: what one pipe leaves queued cannot help another
                    let broker = start()?;
                    eprintln!(
                        "== round {}/{rounds}: {} pipe QoS {qos}",
                        round + 1,
                        broker.name
                    );
                    let (got, per_sec) = delivery::pipe(broker.addr, qos, n).await?;
                    let name = format!("mosquitto_pub -l → mosquitto_sub, QoS {qos}, {n} × 16 B");
                    push(
                        format!("{name}: delivered"),
                        "%",
                        true,
                        100.0 * got as f64 / n as f64,
                        i,
                    );
                    push(format!("{name}: rate"), "msg/s", true, per_sec, i);
                }
            }
            if wants("stall") {
                let broker = start()?;
                for stalled in [false, true] {
                    eprintln!(
                        "== round {}/{rounds}: {} fan-out, stalled: {stalled}",
                        round + 1,
                        broker.name
                    );
                    let (h, got) =
                        delivery::fan_out_latency(broker.addr, readers, stalled, rate, count, size)
                            .await?;
                    let with = if stalled {
                        "with one subscriber that never reads"
                    } else {
                        "all reading"
                    };
                    let name =
                        format!("fan-out 1 → {readers} readers, {rate} msg/s × 1 KiB, {with}");
                    push(
                        format!("{name}: readers' p99"),
                        "µs",
                        false,
                        h.value_at_quantile(0.99) as f64,
                        i,
                    );
                    push(
                        format!("{name}: readers' delivered"),
                        "%",
                        true,
                        100.0 * got as f64 / (readers * count) as f64,
                        i,
                    );
                }
            }
        }
    }
    Ok(())
}
