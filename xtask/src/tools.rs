//! Where the cargo-installed tools live, how they are installed, and `cargo xtask doctor`.
//!
//! By default `cargo install` puts tools in `$CARGO_HOME/bin` (usually `~/.cargo/bin`). Two
//! settings change that:
//!
//! - `CLOUDSIGNAL_TOOLS=<dir>`: tools are installed with `cargo install --root <dir>`, looked up
//!   **only** in `<dir>/bin` (a tool elsewhere on PATH does not count), and `<dir>/bin` goes first
//!   on PATH for every command the xtask starts.
//! - `--fresh-tools` (or `CLOUDSIGNAL_FRESH_TOOLS=1`): the same with an emptied
//!   `target/fresh-tools`, and `cargo install` resolves against an empty `CARGO_HOME`
//!   (`target/fresh-tools/cargo-home`), exactly as on a machine that never built a tool. This is
//!   how "works on a fresh machine" is tested rather than assumed.
//!
//! An install first tries `cargo install --locked` (the tool's own lock file); when the
//! registry this machine reaches cannot serve a locked version, it installs the same tool
//! version unlocked and says so. How each tool was installed is recorded beside it
//! (`<root>/.cloudsignal-installs`) and shown by `cargo xtask doctor`.

use crate::util::{note, output, root, run};
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The tool location chosen for this run.
#[derive(Debug, Clone, Default)]
pub(crate) struct ToolRoot {
    /// `cargo install --root` directory; `None` means cargo's default (`$CARGO_HOME`).
    dir: Option<PathBuf>,
    /// `CARGO_HOME` for `cargo install` (fresh mode: an empty one).
    install_home: Option<PathBuf>,
}

impl ToolRoot {
    /// Reads the settings, empties the fresh location if asked for, and puts the tool
    /// directory first on PATH (inherited by every command started afterwards).
    pub(crate) fn from_env(fresh_flag: bool) -> Result<Self> {
        let fresh = fresh_flag || std::env::var("CLOUDSIGNAL_FRESH_TOOLS").is_ok_and(|v| v == "1");
        let root_dir = if fresh {
            let dir = root().join("target").join("fresh-tools");
            if dir.exists() {
                fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
            }
            fs::create_dir_all(dir.join("bin"))?;
            note(&format!(
                "fresh tools: installing every cargo tool into {} with an empty CARGO_HOME",
                dir.display()
            ));
            Some(dir)
        } else {
            std::env::var_os("CLOUDSIGNAL_TOOLS")
                .filter(|v| !v.is_empty())
                .map(|v| {
                    let dir = PathBuf::from(v);
                    if dir.is_absolute() {
                        dir
                    } else {
                        root().join(dir)
                    }
                })
        };
        let tools = ToolRoot {
            install_home: root_dir
                .as_ref()
                .filter(|_| fresh)
                .map(|d| d.join("cargo-home")),
            dir: root_dir,
        };
        if let Some(dir) = &tools.dir {
            fs::create_dir_all(dir.join("bin"))?;
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut parts = vec![dir.join("bin")];
            parts.extend(std::env::split_paths(&path).filter(|p| p != &dir.join("bin")));
            let joined = std::env::join_paths(parts).context("PATH")?;
            // single-threaded here (before any command starts); every child inherits it
            std::env::set_var("PATH", joined);
            std::env::set_var("CLOUDSIGNAL_TOOLS", dir);
        }
        Ok(tools)
    }

    /// The directory that holds installed binaries.
    fn bin_dir(&self) -> PathBuf {
        match &self.dir {
            Some(d) => d.join("bin"),
            None => cargo_home().join("bin"),
        }
    }

    /// The binary `name` where this run installs it, if it is there. With a tool directory set,
    /// a copy elsewhere on PATH is ignored: leftovers must not make a fresh run pass.
    pub(crate) fn installed(&self, name: &str) -> Option<PathBuf> {
        let here = self.bin_dir().join(name);
        if here.is_file() {
            return Some(here);
        }
        if self.dir.is_some() {
            return None;
        }
        which(name)
    }

    /// The version a binary prints for `--version`, if it is installed where this run looks.
    pub(crate) fn version(&self, name: &str, args: &[&str]) -> Option<String> {
        let bin = self.installed(name)?;
        output(Command::new(bin).args(args))
    }

