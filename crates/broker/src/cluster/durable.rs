//! Persistent sessions that outlive their node: the session registry as each node mirrors it
//! (sans-IO; the tasks that feed it are in [`super::log`]).
//!
//! - **The message log** (JetStream stream `{cluster}_log`, subjects `{cluster}.log.{tenant}.…`)
//!   holds every QoS 1/2 message that a persistent session somewhere subscribes to. The
//!   publisher's node writes it there and acknowledges the publisher only once JetStream has
//!   stored it; then it routes it live as usual, marked *logged*. Persistent sessions take
//!   logged messages from the log (each node reads it in order), never from the live path, so
//!   each session has a cursor in it ([`crate::router::SessionRecord::cursor`]).
//! - **The session registry** (key-value bucket `{cluster}_sessions`, one record per session,
//!   keyed by a digest of owner and client id) holds each persistent session's node,
//!   subscriptions and cursor; the holding node rewrites a record when it changes (every 200 ms
//!   at most), and every node keeps a mirror of the whole bucket ([`Mirror`]).
//! - **Node loss.** A client that comes back to another node with Clean Start 0 finds its
//!   record in that node's mirror: the node restores the subscriptions, answers Session Present
//!   1, claims the record, and replays the log from the cursor before the log reader feeds the
//!   session; nothing acknowledged to a publisher is lost, and what the client had not
//!   acknowledged before the loss comes again.
//! - **Records of lost nodes** go once their session would have expired (Session Expiry
//!   Interval, at most the log's age limit: past it the log holds nothing for the session)
//!   counted from when this node noticed the node gone ([`Mirror::expired`]).
//! - **Which messages are logged.** The mirror knows every persistent session's plain filters
//!   ([`Mirror::wants`]), so a message nobody durable wants costs no JetStream round trip.

use crate::router::index::Index;
use crate::router::{SessionRecord, Tenant};
use cloudsignal_core::topic::{TopicFilter, TopicName};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Every node's persistent sessions, as the registry holds them.
#[derive(Debug, Default)]
pub struct Mirror {
    records: HashMap<String, (u64, SessionRecord)>,
    /// Plain filters of every record, by tenant (the value: nothing).
    wanted: HashMap<Tenant, Index<()>>,
    /// Records whose node is gone, since when this node has known it.
    orphaned: HashMap<String, Instant>,
}

/// A record's number in the filter index (the key is hex; its first 16 digits).
fn number(key: &str) -> u64 {
    key.get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0)
}

fn plain_filters(r: &SessionRecord) -> impl Iterator<Item = TopicFilter> + '_ {
    r.subscriptions.iter().filter_map(
        |s| match cloudsignal_core::topic::SubscriptionFilter::parse(&s.filter).ok()? {
            cloudsignal_core::topic::SubscriptionFilter::Plain(f) => Some(f),
            cloudsignal_core::topic::SubscriptionFilter::Shared { .. } => None,
        },
    )
}

impl Mirror {
    /// The registry's `key` is now `record` at `revision` (`None`: deleted).
    pub fn apply(&mut self, key: &str, revision: u64, record: Option<SessionRecord>) {
        let n = number(key);
        if let Some((_, old)) = self.records.remove(key) {
            let tenant = Tenant::from(old.tenant.as_str());
            if let Some(index) = self.wanted.get_mut(&tenant) {
                for f in plain_filters(&old) {
                    index.remove(&(None, f), n);
                }
                if index.len() == 0 {
                    self.wanted.remove(&tenant);
                }
            }
        }
        let Some(record) = record else {
            self.orphaned.remove(key);
            return;
        };
        let index = self
            .wanted
            .entry(Tenant::from(record.tenant.as_str()))
            .or_default();
        for f in plain_filters(&record) {
            index.insert(&(None, f), n, ());
        }
        self.records.insert(key.to_owned(), (revision, record));
    }

    /// Whether a persistent session subscribes to `topic` in `tenant` (plain subscriptions).
    pub fn wants(&mut self, tenant: &Tenant, topic: &TopicName) -> bool {
        let Some(index) = self.wanted.get_mut(tenant) else {
            return false;
        };
        let mut any = false;
        index.for_each_plain_match(topic, |_, ()| any = true);
        any
    }

