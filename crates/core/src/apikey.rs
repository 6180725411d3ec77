//! API key format: `sk_` (full access in its org) or `rk_` (restricted to listed scopes),
//! then 42 base62 characters: a 12-character lookup id, a 24-character secret (≈ 143 bits)
//! and a 6-character checksum (CRC-32 of everything before it, base62).
//!
//! The checksum lets secret scanners recognise a key and lets the server refuse a mistyped
//! or made-up key before any database lookup or bcrypt work. Keys are generated from random
//! bytes the caller supplies (this crate does no I/O). Only a bcrypt of the secret is stored
//! (by the control plane); the lookup id is not secret.

use std::fmt;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const ID_LEN: usize = 12;
const SECRET_LEN: usize = 24;
const CHECK_LEN: usize = 6;
/// Total length of a key string.
pub const KEY_LEN: usize = 3 + ID_LEN + SECRET_LEN + CHECK_LEN;

/// The two kinds of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// `sk_`: everything its org may do.
    Secret,
    /// `rk_`: only its scopes.
    Restricted,
}

impl KeyKind {
    /// The key prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Secret => "sk_",
            Self::Restricted => "rk_",
        }
    }

    /// `sk` or `rk`, as in the API's JSON.
    pub fn name(self) -> &'static str {
        &self.prefix()[..2]
    }
}

/// Why a string is not an API key. Checked without any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    /// Neither `sk_` nor `rk_`.
    #[error("not an API key (expected sk_ or rk_)")]
    Prefix,
    /// Wrong length.
    #[error("an API key has {KEY_LEN} characters")]
    Length,
    /// A character outside base62.
    #[error("an API key has only letters and digits after its prefix")]
    Charset,
    /// The checksum does not match: a typo or a made-up key.
    #[error("API key checksum mismatch (mistyped or invalid key)")]
    Checksum,
}

/// A well-formed API key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    kind: KeyKind,
    text: String,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}{}…)", self.kind.prefix(), self.id())
    }
}

fn checksum(body: &str) -> String {
    let mut n = crc32fast::hash(body.as_bytes());
    let mut out = [b'0'; CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

impl ApiKey {
    /// Generates a key from at least 64 random bytes (`None` in the negligible case where
    /// rejection sampling runs out of them).
    pub fn generate(kind: KeyKind, random: &[u8]) -> Option<Self> {
        // bytes ≥ 248 would bias `% 62`; skip them
        let chars: String = random
            .iter()
            .filter(|&&b| b < 248)
            .map(|&b| char::from(ALPHABET[usize::from(b % 62)]))
            .take(ID_LEN + SECRET_LEN)
            .collect();
        if chars.len() < ID_LEN + SECRET_LEN {
            return None;
        }
        let body = format!("{}{chars}", kind.prefix());
        let text = format!("{body}{}", checksum(&body));
        Some(Self { kind, text })
    }

    /// Assembles a key from its parts, computing the checksum (for tests and tooling).
    pub fn from_parts(kind: KeyKind, id: &str, secret: &str) -> Result<Self, KeyFormatError> {
        let body = format!("{}{id}{secret}", kind.prefix());
        Self::parse(&format!("{body}{}", checksum(&body)))
    }

    /// Parses and checks a key string (prefix, length, alphabet, checksum).
    pub fn parse(s: &str) -> Result<Self, KeyFormatError> {
        let kind = if s.starts_with("sk_") {
            KeyKind::Secret
        } else if s.starts_with("rk_") {
            KeyKind::Restricted
        } else {
            return Err(KeyFormatError::Prefix);
        };
        if s.len() != KEY_LEN {
            return Err(KeyFormatError::Length);
        }
        if !s.as_bytes()[3..].iter().all(u8::is_ascii_alphanumeric) {
            return Err(KeyFormatError::Charset);
        }
        let (body, check) = s.split_at(KEY_LEN - CHECK_LEN);
        // not secret-dependent timing that matters: the checksum is public information
        if checksum(body) != check {
            return Err(KeyFormatError::Checksum);
        }
        Ok(Self {
            kind,
            text: s.to_owned(),
        })
    }

    /// `sk_` or `rk_`.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The lookup id (not secret; shown in listings and logs).
    pub fn id(&self) -> &str {
        &self.text[3..3 + ID_LEN]
    }

    /// The secret part (what the store keeps a bcrypt of).
    pub fn secret(&self) -> &str {
        &self.text[3 + ID_LEN..3 + ID_LEN + SECRET_LEN]
    }

    /// The whole key, to show once.
    pub fn expose(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
#[cfg_attr(test, allow(clippy::unwrap_used))]
mod tests {
    use super::*;
    use crate::both_targets_test;

    both_targets_test! {
        fn generate_parse_and_reject() {
            let random: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
            let key = ApiKey::generate(KeyKind::Restricted, &random).unwrap();
            assert_eq!(key.expose().len(), KEY_LEN);
            assert!(key.expose().starts_with("rk_"));
            let parsed = ApiKey::parse(key.expose()).unwrap();
            assert_eq!((parsed.kind(), parsed.id(), parsed.secret()), (KeyKind::Restricted, key.id(), key.secret()));
            assert!(!format!("{key:?}").contains(key.secret()), "Debug never shows the secret");
            // one changed character anywhere is caught by the checksum
            for i in 3..KEY_LEN {
                let mut b = key.expose().as_bytes().to_vec();
                b[i] = if b[i] == b'a' { b'b' } else { b'a' };
                let typo = String::from_utf8(b).unwrap();
                assert_eq!(ApiKey::parse(&typo), Err(KeyFormatError::Checksum), "position {i}");
            }
            assert_eq!(ApiKey::parse("pk_x"), Err(KeyFormatError::Prefix));
            assert_eq!(ApiKey::parse("sk_short"), Err(KeyFormatError::Length));
            assert_eq!(ApiKey::parse(&format!("sk_{}", "-".repeat(KEY_LEN - 3))), Err(KeyFormatError::Charset));
            assert!(ApiKey::generate(KeyKind::Secret, &[255; 64]).is_none());
        }
    }
}
