//! A message between brokers (a cluster's backplane): the MQTT 5 PUBLISH that carries it,
//! encoded and decoded by the one codec every client connection uses.
//!
//! Everything a subscriber may see travels: topic, payload, QoS, retain, Message Expiry
//! Interval and the forwarded properties (payload format, content type, response topic,
//! correlation data, user properties). What is per connection does not: packet identifiers
//! (a placeholder 1 for QoS 1/2, ignored on decoding), topic aliases and subscription
//! identifiers (the receiving broker adds its own subscribers').

use super::{forwarded, Message};
use crate::mqtt::{decode, DecodeError, Packet, PacketId, Protocol, Publish, QoS};
use crate::topic::{TopicError, TopicName};

/// Why bytes are not a message.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not a well-formed MQTT 5 packet.
    #[error("malformed message: {0}")]
    Decode(#[from] DecodeError),
    /// Fewer bytes than the packet declares.
    #[error("message truncated")]
    Truncated,
    /// A packet, but not a PUBLISH, or bytes after it.
    #[error("not exactly one PUBLISH")]
    NotAPublish,
    /// The topic is not a valid topic name [MQTT-4.7.3-1].
    #[error("invalid topic: {0}")]
    Topic(#[from] TopicError),
}

/// Appends `m` to `out` as an MQTT 5 PUBLISH.
pub fn encode_message(m: &Message, out: &mut Vec<u8>) {
    let properties = super::forwarded_properties(&m.forwarded, m.expiry);
    Packet::Publish(Publish {
        dup: false,
        qos: m.qos,
        retain: m.retain,
        topic: m.topic.as_str(),
        packet_id: (m.qos != QoS::AtMostOnce).then_some(PacketId::MIN),
        properties,
        payload: &m.payload,
    })
    .encode(Protocol::V5, out);
}

/// Decodes what [`encode_message`] wrote: exactly one PUBLISH of at most `max` bytes.
pub fn decode_message(buf: &[u8], max: usize) -> Result<Message, WireError> {
    let (packet, used) = decode(buf, Protocol::V5, max)?.ok_or(WireError::Truncated)?;
    let Packet::Publish(p) = packet else {
        return Err(WireError::NotAPublish);
    };
    if used != buf.len() || p.topic.is_empty() {
        return Err(WireError::NotAPublish);
    }
    Ok(Message {
        topic: TopicName::parse(p.topic)?,
        payload: p.payload.to_vec(),
        qos: p.qos,
        retain: p.retain,
        expiry: p.properties.message_expiry_interval,
        forwarded: forwarded(&p.properties),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::session::ForwardedProperties;
    use proptest::prelude::*;

    fn message(topic: &str, payload: Vec<u8>, qos: u8, retain: bool) -> Message {
        Message {
            topic: TopicName::parse(topic).unwrap(),
            payload,
            qos: QoS::from_bits(qos).unwrap(),
            retain,
            expiry: None,
            forwarded: ForwardedProperties::default(),
        }
    }

    #[test]
    fn every_field_a_subscriber_sees_survives() {
        let m = Message {
            expiry: Some(30),
            forwarded: ForwardedProperties {
                payload_format_indicator: Some(1),
                content_type: Some("application/json".into()),
                response_topic: Some("replies/1".into()),
                correlation_data: Some(vec![0, 1, 2]),
                user_properties: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
            },
            ..message("sensors/é/t", b"{\"t\":1}".to_vec(), 2, true)
        };
        let mut out = Vec::new();
        encode_message(&m, &mut out);
        assert_eq!(decode_message(&out, 1 << 20).unwrap(), m);
    }

    #[test]
    fn refuses_what_is_not_one_publish() {
        let mut out = Vec::new();
        encode_message(&message("a", vec![1], 1, false), &mut out);
        let mut two = out.clone();
        two.extend_from_slice(&out);
        assert!(matches!(
            decode_message(&two, 1 << 20),
            Err(WireError::NotAPublish)
        ));
        assert!(matches!(
            decode_message(&out[..out.len() - 1], 1 << 20),
            Err(WireError::Truncated)
        ));
        assert!(matches!(
            decode_message(&[0xC0, 0], 1 << 20),
            Err(WireError::NotAPublish)
        ));
        assert!(matches!(
            decode_message(&out, 4),
            Err(WireError::Decode(DecodeError::TooLarge(_)))
        ));
    }

    proptest! {
        #[test]
        fn round_trips(
            topic in "[a-z$]{1,4}(/[a-z0-9 ]{0,4}){0,4}",
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            qos in 0u8..3,
            retain: bool,
            expiry in proptest::option::of(any::<u32>()),
        ) {
            let m = Message { expiry, ..message(&topic, payload, qos, retain) };
            let mut out = Vec::new();
            encode_message(&m, &mut out);
            prop_assert_eq!(decode_message(&out, 1 << 20).unwrap(), m);
        }

        #[test]
        fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_message(&bytes, 1 << 20);
        }
    }
}
