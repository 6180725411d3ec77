//! Builds the wasm artifacts: the browser package (`pkg/`), the demo app built with Vite
//! against that package as packed by npm (`www/dist`), and the worker bundle.

use crate::bootstrap::{wasm_target_dir, WasmToolchain};
use crate::util::{note, root, run, step};
use anyhow::{Context, Result};
use std::fs;
use std::path::Path;
use std::process::Command;

/// Builds everything.
pub(crate) fn all(wasm: &WasmToolchain) -> Result<()> {
    dashboard()?;
    pkg(wasm)?;
    demo()?;
    worker(wasm)
}

/// Builds the dashboard (`www/dashboard` → `www/dashboard/dist`) with Vite. `cloudsignal`
/// embeds it at compile time, so this runs before any cargo build of the binary.
pub(crate) fn dashboard() -> Result<()> {
    step("build the dashboard (www/dashboard → www/dashboard/dist, embedded in cloudsignal)");
    let out = root().join("www/dashboard/dist/index.html");
    if up_to_date(
        &out,
        &[
            "www/dashboard/src",
            "www/dashboard/index.html",
            "www/dashboard/vite.config.js",
            "package-lock.json",
        ],
    ) {
        note("www/dashboard/dist is newer than its sources: skipped");
        return Ok(());
    }
    run(Command::new(root().join("node_modules/.bin/vite"))
        .current_dir(root())
        .args([
            "build",
            "--config",
            "www/dashboard/vite.config.js",
            "--logLevel",
            "warn",
        ]))?;
    let assets = root().join("www/dashboard/dist/assets");
    let mut total = 0;
    for entry in fs::read_dir(&assets)? {
        let path = entry?.path();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("js" | "css")
        ) {
            total += gzip_size(&path)?;
        }
    }
    note(&format!(
        "dashboard (gzip -9, js + css): {:.1} KB",
        total as f64 / 1024.0
    ));
    Ok(())
}

/// `npm pack`s `pkg/`, installs the tarball into `www/` like any app would, and builds the
/// demo with Vite: proof that the published package works in a fresh Vite app.
pub(crate) fn demo() -> Result<()> {
    step("build www/ (npm pack pkg/ → npm install in www/ → vite build)");
    if up_to_date(
        &root().join("www/dist/index.html"),
        &[
            "pkg/index.js",
            "pkg/index.d.ts",
            "pkg/package.json",
            "pkg/wasm",
            "www/src",
            "www/index.html",
            "www/vite.config.js",
            "www/package.json",
        ],
    ) {
        note("www/dist is newer than its sources: skipped");
        return Ok(());
    }
    let npm_dir = root().join("target/npm");
    fs::create_dir_all(&npm_dir)?;
    run(Command::new("npm")
        .current_dir(root())
        .args(["pack", "./pkg", "--silent", "--pack-destination"])
        .arg(&npm_dir)
        .stdout(std::process::Stdio::null()))?;
    // a fresh install of the tarball (same version number, new contents)
    let installed = root().join("www/node_modules/@cloudsignal");
    if installed.exists() {
        fs::remove_dir_all(&installed)?;
    }
    run(Command::new("npm").current_dir(root().join("www")).args([
        "install",
        "--no-audit",
        "--no-fund",
        "--no-package-lock",
        "--silent",
    ]))?;
    run(Command::new(root().join("node_modules/.bin/vite"))
        .current_dir(root().join("www"))
        .args(["build", "--logLevel", "warn"]))?;
    let assets = root().join("www/dist/assets");
    let mut total = 0;
    for entry in fs::read_dir(&assets)? {
        let path = entry?.path();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("js" | "wasm")
        ) {
            total += gzip_size(&path)?;
        }
    }
    note(&format!(
        "demo app (gzip -9, package + app code): {:.1} KB",
        total as f64 / 1024.0
    ));
    Ok(())
}

fn gzip_size(path: &Path) -> Result<usize> {
    let out = Command::new("gzip")
        .arg("-9c")
        .arg(path)
        .output()
        .with_context(|| format!("gzip {}", path.display()))?;
    Ok(out.stdout.len())
}

