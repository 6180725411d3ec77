//! Project Wycheproof's 401 JSON Web Signature vectors (testdata/wycheproof, Apache-2.0),
//! through the JWS layer the IdP verifier is built on: structural checks and the algorithm
//! allow-list ([`Inspected::parse`]), key selection by `kid` pinned to the key's algorithm
//! ([`KeySet::find`]), and signature verification ([`Inspected::verify_signature`]). Their
//! payloads are not JWT claims, so the claim checks above this layer do not apply.
//! A vector for an algorithm core does not support must be refused.

use crate::jws::{Inspected, DEFAULT_MAX_TOKEN_LEN};
use crate::keys::{public_key_from_jwk, Alg, KeyEntry, KeySet, VerifyingKey};
use base64ct::{Base64UrlUnpadded, Encoding};
use serde_json::Value;

/// Vectors the file itself gets wrong, and the decision core makes instead:
/// - 367 and 370 are byte-identical to 357, which the same file marks valid (same key);
/// - 372 and 373 insert `?` into a base64url segment and are marked valid; RFC 7515 requires
///   base64url, and a decoder that skips foreign characters accepts forged variants of a
///   token, so core refuses them.
const ERRATA: [(u64, bool); 4] = [(367, true), (370, true), (372, false), (373, false)];

static VECTORS: &str = include_str!("../testdata/wycheproof/json_web_signature_test.json");

fn key_of(jwk: &Value) -> Option<KeyEntry> {
    if jwk["kty"] == "oct" {
        if jwk
            .get("alg")
            .and_then(Value::as_str)
            .is_some_and(|a| a != "HS256")
        {
            return None;
        }
        let secret = Base64UrlUnpadded::decode_vec(jwk["k"].as_str()?).ok()?;
        let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
        return Some(KeyEntry::new(kid, VerifyingKey::hs256(&secret).ok()?));
    }
    public_key_from_jwk(jwk).ok()
}

/// Whether the JWS layer accepts `jws` with `keys`.
fn accepts(jws: &str, keys: &KeySet) -> bool {
    let allowed: Vec<Alg> = keys.keys().iter().map(KeyEntry::alg).collect();
    let Ok(inspected) = Inspected::parse(jws, DEFAULT_MAX_TOKEN_LEN, &allowed) else {
        return false;
    };
    let Some(key) = keys.find(inspected.kid(), inspected.algorithm()) else {
        return false;
    };
    inspected.verify_signature(key).is_ok()
}

both_targets_test! {
    fn wycheproof_json_web_signature_vectors() {
        let doc: Value = serde_json::from_str(VECTORS).unwrap();
        let (mut total, mut accepted_valid, mut refused_unsupported) = (0, 0, 0);
        let mut wrong = Vec::new();
        for group in doc["testGroups"].as_array().unwrap() {
            let jwk = group.get("public").or_else(|| group.get("private")).unwrap();
            let key = key_of(jwk);
            let keys = KeySet::new(key.into_iter().collect());
            for case in group["tests"].as_array().unwrap() {
                total += 1;
                let jws = case["jws"].as_str().unwrap();
                let got = accepts(jws, &keys);
                if let Some((_, want)) = ERRATA.iter().find(|(id, _)| case["tcId"] == *id) {
                    assert_eq!(got, *want, "erratum tcId {}", case["tcId"]);
                    continue;
                }
                let valid = case["result"] == "valid";
                match (valid, got) {
                    (true, true) => accepted_valid += 1,
                    (true, false) if keys.is_empty() => refused_unsupported += 1,
                    (false, false) => {}
                    _ => wrong.push(format!("tcId {} ({}): expected {}, got {}", case["tcId"], case["comment"], case["result"], if got { "accepted" } else { "refused" })),
                }
            }
        }
        assert_eq!(total, 401, "all vectors were read");
        eprintln!("wycheproof: {accepted_valid} valid accepted, {refused_unsupported} refused for unsupported algorithms, {} errata", ERRATA.len());
        assert!(wrong.is_empty(), "{} vectors decided wrongly:\n{}", wrong.len(), wrong.join("\n"));
        assert!(accepted_valid > 0 && refused_unsupported > 0, "{accepted_valid} valid accepted, {refused_unsupported} unsupported refused");
    }
}
