//! One JWS verification path for every token CloudSignal accepts (`tkn_` tokens and IdP JWTs).
//!
//! Hardening follows RFC 8725 (JWT Best Current Practices). Before any cryptography:
//! the token's length is capped; it must have exactly three base64url segments (a five-segment
//! JWE is refused as such); header and payload must be JSON objects **without duplicate
//! keys**; a `crit` header is refused (no extensions are understood); `alg` must be in the
//! caller's allow-list, so `none` can never pass. The key is then chosen by `kid` and must
//! itself be pinned to the header's algorithm ([`crate::keys::KeyEntry`]): an RSA or EC public
//! key can never be used as an HMAC secret. `jku`, `x5u` and `jwk` headers are never fetched
//! or trusted. Registered claims are checked by [`Validation`] with the time passed in.

use crate::keys::{Alg, KeyEntry};
use crate::time::UnixTime;
use base64ct::{Base64UrlUnpadded, Encoding};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::cell::OnceCell;

/// Default cap on a token's length in bytes. IdP tokens with many claims stay well below it.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;

/// Why a JWS was refused. Variants are ordered roughly by the stage that detects them.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum JwsError {
    /// Longer than the configured cap (checked before decoding anything).
    #[error("token is longer than {0} bytes")]
    TooLong(usize),
    /// Five segments: an encrypted JWT (JWE), which is never accepted as a credential.
    #[error("encrypted JWTs (JWE) are not accepted")]
    Encrypted,
    /// Not three base64url segments, or header/payload not JSON objects.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// A JSON object in the header or payload repeats a key (RFC 8725 §3.9 ambiguity).
    #[error("duplicate JSON key in token {0}")]
    DuplicateKey(&'static str),
    /// The header carries `crit`, naming extensions this verifier does not implement (RFC 7515 §4.1.11).
    #[error("critical header extensions are not supported")]
    CriticalHeader,
    /// `alg` is not in this issuer's allow-list (this includes `none`).
    #[error("algorithm {0:?} is not allowed")]
    AlgorithmNotAllowed(String),
    /// The header's `typ` is not the one required (cross-JWT confusion defence, RFC 8725 §3.11).
    #[error("token type {} is not accepted here", .0.as_deref().map_or("(none)".to_owned(), |t| format!("{t:?}")))]
    WrongType(Option<String>),
    /// No trusted key has this `kid` and algorithm.
    #[error("no trusted key for {}", describe_kid(.0.as_deref()))]
    UnknownKey(Option<String>),
    /// The signature does not verify under the selected key.
    #[error("signature does not verify")]
    BadSignature,
    /// Claims are not valid JSON of the right types (e.g. `exp` as a string).
    #[error("malformed claims: {0}")]
    MalformedClaims(String),
    /// A required claim is missing.
    #[error("missing claim {0}")]
    MissingClaim(&'static str),
    /// `exp` (plus leeway) is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` (minus leeway) is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` (minus leeway) is in the future.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `iss` is not the expected issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not contain an accepted audience.
    #[error("wrong audience")]
    WrongAudience,
}

/// A JSON value parsed in one pass that fails on any object repeating a key.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(DUPLICATE));
            }
            let Strict(value) = map.next_value()?;
            out.insert(key, value);
        }
        Ok(Strict(Value::Object(out)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Strict(Value::Array(out)))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }
}

const DUPLICATE: &str = "duplicate key";

/// Parses `bytes` as a JSON object without duplicate keys (`what` names the part for errors).
fn parse_object(bytes: &[u8], what: &'static str) -> Result<Map<String, Value>, JwsError> {
    match serde_json::from_slice::<Strict>(bytes) {
        Ok(Strict(Value::Object(m))) => Ok(m),
        Ok(_) => Err(JwsError::Malformed(what)),
        Err(e) if e.to_string().starts_with(DUPLICATE) => Err(JwsError::DuplicateKey(what)),
        Err(_) => Err(JwsError::Malformed(what)),
    }
}

