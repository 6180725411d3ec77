//! `tkn_` tokens: CloudSignal's short-lived, per-user MQTT credentials.
//!
//! A token is `tkn_` followed by a compact JWS signed with Ed25519 (`alg: EdDSA`, `kid` and
//! `typ: tkn+jwt` in the header). Claims: `iss`, `sub`, `org`, `aud = "mqtt"`, `iat`, `nbf`,
//! `exp`, `jti` and `acl` (`{"pub": [...], "sub": [...]}`). Anyone holding the issuer's JWKS
//! can verify one; the broker additionally binds it to the MQTT username `sub@org`.
//!
//! ```
//! use cloudsignal_core::{keys::SigningKey, token::*, acl::AclRules, UnixTime};
//! use cloudsignal_core::ids::{OrgId, UserId};
//!
//! let key = SigningKey::from_seed("k1", [7; 32]);
//! let now = UnixTime(1_800_000_000);
//! let claims = TokenClaims::new(
//!     "https://auth.example",
//!     UserId::parse("alice").unwrap(),
//!     OrgId::parse("org_k7xm4pqr2n5t").unwrap(),
//!     AclRules::new(["users/alice/#"], ["users/alice/#"]).unwrap(),
//!     now,
//!     3600,
//!     Jti::from_random([1; 16]),
//! );
//! let token = issue(&claims, &key);
//! let mut verifier = TokenVerifier::default();
//! verifier.trust("https://auth.example", [key.verifying_entry()]);
//! let ok = verifier.verify(&token, "alice@org_k7xm4pqr2n5t", now).unwrap();
//! assert_eq!(ok.claims.sub.as_str(), "alice");
//! assert!(verifier.verify(&token, "bob@org_k7xm4pqr2n5t", now).is_err());
//! ```

use crate::acl::AclRules;
use crate::ids::{OrgId, UserId, Username};
use crate::jws::{Inspected, JwsError, Validation, DEFAULT_MAX_TOKEN_LEN};
use crate::keys::{Alg, KeyEntry, KeySet, SigningKey};
use crate::time::UnixTime;
use jwt_compact::Claims;
use serde::{Deserialize, Serialize};

/// Every token starts with this prefix, so secret scanners and humans can recognise it.
pub const TOKEN_PREFIX: &str = "tkn_";
/// The JOSE header `typ` of a `tkn_` token. Required on verification, so an IdP JWT (or any
/// other JWT signed by a trusted key) can never be presented as a `tkn_` token.
pub const TOKEN_TYP: &str = "tkn+jwt";
/// The audience of every `tkn_` token.
pub const TOKEN_AUDIENCE: &str = "mqtt";

/// A token identifier (`jti`): 128 random bits, hex-encoded. Revocation is keyed by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Jti(String);

impl Jti {
    /// A jti from 16 random bytes (adapters draw them from their CSPRNG).
    pub fn from_random(bytes: [u8; 16]) -> Self {
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }
    /// The jti as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The claims of a `tkn_` token other than the time claims (which travel as `iat`, `nbf` and
/// `exp` and are kept in [`TokenClaims`] as [`UnixTime`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Body {
    iss: String,
    sub: UserId,
    org: OrgId,
    aud: String,
    jti: Jti,
    acl: AclRules,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
}

/// Everything a `tkn_` token asserts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// Issuer (`iss`): the worker's or control plane's URL.
    pub iss: String,
    /// Subject (`sub`): the user id.
    pub sub: UserId,
    /// Organisation (`org`).
    pub org: OrgId,
    /// Issued at (`iat`).
    pub iat: UnixTime,
    /// Not before (`nbf`).
    pub nbf: UnixTime,
    /// Expiry (`exp`).
    pub exp: UnixTime,
    /// Token id (`jti`).
    pub jti: Jti,
    /// The ACL (`acl`), templates `{user}`/`{org}` resolved, `{client_id}` resolved at connect.
    pub acl: AclRules,
    /// If set, the token is only valid for this MQTT client id.
    pub client_id: Option<String>,
}

impl TokenClaims {
    /// Claims for `sub` in `org`, valid from `now` for `ttl` seconds.
    pub fn new(
        iss: &str,
        sub: UserId,
        org: OrgId,
        acl: AclRules,
        now: UnixTime,
        ttl: u64,
        jti: Jti,
    ) -> Self {
        Self {
            iss: iss.to_owned(),
            sub,
            org,
            iat: now,
            nbf: now,
            exp: now.plus(ttl),
            jti,
            acl,
            client_id: None,
        }
    }

    /// The MQTT username this token is bound to: `sub@org`.
    pub fn username(&self) -> String {
        format!("{}@{}", self.sub, self.org)
    }
}

