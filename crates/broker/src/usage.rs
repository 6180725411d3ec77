//! Usage accounting: connects, authentication failures, messages and bytes published and
//! delivered, per credential. Each connection counts in plain fields on its own task and hands
//! the totals to a [`UsageSink`] (the control plane) when it closes and at most every
//! [`FLUSH_EVERY`] while active, so counting costs no lock per message.

use cloudsignal_core::revocation::Credential;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How often an active connection reports its counters.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// Whom usage is counted for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// An API key, by id.
    Key(String),
    /// A token's user, `<user>@<org>`.
    User(String),
}

impl Subject {
    /// The subject of a credential (its key if it has one, else its user).
    pub fn of(c: &Credential) -> Option<Self> {
        if let Some(k) = &c.key_id {
            return Some(Self::Key(k.clone()));
        }
        match (&c.user, &c.org) {
            (Some(u), Some(o)) => Some(Self::User(format!("{u}@{o}"))),
            _ => None,
        }
    }
}

/// Counters for one subject (serialized flat: the usage API's fields).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Successful CONNECTs.
    pub connects: u64,
    /// Refused CONNECTs.
    pub auth_failures: u64,
    /// PUBLISHes accepted from the subject.
    pub published: u64,
    /// Their payload bytes.
    pub published_bytes: u64,
    /// Messages delivered to the subject.
    pub delivered: u64,
    /// Their payload bytes.
    pub delivered_bytes: u64,
}

impl Counters {
    /// Whether all counters are zero.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Adds `other` to these counters.
    pub fn add(&mut self, other: &Counters) {
        self.connects += other.connects;
        self.auth_failures += other.auth_failures;
        self.published += other.published;
        self.published_bytes += other.published_bytes;
        self.delivered += other.delivered;
        self.delivered_bytes += other.delivered_bytes;
    }
}

/// Receives usage (implemented by the control plane).
pub trait UsageSink: Send + Sync + std::fmt::Debug {
    /// Adds `counters` for `subject`, last seen from `peer`.
    fn record(&self, subject: Subject, peer: IpAddr, counters: Counters);
}

/// A connection's running counters.
#[derive(Debug)]
pub(crate) struct Meter {
    pub(crate) counters: Counters,
    last_flush: Instant,
}

impl Default for Meter {
    fn default() -> Self {
        Self {
            counters: Counters::default(),
            last_flush: Instant::now(),
        }
    }
}

impl Meter {
    /// Takes the counters if they are due (or `force`), leaving zeros.
    pub(crate) fn take(&mut self, force: bool, now: Instant) -> Option<Counters> {
        let due = now.saturating_duration_since(self.last_flush) >= FLUSH_EVERY;
        if self.counters.is_empty() || !(force || due) {
            return None;
        }
        self.last_flush = now;
        Some(std::mem::take(&mut self.counters))
    }
}

/// The subject a refused CONNECT is counted against: the API key's id when the password is a
/// well-formed key, else the username when it is `<user>@<org>`.
pub(crate) fn refused_subject(username: Option<&str>, password: Option<&[u8]>) -> Option<Subject> {
    let key = password
        .and_then(|p| std::str::from_utf8(p).ok())
        .and_then(|p| cloudsignal_core::apikey::ApiKey::parse(p).ok());
    if let Some(k) = key {
        return Some(Subject::Key(k.id().to_owned()));
    }
    username
        .and_then(|u| cloudsignal_core::ids::Username::parse(u).ok())
        .map(|u| Subject::User(format!("{}@{}", u.user.as_str(), u.org.as_str())))
}
