//! `cargo xtask`: bootstrap, build and test orchestration for CloudSignal.
//!
//! ```text
//! cargo xtask test        # install what is missing, then run every test suite
//! cargo xtask dev         # run the broker, the worker (workerd) and the demo app with dev secrets
//! cargo xtask bootstrap   # only install/check toolchains and test peers
//! cargo xtask build       # build the dashboard, pkg/ (browser package) and worker/build (worker bundle)
//! ```
#![forbid(unsafe_code)]
// A command-line tool: printing is its job.
#![allow(clippy::print_stdout)]

mod adapter;
mod bootstrap;
mod build;
mod fuzz;
mod tools;
mod util;

use anyhow::{bail, Result};
use std::process::Command;
use std::time::Instant;
use util::{root, run, run_tests, step, totals};

const USAGE: &str = "usage: cargo xtask <test|dev|bootstrap|build|doctor> [--fresh-tools]

  test       bootstrap, then: fmt + clippy, native tests, core tests in wasm32 (headless
             Chromium), build pkg/ and the worker, end-to-end tests in workerd and Chromium
  dev        run the broker, the token-exchange worker (http://127.0.0.1:8787) and the demo app
             (http://127.0.0.1:5173/www/dist/) with generated dev secrets
  bootstrap  install or check: wasm32 std, wasm-bindgen CLI, worker-build, cargo-fuzz, npm
             packages, Chromium + chromedriver, Mosquitto, the Python test venv
  build      build pkg/ and worker/build
  doctor     list every tool the tests use: version, path, and where it came from

  --fresh-tools  install every cargo tool from scratch into an emptied target/fresh-tools
                 (with an empty CARGO_HOME for the installs) and use only those: proves the
                 bootstrap works on a machine without leftovers. Same as CLOUDSIGNAL_FRESH_TOOLS=1.
  CLOUDSIGNAL_TOOLS=<dir>  install cargo tools into <dir> (cargo install --root) and use only
                 those, instead of $CARGO_HOME/bin";

/// The Python suites that start a control plane: run a second time on PostgreSQL
/// (`test_cluster.py` runs two control planes on one PostgreSQL database in the first pass).
const POSTGRES_SUITES: &[&str] = &[
    "test_control.py",
    "test_attacks.py",
    "test_login.py",
    "test_tenants.py",
    "test_openapi.py",
    "test_directory.py",
];

fn main() {
    let started = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fresh = args.iter().any(|a| a == "--fresh-tools");
    let cmd = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_default();
    let tool_root = match cmd.as_str() {
        "test" | "dev" | "bootstrap" | "build" | "doctor" => tools::ToolRoot::from_env(fresh),
        _ => Ok(tools::ToolRoot::default()),
    };
    let result = tool_root.and_then(|t| match cmd.as_str() {
        "test" => test(&t),
        "dev" => dev(&t),
        "bootstrap" => bootstrap::all(&t).map(|_| ()),
        "build" => bootstrap::all(&t).and_then(|b| build::all(&b.wasm)),
        "doctor" => tools::doctor(&t),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => {
            eprintln!("unknown command {other:?}\n\n{USAGE}");
            std::process::exit(2);
        }
    });
    if let Err(e) = result {
        eprintln!(
            "\nxtask {cmd} failed after {:.0} s: {e:#}",
            started.elapsed().as_secs_f64()
        );
        if cmd == "test" {
            let (passed, failed) = totals();
            println!("xtask: {passed} passed, {} failed", failed.max(1));
        }
        std::process::exit(1);
    }
    eprintln!(
        "\nxtask {cmd} finished in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

fn test(tool_root: &tools::ToolRoot) -> Result<()> {
    let tools = bootstrap::all(tool_root)?;
    // embedded in the binary: built before anything compiles it
    build::dashboard()?;
    step("tools (cargo xtask doctor)");
    tools::doctor(tool_root)?;
    let root = root();

    step("format and lints (cargo fmt --check, cargo clippy -D warnings)");
    run(Command::new("cargo")
        .current_dir(&root)
        .args(["fmt", "--all", "--", "--check"]))?;
    // the fuzz crate is its own workspace (nightly, cargo-fuzz): formatted all the same
    run(Command::new("cargo").current_dir(&root).args([
        "fmt",
        "--manifest-path",
        "fuzz/Cargo.toml",
        "--",
        "--check",
    ]))?;
    run(Command::new("cargo").current_dir(&root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ]))?;

    step("native tests (cargo test)");
    run_tests(Command::new("cargo").current_dir(&root).args([
        "test",
        "--workspace",
        "--exclude",
        "cloudsignal-worker",
    ]))?;
    run(Command::new("cargo").current_dir(&root).args([
        "build",
        "--quiet",
        "-p",
        "cloudsignal-cli",
    ]))?;

    step("core tests in wasm32, in headless Chromium (the same test functions)");
    let mut wasm_test = tools.wasm.cargo();
    wasm_test
        .args([
            "test",
            "-p",
            "cloudsignal-core",
            "--lib",
            "--target",
            "wasm32-unknown-unknown",
        ])
        .current_dir(root.join("crates/core"))
        .env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
            "wasm-bindgen-test-runner",
        )
        .env("CHROMEDRIVER", &tools.chromedriver)
        .env("WASM_BINDGEN_TEST_TIMEOUT", "300");
    run_tests(&mut wasm_test)?;
    adapter::run_with_broker(&tools)?;

    build::all(&tools.wasm)?;

    step("fuzz every parser for a bounded time (cargo fuzz)");
    fuzz::run_all()?;

    step("paho-mqtt against cloudsignal serve (pytest)");
    run_tests(
        Command::new(&tools.python)
            .current_dir(&root)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/py"])
            .env("CLOUDSIGNAL_BIN", root.join("target/debug/cloudsignal")),
    )?;

    // every suite that starts a control plane, again with the PostgreSQL store (a throwaway
    // cluster from Debian's initdb, a fresh database per control plane: tests/py/pg.py)
    step("the control-plane suites on PostgreSQL (pytest, CLOUDSIGNAL_TEST_STORE=postgres)");
    run_tests(
        Command::new(&tools.python)
            .current_dir(&root)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .args(POSTGRES_SUITES.iter().map(|s| format!("tests/py/{s}")))
            .env("CLOUDSIGNAL_BIN", root.join("target/debug/cloudsignal"))
            .env("CLOUDSIGNAL_TEST_STORE", "postgres"),
    )?;

    step("end-to-end tests (node:test: jose vectors, worker in workerd, pkg in Chromium)");
    run_tests(
        Command::new("node")
            .current_dir(&root)
            .args(["--test", "--test-concurrency=1", "--test-reporter=spec"])
            .arg("tests/js/")
            .env("CLOUDSIGNAL_BIN", root.join("target/debug/cloudsignal")),
    )?;

    let (passed, failed) = totals();
    if passed == 0 {
        bail!("no test ran");
    }
    println!("xtask: {passed} passed, {failed} failed");
    Ok(())
}

fn dev(tool_root: &tools::ToolRoot) -> Result<()> {
    let tools = bootstrap::all(tool_root)?;
    build::all(&tools.wasm)?;
    run(Command::new("cargo").current_dir(root()).args([
        "build",
        "--quiet",
        "-p",
        "cloudsignal-cli",
    ]))?;
    step("starting the broker, the worker and the demo app (Ctrl-C to stop)");
    let status = Command::new("node")
        .current_dir(root())
        .arg("tests/js/support/dev.mjs")
        .status()?;
    // Ctrl-C reaches the whole process group: node (or workerd's exit hook in it) ends with
    // 130, which is how a developer stops it, not a failure
    use std::os::unix::process::ExitStatusExt;
    if status.success() || status.code() == Some(130) || matches!(status.signal(), Some(2 | 15)) {
        eprintln!("\nCloudSignal stopped.");
        return Ok(());
    }
    bail!("tests/js/support/dev.mjs ended with {status}")
}
