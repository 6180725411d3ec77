//! Revocation: of one token (`jti`), of a user (every token issued up to a time), of an API
//! key. Sans-IO: the list is data, the broker checks credentials against it at CONNECT and
//! re-authentication and closes matching live sessions (0x98) when an entry arrives.
//!
//! The same entries travel in the revocation feed (`GET /v1/revocations?after=<cursor>`) that
//! a broker polls from a remote issuer; [`Feed`] is its JSON shape:
//!
//! ```json
//! {"revocations": [{"seq": 7, "at": 1767225600, "kind": "token", "jti": "…", "exp": 1767229200},
//!                  {"seq": 8, "at": 1767225660, "kind": "user", "org": "org_…", "user": "alice"},
//!                  {"seq": 9, "at": 1767225700, "kind": "key", "key_id": "…"}],
//!  "next": 9}
//! ```
//!
//! `seq` increases strictly; `next` is the cursor for the following poll (the last `seq`, or
//! the `after` given when there is nothing new). A user revocation covers tokens whose `iat` is
//! at or before its `at`, so tokens issued later (after a password reset, say) work again.

use crate::UnixTime;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// What is revoked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Revocation {
    /// One token, by `jti`. `exp` (when known) lets the entry be forgotten once the token
    /// has expired anyway.
    Token {
        /// The token id.
        jti: String,
        /// The token's expiry, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exp: Option<UnixTime>,
    },
    /// Every token of `user` in `org` issued at or before the entry's time.
    User {
        /// Organisation id.
        org: String,
        /// User id (`sub`).
        user: String,
    },
    /// A client certificate (mTLS), by the SHA-256 of its DER, lowercase hex.
    Certificate {
        /// The fingerprint.
        sha256: String,
    },
    /// An API key, by its id.
    Key {
        /// The key's lookup id.
        key_id: String,
    },
}

/// A revocation with its place in the feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the issuer's feed (strictly increasing).
    pub seq: u64,
    /// When it was revoked.
    pub at: UnixTime,
    /// What.
    #[serde(flatten)]
    pub revocation: Revocation,
}

/// One page of the revocation feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feed {
    /// Entries after the requested cursor, oldest first.
    pub revocations: Vec<Entry>,
    /// The cursor to poll with next.
    pub next: u64,
}

/// What identifies a live credential, for revocation checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credential {
    /// Token id (tokens only).
    pub jti: Option<String>,
    /// Organisation id.
    pub org: Option<String>,
    /// User id (tokens) or service name (API keys).
    pub user: Option<String>,
    /// When the token was issued (tokens only).
    pub iat: Option<UnixTime>,
    /// API key id (API keys only).
    pub key_id: Option<String>,
    /// SHA-256 fingerprint of the client certificate, lowercase hex (mTLS only).
    pub cert: Option<String>,
}

/// Every revocation in force.
///
/// Entries are forgotten ([`Self::prune`]) once every token they could match has expired: a
/// token entry after its token's `exp` (or, unknown, its revocation time plus the longest
/// token lifetime), a user entry once its time plus the longest lifetime has passed. Key
/// entries stay (a key's revocation is also in its store record, and keys are few).
#[derive(Debug, Clone, Default)]
pub struct RevocationList {
    /// jti → when no token with it can still be valid.
    tokens: HashMap<String, UnixTime>,
    users: HashMap<(String, String), UnixTime>,
    keys: HashSet<String>,
    /// Revoked client certificates (never pruned: a certificate outlives any token).
    certs: HashSet<String>,
}

/// How long past its reach an entry is kept: the longest token lifetime plus clock skew.
const HORIZON: u64 = crate::token::MAX_LIFETIME + 300;