fn decode_object(segment: &str, what: &'static str) -> Result<Map<String, Value>, JwsError> {
    let bytes = Base64UrlUnpadded::decode_vec(segment).map_err(|_| JwsError::Malformed(what))?;
    parse_object(&bytes, what)
}

/// A token that passed the structural checks but whose signature is not yet verified.
/// Only [`Inspected::algorithm`], [`Inspected::kid`] and [`Inspected::unverified_claim`] may
/// be read, to route the token to its issuer and key.
#[derive(Debug)]
pub struct Inspected<'a> {
    signing_input: &'a str,
    payload: Vec<u8>,
    signature: Vec<u8>,
    alg: Alg,
    kid: Option<String>,
    typ: Option<String>,
    /// The payload parsed as JWT claims, once, on first use (routing, checks, verification).
    claims: OnceCell<Result<Map<String, Value>, JwsError>>,
}

impl<'a> Inspected<'a> {
    /// Structural checks of a compact JWS, with `allowed` as the algorithm allow-list. The
    /// payload is only base64-decoded here; JWT claims are parsed by [`Inspected::verify`].
    pub fn parse(token: &'a str, max_len: usize, allowed: &[Alg]) -> Result<Self, JwsError> {
        if token.len() > max_len {
            return Err(JwsError::TooLong(max_len));
        }
        let segments: Vec<&str> = token.split('.').collect();
        match segments.len() {
            3 => {}
            5 => return Err(JwsError::Encrypted),
            _ => return Err(JwsError::Malformed("token must have three segments")),
        }
        let header = decode_object(segments[0], "header")?;
        let payload = Base64UrlUnpadded::decode_vec(segments[1])
            .map_err(|_| JwsError::Malformed("payload"))?;
        let signature = Base64UrlUnpadded::decode_vec(segments[2])
            .map_err(|_| JwsError::Malformed("signature"))?;
        if header.contains_key("crit") {
            return Err(JwsError::CriticalHeader);
        }
        if header.contains_key("b64") {
            // RFC 7797 unencoded payloads are an extension this verifier does not implement
            return Err(JwsError::CriticalHeader);
        }
        let alg_name = match header.get("alg") {
            Some(Value::String(s)) => s.as_str(),
            _ => return Err(JwsError::Malformed("header alg")),
        };
        let alg = Alg::parse(alg_name)
            .filter(|a| allowed.contains(a))
            .ok_or_else(|| JwsError::AlgorithmNotAllowed(alg_name.to_owned()))?;
        let opt_str = |name: &'static str| match header.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(JwsError::Malformed(name)),
        };
        let kid = opt_str("kid")?;
        let typ = opt_str("typ")?;
        let signing_input = &token[..segments[0].len() + 1 + segments[1].len()];
        Ok(Self {
            signing_input,
            payload,
            signature,
            alg,
            kid,
            typ,
            claims: OnceCell::new(),
        })
    }

    /// The header's algorithm (already checked against the allow-list).
    pub fn algorithm(&self) -> Alg {
        self.alg
    }

    /// The header's `kid`, if any. Only ever used as a map key.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The header's `typ`, if any.
    pub fn typ(&self) -> Option<&str> {
        self.typ.as_deref()
    }

    /// A claim read **before** the signature is checked: only for routing (e.g. `iss` selects
    /// the issuer profile, whose own keys then verify the token). `None` when the payload is
    /// not a JSON object or lacks the claim.
    pub fn unverified_claim(&self, name: &str) -> Option<Value> {
        self.claims().ok()?.get(name).cloned()
    }

    /// Checks, before any cryptography, that the payload is a JWT claims set: a JSON object
    /// without duplicate keys.
    pub fn require_claims_object(&self) -> Result<(), JwsError> {
        self.claims().map(|_| ())
    }

    fn claims(&self) -> Result<&Map<String, Value>, JwsError> {
        self.claims
            .get_or_init(|| parse_object(&self.payload, "payload"))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Verifies only the signature with `key` (pinned to the header's algorithm) and returns
    /// the payload bytes: the JWS layer, without any JWT claim semantics.
    pub fn verify_signature(&self, key: &KeyEntry) -> Result<&[u8], JwsError> {
        if key.alg() != self.alg {
            return Err(JwsError::UnknownKey(self.kid.clone()));
        }
        if key
            .key()
            .verify_raw(self.signing_input.as_bytes(), &self.signature)
        {
            Ok(&self.payload)
        } else {
            Err(JwsError::BadSignature)
        }
    }

    /// The JWS signing input and the decoded signature, for a signature check made outside
    /// this crate (the worker asks the runtime's WebCrypto, native code, for ES256 and RS256);
    /// its outcome goes to [`Inspected::verify_checked`].
    pub fn signed_parts(&self) -> (&[u8], &[u8]) {
        (self.signing_input.as_bytes(), &self.signature)
    }

    /// Verifies the signature with `key` and the registered claims with `validation`.
    pub fn verify(
        self,
        key: &KeyEntry,
        validation: &Validation,
        now: UnixTime,
    ) -> Result<VerifiedJwt, JwsError> {
        self.verify_signature(key)?;
        self.verify_claims(validation, now)
    }

    /// [`Inspected::verify`] for a signature already checked by the caller over
    /// [`Inspected::signed_parts`] with `key`: `signature_valid` is that check's outcome. The
    /// key is still pinned to the header's algorithm here, and every claim is checked.
    pub fn verify_checked(
        self,
        key: &KeyEntry,
        signature_valid: bool,
        validation: &Validation,
        now: UnixTime,
    ) -> Result<VerifiedJwt, JwsError> {
        if key.alg() != self.alg {
            return Err(JwsError::UnknownKey(self.kid.clone()));
        }
        if !signature_valid {
            return Err(JwsError::BadSignature);
        }
        self.verify_claims(validation, now)
    }

    /// The claims half of verification, once the signature is known good.
    fn verify_claims(
        self,
        validation: &Validation,
        now: UnixTime,
    ) -> Result<VerifiedJwt, JwsError> {
        let mut claims = match self.claims.into_inner() {
            Some(parsed) => parsed?,
            None => parse_object(&self.payload, "payload")?,
        };
        let mut time = |name: &'static str| -> Result<Option<UnixTime>, JwsError> {
            match claims.remove(name) {
                None => Ok(None),
                Some(Value::Number(n)) => {
                    // NumericDate: seconds, possibly fractional (RFC 7519 §2)
                    let secs = n
                        .as_u64()
                        .or_else(|| {
                            n.as_f64()
                                .filter(|f| *f >= 0.0 && f.is_finite())
                                .map(|f| f as u64)
                        })
                        .ok_or_else(|| JwsError::MalformedClaims(name.into()))?;
                    Ok(Some(UnixTime(secs)))
                }
                Some(_) => Err(JwsError::MalformedClaims(name.into())),
            }
        };
        let verified = VerifiedJwt {
            alg: self.alg,
            exp: time("exp")?,
            nbf: time("nbf")?,
            iat: time("iat")?,
            kid: self.kid,
            claims,
        };
        validation.check(&verified, now)?;
        Ok(verified)
    }
}

