//! Routing: subscriptions (plain and shared), retained messages, and the registry of live
//! connections by client id (for takeover).
//!
//! This first version matches by scanning the subscribed filters; the API is what a topic
//! trie will sit behind.

use cloudsignal_core::mqtt::{QoS, ReasonCode, SubscriptionOptions};
use cloudsignal_core::session::{Delivery, Message};
use cloudsignal_core::topic::{SubscriptionFilter, TopicFilter, TopicName};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// Identifies one network connection.
pub type ConnId = u64;

/// Tells a connection task to close, with the reason code and reason string to send.
/// A `watch` channel: setting it never blocks, and it overtakes queued deliveries.
pub type KillSwitch = watch::Sender<Option<(ReasonCode, Option<String>)>>;

/// The handles the router keeps for a connection.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    /// Deliveries, bounded: a full channel means a slow consumer.
    pub tx: mpsc::Sender<Delivery>,
    /// Closes the connection.
    pub kill: KillSwitch,
}

#[derive(Debug, Clone, Copy)]
struct Sub {
    opts: SubscriptionOptions,
    id: Option<u32>,
}

#[derive(Debug, Default)]
struct Group {
    members: BTreeMap<ConnId, Sub>,
    next: usize,
}

#[derive(Debug)]
struct Retained {
    message: Arc<Message>,
    at: Instant,
}

#[derive(Debug)]
struct Conn {
    handle: ConnHandle,
    client_id: String,
}

/// Why a client id could not be registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeoverRefused {
    /// Another user holds this client id.
    OtherUser(String),
}

/// Counters for `$SYS` and logs.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Messages routed to subscribers.
    pub delivered: u64,
    /// QoS 0 messages dropped because a subscriber's queue was full.
    pub dropped_qos0: u64,
    /// Connections closed as slow consumers.
    pub slow_consumers: u64,
}

/// The broker's routing state. Lives behind a mutex that is never held across an await.
#[derive(Debug, Default)]
pub struct Router {
    plain: HashMap<TopicFilter, BTreeMap<ConnId, Sub>>,
    shared: HashMap<(String, TopicFilter), Group>,
    retained: BTreeMap<TopicName, Retained>,
    conns: HashMap<ConnId, Conn>,
    clients: HashMap<String, (ConnId, String)>,
    /// Counters.
    pub stats: Stats,
}

fn remaining_expiry(m: &Message, at: Instant, now: Instant) -> Result<Option<u32>, ()> {
    match m.expiry {
        None => Ok(None),
        Some(e) => {
            let elapsed = u32::try_from(now.duration_since(at).as_secs()).unwrap_or(u32::MAX);
            if elapsed >= e {
                Err(())
            } else {
                Ok(Some(e - elapsed))
            }
        }
    }
}

impl Router {
    /// Registers a connection for `client_id` held by `username`. An existing connection with
    /// the same client id and user is told to close (0x8E, session taken over); one held by
    /// another user keeps it and the newcomer is refused.
    pub fn register(
        &mut self,
        conn: ConnId,
        client_id: &str,
        username: &str,
        handle: ConnHandle,
    ) -> Result<(), TakeoverRefused> {
        if let Some((old, owner)) = self.clients.get(client_id) {
            if owner != username {
                return Err(TakeoverRefused::OtherUser(owner.clone()));
            }
            if let Some(c) = self.conns.get(old) {
                let _ = c
                    .handle
                    .kill
                    .send(Some((ReasonCode::SESSION_TAKEN_OVER, None)));
            }
            let old = *old;
            self.remove(old);
        }
        self.clients
            .insert(client_id.to_owned(), (conn, username.to_owned()));
        self.conns.insert(
            conn,
            Conn {
                handle,
                client_id: client_id.to_owned(),
            },
        );
        Ok(())
    }