fn to_datetime(t: UnixTime) -> chrono::DateTime<chrono::Utc> {
    let secs = i64::try_from(t.secs()).unwrap_or(i64::MAX / 1000);
    chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// Signs `claims` into a `tkn_` token.
pub fn issue(claims: &TokenClaims, key: &SigningKey) -> String {
    let mut jwt = Claims::new(Body {
        iss: claims.iss.clone(),
        sub: claims.sub.clone(),
        org: claims.org.clone(),
        aud: TOKEN_AUDIENCE.to_owned(),
        jti: claims.jti.clone(),
        acl: claims.acl.clone(),
        client_id: claims.client_id.clone(),
    });
    jwt.issued_at = Some(to_datetime(claims.iat));
    jwt.not_before = Some(to_datetime(claims.nbf));
    jwt.expiration = Some(to_datetime(claims.exp));
    format!("{TOKEN_PREFIX}{}", key.sign(TOKEN_TYP, &jwt))
}

/// Why a `tkn_` token was refused. The cause is for logs; clients only learn "not authorized".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The password does not start with `tkn_`.
    #[error("not a tkn_ token")]
    MissingPrefix,
    /// The JWS failed a structural, cryptographic or time check.
    #[error(transparent)]
    Jws(#[from] JwsError),
    /// `iss` names no trusted issuer.
    #[error("untrusted issuer")]
    UntrustedIssuer,
    /// The issuer may not mint tokens for the token's `org` (orgs are tenants: an org bound to
    /// some issuers is accepted only from them, see [`TokenVerifier::bind_orgs`]).
    #[error("issuer may not issue tokens for org {0}")]
    ForeignOrg(String),
    /// The claims are not a `tkn_` token's claims (missing `org`, bad `acl`, …).
    #[error("malformed tkn_ claims: {0}")]
    BadClaims(String),
    /// The MQTT username is not `sub@org` of the token.
    #[error("username does not match the token's sub@org")]
    UsernameMismatch,
    /// The token is bound to another MQTT client id.
    #[error("token is bound to another client id")]
    ClientIdMismatch,
}

/// A token that verified, with its claims.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// The verified claims.
    pub claims: TokenClaims,
    /// The key id that verified it.
    pub kid: String,
}

/// Longest lifetime (`exp - iat`) a `tkn_` token may have: 24 hours, the issuers' hard maximum
/// ([`crate::exchange::MAX_TTL`]).
pub const MAX_LIFETIME: u64 = crate::exchange::MAX_TTL;

/// Verifies `tkn_` tokens against the keys of trusted issuers.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    issuers: Vec<(String, KeySet)>,
    /// Orgs each bound issuer may issue for (issuers absent here are unbound).
    bound: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    /// Clock-skew allowance in seconds. Default 30.
    pub leeway: u64,
    /// Maximum token length in bytes. Default 8 KiB.
    pub max_len: usize,
}

impl Default for TokenVerifier {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            bound: std::collections::BTreeMap::new(),
            leeway: 30,
            max_len: DEFAULT_MAX_TOKEN_LEN,
        }
    }
}

impl TokenVerifier {
    /// Trusts `keys` for tokens whose `iss` is `issuer` (replacing earlier keys for it).
    pub fn trust(&mut self, issuer: &str, keys: impl IntoIterator<Item = KeyEntry>) {
        let set = KeySet::new(keys.into_iter().collect());
        self.issuers.retain(|(iss, _)| iss != issuer);
        self.issuers.push((issuer.to_owned(), set));
    }

    /// Binds `issuer` to `orgs` (replacing an earlier binding): its tokens are accepted only for
    /// those orgs, and those orgs' tokens only from the issuers bound to them. An issuer that is
    /// never bound may issue for any org no issuer is bound to. An org is a tenant, so this is
    /// what keeps one issuer (a worker, a partner's backend) from minting its way into another
    /// tenant's topics.
    pub fn bind_orgs(&mut self, issuer: &str, orgs: impl IntoIterator<Item = String>) {
        self.bound
            .insert(issuer.to_owned(), orgs.into_iter().collect());
    }

    /// Whether `issuer` may issue tokens for `org` (see [`Self::bind_orgs`]).
    pub fn may_issue(&self, issuer: &str, org: &str) -> bool {
        match self.bound.get(issuer) {
            Some(orgs) => orgs.contains(org),
            None => !self.bound.values().any(|orgs| orgs.contains(org)),
        }
    }

    /// Verifies `password` as a `tkn_` token for MQTT `username` at time `now`.
    pub fn verify(
        &self,
        password: &str,
        username: &str,
        now: UnixTime,
    ) -> Result<VerifiedToken, TokenError> {
        let verified = self.verify_unbound(password, now)?;
        match Username::parse(username) {
            Ok(u) if u.user == verified.claims.sub && u.org == verified.claims.org => Ok(verified),
            _ => Err(TokenError::UsernameMismatch),
        }
    }

