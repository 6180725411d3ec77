//! Identifiers: organisations, users and MQTT usernames (`<user>@<org>`).
//!
//! A user id is substituted into ACL templates such as `users/{user}/#`, so it must never
//! contain a topic separator or a wildcard: [`UserId`] makes that impossible to forget.

use core::fmt;
use serde::{Deserialize, Serialize};

/// Why an identifier is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// An org id is `org_` followed by 12 lowercase base32 characters (`a-z`, `2-7`).
    #[error("org id must be 'org_' followed by 12 lowercase base32 characters")]
    BadOrg,
    /// A user id is 1–128 characters from `A-Z a-z 0-9 . _ - : | ~` (no `/`, `+`, `#`, `@`,
    /// `$` or whitespace, so it is safe inside a topic level).
    #[error("user id must be 1-128 characters from [A-Za-z0-9._:|~-]")]
    BadUser,
    /// An MQTT username is `<user>@<org>`.
    #[error("username must be '<user>@<org>'")]
    BadUsername,
}

/// An organisation id, e.g. `org_k7xm4pqr2n5t`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrgId(String);

impl OrgId {
    /// Parses an org id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let tail = s.strip_prefix("org_").ok_or(IdError::BadOrg)?;
        let ok = tail.len() == 12
            && tail
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::BadOrg)
        }
    }

    /// Builds an org id from 60 random bits (adapters pass bytes from their CSPRNG).
    pub fn from_random(bytes: [u8; 8]) -> Self {
        const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
        let n = u64::from_le_bytes(bytes);
        let tail: String = (0..12)
            .map(|i| char::from(ALPHABET[((n >> (i * 5)) & 31) as usize]))
            .collect();
        Self(format!("org_{tail}"))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user (or service account) id: safe to place inside one topic level.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    /// Parses a user id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = (1..=128).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_:|~".contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::BadUser)
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An MQTT username binding a user to an org: `<user>@<org>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Username {
    /// The user (or service account).
    pub user: UserId,
    /// The org.
    pub org: OrgId,
}

impl Username {
    /// Parses `<user>@<org>`, splitting at the last `@`.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let (user, org) = s.rsplit_once('@').ok_or(IdError::BadUsername)?;
        Ok(Self {
            user: UserId::parse(user)?,
            org: OrgId::parse(org)?,
        })
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.user.0, self.org.0)
    }
}

macro_rules! string_newtype_impls {
    ($t:ident) => {
        impl TryFrom<String> for $t {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($t), self.0)
            }
        }
    };
}
string_newtype_impls!(OrgId);
string_newtype_impls!(UserId);

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Username({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::both_targets_test;

    both_targets_test! {
        fn org_ids() {
            assert!(OrgId::parse("org_k7xm4pqr2n5t").is_ok());
            for bad in ["org_k7xm4pqr2n5", "org_K7XM4PQR2N5T", "org_k7xm4pqr2n51", "k7xm4pqr2n5t", "org_k7xm4pqr2n5tt"] {
                assert_eq!(OrgId::parse(bad), Err(IdError::BadOrg), "{bad}");
            }
            let o = OrgId::from_random([0xff; 8]);
            assert!(OrgId::parse(o.as_str()).is_ok(), "{o}");
        }
    }

    both_targets_test! {
        fn user_ids_are_topic_safe() {
            for ok in ["3f1c2a9e-1b2c-4d5e-8f90-123456789abc", "google-oauth2|1234", "user_2abc", "a"] {
                assert!(UserId::parse(ok).is_ok(), "{ok}");
            }
            for bad in ["", "a/b", "a+", "#", "a@b", "$x", "a b", "é", &"a".repeat(129)] {
                assert_eq!(UserId::parse(bad), Err(IdError::BadUser), "{bad}");
            }
        }
    }

    both_targets_test! {
        fn usernames() {
            let u = Username::parse("user_xyz@org_k7xm4pqr2n5t").unwrap();
            assert_eq!(u.user.as_str(), "user_xyz");
            assert_eq!(u.to_string(), "user_xyz@org_k7xm4pqr2n5t");
            assert!(Username::parse("user_xyz").is_err());
            assert!(Username::parse("a@b@org_k7xm4pqr2n5t").is_err());
        }
    }
}