    /// Forgets a connection and all its subscriptions.
    pub fn remove(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            if self
                .clients
                .get(&c.client_id)
                .is_some_and(|(id, _)| *id == conn)
            {
                self.clients.remove(&c.client_id);
            }
        }
        self.plain.retain(|_, subs| {
            subs.remove(&conn);
            !subs.is_empty()
        });
        self.shared.retain(|_, g| {
            g.members.remove(&conn);
            !g.members.is_empty()
        });
    }

    /// Adds (or replaces) a subscription; returns the retained messages to replay to it.
    pub fn subscribe(
        &mut self,
        conn: ConnId,
        filter: SubscriptionFilter,
        opts: SubscriptionOptions,
        id: Option<u32>,
        now: Instant,
    ) -> Vec<Delivery> {
        let sub = Sub { opts, id };
        match filter {
            SubscriptionFilter::Shared { group, filter } => {
                // retained messages are not sent to shared subscriptions [MQTT-4.8.2]
                self.shared
                    .entry((group, filter))
                    .or_default()
                    .members
                    .insert(conn, sub);
                Vec::new()
            }
            SubscriptionFilter::Plain(filter) => {
                let existed = self
                    .plain
                    .entry(filter.clone())
                    .or_default()
                    .insert(conn, sub)
                    .is_some();
                let replay = match opts.retain_handling {
                    0 => true,
                    1 => !existed,
                    _ => false,
                };
                if !replay {
                    return Vec::new();
                }
                self.retained
                    .iter()
                    .filter(|(t, _)| filter.matches(t))
                    .filter_map(|(_, r)| {
                        let expiry = remaining_expiry(&r.message, r.at, now).ok()?;
                        Some(Delivery {
                            qos: r.message.qos.min(opts.qos),
                            message: r.message.clone(),
                            retain: true,
                            subscription_ids: id.into_iter().collect(),
                            expiry,
                        })
                    })
                    .collect()
            }
        }
    }

    /// Removes a subscription; whether it existed.
    pub fn unsubscribe(&mut self, conn: ConnId, filter: &SubscriptionFilter) -> bool {
        match filter {
            SubscriptionFilter::Plain(f) => self
                .plain
                .get_mut(f)
                .is_some_and(|s| s.remove(&conn).is_some()),
            SubscriptionFilter::Shared { group, filter } => self
                .shared
                .get_mut(&(group.clone(), filter.clone()))
                .is_some_and(|g| g.members.remove(&conn).is_some()),
        }
    }

    /// Removes every subscription of `conn` that `keep` refuses (after a narrower re-auth).
    pub fn retain_subscriptions(
        &mut self,
        conn: ConnId,
        keep: impl Fn(&TopicFilter) -> bool,
    ) -> usize {
        let mut removed = 0;
        for (f, subs) in self.plain.iter_mut() {
            if !keep(f) && subs.remove(&conn).is_some() {
                removed += 1;
            }
        }
        for ((_, f), g) in self.shared.iter_mut() {
            if !keep(f) && g.members.remove(&conn).is_some() {
                removed += 1;
            }
        }
        removed
    }

    /// Routes a message published by `from`; returns how many subscribers it reached.
    pub fn publish(&mut self, from: ConnId, message: Arc<Message>, now: Instant) -> usize {
        if message.retain {
            if message.payload.is_empty() {
                self.retained.remove(&message.topic);
            } else {
                self.retained.insert(
                    message.topic.clone(),
                    Retained {
                        message: message.clone(),
                        at: now,
                    },
                );
            }
        }
        // one delivery per connection: highest QoS, all subscription ids [MQTT-3.3.4-2]
        let mut targets: BTreeMap<ConnId, (QoS, bool, Vec<u32>)> = BTreeMap::new();
        let mut add = |conn: ConnId, sub: &Sub| {
            let qos = message.qos.min(sub.opts.qos);
            let retain = sub.opts.retain_as_published && message.retain;
            let t = targets.entry(conn).or_insert((qos, retain, Vec::new()));
            t.0 = t.0.max(qos);
            t.1 |= retain;
            t.2.extend(sub.id);
        };
        for (filter, subs) in &self.plain {
            if filter.matches(&message.topic) {
                for (conn, sub) in subs {
                    if !(sub.opts.no_local && *conn == from) {
                        add(*conn, sub);
                    }
                }
            }
        }
        for ((_, filter), group) in self.shared.iter_mut() {
            if filter.matches(&message.topic) && !group.members.is_empty() {
                let i = group.next % group.members.len();
                group.next = group.next.wrapping_add(1);
                if let Some((conn, sub)) = group.members.iter().nth(i) {
                    add(*conn, sub);
                }
            }
        }
        let reached = targets.len();
        for (conn, (qos, retain, subscription_ids)) in targets {
            let Some(c) = self.conns.get(&conn) else {
                continue;
            };
            let delivery = Delivery {
                message: message.clone(),
                qos,
                retain,
                subscription_ids,
                expiry: message.expiry,
            };
            match c.handle.tx.try_send(delivery) {
                Ok(()) => self.stats.delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) if qos == QoS::AtMostOnce => {
                    self.stats.dropped_qos0 += 1
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // slow consumer: it cannot take a message it must not lose; close it
                    self.stats.slow_consumers += 1;
                    let _ = c.handle.kill.send(Some((
                        ReasonCode::QUOTA_EXCEEDED,
                        Some("slow consumer".into()),
                    )));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        reached
    }

    /// Sends `Close` to every live connection (graceful shutdown).
    pub fn close_all(&self, reason: ReasonCode) {
        for c in self.conns.values() {
            let _ = c.handle.kill.send(Some((reason, None)));
        }
    }

    /// Number of live connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }
}
