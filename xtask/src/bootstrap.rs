//! Makes sure every tool the build and the tests need is present, installing what is missing.
//! Idempotent: on a prepared machine each check costs milliseconds.

use crate::tools::{Row, ToolRoot};
use crate::util::{note, on_path, output, root, run, step};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The worker-build version; keep in step with the `worker` crate in Cargo.toml.
const WORKER_BUILD_VERSION: &str = "0.8.7";
/// Name of the rustup toolchain linked to Debian's rustc when rustup cannot add wasm32.
const DEBIAN_TOOLCHAIN: &str = "debian-wasm";
const WASM: &str = "wasm32-unknown-unknown";

/// How to invoke cargo for wasm32 builds.
#[derive(Debug, Clone)]
pub(crate) struct WasmToolchain {
    /// `Some(name)` to run cargo with `RUSTUP_TOOLCHAIN=name`; `None` for the default toolchain.
    pub(crate) rustup_toolchain: Option<String>,
}

impl WasmToolchain {
    /// A `cargo` command for wasm32 builds, with its own target directory so native and wasm
    /// builds (possibly by different rustc versions) never invalidate each other.
    pub(crate) fn cargo(&self) -> Command {
        let mut cmd = Command::new("cargo");
        self.apply(&mut cmd);
        cmd
    }

    /// Applies the toolchain environment to any command that runs cargo (worker-build).
    pub(crate) fn apply(&self, cmd: &mut Command) {
        cmd.current_dir(root());
        cmd.env("CARGO_TARGET_DIR", wasm_target_dir());
        if let Some(tc) = &self.rustup_toolchain {
            cmd.env("RUSTUP_TOOLCHAIN", tc);
        }
    }
}

/// Target directory of wasm builds.
pub(crate) fn wasm_target_dir() -> PathBuf {
    root().join("target").join("wasm")
}

/// Everything the test command needs.
pub(crate) struct Tools {
    pub(crate) wasm: WasmToolchain,
    pub(crate) chromedriver: PathBuf,
    /// The Python of the test venv (paho-mqtt, pytest).
    pub(crate) python: PathBuf,
}

/// Runs every bootstrap step, installing cargo tools where `tools` says.
pub(crate) fn all(tools: &ToolRoot) -> Result<Tools> {
    step("bootstrap: toolchains and test peers");
    let wasm = wasm_target()?;
    wasm_bindgen_cli(tools)?;
    worker_build(tools)?;
    npm_packages()?;
    let chromedriver = chromium()?;
    debian_peers()?;
    let python = python_packages()?;
    cargo_fuzz(tools)?;
    Ok(Tools {
        wasm,
        chromedriver,
        python,
    })
}

/// Whether `libdir` holds a wasm32 std and the `test` crate (cargo test needs both).
fn has_wasm_std(libdir: &Path) -> bool {
    let names: Vec<String> = fs::read_dir(libdir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ["libstd-", "libtest-"]
        .iter()
        .all(|p| names.iter().any(|n| n.starts_with(p)))
}

fn default_has_wasm32() -> bool {
    output(Command::new("rustc").args(["--print", "target-libdir", "--target", WASM]))
        .is_some_and(|dir| has_wasm_std(Path::new(&dir)))
}

fn debian_toolchain_ready() -> bool {
    has_wasm_std(Path::new("/usr/lib/rustlib/wasm32-unknown-unknown/lib"))
        && output(Command::new("rustup").args(["toolchain", "list"]))
            .is_some_and(|l| l.lines().any(|t| t.starts_with(DEBIAN_TOOLCHAIN)))
}

/// Ensures a wasm32 standard library: rustup's if it has (or can download) one, else
/// Debian's rustc-web toolchain with std built once (see docs/toolchain.md).
///
/// `CLOUDSIGNAL_WASM_TOOLCHAIN=debian` forces the Debian path (to test it on any machine).
fn wasm_target() -> Result<WasmToolchain> {
    let force_debian = std::env::var("CLOUDSIGNAL_WASM_TOOLCHAIN").is_ok_and(|v| v == "debian");
    if force_debian {
        if !debian_toolchain_ready() {
            debian_wasm_std()?;
        }
        note("wasm32 target: Debian rustc-web toolchain (forced by CLOUDSIGNAL_WASM_TOOLCHAIN)");
        return Ok(WasmToolchain {
            rustup_toolchain: Some(DEBIAN_TOOLCHAIN.into()),
        });
    }
    if default_has_wasm32() {
        note("wasm32 target: rustup default toolchain");
        return Ok(WasmToolchain {
            rustup_toolchain: None,
        });
    }
    if debian_toolchain_ready() {
        note("wasm32 target: Debian rustc-web toolchain (rustup link 'debian-wasm')");
        return Ok(WasmToolchain {
            rustup_toolchain: Some(DEBIAN_TOOLCHAIN.into()),
        });
    }
    note("wasm32 target missing: trying `rustup target add wasm32-unknown-unknown` (60 s limit)");
    let added = Command::new("timeout")
        .args(["60", "rustup", "target", "add", WASM])
        .status()
        .is_ok_and(|s| s.success());
    if added && default_has_wasm32() {
        return Ok(WasmToolchain {
            rustup_toolchain: None,
        });
    }
    note("rustup cannot download the target here; building Debian's wasm32 std instead");
    debian_wasm_std()?;
    Ok(WasmToolchain {
        rustup_toolchain: Some(DEBIAN_TOOLCHAIN.into()),
    })
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let is_root = output(Command::new("id").arg("-u")).as_deref() == Some("0");
    if !is_root {
        bail!(
            "missing Debian packages {packages:?}; install them with: sudo apt-get install -y {}",
            packages.join(" ")
        );
    }
    note(&format!("apt-get install {}", packages.join(" ")));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("apt-get could not install {packages:?}"))
}

