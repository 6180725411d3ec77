//! MQTT topic names and topic filters (MQTT 5.0 §4.7, MQTT 3.1.1 §4.7).
//!
//! Topics are parsed once into [`TopicName`] (what PUBLISH carries: no wildcards) and
//! [`TopicFilter`] (what SUBSCRIBE carries: `+` and `#` allowed); matching and ACL logic only
//! ever sees parsed values, so a rule a caller forgot to check cannot become an ACL bypass.
//! Shared subscriptions (`$share/{group}/{filter}`, §4.8.2) parse into
//! [`SubscriptionFilter::Shared`].

use core::fmt;

/// Largest encoded length of a topic (a UTF-8 string with a 16-bit length prefix) [MQTT-4.7.3-3].
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Default cap on the number of levels in a topic or filter. The specification sets none;
/// CloudSignal caps depth so that a SUBSCRIBE with 65,000 levels costs nothing.
pub const DEFAULT_MAX_LEVELS: usize = 64;

/// Why a string is not a valid topic name or filter. Each variant cites the rule it enforces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// Topic names and filters must be at least one character long [MQTT-4.7.3-1].
    #[error("topic is empty [MQTT-4.7.3-1]")]
    Empty,
    /// Topics are UTF-8 strings of at most 65,535 bytes [MQTT-4.7.3-3].
    #[error("topic is longer than 65535 bytes [MQTT-4.7.3-3]")]
    TooLong,
    /// Topics must not contain U+0000 [MQTT-4.7.3-2].
    #[error("topic contains U+0000 [MQTT-4.7.3-2]")]
    NulCharacter,
    /// A topic name in PUBLISH must not contain wildcards [MQTT-3.3.2-2].
    #[error("wildcard in a topic name [MQTT-3.3.2-2]")]
    WildcardInName,
    /// `#` must be the last character and occupy a whole level [MQTT-4.7.1-1].
    #[error("'#' must be the last level of a filter [MQTT-4.7.1-1]")]
    MisplacedMultiLevel,
    /// `+` must occupy a whole level [MQTT-4.7.1-2].
    #[error("'+' must occupy a whole level [MQTT-4.7.1-2]")]
    MisplacedSingleLevel,
    /// More levels than the configured depth cap (a CloudSignal limit, not a spec rule).
    #[error("topic has more than {0} levels")]
    TooDeep(usize),
    /// A shared subscription needs a non-empty share name without `/`, `+` or `#`,
    /// followed by a filter [MQTT-4.8.2-1] [MQTT-4.8.2-2].
    #[error("malformed shared subscription [MQTT-4.8.2-1] [MQTT-4.8.2-2]")]
    BadSharedSubscription,
}

fn check_common(s: &str, max_levels: usize) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    if s.contains('\0') {
        return Err(TopicError::NulCharacter);
    }
    // Count separators without allocating; levels = separators + 1.
    if s.bytes().filter(|&b| b == b'/').count() >= max_levels {
        return Err(TopicError::TooDeep(max_levels));
    }
    Ok(())
}

/// A topic name as carried by PUBLISH: non-empty, no wildcards, no NUL, bounded depth.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(String);