    /// Verifies a token without binding it to a username (for tools that inspect tokens).
    pub fn verify_unbound(
        &self,
        password: &str,
        now: UnixTime,
    ) -> Result<VerifiedToken, TokenError> {
        let jws = password
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenError::MissingPrefix)?;
        let inspected = Inspected::parse(jws, self.max_len, &[Alg::EdDSA])?;
        inspected.require_claims_object()?;
        let mut validation = Validation::new(None, TOKEN_AUDIENCE);
        validation.leeway = self.leeway;
        validation.required_typ = Some(TOKEN_TYP.to_owned());
        validation.check_typ(&inspected)?;
        let iss = inspected
            .unverified_claim("iss")
            .and_then(|v| v.as_str().map(str::to_owned))
            .ok_or(JwsError::MissingClaim("iss"))?;
        let (issuer, keys) = self
            .issuers
            .iter()
            .find(|(i, _)| *i == iss)
            .ok_or(TokenError::UntrustedIssuer)?;
        validation.issuer = Some(issuer.clone());
        let kid = inspected
            .kid()
            .ok_or(JwsError::UnknownKey(None))?
            .to_owned();
        let key = keys
            .find(Some(&kid), Alg::EdDSA)
            .ok_or_else(|| JwsError::UnknownKey(Some(kid.clone())))?;
        let jwt = inspected.verify(key, &validation, now)?;
        let (Some(exp), Some(nbf), Some(iat)) = (jwt.exp, jwt.nbf, jwt.iat) else {
            return Err(TokenError::BadClaims(
                "iat, nbf and exp are required".into(),
            ));
        };
        // tkn_ tokens are short-lived by design; the cap is also what lets a revocation list
        // forget an entry once every token it could match has expired
        if exp.secs().saturating_sub(iat.secs()) > MAX_LIFETIME {
            return Err(TokenError::BadClaims(format!(
                "exp - iat exceeds the {MAX_LIFETIME} s maximum lifetime"
            )));
        }
        let body: Body = serde_json::from_value(serde_json::Value::Object(jwt.claims))
            .map_err(|e| TokenError::BadClaims(e.to_string()))?;
        if !self.may_issue(issuer, body.org.as_str()) {
            return Err(TokenError::ForeignOrg(body.org.as_str().to_owned()));
        }
        body.acl
            .validate()
            .map_err(|e| TokenError::BadClaims(e.to_string()))?;
        Ok(VerifiedToken {
            claims: TokenClaims {
                iss: body.iss,
                sub: body.sub,
                org: body.org,
                iat,
                nbf,
                exp,
                jti: body.jti,
                acl: body.acl,
                client_id: body.client_id,
            },
            kid,
        })
    }
}

impl TokenVerifier {
    /// Whether `kid` of `issuer` is still trusted (a cache of verified tokens re-checks this,
    /// so a key removed at rotation stops its tokens at once).
    pub fn trusts(&self, issuer: &str, kid: &str) -> bool {
        self.issuers
            .iter()
            .any(|(i, keys)| i == issuer && keys.find(Some(kid), Alg::EdDSA).is_some())
    }

    /// Re-checks what changes with time and binding for a token verified earlier: its time
    /// window (the same rule and leeway as [`Self::verify`]) and the username it is bound to.
    pub fn recheck(
        &self,
        token: &VerifiedToken,
        username: &str,
        now: UnixTime,
    ) -> Result<(), TokenError> {
        let c = &token.claims;
        if now >= c.exp.plus(self.leeway) {
            return Err(JwsError::Expired.into());
        }
        if now.plus(self.leeway) < c.nbf || now.plus(self.leeway) < c.iat {
            return Err(JwsError::NotYetValid.into());
        }
        if !self.trusts(&c.iss, &token.kid) {
            return Err(JwsError::UnknownKey(Some(token.kid.clone())).into());
        }
        if !self.may_issue(&c.iss, c.org.as_str()) {
            return Err(TokenError::ForeignOrg(c.org.as_str().to_owned()));
        }
        match Username::parse(username) {
            Ok(u) if u.user == c.sub && u.org == c.org => Ok(()),
            _ => Err(TokenError::UsernameMismatch),
        }
    }
}

impl VerifiedToken {
    /// Checks the token's client-id binding, if it has one, against the CONNECT's client id.
    pub fn check_client_id(&self, client_id: &str) -> Result<(), TokenError> {
        match &self.claims.client_id {
            Some(bound) if bound != client_id => Err(TokenError::ClientIdMismatch),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
