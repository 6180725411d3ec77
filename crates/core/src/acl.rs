//! Access control: per-session publish and subscribe rules.
//!
//! [`AclRules`] are what tokens and role maps carry: topic filters that may contain the
//! templates `{user}`, `{org}` and `{client_id}`. They are compiled once per session into an
//! [`AclSet`] (compile once, match many), which answers [`AclSet::may_publish`] and
//! [`AclSet::may_subscribe`].
//!
//! A subscription is allowed only when **every** topic it can match is allowed: granting
//! `users/alice/#` allows `users/alice/notifications` and `users/alice/#`, but refuses
//! `users/+/notifications`, which would also match Bob's notifications.

use crate::topic::{TopicError, TopicFilter, TopicName};
use serde::{Deserialize, Serialize};

/// Why ACL rules could not be built or compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AclError {
    /// A rule is not a valid topic filter once its templates are filled in.
    #[error("ACL rule {rule:?} is not a valid topic filter: {source}")]
    BadFilter {
        /// The offending rule.
        rule: String,
        /// Why it is invalid.
        source: TopicError,
    },
    /// A rule uses a template other than `{user}`, `{org}` and `{client_id}`.
    #[error("ACL rule {0:?} uses an unknown template (known: {{user}}, {{org}}, {{client_id}})")]
    UnknownTemplate(String),
    /// A template value would change the rule's shape (it contains `/`, `+`, `#` or NUL, or is
    /// empty), or `{client_id}` is used but the session has none.
    #[error("ACL template value for {0} is unsafe in a topic level or missing")]
    UnsafeValue(&'static str),
}

/// The ACL as carried in tokens and the token response: `{"pub": [...], "sub": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRules {
    /// Filters the holder may publish to.
    #[serde(rename = "pub", default)]
    pub publish: Vec<String>,
    /// Filters the holder may subscribe to (and receive from).
    #[serde(rename = "sub", default)]
    pub subscribe: Vec<String>,
}

/// Values substituted into templates when a session's ACL is compiled.
#[derive(Debug, Clone)]
pub struct AclContext<'a> {
    user: &'a str,
    org: &'a str,
    client_id: Option<&'a str>,
}

impl<'a> AclContext<'a> {
    /// A context for `user` in `org`, with the session's client id when known.
    pub fn new(user: &'a str, org: &'a str, client_id: Option<&'a str>) -> Self {
        Self {
            user,
            org,
            client_id,
        }
    }
}

const TEMPLATES: [&str; 3] = ["{user}", "{org}", "{client_id}"];

/// Whether `v` may fill a template: one whole topic level, and never a `$` level (a client id
/// `$SYS` must not turn `{client_id}/#` into `$SYS/#`) [MQTT-4.7.2-1].
fn safe_level_value(v: &str) -> bool {
    !v.is_empty() && !v.starts_with('$') && !v.contains(['/', '+', '#', '\0'])
}

fn substitute(rule: &str, ctx: &AclContext<'_>) -> Result<String, AclError> {
    let mut out = rule.to_owned();
    for (name, value) in [
        ("{user}", Some(ctx.user)),
        ("{org}", Some(ctx.org)),
        ("{client_id}", ctx.client_id),
    ] {
        if out.contains(name) {
            let v = value
                .filter(|v| safe_level_value(v))
                .ok_or(AclError::UnsafeValue(name))?;
            out = out.replace(name, v);
        }
    }
    Ok(out)
}

impl AclRules {
    /// Builds rules from publish and subscribe templates, checking each one.
    pub fn new<P, S>(publish: P, subscribe: S) -> Result<Self, AclError>
    where
        P: IntoIterator,
        P::Item: Into<String>,
        S: IntoIterator,
        S::Item: Into<String>,
    {
        let rules = Self {
            publish: publish.into_iter().map(Into::into).collect(),
            subscribe: subscribe.into_iter().map(Into::into).collect(),
        };
        rules.validate()?;
        Ok(rules)
    }

