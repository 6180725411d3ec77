//! Identity-provider JWT verification: providers are profiles over one verifier.
//!
//! Profiles: Supabase ([`SupabaseConfig`]), Firebase ([`FirebaseConfig`]), Auth0
//! ([`Auth0Config`]), Clerk ([`ClerkConfig`]) and any OpenID Connect issuer ([`OidcConfig`]);
//! [`ProvidersConfig`] reads several from one JSON document.
//!
//! A profile fixes, per issuer, the accepted algorithms, the audience, where keys come from
//! (configured secrets and/or a JWKS URL) and how claims become an [`Identity`]. A token's
//! unverified `iss` only selects the profile; that profile's own keys and rules then decide.
//! An unknown issuer is refused.
//!
//! Driving it (the worker and the broker do this, each with their own HTTP client):
//!
//! 1. [`IdpVerifier::inspect`] parses and routes the token (no cryptography yet);
//! 2. [`IdpVerifier::static_key`] returns a configured key, or [`IdpVerifier::key_source`] says
//!    where to fetch it: a JWKS URL, or an OpenID discovery document whose `jwks_uri`
//!    [`jwks_uri_from_discovery`] checks; keys are resolved through a
//!    [`crate::jwks_cache::JwksCache`];
//! 3. [`IdpVerifier::verify`] checks signature, time window, issuer, audience and claims.

mod claims;
pub use claims::email_verified;
mod config;
mod discovery;
mod providers;
mod supabase;

pub use config::{ProviderConfig, ProvidersConfig};
pub use discovery::{discovery_url, jwks_uri_from_discovery};
pub use providers::{
    checked_url, Auth0Config, ClerkConfig, FirebaseConfig, OidcConfig, FIREBASE_JWKS_URL,
};
pub use supabase::SupabaseConfig;

use crate::ids::UserId;
use crate::jws::{Inspected, JwsError, Validation, VerifiedJwt, DEFAULT_MAX_TOKEN_LEN};
use crate::keys::{Alg, KeyEntry, KeySet};
use crate::time::UnixTime;

/// Which kind of identity provider a profile describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Provider {
    /// Supabase Auth (GoTrue).
    Supabase,
    /// Firebase Authentication (Google Identity Platform) ID tokens.
    Firebase,
    /// Auth0 access tokens for an API.
    Auth0,
    /// Clerk session tokens.
    Clerk,
    /// Any OpenID Connect issuer, keys found by discovery.
    Oidc,
}

impl Provider {
    /// A stable lowercase name for logs, configuration and responses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Supabase => "supabase",
            Self::Firebase => "firebase",
            Self::Auth0 => "auth0",
            Self::Clerk => "clerk",
            Self::Oidc => "oidc",
        }
    }
}

/// Why an IdP token was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdpError {
    /// Structural, cryptographic, time, issuer or audience failure.
    #[error(transparent)]
    Jws(#[from] JwsError),
    /// `iss` matches no configured provider.
    #[error("unknown issuer")]
    UnknownIssuer,
    /// `sub` is missing or cannot be an MQTT user id.
    #[error("subject is missing or not a valid user id")]
    BadSubject,
    /// A provider-specific claim rule failed, e.g. Firebase's `auth_time` in the future or
    /// Clerk's `azp` naming an origin that is not allowed.
    #[error("claim {claim:?}: {reason}")]
    Claim {
        /// The claim at fault.
        claim: &'static str,
        /// The rule it broke.
        reason: &'static str,
    },
    /// The provider configuration is unusable (reported at start-up, not per request).
    #[error("identity provider configuration: {0}")]
    Config(String),
}

/// How a profile recognises its issuer.
#[derive(Debug, Clone)]
enum IssuerMatch {
    Exact(String),
    /// Any issuer ending with this suffix: only for profiles whose every key is a secret unique
    /// to one issuer (a Supabase legacy project secret without the project URL).
    Suffix(String),
}

/// Where a profile's keys are fetched from, besides any configured (static) keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource<'a> {
    /// Only configured keys.
    None,
    /// A JWKS document at this URL.
    Jwks(&'a str),
    /// OpenID Connect discovery: fetch this `/.well-known/openid-configuration` URL, check its
    /// `issuer` with [`jwks_uri_from_discovery`], then use its `jwks_uri`.
    Discovery {
        /// The configured issuer the document must name.
        issuer: &'a str,
        /// The discovery document's URL.
        url: &'a str,
    },
}

#[derive(Debug, Clone)]
enum Keys {
    None,
    Jwks(String),
    Discovery(String),
}

