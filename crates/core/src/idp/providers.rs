//! Firebase, Auth0, Clerk and generic OpenID Connect profiles. Each is a small configuration
//! that fixes the issuer, audience, algorithms, key location and claim rules of one tenant;
//! verification itself is the one shared path in [`super::IdpVerifier`].

use super::{ClaimRules, IdpError, IssuerMatch, IssuerProfile, Keys, Provider};
use crate::jws::Validation;
use crate::keys::{Alg, KeySet};
use serde::{Deserialize, Serialize};

/// Google's JWKS for Firebase ID tokens (the `securetoken` service account).
pub const FIREBASE_JWKS_URL: &str =
    "https://www.googleapis.com/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com";

/// An issuer, JWKS or feed URL, checked: `https://`, or `http://` to a loopback host (local
/// development and tests). No trailing slash. `what` names the setting in errors. Every URL
/// keys or revocations are fetched from passes here (the broker, the control plane, the worker).
pub fn checked_url(what: &str, url: &str) -> Result<String, IdpError> {
    let url = url.trim().trim_end_matches('/');
    let host = |rest: &str| {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = match authority.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => authority,
        };
        host.to_owned()
    };
    let ok = match url.split_once("://") {
        Some(("https", rest)) => !host(rest).is_empty(),
        Some(("http", rest)) => matches!(host(rest).as_str(), "127.0.0.1" | "localhost" | "[::1]"),
        _ => false,
    };
    if ok {
        Ok(url.to_owned())
    } else {
        Err(IdpError::Config(format!(
            "{what} must be an https:// URL (http:// only for localhost), got {url:?}"
        )))
    }
}

fn nonempty(what: &str, v: &str) -> Result<String, IdpError> {
    let v = v.trim();
    if v.is_empty() {
        Err(IdpError::Config(format!("{what} must not be empty")))
    } else {
        Ok(v.to_owned())
    }
}

/// Asymmetric algorithms by name; HS256 is refused (a JWKS issuer has no shared secret, and
/// allowing it invites HS/RS confusion).
fn asymmetric(what: &str, names: &[String]) -> Result<Vec<Alg>, IdpError> {
    if names.is_empty() {
        return Err(IdpError::Config(format!("{what}: no algorithm allowed")));
    }
    names
        .iter()
        .map(|n| match Alg::parse(n) {
            Some(Alg::HS256) | None => Err(IdpError::Config(format!(
                "{what}: {n:?} is not allowed (use RS256, ES256 or EdDSA)"
            ))),
            Some(a) => Ok(a),
        })
        .collect()
}

fn jwks_profile(
    provider: Provider,
    issuer: String,
    audience: Option<&str>,
    algorithms: Vec<Alg>,
    keys: Keys,
    rules: ClaimRules,
) -> IssuerProfile {
    let mut validation = Validation::new(Some(&issuer), audience.unwrap_or_default());
    if audience.is_none() {
        validation.audiences.clear();
        validation.require_audience = false;
    }
    IssuerProfile {
        provider,
        issuer: IssuerMatch::Exact(issuer),
        algorithms,
        static_keys: KeySet::default(),
        keys,
        validation,
        rules,
    }
}

/// A Firebase project (ID tokens from the client SDKs' `getIdToken()`).
///
/// Issuer `https://securetoken.google.com/<project_id>`, audience the project id, RS256 keys
/// from Google's JWKS; `auth_time` must be in the past and `sub` non-empty. Roles come from
/// custom claims `role` and `roles` unless `role_claims` says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirebaseConfig {
    /// The Firebase project id.
    pub project_id: String,
    /// Override of Google's JWKS URL (for emulators and tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Claims that carry roles. Default `["role", "roles"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_claims: Option<Vec<String>>,
}

