//! The browser adapter's wasm-bindgen tests in headless Chromium, against a real
//! `cloudsignal serve` on loopback: a signing key and a token are made with the CLI, the broker
//! trusts that key, and the tests get the broker's WebSocket URL and the token at build time.

use crate::bootstrap::Tools;
use crate::util::{root, run, run_tests, step};
use anyhow::{bail, Context, Result};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ISSUER: &str = "https://adapter-tests.cloudsignal.invalid";
const ORG: &str = "org_k7xm4pqr2n5t";
const USER: &str = "wasm-adapter";

/// Stops the broker however the tests end.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn cli_output(args: &[&str]) -> Result<String> {
    let bin = root().join("target/debug/cloudsignal");
    let out = Command::new(&bin)
        .args(args)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "cloudsignal {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// Runs `cargo test -p cloudsignal-client` in wasm32 with a broker to talk to.
pub(crate) fn run_with_broker(tools: &Tools) -> Result<()> {
    step("browser adapter tests in headless Chromium, against cloudsignal serve over WebSocket");
    let dir = root().join("target/adapter-tests");
    std::fs::create_dir_all(&dir)?;
    let key = dir.join("key.json");
    let _ = std::fs::remove_file(&key);
    let key_s = key.to_string_lossy().into_owned();
    run(Command::new(root().join("target/debug/cloudsignal"))
        .args(["keygen", "--kid", "adapter-tests", "--out", &key_s])
        .stdout(Stdio::null()))?;
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, cli_output(&["jwks", &key_s])?)?;
    let token = cli_output(&[
        "token",
        "issue",
        "--key",
        &key_s,
        "--issuer",
        ISSUER,
        "--user",
        USER,
        "--org",
        ORG,
        "--ttl",
        "900",
        "--pub",
        "users/{user}/#",
        "--sub",
        "users/{user}/#",
    ])?;
    let port = free_port()?;
    let broker = Broker(
        Command::new(root().join("target/debug/cloudsignal"))
            .args([
                "serve",
                "--control-addr",
                "off",
                "--mqtt-addr",
                "127.0.0.1:0",
                "--ws-addr",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--issuer", ISSUER, "--issuer-jwks"])
            .arg(&jwks)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting cloudsignal serve")?,
    );
    // a loaded CI machine is slow, never wrong: a minute to listen
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("cloudsignal serve did not open its WebSocket port");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut cmd = tools.wasm.cargo();
    cmd.args([
        "test",
        "-p",
        "cloudsignal-client",
        "--target",
        "wasm32-unknown-unknown",
    ])
    .current_dir(root().join("crates/client"))
    .env(
        "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
        "wasm-bindgen-test-runner",
    )
    .env("CHROMEDRIVER", &tools.chromedriver)
    .env("WASM_BINDGEN_TEST_TIMEOUT", "120")
    .env(
        "CLOUDSIGNAL_TEST_WS_URL",
        format!("ws://127.0.0.1:{port}/mqtt"),
    )
    .env("CLOUDSIGNAL_TEST_USERNAME", format!("{USER}@{ORG}"))
    .env("CLOUDSIGNAL_TEST_TOKEN", token);
    let result = run_tests(&mut cmd);
    drop(broker);
    result
}
