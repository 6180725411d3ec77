//! Persistent sessions that outlive their node (cluster mode; see `cluster::durable`).
//!
//! In a cluster, a QoS 1/2 message that some persistent session subscribes to is written to the
//! cluster's *message log* before its publisher is acknowledged. Persistent sessions take such
//! *logged* messages from the log, in log order (never from the live path), so each has a
//! *cursor*: every logged message at or below it that the session wants has been acknowledged
//! by its client. The node writes each session's subscriptions and cursor to the session
//! registry; when the node is lost, the node its client returns to rebuilds the session from
//! the registry and replays the log after the cursor. Nothing acknowledged to a publisher is
//! lost; what the client had not acknowledged comes again (QoS 1 and 2 alike: at least once
//! across a node loss).
//!
//! Acknowledgement is seen without touching the protocol state: each logged delivery carries
//! its own copy of the message and the session keeps a weak reference to it. Once the client
//! has acknowledged it (PUBACK, PUBREC then PUBCOMP), or it expired, or it could not be sent,
//! the session's protocol state drops the copy and the reference dies.

use super::index::SubKey;
use super::{hand, merge, ConnId, Routed, Router, Session, Target, Tenant};
use cloudsignal_core::mqtt::{QoS, SubscriptionOptions};
use cloudsignal_core::session::{Delivery, Message};
use cloudsignal_core::topic::{SubscriptionFilter, TopicFilter};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Instant;

/// A persistent session as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The identity's owner key (client ids are scoped to it).
    pub owner: String,
    /// The client id.
    pub client_id: String,
    /// The identity's tenant.
    pub tenant: String,
    /// The node holding it (hex id).
    pub node: String,
    /// Its Session Expiry Interval (seconds): how long the record outlives a lost node.
    #[serde(default)]
    pub expiry: u32,
    /// Every logged message up to here that the session wants was acknowledged by its client.
    pub cursor: u64,
    /// Its subscriptions.
    pub subscriptions: Vec<RecordSub>,
}

/// One subscription of a [`SessionRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSub {
    /// The filter as subscribed (`$share/{group}/…` for a shared subscription).
    pub filter: String,
    /// Granted QoS.
    pub qos: u8,
    /// No Local.
    #[serde(default)]
    pub no_local: bool,
    /// Retain As Published.
    #[serde(default)]
    pub retain_as_published: bool,
    /// Retain Handling.
    #[serde(default)]
    pub retain_handling: u8,
    /// Subscription Identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
}

impl RecordSub {
    /// The filter and its options, if the filter parses.
    pub fn parse(&self) -> Option<(SubscriptionFilter, SubscriptionOptions)> {
        let filter = SubscriptionFilter::parse(&self.filter).ok()?;
        let opts = SubscriptionOptions {
            qos: QoS::from_bits(self.qos).ok()?,
            no_local: self.no_local,
            retain_as_published: self.retain_as_published,
            retain_handling: self.retain_handling.min(2),
        };
        Some((filter, opts))
    }
}

/// A persistent session's place in the message log.
#[derive(Debug)]
pub(super) struct Durable {
    key: Arc<str>,
    /// Takes logged messages from the node's log reader; until then a replay feeds it.
    attached: bool,
    /// While replaying: the log position replayed up to.
    replayed: u64,
    /// Logged deliveries not yet settled, in log order.
    pending: VecDeque<(u64, Weak<Message>)>,
    /// Registry revision of the record this node last wrote.
    revision: u64,
    /// Session Expiry Interval (seconds).
    expiry: u32,
    /// The record last written (only changes are written).
    written: Option<SessionRecord>,
    /// The session moved to another node: the record is no longer this node's.
    moved: bool,
}

impl Durable {
    fn cursor(&mut self, position: u64) -> u64 {
        self.pending.retain(|(_, m)| m.strong_count() > 0);
        let caught_up = if self.attached {
            position
        } else {
            self.replayed
        };
        self.pending
            .front()
            .map_or(caught_up, |(seq, _)| (seq - 1).min(caught_up))
    }
}

/// A record to write to the registry.
#[derive(Debug)]
pub struct RecordWrite {
    /// The session.
    pub id: ConnId,
    /// Its registry key.
    pub key: Arc<str>,
    /// The revision to replace (`None`: the first write here, which claims the key).
    pub revision: Option<u64>,
    /// The record.
    pub record: SessionRecord,
}

/// What a replay step did.
#[derive(Debug, PartialEq, Eq)]
pub enum Replayed {
    /// Go on reading the log.
    More,
    /// Caught up: the node's log reader feeds the session from now on.
    Attached,
    /// The session is gone (ended, moved, taken over): stop.
    Gone,
}

