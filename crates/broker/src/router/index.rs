//! The subscription index: a trie over topic levels, so routing a message costs time in the
//! depth of its topic and the number of matching subscriptions, not the number of filters.
//!
//! Each node holds the subscriptions whose filter ends there and those ending in `#` there
//! (which also match the parent level [MQTT-4.7.1-2]); `+` is a child of its own. Shared
//! subscriptions sit beside plain ones, keyed by group name. A filter starting with a wildcard
//! does not match a topic starting with `$` [MQTT-4.7.2-1]. Empty nodes are pruned on removal,
//! so memory follows the live subscriptions.

use super::ConnId;
use cloudsignal_core::mqtt::SubscriptionOptions;
use cloudsignal_core::topic::{FilterLevel, TopicFilter, TopicName};
use std::collections::{BTreeMap, HashMap};

/// One subscription's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sub {
    pub(crate) opts: SubscriptionOptions,
    pub(crate) id: Option<u32>,
}

/// A shared subscription group: one member gets each message, round robin.
#[derive(Debug)]
pub(crate) struct Group<S = Sub> {
    pub(crate) members: BTreeMap<ConnId, S>,
    next: usize,
}

#[derive(Debug)]
struct Subs<S> {
    plain: BTreeMap<ConnId, S>,
    shared: HashMap<Box<str>, Group<S>>,
}

impl<S> Default for Subs<S> {
    fn default() -> Self {
        Self {
            plain: BTreeMap::new(),
            shared: HashMap::new(),
        }
    }
}

impl<S> Default for Group<S> {
    fn default() -> Self {
        Self {
            members: BTreeMap::new(),
            next: 0,
        }
    }
}

impl<S> Subs<S> {
    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.shared.is_empty()
    }
}

#[derive(Debug)]
struct Node<S> {
    literal: HashMap<Box<str>, Node<S>>,
    plus: Option<Box<Node<S>>>,
    /// Filters ending at this node.
    here: Subs<S>,
    /// Filters ending with `#` below this node.
    multi: Subs<S>,
}

impl<S> Default for Node<S> {
    fn default() -> Self {
        Self {
            literal: HashMap::new(),
            plus: None,
            here: Subs::default(),
            multi: Subs::default(),
        }
    }
}

impl<S> Node<S> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.plus.is_none()
            && self.here.is_empty()
            && self.multi.is_empty()
    }
}

/// A subscription's key in the index: its group (for `$share/{group}/…`) and filter.
pub(crate) type SubKey = (Option<Box<str>>, TopicFilter);

/// Subscriptions by filter.
#[derive(Debug)]
pub(crate) struct Index<S = Sub> {
    root: Node<S>,
    len: usize,
}

impl<S> Default for Index<S> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<S> Index<S> {
    /// Adds or replaces a subscription; whether one existed.
    pub(crate) fn insert(&mut self, key: &SubKey, conn: ConnId, sub: S) -> bool {
        let mut node = &mut self.root;
        let mut multi = false;
        for level in key.1.levels() {
            node = match level {
                FilterLevel::Literal(l) => node.literal.entry(l.into()).or_default(),
                FilterLevel::Single => node.plus.get_or_insert_with(Box::default),
                FilterLevel::Multi => {
                    multi = true;
                    break;
                }
            };
        }
        let subs = if multi {
            &mut node.multi
        } else {
            &mut node.here
        };
        let existed = match &key.0 {
            None => subs.plain.insert(conn, sub).is_some(),
            Some(g) => subs
                .shared
                .entry(g.clone())
                .or_default()
                .members
                .insert(conn, sub)
                .is_some(),
        };
        if !existed {
            self.len += 1;
        }
        existed
    }

