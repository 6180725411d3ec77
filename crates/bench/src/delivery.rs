//! Delivery and scale, measured with clients nobody here wrote where it matters:
//! `mosquitto_pub -l` → `mosquitto_sub` pipes (every message counted), a fan-out with one
//! subscriber that never reads (the readers' latency), and many idle connections at once (the
//! CONNECT rate and the broker's resident memory).

use crate::client::Client;
use anyhow::{bail, Context, Result};
use cloudsignal_core::mqtt::QoS;
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// `n` lines through `mosquitto_pub -l -q <qos>` into one `mosquitto_sub -q <qos>`: how many
/// arrived (counting stops when nothing arrived for 5 s), and at what rate (arrivals over the
/// time from the first line sent to the last received).
pub(crate) async fn pipe(addr: SocketAddr, qos: u8, n: usize) -> Result<(usize, f64)> {
    let port = addr.port().to_string();
    let qos = qos.to_string();
    let topic = format!("pipe/{}", std::process::id());
    // line-buffered, so the SUBACK line arrives when it happens; -d prints it
    let mut sub = tokio::process::Command::new("stdbuf")
        .args(["-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", &port])
        .args(["-V", "mqttv311", "-t", &topic, "-q", &qos, "-d"])
        .args(["-C", &n.to_string()])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting mosquitto_sub (apt-get install mosquitto-clients)")?;
    let mut lines = BufReader::new(sub.stdout.take().context("stdout")?).lines();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
            Ok(Ok(Some(l))) if l.starts_with("Subscribed (mid") => break,
            Ok(Ok(Some(_))) => {}
            _ => bail!("mosquitto_sub did not subscribe"),
        }
    }
    let reader = tokio::spawn(async move {
        let mut got = 0usize;
        let mut last = Instant::now();
        while got < n {
            match tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await {
                Ok(Ok(Some(l))) if l.starts_with("payload-") => {
                    got += 1;
                    last = Instant::now();
                }
                Ok(Ok(Some(_))) => {}
                _ => break,
            }
        }
        (got, last)
    });
    let mut text = String::with_capacity(n * 24);
    for i in 0..n {
        // 16 bytes, as the pipe: `payload-16-bytes` with a counter
        text.push_str(&format!("payload-{i:08}\n"));
    }
    let started = Instant::now();
    let mut publisher = tokio::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv311"])
        .args(["-t", &topic, "-q", &qos, "-l"])
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting mosquitto_pub")?;
    let mut stdin = publisher.stdin.take().context("stdin")?;
    stdin.write_all(text.as_bytes()).await?;
    drop(stdin);
    let (got, last) = reader.await?;
    let _ = publisher.wait().await;
    let _ = sub.kill().await;
    let secs = last.duration_since(started).as_secs_f64().max(1e-6);
    Ok((got, got as f64 / secs))
}

/// One publisher sends `count` timestamped messages of `size` bytes at `rate` to `readers`
/// subscribers, with (`stalled`) or without one more subscriber that never reads. Returns the
/// readers' publish→deliver latencies (µs) and how many they received of `readers × count`.
pub(crate) async fn fan_out_latency(
    addr: SocketAddr,
    readers: usize,
    stalled: bool,
    rate: u64,
    count: usize,
    size: usize,
) -> Result<(Histogram<u64>, u64)> {
    let tag = if stalled { "s" } else { "c" };
    // subscribes, then never reads: its socket fills, then the broker's queue for it
    let mut sleeper = None;
    if stalled {
        let mut c = Client::connect(addr, &format!("never-reads-{tag}")).await?;
        c.subscribe("lat", QoS::AtMostOnce).await?;
        sleeper = Some(c);
    }
    let epoch = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..readers {
        let mut sub = Client::connect(addr, &format!("reader-{tag}-{i}")).await?;
        sub.subscribe("lat", QoS::AtMostOnce).await?;
        tasks.push(tokio::spawn(async move {
            sub.latencies(count, epoch, Duration::from_secs(120)).await
        }));
    }
    let mut p = Client::connect(addr, &format!("fan-pub-{tag}")).await?;
    p.publish_timestamped("lat", count, rate, epoch, size)
        .await?;
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        all.add(t.await??)?;
    }
    drop(sleeper);
    let got = all.len();
    Ok((all, got))
}

/// Opens `n` idle connections with `workers` concurrent dialers (each CONNECT answered before
/// its dialer's next). Returns the CONNECT rate and the broker's RSS growth per connection;
/// the connections are closed after.
pub(crate) async fn scale(
    addr: SocketAddr,
    pid: u32,
    n: usize,
    workers: usize,
) -> Result<(f64, f64, u64)> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = crate::rss_kib(pid);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let share = n / workers + usize::from(w < n % workers);
        tasks.push(tokio::spawn(async move {
            let mut conns = Vec::with_capacity(share);
            for i in 0..share {
                conns.push(Client::connect(addr, &format!("scale-{w}-{i}")).await?);
            }
            anyhow::Ok(conns)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await??);
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = crate::rss_kib(pid);
    drop(all);
    let per = (after.saturating_sub(before) as f64 * 1024.0) / n as f64;
    Ok((rate, per, after * 1024))
}

/// The most connections this process may open (its open-files limit, less a margin for the
/// broker's and the bench's own files).
pub(crate) fn max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1024);
    soft.saturating_sub(200)
}
