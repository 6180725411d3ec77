//! API key verification: format and checksum first (no lookup), then the store, then bcrypt,
//! and a bounded cache so bcrypt runs once per key, never on a hot path twice.
//!
//! bcrypt reads at most 72 bytes; the stored hash is bcrypt of the hex SHA-256 of the secret
//! (64 bytes), so the whole secret always counts. The cache is keyed by SHA-256 of the whole
//! key string and dropped for a key the moment it is revoked.

use crate::store::{Store, StoredKey};
use cloudsignal_core::apikey::{ApiKey, KeyFormatError};
use cloudsignal_core::UnixTime;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// bcrypt cost for stored keys.
pub const BCRYPT_COST: u32 = 10;
/// Verified keys remembered at most (then the cache starts over).
const CACHE_CAP: usize = 10_000;

/// Why a key was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyRefusal {
    /// Not a well-formed key (checked before any lookup).
    #[error(transparent)]
    Format(#[from] KeyFormatError),
    /// No such key, or the secret does not match.
    #[error("unknown API key or wrong secret")]
    Unknown,
    /// Revoked.
    #[error("API key revoked")]
    Revoked,
    /// Past its expiry.
    #[error("API key expired")]
    Expired,
    /// The store failed.
    #[error("store error: {0}")]
    Store(String),
}

/// A person signed in through the CLI or the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Their account.
    pub account_id: String,
    /// Their e-mail address (the actor in the audit log).
    pub email: String,
    /// `owner`, `admin` or `viewer`.
    pub role: String,
    /// The sign-in session.
    pub session: String,
}

/// A verified caller of the API: an API key, or a person acting through an equivalent key
/// (owners and admins as an `sk_` key, viewers as an `rk_` key with read scopes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKey {
    /// The stored record (scopes, org, allowlist).
    pub key: StoredKey,
    /// The person, when it is one.
    pub person: Option<Person>,
}

impl VerifiedKey {
    /// The caller for a person signed in as `account` in `session`.
    pub fn person(account: &crate::store::Account, session: &str) -> Self {
        let scopes = crate::oauth::role_scopes(&account.role);
        Self {
            key: StoredKey {
                id: account.id.clone(),
                org: account.org.clone(),
                kind: if scopes.is_none() { "sk" } else { "rk" }.into(),
                name: account.email.clone(),
                secret_hash: String::new(),
                scopes: scopes
                    .unwrap_or_default()
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
                allow_cidrs: Vec::new(),
                created_at: account.created_at,
                expires_at: None,
                revoked_at: None,
            },
            person: Some(Person {
                account_id: account.id.clone(),
                email: account.email.clone(),
                role: account.role.clone(),
                session: session.to_owned(),
            }),
        }
    }

    /// Whether the key grants `scope` (`sk_` keys grant everything in their org).
    pub fn allows(&self, scope: &str) -> bool {
        self.key.kind == "sk" || self.key.scopes.iter().any(|s| s == scope)
    }
}

/// The hash stored for a secret: bcrypt of its hex SHA-256.
pub fn hash_secret(secret: &str) -> Result<String, bcrypt::BcryptError> {
    bcrypt::hash(prehash(secret), BCRYPT_COST)
}

fn prehash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Verifies keys against a store, caching successes.
#[derive(Debug, Default)]
pub struct KeyVerifier {
    cache: Mutex<HashMap<[u8; 32], StoredKey>>,
    /// Why recent verifications failed (for the broker's log line; bounded, taken once).
    refusals: Mutex<HashMap<[u8; 32], String>>,
}

impl KeyVerifier {
    /// Verifies `text` at `now`. May run bcrypt (tens of milliseconds) on a cache miss: call it
    /// from a blocking context (`spawn_blocking`), or use [`Self::cached`] on a hot path.
    pub fn verify(
        &self,
        store: &dyn Store,
        text: &str,
        now: UnixTime,
    ) -> Result<VerifiedKey, KeyRefusal> {
        let outcome = self.verify_inner(store, text, now);
        if let Err(e) = &outcome {
            let mut r = self.refusals.lock();
            if r.len() >= CACHE_CAP {
                r.clear();
            }
            r.insert(digest(text), e.to_string());
        }
        outcome
    }

    /// Why the last verification of `text` failed, if it did (taken: asked once).
    pub fn take_refusal(&self, text: &str) -> Option<String> {
        self.refusals.lock().remove(&digest(text))
    }