    /// `cargo install <krate> --version <version>`: locked first, unlocked when the registry
    /// cannot serve the tool's locked dependencies. Records which one worked.
    pub(crate) fn cargo_install(&self, krate: &str, version: &str) -> Result<()> {
        note(&format!(
            "cargo install {krate} --version {version} into {} (a few minutes, once)",
            self.bin_dir().display()
        ));
        let install = |locked: bool| {
            let mut cmd = Command::new("cargo");
            cmd.arg("install");
            if locked {
                cmd.arg("--locked");
            }
            cmd.args([krate, "--version", version])
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("RUSTUP_TOOLCHAIN");
            if let Some(dir) = &self.dir {
                cmd.arg("--root").arg(dir);
            }
            if let Some(home) = &self.install_home {
                cmd.env("CARGO_HOME", home);
            }
            run(&mut cmd)
        };
        let how = match install(true) {
            Ok(()) => "cargo install --locked",
            Err(locked) => {
                note(&format!(
                    "the locked install of {krate} {version} failed ({locked:#}); the registry may \
                     not serve a version its lock file names. Installing {krate} {version} \
                     unlocked (newest compatible dependencies)"
                ));
                install(false).with_context(|| {
                    format!("cargo install {krate} --version {version} failed locked and unlocked")
                })?;
                "cargo install (unlocked: the locked install could not resolve)"
            }
        };
        self.record(krate, version, how)
    }

    fn record(&self, krate: &str, version: &str, how: &str) -> Result<()> {
        let file = self.bin_dir().join("..").join(".cloudsignal-installs");
        let mut lines: Vec<String> = fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with(&format!("{krate} ")))
            .map(str::to_owned)
            .collect();
        lines.push(format!("{krate} {version}: {how}"));
        fs::write(&file, lines.join("\n") + "\n")
            .with_context(|| format!("writing {}", file.display()))
    }

    /// How `krate` was installed by an earlier bootstrap, if recorded.
    fn how_installed(&self, krate: &str) -> Option<String> {
        let file = self.bin_dir().join("..").join(".cloudsignal-installs");
        fs::read_to_string(file).ok()?.lines().find_map(|l| {
            l.strip_prefix(krate)
                .filter(|rest| rest.starts_with(' '))
                .and_then(|rest| rest.split_once(": "))
                .map(|(_, how)| how.to_owned())
        })
    }
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from(".cargo"))
}

