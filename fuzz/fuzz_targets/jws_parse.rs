//! Any string: the structural JWS checks and tkn_ verification never panic, and nothing
//! verifies against a key set that holds only a fixed test key.
#![no_main]
use cloudsignal_core::keys::{Alg, SigningKey};
use cloudsignal_core::{jws::Inspected, token::TokenVerifier, UnixTime};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Inspected::parse(s, 8192, &[Alg::EdDSA, Alg::ES256, Alg::RS256, Alg::HS256]);
    let mut v = TokenVerifier::default();
    v.trust(
        "https://fuzz",
        [SigningKey::from_seed("k", [1; 32]).verifying_entry()],
    );
    assert!(v.verify_unbound(s, UnixTime(1_800_000_000)).is_err());
});
