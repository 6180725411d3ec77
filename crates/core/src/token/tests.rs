use super::*;
use crate::both_targets_test;
use crate::test_vectors as tv;

const ISS: &str = "https://cloudsignal.test";
const ALICE: &str = "alice@org_k7xm4pqr2n5t";

fn key() -> SigningKey {
    SigningKey::from_jwk_json(&tv::get("cs_signing_jwk")).unwrap()
}

fn verifier() -> TokenVerifier {
    let mut v = TokenVerifier::default();
    v.trust(ISS, [key().verifying_entry()]);
    v
}

fn claims(now: UnixTime, ttl: u64) -> TokenClaims {
    TokenClaims::new(
        ISS,
        UserId::parse("alice").unwrap(),
        OrgId::parse("org_k7xm4pqr2n5t").unwrap(),
        AclRules::new(["users/alice/#"], ["users/alice/#"]).unwrap(),
        now,
        ttl,
        Jti::from_random([0x11; 16]),
    )
}

fn err(r: Result<VerifiedToken, TokenError>) -> String {
    format!("{:?}", r.unwrap_err())
}

both_targets_test! {
    /// A token signed with the fixed test key decodes to fixed claims, byte for byte. The same
    /// string is verified by npm `jose` in tests/js/vectors.test.mjs.
    fn known_answer_token() {
        let t = issue(&claims(tv::t0(), 3600), &key());
        assert_eq!(t, include_str!("../../testdata/tkn-kat.txt").trim());
        let v = verifier().verify(&t, ALICE, tv::t0()).unwrap();
        assert_eq!(v.claims, claims(tv::t0(), 3600));
        assert_eq!(v.kid, "cs-test-1");
    }
}

both_targets_test! {
    fn jose_minted_token_verifies_in_core() {
        let v = verifier().verify(&tv::get("tkn_by_jose"), ALICE, tv::t0()).unwrap();
        assert_eq!(v.claims.jti.as_str(), "00112233445566778899aabbccddeeff");
        assert_eq!(v.claims.exp, tv::t0().plus(3600));
        assert_eq!(v.claims.acl.subscribe, ["users/alice/#"]);
    }
}

both_targets_test! {
    fn username_must_be_sub_at_org() {
        let t = issue(&claims(tv::t0(), 3600), &key());
        for bad in ["bob@org_k7xm4pqr2n5t", "alice@org_aaaaaaaaaaaa", "alice", "", "alice@org_k7xm4pqr2n5t "] {
            assert!(matches!(verifier().verify(&t, bad, tv::t0()), Err(TokenError::UsernameMismatch)), "{bad}");
        }
    }
}

both_targets_test! {
    fn time_window_with_leeway() {
        let now = tv::t0();
        let t = issue(&claims(now, 60), &key());
        assert!(verifier().verify(&t, ALICE, now.plus(60 + 29)).is_ok(), "within leeway");
        assert!(err(verifier().verify(&t, ALICE, now.plus(60 + 30))).contains("Expired"));
        assert!(verifier().verify(&t, ALICE, now.minus(30)).is_ok());
        assert!(err(verifier().verify(&t, ALICE, now.minus(31))).contains("NotYetValid"));
        let mut strict = verifier();
        strict.leeway = 0;
        assert!(err(strict.verify(&t, ALICE, now.plus(60))).contains("Expired"));
    }
}

both_targets_test! {
    fn lifetime_is_capped_at_24_hours() {
        let now = tv::t0();
        let day = issue(&claims(now, MAX_LIFETIME), &key());
        assert!(verifier().verify(&day, ALICE, now).is_ok());
        let year = issue(&claims(now, MAX_LIFETIME + 1), &key());
        assert!(err(verifier().verify(&year, ALICE, now)).contains("maximum lifetime"));
    }
}

both_targets_test! {
    fn client_id_binding() {
        let mut c = claims(tv::t0(), 60);
        c.client_id = Some("phone-1".into());
        let v = verifier().verify(&issue(&c, &key()), ALICE, tv::t0()).unwrap();
        assert!(v.check_client_id("phone-1").is_ok());
        assert!(matches!(v.check_client_id("laptop"), Err(TokenError::ClientIdMismatch)));
    }
}

