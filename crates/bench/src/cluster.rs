//! Cluster mode (issue 18): the same loads on one node and across two nodes joined by a real
//! nats-server, in the same run, with ratios. Point-to-point pairs have their subscribers on
//! node 1 and their publishers on node 1 (single node) or node 2 (cross-node), so every
//! cross-node message takes the NATS hop.

use crate::{
    free_port, latency_across, median, p2p_across, start_cloudsignal_with, wait_listening,
};
use anyhow::{Context, Result};
use cloudsignal_core::mqtt::QoS;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Nats(Child);

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nats-server with JetStream on `dir`; its client port and its monitoring port.
fn start_nats(dir: &std::path::Path) -> Result<(Nats, u16, u16)> {
    let (port, monitor) = (free_port(), free_port());
    let child = Command::new("/usr/sbin/nats-server")
        .args([
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            &monitor.to_string(),
        ])
        .args(["-js", "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nats-server (apt-get install nats-server)")?;
    wait_listening(SocketAddr::from(([127, 0, 0, 1], port)))?;
    Ok((Nats(child), port, monitor))
}

/// Bytes JetStream holds in the cluster's message log, as nats-server's monitoring says (a log
/// entry may hold several messages, so entries are not counted).
fn logged(monitor: u16) -> Result<u64> {
    let url = format!("http://127.0.0.1:{monitor}/jsz?streams=true");
    let mut resp = ureq::get(&url).call()?;
    let jsz: serde_json::Value = serde_json::from_str(&resp.body_mut().read_to_string()?)?;
    let streams = jsz["account_details"][0]["stream_detail"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok(streams
        .iter()
        .filter(|s| s["name"] == "bench_log")
        .filter_map(|s| s["state"]["bytes"].as_u64())
        .sum())
}

/// Runs `rounds` rounds and prints single node vs cross-node with ratios.
pub(crate) async fn run(rounds: usize, quick: bool) -> Result<()> {
    if !std::path::Path::new("/usr/sbin/nats-server").exists() {
        eprintln!("cluster: nats-server is not installed; skipped (cargo xtask bootstrap)");
        return Ok(());
    }
    let (pairs, per, lat_msgs, rate) = if quick {
        (20, 500, 2_000, 2_000)
    } else {
        (100, 2_000, 10_000, 5_000)
    };
    let names = [
        format!("QoS 0 point-to-point, {pairs} → {pairs}, 16 B (msg/s)"),
        format!("QoS 1 point-to-point, {pairs} → {pairs}, 16 B (msg/s)"),
        format!("latency p50 at {rate} msg/s (µs)"),
        format!("latency p99 at {rate} msg/s (µs)"),
    ];
    // [measure][single, cross] → samples
    let mut samples = vec![[Vec::new(), Vec::new()]; names.len()];
    let mut durable = Vec::new();
    for round in 0..rounds {
        let dir =
            std::env::temp_dir().join(format!("cs-bench-nats-{}-{round}", std::process::id()));
        let (_nats, port, monitor) = start_nats(&dir)?;
        let url = format!("nats://127.0.0.1:{port}");
        let flags = ["--cluster-nats", url.as_str(), "--cluster-name", "bench"];
        let one = start_cloudsignal_with(&flags)?;
        let two = start_cloudsignal_with(&flags)?;
        // the nodes find each other (hello, routes) before the first subscription
        tokio::time::sleep(Duration::from_millis(500)).await;
        eprintln!(
            "== round {}/{rounds}: cluster of two nodes on nats-server",
            round + 1
        );
        for (i, pubs_at) in [one.addr, two.addr].into_iter().enumerate() {
            let q0 = p2p_across(one.addr, pubs_at, pairs, per, QoS::AtMostOnce, None).await?;
            samples[0][i].push(q0);
            let q1 = p2p_across(one.addr, pubs_at, pairs, per, QoS::AtLeastOnce, None).await?;
            samples[1][i].push(q1);
            let h = latency_across(one.addr, pubs_at, rate, lat_msgs).await?;
            samples[2][i].push(h.value_at_quantile(0.5) as f64);
            samples[3][i].push(h.value_at_quantile(0.99) as f64);
        }
        // persistent subscribers (sessions that outlive their node): QoS 1 goes through the
        // message log, acknowledged to the publisher once JetStream stored it
        let before = logged(monitor)?;
        let q1 = p2p_across(one.addr, two.addr, pairs, per, QoS::AtLeastOnce, Some(3600)).await?;
        let through_log = logged(monitor)? - before;
        // every message's 16-byte payload, at least, went through the log
        anyhow::ensure!(
            through_log >= (pairs * per * 16) as u64,
            "only {through_log} bytes of {} messages went through the message log",
            pairs * per
        );
        durable.push(q1);
        drop((one, two));
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!();
    println!("cluster mode, medians of {rounds} round(s), nats-server 2.9 on loopback");
    println!(
        "{:<52} {:>14} {:>14} {:>8}",
        "measure", "single node", "cross-node", "ratio"
    );
    for (name, s) in names.iter().zip(&samples) {
        let (single, cross) = (median(&s[0]), median(&s[1]));
        println!(
            "{name:<52} {single:>14.0} {cross:>14.0} {:>7.2}×",
            cross / single
        );
    }
    let (clean, logged) = (median(&samples[1][1]), median(&durable));
    println!(
        "{:<52} {clean:>14.0} {logged:>14.0} {:>7.2}×",
        "QoS 1 cross-node: clean vs persistent subscribers",
        logged / clean
    );
    Ok(())
}