/// Provider-specific claim rules applied after the signature and the standard claims.
#[derive(Debug, Clone, Default)]
struct ClaimRules {
    /// Claims that carry roles: an exact claim name, else a dot path into nested objects.
    role_claims: Vec<String>,
    /// Also take roles from every top-level claim whose name ends in `/roles` (Auth0's
    /// namespaced custom claims).
    namespaced_roles: bool,
    /// When set, `azp` must be present and one of these (Clerk).
    authorized_parties: Vec<String>,
    /// `auth_time` must be present and not in the future (Firebase).
    require_auth_time: bool,
}

/// One issuer's verification rules.
#[derive(Debug, Clone)]
pub struct IssuerProfile {
    provider: Provider,
    issuer: IssuerMatch,
    algorithms: Vec<Alg>,
    static_keys: KeySet,
    keys: Keys,
    validation: Validation,
    rules: ClaimRules,
}

impl IssuerProfile {
    /// The provider kind.
    pub fn provider(&self) -> Provider {
        self.provider
    }
    /// The issuer this profile accepts (a suffix for a secret-only Supabase profile).
    pub fn issuer(&self) -> &str {
        match &self.issuer {
            IssuerMatch::Exact(i) | IssuerMatch::Suffix(i) => i,
        }
    }
    /// The JWKS URL, if keys are fetched from a fixed URL.
    pub fn jwks_url(&self) -> Option<&str> {
        match &self.keys {
            Keys::Jwks(u) => Some(u),
            _ => None,
        }
    }
    /// Where this profile's keys come from.
    pub fn key_source(&self) -> KeySource<'_> {
        match (&self.keys, &self.issuer) {
            (Keys::None, _) => KeySource::None,
            (Keys::Jwks(u), _) => KeySource::Jwks(u),
            (Keys::Discovery(url), IssuerMatch::Exact(issuer) | IssuerMatch::Suffix(issuer)) => {
                KeySource::Discovery { issuer, url }
            }
        }
    }
    /// Accepted algorithms.
    pub fn algorithms(&self) -> &[Alg] {
        &self.algorithms
    }
    /// Sets the clock-skew allowance (seconds).
    pub fn with_leeway(mut self, leeway: u64) -> Self {
        self.validation.leeway = leeway;
        self
    }
    fn matches(&self, iss: &str) -> bool {
        match &self.issuer {
            IssuerMatch::Exact(i) => i == iss,
            IssuerMatch::Suffix(s) => iss.ends_with(s.as_str()),
        }
    }
}

/// A verified end user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The provider that vouched for the user.
    pub provider: Provider,
    /// The token's issuer.
    pub issuer: String,
    /// The user id (`sub`).
    pub subject: UserId,
    /// The primary role: the first role claim found (Supabase `role`, Clerk `org_role`…).
    pub role: Option<String>,
    /// Further roles (Supabase `app_metadata.roles`, Firebase custom claims, Auth0 namespaced
    /// claims…), in the order of the profile's role claims.
    pub roles: Vec<String>,
    /// The email address, if the token carries one.
    pub email: Option<String>,
    /// Whether the provider verified it (`email_verified`): only a verified address may
    /// link the user to anything else, such as a directory account.
    pub email_verified: bool,
    /// When the IdP token expires.
    pub expires_at: Option<UnixTime>,
    /// When the IdP token was issued (`iat`): a user revocation at T refuses IdP tokens
    /// issued at or before T.
    pub issued_at: Option<UnixTime>,
}

impl Identity {
    /// Every role the user has: the primary role first, then the others, without repeats.
    pub fn all_roles(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.role.iter().map(String::as_str).collect();
        for r in &self.roles {
            if !out.contains(&r.as_str()) {
                out.push(r);
            }
        }
        out
    }
}

/// A token that passed the structural checks and was routed to a profile.
#[derive(Debug)]
pub struct Pending<'t> {
    inspected: Inspected<'t>,
    profile: usize,
}

impl Pending<'_> {
    /// The header `kid`.
    pub fn kid(&self) -> Option<&str> {
        self.inspected.kid()
    }
    /// The header algorithm (already allowed for this issuer).
    pub fn alg(&self) -> Alg {
        self.inspected.algorithm()
    }
}

/// Verifies IdP JWTs for a set of issuer profiles.
#[derive(Debug, Clone)]
pub struct IdpVerifier {
    profiles: Vec<IssuerProfile>,
    /// Maximum accepted token length in bytes. Default 8 KiB.
    pub max_len: usize,
}

impl IdpVerifier {
    /// A verifier for these profiles. Two profiles for one issuer are a configuration error
    /// caught by [`ProvidersConfig::verifier`]; here the first one wins.
    pub fn new(profiles: Vec<IssuerProfile>) -> Self {
        Self {
            profiles,
            max_len: DEFAULT_MAX_TOKEN_LEN,
        }
    }

