//! The store (issue 18): the same control plane on its embedded SQLite file and on a PostgreSQL
//! database (a throwaway cluster on this machine, fsync on), in the same run: token issuance
//! (`POST /v1/tokens` with an `sk_` key, keep-alive HTTP, several workers) and API-key CONNECTs
//! (the key check: bcrypt cached, the key's record read from the store).

use crate::auth::{admin, connect_rate, start_auth_binary_with};
use crate::{free_port, median, pg::Pg};
use anyhow::{Context, Result};
use std::time::{Duration, Instant};

/// `POST /v1/tokens` per second: `workers` threads, `per` requests each, one connection each.
fn issuance_rate(api_port: u16, key: &str, workers: usize, per: usize) -> Result<f64> {
    let started = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let key = key.to_owned();
            std::thread::spawn(move || -> Result<()> {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(30)))
                    .build()
                    .into();
                let url = format!("http://127.0.0.1:{api_port}/v1/tokens");
                for i in 0..per {
                    let body = format!(r#"{{"user":"bench-{w}-{i}","ttl":600}}"#);
                    agent
                        .post(&url)
                        .header("Authorization", &format!("Bearer {key}"))
                        .header("Content-Type", "application/json")
                        .send(body.as_str())?
                        .body_mut()
                        .read_to_string()?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
    }
    Ok((workers * per) as f64 / started.elapsed().as_secs_f64())
}

/// Runs `rounds` rounds; prints SQLite vs PostgreSQL with ratios.
pub(crate) async fn run(rounds: usize, quick: bool) -> Result<()> {
    if !Pg::available() {
        eprintln!("store: PostgreSQL (initdb) is not installed; skipped (cargo xtask bootstrap)");
        return Ok(());
    }
    let (workers, per, conn_workers, conn_per) = if quick {
        (4, 50, 4, 50)
    } else {
        (8, 250, 8, 250)
    };
    let pg = Pg::start()?;
    let exe = std::env::current_exe()?.with_file_name("cloudsignal");
    let names = [
        format!("token issuance, POST /v1/tokens, {workers} workers (tokens/s)"),
        format!("API key (sk_) CONNECT, warm bcrypt cache, {conn_workers} workers (conn/s)"),
    ];
    let mut samples = vec![[Vec::new(), Vec::new()]; names.len()];
    for round in 0..rounds {
        eprintln!(
            "== round {}/{rounds}: store, SQLite then PostgreSQL",
            round + 1
        );
        for (engine, postgres) in [false, true].into_iter().enumerate() {
            let url = if postgres {
                Some(pg.create_db(&format!("bench_{}_{round}", std::process::id()))?)
            } else {
                None
            };
            let api = free_port();
            let extra: Vec<&str> = match &url {
                Some(u) => vec!["--database-url", u.as_str()],
                None => vec![],
            };
            let broker = start_auth_binary_with(&exe, api, &extra)?;
            let (key, org) = admin(api).context("the admin key")?;
            samples[0][engine].push(issuance_rate(api, &key, workers, per)?);
            let svc = format!("admin@{org}");
            connect_rate(broker.addr, &svc, &key, 1, 1).await?; // warms the bcrypt cache
            samples[1][engine]
                .push(connect_rate(broker.addr, &svc, &key, conn_workers, conn_per).await?);
            drop(broker);
        }
    }
    println!();
    println!(
        "store, medians of {rounds} round(s): SQLite file vs PostgreSQL on this machine (fsync on)"
    );
    println!(
        "{:<64} {:>10} {:>11} {:>7}",
        "measure", "SQLite", "PostgreSQL", "ratio"
    );
    for (name, s) in names.iter().zip(&samples) {
        let (lite, pg) = (median(&s[0]), median(&s[1]));
        println!("{name:<64} {lite:>10.0} {pg:>11.0} {:>6.2}×", pg / lite);
    }
    Ok(())
}
