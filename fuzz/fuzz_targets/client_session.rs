//! Any byte stream from a server, cut into chunks at arbitrary points, into the browser
//! package's sans-IO client after it sent CONNECT: it never panics, never sends after it
//! considers itself offline, and keeps its bounded queue bounded.
#![no_main]
use cloudsignal_core::client::{ClientConfig, ClientEvent, ClientSession};
use cloudsignal_core::mqtt::QoS;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let config = ClientConfig {
        max_packet_size: 4096,
        max_queued: 8,
        ..ClientConfig::new("fuzz")
    };
    let mut c = ClientSession::new(config);
    let _ = c.subscribe("users/fuzz/#", QoS::ExactlyOnce, 0);
    let _ = c.publish("users/fuzz/a", b"x", QoS::AtLeastOnce, false, 0);
    c.connect("fuzz@org_k7xm4pqr2n5t", "tkn_fuzz", 0);
    let _ = c.take_outgoing();
    let step = usize::from(cut).max(1);
    let mut now = 0;
    for chunk in rest.chunks(step) {
        now += 10;
        c.handle_bytes(chunk, now);
        let _ = c.publish("users/fuzz/b", chunk, QoS::ExactlyOnce, false, now);
        let _ = c.reauthenticate("tkn_next", now);
        c.handle_timeout(now + 60_000);
        let _ = c.take_outgoing();
        while let Some(ev) = c.poll_event() {
            if let ClientEvent::Disconnected { .. } = ev {
                assert!(!c.is_connected());
            }
        }
        assert!(c.pending_publishes() <= 8 + 65_535);
        if !c.is_connected() && c.next_timeout().is_some() {
            panic!("a timer is armed while offline");
        }
    }
});