    /// Removes a subscription; whether it existed.
    pub(crate) fn remove(&mut self, key: &SubKey, conn: ConnId) -> bool {
        let levels: Vec<FilterLevel<'_>> = key.1.levels().collect();
        let removed = remove_at(&mut self.root, &levels, key.0.as_deref(), conn);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Number of subscriptions.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Calls `plain` for every plain subscription matching `topic`, and `shared` once per
    /// matching group with the member whose turn it is.
    pub(crate) fn for_each_match(&mut self, topic: &TopicName, mut visit: impl FnMut(ConnId, &S)) {
        let levels: Vec<&str> = topic.levels().collect();
        walk(&mut self.root, &levels, topic.is_dollar(), true, &mut visit);
    }

    /// Visits the plain subscriptions matching `topic` (no shared group is asked).
    pub(crate) fn for_each_plain_match(
        &mut self,
        topic: &TopicName,
        mut visit: impl FnMut(ConnId, &S),
    ) {
        let levels: Vec<&str> = topic.levels().collect();
        walk(
            &mut self.root,
            &levels,
            topic.is_dollar(),
            false,
            &mut visit,
        );
    }

    /// Visits, for every shared group whose filter matches `topic`, the group's name, the
    /// filter it holds (its node's path is not kept, so the member's value names it) and its
    /// next member in turn, as [`Self::for_each_match`] would pick it.
    pub(crate) fn for_each_group_match(
        &mut self,
        topic: &TopicName,
        mut visit: impl FnMut(&str, ConnId, &S),
    ) {
        let levels: Vec<&str> = topic.levels().collect();
        walk_groups(&mut self.root, &levels, topic.is_dollar(), &mut visit);
    }

    /// The subscription of `conn` to `key`, if it has one.
    pub(crate) fn get(&self, key: &SubKey, conn: ConnId) -> Option<&S> {
        let mut node = &self.root;
        let mut multi = false;
        for level in key.1.levels() {
            node = match level {
                FilterLevel::Literal(l) => node.literal.get(l)?,
                FilterLevel::Single => node.plus.as_deref()?,
                FilterLevel::Multi => {
                    multi = true;
                    break;
                }
            };
        }
        let subs = if multi { &node.multi } else { &node.here };
        match key.0.as_deref() {
            None => subs.plain.get(&conn),
            Some(g) => subs.shared.get(g)?.members.get(&conn),
        }
    }

    /// The next member (in turn) of the shared group `key` names, if it has any.
    pub(crate) fn pick(&mut self, key: &SubKey) -> Option<(ConnId, &S)> {
        let group = key.0.as_deref()?;
        let mut node = &mut self.root;
        let mut multi = false;
        for level in key.1.levels() {
            node = match level {
                FilterLevel::Literal(l) => node.literal.get_mut(l)?,
                FilterLevel::Single => node.plus.as_deref_mut()?,
                FilterLevel::Multi => {
                    multi = true;
                    break;
                }
            };
        }
        let subs = if multi {
            &mut node.multi
        } else {
            &mut node.here
        };
        next_member(subs.shared.get_mut(group)?)
    }
}

/// A group's next member, in turn.
fn next_member<S>(group: &mut Group<S>) -> Option<(ConnId, &S)> {
    if group.members.is_empty() {
        return None;
    }
    let i = group.next % group.members.len();
    group.next = group.next.wrapping_add(1);
    group.members.iter().nth(i).map(|(c, s)| (*c, s))
}

fn visit_subs<S>(subs: &mut Subs<S>, groups: bool, visit: &mut impl FnMut(ConnId, &S)) {
    for (conn, sub) in &subs.plain {
        visit(*conn, sub);
    }
    if !groups {
        return;
    }
    for group in subs.shared.values_mut() {
        if let Some((conn, sub)) = next_member(group) {
            visit(conn, sub);
        }
    }
}

fn walk_groups<S>(
    node: &mut Node<S>,
    rest: &[&str],
    dollar: bool,
    visit: &mut impl FnMut(&str, ConnId, &S),
) {
    let mut each = |subs: &mut Subs<S>| {
        for (name, group) in &mut subs.shared {
            if let Some((conn, sub)) = next_member(group) {
                visit(name, conn, sub);
            }
        }
    };
    if !dollar {
        each(&mut node.multi);
    }
    let Some((first, tail)) = rest.split_first() else {
        each(&mut node.here);
        return;
    };
    if let Some(child) = node.literal.get_mut(*first) {
        walk_groups(child, tail, false, visit);
    }
    if !dollar {
        if let Some(plus) = node.plus.as_deref_mut() {
            walk_groups(plus, tail, false, visit);
        }
    }
}

fn walk<S>(
    node: &mut Node<S>,
    rest: &[&str],
    dollar: bool,
    groups: bool,
    visit: &mut impl FnMut(ConnId, &S),
) {
    // `#` matches this level and everything below, but a wildcard never matches the first
    // level of a `$` topic [MQTT-4.7.2-1]
    if !dollar {
        visit_subs(&mut node.multi, groups, visit);
    }
    let Some((first, tail)) = rest.split_first() else {
        visit_subs(&mut node.here, groups, visit);
        return;
    };
    if let Some(child) = node.literal.get_mut(*first) {
        walk(child, tail, false, groups, visit);
    }
    if !dollar {
        if let Some(plus) = node.plus.as_deref_mut() {
            walk(plus, tail, false, groups, visit);
        }
    }
}

fn remove_at<S>(
    node: &mut Node<S>,
    levels: &[FilterLevel<'_>],
    group: Option<&str>,
    conn: ConnId,
) -> bool {
    let take = |subs: &mut Subs<S>| match group {
        None => subs.plain.remove(&conn).is_some(),
        Some(g) => {
            let Some(grp) = subs.shared.get_mut(g) else {
                return false;
            };
            let removed = grp.members.remove(&conn).is_some();
            if grp.members.is_empty() {
                subs.shared.remove(g);
            }
            removed
        }
    };
    match levels.split_first() {
        None => take(&mut node.here),
        Some((FilterLevel::Multi, _)) => take(&mut node.multi),
        Some((FilterLevel::Single, tail)) => {
            let Some(child) = node.plus.as_deref_mut() else {
                return false;
            };
            let removed = remove_at(child, tail, group, conn);
            if child.is_empty() {
                node.plus = None;
            }
            removed
        }
        Some((FilterLevel::Literal(l), tail)) => {
            let Some(child) = node.literal.get_mut(*l) else {
                return false;
            };
            let removed = remove_at(child, tail, group, conn);
            if child.is_empty() {
                node.literal.remove(*l);
            }
            removed
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cloudsignal_core::mqtt::QoS;
    use proptest::prelude::*;

    fn sub() -> Sub {
        Sub {
            opts: SubscriptionOptions {
                qos: QoS::AtMostOnce,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            },
            id: None,
        }
    }

    fn key(f: &str) -> SubKey {
        (None, TopicFilter::parse(f).unwrap())
    }

    fn matched(index: &mut Index, topic: &str) -> Vec<ConnId> {
        let mut out = Vec::new();
        index.for_each_match(&TopicName::parse(topic).unwrap(), |c, _| out.push(c));
        out.sort_unstable();
        out
    }

    #[test]
    fn spec_examples() {
        let mut i = Index::default();
        for (n, f) in [
            "sport/tennis/player1/#",
            "sport/#",
            "#",
            "+/+",
            "/+",
            "+",
            "$SYS/#",
            "sport/+/player1",
        ]
        .iter()
        .enumerate()
        {
            i.insert(&key(f), n as ConnId, sub());
        }
        // §4.7.1.2: "sport/#" matches "sport" itself
        assert_eq!(matched(&mut i, "sport"), [1, 2, 5]);
        assert_eq!(matched(&mut i, "sport/tennis/player1"), [0, 1, 2, 7]);
        assert_eq!(matched(&mut i, "/finance"), [2, 3, 4]);
        // [MQTT-4.7.2-1]
        assert_eq!(matched(&mut i, "$SYS/broker/uptime"), [6]);
        assert_eq!(matched(&mut i, "$SYS"), [6]);
    }

    #[test]
    fn removal_prunes_and_shared_groups_rotate() {
        let mut i = Index::default();
        let shared: SubKey = (Some("g".into()), TopicFilter::parse("a/+").unwrap());
        i.insert(&shared, 1, sub());
        i.insert(&shared, 2, sub());
        i.insert(&key("a/b/#"), 3, sub());
        assert_eq!(i.len(), 3);
        let picks: Vec<_> = (0..4).map(|_| matched(&mut i, "a/x")).collect();
        assert_eq!(picks, [vec![1], vec![2], vec![1], vec![2]]);
        assert!(i.remove(&shared, 1));
        assert!(!i.remove(&shared, 1));
        assert!(i.remove(&shared, 2));
        assert!(i.remove(&key("a/b/#"), 3));
        assert!(i.root.is_empty(), "{:?}", i.root);
        assert_eq!(i.len(), 0);
    }

    fn level() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "$x", ""])
    }

    proptest! {
        /// The trie agrees with the reference matcher in core for random filters and topics.
        #[test]
        fn agrees_with_topic_filter_matches(
            filters in prop::collection::vec((prop::collection::vec(prop::sample::select(vec!["a", "b", "$x", "", "+"]), 1..4), any::<bool>()), 1..12),
            topics in prop::collection::vec(prop::collection::vec(level(), 1..5), 1..12),
        ) {
            let mut index = Index::default();
            let mut parsed = Vec::new();
            for (levels, multi) in &filters {
                let n = parsed.len();
                let mut s = levels.join("/");
                if *multi { s.push_str("/#"); }
                let Ok(f) = TopicFilter::parse(&s) else { continue };
                index.insert(&(None, f.clone()), n as ConnId, sub());
                parsed.push(f);
            }
            for t in topics {
                let Ok(topic) = TopicName::parse(&t.join("/")) else { continue };
                let expected: Vec<ConnId> = parsed.iter().enumerate().filter(|(_, f)| f.matches(&topic)).map(|(n, _)| n as ConnId).collect();
                prop_assert_eq!(matched(&mut index, topic.as_str()), expected);
            }
        }
    }
}
