//! Usage analytics: the broker's counters, aggregated in memory per (UTC day, subject) and
//! written to the store in one transaction every [`FLUSH_EVERY`] and before every read, so a
//! CONNECT or PUBLISH never waits for the database.

use crate::store::Store;
use anyhow::Result;
use cloudsignal_broker::usage::{Counters, Subject, UsageSink};
use cloudsignal_core::UnixTime;
use serde::Serialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often aggregated usage is written to the store.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// One row of usage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// `key` or `user`.
    pub subject_kind: String,
    /// Key id or `<user>@<org>`.
    pub subject: String,
    /// Connects, refusals, messages and bytes both ways.
    #[serde(flatten)]
    pub counts: Counters,
    /// Last activity (Unix seconds).
    pub last_used: Option<u64>,
    /// Last peer address.
    pub last_ip: Option<String>,
}

/// The UTC hour of `t`: `YYYY-MM-DDTHH`.
pub fn hour_of(t: UnixTime) -> String {
    format!("{}T{:02}", day_of(t), (t.secs() % 86_400) / 3600)
}

/// The UTC day of `t` as `YYYY-MM-DD` (proleptic Gregorian, days-from-civil inverse).
pub fn day_of(t: UnixTime) -> String {
    let z = i64::try_from(t.secs() / 86_400).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Collects usage from the broker and writes it to the store.
#[derive(Debug, Default)]
pub struct UsageBook {
    pending: Mutex<HashMap<(String, String, String), UsageRow>>,
    /// The same by hour (`day` holds `YYYY-MM-DDTHH`).
    pending_hourly: Mutex<HashMap<(String, String, String), UsageRow>>,
    /// Every subject's counters since this process started (the dashboard's live figures).
    totals: Mutex<HashMap<(String, String), Counters>>,
}

fn kind_and_name(s: Subject) -> (String, String) {
    match s {
        Subject::Key(k) => ("key".into(), k),
        Subject::User(u) => ("user".into(), u),
    }
}

impl UsageBook {
    /// Adds counters now.
    pub fn add(&self, subject: Subject, peer: IpAddr, c: &Counters, now: UnixTime) {
        let (kind, name) = kind_and_name(subject);
        if let Ok(mut t) = self.totals.lock() {
            t.entry((kind.clone(), name.clone())).or_default().add(c);
        }
        let ip = peer.to_string();
        for (pending, period) in [
            (&self.pending_hourly, hour_of(now)),
            (&self.pending, day_of(now)),
        ] {
            if let Ok(mut p) = pending.lock() {
                let row = p
                    .entry((period.clone(), kind.clone(), name.clone()))
                    .or_insert_with(|| UsageRow {
                        day: period,
                        subject_kind: kind.clone(),
                        subject: name.clone(),
                        ..UsageRow::default()
                    });
                row.counts.add(c);
                row.last_used = Some(now.secs());
                row.last_ip = Some(ip.clone());
            }
        }
    }

    /// Every subject's counters since this process started: (kind, subject) → counters.
    pub fn totals(&self) -> Vec<((String, String), Counters)> {
        self.totals
            .lock()
            .map(|t| t.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    /// Writes what is pending to `store`, daily and hourly.
    pub fn flush(&self, store: &dyn Store) -> Result<()> {
        Self::flush_into(&self.pending_hourly, |rows| store.add_usage_hourly(rows))?;
        Self::flush_into(&self.pending, |rows| store.add_usage(rows))
    }

    fn flush_into(
        pending: &Mutex<HashMap<(String, String, String), UsageRow>>,
        write: impl FnOnce(&[UsageRow]) -> Result<()>,
    ) -> Result<()> {
        let rows: Vec<UsageRow> = match pending.lock() {
            Ok(mut p) => p.drain().map(|(_, v)| v).collect(),
            Err(_) => return Ok(()),
        };
        if rows.is_empty() {
            return Ok(());
        }
        if let Err(e) = write(&rows) {
            // keep them for the next attempt
            if let Ok(mut p) = pending.lock() {
                for r in rows {
                    p.insert(
                        (r.day.clone(), r.subject_kind.clone(), r.subject.clone()),
                        r,
                    );
                }
            }
            return Err(e);
        }
        Ok(())
    }
}

/// The broker-facing side: records into the control plane's book.
#[derive(Debug, Clone)]
pub struct BrokerUsage(pub Arc<crate::ControlPlane>);

impl UsageSink for BrokerUsage {
    fn record(&self, subject: Subject, peer: IpAddr, counters: Counters) {
        self.0
            .usage
            .add(subject, peer, &counters, crate::unix_now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_days() {
        assert_eq!(day_of(UnixTime(0)), "1970-01-01");
        assert_eq!(day_of(UnixTime(951_782_400)), "2000-02-29");
        assert_eq!(day_of(UnixTime(1_796_011_221)), "2026-11-30");
        assert_eq!(hour_of(UnixTime(1_796_011_221)), "2026-11-30T04");
        assert_eq!(hour_of(UnixTime(86_399)), "1970-01-01T23");
    }
}