    /// The configured profiles.
    pub fn profiles(&self) -> &[IssuerProfile] {
        &self.profiles
    }

    /// Parses the token and selects its issuer's profile. No signature is checked yet.
    pub fn inspect<'t>(&self, token: &'t str) -> Result<Pending<'t>, IdpError> {
        // Structural checks first, with every algorithm any profile allows; the profile's own
        // allow-list is applied right after routing.
        let all: Vec<Alg> = [Alg::EdDSA, Alg::ES256, Alg::RS256, Alg::HS256]
            .into_iter()
            .filter(|a| self.profiles.iter().any(|p| p.algorithms.contains(a)))
            .collect();
        let inspected = Inspected::parse(token, self.max_len, &all)?;
        inspected.require_claims_object()?;
        let iss = match inspected.unverified_claim("iss") {
            Some(serde_json::Value::String(s)) => s,
            Some(_) => return Err(JwsError::MalformedClaims("iss".into()).into()),
            None => return Err(JwsError::MissingClaim("iss").into()),
        };
        let profile = self
            .profiles
            .iter()
            .position(|p| p.matches(&iss))
            .ok_or(IdpError::UnknownIssuer)?;
        let p = &self.profiles[profile];
        if !p.algorithms.contains(&inspected.algorithm()) {
            return Err(
                JwsError::AlgorithmNotAllowed(inspected.algorithm().name().to_owned()).into(),
            );
        }
        p.validation.check_typ(&inspected)?;
        Ok(Pending { inspected, profile })
    }

    /// A configured (non-fetched) key for this token, if the profile has one.
    pub fn static_key(&self, pending: &Pending<'_>) -> Option<&KeyEntry> {
        self.profiles[pending.profile]
            .static_keys
            .find(pending.kid(), pending.alg())
    }

    /// The JWKS URL to resolve this token's key from, if the profile fetches keys from a
    /// fixed URL (see [`IdpVerifier::key_source`] for discovery).
    pub fn jwks_url(&self, pending: &Pending<'_>) -> Option<&str> {
        self.profiles[pending.profile].jwks_url()
    }

    /// Where to fetch this token's key from when no configured key matches.
    pub fn key_source(&self, pending: &Pending<'_>) -> KeySource<'_> {
        self.profiles[pending.profile].key_source()
    }

    /// The provider of the profile this token was routed to.
    pub fn provider(&self, pending: &Pending<'_>) -> Provider {
        self.profiles[pending.profile].provider
    }

    /// Verifies the token with `key` at time `now` and maps its claims to an [`Identity`].
    pub fn verify(
        &self,
        pending: Pending<'_>,
        key: &KeyEntry,
        now: UnixTime,
    ) -> Result<Identity, IdpError> {
        self.finish(pending, now, |inspected, validation| {
            inspected.verify(key, validation, now)
        })
    }

    /// The signing input and signature of this token, for a signature check made elsewhere
    /// (see [`IdpVerifier::verify_checked`]).
    pub fn signed_parts<'p>(&self, pending: &'p Pending<'_>) -> (&'p [u8], &'p [u8]) {
        pending.inspected.signed_parts()
    }

    /// [`IdpVerifier::verify`] with the signature already checked over
    /// [`IdpVerifier::signed_parts`] with `key` by the caller (`signature_valid`); everything
    /// else (the key's algorithm, every claim, the profile's rules) is checked here.
    pub fn verify_checked(
        &self,
        pending: Pending<'_>,
        key: &KeyEntry,
        signature_valid: bool,
        now: UnixTime,
    ) -> Result<Identity, IdpError> {
        self.finish(pending, now, |inspected, validation| {
            inspected.verify_checked(key, signature_valid, validation, now)
        })
    }

    fn finish(
        &self,
        pending: Pending<'_>,
        now: UnixTime,
        verify: impl FnOnce(Inspected<'_>, &Validation) -> Result<VerifiedJwt, JwsError>,
    ) -> Result<Identity, IdpError> {
        let profile = &self.profiles[pending.profile];
        let mut validation = profile.validation.clone();
        if validation.issuer.is_none() {
            // suffix-matched issuer: pin the one this token routed with
            validation.issuer = pending
                .inspected
                .unverified_claim("iss")
                .and_then(|v| v.as_str().map(str::to_owned));
        }
        let jwt = verify(pending.inspected, &validation)?;
        claims::identity(profile, &jwt, now)
    }
}

#[cfg(test)]
mod provider_tests;
#[cfg(test)]
mod tests;