/// One step of a replay.
#[derive(Debug)]
pub enum ReplayStep<'a> {
    /// The log's entry `seq`: messages, each published in its tenant.
    Entry(u64, &'a [(Tenant, Arc<Message>)]),
    /// Nothing came for a while.
    Idle,
    /// Give up waiting for entries the log no longer has (attach now).
    GiveUp,
}

fn options_of(key: &SubKey, opts: SubscriptionOptions, id: Option<u32>) -> RecordSub {
    let filter = match &key.0 {
        Some(g) => format!("$share/{g}/{}", key.1.as_str()),
        None => key.1.as_str().to_owned(),
    };
    RecordSub {
        filter,
        qos: opts.qos as u8,
        no_local: opts.no_local,
        retain_as_published: opts.retain_as_published,
        retain_handling: opts.retain_handling,
        id,
    }
}

impl Router {
    /// The position of the last log entry the node's log reader handed out.
    pub fn log_position(&self) -> u64 {
        self.log_position
    }

    /// Where the node's log reader starts (entries up to `position` are before its time).
    pub fn start_log(&mut self, position: u64) {
        self.log_position = self.log_position.max(position);
    }

    /// Makes session `id` durable under registry `key`: attached to the log reader now, or
    /// (with `resumed`: the record's cursor and revision) fed by a replay of the log after
    /// that cursor first. A session already durable here keeps its state.
    pub fn make_durable(
        &mut self,
        id: ConnId,
        key: Arc<str>,
        expiry: u32,
        resumed: Option<(u64, u64)>,
    ) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if let Some(d) = s.durable.as_mut().filter(|d| d.key == key && !d.moved) {
            d.expiry = expiry;
            return;
        }
        s.durable = Some(Box::new(Durable {
            key,
            attached: resumed.is_none(),
            replayed: resumed.map_or(0, |r| r.0),
            pending: VecDeque::new(),
            revision: resumed.map_or(0, |r| r.1),
            expiry,
            written: None,
            moved: false,
        }));
        self.durable_ids.insert(id);
    }

    /// Delivers logged entry `seq` (`message`, published in `tenant`) to this node's attached
    /// persistent sessions whose plain subscriptions match it.
    pub fn route_logged(&mut self, tenant: &Tenant, message: &Message, seq: u64) -> Routed {
        self.log_position = self.log_position.max(seq);
        let Some(space) = self.spaces.get_mut(tenant) else {
            return Routed::default();
        };
        let mut targets: BTreeMap<ConnId, Target> = BTreeMap::new();
        let sessions = &self.sessions;
        space
            .subs
            .for_each_plain_match(&message.topic, |conn, sub| {
                let attached = sessions
                    .get(&conn)
                    .and_then(|s| s.durable.as_ref())
                    .is_some_and(|d| d.attached && !d.moved);
                if attached {
                    merge(&mut targets, conn, message, sub);
                }
            });
        let mut routed = Routed {
            reached: targets.len(),
            ..Routed::default()
        };
        let mut stats = super::Stats::default();
        for (conn, target) in targets {
            if let Some(s) = self.sessions.get_mut(&conn) {
                let d = logged_delivery(s, message, seq, target);
                hand(
                    s,
                    d,
                    (self.max_stored, self.max_stored_bytes),
                    &mut stats,
                    &mut routed.congested,
                );
            }
        }
        space.stats.add(&stats);
        self.stats.add(&stats);
        routed
    }

    /// Feeds a replay of session `id` (registry `key`); see [`ReplayStep`].
    pub fn replay(&mut self, id: ConnId, key: &str, step: ReplayStep<'_>) -> (Replayed, Routed) {
        let position = self.log_position;
        let mut routed = Routed::default();
        let Some(s) = self.sessions.get_mut(&id) else {
            return (Replayed::Gone, routed);
        };
        let Some(replayed) = s
            .durable
            .as_ref()
            .filter(|d| &*d.key == key && !d.moved && !d.attached)
            .map(|d| d.replayed)
        else {
            return (Replayed::Gone, routed);
        };
        let attach = match step {
            ReplayStep::Entry(seq, messages) if seq <= position => {
                if seq > replayed {
                    if let Some(d) = s.durable.as_mut() {
                        d.replayed = seq;
                    }
                    let own = s.tenant.clone();
                    for (tenant, message) in messages.iter().filter(|(t, _)| *t == own) {
                        let mut one = BTreeMap::new();
                        if let Some(space) = self.spaces.get_mut(tenant) {
                            space
                                .subs
                                .for_each_plain_match(&message.topic, |conn, sub| {
                                    if conn == id {
                                        merge(&mut one, id, message, sub);
                                    }
                                });
                        }
                        if let Some(target) = one.remove(&id) {
                            let delivery = logged_delivery(s, message, seq, target);
                            let mut stats = super::Stats::default();
                            let limits = (self.max_stored, self.max_stored_bytes);
                            hand(s, delivery, limits, &mut stats, &mut routed.congested);
                            routed.reached += 1;
                            self.stats.add(&stats);
                        }
                    }
                }
                false
            }
            // the log reader has not handed this entry out yet: it will, to this session too
            ReplayStep::Entry(..) | ReplayStep::GiveUp => true,
            ReplayStep::Idle => replayed >= position,
        };
        if !attach {
            return (Replayed::More, routed);
        }
        if let Some(d) = s.durable.as_mut() {
            d.attached = true;
        }
        (Replayed::Attached, routed)
    }

    /// The records of this node's persistent sessions that changed since they were last
    /// written (`node`: this node's hex id), and the registry keys (with revisions) of those
    /// that ended here.
    pub fn durable_changes(&mut self, node: &str) -> (Vec<RecordWrite>, Vec<(Arc<str>, u64)>) {
        let position = self.log_position;
        let mut writes = Vec::new();
        let ids: Vec<ConnId> = self.durable_ids.iter().copied().collect();
        for id in ids {
            let Some(s) = self.sessions.get_mut(&id) else {
                self.durable_ids.remove(&id);
                continue;
            };
            let Some(d) = s.durable.as_mut().filter(|d| !d.moved) else {
                continue;
            };
            let cursor = d.cursor(position);
            let mut subscriptions = Vec::with_capacity(s.filters.len());
            if let Some(space) = self.spaces.get(&s.tenant) {
                for k in &s.filters {
                    if let Some(sub) = space.subs.get(k, id) {
                        subscriptions.push(options_of(k, sub.opts, sub.id));
                    }
                }
            }
            let record = SessionRecord {
                owner: s.owner.to_string(),
                client_id: s.client_id.to_string(),
                tenant: s.tenant.to_string(),
                node: node.to_owned(),
                expiry: d.expiry,
                cursor,
                subscriptions,
            };
            if d.written.as_ref() != Some(&record) {
                writes.push(RecordWrite {
                    id,
                    key: d.key.clone(),
                    revision: d.written.is_some().then_some(d.revision),
                    record,
                });
            }
        }
        (writes, std::mem::take(&mut self.durable_gone))
    }

    /// `write` reached the registry as `revision`.
    pub fn durable_written(&mut self, write: RecordWrite, revision: u64) {
        let d = self
            .sessions
            .get_mut(&write.id)
            .and_then(|s| s.durable.as_mut())
            .filter(|d| d.key == write.key && !d.moved);
        if let Some(d) = d {
            d.revision = revision;
            d.written = Some(write.record);
        }
    }

    /// Whether logged deliveries reach session `s` from the log (so the live path skips it).
    pub(super) fn takes_from_log(s: &Session) -> bool {
        s.durable.as_ref().is_some_and(|d| !d.moved)
    }

    /// A durable session ends here: its record goes too, unless the session moved.
    pub(super) fn durable_ended(&mut self, id: ConnId, d: Option<Box<Durable>>) {
        self.durable_ids.remove(&id);
        if let Some(d) = d.filter(|d| !d.moved && (d.written.is_some() || d.revision > 0)) {
            self.durable_gone.push((d.key, d.revision));
        }
    }

    /// Removes registry record `key` (at `revision`): a Clean Start ended the session it
    /// holds.
    pub fn forget_record(&mut self, key: Arc<str>, revision: u64) {
        self.durable_gone.push((key, revision));
    }

    /// Marks session `id`'s record as another node's (it moved there).
    pub(super) fn durable_moved(&mut self, id: ConnId) {
        if let Some(d) = self.sessions.get_mut(&id).and_then(|s| s.durable.as_mut()) {
            d.moved = true;
        }
    }

    /// Restores a session's subscriptions from its record (those `keep` allows); how many.
    pub fn restore_subscriptions(
        &mut self,
        id: ConnId,
        subs: &[RecordSub],
        keep: &dyn Fn(&TopicFilter) -> bool,
        now: Instant,
    ) -> usize {
        let mut restored = 0;
        for sub in subs {
            let Some((filter, opts)) = sub.parse() else {
                continue;
            };
            let allowed = match &filter {
                SubscriptionFilter::Plain(f) | SubscriptionFilter::Shared { filter: f, .. } => {
                    keep(f)
                }
            };
            // a resumed session's subscriptions send no retained messages
            if allowed && self.subscribe(id, filter, opts, sub.id, now).is_ok() {
                restored += 1;
            }
        }
        restored
    }
}