fn debian_wasm_std() -> Result<()> {
    if !Path::new("/usr/bin/rustc").exists()
        || !Path::new("/usr/lib/rustlib/src/rust/library").exists()
        || !on_path("wasm-ld")
    {
        apt_install(&["rustc-web", "cargo-web", "rust-web-src", "lld"])?;
    }
    let dir = root().join("target").join("xtask").join("wasm-std");
    fs::create_dir_all(dir.join("src"))?;
    fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"wasm_std_probe\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"rlib\"]\n\n[workspace]\n",
    )?;
    fs::write(dir.join("src/lib.rs"), "")?;
    note("building std for wasm32 with -Zbuild-std (about a minute on 2 cores)");
    let path = format!("/usr/bin:{}", std::env::var("PATH").unwrap_or_default());
    run(Command::new("/usr/bin/cargo")
        .current_dir(&dir)
        .args(["build", "--release", "--target", WASM])
        .arg("-Zbuild-std=std,panic_abort,panic_unwind,proc_macro,test")
        .env("PATH", path)
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTFLAGS", "-Cembed-bitcode=yes")
        .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", "wasm-ld")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR"))?;
    let deps = dir.join("target").join(WASM).join("release").join("deps");
    let sysroot = Path::new("/usr/lib/rustlib/wasm32-unknown-unknown/lib");
    fs::create_dir_all(sysroot)?;
    for entry in fs::read_dir(&deps)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with("lib")
            && name.ends_with(".rlib")
            && !name.starts_with("libwasm_std_probe")
        {
            fs::copy(&path, sysroot.join(&name))?;
        }
    }
    let bin = Path::new("/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin");
    fs::create_dir_all(bin)?;
    let lld = bin.join("rust-lld");
    let _ = fs::remove_file(&lld);
    std::os::unix::fs::symlink("/usr/bin/lld", &lld)?;
    run(Command::new("rustup").args(["toolchain", "link", DEBIAN_TOOLCHAIN, "/usr"]))?;
    // stale wasm artifacts built against another std fail with "can't find crate"
    let _ = fs::remove_dir_all(wasm_target_dir());
    if !debian_toolchain_ready() {
        bail!("built the wasm32 std but the '{DEBIAN_TOOLCHAIN}' toolchain is still not usable");
    }
    Ok(())
}

/// The `wasm-bindgen` version locked in Cargo.lock.
pub(crate) fn locked_wasm_bindgen() -> Result<String> {
    let lock = fs::read_to_string(root().join("Cargo.lock")).context("reading Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\"" {
            if let Some(v) = lines.next().and_then(|l| l.strip_prefix("version = \"")) {
                return Ok(v.trim_end_matches('"').to_owned());
            }
        }
    }
    bail!("wasm-bindgen is not in Cargo.lock")
}

fn wasm_bindgen_cli(tools: &ToolRoot) -> Result<()> {
    let want = locked_wasm_bindgen()?;
    let have = tools.version("wasm-bindgen", &["--version"]);
    if have.as_deref() == Some(&format!("wasm-bindgen {want}")) {
        note(&format!("wasm-bindgen CLI {want} (matches Cargo.lock)"));
        return Ok(());
    }
    tools.cargo_install("wasm-bindgen-cli", &want)?;
    // both binaries come from the one crate; a missing runner means a broken install
    if tools.installed("wasm-bindgen-test-runner").is_none() {
        bail!("wasm-bindgen-cli installed without wasm-bindgen-test-runner");
    }
    Ok(())
}

fn worker_build(tools: &ToolRoot) -> Result<()> {
    let have = tools.version("worker-build", &["--version"]);
    if have
        .as_deref()
        .is_some_and(|v| v.ends_with(WORKER_BUILD_VERSION))
    {
        note(&format!("worker-build {WORKER_BUILD_VERSION}"));
        return Ok(());
    }
    tools.cargo_install("worker-build", WORKER_BUILD_VERSION)
}

