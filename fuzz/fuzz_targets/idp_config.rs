//! Identity-provider configuration (`CLOUDSIGNAL_PROVIDERS`) and OpenID discovery documents:
//! arbitrary JSON never panics, and whatever is accepted yields a verifier or a clear error.
#![no_main]
use cloudsignal_core::idp::{jwks_uri_from_discovery, ProvidersConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(cfg) = ProvidersConfig::from_json(text) {
        let _ = cfg.verifier();
    }
    if let Ok(uri) = jwks_uri_from_discovery(text, "https://idp.example") {
        assert!(uri.starts_with("https://") || uri.starts_with("http://"));
    }
});