/// A delivery of logged entry `seq` with its own copy of the message, tracked by `s`.
fn logged_delivery(
    s: &mut Session,
    message: &Message,
    seq: u64,
    (qos, retain, subscription_ids): Target,
) -> Delivery {
    let copy = Arc::new(message.clone());
    if qos != QoS::AtMostOnce {
        if let Some(d) = s.durable.as_mut() {
            d.pending.push_back((seq, Arc::downgrade(&copy)));
        }
    }
    Delivery {
        expiry: copy.expiry,
        message: copy,
        qos,
        retain,
        subscription_ids,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::mailbox::Mailbox;
    use crate::router::{ConnHandle, Scope};
    use cloudsignal_core::revocation::Credential;
    use cloudsignal_core::topic::TopicName;

    fn message(topic: &str, qos: QoS) -> Message {
        Message {
            topic: TopicName::parse(topic).unwrap(),
            payload: b"p".to_vec(),
            qos,
            retain: false,
            expiry: None,
            forwarded: Default::default(),
        }
    }

    fn options(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        }
    }

    /// A router with session 1 (durable, plain `d/#`) and session 2 (clean, `d/#`), both live.
    fn setup() -> (Router, Arc<Mailbox>, Arc<Mailbox>, Tenant) {
        let mut r = Router::default();
        let t = Tenant::from("t");
        let cred = Arc::new(Credential::default());
        let now = Instant::now();
        let boxes = [Arc::new(Mailbox::new(100)), Arc::new(Mailbox::new(100))];
        for (i, b) in boxes.iter().enumerate() {
            let id = i as u64 + 1;
            let handle = ConnHandle {
                mailbox: b.clone(),
                info: None,
            };
            r.register(
                id,
                &format!("c{id}"),
                "o",
                &t,
                &cred,
                handle,
                true,
                id == 1,
                now,
            )
            .unwrap();
            let f = SubscriptionFilter::parse("d/#").unwrap();
            let opts = options(QoS::AtLeastOnce);
            r.subscribe(id, f, opts, None, now).unwrap();
        }
        r.make_durable(1, "k1".into(), 60, None);
        let [a, b] = boxes;
        (r, a, b, t)
    }

    fn logged(r: &mut Router, t: &Tenant, topic: &str) -> usize {
        let scope = Scope::Selected {
            plain: true,
            groups: &[],
            logged: true,
        };
        r.route(7, t, Arc::new(message(topic, QoS::AtLeastOnce)), &scope)
            .reached
    }

    #[test]
    fn logged_messages_reach_durable_sessions_from_the_log_only_and_in_log_order() {
        let (mut r, durable, clean, t) = setup();
        assert_eq!(logged(&mut r, &t, "d/1"), 2);
        assert_eq!(clean.len(), 1, "the clean session gets it live");
        assert_eq!(durable.len(), 0, "the durable one waits for the log");
        r.route_logged(&t, &message("d/1", QoS::AtLeastOnce), 5);
        assert_eq!((durable.len(), clean.len()), (1, 1));
        assert_eq!(r.log_position(), 5);
        // an unlogged message (no durable subscriber known yet) goes live to everyone
        let scope = Scope::Selected {
            plain: true,
            groups: &[],
            logged: false,
        };
        r.route(7, &t, Arc::new(message("d/2", QoS::AtLeastOnce)), &scope);
        assert_eq!((durable.len(), clean.len()), (2, 2));
    }

    #[test]
    fn the_cursor_waits_for_the_client_to_acknowledge() {
        let (mut r, durable, _, t) = setup();
        for seq in [3, 4] {
            r.route_logged(&t, &message("d/x", QoS::AtLeastOnce), seq);
        }
        r.route_logged(&t, &message("other", QoS::AtLeastOnce), 6);
        let cursor = |r: &mut Router| r.durable_changes("n").0[0].record.cursor;
        assert_eq!(cursor(&mut r), 2, "3 and 4 are not acknowledged");
        let held = durable.close();
        assert_eq!(
            cursor(&mut r),
            2,
            "held by the session (in flight or queued)"
        );
        let mut held = held.into_iter();
        drop(held.next());
        assert_eq!(cursor(&mut r), 3, "3 acknowledged, 4 still held");
        drop(held);
        assert_eq!(
            cursor(&mut r),
            6,
            "all acknowledged: caught up with the log reader"
        );
    }

    #[test]
    fn records_are_written_when_they_change_and_removed_when_the_session_ends() {
        let (mut r, _, _, _) = setup();
        let (mut writes, gone) = r.durable_changes("n");
        assert!(gone.is_empty());
        let w = writes.pop().unwrap();
        assert_eq!(w.revision, None, "the first write claims the record");
        assert_eq!(w.record.subscriptions[0].filter, "d/#");
        r.durable_written(w, 9);
        assert!(r.durable_changes("n").0.is_empty(), "nothing changed");
        r.subscribe(
            1,
            SubscriptionFilter::parse("$share/g/e").unwrap(),
            options(QoS::AtMostOnce),
            Some(4),
            Instant::now(),
        )
        .unwrap();
        let (writes, _) = r.durable_changes("n");
        assert_eq!(writes[0].revision, Some(9));
        assert_eq!(writes[0].record.subscriptions.len(), 2);
        r.remove(1);
        assert_eq!(r.durable_changes("n").1, vec![(Arc::from("k1"), 9)]);
    }

    #[test]
    fn a_moved_session_leaves_its_record_to_the_new_node() {
        let (mut r, _, _, _) = setup();
        let w = r.durable_changes("n").0.pop().unwrap();
        r.durable_written(w, 2);
        assert!(r.evict("o", "c1"));
        r.remove(1);
        let (writes, gone) = r.durable_changes("n");
        assert!(writes.is_empty() && gone.is_empty());
    }

    #[test]
    fn a_replay_delivers_up_to_the_reader_then_attaches() {
        let (mut r, _, resumed, t) = setup();
        r.start_log(10);
        r.make_durable(2, "k2".into(), 60, Some((4, 1)));
        let m = Arc::new(message("d/r", QoS::AtLeastOnce));
        let other = Tenant::from("u");
        fn step(r: &mut Router, s: ReplayStep<'_>) -> (Replayed, usize) {
            let (done, routed) = r.replay(2, "k2", s);
            (done, routed.reached)
        }
        // an entry may hold several messages (the log writer batches)
        let two = [(t.clone(), m.clone()), (t.clone(), m.clone())];
        assert_eq!(
            step(&mut r, ReplayStep::Entry(5, &two)),
            (Replayed::More, 2)
        );
        assert_eq!(
            step(&mut r, ReplayStep::Entry(6, &[(other.clone(), m.clone())])),
            (Replayed::More, 0)
        );
        assert_eq!(
            step(&mut r, ReplayStep::Idle).0,
            Replayed::More,
            "7..10 not read yet"
        );
        assert_eq!(
            step(&mut r, ReplayStep::Entry(5, &[(t.clone(), m.clone())])).1,
            0,
            "once"
        );
        // the reader hands 11 out while the session replays: the replay delivers it
        r.route_logged(&t, &m, 11);
        assert_eq!(resumed.len(), 2);
        assert_eq!(
            step(&mut r, ReplayStep::Entry(11, &[(t.clone(), m.clone())])),
            (Replayed::More, 1)
        );
        // 12 is not handed out yet: the reader will, so the session attaches
        assert_eq!(
            step(&mut r, ReplayStep::Entry(12, &[(t.clone(), m.clone())])),
            (Replayed::Attached, 0)
        );
        r.route_logged(&t, &m, 12);
        assert_eq!(resumed.len(), 4, "5 (two), 11 and 12, once each");
        assert_eq!(step(&mut r, ReplayStep::Idle).0, Replayed::Gone, "done");
        let cursor = r
            .durable_changes("n")
            .0
            .into_iter()
            .find(|w| &*w.key == "k2")
            .unwrap()
            .record
            .cursor;
        assert_eq!(cursor, 4, "5, 11 and 12 are held for the client");
    }

    #[test]
    fn an_idle_replay_attaches_once_caught_up() {
        let (mut r, _, _, t) = setup();
        r.start_log(3);
        r.make_durable(2, "k2".into(), 60, Some((1, 1)));
        let m = Arc::new(message("d/r", QoS::AtLeastOnce));
        assert_eq!(r.replay(2, "k2", ReplayStep::Idle).0, Replayed::More);
        assert_eq!(
            r.replay(2, "k2", ReplayStep::Entry(3, &[(t.clone(), m.clone())]))
                .0,
            Replayed::More
        );
        assert_eq!(r.replay(2, "k2", ReplayStep::Idle).0, Replayed::Attached);
        r.make_durable(1, "k1".into(), 60, Some((0, 1)));
        assert_eq!(
            r.replay(1, "k1", ReplayStep::GiveUp).0,
            Replayed::Gone,
            "already durable here: no replay"
        );
    }
}
