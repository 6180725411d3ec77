//! Brute-force defence: failed authentications are counted per source IP and per username;
//! each failure lengthens the refusal delay exponentially, and too many within a window ban the
//! **source** for a while. A username is never banned: its failures only slow down further
//! *failures* for it, so nobody can lock a user out by failing in their name, and a valid
//! credential is never refused or delayed. Successful clients are untouched: only failures
//! count.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Throttling rules.
#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    /// Failures within `window` that trigger a ban. Default 10.
    pub max_failures: u32,
    /// Window over which failures are counted. Default 60 s.
    pub window: Duration,
    /// Ban length. Default 5 minutes.
    pub ban: Duration,
    /// Upper bound of the exponential refusal delay. Default 8 s.
    pub max_delay: Duration,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            max_failures: 10,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(300),
            max_delay: Duration::from_secs(8),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    since: Instant,
    banned_until: Option<Instant>,
}

/// Entries kept at most per table; expired ones are pruned first when it fills.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug)]
struct Table<K> {
    entries: HashMap<K, Entry>,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn banned(&self, k: &K, now: Instant) -> bool {
        self.entries
            .get(k)
            .and_then(|e| e.banned_until)
            .is_some_and(|t| now < t)
    }

    fn fail(&mut self, k: &K, now: Instant, p: &ThrottlePolicy, bans: bool) -> u32 {
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(k) {
            self.entries
                .retain(|_, e| now < e.since + p.window || e.banned_until.is_some_and(|t| now < t));
            if self.entries.len() >= MAX_ENTRIES {
                return p.max_failures; // table full of live entries: treat as hostile
            }
        }
        let e = self.entries.entry(k.clone()).or_insert(Entry {
            failures: 0,
            since: now,
            banned_until: None,
        });
        if now >= e.since + p.window && e.banned_until.is_none_or(|t| now >= t) {
            *e = Entry {
                failures: 0,
                since: now,
                banned_until: None,
            };
        }
        e.failures += 1;
        if bans && e.failures >= p.max_failures {
            e.banned_until = Some(now + p.ban);
        }
        e.failures
    }
}

/// Failure counters for sources and usernames.
#[derive(Debug, Default)]
pub struct Throttle {
    policy: ThrottlePolicy,
    by_ip: Table<IpAddr>,
    by_user: Table<String>,
}

impl Throttle {
    /// A throttle with `policy`.
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    /// Whether the source is banned now.
    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        self.by_ip.banned(&ip, now)
    }

    /// Records a failed authentication; returns the extra delay the refusal should wait
    /// (exponential in the number of recent failures, capped).
    pub fn record_failure(&mut self, ip: IpAddr, username: Option<&str>, now: Instant) -> Duration {
        let mut n = self.by_ip.fail(&ip, now, &self.policy, true);
        if let Some(u) = username {
            n = n.max(self.by_user.fail(&u.to_owned(), now, &self.policy, false));
        }
        let factor = 1u32 << n.saturating_sub(1).min(16);
        (Duration::from_millis(100) * factor).min(self.policy.max_delay)
    }

    /// Forgets a username's failures after it authenticated.
    pub fn record_success(&mut self, username: &str) {
        self.by_user.entries.remove(username);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_after_max_failures_and_lifts_after_the_ban() {
        let p = ThrottlePolicy {
            max_failures: 3,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(10),
            max_delay: Duration::from_secs(8),
        };
        let mut t = Throttle::new(p);
        let ip = IpAddr::from([10, 0, 0, 1]);
        let t0 = Instant::now();
        assert_eq!(
            t.record_failure(ip, Some("a@org"), t0),
            Duration::from_millis(100)
        );
        assert_eq!(
            t.record_failure(ip, Some("a@org"), t0),
            Duration::from_millis(200)
        );
        assert!(!t.is_banned(ip, t0));
        t.record_failure(ip, Some("b@org"), t0);
        assert!(t.is_banned(ip, t0), "third failure from the IP bans it");
        assert!(
            !t.is_banned(IpAddr::from([10, 0, 0, 2]), t0),
            "another IP is not banned"
        );
        assert!(
            !t.is_banned(ip, t0 + Duration::from_secs(11)),
            "the ban expires"
        );
    }

    #[test]
    fn a_username_is_never_banned_only_its_failures_slowed() {
        let mut t = Throttle::new(ThrottlePolicy {
            max_failures: 3,
            ..ThrottlePolicy::default()
        });
        let t0 = Instant::now();
        // an attacker fails in the victim's name from many addresses
        let mut last = Duration::ZERO;
        for i in 0..20u8 {
            last = t.record_failure(IpAddr::from([10, 1, 0, i]), Some("victim@org"), t0);
        }
        assert_eq!(
            last,
            Duration::from_secs(8),
            "the victim's failures are slowed"
        );
        assert!(
            !t.is_banned(IpAddr::from([10, 2, 0, 1]), t0),
            "the victim's own address is not banned"
        );
        // a success clears the username's record
        t.record_success("victim@org");
        assert_eq!(
            t.record_failure(IpAddr::from([10, 3, 0, 1]), Some("victim@org"), t0),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn delay_is_capped() {
        let mut t = Throttle::new(ThrottlePolicy {
            max_failures: 1000,
            ..ThrottlePolicy::default()
        });
        let ip = IpAddr::from([10, 0, 0, 1]);
        let now = Instant::now();
        let mut last = Duration::ZERO;
        for _ in 0..40 {
            last = t.record_failure(ip, None, now);
        }
        assert_eq!(last, Duration::from_secs(8));
    }
}
