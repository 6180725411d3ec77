//! The sync loop of each source, and what a sync does: read, plan, store, revoke, report.

use super::plan::{self, Changes, Guard, Reason, Standing};
use super::SourceConfig;
use crate::{unix_now, ControlPlane};
use anyhow::{Context, Result};
use cloudsignal_core::revocation::Revocation;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// One configured source at run time.
#[derive(Debug)]
pub struct Source {
    /// Its configuration.
    pub config: SourceConfig,
    /// The org its users belong to.
    pub org: String,
    /// One sync at a time.
    running: tokio::sync::Mutex<()>,
}

/// The configured sources.
#[derive(Debug, Default)]
pub struct Directory {
    sources: Vec<Source>,
}

/// The users counted by standing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Active users.
    pub active: usize,
    /// Disabled users.
    pub disabled: usize,
    /// Removed users (tombstones).
    pub removed: usize,
}

/// A source's status (`GET /v1/directory/status`, `cloudsignal directory status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The source's name.
    pub source: String,
    /// Its URL (no credentials are ever part of it).
    pub url: String,
    /// Its preset.
    pub preset: String,
    /// Seconds between syncs.
    pub interval: u64,
    /// When the last sync started (Unix seconds).
    pub last_attempt: Option<u64>,
    /// When the last sync that applied its changes finished.
    pub last_success: Option<u64>,
    /// How long the last sync took, read and apply, in milliseconds.
    pub duration_ms: Option<u64>,
    /// Users by standing after the last successful sync.
    pub users: Counts,
    /// Group entries the last read found.
    pub groups: usize,
    /// The last successful sync's changes.
    pub changes: Changes,
    /// Users whose tokens the last successful sync revoked.
    pub revoked_users: usize,
    /// Live sessions it closed (0x98).
    pub closed_sessions: usize,
    /// Entries the last read skipped.
    pub skipped: usize,
    /// A few of them, with why.
    pub skipped_examples: Vec<String>,
    /// Why the last sync failed or was refused (`None`: it succeeded).
    pub error: Option<String>,
    /// Removals the last sync was refused for (confirm them with `POST /v1/directory/sync`).
    pub pending_removals: Option<usize>,
    /// Syncs failed or refused in a row.
    pub consecutive_failures: u32,
}

/// What a user name is to the directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    /// In no configured directory.
    NotListed,
    /// Active: `username` is the directory's spelling, `roles` from their groups.
    Active {
        /// The name as the directory has it.
        username: String,
        /// Roles from their groups.
        roles: Vec<String>,
    },
    /// Disabled or removed in its directory.
    Deprovisioned(Standing),
    /// Two sources name an active user so: refused until one of them is changed.
    Ambiguous,
}

impl Directory {
    /// The sources of `configs`, whose users belong to `default_org` unless they say another.
    pub fn new(configs: Vec<SourceConfig>, default_org: &str) -> Self {
        Self {
            sources: configs
                .into_iter()
                .map(|config| Source {
                    org: config.org.clone().unwrap_or_else(|| default_org.to_owned()),
                    config,
                    running: tokio::sync::Mutex::new(()),
                })
                .collect(),
        }
    }

    /// Whether any source is configured.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The sources.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.config.name == name)
    }
}

/// How a person is looked up in the directories.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    /// By user name (`POST /v1/tokens`, an identity provider's subject).
    Username(&'a str),
    /// By a verified e-mail address (the token exchange).
    Email(&'a str),
}

impl ControlPlane {
    /// What the person `who` of `org` is to the configured directories.
    pub fn directory_standing(&self, org: &str, who: Lookup<'_>) -> Result<Listing> {
        if self.directory.is_empty() {
            return Ok(Listing::NotListed);
        }
        let rows = self.store.directory_lookup(org, who)?;
        let mut active = Vec::new();
        let mut gone = None;
        for r in &rows {
            // rows of a source no longer configured are not acted on
            let Some(source) = self.directory.source(&r.source) else {
                continue;
            };
            match r.stored.standing {
                Standing::Active => active.push((source, &r.stored.user)),
                s => gone = gone.or(Some(s)),
            }
        }
        Ok(match (active.as_slice(), gone) {
            ([(source, user)], _) => Listing::Active {
                username: user.username.clone(),
                roles: user
                    .groups
                    .iter()
                    .map(|g| source.config.role_of(g).to_owned())
                    .collect(),
            },
            ([], Some(s)) => Listing::Deprovisioned(s),
            ([], None) => Listing::NotListed,
            _ => Listing::Ambiguous,
        })
    }

    /// Every source's last status, as stored.
    pub fn directory_status(&self) -> Result<Vec<Status>> {
        let stored = self.store.directory_status()?;
        Ok(self
            .directory
            .sources
            .iter()
            .map(|s| {
                stored
                    .iter()
                    .find(|(name, _)| *name == s.config.name)
                    .and_then(|(_, json)| serde_json::from_str(json).ok())
                    .unwrap_or_else(|| blank_status(&s.config))
            })
            .collect())
    }

    /// Syncs `name` now, allowing `confirmed` removals past the guard.
    pub async fn sync_directory_now(
        self: &Arc<Self>,
        name: &str,
        confirmed: usize,
    ) -> Option<Status> {
        let source = self.directory.source(name)?;
        Some(sync_once(self, source, confirmed).await)
    }
}

fn blank_status(c: &SourceConfig) -> Status {
    Status {
        source: c.name.clone(),
        url: c.url.clone(),
        preset: serde_json::to_value(c.preset)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        interval: c.interval,
        ..Status::default()
    }
}

/// Starts one sync loop per source (the first sync at once).
pub fn spawn(cp: &Arc<ControlPlane>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..cp.directory.sources.len())
        .map(|i| {
            let cp = cp.clone();
            tokio::spawn(async move {
                let source = &cp.directory.sources[i];
                let every = Duration::from_secs(source.config.interval);
                info!(directory = %source.config.name, url = %source.config.url, interval_s = every.as_secs(), "directory sync started");
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    sync_once(&cp, source, 0).await;
                }
            })
        })
        .collect()
}

