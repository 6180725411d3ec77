//! Keys with their algorithm pinned, key sets, and JWK / JWKS import and export.
//!
//! Every [`VerifyingKey`] knows the one algorithm it verifies; a token's `alg` header only
//! selects among keys and must equal the key's own algorithm. A JWKS fetched from the network
//! can only yield asymmetric keys (`RSA` ≥ 2048 bits → RS256, `EC` P-256 → ES256, `OKP`
//! Ed25519 → EdDSA); an HMAC secret only ever comes from configuration. That makes `alg: none`
//! and HS/RS confusion impossible by construction.

use ed25519_compact::{PublicKey as EdPublic, SecretKey as EdSecret, Seed};
use jwt_compact::alg::{Ed25519, Es256, Hs256, Hs256Key, Rsa, RsaPublicKey};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{Algorithm, AlgorithmExt, AlgorithmSignature, Claims, Header};
use p256::ecdsa::VerifyingKey as P256Public;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::fmt;

/// A JWS algorithm CloudSignal supports. `none` and every other name do not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// Ed25519 (`EdDSA`): CloudSignal's own `tkn_` tokens.
    EdDSA,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// HMAC SHA-256 (Supabase legacy project secret).
    HS256,
}

impl Alg {
    /// Parses a JWS `alg` name; unsupported names (including `none`) give `None`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "EdDSA" => Some(Self::EdDSA),
            "ES256" => Some(Self::ES256),
            "RS256" => Some(Self::RS256),
            "HS256" => Some(Self::HS256),
            _ => None,
        }
    }

    /// The JWS name.
    pub fn name(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
            Self::HS256 => "HS256",
        }
    }
}

/// Why a key could not be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The document is not JSON of the expected shape.
    #[error("invalid JWK/JWKS JSON: {0}")]
    Json(String),
    /// The key is not usable (bad curve, wrong length, weak RSA modulus…).
    #[error("unusable key{}: {reason}", kid.as_ref().map(|k| format!(" {k:?}")).unwrap_or_default())]
    Unusable {
        /// The key's `kid`.
        kid: Option<String>,
        /// Why.
        reason: String,
    },
    /// A signing key needs a `kid` so verifiers can find its public half.
    #[error("signing key has no kid")]
    MissingKid,
    /// An HMAC secret shorter than 32 bytes (RFC 7518 §3.2).
    #[error("HS256 secret must be at least 32 bytes")]
    WeakSecret,
}

/// A public (or, for HS256, shared) key that verifies exactly one algorithm.
#[derive(Clone)]
pub enum VerifyingKey {
    /// Ed25519 public key (EdDSA).
    EdDSA(EdPublic),
    /// P-256 public key (ES256).
    ES256(P256Public),
    /// RSA public key, at least 2048 bits (RS256).
    RS256(Box<RsaPublicKey>),
    /// HMAC secret (HS256). Never obtained from a JWKS.
    HS256(Hs256Key),
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // never print key material; HS256 keys are secrets
        write!(f, "VerifyingKey({})", self.alg().name())
    }
}

impl VerifyingKey {
    /// The one algorithm this key verifies.
    pub fn alg(&self) -> Alg {
        match self {
            Self::EdDSA(_) => Alg::EdDSA,
            Self::ES256(_) => Alg::ES256,
            Self::RS256(_) => Alg::RS256,
            Self::HS256(_) => Alg::HS256,
        }
    }

    /// An HS256 key from a configured secret (at least 32 bytes).
    pub fn hs256(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < 32 {
            return Err(KeyError::WeakSecret);
        }
        Ok(Self::HS256(Hs256Key::new(secret)))
    }

    /// Verifies `signature` over `message` (the JWS signing input) with this key's one
    /// algorithm. Signature length is checked before decoding.
    pub(crate) fn verify_raw(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::EdDSA(k) => check(&Ed25519, k, message, signature),
            Self::ES256(k) => check(&Es256, k, message, signature),
            Self::RS256(k) => check(&Rsa::rs256(), k.as_ref(), message, signature),
            Self::HS256(k) => check(&Hs256, k, message, signature),
        }
    }

    fn public_jwk(&self) -> Option<Value> {
        let jwk: JsonWebKey<'_> = match self {
            Self::EdDSA(k) => k.into(),
            Self::ES256(k) => k.into(),
            Self::RS256(k) => k.as_ref().into(),
            Self::HS256(_) => return None,
        };
        serde_json::to_value(jwk).ok()
    }
}

fn check<A: Algorithm>(alg: &A, key: &A::VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    if A::Signature::LENGTH.is_some_and(|len| signature.len() != len.get()) {
        return false;
    }
    A::Signature::try_from_slice(signature).is_ok_and(|s| alg.verify_signature(&s, key, message))
}

