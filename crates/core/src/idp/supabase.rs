//! The Supabase Auth profile.
//!
//! Supabase signs access tokens either with the project's legacy HS256 JWT secret or with
//! asymmetric keys (ES256/RS256) published at `<project>/auth/v1/.well-known/jwks.json`.
//! Issuer: `<project URL>/auth/v1`; audience: `authenticated`. Claims used: `sub` (the user's
//! UUID), `role`, `app_metadata.roles`, `email`.

use super::{Identity, IdpError, IssuerMatch, IssuerProfile, Provider};
use crate::ids::UserId;
use crate::jws::{Validation, VerifiedJwt};
use crate::keys::{Alg, KeyEntry, KeySet, VerifyingKey};
use serde_json::Value;

/// Configuration of one Supabase project. At least one of `url` and `jwt_secret` is needed.
#[derive(Debug, Clone)]
pub struct SupabaseConfig {
    /// The project URL, e.g. `https://abcdefghijklmnopqrst.supabase.co` (`SUPABASE_URL`).
    /// Pins the issuer and enables ES256/RS256 keys from the project's JWKS.
    pub url: Option<String>,
    /// The legacy HS256 JWT secret (`SUPABASE_JWT_SECRET`). Without `url`, any issuer ending in
    /// `/auth/v1` is accepted for HS256 tokens, since only this project holds the secret.
    pub jwt_secret: Option<String>,
    /// Accepted audience. Default `authenticated`.
    pub audience: String,
}

impl SupabaseConfig {
    /// A configuration with the default audience.
    pub fn new(url: Option<&str>, jwt_secret: Option<&str>) -> Self {
        Self {
            url: url.map(|u| u.trim_end_matches('/').to_owned()),
            jwt_secret: jwt_secret.map(str::to_owned),
            audience: "authenticated".to_owned(),
        }
    }

    /// The issuer profile for this project.
    pub fn profile(&self) -> Result<IssuerProfile, IdpError> {
        let mut algorithms = Vec::new();
        let mut static_keys = KeySet::default();
        if let Some(secret) = &self.jwt_secret {
            let key = VerifyingKey::hs256(secret.as_bytes())
                .map_err(|e| IdpError::Config(format!("SUPABASE_JWT_SECRET: {e}")))?;
            static_keys.push(KeyEntry::new(None, key));
            algorithms.push(Alg::HS256);
        }
        let (issuer, jwks_url) = match &self.url {
            Some(url) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(IdpError::Config(format!(
                        "SUPABASE_URL must be an http(s) URL, got {url:?}"
                    )));
                }
                algorithms.extend([Alg::ES256, Alg::RS256]);
                (
                    IssuerMatch::Exact(format!("{url}/auth/v1")),
                    Some(format!("{url}/auth/v1/.well-known/jwks.json")),
                )
            }
            None if self.jwt_secret.is_some() => (IssuerMatch::Suffix("/auth/v1".into()), None),
            None => {
                return Err(IdpError::Config(
                    "Supabase needs SUPABASE_URL and/or SUPABASE_JWT_SECRET".into(),
                ))
            }
        };
        let pinned = match &issuer {
            IssuerMatch::Exact(i) => Some(i.as_str()),
            IssuerMatch::Suffix(_) => None,
        };
        Ok(IssuerProfile {
            provider: Provider::Supabase,
            validation: Validation::new(pinned, &self.audience),
            issuer,
            algorithms,
            static_keys,
            jwks_url,
        })
    }
}

pub(super) fn identity(jwt: &VerifiedJwt) -> Result<Identity, IdpError> {
    let subject = jwt
        .str_claim("sub")
        .and_then(|s| UserId::parse(s).ok())
        .ok_or(IdpError::BadSubject)?;
    let roles = jwt
        .claims
        .get("app_metadata")
        .and_then(|m| m.get("roles"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok(Identity {
        provider: Provider::Supabase,
        issuer: jwt.str_claim("iss").unwrap_or_default().to_owned(),
        subject,
        role: jwt.str_claim("role").map(str::to_owned),
        roles,
        email: jwt.str_claim("email").map(str::to_owned),
        expires_at: jwt.exp,
    })
}
