//! Passwords: argon2id (RFC 9106) with OWASP's parameters, PHC strings in the store, verified
//! on a blocking thread; an unknown account costs the same as a wrong password.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// The shortest password accepted.
pub const MIN_LENGTH: usize = 12;

fn hasher() -> Argon2<'static> {
    // 19 MiB, 2 passes, 1 lane (OWASP Password Storage Cheat Sheet, argon2id)
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The PHC string for `password`, salted with `salt` (16 random bytes).
pub fn hash(password: &str, salt: [u8; 16]) -> anyhow::Result<String> {
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(hasher()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))?
        .to_string())
}

/// A hash of nothing anyone knows, verified when the account does not exist.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2lnbmFsLWRlY295LXNhbHQ$4mYL2iQmPbzdprTbK1wBw5PkJ4lJ5QN1LSHJ0p0Qv2o";

/// Whether `password` matches `phc` (or, with `None`, a decoy: the same work, always `false`).
pub fn verify(password: &str, phc: Option<&str>) -> bool {
    let (phc, real) = match phc {
        Some(p) => (p, true),
        None => (DECOY, false),
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    hasher()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
        && real
}

/// Why a new password is refused (`None`: fine).
pub fn weakness(password: &str, email: &str) -> Option<&'static str> {
    if password.chars().count() < MIN_LENGTH {
        return Some("use at least 12 characters");
    }
    if password.len() > 1024 {
        return Some("use at most 1024 bytes");
    }
    if password.eq_ignore_ascii_case(email) {
        return Some("the password may not be the e-mail address");
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_decoys_never_do() {
        let h = hash("correct horse battery", [7; 16]).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("correct horse battery", Some(&h)));
        assert!(!verify("correct horse batterY", Some(&h)));
        assert!(!verify("anything", None));
        assert!(
            PasswordHash::new(DECOY).is_ok(),
            "the decoy parses, so it costs a real verify"
        );
        assert_eq!(weakness("short", "a@b"), Some("use at least 12 characters"));
        assert_eq!(
            weakness("a@b.example.test", "A@B.example.test"),
            Some("the password may not be the e-mail address")
        );
        assert_eq!(weakness("a long enough passphrase", "a@b"), None);
    }
}