/// One sync of `source`: never deprovisions anyone on a failed or refused read.
async fn sync_once(cp: &Arc<ControlPlane>, source: &Source, confirmed: usize) -> Status {
    let _one = source.running.lock().await;
    let c = &source.config;
    let started = Instant::now();
    let mut status = cp
        .directory_status()
        .ok()
        .and_then(|all| all.into_iter().find(|s| s.source == c.name))
        .unwrap_or_else(|| blank_status(c));
    status.last_attempt = Some(unix_now().secs());
    let outcome = match c.bind_password() {
        Ok(pw) => super::ldap::read(c, pw.as_deref()).await,
        Err(e) => Err(e),
    };
    let outcome = match outcome {
        Ok(read) => {
            let (cp2, name, org) = (cp.clone(), c.name.clone(), source.org.clone());
            let guard = Guard {
                max_fraction: c.max_removed_fraction,
                floor: c.removal_floor,
                confirmed,
            };
            tokio::task::spawn_blocking(move || apply(&cp2, &name, &org, read, guard))
                .await
                .context("the sync's apply step panicked")
                .and_then(|r| r)
        }
        Err(e) => Err(e),
    };
    status.duration_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    match outcome {
        Ok(Ok(applied)) => {
            status.last_success = Some(unix_now().secs());
            status.error = None;
            status.pending_removals = None;
            status.consecutive_failures = 0;
            status.users = applied.counts;
            status.groups = applied.groups;
            status.changes = applied.changes;
            status.revoked_users = applied.revoked;
            status.closed_sessions = applied.closed;
            status.skipped = applied.skipped.len();
            status.skipped_examples = applied.skipped.into_iter().take(5).collect();
            info!(
                directory = %c.name,
                ms = status.duration_ms,
                active = status.users.active,
                changes = ?status.changes,
                revoked = status.revoked_users,
                closed = status.closed_sessions,
                skipped = status.skipped,
                "directory synced"
            );
        }
        Ok(Err(refusal)) => {
            warn!(directory = %c.name, reason = %refusal, "directory sync refused by the removal guard; nothing was changed");
            status.pending_removals = Some(match refusal {
                plan::Refusal::Empty { active } => active,
                plan::Refusal::TooMany { removed, .. } => removed,
            });
            status.error = Some(refusal.to_string());
            status.consecutive_failures += 1;
            audit_sync(cp, source, "refused", refusal.to_string());
        }
        Err(e) => {
            let why = format!("{e:#}");
            warn!(directory = %c.name, error = %why, "directory sync failed; nothing was changed");
            status.pending_removals = None;
            status.error = Some(why);
            status.consecutive_failures += 1;
        }
    }
    if let Ok(json) = serde_json::to_string(&status) {
        if let Err(e) = cp.store.save_directory_status(&c.name, &json) {
            warn!(directory = %c.name, error = %e, "saving the directory status failed");
        }
    }
    status
}

/// What an applied sync did.
struct Applied {
    counts: Counts,
    groups: usize,
    changes: Changes,
    revoked: usize,
    closed: usize,
    skipped: Vec<String>,
}

/// Plans and applies a read: rows first (a token request after this sees the new standing),
/// then the revocations (sessions closed 0x98), each in the audit log.
fn apply(
    cp: &ControlPlane,
    name: &str,
    org: &str,
    read: super::ldap::Read,
    guard: Guard,
) -> Result<Result<Applied, plan::Refusal>> {
    let stored = cp.store.directory_users(name)?;
    let p = match plan::plan(&stored, read.users, guard) {
        Ok(p) => p,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let now = unix_now();
    cp.store.apply_directory(name, org, &p.upserts, now)?;
    let mut closed = 0;
    for (user, reason) in &p.revoke {
        let (entry, sessions) = cp.revoke(Revocation::User {
            org: org.to_owned(),
            user: user.clone(),
        })?;
        closed += sessions.len();
        let action = match reason {
            Reason::Removed | Reason::Disabled => "directory.deprovision",
            Reason::GroupsChanged => "directory.groups_changed",
            Reason::Renamed => "directory.renamed",
        };
        info!(directory = name, user, reason = ?reason, closed = sessions.len(), seq = entry.seq, "directory change: the user's tokens revoked");
        cp.audit_local(
            org,
            &format!("directory:{name}"),
            action,
            Some(user),
            format!("{reason:?}; closed {} sessions", sessions.len()),
        );
    }
    let mut counts = Counts::default();
    for s in cp.store.directory_users(name)? {
        match s.standing {
            Standing::Active => counts.active += 1,
            Standing::Disabled => counts.disabled += 1,
            Standing::Removed => counts.removed += 1,
        }
    }
    Ok(Ok(Applied {
        counts,
        groups: read.groups,
        changes: p.changes,
        revoked: p.revoke.len(),
        closed,
        skipped: read.skipped,
    }))
}

fn audit_sync(cp: &ControlPlane, source: &Source, outcome: &str, detail: String) {
    let name = format!("directory:{}", source.config.name);
    cp.audit_local_outcome(&source.org, &name, "directory.sync", None, outcome, detail);
}
