//! Embeds the dashboard (`www/dashboard/dist`, built by `cargo xtask build` with Vite) in the
//! binary, so `cloudsignal serve` alone serves it. Without a build, the list is empty and the
//! dashboard's route says how to build it: the crate compiles without Node.js.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../www/dashboard/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut found = Vec::new();
    files(&dist, &mut found);
    found.sort();
    let mut code = String::from("/// The dashboard's files: (path under /dashboard/, bytes).\npub(crate) static ASSETS: &[(&str, &[u8])] = &[\n");
    for f in &found {
        let Ok(rel) = f.strip_prefix(&dist) else {
            continue;
        };
        let rel = rel.to_string_lossy().replace('\\', "/");
        let abs = f.canonicalize().unwrap_or_else(|_| f.clone());
        let _ = writeln!(
            code,
            "    ({rel:?}, include_bytes!({:?})),",
            abs.to_string_lossy()
        );
    }
    code.push_str("];\n");
    let out =
        PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("dashboard_assets.rs");
    std::fs::write(out, code).unwrap_or_else(|e| panic!("writing the dashboard's asset list: {e}"));
}
