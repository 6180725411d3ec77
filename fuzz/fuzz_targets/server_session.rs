//! Any byte stream from a client, cut into chunks at arbitrary points: the broker's sans-IO
//! session never panics, accepts the CONNECT it is offered, answers every event, and once
//! closed stays closed.
#![no_main]
use cloudsignal_core::mqtt::{QoS, ReasonCode};
use cloudsignal_core::session::{Event, ServerConfig, ServerSession};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let config = ServerConfig {
        max_packet_size: 4096,
        ..ServerConfig::default()
    };
    let mut s = ServerSession::new(config, 0);
    let step = usize::from(cut).max(1);
    let mut now = 0;
    for chunk in rest.chunks(step) {
        now += 10;
        s.handle_bytes(chunk, now);
        while let Some(event) = s.poll_event() {
            match event {
                Event::Connect(_) => s.accept(now, None, None, true, 30),
                Event::Publish {
                    packet_id: Some(id),
                    message,
                } => {
                    s.ack_publish(id, message.qos, ReasonCode::SUCCESS);
                    if message.qos == QoS::AtMostOnce {
                        unreachable!("QoS 0 PUBLISH with a packet id");
                    }
                }
                Event::Subscribe {
                    packet_id, filters, ..
                } => {
                    let reasons = filters
                        .iter()
                        .map(|(f, o)| {
                            if f.is_ok() {
                                ReasonCode(o.qos as u8)
                            } else {
                                ReasonCode::TOPIC_FILTER_INVALID
                            }
                        })
                        .collect();
                    s.ack_subscribe(packet_id, reasons);
                }
                Event::Unsubscribe { packet_id, filters } => {
                    s.ack_unsubscribe(packet_id, vec![ReasonCode::SUCCESS; filters.len()]);
                }
                _ => {}
            }
        }
        let _ = s.poll_transmit();
        s.handle_timeout(now);
        if s.is_closed() {
            s.handle_bytes(chunk, now);
            assert!(s.poll_event().is_none() || s.is_closed());
            break;
        }
    }
});