    /// Checks that every rule is a valid filter with only known templates.
    pub fn validate(&self) -> Result<(), AclError> {
        let probe = AclContext::new("u", "o", Some("c"));
        for rule in self.publish.iter().chain(&self.subscribe) {
            let mut stripped = rule.clone();
            for t in TEMPLATES {
                stripped = stripped.replace(t, "");
            }
            if stripped.contains(['{', '}']) {
                return Err(AclError::UnknownTemplate(rule.clone()));
            }
            let filled = substitute(rule, &probe)?;
            TopicFilter::parse(&filled).map_err(|source| AclError::BadFilter {
                rule: rule.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Fills in `{user}` and `{org}` (leaving `{client_id}` for connect time), as the token
    /// issuer does so that the ACL a client is shown names its real topics.
    pub fn resolve_identity(&self, user: &str, org: &str) -> Result<Self, AclError> {
        let fill = |rules: &[String]| -> Result<Vec<String>, AclError> {
            rules
                .iter()
                .map(|r| {
                    for (name, v) in [("{user}", user), ("{org}", org)] {
                        if r.contains(name) && !safe_level_value(v) {
                            return Err(AclError::UnsafeValue(name));
                        }
                    }
                    Ok(r.replace("{user}", user).replace("{org}", org))
                })
                .collect()
        };
        Ok(Self {
            publish: fill(&self.publish)?,
            subscribe: fill(&self.subscribe)?,
        })
    }

    /// Merges `other` into `self`, keeping each rule once and the original order.
    pub fn extend(&mut self, other: &AclRules) {
        for (mine, theirs) in [
            (&mut self.publish, &other.publish),
            (&mut self.subscribe, &other.subscribe),
        ] {
            for r in theirs {
                if !mine.contains(r) {
                    mine.push(r.clone());
                }
            }
        }
    }

    /// Compiles the rules for one session.
    pub fn compile(&self, ctx: &AclContext<'_>) -> Result<AclSet, AclError> {
        let compile = |rules: &[String]| -> Result<Vec<TopicFilter>, AclError> {
            rules
                .iter()
                .map(|r| {
                    let filled = substitute(r, ctx)?;
                    TopicFilter::parse(&filled).map_err(|source| AclError::BadFilter {
                        rule: r.clone(),
                        source,
                    })
                })
                .collect()
        };
        Ok(AclSet {
            publish: compile(&self.publish)?,
            subscribe: compile(&self.subscribe)?,
        })
    }
}

/// A compiled ACL for one session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclSet {
    publish: Vec<TopicFilter>,
    subscribe: Vec<TopicFilter>,
}

impl AclSet {
    /// Whether the session may publish to `topic`.
    pub fn may_publish(&self, topic: &TopicName) -> bool {
        self.publish.iter().any(|r| r.matches(topic))
    }

    /// Whether the session may subscribe to `filter`: only when every topic `filter` can
    /// match is covered by one subscribe rule.
    pub fn may_subscribe(&self, filter: &TopicFilter) -> bool {
        self.subscribe.iter().any(|r| filter.is_subset_of(r))
    }

    /// Whether a message on `topic` may be delivered to this session (retained messages and
    /// shared-subscription deliveries are checked with this too).
    pub fn may_receive(&self, topic: &TopicName) -> bool {
        self.subscribe.iter().any(|r| r.matches(topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::both_targets_test;
    use crate::topic::tests::{arb_filter, arb_topic};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    fn alice() -> AclContext<'static> {
        AclContext::new("alice", "org_k7xm4pqr2n5t", Some("phone-1"))
    }

    both_targets_test! {
        fn templates_resolve_per_session() {
            let rules = AclRules::new(
                ["users/{user}/#", "orgs/{org}/events"],
                ["users/{user}/#", "devices/{client_id}/cmd"],
            )
            .unwrap();
            let acl = rules.compile(&alice()).unwrap();
            let t = |s| TopicName::parse(s).unwrap();
            let f = |s| TopicFilter::parse(s).unwrap();
            assert!(acl.may_publish(&t("users/alice/x")));
            assert!(acl.may_publish(&t("orgs/org_k7xm4pqr2n5t/events")));
            assert!(!acl.may_publish(&t("users/bob/x")));
            assert!(!acl.may_publish(&t("devices/phone-1/cmd")));
            assert!(acl.may_subscribe(&f("devices/phone-1/cmd")));
            assert!(acl.may_subscribe(&f("users/alice/notifications")));
            assert!(acl.may_subscribe(&f("users/alice/#")));
            assert!(!acl.may_subscribe(&f("users/+/notifications")));
            assert!(!acl.may_subscribe(&f("#")));
            assert!(acl.may_receive(&t("users/alice/notifications")));
        }
    }

    both_targets_test! {
        fn unsafe_template_values_are_refused() {
            let rules = AclRules::new(["users/{user}/#"], ["devices/{client_id}"]).unwrap();
            for user in ["a/b", "+", "#", ""] {
                let ctx = AclContext::new(user, "org_k7xm4pqr2n5t", Some("c"));
                assert_eq!(rules.compile(&ctx), Err(AclError::UnsafeValue("{user}")), "{user}");
            }
            let ctx = AclContext::new("alice", "org_k7xm4pqr2n5t", None);
            assert_eq!(rules.compile(&ctx), Err(AclError::UnsafeValue("{client_id}")));
            let rules = AclRules::new(["{client_id}/#"], ["{client_id}/#"]).unwrap();
            let ctx = AclContext::new("alice", "org_k7xm4pqr2n5t", Some("$SYS"));
            assert_eq!(
                rules.compile(&ctx),
                Err(AclError::UnsafeValue("{client_id}")),
                "a $ client id never reaches $SYS through a template"
            );
        }
    }

    both_targets_test! {
        fn bad_rules_are_refused_at_build_time() {
            assert!(matches!(AclRules::new(["a/#/b"], Vec::<String>::new()), Err(AclError::BadFilter { .. })));
            assert_eq!(
                AclRules::new(["users/{name}"], Vec::<String>::new()),
                Err(AclError::UnknownTemplate("users/{name}".into()))
            );
            assert!(AclRules::new(["users/x{user}"], Vec::<String>::new()).is_ok());
        }
    }

    both_targets_test! {
        fn resolve_identity_keeps_client_id_template() {
            let rules = AclRules::new(["users/{user}/#"], ["d/{client_id}", "o/{org}"]).unwrap();
            let r = rules.resolve_identity("alice", "org_k7xm4pqr2n5t").unwrap();
            assert_eq!(r.publish, ["users/alice/#"]);
            assert_eq!(r.subscribe, ["d/{client_id}", "o/org_k7xm4pqr2n5t"]);
            assert!(rules.resolve_identity("a/b", "org_k7xm4pqr2n5t").is_err());
        }
    }

    both_targets_test! {
        fn json_shape() {
            let r: AclRules = serde_json::from_str(r#"{"pub":["a"],"sub":["b/#"]}"#).unwrap();
            assert_eq!(r.publish, ["a"]);
            assert!(serde_json::from_str::<AclRules>(r#"{"pub":[],"admin":true}"#).is_err());
        }
    }

    both_targets_test! {
        /// For random rule sets, filters and topics: whenever a filter is allowed, no topic it
        /// matches is denied.
        fn allowed_filter_never_reaches_a_denied_topic() {
            let mut runner = TestRunner::new(Config { cases: 2000, ..Config::default() });
            let allowed_some = core::cell::Cell::new(0u32);
            runner
                .run(
                    &(
                        prop::collection::vec(arb_filter(), 1..4),
                        arb_filter(),
                        prop::collection::vec(arb_topic(), 50),
                    ),
                    |(rules, filter, topics)| {
                        let rules = AclRules::new(
                            Vec::<String>::new(),
                            rules.iter().map(|f| f.to_string()),
                        )
                        .unwrap();
                        let acl = rules.compile(&alice()).unwrap();
                        if acl.may_subscribe(&filter) {
                            allowed_some.set(allowed_some.get() + 1);
                            for t in &topics {
                                prop_assert!(
                                    !filter.matches(t) || acl.may_receive(t),
                                    "{filter:?} allowed by {rules:?} but {t:?} is denied"
                                );
                            }
                        }
                        Ok(())
                    },
                )
                .unwrap();
            // the property must not hold vacuously
            assert!(allowed_some.get() > 100, "only {} filters were ever allowed", allowed_some.get());
        }
    }
}