impl TopicName {
    /// Parses a topic name with the default depth cap.
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        Self::parse_with_limit(s, DEFAULT_MAX_LEVELS)
    }

    /// Parses a topic name, refusing more than `max_levels` levels.
    pub fn parse_with_limit(s: &str, max_levels: usize) -> Result<Self, TopicError> {
        check_common(s, max_levels)?;
        if s.contains(['+', '#']) {
            return Err(TopicError::WildcardInName);
        }
        Ok(Self(s.to_owned()))
    }

    /// The topic as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The levels of the topic (`a//b` has three levels, the middle one empty).
    pub fn levels(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// Whether this is a `$`-topic (e.g. `$SYS/...`), which wildcard-first filters do not match
    /// [MQTT-4.7.2-1].
    pub fn is_dollar(&self) -> bool {
        self.0.starts_with('$')
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicName({:?})", self.0)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One level of a topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterLevel<'a> {
    /// A literal level that must equal the topic's level.
    Literal(&'a str),
    /// `+`: any single level.
    Single,
    /// `#`: this level and every level below, including none (the parent).
    Multi,
}

impl<'a> FilterLevel<'a> {
    fn of(level: &'a str) -> Self {
        match level {
            "+" => Self::Single,
            "#" => Self::Multi,
            other => Self::Literal(other),
        }
    }
}

/// A topic filter as carried by SUBSCRIBE (without the `$share/` prefix).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(String);

impl TopicFilter {
    /// Parses a filter with the default depth cap.
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        Self::parse_with_limit(s, DEFAULT_MAX_LEVELS)
    }

    /// Parses a filter, refusing more than `max_levels` levels.
    pub fn parse_with_limit(s: &str, max_levels: usize) -> Result<Self, TopicError> {
        check_common(s, max_levels)?;
        let mut levels = s.split('/').peekable();
        while let Some(level) = levels.next() {
            if level.contains('#') && (level != "#" || levels.peek().is_some()) {
                return Err(TopicError::MisplacedMultiLevel);
            }
            if level.contains('+') && level != "+" {
                return Err(TopicError::MisplacedSingleLevel);
            }
        }
        Ok(Self(s.to_owned()))
    }

    /// The filter as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parsed levels of the filter.
    pub fn levels(&self) -> impl Iterator<Item = FilterLevel<'_>> {
        self.0.split('/').map(FilterLevel::of)
    }

    /// Whether the filter contains `+` or `#`.
    pub fn has_wildcards(&self) -> bool {
        self.0.contains(['+', '#'])
    }

    /// Whether `topic` matches this filter (§4.7), including the rule that a filter starting
    /// with a wildcard does not match a `$`-topic [MQTT-4.7.2-1].
    pub fn matches(&self, topic: &TopicName) -> bool {
        let mut f = self.levels().peekable();
        if topic.is_dollar() && matches!(f.peek(), Some(FilterLevel::Single | FilterLevel::Multi)) {
            return false;
        }
        let mut t = topic.levels();
        loop {
            match (f.next(), t.next()) {
                (Some(FilterLevel::Multi), _) => return true,
                (Some(FilterLevel::Single), Some(_)) => {}
                (Some(FilterLevel::Literal(a)), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    /// Whether every topic this filter can match is also matched by `other`: the check behind
    /// "a subscription is allowed only when every topic it can match is allowed".
    ///
    /// Sound (never says yes wrongly) and exact for a single `other` filter.
    pub fn is_subset_of(&self, other: &TopicFilter) -> bool {
        let mine: Vec<FilterLevel<'_>> = self.levels().collect();
        let theirs: Vec<FilterLevel<'_>> = other.levels().collect();
        // [MQTT-4.7.2-1]: a wildcard-first `other` does not match `$`-topics, so it can only
        // contain `self` if `self` cannot match a `$`-topic either.
        if matches!(
            theirs.first(),
            Some(FilterLevel::Single | FilterLevel::Multi)
        ) {
            if let Some(FilterLevel::Literal(l)) = mine.first() {
                if l.starts_with('$') {
                    return false;
                }
            }
        }
        subset(&mine, &theirs)
    }
}

fn subset(f: &[FilterLevel<'_>], r: &[FilterLevel<'_>]) -> bool {
    match (f.first(), r.first()) {
        (_, Some(FilterLevel::Multi)) => true,
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some(FilterLevel::Multi), Some(_)) => false,
        (Some(FilterLevel::Single), Some(FilterLevel::Single)) => subset(&f[1..], &r[1..]),
        (Some(FilterLevel::Single), Some(FilterLevel::Literal(_))) => false,
        (Some(FilterLevel::Literal(_)), Some(FilterLevel::Single)) => subset(&f[1..], &r[1..]),
        (Some(FilterLevel::Literal(a)), Some(FilterLevel::Literal(b))) => {
            a == b && subset(&f[1..], &r[1..])
        }
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicFilter({:?})", self.0)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A filter in a SUBSCRIBE packet: plain, or shared (`$share/{group}/{filter}`, §4.8.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubscriptionFilter {
    /// An ordinary subscription.
    Plain(TopicFilter),
    /// A shared subscription: messages are delivered to one member of `group`.
    Shared {
        /// The share name.
        group: String,
        /// The filter the group subscribes to.
        filter: TopicFilter,
    },
}

impl SubscriptionFilter {
    /// Parses a SUBSCRIBE filter with the default depth cap.
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        Self::parse_with_limit(s, DEFAULT_MAX_LEVELS)
    }

    /// Parses a SUBSCRIBE filter, refusing more than `max_levels` levels.
    pub fn parse_with_limit(s: &str, max_levels: usize) -> Result<Self, TopicError> {
        let Some(rest) = s.strip_prefix("$share/") else {
            return TopicFilter::parse_with_limit(s, max_levels).map(Self::Plain);
        };
        let (group, filter) = rest
            .split_once('/')
            .ok_or(TopicError::BadSharedSubscription)?;
        if group.is_empty() || group.contains(['+', '#', '\0']) || filter.is_empty() {
            return Err(TopicError::BadSharedSubscription);
        }
        let filter = TopicFilter::parse_with_limit(filter, max_levels)?;
        Ok(Self::Shared {
            group: group.to_owned(),
            filter,
        })
    }

    /// The topic filter that decides which messages match (the part after the group).
    pub fn filter(&self) -> &TopicFilter {
        match self {
            Self::Plain(f) | Self::Shared { filter: f, .. } => f,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::both_targets_test;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    fn name(s: &str) -> TopicName {
        TopicName::parse(s).unwrap()
    }
    fn filter(s: &str) -> TopicFilter {
        TopicFilter::parse(s).unwrap()
    }

    both_targets_test! {
        fn names_follow_section_4_7() {
            assert_eq!(TopicName::parse(""), Err(TopicError::Empty));
            assert_eq!(TopicName::parse("a/+"), Err(TopicError::WildcardInName));
            assert_eq!(TopicName::parse("a/#"), Err(TopicError::WildcardInName));
            assert_eq!(TopicName::parse("a\0b"), Err(TopicError::NulCharacter));
            assert_eq!(TopicName::parse(&"a".repeat(65_536)), Err(TopicError::TooLong));
            assert!(TopicName::parse(&"a".repeat(65_535)).is_ok());
            // empty levels are legal and distinct
            assert_eq!(name("/a//").levels().collect::<Vec<_>>(), ["", "a", "", ""]);
            assert!(name("$SYS/broker").is_dollar());
        }
    }

    both_targets_test! {
        fn filters_follow_section_4_7_1() {
            for ok in ["#", "+", "a/#", "+/+", "/+", "a/+/b", "+/", "//#", "$SYS/#"] {
                assert!(TopicFilter::parse(ok).is_ok(), "{ok}");
            }
            for (bad, err) in [
                ("a#", TopicError::MisplacedMultiLevel),
                ("a/#/b", TopicError::MisplacedMultiLevel),
                ("#/", TopicError::MisplacedMultiLevel),
                ("a/b#", TopicError::MisplacedMultiLevel),
                ("a+", TopicError::MisplacedSingleLevel),
                ("a/+b", TopicError::MisplacedSingleLevel),
                ("", TopicError::Empty),
            ] {
                assert_eq!(TopicFilter::parse(bad), Err(err), "{bad}");
            }
        }
    }

    both_targets_test! {
        fn depth_is_capped_without_quadratic_work() {
            let deep = "a/".repeat(65_000) + "a";
            assert_eq!(TopicFilter::parse(&deep), Err(TopicError::TooLong));
            let deep = "a/".repeat(30_000) + "a";
            assert_eq!(TopicFilter::parse(&deep), Err(TopicError::TooDeep(64)));
            assert_eq!(TopicName::parse(&"/".repeat(64)), Err(TopicError::TooDeep(64)));
            assert!(TopicName::parse(&"/".repeat(63)).is_ok());
        }
    }

    both_targets_test! {
        fn matching_examples_from_the_spec() {
            // §4.7.1.2
            let f = filter("sport/tennis/player1/#");
            assert!(f.matches(&name("sport/tennis/player1")));
            assert!(f.matches(&name("sport/tennis/player1/ranking")));
            assert!(f.matches(&name("sport/tennis/player1/score/wimbledon")));
            assert!(filter("sport/#").matches(&name("sport")));
            // §4.7.1.3
            assert!(filter("sport/tennis/+").matches(&name("sport/tennis/player1")));
            assert!(!filter("sport/tennis/+").matches(&name("sport/tennis/player1/ranking")));
            assert!(!filter("sport/+").matches(&name("sport")));
            assert!(filter("sport/+").matches(&name("sport/")));
            assert!(filter("+/+").matches(&name("/finance")));
            assert!(filter("/+").matches(&name("/finance")));
            assert!(!filter("+").matches(&name("/finance")));
            // §4.7.2 [MQTT-4.7.2-1]
            assert!(!filter("#").matches(&name("$SYS/x")));
            assert!(!filter("+/monitor/Clients").matches(&name("$SYS/monitor/Clients")));
            assert!(filter("$SYS/#").matches(&name("$SYS/monitor/Clients")));
            assert!(filter("$SYS/monitor/+").matches(&name("$SYS/monitor/Clients")));
        }
    }

    both_targets_test! {
        fn shared_subscriptions_parse() {
            assert_eq!(
                SubscriptionFilter::parse("$share/g1/a/+").unwrap(),
                SubscriptionFilter::Shared { group: "g1".into(), filter: filter("a/+") }
            );
            for bad in ["$share/", "$share//a", "$share/g", "$share/g/", "$share/g+/a", "$share/#/a"] {
                assert!(SubscriptionFilter::parse(bad).is_err(), "{bad}");
            }
            assert_eq!(
                SubscriptionFilter::parse("$shared/a").unwrap(),
                SubscriptionFilter::Plain(filter("$shared/a"))
            );
        }
    }

    both_targets_test! {
        fn subset_examples() {
            assert!(filter("users/alice/notifications").is_subset_of(&filter("users/alice/#")));
            assert!(filter("users/alice/#").is_subset_of(&filter("users/alice/#")));
            assert!(filter("users/alice").is_subset_of(&filter("users/alice/#")));
            assert!(!filter("users/+/notifications").is_subset_of(&filter("users/alice/#")));
            assert!(!filter("users/#").is_subset_of(&filter("users/alice/#")));
            assert!(filter("a/+/c").is_subset_of(&filter("a/+/+")));
            assert!(!filter("a/+/#").is_subset_of(&filter("a/+/+")));
            assert!(!filter("$SYS/a").is_subset_of(&filter("#")));
            assert!(!filter("$SYS/a").is_subset_of(&filter("+/a")));
            assert!(filter("$SYS/a").is_subset_of(&filter("$SYS/#")));
            assert!(filter("+/a").is_subset_of(&filter("#")));
        }
    }

    // Small alphabets make collisions (and therefore interesting cases) likely.
    fn level() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "", "$s"])
    }
    fn filter_level() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "", "$s", "+", "+", "#"])
    }
    pub(crate) fn arb_filter() -> impl Strategy<Value = TopicFilter> {
        prop::collection::vec(filter_level(), 1..5).prop_map(|mut v| {
            // '#' only as the last level
            if let Some(i) = v.iter().position(|l| *l == "#") {
                v.truncate(i + 1);
            }
            let s = v.join("/");
            filter(if s.is_empty() { "a" } else { &s })
        })
    }
    pub(crate) fn arb_topic() -> impl Strategy<Value = TopicName> {
        prop::collection::vec(level(), 1..6).prop_map(|v| {
            let s = v.join("/");
            name(if s.is_empty() { "a" } else { &s })
        })
    }

    both_targets_test! {
        fn subset_is_sound_for_every_topic() {
            let mut runner = TestRunner::new(Config { cases: 2000, ..Config::default() });
            runner
                .run(&(arb_filter(), arb_filter(), prop::collection::vec(arb_topic(), 40)), |(f, r, topics)| {
                    if f.is_subset_of(&r) {
                        for t in &topics {
                            prop_assert!(!f.matches(t) || r.matches(t), "{f:?} ⊆ {r:?} but {t:?}");
                        }
                    }
                    Ok(())
                })
                .unwrap();
        }
    }

    both_targets_test! {
        fn parse_display_round_trip() {
            let mut runner = TestRunner::new(Config { cases: 500, ..Config::default() });
            runner
                .run(&(arb_filter(), arb_topic()), |(f, t)| {
                    prop_assert_eq!(TopicFilter::parse(f.as_str()).unwrap(), f.clone());
                    prop_assert_eq!(TopicName::parse(&t.to_string()).unwrap(), t.clone());
                    // a topic name used as a filter matches itself
                    prop_assert!(TopicFilter::parse(t.as_str()).unwrap().matches(&t));
                    Ok(())
                })
                .unwrap();
        }
    }
}
