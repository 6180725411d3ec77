//! The cluster's route table (sans-IO): which node holds subscribers for which filter, so a
//! publish goes once to each node that wants it and to one node per shared group.
//!
//! It is the router's own topic trie ([`Index`]) with nodes where the router has connections:
//! a node is a plain subscriber of each filter it holds, and a member of each shared group one
//! of its sessions belongs to. Every node keeps the whole table, fed by the other nodes'
//! route changes; a node's entry goes when it says goodbye or stops beating.

use super::wire::{NodeId, RouteChange};
use crate::router::index::Index;
use crate::router::{Key, Tenant};
use cloudsignal_core::topic::{TopicFilter, TopicName};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a message goes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Shared groups this node was picked for.
    pub local_groups: Vec<Key>,
    /// Other nodes: whether their plain subscribers want it, and the groups they were picked
    /// for.
    pub remote: BTreeMap<NodeId, (bool, Vec<Key>)>,
}

#[derive(Debug)]
struct Peer {
    keys: HashSet<(Tenant, Key)>,
    /// Route changes applied from it (its version).
    version: u64,
    last_seen: Instant,
}

/// Every node's filters.
#[derive(Debug)]
pub struct Routes {
    me: NodeId,
    spaces: HashMap<Tenant, Index<Arc<TopicFilter>>>,
    peers: HashMap<NodeId, Peer>,
    /// Changes this node has made to its own routes.
    version: u64,
}

/// What applying a peer's route changes found.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Applied; the peer's routes are up to date.
    Current,
    /// A change went missing (or the peer is new to us): ask for its whole set.
    Gap,
}

fn parse_key(c: &RouteChange) -> Option<(Tenant, Key)> {
    let filter = TopicFilter::parse(&c.filter).ok()?;
    Some((
        Tenant::from(c.tenant.as_str()),
        (c.group.as_deref().map(Box::from), filter),
    ))
}

impl Routes {
    /// The table of node `me` (whose own routes are kept like any other node's).
    pub fn new(me: NodeId, now: Instant) -> Self {
        let mut peers = HashMap::new();
        peers.insert(
            me,
            Peer {
                keys: HashSet::new(),
                version: 0,
                last_seen: now,
            },
        );
        Self {
            me,
            spaces: HashMap::new(),
            peers,
            version: 0,
        }
    }

    fn add(&mut self, node: NodeId, tenant: Tenant, key: Key) {
        let Some(peer) = self.peers.get_mut(&node) else {
            return;
        };
        if peer.keys.insert((tenant.clone(), key.clone())) {
            let filter = Arc::new(key.1.clone());
            self.spaces
                .entry(tenant)
                .or_default()
                .insert(&key, node, filter);
        }
    }

    fn remove(&mut self, node: NodeId, tenant: &Tenant, key: &Key) {
        let Some(peer) = self.peers.get_mut(&node) else {
            return;
        };
        if peer.keys.remove(&(tenant.clone(), key.clone())) {
            if let Some(space) = self.spaces.get_mut(tenant) {
                space.remove(key, node);
                if space.len() == 0 {
                    self.spaces.remove(tenant);
                }
            }
        }
    }

    /// This node gained or lost a filter; returns the change to tell the others, and this
    /// node's route version with it.
    pub fn local_change(&mut self, tenant: &Tenant, key: &Key, gained: bool) -> (u64, RouteChange) {
        self.version += 1;
        if gained {
            self.add(self.me, tenant.clone(), key.clone());
        } else {
            self.remove(self.me, tenant, key);
        }
        let change = RouteChange {
            tenant: tenant.to_string(),
            group: key.0.as_deref().map(str::to_owned),
            filter: key.1.as_str().to_owned(),
            gained,
        };
        (self.version, change)
    }