/// A JWT whose signature and registered claims have been verified.
#[derive(Debug, Clone)]
pub struct VerifiedJwt {
    /// The algorithm that verified it.
    pub alg: Alg,
    /// The key id that verified it.
    pub kid: Option<String>,
    /// `exp`.
    pub exp: Option<UnixTime>,
    /// `nbf`.
    pub nbf: Option<UnixTime>,
    /// `iat`.
    pub iat: Option<UnixTime>,
    /// Every other claim.
    pub claims: Map<String, Value>,
}

impl VerifiedJwt {
    /// A string claim, or `None` when absent or not a string.
    pub fn str_claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }
}

/// Registered-claim rules for one issuer. Every field documents its default and why.
#[derive(Debug, Clone)]
pub struct Validation {
    /// Exact `iss` required. `None` skips the check: only for keys that are themselves unique
    /// to one issuer (a Supabase legacy project secret), never for a shared JWKS.
    pub issuer: Option<String>,
    /// `aud` must equal (or, as an array, contain) one of these. Never empty in practice:
    /// accepting any audience lets a token minted for another service in.
    pub audiences: Vec<String>,
    /// Clock-skew allowance in seconds for `exp`, `nbf` and `iat`. Default 30.
    pub leeway: u64,
    /// `exp` must be present. Default `true`; a token without expiry is never a credential.
    pub require_exp: bool,
    /// Required header `typ`, compared case-insensitively. `None` accepts any or none.
    pub required_typ: Option<String>,
    /// `aud` must be present. Default `true`. Only a profile that binds tokens to their
    /// audience another way (Clerk session tokens carry none; `azp` is checked instead) turns
    /// it off; an `aud` that is present is still checked against `audiences`, if any.
    pub require_audience: bool,
}