/// A key with its identifier.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    kid: Option<String>,
    key: VerifyingKey,
}

impl KeyEntry {
    /// A key with an optional `kid`.
    pub fn new(kid: Option<String>, key: VerifyingKey) -> Self {
        Self { kid, key }
    }
    /// The key id.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }
    /// The algorithm the key is pinned to.
    pub fn alg(&self) -> Alg {
        self.key.alg()
    }
    /// The key.
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The public key as a JWK (`kty`, curve or modulus, …), to import it elsewhere (WebCrypto);
    /// `None` for HS256 secrets, which are never published.
    pub fn public_jwk(&self) -> Option<Value> {
        self.key.public_jwk()
    }
}

/// A set of trusted keys (one issuer's JWKS, or configured secrets).
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<KeyEntry>,
}

/// A JWKS entry that was skipped on import, with the reason (for logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// The key's `kid`.
    pub kid: Option<String>,
    /// Why it was skipped.
    pub reason: String,
}

impl KeySet {
    /// A set from entries.
    pub fn new(keys: Vec<KeyEntry>) -> Self {
        Self { keys }
    }

    /// The keys.
    pub fn keys(&self) -> &[KeyEntry] {
        &self.keys
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Adds a key.
    pub fn push(&mut self, entry: KeyEntry) {
        self.keys.push(entry);
    }

    /// Finds the key for a token header: with a `kid`, the key with that id and algorithm;
    /// without one, the only key of that algorithm (ambiguity is refused).
    pub fn find(&self, kid: Option<&str>, alg: Alg) -> Option<&KeyEntry> {
        match kid {
            Some(kid) => {
                let by_kid = self
                    .keys
                    .iter()
                    .find(|k| k.kid() == Some(kid) && k.alg() == alg);
                // A kidless configured secret still serves tokens whose header names a kid
                // (Supabase legacy tokens may carry one), but only for its own algorithm.
                by_kid.or_else(|| {
                    self.keys
                        .iter()
                        .find(|k| k.kid().is_none() && k.alg() == alg && alg == Alg::HS256)
                })
            }
            None => {
                let mut candidates = self.keys.iter().filter(|k| k.alg() == alg);
                let first = candidates.next()?;
                candidates.next().is_none().then_some(first)
            }
        }
    }

    /// Imports a JWKS document (`{"keys": [...]}`), keeping the signature keys CloudSignal can
    /// use and reporting the others. Symmetric (`oct`) keys are always skipped.
    pub fn from_jwks_json(doc: &str) -> Result<(Self, Vec<SkippedKey>), KeyError> {
        let value: Value = serde_json::from_str(doc).map_err(|e| KeyError::Json(e.to_string()))?;
        let keys = value
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| KeyError::Json("missing \"keys\" array".into()))?;
        let mut set = Self::default();
        let mut skipped = Vec::new();
        for jwk in keys {
            match public_key_from_jwk(jwk) {
                Ok(entry) => set.push(entry),
                Err(KeyError::Unusable { kid, reason }) => skipped.push(SkippedKey { kid, reason }),
                Err(e) => skipped.push(SkippedKey {
                    kid: None,
                    reason: e.to_string(),
                }),
            }
        }
        Ok((set, skipped))
    }

    /// Exports the asymmetric keys as a JWKS document (HMAC secrets are never exported).
    pub fn to_jwks_json(&self) -> String {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .filter_map(|e| {
                let mut jwk = e.key.public_jwk()?;
                let obj = jwk.as_object_mut()?;
                if let Some(kid) = &e.kid {
                    obj.insert("kid".into(), json!(kid));
                }
                obj.insert("alg".into(), json!(e.alg().name()));
                obj.insert("use".into(), json!("sig"));
                Some(jwk)
            })
            .collect();
        json!({ "keys": keys }).to_string()
    }
}

fn str_field<'a>(jwk: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    jwk.get(name).and_then(Value::as_str)
}