both_targets_test! {
    fn refused_tokens() {
        let now = tv::t0();
        let good = issue(&claims(now, 60), &key());
        let (h, rest) = good.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let other = issue(&TokenClaims { sub: UserId::parse("mallory").unwrap(), ..claims(now, 60) }, &key());
        let other_payload = other.split('.').nth(1).unwrap();
        let cases: Vec<(&str, String, &str)> = vec![
            ("missing prefix", good.trim_start_matches("tkn_").to_owned(), "MissingPrefix"),
            ("cross-JWT: plain JWT typ", tv::get("tkn_wrong_typ"), "WrongType"),
            ("IdP JWT as password", format!("tkn_{}", tv::get("supa_es256")), "AlgorithmNotAllowed"),
            ("alg none", format!("tkn_{}", tv::get("supa_alg_none")), "AlgorithmNotAllowed"),
            ("spliced signature", format!("{h}.{other_payload}.{sig}"), "BadSignature"),
            ("truncated", good[..good.len() - 5].to_owned(), "Malformed(\"signature\")"),
            ("signature bit flip", format!("{}{}", &good[..good.len() - 2], if good.ends_with("BA") { "BQ" } else { "BA" }), "BadSignature"),
            ("not base64", good.replacen('.', ".!", 1), "Malformed"),
            ("too long", format!("{good}{}", "A".repeat(9000)), "TooLong"),
        ];
        for (name, token, want) in cases {
            let got = err(verifier().verify(&token, ALICE, now));
            assert!(got.contains(want), "{name}: {got}");
        }
        let mut other_issuer = TokenVerifier::default();
        other_issuer.trust("https://elsewhere", [key().verifying_entry()]);
        assert!(err(other_issuer.verify(&good, ALICE, now)).contains("UntrustedIssuer"));
        let mut rotated = TokenVerifier::default();
        rotated.trust(ISS, [SigningKey::from_seed("cs-test-2", [9; 32]).verifying_entry()]);
        assert!(err(rotated.verify(&good, ALICE, now)).contains("UnknownKey"));
        // same kid, different key material
        rotated.trust(ISS, [SigningKey::from_seed("cs-test-1", [9; 32]).verifying_entry()]);
        assert!(err(rotated.verify(&good, ALICE, now)).contains("BadSignature"));
    }
}

both_targets_test! {
    /// What a cache of verified tokens re-checks on every use: the time window with the same
    /// leeway, the username binding, and that the signing key is still trusted.
    fn recheck_matches_verify() {
        let now = tv::t0();
        let t = issue(&claims(now, 60), &key());
        let mut v = verifier();
        v.leeway = 5;
        let ok = v.verify(&t, ALICE, now).unwrap();
        assert!(v.recheck(&ok, ALICE, now.plus(64)).is_ok());
        assert!(v.verify(&t, ALICE, now.plus(65)).is_err());
        assert!(v.recheck(&ok, ALICE, now.plus(65)).is_err(), "expired, like verify");
        assert!(matches!(v.recheck(&ok, "bob@org_k7xm4pqr2n5t", now), Err(TokenError::UsernameMismatch)));
        v.trust(ISS, [SigningKey::from_seed("other", [3; 32]).verifying_entry()]);
        assert!(v.recheck(&ok, ALICE, now).is_err(), "its key is no longer trusted");
    }
}

both_targets_test! {
    /// Orgs are tenants: an issuer bound to orgs issues only for them, and an org bound to an
    /// issuer is refused from every other issuer, even one signing with a trusted key.
    fn org_binding() {
        let now = tv::t0();
        let token = issue(&claims(now, 3600), &key());
        let mut v = verifier();
        v.trust("https://other", [key().verifying_entry()]);
        assert!(v.verify(&token, ALICE, now).is_ok(), "unbound issuer, unbound org");
        v.bind_orgs(ISS, ["org_aaaaaaaaaaaa".to_owned()]);
        assert!(matches!(v.verify(&token, ALICE, now), Err(TokenError::ForeignOrg(o)) if o == "org_k7xm4pqr2n5t"));
        v.bind_orgs(ISS, ["org_k7xm4pqr2n5t".to_owned()]);
        let ok = v.verify(&token, ALICE, now).unwrap();
        // another (unbound) issuer may not claim an org that is bound to ISS
        assert!(v.may_issue(ISS, "org_k7xm4pqr2n5t"));
        assert!(!v.may_issue("https://other", "org_k7xm4pqr2n5t"));
        assert!(v.may_issue("https://other", "org_zzzzzzzzzzzz"));
        // a binding changed after verification is enforced on the cached token too
        v.bind_orgs(ISS, Vec::new());
        assert!(matches!(v.recheck(&ok, ALICE, now), Err(TokenError::ForeignOrg(_))));
    }
}