    /// This node's whole route set, as changes, and its version.
    pub fn own(&self) -> (u64, Vec<RouteChange>) {
        let mut all: Vec<RouteChange> = self.peers[&self.me]
            .keys
            .iter()
            .map(|(t, k)| RouteChange {
                tenant: t.to_string(),
                group: k.0.as_deref().map(str::to_owned),
                filter: k.1.as_str().to_owned(),
                gained: true,
            })
            .collect();
        all.sort_by(|a, b| (&a.tenant, &a.group, &a.filter).cmp(&(&b.tenant, &b.group, &b.filter)));
        (self.version, all)
    }

    /// A node was heard from; whether it is new.
    pub fn seen(&mut self, node: NodeId, now: Instant) -> bool {
        match self.peers.get_mut(&node) {
            Some(p) => {
                p.last_seen = now;
                false
            }
            None => {
                self.peers.insert(
                    node,
                    Peer {
                        keys: HashSet::new(),
                        version: 0,
                        last_seen: now,
                    },
                );
                true
            }
        }
    }

    /// Applies `node`'s route changes (its version after them is `version`; with `reset` they
    /// are its whole set). Changes already applied (a whole set sent since) are skipped.
    pub fn apply(
        &mut self,
        node: NodeId,
        version: u64,
        reset: bool,
        changes: &[RouteChange],
        now: Instant,
    ) -> Applied {
        if node == self.me {
            return Applied::Current;
        }
        self.seen(node, now);
        let known = self.peers.get(&node).map_or(0, |p| p.version);
        let mut skip = 0;
        if reset {
            self.forget_routes(node);
        } else {
            let first = (version + 1).saturating_sub(changes.len() as u64);
            if first > known + 1 {
                // a lost part: only the whole set is trustworthy now
                return Applied::Gap;
            }
            skip = usize::try_from(known + 1 - first).unwrap_or(usize::MAX);
        }
        for c in changes.iter().skip(skip) {
            if let Some((tenant, key)) = parse_key(c) {
                if c.gained {
                    self.add(node, tenant, key);
                } else {
                    self.remove(node, &tenant, &key);
                }
            }
        }
        if let Some(p) = self.peers.get_mut(&node) {
            p.version = p.version.max(version);
        }
        Applied::Current
    }

    /// Whether `node`'s announced version is the one applied here.
    pub fn current(&self, node: NodeId, version: u64) -> bool {
        self.peers.get(&node).is_some_and(|p| p.version == version)
    }

    fn forget_routes(&mut self, node: NodeId) {
        let keys: Vec<(Tenant, Key)> = self
            .peers
            .get(&node)
            .map(|p| p.keys.iter().cloned().collect())
            .unwrap_or_default();
        for (t, k) in &keys {
            self.remove(node, t, k);
        }
    }

    /// Forgets `node` (it left, or stopped beating); whether it was known.
    pub fn forget(&mut self, node: NodeId) -> bool {
        if node == self.me {
            return false;
        }
        self.forget_routes(node);
        self.peers.remove(&node).is_some()
    }

    /// Nodes not heard from for `timeout`.
    pub fn silent(&self, now: Instant, timeout: Duration) -> Vec<NodeId> {
        self.peers
            .iter()
            .filter(|(n, p)| **n != self.me && now.duration_since(p.last_seen) > timeout)
            .map(|(n, _)| *n)
            .collect()
    }

    /// The other nodes known.
    pub fn peers(&self) -> Vec<NodeId> {
        self.peers
            .keys()
            .copied()
            .filter(|n| *n != self.me)
            .collect()
    }