    fn verify_inner(
        &self,
        store: &dyn Store,
        text: &str,
        now: UnixTime,
    ) -> Result<VerifiedKey, KeyRefusal> {
        let key = ApiKey::parse(text)?;
        if let Some(hit) = self.cached(text, now)? {
            return Ok(hit);
        }
        let stored = store
            .find_key(key.id())
            .map_err(|e| KeyRefusal::Store(e.to_string()))?
            .ok_or(KeyRefusal::Unknown)?;
        if stored.kind != key.kind().name() {
            return Err(KeyRefusal::Unknown);
        }
        check_live(&stored, now)?;
        // bcrypt compares in constant time
        if !bcrypt::verify(prehash(key.secret()), &stored.secret_hash).unwrap_or(false) {
            return Err(KeyRefusal::Unknown);
        }
        // re-read under the cache lock: a revocation that landed during bcrypt is seen here, or
        // its invalidation (which takes this lock) runs after the insert and removes it
        let mut cache = self.cache.lock();
        let stored = store
            .find_key(key.id())
            .map_err(|e| KeyRefusal::Store(e.to_string()))?
            .ok_or(KeyRefusal::Unknown)?;
        check_live(&stored, now)?;
        if cache.len() >= CACHE_CAP {
            cache.clear();
        }
        cache.insert(digest(text), stored.clone());
        Ok(VerifiedKey {
            key: stored,
            person: None,
        })
    }

    /// The cached verification of `text`, if any (no bcrypt, no store access).
    pub fn cached(&self, text: &str, now: UnixTime) -> Result<Option<VerifiedKey>, KeyRefusal> {
        let hit = self.cache.lock().get(&digest(text)).cloned();
        match hit {
            Some(stored) => {
                check_live(&stored, now)?;
                Ok(Some(VerifiedKey {
                    key: stored,
                    person: None,
                }))
            }
            None => Ok(None),
        }
    }

    /// Forgets every cached verification of key `id` (on revoke and rotate).
    pub fn invalidate(&self, id: &str) {
        self.cache.lock().retain(|_, k| k.id != id);
    }
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn check_live(k: &StoredKey, now: UnixTime) -> Result<(), KeyRefusal> {
    if k.revoked_at.is_some() {
        return Err(KeyRefusal::Revoked);
    }
    if k.expires_at.is_some_and(|e| e <= now) {
        return Err(KeyRefusal::Expired);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use cloudsignal_core::apikey::KeyKind;

    fn stored(key: &ApiKey, secret_hash: String) -> StoredKey {
        StoredKey {
            id: key.id().into(),
            org: "org_aaaaaaaaaaaa".into(),
            kind: key.kind().name().into(),
            name: "t".into(),
            secret_hash,
            scopes: vec!["tokens:issue".into()],
            allow_cidrs: vec![],
            created_at: UnixTime(1),
            expires_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn verify_cache_revoke_and_the_72_byte_limit() {
        let dir = std::env::temp_dir().join(format!("cs-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(&dir.join("k.db")).unwrap();
        store
            .create_org("org_aaaaaaaaaaaa", "d", UnixTime(1))
            .unwrap();
        let random: Vec<u8> = (0..64).map(|i| (i * 13) as u8).collect();
        let key = ApiKey::generate(KeyKind::Restricted, &random).unwrap();
        store
            .insert_key(&stored(&key, hash_secret(key.secret()).unwrap()))
            .unwrap();
        let v = KeyVerifier::default();
        let now = UnixTime(10);
        assert!(v.cached(key.expose(), now).unwrap().is_none());
        let ok = v.verify(&store, key.expose(), now).unwrap();
        assert!(ok.allows("tokens:issue") && !ok.allows("keys:write"));
        assert!(
            v.cached(key.expose(), now).unwrap().is_some(),
            "second use needs no bcrypt"
        );
        // the right id with another secret (valid checksum) is refused after bcrypt
        let forged = ApiKey::from_parts(KeyKind::Restricted, key.id(), &"Z".repeat(24)).unwrap();
        assert!(matches!(
            v.verify(&store, forged.expose(), now),
            Err(KeyRefusal::Unknown)
        ));
        // the same id and secret presented as sk_ is refused
        let promoted = ApiKey::from_parts(KeyKind::Secret, key.id(), key.secret()).unwrap();
        assert!(matches!(
            v.verify(&store, promoted.expose(), now),
            Err(KeyRefusal::Unknown)
        ));
        // revocation drops the cache entry at once
        store.revoke_key(key.id(), now).unwrap();
        v.invalidate(key.id());
        assert!(matches!(
            v.verify(&store, key.expose(), now),
            Err(KeyRefusal::Revoked)
        ));
        // bcrypt alone would accept two secrets sharing their first 72 bytes; the SHA-256
        // pre-hash makes the whole secret count
        let long_a = format!("{}A", "x".repeat(72));
        let long_b = format!("{}B", "x".repeat(72));
        let h = hash_secret(&long_a).unwrap();
        assert!(bcrypt::verify(prehash(&long_a), &h).unwrap());
        assert!(!bcrypt::verify(prehash(&long_b), &h).unwrap());
        assert!(
            bcrypt::verify(&long_b, &bcrypt::hash(&long_a, 4).unwrap()).unwrap(),
            "raw bcrypt truncates"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