impl RevocationList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry; whether it changed anything.
    pub fn apply(&mut self, e: &Entry) -> bool {
        match &e.revocation {
            Revocation::Token { jti, exp } => {
                let until = exp.map_or(e.at.plus(HORIZON), |x| x.plus(300));
                match self.tokens.get_mut(jti) {
                    // the same token again: keep whichever entry reaches further
                    Some(known) => {
                        *known = (*known).max(until);
                        false
                    }
                    None => {
                        self.tokens.insert(jti.clone(), until);
                        true
                    }
                }
            }
            Revocation::User { org, user } => {
                let before = self
                    .users
                    .entry((org.clone(), user.clone()))
                    .or_insert(e.at);
                let changed = *before < e.at;
                *before = (*before).max(e.at);
                changed || *before == e.at
            }
            Revocation::Key { key_id } => self.keys.insert(key_id.clone()),
            Revocation::Certificate { sha256 } => self.certs.insert(sha256.to_ascii_lowercase()),
        }
    }

    /// Why `c` is revoked, if it is.
    pub fn check(&self, c: &Credential) -> Option<&'static str> {
        if c.jti.as_ref().is_some_and(|j| self.tokens.contains_key(j)) {
            return Some("token revoked");
        }
        if let (Some(org), Some(user), Some(iat)) = (&c.org, &c.user, c.iat) {
            if self
                .users
                .get(&(org.clone(), user.clone()))
                .is_some_and(|before| iat <= *before)
            {
                return Some("user's tokens revoked");
            }
        }
        if c.key_id.as_ref().is_some_and(|k| self.keys.contains(k)) {
            return Some("API key revoked");
        }
        if c.cert.as_ref().is_some_and(|f| self.certs.contains(f)) {
            return Some("client certificate revoked");
        }
        None
    }

    /// When `user` of `org` was last revoked, if ever (tokens and IdP logins issued at or
    /// before it are refused).
    pub fn user_revoked_at(&self, org: &str, user: &str) -> Option<UnixTime> {
        self.users.get(&(org.to_owned(), user.to_owned())).copied()
    }

    /// Forgets entries no token that could still verify can match (see the type's docs);
    /// returns how many went.
    pub fn prune(&mut self, now: UnixTime) -> usize {
        let before = self.tokens.len() + self.users.len();
        self.tokens.retain(|_, until| *until >= now);
        self.users.retain(|_, at| at.plus(HORIZON) >= now);
        before - self.tokens.len() - self.users.len()
    }

    /// Number of entries in force.
    pub fn len(&self) -> usize {
        self.tokens.len() + self.users.len() + self.keys.len() + self.certs.len()
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Revocation {
    /// Whether this entry, made at `at`, revokes `c`.
    pub fn matches(&self, at: UnixTime, c: &Credential) -> bool {
        match self {
            Self::Token { jti, .. } => c.jti.as_deref() == Some(jti.as_str()),
            Self::User { org, user } => {
                c.org.as_deref() == Some(org.as_str())
                    && c.user.as_deref() == Some(user.as_str())
                    && c.iat.is_some_and(|iat| iat <= at)
            }
            Self::Key { key_id } => c.key_id.as_deref() == Some(key_id.as_str()),
            Self::Certificate { sha256 } => c
                .cert
                .as_deref()
                .is_some_and(|f| f.eq_ignore_ascii_case(sha256)),
        }
    }
}

#[cfg(test)]
#[cfg_attr(test, allow(clippy::unwrap_used))]
mod tests {
    use super::*;
    use crate::both_targets_test;

    fn token(jti: &str, user: &str, iat: u64) -> Credential {
        Credential {
            jti: Some(jti.into()),
            org: Some("org_1".into()),
            user: Some(user.into()),
            iat: Some(UnixTime(iat)),
            ..Credential::default()
        }
    }

    both_targets_test! {
        /// A client certificate is revoked by its SHA-256 (any case), and only that one.
        fn certificates_by_fingerprint() {
            let mut l = RevocationList::new();
            let cert = |f: &str| Credential {
                cert: Some(f.into()),
                ..Credential::default()
            };
            let entry = Entry {
                seq: 1,
                at: UnixTime(10),
                revocation: Revocation::Certificate { sha256: "AB".repeat(32) },
            };
            assert!(l.apply(&entry));
            assert_eq!(l.check(&cert(&"ab".repeat(32))), Some("client certificate revoked"));
            assert_eq!(l.check(&cert(&"cd".repeat(32))), None);
            assert!(entry.revocation.matches(entry.at, &cert(&"ab".repeat(32))));
            assert_eq!(l.prune(UnixTime(10_000_000)), 0, "never pruned");
            assert_eq!(l.len(), 1);
        }
    }

    both_targets_test! {
        fn tokens_users_and_keys() {
            let mut l = RevocationList::new();
            let at = UnixTime(1_000);
            let entry = |seq, revocation| Entry { seq, at, revocation };
            assert!(l.apply(&entry(1, Revocation::Token { jti: "j1".into(), exp: Some(UnixTime(2_000)) })));
            assert!(!l.apply(&entry(2, Revocation::Token { jti: "j1".into(), exp: Some(UnixTime(2_000)) })), "idempotent");
            l.apply(&entry(3, Revocation::User { org: "org_1".into(), user: "bob".into() }));
            l.apply(&entry(4, Revocation::Key { key_id: "k9".into() }));
            assert_eq!(l.check(&token("j1", "alice", 900)), Some("token revoked"));
            assert_eq!(l.check(&token("j2", "alice", 900)), None);
            assert_eq!(l.check(&token("j3", "bob", 1_000)), Some("user's tokens revoked"), "issued at T: covered");
            assert_eq!(l.check(&token("j4", "bob", 1_001)), None, "issued after T: fine");
            let key = Credential { key_id: Some("k9".into()), ..Credential::default() };
            assert_eq!(l.check(&key), Some("API key revoked"));
            let user = Revocation::User { org: "org_1".into(), user: "bob".into() };
            assert!(user.matches(at, &token("x", "bob", 1_000)));
            assert!(!user.matches(at, &token("x", "bob", 1_001)));
            assert!(!user.matches(at, &token("x", "carol", 10)));
            // entries go once no token they match can verify (expiry, or the longest lifetime,
            // plus clock skew)
            assert_eq!(l.prune(UnixTime(2_299)), 0);
            assert_eq!(l.prune(UnixTime(2_301)), 1, "an expired token's entry can go");
            assert_eq!(l.len(), 2);
            assert_eq!(l.prune(UnixTime(1_000 + HORIZON)), 0);
            assert_eq!(l.prune(UnixTime(1_001 + HORIZON)), 1, "a user entry past every token it covers");
            assert_eq!(l.check(&token("j3", "bob", 1_000)), None);
            l.apply(&entry(5, Revocation::Token { jti: "j5".into(), exp: None }));
            assert_eq!(l.prune(UnixTime(1_000 + HORIZON)), 0, "unknown exp: kept for the longest lifetime");
            assert_eq!(l.prune(UnixTime(1_001 + HORIZON)), 1);
            assert_eq!(l.len(), 1, "key entries stay");
        }
    }

    both_targets_test! {
        fn feed_json_shape() {
            let json = r#"{"revocations":[{"seq":7,"at":1767225600,"kind":"token","jti":"abc","exp":1767229200},{"seq":8,"at":1767225660,"kind":"user","org":"org_1","user":"alice"},{"seq":9,"at":1767225700,"kind":"key","key_id":"k1"}],"next":9}"#;
            let feed: Feed = serde_json::from_str(json).unwrap();
            assert_eq!(feed.revocations.len(), 3);
            assert_eq!(feed.revocations[1].revocation, Revocation::User { org: "org_1".into(), user: "alice".into() });
            assert_eq!(serde_json::to_string(&feed).unwrap(), json, "round trip");
            assert!(serde_json::from_str::<Feed>(r#"{"revocations":[{"seq":1,"at":1,"kind":"none"}],"next":1}"#).is_err());
        }
    }
}