/// Imports one public JWK from a JWKS, with its algorithm pinned.
pub(crate) fn public_key_from_jwk(jwk: &Value) -> Result<KeyEntry, KeyError> {
    let obj = jwk
        .as_object()
        .ok_or_else(|| KeyError::Json("JWK is not an object".into()))?;
    let kid = str_field(obj, "kid").map(str::to_owned);
    let unusable = |reason: &str| KeyError::Unusable {
        kid: kid.clone(),
        reason: reason.to_owned(),
    };
    if str_field(obj, "use").is_some_and(|u| u != "sig") {
        return Err(unusable("not a signature key (use != sig)"));
    }
    if let Some(ops) = obj.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o == "verify"));
        if !verifies {
            return Err(unusable("key_ops does not include verify"));
        }
    }
    let kty = str_field(obj, "kty").ok_or_else(|| unusable("missing kty"))?;
    let implied = match (kty, str_field(obj, "crv")) {
        ("RSA", _) => Alg::RS256,
        ("EC", Some("P-256")) => Alg::ES256,
        ("OKP", Some("Ed25519")) => Alg::EdDSA,
        ("oct", _) => return Err(unusable("symmetric keys are never taken from a JWKS")),
        _ => return Err(unusable("unsupported key type or curve")),
    };
    if let Some(alg) = str_field(obj, "alg") {
        if Alg::parse(alg) != Some(implied) {
            return Err(unusable(&format!("unsupported alg {alg} for kty {kty}")));
        }
    }
    let parsed: JsonWebKey<'_> =
        serde_json::from_value(jwk.clone()).map_err(|e| unusable(&e.to_string()))?;
    let key = match implied {
        Alg::RS256 => {
            let k = RsaPublicKey::try_from(&parsed).map_err(|e| unusable(&e.to_string()))?;
            if rsa_bits(&parsed) < 2048 {
                return Err(unusable("RSA modulus shorter than 2048 bits"));
            }
            VerifyingKey::RS256(Box::new(k))
        }
        Alg::ES256 => VerifyingKey::ES256(
            P256Public::try_from(&parsed).map_err(|e| unusable(&e.to_string()))?,
        ),
        Alg::EdDSA => {
            VerifyingKey::EdDSA(EdPublic::try_from(&parsed).map_err(|e| unusable(&e.to_string()))?)
        }
        Alg::HS256 => return Err(unusable("symmetric keys are never taken from a JWKS")),
    };
    Ok(KeyEntry::new(kid, key))
}

fn rsa_bits(jwk: &JsonWebKey<'_>) -> usize {
    match jwk {
        JsonWebKey::Rsa { modulus, .. } => {
            let m: &[u8] = modulus;
            let skip = m.iter().take_while(|b| **b == 0).count();
            let m = &m[skip..];
            m.first()
                .map_or(0, |b| (m.len() - 1) * 8 + (8 - b.leading_zeros() as usize))
        }
        _ => 0,
    }
}

/// CloudSignal's Ed25519 signing key with its `kid`. `Debug` never prints the secret.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    secret: EdSecret,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(kid={:?}, EdDSA, <redacted>)", self.kid)
    }
}

impl SigningKey {
    /// A key from a 32-byte seed (adapters draw it from their CSPRNG).
    pub fn from_seed(kid: impl Into<String>, seed: [u8; 32]) -> Self {
        let pair = ed25519_compact::KeyPair::from_seed(Seed::new(seed));
        Self {
            kid: kid.into(),
            secret: pair.sk,
        }
    }

    /// Imports a private Ed25519 JWK (`kty: OKP, crv: Ed25519, d, x, kid`), as stored in
    /// `CLOUDSIGNAL_SIGNING_KEY`.
    pub fn from_jwk_json(doc: &str) -> Result<Self, KeyError> {
        let value: Value = serde_json::from_str(doc).map_err(|e| KeyError::Json(e.to_string()))?;
        let kid = value
            .get("kid")
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
            .ok_or(KeyError::MissingKid)?
            .to_owned();
        let unusable = |reason: String| KeyError::Unusable {
            kid: Some(kid.clone()),
            reason,
        };
        let parsed: JsonWebKey<'_> =
            serde_json::from_value(value.clone()).map_err(|e| unusable(e.to_string()))?;
        let secret = EdSecret::try_from(&parsed).map_err(|e| unusable(e.to_string()))?;
        // the JWK's public half must belong to its private half
        if let JsonWebKey::KeyPair { x, .. } = &parsed {
            if x.as_ref() != &secret.public_key()[..] {
                return Err(unusable("x does not match d".into()));
            }
        }
        Ok(Self { kid, secret })
    }