impl FirebaseConfig {
    /// The issuer profile for this project.
    pub fn profile(&self) -> Result<IssuerProfile, IdpError> {
        let project = nonempty("firebase project_id", &self.project_id)?;
        if !project
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(IdpError::Config(format!(
                "firebase project_id {project:?} is not a project id (lowercase letters, digits, '-')"
            )));
        }
        let jwks = checked_url(
            "firebase jwks_url",
            self.jwks_url.as_deref().unwrap_or(FIREBASE_JWKS_URL),
        )?;
        Ok(jwks_profile(
            Provider::Firebase,
            format!("https://securetoken.google.com/{project}"),
            Some(&project),
            vec![Alg::RS256],
            Keys::Jwks(jwks),
            ClaimRules {
                role_claims: self
                    .role_claims
                    .clone()
                    .unwrap_or_else(|| vec!["role".into(), "roles".into()]),
                require_auth_time: true,
                ..ClaimRules::default()
            },
        ))
    }
}

/// An Auth0 tenant (access tokens for one API).
///
/// Issuer `https://<domain>/` (with the trailing slash Auth0 uses), audience the API
/// identifier, RS256 keys from `https://<domain>/.well-known/jwks.json`. Roles: the claims
/// in `role_claims`, else every namespaced claim ending in `/roles` (what an Auth0 Action
/// adds with `api.accessToken.setCustomClaim('https://your.app/roles', …)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth0Config {
    /// The tenant or custom domain (`your-tenant.eu.auth0.com`), or its full `https://` URL.
    pub domain: String,
    /// The API identifier the tokens are for.
    pub audience: String,
    /// Claims that carry roles. Default: every `…/roles` namespaced claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_claims: Option<Vec<String>>,
}

impl Auth0Config {
    /// The issuer profile for this tenant.
    pub fn profile(&self) -> Result<IssuerProfile, IdpError> {
        let domain = nonempty("auth0 domain", &self.domain)?;
        let base = if domain.contains("://") {
            checked_url("auth0 domain", &domain)?
        } else {
            checked_url("auth0 domain", &format!("https://{domain}"))?
        };
        let audience = nonempty("auth0 audience", &self.audience)?;
        Ok(jwks_profile(
            Provider::Auth0,
            format!("{base}/"),
            Some(&audience),
            vec![Alg::RS256],
            Keys::Jwks(format!("{base}/.well-known/jwks.json")),
            ClaimRules {
                namespaced_roles: self.role_claims.is_none(),
                role_claims: self.role_claims.clone().unwrap_or_default(),
                ..ClaimRules::default()
            },
        ))
    }
}

/// A Clerk instance (session tokens from `getToken()`).
///
/// Issuer: the instance's Frontend API URL; RS256 keys from `<issuer>/.well-known/jwks.json`.
/// Session tokens carry no `aud`; `azp` (the origin that asked for the token) must be one of
/// `authorized_parties`. Roles: `org_role`, `o.rol`, `role`, `roles` unless `role_claims`
/// says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClerkConfig {
    /// The Frontend API URL, e.g. `https://clerk.your-app.com` or
    /// `https://your-app.clerk.accounts.dev`.
    pub issuer: String,
    /// Origins allowed in `azp`. Required: a Clerk token minted for another site is refused.
    pub authorized_parties: Vec<String>,
    /// An audience to require, for JWT templates that set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Claims that carry roles. Default `["org_role", "o.rol", "role", "roles"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_claims: Option<Vec<String>>,
}

impl ClerkConfig {
    /// The issuer profile for this instance.
    pub fn profile(&self) -> Result<IssuerProfile, IdpError> {
        let issuer = checked_url("clerk issuer", &self.issuer)?;
        if self.authorized_parties.is_empty() {
            return Err(IdpError::Config(
                "clerk authorized_parties must list the origins of your app (checked against azp)"
                    .into(),
            ));
        }
        let parties = self
            .authorized_parties
            .iter()
            .map(|p| {
                nonempty("clerk authorized_parties", p).map(|p| p.trim_end_matches('/').to_owned())
            })
            .collect::<Result<_, _>>()?;
        Ok(jwks_profile(
            Provider::Clerk,
            issuer.clone(),
            self.audience.as_deref(),
            vec![Alg::RS256],
            Keys::Jwks(format!("{issuer}/.well-known/jwks.json")),
            ClaimRules {
                role_claims: self.role_claims.clone().unwrap_or_else(|| {
                    ["org_role", "o.rol", "role", "roles"]
                        .map(String::from)
                        .to_vec()
                }),
                authorized_parties: parties,
                ..ClaimRules::default()
            },
        ))
    }
}

