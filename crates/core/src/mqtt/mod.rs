//! MQTT 3.1.1 and 5.0 codec: one implementation for the broker, the browser client and any
//! other target.
//!
//! Decoding is two-step and allocation-aware: [`FixedHeader::parse`] reads the packet type and
//! remaining length from the first bytes and checks the maximum packet size **before** the
//! caller buffers the body; [`Packet::decode`] then parses the complete packet with a borrowing
//! [`codec::Reader`]. Every error names the specification rule it enforces.

pub mod codec;
mod packet;
mod properties;
mod reason;

pub use packet::*;
pub use properties::{Properties, UserProperty, MAX_USER_PROPERTIES};
pub use reason::ReasonCode;

use codec::Reader;

/// Protocol version negotiated in CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

/// Why bytes are not a valid MQTT packet. Variants cite the rule they enforce; the broker maps
/// them to DISCONNECT 0x81 (malformed) / 0x82 (protocol error) / 0x95 (too large) for v5
/// clients, or closes the connection for v3.1.1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The buffer ended inside a field.
    #[error("packet truncated")]
    Truncated,
    /// A Variable Byte Integer longer than four bytes [MQTT-1.5.5-1].
    #[error("malformed variable byte integer [MQTT-1.5.5-1]")]
    MalformedVarint,
    /// Packet type 0 or 15 (v3.1.1: 15 is reserved; v5: AUTH is 15) [MQTT-2.1.2].
    #[error("reserved packet type {0}")]
    ReservedPacketType(u8),
    /// A packet type that never travels in this direction: a client receiving CONNECT,
    /// SUBSCRIBE, UNSUBSCRIBE or PINGREQ, which only clients send [MQTT-2.1.2] (protocol
    /// error, 0x82).
    #[error("packet type {0} is only ever sent by clients [MQTT-2.1.2]")]
    UnexpectedPacketType(u8),
    /// Fixed-header flags other than those the packet type requires [MQTT-2.1.3-1].
    #[error("invalid fixed header flags for packet type {0} [MQTT-2.1.3-1]")]
    InvalidFlags(u8),
    /// The declared packet is larger than the receiver's Maximum Packet Size [MQTT-3.1.2-24].
    #[error("packet of {0} bytes exceeds the maximum packet size [MQTT-3.1.2-24]")]
    TooLarge(usize),
    /// Not valid UTF-8 [MQTT-1.5.4-1].
    #[error("string is not valid UTF-8 [MQTT-1.5.4-1]")]
    InvalidUtf8,
    /// A string contains U+0000 [MQTT-1.5.4-2].
    #[error("string contains U+0000 [MQTT-1.5.4-2]")]
    NulInString,
    /// Bytes left over after the last field of a packet [MQTT-2.1.4].
    #[error("{0} trailing bytes after the packet's fields")]
    TrailingBytes(usize),
    /// Protocol name is not "MQTT" [MQTT-3.1.2-1].
    #[error("protocol name is not MQTT [MQTT-3.1.2-1]")]
    BadProtocolName,
    /// Protocol level not 4 or 5 [MQTT-3.1.2-2].
    #[error("unsupported protocol level {0} [MQTT-3.1.2-2]")]
    UnsupportedProtocolLevel(u8),
    /// CONNECT flags: reserved bit set [MQTT-3.1.2-3], will flags inconsistent
    /// [MQTT-3.1.2-11] [MQTT-3.1.2-13] [MQTT-3.1.2-15], or password without username in v3.1.1
    /// [MQTT-3.1.2-22].
    #[error("invalid CONNECT flags [MQTT-3.1.2-3]")]
    InvalidConnectFlags,
    /// QoS 3 [MQTT-3.3.1-4].
    #[error("QoS 3 is not a valid QoS [MQTT-3.3.1-4]")]
    InvalidQos,
    /// A QoS 0 PUBLISH with DUP set [MQTT-3.3.1-2].
    #[error("DUP set on a QoS 0 PUBLISH [MQTT-3.3.1-2]")]
    DupOnQos0,
    /// Packet identifier 0 [MQTT-2.2.1-3].
    #[error("packet identifier must be non-zero [MQTT-2.2.1-3]")]
    ZeroPacketId,
    /// A topic name with wildcards in PUBLISH [MQTT-3.3.2-2].
    #[error("wildcard in a PUBLISH topic name [MQTT-3.3.2-2]")]
    WildcardInTopicName,
    /// SUBSCRIBE/UNSUBSCRIBE without any topic filter [MQTT-3.8.3-3] [MQTT-3.10.3-2].
    #[error("no topic filter [MQTT-3.8.3-3]")]
    NoTopicFilters,
    /// Reserved bits of subscription options set, or retain handling 3 [MQTT-3.8.3-5].
    #[error("invalid subscription options [MQTT-3.8.3-5]")]
    InvalidSubscriptionOptions,
    /// An unknown property identifier [MQTT-2.2.2-2].
    #[error("unknown property identifier 0x{0:02x}")]
    UnknownProperty(u8),
    /// A property not allowed in this packet [MQTT-2.2.2-2].
    #[error("property 0x{0:02x} is not allowed in this packet")]
    PropertyNotAllowed(u8),
    /// A property that may appear once appears twice [MQTT-2.2.2-2].
    #[error("property 0x{0:02x} appears more than once")]
    DuplicateProperty(u8),
    /// A property value out of range (e.g. Receive Maximum 0 [MQTT-3.3.4-?]).
    #[error("invalid value for property 0x{0:02x}")]
    InvalidPropertyValue(u8),
    /// More user properties than the configured cap (a CloudSignal limit).
    #[error("more than {0} user properties")]
    TooManyUserProperties(usize),
    /// A reason code not valid for this packet.
    #[error("reason code 0x{0:02x} is not valid here")]
    InvalidReasonCode(u8),
}