    /// Exports the private JWK (for `cloudsignal keygen` and key files; handle as a secret).
    pub fn to_private_jwk_json(&self) -> String {
        let jwk: JsonWebKey<'_> = (&self.secret).into();
        let mut v = serde_json::to_value(jwk).unwrap_or(Value::Null);
        if let Some(obj) = v.as_object_mut() {
            obj.insert("kid".into(), json!(self.kid));
            obj.insert("alg".into(), json!("EdDSA"));
            obj.insert("use".into(), json!("sig"));
        }
        v.to_string()
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half, as a key-set entry.
    pub fn verifying_entry(&self) -> KeyEntry {
        KeyEntry::new(
            Some(self.kid.clone()),
            VerifyingKey::EdDSA(self.secret.public_key()),
        )
    }

    /// Signs claims as a compact JWS with `alg: EdDSA`, this key's `kid` and header `typ`.
    pub(crate) fn sign<T: Serialize>(&self, typ: &str, claims: &Claims<T>) -> String {
        let header = Header::empty()
            .with_key_id(self.kid.clone())
            .with_token_type(typ);
        DeterministicEd25519
            .token(&header, claims, &self.secret)
            .unwrap_or_default()
    }
}

/// RFC 8032 Ed25519 with deterministic signatures: the same key and claims always give the
/// same token (known-answer tests), and signing needs no random numbers at the edge.
/// (`jwt-compact`'s `Ed25519` adds random noise to each signature.) Verification is the same.
struct DeterministicEd25519;

impl jwt_compact::Algorithm for DeterministicEd25519 {
    type SigningKey = EdSecret;
    type VerifyingKey = EdPublic;
    type Signature = ed25519_compact::Signature;

    fn name(&self) -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("EdDSA")
    }

    fn sign(&self, key: &EdSecret, message: &[u8]) -> Self::Signature {
        key.sign(message, None)
    }

    fn verify_signature(&self, sig: &Self::Signature, key: &EdPublic, message: &[u8]) -> bool {
        key.verify(message, sig).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::both_targets_test;
    use crate::test_vectors as tv;

    both_targets_test! {
        fn alg_names() {
            for a in [Alg::EdDSA, Alg::ES256, Alg::RS256, Alg::HS256] {
                assert_eq!(Alg::parse(a.name()), Some(a));
            }
            for bad in ["none", "None", "NONE", "", "HS384", "PS256", "ES256K", "Ed25519"] {
                assert_eq!(Alg::parse(bad), None, "{bad}");
            }
        }
    }

    both_targets_test! {
        fn jwks_import_pins_algorithms_and_skips_what_it_cannot_use() {
            let (set, skipped) = KeySet::from_jwks_json(&tv::get("jwks")).unwrap();
            let algs: Vec<_> = set.keys().iter().map(|k| (k.kid().unwrap().to_owned(), k.alg())).collect();
            assert_eq!(
                algs,
                [("es-1".to_owned(), Alg::ES256), ("rs-1".to_owned(), Alg::RS256), ("ed-1".to_owned(), Alg::EdDSA)]
            );
            let reasons: Vec<_> = skipped.iter().map(|s| s.kid.clone().unwrap()).collect();
            assert_eq!(reasons, ["oct-1", "enc-1", "rs-weak", "ps-1"]);
            assert!(set.find(Some("rs-1"), Alg::RS256).is_some());
            assert!(set.find(Some("rs-1"), Alg::HS256).is_none(), "an RSA key never serves HS256");
            assert!(set.find(Some("nope"), Alg::RS256).is_none());
        }
    }

    both_targets_test! {
        fn jwks_round_trip() {
            let (set, _) = KeySet::from_jwks_json(&tv::get("jwks")).unwrap();
            let (again, skipped) = KeySet::from_jwks_json(&set.to_jwks_json()).unwrap();
            assert!(skipped.is_empty());
            assert_eq!(again.keys().len(), 3);
        }
    }

    both_targets_test! {
        fn signing_key_jwk_round_trip_and_redaction() {
            let key = SigningKey::from_jwk_json(&tv::get("cs_signing_jwk")).unwrap();
            assert_eq!(key.kid(), "cs-test-1");
            let again = SigningKey::from_jwk_json(&key.to_private_jwk_json()).unwrap();
            assert_eq!(again.to_private_jwk_json(), key.to_private_jwk_json());
            assert!(!format!("{key:?}").contains(&key.to_private_jwk_json()[20..40]));
            assert_eq!(SigningKey::from_jwk_json(r#"{"kty":"OKP","crv":"Ed25519","x":"AA","d":"AA"}"#).unwrap_err(), KeyError::MissingKid);
            // a public JWK is not a signing key
            let public = KeySet::new(vec![key.verifying_entry()]).to_jwks_json();
            let v: Value = serde_json::from_str(&public).unwrap();
            assert!(SigningKey::from_jwk_json(&v["keys"][0].to_string()).is_err());
            assert!(v["keys"][0].get("d").is_none());
        }
    }

    both_targets_test! {
        fn weak_hmac_secrets_are_refused() {
            assert_eq!(VerifyingKey::hs256(&[7; 31]).unwrap_err(), KeyError::WeakSecret);
            assert!(VerifyingKey::hs256(&[7; 32]).is_ok());
            assert_eq!(format!("{:?}", VerifyingKey::hs256(&[7; 32]).unwrap()), "VerifyingKey(HS256)");
        }
    }
}
