//! Least privilege for key management: a key may create, rotate or revoke only keys that are
//! no wider than itself in every dimension.
//!
//! | dimension | rule |
//! |---|---|
//! | kind | an `rk_` key never touches an `sk_` key |
//! | scopes | every API scope of the target is one of the actor's; every `mqtt:` filter of the target, with `{user}`/`{org}` filled in for the target's own identity, lies within one of the actor's (filled in for the actor's) |
//! | CIDRs | an actor limited to networks limits the target to networks inside them |
//! | expiry | an actor that expires limits the target to expire no later |
//!
//! `sk_` keys hold every scope of their org, but the CIDR and expiry rules bind them too: an
//! `sk_` key usable only from the office cannot mint one usable from anywhere.

use crate::store::StoredKey;
use cloudsignal_core::acl::AclRules;
use cloudsignal_core::topic::TopicFilter;
use std::net::IpAddr;

/// The first way `target` is wider than `actor`, if any (a sentence for the problem document).
pub(crate) fn wider_than(actor: &StoredKey, target: &StoredKey) -> Option<String> {
    if actor.kind != "sk" {
        if target.kind == "sk" {
            return Some("an rk_ key cannot create, rotate or revoke an sk_ key".into());
        }
        for scope in &target.scopes {
            if !scope_within(scope, target, actor) {
                return Some(format!("scope {scope:?} is wider than this key's scopes"));
            }
        }
    }
    if !actor.allow_cidrs.is_empty() {
        if target.allow_cidrs.is_empty() {
            return Some(
                "this key is limited to networks (allow_cidrs); the other key would not be".into(),
            );
        }
        if let Some(c) = target
            .allow_cidrs
            .iter()
            .find(|c| !actor.allow_cidrs.iter().any(|a| cidr_within(c, a)))
        {
            return Some(format!("network {c:?} is outside this key's allow_cidrs"));
        }
    }
    if let Some(limit) = actor.expires_at {
        match target.expires_at {
            None => return Some("this key expires; the other key would not".into()),
            Some(t) if t > limit => {
                return Some(format!(
                    "the other key would expire at {}, after this key ({})",
                    t.secs(),
                    limit.secs()
                ))
            }
            Some(_) => {}
        }
    }
    None
}

/// The MQTT filters of `key`'s scopes of `kind`, templates filled in for `key`'s identity.
fn resolved_filters(key: &StoredKey, kind: &str) -> Vec<String> {
    let raw: Vec<String> = key.mqtt_scopes(kind).map(str::to_owned).collect();
    AclRules {
        publish: raw,
        subscribe: Vec::new(),
    }
    .resolve_identity(&key.name, &key.org)
    .map(|r| r.publish)
    .unwrap_or_default()
}

fn scope_within(scope: &str, target: &StoredKey, actor: &StoredKey) -> bool {
    for kind in ["publish", "subscribe"] {
        if let Some(raw) = scope
            .strip_prefix("mqtt:")
            .and_then(|s| s.strip_prefix(kind))
            .and_then(|s| s.strip_prefix(':'))
        {
            let one = StoredKey {
                scopes: vec![format!("mqtt:{kind}:{raw}")],
                ..target.clone()
            };
            let Some(filter) = resolved_filters(&one, kind).pop() else {
                return false;
            };
            return filter_within(&filter, &resolved_filters(actor, kind));
        }
    }
    actor.scopes.iter().any(|s| s == scope)
}

/// Whether `filter` matches only topics that one of `allowed` matches.
pub(crate) fn filter_within(filter: &str, allowed: &[String]) -> bool {
    let Ok(f) = TopicFilter::parse(filter) else {
        return false;
    };
    allowed
        .iter()
        .any(|a| TopicFilter::parse(a).is_ok_and(|a| f.is_subset_of(&a)))
}