/// The fixed header: packet type, flags and remaining length (§2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// Packet type (1..=15).
    pub packet_type: u8,
    /// The low four bits of the first byte.
    pub flags: u8,
    /// Length of the variable header plus payload.
    pub remaining_len: u32,
    /// Bytes taken by the fixed header itself (2 to 5).
    pub header_len: usize,
}

impl FixedHeader {
    /// Parses a fixed header from the start of `buf`. `Ok(None)` means more bytes are needed.
    /// A packet whose total size would exceed `max_packet_size` is refused here, before its
    /// body is buffered, so a 268,435,455-byte declaration costs nothing.
    pub fn parse(buf: &[u8], max_packet_size: usize) -> Result<Option<Self>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let packet_type = first >> 4;
        let mut remaining_len = 0u32;
        for i in 0..4 {
            let Some(&b) = buf.get(1 + i) else {
                return Ok(None);
            };
            remaining_len |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                let header_len = 2 + i;
                let total = header_len + remaining_len as usize;
                if total > max_packet_size {
                    return Err(DecodeError::TooLarge(total));
                }
                if packet_type == 0 {
                    return Err(DecodeError::ReservedPacketType(0));
                }
                return Ok(Some(Self {
                    packet_type,
                    flags: first & 0x0f,
                    remaining_len,
                    header_len,
                }));
            }
        }
        Err(DecodeError::MalformedVarint)
    }

    /// Total packet size in bytes.
    pub fn packet_len(&self) -> usize {
        self.header_len + self.remaining_len as usize
    }
}

/// Decodes one packet from the start of `buf` if it is complete: `Ok(Some((packet, used)))`.
pub fn decode<'a>(
    buf: &'a [u8],
    protocol: Protocol,
    max_packet_size: usize,
) -> Result<Option<(Packet<'a>, usize)>, DecodeError> {
    decode_with(buf, max_packet_size, |h, r| Packet::decode(h, r, protocol))
}

/// [`decode`] for a client: packets only clients send are refused
/// ([`Packet::decode_from_server`]).
pub fn decode_from_server<'a>(
    buf: &'a [u8],
    protocol: Protocol,
    max_packet_size: usize,
) -> Result<Option<(Packet<'a>, usize)>, DecodeError> {
    decode_with(buf, max_packet_size, |h, r| {
        Packet::decode_from_server(h, r, protocol)
    })
}

fn decode_with<'a>(
    buf: &'a [u8],
    max_packet_size: usize,
    body: impl FnOnce(FixedHeader, Reader<'a>) -> Result<Packet<'a>, DecodeError>,
) -> Result<Option<(Packet<'a>, usize)>, DecodeError> {
    let Some(header) = FixedHeader::parse(buf, max_packet_size)? else {
        return Ok(None);
    };
    let len = header.packet_len();
    if buf.len() < len {
        return Ok(None);
    }
    body(header, Reader::new(&buf[header.header_len..len])).map(|p| Some((p, len)))
}

#[cfg(test)]
mod tests;
