//! Supabase-shaped JWTs minted by npm `jose`, through the same path the worker uses.

use super::*;
use crate::both_targets_test;
use crate::jwks_cache::{JwksCache, JwksPolicy, Lookup};
use crate::test_vectors as tv;

fn verifier() -> IdpVerifier {
    let cfg = SupabaseConfig::new(
        Some(&tv::get("supabase_url")),
        Some(&tv::get("supabase_secret")),
    );
    IdpVerifier::new(vec![cfg.profile().unwrap()])
}

/// Drives verification exactly as an adapter does, with the JWKS "fetched" from the vectors.
pub(super) fn verify_with(
    v: &IdpVerifier,
    token: &str,
    now: UnixTime,
) -> Result<Identity, IdpError> {
    let pending = v.inspect(token)?;
    if let Some(key) = v.static_key(&pending).cloned() {
        return v.verify(pending, &key, now);
    }
    assert_ne!(v.key_source(&pending), KeySource::None);
    let mut cache = JwksCache::new(JwksPolicy::default());
    for _ in 0..2 {
        match cache.lookup(pending.kid(), pending.alg(), now) {
            Lookup::Key(key) => {
                let key = key.clone();
                return v.verify(pending, &key, now);
            }
            Lookup::Fetch => {
                cache.fetch_started(now);
                let (keys, _) = KeySet::from_jwks_json(&tv::get("jwks")).unwrap();
                cache.fetch_succeeded(keys, None, now);
            }
            Lookup::Unknown => break,
        }
    }
    Err(JwsError::UnknownKey(pending.kid().map(str::to_owned)).into())
}

fn verify(name: &str) -> Result<Identity, IdpError> {
    verify_with(&verifier(), &tv::get(name), tv::t0())
}

/// Asserts that `v` refuses the vector `name` with an error whose Debug form contains `want`.
pub(super) fn assert_refused(v: &IdpVerifier, name: &str, want: &str) {
    let got = format!(
        "{:?}",
        verify_with(v, &tv::get(name), tv::t0()).unwrap_err()
    );
    assert!(got.contains(want), "{name}: expected {want}, got {got}");
}

fn refused(name: &str, want: &str) {
    assert_refused(&verifier(), name, want);
}

both_targets_test! {
    fn hs256_legacy_secret() {
        let id = verify("supa_hs256").unwrap();
        assert_eq!(id.subject.as_str(), tv::get("sub"));
        assert_eq!(id.all_roles(), ["authenticated", "editor"]);
        assert_eq!(id.email.as_deref(), Some("alice@example.com"));
        assert_eq!(id.expires_at, Some(tv::t0().plus(3600)));
        // a kid on a legacy token does not matter: the secret is the only HS256 key
        assert!(verify("supa_hs256_with_kid").is_ok());
    }
}

both_targets_test! {
    fn es256_from_jwks() {
        assert_eq!(verify("supa_es256").unwrap().subject.as_str(), tv::get("sub"));
    }
}

both_targets_test! {
    fn rs256_from_jwks() {
        assert_eq!(verify("supa_rs256").unwrap().subject.as_str(), tv::get("sub"));
    }
}

