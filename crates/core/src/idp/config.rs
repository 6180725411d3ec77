//! Several providers at once, from one JSON document (`CLOUDSIGNAL_PROVIDERS`):
//!
//! ```json
//! [{"provider": "supabase", "url": "https://abcdefghijklmnopqrst.supabase.co"},
//!  {"provider": "firebase", "project_id": "my-app"},
//!  {"provider": "auth0", "domain": "my-tenant.eu.auth0.com", "audience": "https://api.my.app"},
//!  {"provider": "clerk", "issuer": "https://clerk.my.app", "authorized_parties": ["https://my.app"]},
//!  {"provider": "oidc", "issuer": "https://accounts.example", "audience": "my-client-id"}]
//! ```
//!
//! Secrets never appear in it: Supabase's legacy HS256 secret is set apart
//! ([`SupabaseConfig::jwt_secret`]).

use super::{
    Auth0Config, ClerkConfig, FirebaseConfig, IdpError, IdpVerifier, IssuerProfile, OidcConfig,
    SupabaseConfig,
};
use serde::{Deserialize, Serialize};

/// One identity provider, tagged by `provider`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
#[non_exhaustive]
pub enum ProviderConfig {
    /// Supabase Auth.
    Supabase(SupabaseConfig),
    /// Firebase Authentication.
    Firebase(FirebaseConfig),
    /// Auth0.
    Auth0(Auth0Config),
    /// Clerk.
    Clerk(ClerkConfig),
    /// Any OpenID Connect issuer.
    Oidc(OidcConfig),
}

impl ProviderConfig {
    /// The issuer profile this configuration describes.
    pub fn profile(&self) -> Result<IssuerProfile, IdpError> {
        match self {
            Self::Supabase(c) => c.profile(),
            Self::Firebase(c) => c.profile(),
            Self::Auth0(c) => c.profile(),
            Self::Clerk(c) => c.profile(),
            Self::Oidc(c) => c.profile(),
        }
    }
}

/// Every configured provider.
#[derive(Debug, Clone, Default)]
pub struct ProvidersConfig {
    /// In order; a token's `iss` selects exactly one.
    pub providers: Vec<ProviderConfig>,
}

impl ProvidersConfig {
    /// Parses a JSON array of provider objects. Unknown fields are refused, so a typo in a
    /// setting is an error, not a silently ignored rule.
    pub fn from_json(json: &str) -> Result<Self, IdpError> {
        let providers: Vec<ProviderConfig> = serde_json::from_str(json)
            .map_err(|e| IdpError::Config(format!("providers JSON: {e}")))?;
        Ok(Self { providers })
    }

    /// Adds the Supabase shortcut settings (`SUPABASE_URL`, the legacy `SUPABASE_JWT_SECRET`):
    /// a Supabase profile for `url` unless the document already has one, and the secret given
    /// to that (one) Supabase project. Nothing is added when both are `None`.
    pub fn add_supabase(&mut self, url: Option<&str>, jwt_secret: Option<String>) {
        let is_supabase = |p: &ProviderConfig| matches!(p, ProviderConfig::Supabase(_));
        if !self.providers.iter().any(is_supabase) && (url.is_some() || jwt_secret.is_some()) {
            self.providers
                .push(ProviderConfig::Supabase(SupabaseConfig::new(url, None)));
        }
        if let (Some(secret), Some(ProviderConfig::Supabase(s))) = (
            jwt_secret,
            self.providers.iter_mut().find(|p| is_supabase(p)),
        ) {
            s.jwt_secret = Some(secret);
        }
    }

    /// The verifier for all providers. At least one is needed, and two may not claim the
    /// same issuer (the token's `iss` must select exactly one profile).
    pub fn verifier(&self) -> Result<IdpVerifier, IdpError> {
        if self.providers.is_empty() {
            return Err(IdpError::Config(
                "no identity provider is configured".into(),
            ));
        }
        let mut profiles: Vec<IssuerProfile> = Vec::with_capacity(self.providers.len());
        for (i, p) in self.providers.iter().enumerate() {
            let profile = p
                .profile()
                .map_err(|e| IdpError::Config(format!("provider #{}: {e}", i + 1)))?;
            if let Some(other) = profiles.iter().find(|o| o.issuer() == profile.issuer()) {
                return Err(IdpError::Config(format!(
                    "providers {} and {} both claim issuer {:?}",
                    other.provider().name(),
                    profile.provider().name(),
                    profile.issuer()
                )));
            }
            profiles.push(profile);
        }
        Ok(IdpVerifier::new(profiles))
    }
}