/// Any OpenID Connect issuer: keys found through `<issuer>/.well-known/openid-configuration`
/// (or a fixed `jwks_url`), tokens for `audience`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL exactly as it appears in `iss`.
    pub issuer: String,
    /// The audience tokens must carry (a client id or an API resource).
    pub audience: String,
    /// Allowed algorithms. Default `["RS256", "ES256"]`; HS256 is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<String>>,
    /// Skip discovery and fetch keys from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Claims that carry roles. Default `["roles"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_claims: Option<Vec<String>>,
}

impl OidcConfig {
    /// The issuer profile for this issuer.
    pub fn profile(&self) -> Result<IssuerProfile, IdpError> {
        // the issuer is matched exactly as configured (a trailing slash is significant)
        checked_url("oidc issuer", &self.issuer)?;
        let issuer = self.issuer.trim().to_owned();
        let audience = nonempty("oidc audience", &self.audience)?;
        let algorithms = match &self.algorithms {
            Some(names) => asymmetric("oidc algorithms", names)?,
            None => vec![Alg::RS256, Alg::ES256],
        };
        let keys = match &self.jwks_url {
            Some(u) => Keys::Jwks(checked_url("oidc jwks_url", u)?),
            None => Keys::Discovery(super::discovery_url(&issuer)),
        };
        Ok(jwks_profile(
            Provider::Oidc,
            issuer,
            Some(&audience),
            algorithms,
            keys,
            ClaimRules {
                role_claims: self
                    .role_claims
                    .clone()
                    .unwrap_or_else(|| vec!["roles".into()]),
                ..ClaimRules::default()
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_must_be_https_or_loopback_http() {
        assert_eq!(
            checked_url("x", "https://a.example/").unwrap(),
            "https://a.example"
        );
        assert!(checked_url("x", "http://127.0.0.1:8080/p").is_ok());
        assert!(checked_url("x", "http://localhost:1").is_ok());
        for bad in [
            "http://a.example",
            "ftp://a",
            "a.example",
            "https://",
            "http://127.0.0.1.evil.example",
        ] {
            assert!(checked_url("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn oidc_refuses_symmetric_and_unknown_algorithms() {
        let mut c = OidcConfig {
            issuer: "https://idp.example".into(),
            audience: "app".into(),
            algorithms: Some(vec!["HS256".into()]),
            jwks_url: None,
            role_claims: None,
        };
        assert!(c.profile().is_err());
        c.algorithms = Some(vec!["none".into()]);
        assert!(c.profile().is_err());
        c.algorithms = Some(vec![]);
        assert!(c.profile().is_err());
        c.algorithms = None;
        assert_eq!(c.profile().unwrap().algorithms(), [Alg::RS256, Alg::ES256]);
    }

    #[test]
    fn bad_configurations_are_reported() {
        let fb = |p: &str| FirebaseConfig {
            project_id: p.into(),
            jwks_url: None,
            role_claims: None,
        };
        assert!(fb("").profile().is_err());
        assert!(fb("My Project").profile().is_err());
        assert_eq!(
            fb("demo-1").profile().unwrap().issuer(),
            "https://securetoken.google.com/demo-1"
        );
        let a0 = Auth0Config {
            domain: "t.eu.auth0.com".into(),
            audience: "api".into(),
            role_claims: None,
        };
        let p = a0.profile().unwrap();
        assert_eq!(p.issuer(), "https://t.eu.auth0.com/");
        assert_eq!(
            p.jwks_url(),
            Some("https://t.eu.auth0.com/.well-known/jwks.json")
        );
        assert!(Auth0Config {
            audience: " ".into(),
            ..a0
        }
        .profile()
        .is_err());
        let clerk = ClerkConfig {
            issuer: "https://clerk.app.example".into(),
            authorized_parties: vec![],
            audience: None,
            role_claims: None,
        };
        assert!(clerk.profile().is_err(), "Clerk without authorized parties");
    }
}