both_targets_test! {
    fn refuses_alg_none() { refused("supa_alg_none", "AlgorithmNotAllowed(\"none\")"); }
}
both_targets_test! {
    /// HS256 signed with the RSA public key (PEM) as the secret: the RSA key never verifies
    /// HS256, and the configured secret does not match.
    fn refuses_hs256_signed_with_rsa_public_key() { refused("supa_hs_confusion_rs", "BadSignature"); }
}
both_targets_test! {
    fn refuses_hs256_signed_with_ec_jwk() { refused("supa_hs_confusion_jwk", "BadSignature"); }
}
both_targets_test! {
    fn refuses_wrong_issuer() { refused("supa_wrong_iss", "UnknownIssuer"); }
}
both_targets_test! {
    fn refuses_wrong_audience() { refused("supa_wrong_aud", "WrongAudience"); }
}
both_targets_test! {
    fn refuses_expired() { refused("supa_expired", "Expired"); }
}
both_targets_test! {
    fn refuses_nbf_in_future() { refused("supa_nbf_future", "NotYetValid"); }
}
both_targets_test! {
    fn refuses_iat_in_future() { refused("supa_iat_future", "IssuedInFuture"); }
}
both_targets_test! {
    fn refuses_unknown_kid() { refused("supa_unknown_kid", "UnknownKey(Some(\"es-404\"))"); }
}
both_targets_test! {
    fn refuses_truncated_signature() { refused("supa_truncated", "Malformed(\"signature\")"); }
}
both_targets_test! {
    fn refuses_non_base64_segment() { refused("supa_not_base64", "Malformed"); }
}
both_targets_test! {
    fn refuses_two_segments() { refused("supa_two_segments", "Malformed"); }
}
both_targets_test! {
    fn refuses_jwe() { refused("supa_jwe_shape", "Encrypted"); }
}
both_targets_test! {
    fn refuses_signature_of_another_token() { refused("supa_spliced", "BadSignature"); }
}
both_targets_test! {
    fn refuses_duplicate_claims() { refused("supa_duplicate_sub", "DuplicateKey(\"payload\")"); }
}
both_targets_test! {
    fn refuses_exp_of_wrong_type() { refused("supa_exp_string", "MalformedClaims"); }
}
both_targets_test! {
    fn refuses_missing_exp() { refused("supa_no_exp", "MissingClaim(\"exp\")"); }
}
both_targets_test! {
    /// The project's anon key is a valid JWT but names no user.
    fn refuses_anon_key() { refused("supa_anon_key", "BadSubject"); }
}
both_targets_test! {
    fn refuses_a_tkn_token() {
        let tkn = tv::get("tkn_by_jose");
        let got = format!("{:?}", verify_with(&verifier(), tkn.trim_start_matches("tkn_"), tv::t0()).unwrap_err());
        assert!(got.contains("AlgorithmNotAllowed"), "{got}");
    }
}

both_targets_test! {
    fn secret_only_profile_accepts_any_supabase_issuer_for_hs256_only() {
        let v = IdpVerifier::new(vec![SupabaseConfig::new(None, Some(&tv::get("supabase_secret"))).profile().unwrap()]);
        assert!(verify_with(&v, &tv::get("supa_hs256"), tv::t0()).is_ok());
        let got = format!("{:?}", verify_with(&v, &tv::get("supa_es256"), tv::t0()).unwrap_err());
        assert!(got.contains("AlgorithmNotAllowed"), "{got}");
    }
}

both_targets_test! {
    fn jwks_only_profile_refuses_hs256() {
        let v = IdpVerifier::new(vec![SupabaseConfig::new(Some(&tv::get("supabase_url")), None).profile().unwrap()]);
        let got = format!("{:?}", verify_with(&v, &tv::get("supa_hs256"), tv::t0()).unwrap_err());
        assert!(got.contains("AlgorithmNotAllowed(\"HS256\")"), "{got}");
        assert!(verify_with(&v, &tv::get("supa_rs256"), tv::t0()).is_ok());
    }
}

both_targets_test! {
    fn bad_configuration_is_reported() {
        assert!(SupabaseConfig::new(None, None).profile().is_err());
        assert!(SupabaseConfig::new(None, Some("short")).profile().is_err());
        assert!(SupabaseConfig::new(Some("abc.supabase.co"), None).profile().is_err());
    }
}

