//! Any bytes: decoding never panics, never claims more bytes than it was given, and whatever
//! decodes re-encodes to bytes that decode to the same packet. The client's decoder agrees with
//! the server's on everything but the packets only clients send.
#![no_main]
use cloudsignal_core::mqtt::{decode, decode_from_server, DecodeError, Protocol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for protocol in [Protocol::V311, Protocol::V5] {
        match decode_from_server(data, protocol, 1 << 20) {
            Err(DecodeError::UnexpectedPacketType(t)) => assert!(matches!(t, 1 | 8 | 10 | 12)),
            client => assert_eq!(client, decode(data, protocol, 1 << 20)),
        }
        if let Ok(Some((packet, used))) = decode(data, protocol, 1 << 20) {
            assert!(used <= data.len());
            let mut again = Vec::new();
            packet.encode(protocol, &mut again);
            let (reparsed, n) = decode(&again, protocol, 1 << 20)
                .expect("re-encoded packet decodes")
                .expect("re-encoded packet is complete");
            assert_eq!(n, again.len());
            assert_eq!(reparsed, packet);
        }
    }
});