fn npm_packages() -> Result<()> {
    if !on_path("npm") || !on_path("node") {
        apt_install(&["nodejs", "npm"])?;
    }
    let root = root();
    let lock = fs::read(root.join("package-lock.json")).context("package-lock.json is missing")?;
    let stamp = root.join("node_modules").join(".cloudsignal-lock");
    let digest = format!("{:x}", fnv(&lock));
    if fs::read_to_string(&stamp).is_ok_and(|s| s == digest) {
        note("npm packages (node_modules matches package-lock.json)");
        return Ok(());
    }
    note("npm ci (from the committed package-lock.json)");
    run(Command::new("npm").current_dir(&root).args([
        "ci",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
    ]))?;
    fs::write(stamp, digest)?;
    Ok(())
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn chromium() -> Result<PathBuf> {
    let (browser, driver) = (
        Path::new("/usr/bin/chromium"),
        Path::new("/usr/bin/chromedriver"),
    );
    if !browser.exists() || !driver.exists() {
        apt_install(&["chromium", "chromium-driver"])?;
    }
    note("chromium + chromedriver (Debian)");
    Ok(driver.to_path_buf())
}

/// Reference peers used by later suites (independent MQTT clients, the Mosquitto broker, an
/// OpenLDAP server, a NATS server).
fn debian_peers() -> Result<()> {
    if !on_path("mosquitto_pub")
        || !Path::new("/usr/sbin/mosquitto").exists()
        || !on_path("openssl")
    {
        apt_install(&["mosquitto", "mosquitto-clients", "openssl"])?;
    }
    note("mosquitto + mosquitto-clients + openssl (Debian)");
    // the directory-sync suites run a real OpenLDAP server and change it with ldap-utils
    if !Path::new("/usr/sbin/slapd").exists() || !on_path("ldapmodify") {
        apt_install(&["slapd", "ldap-utils"])?;
    }
    note("slapd + ldap-utils (Debian)");
    // the cluster suites join three brokers over a real NATS server (JetStream on); the
    // PostgreSQL store's suites run a throwaway cluster with initdb/pg_ctl
    if !Path::new("/usr/sbin/nats-server").exists() {
        apt_install(&["nats-server"])?;
    }
    note("nats-server (Debian)");
    let initdb = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().any(|v| v.path().join("bin/initdb").exists()))
        .unwrap_or(false);
    if !initdb || !on_path("psql") {
        apt_install(&["postgresql", "postgresql-client"])?;
    }
    note("postgresql + postgresql-client (Debian; the suites run their own throwaway cluster)");
    Ok(())
}

/// A Python venv under `target/py` with the pinned packages of `tests/py/requirements.txt`
/// (re-installed only when that file changes).
fn python_packages() -> Result<PathBuf> {
    let root = root();
    let venv = root.join("target").join("py");
    let python = venv.join("bin").join("python");
    let requirements = root.join("tests/py/requirements.txt");
    let wanted = fs::read(&requirements).context("tests/py/requirements.txt is missing")?;
    let stamp = venv.join(".cloudsignal-requirements");
    let digest = format!("{:x}", fnv(&wanted));
    if python.exists() && fs::read_to_string(&stamp).is_ok_and(|s| s == digest) {
        note("python venv (target/py matches tests/py/requirements.txt)");
        return Ok(python);
    }
    if !on_path("python3") {
        apt_install(&["python3", "python3-venv"])?;
    }
    if !python.exists() {
        note("python3 -m venv target/py");
        let made = run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        if made.is_err() {
            // Debian splits ensurepip into python3-venv
            apt_install(&["python3-venv"])?;
            run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        }
    }
    note("pip install -r tests/py/requirements.txt");
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements))?;
    fs::write(stamp, digest)?;
    Ok(python)
}

fn cargo_fuzz(tools: &ToolRoot) -> Result<()> {
    let want = crate::fuzz::CARGO_FUZZ_VERSION;
    let have = tools.version("cargo-fuzz", &["fuzz", "--version"]);
    if have.as_deref().is_some_and(|v| v.ends_with(want)) {
        note(&format!("cargo-fuzz {want}"));
        return Ok(());
    }
    tools.cargo_install("cargo-fuzz", want)
}

/// The doctor's row for the wasm32 standard library (never installs anything).
pub(crate) fn wasm_std_row() -> Row {
    let (version, path, origin) = if default_has_wasm32() {
        (
            "wasm32-unknown-unknown".to_owned(),
            output(Command::new("rustc").args(["--print", "target-libdir", "--target", WASM]))
                .unwrap_or_default(),
            "rustup target add".to_owned(),
        )
    } else if debian_toolchain_ready() {
        (
            output(Command::new("/usr/bin/rustc").arg("--version")).unwrap_or_default(),
            "/usr/lib/rustlib/wasm32-unknown-unknown/lib".to_owned(),
            format!("built from Debian rust-web-src (rustup link '{DEBIAN_TOOLCHAIN}')"),
        )
    } else {
        (
            "MISSING".to_owned(),
            "-".to_owned(),
            "the bootstrap adds it (rustup, or Debian's rustc-web)".to_owned(),
        )
    };
    Row {
        tool: "wasm32 std".into(),
        version,
        path,
        origin,
    }
}