    /// Records (key, revision) whose node has been gone (`alive` says no) for longer than
    /// their Session Expiry Interval, at most `max`: to remove.
    pub fn expired(
        &mut self,
        alive: &dyn Fn(&str) -> bool,
        now: Instant,
        max: Duration,
    ) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (key, (revision, record)) in &self.records {
            if alive(&record.node) {
                self.orphaned.remove(key);
                continue;
            }
            let since = *self.orphaned.entry(key.clone()).or_insert(now);
            let expiry = Duration::from_secs(u64::from(record.expiry)).min(max);
            if now.duration_since(since) >= expiry {
                out.push((key.clone(), *revision));
            }
        }
        out
    }

    /// The record at `key` and its revision.
    pub fn get(&self, key: &str) -> Option<&(u64, SessionRecord)> {
        self.records.get(key)
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::router::RecordSub;

    fn record(tenant: &str, filters: &[&str]) -> SessionRecord {
        SessionRecord {
            owner: "o".into(),
            client_id: "c".into(),
            tenant: tenant.into(),
            node: "0000000000000001".into(),
            expiry: 60,
            cursor: 7,
            subscriptions: filters
                .iter()
                .map(|f| RecordSub {
                    filter: (*f).into(),
                    qos: 1,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                    id: None,
                })
                .collect(),
        }
    }

    fn topic(t: &str) -> TopicName {
        TopicName::parse(t).unwrap()
    }

    #[test]
    fn wants_follows_the_records_plain_filters_per_tenant() {
        let mut m = Mirror::default();
        let (a, b) = ("aa".repeat(32), "bb".repeat(32));
        m.apply(&a, 1, Some(record("t1", &["s/+", "$share/g/x/#"])));
        m.apply(&b, 2, Some(record("t1", &["s/+"])));
        assert!(m.wants(&"t1".into(), &topic("s/1")));
        assert!(!m.wants(&"t2".into(), &topic("s/1")), "tenants are apart");
        assert!(
            !m.wants(&"t1".into(), &topic("x/1")),
            "shared subscriptions are not logged"
        );
        m.apply(&a, 3, None);
        assert!(m.wants(&"t1".into(), &topic("s/1")), "b still wants it");
        m.apply(&b, 4, Some(record("t1", &["other"])));
        assert!(!m.wants(&"t1".into(), &topic("s/1")), "a replaced record");
        assert_eq!(m.get(&b).map(|(r, _)| *r), Some(4));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn records_of_a_lost_node_expire_with_their_session() {
        let mut m = Mirror::default();
        let key = "cc".repeat(32);
        m.apply(&key, 5, Some(record("t", &["a"])));
        let t0 = Instant::now();
        let max = Duration::from_secs(3600);
        let alive = |n: &str| n == "0000000000000001";
        let gone = |_: &str| false;
        assert!(m.expired(&alive, t0, max).is_empty());
        assert!(m.expired(&gone, t0, max).is_empty(), "the clock starts now");
        let later = t0 + Duration::from_secs(59);
        assert!(m.expired(&gone, later, max).is_empty(), "60 s expiry");
        let after = t0 + Duration::from_secs(60);
        assert_eq!(m.expired(&gone, after, max), vec![(key.clone(), 5)]);
        assert!(m.expired(&alive, after, max).is_empty(), "the node is back");
        assert!(
            m.expired(&gone, after, max).is_empty(),
            "its clock starts again"
        );
        assert_eq!(
            m.expired(
                &gone,
                after + Duration::from_secs(10),
                Duration::from_secs(10)
            ),
            vec![(key, 5)],
            "never longer than the log keeps messages"
        );
    }

    #[test]
    fn records_are_json_with_their_subscriptions() {
        let r = record("t", &["a/#"]);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"cursor\":7"), "{json}");
        assert_eq!(serde_json::from_str::<SessionRecord>(&json).unwrap(), r);
        let (filter, opts) = r.subscriptions[0].parse().unwrap();
        assert_eq!(opts.qos as u8, 1);
        assert!(matches!(
            filter,
            cloudsignal_core::topic::SubscriptionFilter::Plain(_)
        ));
    }
}
