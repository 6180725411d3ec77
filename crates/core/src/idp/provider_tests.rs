//! Firebase, Auth0, Clerk and OIDC tokens with each provider's exact claim shape, minted by
//! npm `jose` (tests/vectors/generate.mjs), through the one verification path.

use super::tests::{assert_refused, verify_with};
use super::*;
use crate::both_targets_test;
use crate::test_vectors as tv;

fn all_providers() -> IdpVerifier {
    let json = serde_json::json!([
        {"provider": "supabase", "url": tv::get("supabase_url")},
        {"provider": "firebase", "project_id": tv::get("firebase_project"),
         "jwks_url": "https://jwks.test/firebase"},
        {"provider": "auth0", "domain": tv::get("auth0_domain"), "audience": tv::get("auth0_audience")},
        {"provider": "clerk", "issuer": tv::get("clerk_issuer"),
         "authorized_parties": [tv::get("clerk_origin")]},
        {"provider": "oidc", "issuer": tv::get("oidc_issuer"), "audience": "cloudsignal-app"},
    ]);
    ProvidersConfig::from_json(&json.to_string())
        .unwrap()
        .verifier()
        .unwrap()
}

fn verify(name: &str) -> Result<Identity, IdpError> {
    verify_with(&all_providers(), &tv::get(name), tv::t0())
}

fn refused(name: &str, want: &str) {
    assert_refused(&all_providers(), name, want);
}

both_targets_test! {
    fn firebase_id_token() {
        let id = verify("fb_rs256").unwrap();
        assert_eq!(id.provider, Provider::Firebase);
        assert_eq!(id.subject.as_str(), tv::get("firebase_uid"));
        assert_eq!(id.all_roles(), ["editor"]);
        assert_eq!(id.email.as_deref(), Some("alice@example.com"));
        assert_eq!(id.issued_at, Some(tv::t0().minus(10)));
    }
}
both_targets_test! {
    fn firebase_rules() {
        refused("fb_auth_time_future", "auth_time");
        refused("fb_no_auth_time", "auth_time");
        refused("fb_wrong_aud", "WrongAudience");
        refused("fb_empty_sub", "BadSubject");
        refused("fb_es256", "AlgorithmNotAllowed(\"ES256\")");
    }
}
both_targets_test! {
    fn auth0_access_token_with_namespaced_roles() {
        let id = verify("a0_rs256").unwrap();
        assert_eq!(id.provider, Provider::Auth0);
        assert_eq!(id.subject.as_str(), "auth0|64f1c2a9e1b2c4d5e8f90123");
        assert_eq!(id.all_roles(), ["editor", "ops"]);
        refused("a0_wrong_aud", "WrongAudience");
        // Auth0's issuer has a trailing slash; without it the issuer is unknown
        refused("a0_no_trailing_slash_iss", "UnknownIssuer");
    }
}
both_targets_test! {
    fn clerk_session_token_checks_azp() {
        let id = verify("clerk_rs256").unwrap();
        assert_eq!(id.provider, Provider::Clerk);
        assert_eq!(id.subject.as_str(), "user_2NNEqL2nrIRdJ194ndJqAHwEfxC");
        assert_eq!(id.all_roles(), ["admin"]);
        assert_eq!(verify("clerk_v1_org_role").unwrap().all_roles(), ["org:admin"]);
        refused("clerk_foreign_azp", "azp");
        refused("clerk_no_azp", "azp");
    }
}
both_targets_test! {
    fn oidc_token_found_by_discovery() {
        let v = all_providers();
        let token = tv::get("oidc_es256");
        let pending = v.inspect(&token).unwrap();
        assert_eq!(v.provider(&pending), Provider::Oidc);
        assert_eq!(
            v.key_source(&pending),
            KeySource::Discovery {
                issuer: "https://idp.example.com",
                url: "https://idp.example.com/.well-known/openid-configuration"
            }
        );
        let id = verify("oidc_es256").unwrap();
        assert_eq!(id.all_roles(), ["viewer"]);
        refused("oidc_hs_confusion_rs", "AlgorithmNotAllowed(\"HS256\")");
        refused("oidc_email_sub", "BadSubject");
    }
}
both_targets_test! {
    fn every_profile_refuses_alg_none_and_unknown_issuers() {
        refused("supa_alg_none", "AlgorithmNotAllowed(\"none\")");
        refused("supa_wrong_iss", "UnknownIssuer");
        // a Supabase token is not a Firebase token, even with the same keys
        let t = tv::get("supa_rs256");
        let fb_only = ProvidersConfig::from_json(
            &serde_json::json!([{"provider": "firebase", "project_id": tv::get("firebase_project")}]).to_string(),
        )
        .unwrap()
        .verifier()
        .unwrap();
        assert!(matches!(verify_with(&fb_only, &t, tv::t0()), Err(IdpError::UnknownIssuer)));
    }
}
both_targets_test! {
    fn providers_config_errors() {
        assert!(ProvidersConfig::from_json("[]").unwrap().verifier().is_err());
        assert!(ProvidersConfig::from_json(r#"[{"provider": "okta"}]"#).is_err());
        assert!(ProvidersConfig::from_json(r#"[{"provider": "firebase", "project_id": "a", "typo": 1}]"#).is_err());
        let twice = r#"[{"provider": "oidc", "issuer": "https://a.example", "audience": "x"},
                        {"provider": "clerk", "issuer": "https://a.example", "authorized_parties": ["https://b"]}]"#;
        let err = ProvidersConfig::from_json(twice).unwrap().verifier().unwrap_err().to_string();
        assert!(err.contains("both claim issuer"), "{err}");
    }
}