both_targets_test! {
    fn supabase_from_json_keeps_the_secret_apart() {
        let mut cfg = ProvidersConfig::from_json(&format!(
            r#"[{{"provider": "supabase", "url": "{}"}}]"#,
            tv::get("supabase_url")
        ))
        .unwrap();
        let ProviderConfig::Supabase(s) = &mut cfg.providers[0] else { panic!() };
        assert!(s.jwt_secret.is_none());
        assert_eq!(s.audience, "authenticated");
        assert!(ProvidersConfig::from_json(r#"[{"provider": "supabase", "jwt_secret": "x"}]"#).is_err());
        s.jwt_secret = Some(tv::get("supabase_secret"));
        assert!(format!("{s:?}").contains("<redacted>"));
        let v = cfg.verifier().unwrap();
        assert!(verify_with(&v, &tv::get("supa_hs256"), tv::t0()).is_ok());
        assert!(verify_with(&v, &tv::get("supa_es256"), tv::t0()).is_ok());
    }
}

both_targets_test! {
    fn supabase_shortcuts_add_a_profile_or_complete_the_configured_one() {
        let mut none = ProvidersConfig::default();
        none.add_supabase(None, None);
        assert!(none.providers.is_empty());
        let mut secret_only = ProvidersConfig::default();
        secret_only.add_supabase(None, Some(tv::get("supabase_secret")));
        let v = secret_only.verifier().unwrap();
        assert!(verify_with(&v, &tv::get("supa_hs256"), tv::t0()).is_ok());
        // a Supabase entry in the JSON gets the secret; no second profile appears
        let mut from_json = ProvidersConfig::from_json(&format!(
            r#"[{{"provider": "supabase", "url": "{}"}}]"#,
            tv::get("supabase_url")
        ))
        .unwrap();
        from_json.add_supabase(Some("https://ignored.supabase.co"), Some(tv::get("supabase_secret")));
        assert_eq!(from_json.providers.len(), 1);
        let v = from_json.verifier().unwrap();
        assert!(verify_with(&v, &tv::get("supa_hs256"), tv::t0()).is_ok());
        assert!(verify_with(&v, &tv::get("supa_es256"), tv::t0()).is_ok());
    }
}

/// The JWKS key a vector names, as an adapter's cache would hand it over.
fn jwks_key(token: &str) -> KeyEntry {
    let v = verifier();
    let pending = v.inspect(token).unwrap();
    let (keys, _) = KeySet::from_jwks_json(&tv::get("jwks")).unwrap();
    keys.find(pending.kid(), pending.alg()).unwrap().clone()
}

both_targets_test! {
    fn a_signature_checked_elsewhere_still_gets_every_other_check() {
        let v = verifier();
        for name in ["supa_es256", "supa_rs256"] {
            let token = tv::get(name);
            let key = jwks_key(&token);
            // the parts an outside verifier (WebCrypto) checks are what core itself checks
            let pending = v.inspect(&token).unwrap();
            let (input, signature) = v.signed_parts(&pending);
            assert!(key.key().verify_raw(input, signature), "{name}");
            let checked = v.verify_checked(pending, &key, true, tv::t0()).unwrap();
            assert_eq!(checked, verify(name).unwrap(), "{name}: same identity as core's own check");
            // a failed outside check is a bad signature
            let pending = v.inspect(&token).unwrap();
            let err = v.verify_checked(pending, &key, false, tv::t0()).unwrap_err();
            assert!(format!("{err:?}").contains("BadSignature"), "{name}: {err:?}");
        }
        // claims are still checked: an expired token with a good signature is refused
        let expired = tv::get("supa_expired");
        let key = jwks_key(&expired);
        let err = v.verify_checked(v.inspect(&expired).unwrap(), &key, true, tv::t0()).unwrap_err();
        assert!(format!("{err:?}").contains("Expired"), "{err:?}");
        // and the key stays pinned to the header's algorithm
        let rs_key = jwks_key(&tv::get("supa_rs256"));
        let es = tv::get("supa_es256");
        let err = v.verify_checked(v.inspect(&es).unwrap(), &rs_key, true, tv::t0()).unwrap_err();
        assert!(format!("{err:?}").contains("UnknownKey"), "{err:?}");
    }
}

both_targets_test! {
    fn public_jwks_round_trip_for_outside_verifiers() {
        let key = jwks_key(&tv::get("supa_es256"));
        let jwk = key.public_jwk().unwrap();
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        let rsa = jwks_key(&tv::get("supa_rs256")).public_jwk().unwrap();
        assert_eq!(rsa["kty"], "RSA");
        assert!(rsa["n"].is_string() && rsa["e"].is_string());
        assert!(KeyEntry::new(None, crate::keys::VerifyingKey::hs256(&[7; 32]).unwrap()).public_jwk().is_none());
    }
}