/// `(network, prefix length)` of `a.b.c.d/n` or `x::y/n` (a bare address is /32 or /128).
fn parse_cidr(cidr: &str) -> Option<(IpAddr, u32)> {
    let (addr, bits) = match cidr.split_once('/') {
        Some((a, b)) => (a.parse::<IpAddr>().ok()?, b.parse::<u32>().ok()?),
        None => {
            let a = cidr.parse::<IpAddr>().ok()?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((addr, bits))
}

/// Whether every address of `inner` is in `outer`.
pub(crate) fn cidr_within(inner: &str, outer: &str) -> bool {
    let (Some((net, bits)), Some((_, outer_bits))) = (parse_cidr(inner), parse_cidr(outer)) else {
        return false;
    };
    bits >= outer_bits && super::cidr_contains(outer, net).unwrap_or(false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cloudsignal_core::UnixTime;

    fn key(kind: &str, name: &str, scopes: &[&str], cidrs: &[&str], exp: Option<u64>) -> StoredKey {
        StoredKey {
            id: format!("id_{name}"),
            org: "org_aaaaaaaaaaaa".into(),
            kind: kind.into(),
            name: name.into(),
            secret_hash: String::new(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            allow_cidrs: cidrs.iter().map(|s| (*s).to_owned()).collect(),
            created_at: UnixTime(0),
            expires_at: exp.map(UnixTime),
            revoked_at: None,
        }
    }

    #[test]
    fn every_dimension_is_checked() {
        let actor = key(
            "rk",
            "svc",
            &[
                "keys:write",
                "mqtt:publish:events/#",
                "mqtt:subscribe:users/{user}/#",
            ],
            &["10.0.0.0/8"],
            Some(1000),
        );
        let fine = key(
            "rk",
            "child",
            &["mqtt:publish:events/a/#"],
            &["10.1.0.0/16"],
            Some(900),
        );
        assert_eq!(wider_than(&actor, &fine), None);
        let cases = [
            key("sk", "c", &[], &["10.1.0.0/16"], Some(900)),
            key("rk", "c", &["usage:read"], &["10.1.0.0/16"], Some(900)),
            key("rk", "c", &["mqtt:publish:#"], &["10.1.0.0/16"], Some(900)),
            key("rk", "c", &["mqtt:publish:events/a"], &[], Some(900)),
            key(
                "rk",
                "c",
                &["mqtt:publish:events/a"],
                &["0.0.0.0/0"],
                Some(900),
            ),
            key(
                "rk",
                "c",
                &["mqtt:publish:events/a"],
                &["10.1.0.0/16"],
                None,
            ),
            key(
                "rk",
                "c",
                &["mqtt:publish:events/a"],
                &["10.1.0.0/16"],
                Some(1001),
            ),
            // {user} is the key's own name: a child named "alice" would reach alice's topics
            key(
                "rk",
                "alice",
                &["mqtt:subscribe:users/{user}/#"],
                &["10.1.0.0/16"],
                Some(900),
            ),
        ];
        for c in cases {
            assert!(wider_than(&actor, &c).is_some(), "{c:?}");
        }
        let own = key(
            "rk",
            "svc",
            &["mqtt:subscribe:users/{user}/x"],
            &["10.0.0.1"],
            Some(5),
        );
        assert_eq!(wider_than(&actor, &own), None);
    }

    #[test]
    fn sk_keys_are_bound_by_networks_and_expiry_only() {
        let admin = key("sk", "admin", &[], &[], None);
        assert_eq!(wider_than(&admin, &key("sk", "b", &[], &[], None)), None);
        let office = key("sk", "office", &[], &["192.168.1.0/24"], None);
        assert!(wider_than(&office, &key("sk", "b", &[], &[], None)).is_some());
        assert_eq!(
            wider_than(&office, &key("sk", "b", &[], &["192.168.1.7"], None)),
            None
        );
    }

    #[test]
    fn cidr_containment() {
        assert!(cidr_within("10.1.2.0/24", "10.0.0.0/8"));
        assert!(cidr_within("10.0.0.0/8", "10.0.0.0/8"));
        assert!(!cidr_within("10.0.0.0/7", "10.0.0.0/8"));
        assert!(!cidr_within("11.0.0.0/24", "10.0.0.0/8"));
        assert!(cidr_within("::1", "::/0"));
        assert!(!cidr_within("10.0.0.1", "::/0"));
        assert!(!cidr_within("nonsense", "10.0.0.0/8"));
    }
}