/// Builds `crates/client` into `pkg/wasm/` with wasm-bindgen (ESM, `--target web`).
pub(crate) fn pkg(wasm: &WasmToolchain) -> Result<()> {
    step("build pkg/ (@cloudsignal/client: wasm-bindgen --target web, wasm-opt -Oz)");
    let out = root().join("pkg/wasm");
    if up_to_date(
        &out.join("cloudsignal_client_bg.wasm"),
        &["crates/client", "crates/core/src"],
    ) {
        note("pkg/wasm is newer than its sources: skipped");
        return Ok(());
    }
    run(wasm.cargo().args([
        "build",
        "--quiet",
        "-p",
        "cloudsignal-client",
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        "wasm-release",
    ]))?;
    let input =
        wasm_target_dir().join("wasm32-unknown-unknown/wasm-release/cloudsignal_client.wasm");
    run(Command::new("wasm-bindgen")
        .arg(&input)
        .args(["--target", "web", "--out-dir"])
        .arg(&out)
        .args(["--out-name", "cloudsignal_client"]))?;
    let wasm_file = out.join("cloudsignal_client_bg.wasm");
    run(Command::new(root().join("node_modules/.bin/wasm-opt"))
        .arg("-Oz")
        .arg("--enable-bulk-memory")
        .arg("--enable-nontrapping-float-to-int")
        .arg("--enable-sign-ext")
        .arg("--enable-mutable-globals")
        .arg(&wasm_file)
        .arg("-o")
        .arg(&wasm_file))?;
    let js = gzip_size(&out.join("cloudsignal_client.js"))?;
    let bin = gzip_size(&wasm_file)?;
    note(&format!(
        "pkg size (gzip -9): wasm {:.1} KB + JS glue {:.1} KB = {:.1} KB",
        bin as f64 / 1024.0,
        js as f64 / 1024.0,
        (bin + js) as f64 / 1024.0
    ));
    Ok(())
}

/// Builds the worker the way `wrangler deploy` does (its `[build]` command runs worker-build),
/// as a dry run: this proves `wrangler.toml` deploys as is, and reports the upload size.
pub(crate) fn worker(wasm: &WasmToolchain) -> Result<()> {
    step("build worker/ (npx wrangler deploy --dry-run: worker-build --profile worker-release)");
    if up_to_date(
        &root().join("worker/build/index_bg.wasm"),
        &[
            "worker/src",
            "worker/Cargo.toml",
            "worker/wrangler.toml",
            "crates/core/src",
        ],
    ) {
        note("worker/build is newer than its sources: skipped");
        return Ok(());
    }
    let bin = root().join("node_modules/.bin");
    let mut cmd = Command::new(bin.join("wrangler"));
    wasm.apply(&mut cmd);
    cmd.current_dir(root().join("worker"))
        .args(["deploy", "--dry-run", "--outdir"])
        .arg(root().join("target/worker-dist"))
        .env("WASM_BINDGEN_BIN", which("wasm-bindgen")?)
        .env("WASM_OPT_BIN", bin.join("wasm-opt"))
        .env("ESBUILD_BIN", bin.join("esbuild"))
        .env("WRANGLER_SEND_METRICS", "false")
        .stderr(std::process::Stdio::inherit());
    let out = cmd.output().context("could not start wrangler")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        eprintln!("{text}");
        anyhow::bail!("wrangler deploy --dry-run failed ({})", out.status);
    }
    match text.lines().find(|l| l.contains("Total Upload:")) {
        Some(line) => note(&format!("worker {}", line.trim())),
        None => note("worker built (wrangler printed no upload size)"),
    }
    Ok(())
}

/// Whether `output` exists and is newer than every file under `inputs` (paths from the root),
/// `Cargo.toml` and `Cargo.lock`.
fn up_to_date(output: &Path, inputs: &[&str]) -> bool {
    let Ok(built) = fs::metadata(output).and_then(|m| m.modified()) else {
        return false;
    };
    let mut files = vec![root().join("Cargo.toml"), root().join("Cargo.lock")];
    for input in inputs {
        let path = root().join(input);
        if path.is_dir() {
            files.extend(walk(&path).unwrap_or_default());
        } else {
            files.push(path);
        }
    }
    files.iter().all(|f| {
        fs::metadata(f)
            .and_then(|m| m.modified())
            .is_ok_and(|m| m <= built)
    })
}

fn which(cmd: &str) -> Result<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
        .with_context(|| format!("{cmd} is not on PATH"))
}

fn walk(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(walk(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}
