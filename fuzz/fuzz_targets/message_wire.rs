//! Any bytes as a message from another node of a cluster: decoding never panics, and what
//! decodes re-encodes to a message that decodes to the same thing.
#![no_main]
use cloudsignal_core::session::wire::{decode_message, encode_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = decode_message(data, 1 << 20) {
        let mut out = Vec::new();
        encode_message(&m, &mut out);
        assert_eq!(decode_message(&out, 1 << 20).expect("re-decodes"), m);
    }
});