impl Validation {
    /// Rules for `issuer` and `audience` with the defaults above.
    pub fn new(issuer: Option<&str>, audience: &str) -> Self {
        Self {
            issuer: issuer.map(str::to_owned),
            audiences: vec![audience.to_owned()],
            leeway: 30,
            require_exp: true,
            required_typ: None,
            require_audience: true,
        }
    }

    /// Checks the header type before any cryptography.
    pub fn check_typ(&self, inspected: &Inspected<'_>) -> Result<(), JwsError> {
        match &self.required_typ {
            Some(want)
                if !inspected
                    .typ()
                    .is_some_and(|t| t.eq_ignore_ascii_case(want)) =>
            {
                Err(JwsError::WrongType(inspected.typ.clone()))
            }
            _ => Ok(()),
        }
    }

    fn check(&self, jwt: &VerifiedJwt, now: UnixTime) -> Result<(), JwsError> {
        match jwt.exp {
            Some(exp) if now >= exp.plus(self.leeway) => return Err(JwsError::Expired),
            None if self.require_exp => return Err(JwsError::MissingClaim("exp")),
            _ => {}
        }
        if jwt.nbf.is_some_and(|nbf| now.plus(self.leeway) < nbf) {
            return Err(JwsError::NotYetValid);
        }
        if jwt.iat.is_some_and(|iat| now.plus(self.leeway) < iat) {
            return Err(JwsError::IssuedInFuture);
        }
        if let Some(want) = &self.issuer {
            match jwt.claims.get("iss") {
                Some(Value::String(iss)) if iss == want => {}
                Some(Value::String(_)) => return Err(JwsError::WrongIssuer),
                None => return Err(JwsError::MissingClaim("iss")),
                Some(_) => return Err(JwsError::MalformedClaims("iss".into())),
            }
        }
        let accepted = |a: &str| self.audiences.iter().any(|w| w == a);
        if !self.require_audience && (self.audiences.is_empty() || !jwt.claims.contains_key("aud"))
        {
            return Ok(());
        }
        match jwt.claims.get("aud") {
            Some(Value::String(a)) if accepted(a) => Ok(()),
            Some(Value::Array(list)) if list.iter().any(|a| a.as_str().is_some_and(accepted)) => {
                Ok(())
            }
            Some(Value::String(_) | Value::Array(_)) => Err(JwsError::WrongAudience),
            None => Err(JwsError::MissingClaim("aud")),
            Some(_) => Err(JwsError::MalformedClaims("aud".into())),
        }
    }
}

/// `kid "x"`, or `a token without kid`, for error messages.
fn describe_kid(kid: Option<&str>) -> String {
    match kid {
        Some(k) => format!("kid {k:?}"),
        None => "a token without kid".to_owned(),
    }
}