    /// Where a message on `topic` in `tenant` goes.
    pub fn plan(&mut self, tenant: &Tenant, topic: &TopicName) -> Plan {
        let mut plan = Plan::default();
        let Some(space) = self.spaces.get_mut(tenant) else {
            return plan;
        };
        let me = self.me;
        space.for_each_plain_match(topic, |node, _| {
            if node != me {
                plan.remote.entry(node).or_default().0 = true;
            }
        });
        space.for_each_group_match(topic, |group, node, filter| {
            let key: Key = (Some(group.into()), TopicFilter::clone(filter));
            if node == me {
                plan.local_groups.push(key);
            } else {
                plan.remote.entry(node).or_default().1.push(key);
            }
        });
        plan
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn change(filter: &str, group: Option<&str>, gained: bool) -> RouteChange {
        RouteChange {
            tenant: "t".into(),
            group: group.map(str::to_owned),
            filter: filter.into(),
            gained,
        }
    }

    fn topic(t: &str) -> TopicName {
        TopicName::parse(t).unwrap()
    }

    #[test]
    fn plain_routes_go_once_per_node_and_groups_to_one_node() {
        let now = Instant::now();
        let mut r = Routes::new(1, now);
        let t: Tenant = "t".into();
        // node 2 holds overlapping filters: it still gets one copy
        let changes = [change("a/+", None, true), change("a/#", None, true)];
        assert_eq!(r.apply(2, 2, false, &changes, now), Applied::Current);
        assert_eq!(
            r.apply(3, 1, false, &[change("a/b", Some("g"), true)], now),
            Applied::Current
        );
        r.local_change(
            &t,
            &(Some("g".into()), TopicFilter::parse("a/+").unwrap()),
            true,
        );
        let plan = r.plan(&t, &topic("a/b"));
        assert_eq!(plan.remote.get(&2), Some(&(true, vec![])));
        // group g has members on 1 (filter a/+) and 3 (filter a/b): distinct groups by filter
        assert_eq!(plan.local_groups.len(), 1);
        assert_eq!(plan.remote.get(&3).map(|x| x.1.len()), Some(1));
        assert!(r.plan(&t, &topic("b")).remote.is_empty());
        assert!(r.plan(&"other".into(), &topic("a/b")).remote.is_empty());
    }

    #[test]
    fn a_group_on_two_nodes_alternates() {
        let now = Instant::now();
        let mut r = Routes::new(1, now);
        let t: Tenant = "t".into();
        r.local_change(
            &t,
            &(Some("g".into()), TopicFilter::parse("x").unwrap()),
            true,
        );
        r.apply(2, 1, false, &[change("x", Some("g"), true)], now);
        let picks: Vec<bool> = (0..4)
            .map(|_| r.plan(&t, &topic("x")).local_groups.is_empty())
            .collect();
        assert_eq!(picks.iter().filter(|remote| **remote).count(), 2);
    }

    #[test]
    fn gaps_ask_for_the_whole_set_and_silence_forgets() {
        let now = Instant::now();
        let mut r = Routes::new(1, now);
        assert_eq!(
            r.apply(2, 5, false, &[change("a", None, true)], now),
            Applied::Gap
        );
        assert_eq!(
            r.apply(2, 5, true, &[change("a", None, true)], now),
            Applied::Current
        );
        assert!(r.current(2, 5));
        assert_eq!(r.plan(&"t".into(), &topic("a")).remote.len(), 1);
        assert_eq!(
            r.apply(2, 6, false, &[change("a", None, false)], now),
            Applied::Current
        );
        // a change the whole set already held is not applied twice
        assert_eq!(
            r.apply(2, 6, false, &[change("a", None, true)], now),
            Applied::Current
        );
        assert!(r.plan(&"t".into(), &topic("a")).remote.is_empty());
        r.apply(2, 7, false, &[change("a", None, true)], now);
        let later = now + Duration::from_secs(5);
        assert_eq!(r.silent(later, Duration::from_secs(3)), vec![2]);
        assert!(r.forget(2));
        assert!(r.plan(&"t".into(), &topic("a")).remote.is_empty());
        assert!(!r.forget(1), "a node never forgets itself");
    }

    #[test]
    fn own_routes_are_the_whole_set() {
        let now = Instant::now();
        let mut r = Routes::new(1, now);
        let t: Tenant = "t".into();
        let k = (None, TopicFilter::parse("a/#").unwrap());
        r.local_change(&t, &k, true);
        assert_eq!(r.own(), (1, vec![change("a/#", None, true)]));
        r.local_change(&t, &k, false);
        assert_eq!(r.own(), (2, vec![]));
    }
}
