//! A throwaway PostgreSQL cluster for the store benchmark: Debian's initdb and pg_ctl in a temp
//! directory on a free loopback port (as root, through `runuser -u postgres`, since PostgreSQL
//! refuses to run as root). The same recipe as `tests/py/pg.py`.

use crate::free_port;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

const PASSWORD: &str = "cloudsignal-bench";

/// The newest `/usr/lib/postgresql/<v>/bin/<name>`.
fn bin(name: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|v| v.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop()
}

pub(crate) struct Pg {
    dir: PathBuf,
    port: u16,
    as_root: bool,
}

impl Pg {
    /// Whether initdb and pg_ctl are installed.
    pub(crate) fn available() -> bool {
        bin("initdb").is_some() && bin("pg_ctl").is_some()
    }

    fn run(&self, program: &Path, args: &[&str]) -> Result<()> {
        let mut cmd = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        let out = cmd.args(args).current_dir("/").output()?;
        if !out.status.success() {
            bail!(
                "{} failed: {}",
                program.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Starts a cluster.
    pub(crate) fn start() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("cs-bench-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let pw = dir.join("pw");
        std::fs::write(&pw, format!("{PASSWORD}\n"))?;
        if as_root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()?
                .success();
            if !ok {
                bail!("chown to postgres failed");
            }
        }
        let pg = Self {
            port: free_port(),
            dir,
            as_root,
        };
        let data = pg.dir.join("data");
        let (data, pw) = (data.to_string_lossy(), pw.to_string_lossy());
        pg.run(
            &bin("initdb").context("initdb")?,
            &[
                "-D",
                &data,
                "-U",
                "cloudsignal",
                "--auth=scram-sha-256",
                &format!("--pwfile={pw}"),
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        let log = pg.dir.join("log");
        // durable like a production server: fsync stays on, the store's writes are measured
        pg.run(
            &bin("pg_ctl").context("pg_ctl")?,
            &[
                "-D",
                &data,
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-o",
                &format!(
                    "-p {} -k {} -c listen_addresses=127.0.0.1",
                    pg.port,
                    pg.dir.display()
                ),
                "start",
            ],
        )?;
        Ok(pg)
    }

    /// A fresh database; its URL.
    pub(crate) fn create_db(&self, name: &str) -> Result<String> {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                "cloudsignal",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-c", &format!("CREATE DATABASE {name}")])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .context("psql (apt-get install postgresql-client)")?;
        if !out.status.success() {
            bail!("CREATE DATABASE: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(format!(
            "postgres://cloudsignal:{PASSWORD}@127.0.0.1:{}/{name}",
            self.port
        ))
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if let Some(pg_ctl) = bin("pg_ctl") {
            let data = self.dir.join("data");
            let _ = self.run(
                &pg_ctl,
                &["-D", &data.to_string_lossy(), "-m", "immediate", "stop"],
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