/// The first `cmd` on PATH.
pub(crate) fn which(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

/// The Debian package that owns `path`, with its installed version.
fn debian_package(path: &Path) -> Option<String> {
    let real = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let owner = output(Command::new("dpkg").arg("-S").arg(&real))
        .or_else(|| output(Command::new("dpkg").arg("-S").arg(path)))?;
    let package = owner.split(':').next()?.trim().to_owned();
    let version = output(Command::new("dpkg-query").args(["-W", "-f=${Version}", &package]))?;
    Some(format!("Debian package {package} {version}"))
}

/// One doctor row: what, version, where, and where it came from.
pub(crate) struct Row {
    pub(crate) tool: String,
    pub(crate) version: String,
    pub(crate) path: String,
    pub(crate) origin: String,
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_owned()
}

/// The line of a command's output (stdout, then stderr, whatever its exit status: some tools
/// print their version with `--help` and exit non-zero) that names a version.
fn version_line(cmd: &mut Command) -> String {
    let Ok(out) = cmd.output() else {
        return "(does not run)".into();
    };
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(str::trim)
        .find(|l| l.contains("version") || l.starts_with(|c: char| c.is_ascii_digit() || c == 'v'))
        .or_else(|| text.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or("(no version)")
        .to_owned()
}

/// A row for a command found on PATH (or at a fixed path).
fn command_row(name: &str, path: Option<PathBuf>, args: &[&str]) -> Row {
    let Some(path) = path else {
        return Row {
            tool: name.into(),
            version: "MISSING".into(),
            path: "-".into(),
            origin: "not installed (the bootstrap installs it)".into(),
        };
    };
    let version = version_line(Command::new(&path).args(args));
    let origin = debian_package(&path).unwrap_or_else(|| origin_by_location(&path));
    Row {
        tool: name.into(),
        version,
        path: path.display().to_string(),
        origin,
    }
}

fn origin_by_location(path: &Path) -> String {
    let p = path.display().to_string();
    if p.contains("/.rustup/") || p.ends_with(".cargo/bin/cargo") || p.ends_with(".cargo/bin/rustc")
    {
        "rustup".into()
    } else if p.contains("/.pyenv/") {
        "pyenv".into()
    } else if p.contains("/node_modules/") {
        "npm (package-lock.json)".into()
    } else {
        "found on PATH (origin unknown)".into()
    }
}

/// A row for an npm package in node_modules.
fn npm_row(package: &str) -> Row {
    let manifest = root()
        .join("node_modules")
        .join(package)
        .join("package.json");
    let version = fs::read_to_string(&manifest).ok().and_then(|text| {
        let at = text.find("\"version\"")?;
        let rest = &text[at + 9..];
        let start = rest.find('"')? + 1;
        let end = rest[start..].find('"')?;
        Some(rest[start..start + end].to_owned())
    });
    Row {
        tool: format!("npm {package}"),
        version: version.clone().unwrap_or_else(|| "MISSING".into()),
        path: if version.is_some() {
            manifest
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        } else {
            "-".into()
        },
        origin: "npm ci (package-lock.json)".into(),
    }
}

/// `cargo xtask doctor`: every tool the test command uses, its version, where it is and where it
/// came from. Never installs anything.
pub(crate) fn doctor(tools: &ToolRoot) -> Result<()> {
    let mut rows = vec![
        command_row("rustc", which("rustc"), &["--version"]),
        command_row("cargo", which("cargo"), &["--version"]),
    ];
    let toolchain = output(Command::new("rustup").args(["show", "active-toolchain"]))
        .unwrap_or_else(|| "(rustup not found)".into());
    rows.push(Row {
        tool: "rust toolchain".into(),
        version: first_line(&toolchain)
            .split(" (")
            .next()
            .unwrap_or_default()
            .to_owned(),
        path: "-".into(),
        origin: "rustup".into(),
    });
    rows.push(crate::bootstrap::wasm_std_row());
    for (krate, bin, args) in [
        ("wasm-bindgen-cli", "wasm-bindgen", &["--version"][..]),
        ("worker-build", "worker-build", &["--version"][..]),
        ("cargo-fuzz", "cargo-fuzz", &["fuzz", "--version"][..]),
    ] {
        let path = tools.installed(bin);
        let mut row = command_row(bin, path.clone(), args);
        if path.is_some() {
            row.origin = tools
                .how_installed(krate)
                .unwrap_or_else(|| format!("{krate} (installed before this project recorded how)"));
        }
        rows.push(row);
    }
    for (name, args) in [
        ("node", &["--version"][..]),
        ("npm", &["--version"][..]),
        ("chromium", &["--version"][..]),
        ("chromedriver", &["--version"][..]),
        ("mosquitto_pub", &["--help"][..]),
        ("openssl", &["version"][..]),
        ("python3", &["--version"][..]),
    ] {
        rows.push(command_row(name, which(name), args));
    }
    rows.push(command_row(
        "mosquitto",
        Some(PathBuf::from("/usr/sbin/mosquitto")).filter(|p| p.exists()),
        &["-h"],
    ));
    rows.push(command_row(
        "slapd",
        Some(PathBuf::from("/usr/sbin/slapd")).filter(|p| p.exists()),
        &["-VV"],
    ));
    rows.push(command_row("ldapmodify", which("ldapmodify"), &["-VV"]));
    rows.push(command_row("psql", which("psql"), &["--version"]));
    rows.push(command_row(
        "nats-server",
        Some(PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.exists()),
        &["--version"],
    ));
    for package in [
        "wrangler",
        "playwright-core",
        "vite",
        "binaryen",
        "esbuild",
        "mqtt",
        "jose",
    ] {
        rows.push(npm_row(package));
    }
    let python = root().join("target/py/bin/python");
    for package in ["paho-mqtt", "pytest", "schemathesis"] {
        let version = output(Command::new(&python).args([
            "-c",
            &format!("import importlib.metadata as m; print(m.version('{package}'))"),
        ]));
        rows.push(Row {
            tool: format!("pip {package}"),
            version: version.clone().unwrap_or_else(|| "MISSING".into()),
            path: if version.is_some() {
                "target/py".into()
            } else {
                "-".into()
            },
            origin: "pip (tests/py/requirements.txt)".into(),
        });
    }
    print_rows(&rows);
    let missing = rows.iter().filter(|r| r.version == "MISSING").count();
    if missing > 0 {
        note(&format!(
            "{missing} missing: `cargo xtask bootstrap` (or `cargo xtask test`) installs them"
        ));
    }
    Ok(())
}

fn print_rows(rows: &[Row]) {
    let w = |f: fn(&Row) -> &str| rows.iter().map(|r| f(r).chars().count()).max().unwrap_or(0);
    let (wt, wv, wp) = (w(|r| &r.tool), w(|r| &r.version), w(|r| &r.path));
    for r in rows {
        eprintln!(
            "  {:wt$}  {:wv$}  {:wp$}  {}",
            r.tool, r.version, r.path, r.origin
        );
    }
}
