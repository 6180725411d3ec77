//! Bounded fuzzing of every parser inside the test command: each cargo-fuzz target (libFuzzer
//! with AddressSanitizer) runs for `CLOUDSIGNAL_FUZZ_SECONDS` (default 15; 0 skips) and counts
//! as one passing test when it finds nothing. Seeds in `fuzz/seeds/<target>/` start its corpus. A crash fails the run and leaves its input under
//! `fuzz/artifacts/<target>/` (replay: `cargo +nightly fuzz run <target> <file>`).
//!
//! cargo-fuzz needs nightly flags; without a nightly toolchain the default one runs with
//! `RUSTC_BOOTSTRAP=1`, which enables the same flags on a stable compiler.

use crate::util::{count, note, output, root, run};
use anyhow::{bail, Context, Result};
use std::process::Command;

/// The cargo-fuzz version installed by the bootstrap.
pub(crate) const CARGO_FUZZ_VERSION: &str = "0.13.2";

fn cargo_fuzz() -> Command {
    let mut cmd = Command::new("cargo");
    let nightly = output(Command::new("rustup").args(["toolchain", "list"]))
        .is_some_and(|list| list.lines().any(|l| l.starts_with("nightly")));
    if nightly {
        cmd.arg("+nightly");
    } else {
        cmd.env("RUSTC_BOOTSTRAP", "1");
    }
    cmd.arg("fuzz").current_dir(root().join("fuzz"));
    cmd.env_remove("CARGO_TARGET_DIR");
    cmd
}

/// Builds every target once, then runs each for the configured time.
pub(crate) fn run_all() -> Result<()> {
    let secs: u64 = match std::env::var("CLOUDSIGNAL_FUZZ_SECONDS") {
        Ok(v) => v
            .parse()
            .context("CLOUDSIGNAL_FUZZ_SECONDS must be a number of seconds")?,
        Err(_) => 15,
    };
    if secs == 0 {
        note("skipped: CLOUDSIGNAL_FUZZ_SECONDS=0");
        return Ok(());
    }
    run(cargo_fuzz().args(["build", "-O"]))?;
    let list = output(cargo_fuzz().arg("list")).context("cargo fuzz list failed")?;
    let targets: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if targets.is_empty() {
        bail!("cargo fuzz list found no target");
    }
    let mut failed = Vec::new();
    for target in targets {
        // the working corpus grows under fuzz/corpus (ignored by git); committed seeds start it
        let corpus = root().join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        let seeds = root().join("fuzz/seeds").join(target);
        let mut cmd = cargo_fuzz();
        cmd.args(["run", "-O", target]).arg(&corpus);
        if seeds.is_dir() {
            cmd.arg(&seeds);
        }
        let out = cmd
            .arg("--")
            .arg(format!("-max_total_time={secs}"))
            .output()
            .with_context(|| format!("running fuzz target {target}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        let done = log
            .lines()
            .rev()
            .find(|l| l.starts_with("Done "))
            .unwrap_or("(no summary)");
        if out.status.success() {
            note(&format!("fuzz {target}: {done}"));
            count(true);
        } else {
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            for line in tail.iter().rev() {
                eprintln!("    {line}");
            }
            // a crash leaves its input; a build failure (or the like) leaves none
            let crashed = log.contains("Test unit written to");
            if crashed {
                eprintln!("    fuzz {target}: FAILED (input saved under fuzz/artifacts/{target}/)");
            } else {
                eprintln!("    fuzz {target}: FAILED (did not run; see the output above)");
            }
            count(false);
            failed.push(target.to_owned());
        }
    }
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    Ok(())
}
