//! Identity-provider configuration (`CLOUDSIGNAL_PROVIDERS`), OpenID discovery documents and
//! role maps (`CLOUDSIGNAL_ROLE_MAP`, the worker's KV `role-map`, an operator's hand-edited
//! JSON): arbitrary JSON never panics, and whatever is accepted yields a verifier, or grants
//! that resolve for a user, or a clear error.
#![no_main]
use cloudsignal_core::exchange::RoleMap;
use cloudsignal_core::idp::{jwks_uri_from_discovery, ProvidersConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = ProvidersConfig::from_json(text) {
        let _ = cfg.verifier();
    }
    if let Ok(map) = RoleMap::from_json(text) {
        let mut roles: Vec<&str> = map.roles.keys().map(String::as_str).collect();
        roles.push("authenticated");
        if let Ok(grant) = map.grant(&roles) {
            let _ = grant.resolve_identity("alice", "org_k7xm4pqr2n5t");
        }
    }
    if let Ok(uri) = jwks_uri_from_discovery(text, "https://idp.example") {
        assert!(uri.starts_with("https://") || uri.starts_with("http://"));
    }
});
