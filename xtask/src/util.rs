//! Small process helpers shared by the xtask commands.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The workspace root (the parent of `xtask/`).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Prints a step header.
pub(crate) fn step(what: &str) {
    eprintln!("\n==> {what}");
}

/// Prints a bootstrap note.
pub(crate) fn note(what: &str) {
    eprintln!("    {what}");
}

/// Whether `cmd` can be found on PATH.
pub(crate) fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// Runs a command, inheriting output; fails with the command line on a non-zero exit.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        bail!("command failed ({status}): {shown}");
    }
    Ok(())
}

/// Runs a command and returns its trimmed stdout, or `None` if it fails to start or exits non-zero.
pub(crate) fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

static PASSED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

/// Runs a test command, echoing its output and adding up the pass/fail counts that cargo test
/// (`test result: ok. N passed; M failed`) and node's test runner (`# pass N`, `# fail M`) print.
pub(crate) fn run_tests(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let started = Instant::now();
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start {shown}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let n: u64 = n.trim_start_matches("ok.").trim().parse().unwrap_or(0);
                match kind {
                    "passed" => PASSED.fetch_add(n, Ordering::Relaxed),
                    "failed" => FAILED.fetch_add(n, Ordering::Relaxed),
                    _ => 0,
                };
            }
        } else if let Some((counts, _)) = pytest_summary(line) {
            for (n, kind) in counts {
                match kind {
                    "passed" => PASSED.fetch_add(n, Ordering::Relaxed),
                    "failed" | "error" | "errors" => FAILED.fetch_add(n, Ordering::Relaxed),
                    _ => 0,
                };
            }
        } else if let Some(n) = line
            .strip_prefix("# pass ")
            .or_else(|| line.strip_prefix("ℹ pass "))
        {
            PASSED.fetch_add(n.trim().parse().unwrap_or(0), Ordering::Relaxed);
        } else if let Some(n) = line
            .strip_prefix("# fail ")
            .or_else(|| line.strip_prefix("ℹ fail "))
        {
            FAILED.fetch_add(n.trim().parse().unwrap_or(0), Ordering::Relaxed);
        }
    }
    eprintln!("    ({:.1} s)", started.elapsed().as_secs_f64());
    if !out.status.success() {
        bail!("tests failed ({}): {shown}", out.status);
    }
    Ok(())
}

/// Counts one test outcome reported by a step that is not a test runner (fuzz targets).
pub(crate) fn count(passed: bool) {
    if passed {
        PASSED.fetch_add(1, Ordering::Relaxed);
    } else {
        FAILED.fetch_add(1, Ordering::Relaxed);
    }
}

/// The totals counted by [`run_tests`].
pub(crate) fn totals() -> (u64, u64) {
    (
        PASSED.load(Ordering::Relaxed),
        FAILED.load(Ordering::Relaxed),
    )
}

/// Parses pytest's last line, e.g. `3 failed, 9 passed in 5.37s` (optionally framed by `=`).
fn pytest_summary(line: &str) -> Option<(Vec<(u64, &str)>, &str)> {
    let line = line.trim_matches(|c| c == '=' || c == ' ');
    let (counts, time) = line.rsplit_once(" in ")?;
    // "5.37s", or past a minute "84.13s (0:01:24)"
    let time = time.split(" (").next().unwrap_or(time);
    if !time.ends_with('s') {
        return None;
    }
    let parsed: Option<Vec<(u64, &str)>> = counts
        .split(", ")
        .map(|part| {
            let (n, kind) = part.split_once(' ')?;
            Some((n.parse().ok()?, kind))
        })
        .collect();
    parsed.filter(|p| !p.is_empty()).map(|p| (p, time))
}

#[cfg(test)]
mod tests {
    use super::pytest_summary;

    #[test]
    fn pytest_summaries_are_counted_whatever_their_duration() {
        let (counts, _) = pytest_summary("3 failed, 9 passed in 5.37s").expect("short run");
        assert_eq!(counts, vec![(3, "failed"), (9, "passed")]);
        let (counts, _) =
            pytest_summary("======= 39 passed in 84.13s (0:01:24) =======").expect("long run");
        assert_eq!(counts, vec![(39, "passed")]);
        assert!(pytest_summary("collected in the bin").is_none());
    }
}
