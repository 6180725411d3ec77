//! The Supabase Auth profile.
//!
//! Supabase signs access tokens either with the project's legacy HS256 JWT secret or with
//! asymmetric keys (ES256/RS256) published at `<project>/auth/v1/.well-known/jwks.json`.
//! Issuer: `<project URL>/auth/v1`; audience: `authenticated`. Claims used: `sub` (the user's
//! UUID), `role`, `app_metadata.roles`, `email`.

use super::{ClaimRules, IdpError, IssuerMatch, IssuerProfile, Keys, Provider};
use crate::jws::Validation;
use crate::keys::{Alg, KeyEntry, KeySet, VerifyingKey};
use serde::{Deserialize, Serialize};

fn authenticated() -> String {
    "authenticated".to_owned()
}

/// Configuration of one Supabase project. At least one of `url` and `jwt_secret` is needed.
/// In JSON (`{"provider": "supabase", "url": …}`) the secret is never read: set it apart.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupabaseConfig {
    /// The project URL, e.g. `https://abcdefghijklmnopqrst.supabase.co` (`SUPABASE_URL`).
    /// Pins the issuer and enables ES256/RS256 keys from the project's JWKS.
    pub url: Option<String>,
    /// The legacy HS256 JWT secret (`SUPABASE_JWT_SECRET`). Without `url`, any issuer ending in
    /// `/auth/v1` is accepted for HS256 tokens, since only this project holds the secret.
    #[serde(skip)]
    pub jwt_secret: Option<String>,
    /// Accepted audience. Default `authenticated`.
    #[serde(default = "authenticated")]
    pub audience: String,
}

impl std::fmt::Debug for SupabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupabaseConfig")
            .field("url", &self.url)
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("audience", &self.audience)
            .finish()
    }
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
        let (issuer, jwks_url) = match self.url.as_deref().map(|u| u.trim().trim_end_matches('/')) {
            Some(url) => {
                // https, or http only to this machine (local Supabase): keys fetched over plain
                // http from anywhere else could be swapped in transit
                let url = super::providers::checked_url("SUPABASE_URL", url)?;
                let url = url.as_str();
                algorithms.extend([Alg::ES256, Alg::RS256]);
                (
                    IssuerMatch::Exact(format!("{url}/auth/v1")),
                    Keys::Jwks(format!("{url}/auth/v1/.well-known/jwks.json")),
                )
            }
            None if self.jwt_secret.is_some() => {
                (IssuerMatch::Suffix("/auth/v1".into()), Keys::None)
            }
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
            keys: jwks_url,
            rules: ClaimRules {
                role_claims: vec!["role".into(), "app_metadata.roles".into()],
                ..ClaimRules::default()
            },
        })
    }
}
