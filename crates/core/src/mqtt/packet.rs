//! The fifteen MQTT control packets, decoded from and encoded to the wire for both protocol
//! versions.

use super::codec::{put_binary, put_string, put_u16, put_varint, Reader};
use super::properties::{Ctx, Properties};
use super::{DecodeError, FixedHeader, Protocol, ReasonCode};
use std::num::NonZeroU16;

/// Quality of service (§4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    /// At most once.
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// From the two wire bits; 3 is refused [MQTT-3.3.1-4].
    pub fn from_bits(b: u8) -> Result<Self, DecodeError> {
        match b {
            0 => Ok(Self::AtMostOnce),
            1 => Ok(Self::AtLeastOnce),
            2 => Ok(Self::ExactlyOnce),
            _ => Err(DecodeError::InvalidQos),
        }
    }
}

/// A packet identifier: never zero [MQTT-2.2.1-3].
pub type PacketId = NonZeroU16;

fn packet_id(r: &mut Reader<'_>) -> Result<PacketId, DecodeError> {
    NonZeroU16::new(r.u16()?).ok_or(DecodeError::ZeroPacketId)
}

/// The will message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will<'a> {
    /// Will QoS.
    pub qos: QoS,
    /// Will retain flag.
    pub retain: bool,
    /// Will properties (v5).
    pub properties: Properties<'a>,
    /// Will topic.
    pub topic: &'a str,
    /// Will payload.
    pub payload: &'a [u8],
}

/// CONNECT (§3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect<'a> {
    /// Protocol version requested.
    pub protocol: Protocol,
    /// Clean Start (v5) / Clean Session (v3.1.1).
    pub clean_start: bool,
    /// Keep alive in seconds.
    pub keep_alive: u16,
    /// CONNECT properties (v5).
    pub properties: Properties<'a>,
    /// Client identifier (may be empty).
    pub client_id: &'a str,
    /// Will message.
    pub will: Option<Will<'a>>,
    /// User name.
    pub username: Option<&'a str>,
    /// Password.
    pub password: Option<&'a [u8]>,
}

/// CONNACK (§3.2). For v3.1.1 the reason is the return code (0..=5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connack<'a> {
    /// Session Present.
    pub session_present: bool,
    /// Reason code (v5) or return code (v3.1.1).
    pub reason: ReasonCode,
    /// CONNACK properties (v5).
    pub properties: Properties<'a>,
}

/// PUBLISH (§3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish<'a> {
    /// DUP flag.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name (may be empty in v5 when a Topic Alias is given).
    pub topic: &'a str,
    /// Packet identifier: present exactly when QoS > 0 [MQTT-2.2.1-2].
    pub packet_id: Option<PacketId>,
    /// PUBLISH properties (v5).
    pub properties: Properties<'a>,
    /// Application message.
    pub payload: &'a [u8],
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP (§3.4–3.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack<'a> {
    /// The acknowledged packet identifier.
    pub packet_id: PacketId,
    /// Reason code (v5; always success in v3.1.1).
    pub reason: ReasonCode,
    /// Properties (v5).
    pub properties: Properties<'a>,
}

/// Subscription options (§3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local (v5).
    pub no_local: bool,
    /// Retain As Published (v5).
    pub retain_as_published: bool,
    /// Retain Handling 0..=2 (v5).
    pub retain_handling: u8,
}

/// SUBSCRIBE (§3.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe<'a> {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// Properties (v5).
    pub properties: Properties<'a>,
    /// Topic filters with their options, in order.
    pub filters: Vec<(&'a str, SubscriptionOptions)>,
}

/// SUBACK and UNSUBACK (§3.9, §3.11). UNSUBACK has no reason codes in v3.1.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck<'a> {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// Properties (v5).
    pub properties: Properties<'a>,
    /// One reason code per filter.
    pub reasons: Vec<ReasonCode>,
}

/// UNSUBSCRIBE (§3.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe<'a> {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// Properties (v5).
    pub properties: Properties<'a>,
    /// Topic filters.
    pub filters: Vec<&'a str>,
}

/// DISCONNECT and AUTH (§3.14, §3.15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonPacket<'a> {
    /// Reason code.
    pub reason: ReasonCode,
    /// Properties (v5).
    pub properties: Properties<'a>,
}

/// An MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Packet<'a> {
    /// CONNECT.
    Connect(Connect<'a>),
    /// CONNACK.
    Connack(Connack<'a>),
    /// PUBLISH.
    Publish(Publish<'a>),
    /// PUBACK.
    Puback(Ack<'a>),
    /// PUBREC.
    Pubrec(Ack<'a>),
    /// PUBREL.
    Pubrel(Ack<'a>),
    /// PUBCOMP.
    Pubcomp(Ack<'a>),
    /// SUBSCRIBE.
    Subscribe(Subscribe<'a>),
    /// SUBACK.
    Suback(SubAck<'a>),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe<'a>),
    /// UNSUBACK.
    Unsuback(SubAck<'a>),
    /// PINGREQ.
    Pingreq,
    /// PINGRESP.
    Pingresp,
    /// DISCONNECT.
    Disconnect(ReasonPacket<'a>),
    /// AUTH (v5 only).
    Auth(ReasonPacket<'a>),
}

fn finish<T>(r: &Reader<'_>, v: T) -> Result<T, DecodeError> {
    if r.is_empty() {
        Ok(v)
    } else {
        Err(DecodeError::TrailingBytes(r.remaining()))
    }
}

impl<'a> Packet<'a> {
    /// The packet type number (1..=15).
    pub fn packet_type(&self) -> u8 {
        match self {
            Self::Connect(_) => 1,
            Self::Connack(_) => 2,
            Self::Publish(_) => 3,
            Self::Puback(_) => 4,
            Self::Pubrec(_) => 5,
            Self::Pubrel(_) => 6,
            Self::Pubcomp(_) => 7,
            Self::Subscribe(_) => 8,
            Self::Suback(_) => 9,
            Self::Unsubscribe(_) => 10,
            Self::Unsuback(_) => 11,
            Self::Pingreq => 12,
            Self::Pingresp => 13,
            Self::Disconnect(_) => 14,
            Self::Auth(_) => 15,
        }
    }

    /// Decodes the body of a packet whose fixed header is `h`, of any type. For CONNECT,
    /// `protocol` is ignored: the packet declares its own level.
    pub fn decode(h: FixedHeader, r: Reader<'a>, protocol: Protocol) -> Result<Self, DecodeError> {
        Self::decode_as::<true>(h, r, protocol)
    }

    /// Decodes a packet a client received: CONNECT, SUBSCRIBE, UNSUBSCRIBE and PINGREQ only
    /// ever travel to a server and are refused with [`DecodeError::UnexpectedPacketType`]. A
    /// client build then carries no decoder for them (the browser package is smaller).
    pub fn decode_from_server(
        h: FixedHeader,
        r: Reader<'a>,
        protocol: Protocol,
    ) -> Result<Self, DecodeError> {
        Self::decode_as::<false>(h, r, protocol)
    }

    /// The decoder; `CLIENT_PACKETS` says whether packets only clients send are accepted.
    fn decode_as<const CLIENT_PACKETS: bool>(
        h: FixedHeader,
        mut r: Reader<'a>,
        protocol: Protocol,
    ) -> Result<Self, DecodeError> {
        if !CLIENT_PACKETS && matches!(h.packet_type, 1 | 8 | 10 | 12) {
            return Err(DecodeError::UnexpectedPacketType(h.packet_type));
        }
        let v5 = protocol == Protocol::V5;
        let expected_flags = match h.packet_type {
            3 => h.flags, // PUBLISH flags are checked below
            6 | 8 | 10 => 0b0010,
            _ => 0,
        };
        if h.flags != expected_flags {
            return Err(DecodeError::InvalidFlags(h.packet_type));
        }
        match h.packet_type {
            1 if CLIENT_PACKETS => {
                Connect::decode(&mut r).and_then(|c| finish(&r, Self::Connect(c)))
            }
            2 => {
                let ack_flags = r.u8()?;
                if ack_flags & 0xfe != 0 {
                    return Err(DecodeError::InvalidFlags(2));
                }
                let reason = ReasonCode(r.u8()?);
                let properties = if v5 {
                    Properties::decode(&mut r, Ctx::Connack)?
                } else {
                    Properties::default()
                };
                finish(
                    &r,
                    Self::Connack(Connack {
                        session_present: ack_flags & 1 == 1,
                        reason,
                        properties,
                    }),
                )
            }
            3 => {
                let qos = QoS::from_bits((h.flags >> 1) & 0b11)?;
                let dup = h.flags & 0b1000 != 0;
                if dup && qos == QoS::AtMostOnce {
                    return Err(DecodeError::DupOnQos0);
                }
                let topic = r.string()?;
                if topic.contains(['+', '#']) {
                    return Err(DecodeError::WildcardInTopicName);
                }
                let packet_id = if qos == QoS::AtMostOnce {
                    None
                } else {
                    Some(packet_id(&mut r)?)
                };
                let properties = if v5 {
                    Properties::decode(&mut r, Ctx::Publish)?
                } else {
                    Properties::default()
                };
                Ok(Self::Publish(Publish {
                    dup,
                    qos,
                    retain: h.flags & 1 != 0,
                    topic,
                    packet_id,
                    properties,
                    payload: r.rest(),
                }))
            }
            4..=7 => {
                let packet_id = packet_id(&mut r)?;
                let (reason, properties) = if v5 && !r.is_empty() {
                    let reason = ReasonCode(r.u8()?);
                    let props = if r.is_empty() {
                        Properties::default()
                    } else {
                        Properties::decode(&mut r, Ctx::Ack)?
                    };
                    (reason, props)
                } else {
                    (ReasonCode::SUCCESS, Properties::default())
                };
                let ack = finish(
                    &r,
                    Ack {
                        packet_id,
                        reason,
                        properties,
                    },
                )?;
                Ok(match h.packet_type {
                    4 => Self::Puback(ack),
                    5 => Self::Pubrec(ack),
                    6 => Self::Pubrel(ack),
                    _ => Self::Pubcomp(ack),
                })
            }
            8 if CLIENT_PACKETS => {
                let packet_id = packet_id(&mut r)?;
                let properties = if v5 {
                    Properties::decode(&mut r, Ctx::Subscribe)?
                } else {
                    Properties::default()
                };
                let mut filters = Vec::new();
                while !r.is_empty() {
                    let f = r.string()?;
                    let o = r.u8()?;
                    let reserved = if v5 { o & 0b1100_0000 } else { o & 0b1111_1100 };
                    let retain_handling = (o >> 4) & 0b11;
                    if reserved != 0 || retain_handling == 3 {
                        return Err(DecodeError::InvalidSubscriptionOptions);
                    }
                    let opts = SubscriptionOptions {
                        qos: QoS::from_bits(o & 0b11)?,
                        no_local: o & 0b0100 != 0,
                        retain_as_published: o & 0b1000 != 0,
                        retain_handling,
                    };
                    filters.push((f, opts));
                }
                if filters.is_empty() {
                    return Err(DecodeError::NoTopicFilters);
                }
                Ok(Self::Subscribe(Subscribe {
                    packet_id,
                    properties,
                    filters,
                }))
            }
            9 | 11 => {
                let packet_id = packet_id(&mut r)?;
                let suback = h.packet_type == 9;
                let properties = if v5 {
                    Properties::decode(&mut r, Ctx::Suback)?
                } else {
                    Properties::default()
                };
                if !v5 && !suback {
                    // a v3.1.1 UNSUBACK is only a packet identifier [MQTT-3.11.2]
                    return finish(
                        &r,
                        Self::Unsuback(SubAck {
                            packet_id,
                            properties,
                            reasons: Vec::new(),
                        }),
                    );
                }
                let reasons: Vec<ReasonCode> = r.rest().iter().map(|b| ReasonCode(*b)).collect();
                if let Some(bad) = reasons
                    .iter()
                    .find(|c| !v5 && !matches!(c.0, 0 | 1 | 2 | 0x80))
                {
                    return Err(DecodeError::InvalidReasonCode(bad.0));
                }
                let ack = SubAck {
                    packet_id,
                    properties,
                    reasons,
                };
                Ok(if suback {
                    Self::Suback(ack)
                } else {
                    Self::Unsuback(ack)
                })
            }
            10 if CLIENT_PACKETS => {
                let packet_id = packet_id(&mut r)?;
                let properties = if v5 {
                    Properties::decode(&mut r, Ctx::Unsubscribe)?
                } else {
                    Properties::default()
                };
                let mut filters = Vec::new();
                while !r.is_empty() {
                    filters.push(r.string()?);
                }
                if filters.is_empty() {
                    return Err(DecodeError::NoTopicFilters);
                }
                Ok(Self::Unsubscribe(Unsubscribe {
                    packet_id,
                    properties,
                    filters,
                }))
            }
            12 if CLIENT_PACKETS => finish(&r, Self::Pingreq),
            13 => finish(&r, Self::Pingresp),
            14 | 15 => {
                if h.packet_type == 15 && !v5 {
                    return Err(DecodeError::ReservedPacketType(15));
                }
                let (reason, properties) = if v5 && !r.is_empty() {
                    let reason = ReasonCode(r.u8()?);
                    let ctx = if h.packet_type == 14 {
                        Ctx::Disconnect
                    } else {
                        Ctx::Auth
                    };
                    let props = if r.is_empty() {
                        Properties::default()
                    } else {
                        Properties::decode(&mut r, ctx)?
                    };
                    (reason, props)
                } else {
                    (ReasonCode::SUCCESS, Properties::default())
                };
                let p = finish(&r, ReasonPacket { reason, properties })?;
                Ok(if h.packet_type == 14 {
                    Self::Disconnect(p)
                } else {
                    Self::Auth(p)
                })
            }
            1 | 8 | 10 | 12 => Err(DecodeError::UnexpectedPacketType(h.packet_type)),
            other => Err(DecodeError::ReservedPacketType(other)),
        }
    }

    /// Appends the encoded packet to `out`.
    pub fn encode(&self, protocol: Protocol, out: &mut Vec<u8>) {
        let v5 = protocol == Protocol::V5;
        let mut body = Vec::new();
        let b = &mut body;
        let mut flags = 0u8;
        match self {
            Self::Connect(c) => c.encode(b),
            Self::Connack(c) => {
                b.push(u8::from(c.session_present));
                b.push(c.reason.0);
                if v5 {
                    c.properties.encode(b);
                }
            }
            Self::Publish(p) => {
                flags = (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain);
                put_string(b, p.topic);
                if let Some(id) = p.packet_id {
                    put_u16(b, id.get());
                }
                if v5 {
                    p.properties.encode(b);
                }
                b.extend_from_slice(p.payload);
            }
            Self::Puback(a) | Self::Pubrec(a) | Self::Pubrel(a) | Self::Pubcomp(a) => {
                if matches!(self, Self::Pubrel(_)) {
                    flags = 0b0010;
                }
                put_u16(b, a.packet_id.get());
                if v5 && (a.reason != ReasonCode::SUCCESS || !a.properties.is_empty()) {
                    b.push(a.reason.0);
                    if !a.properties.is_empty() {
                        a.properties.encode(b);
                    }
                }
            }
            Self::Subscribe(s) => {
                flags = 0b0010;
                put_u16(b, s.packet_id.get());
                if v5 {
                    s.properties.encode(b);
                }
                for (f, o) in &s.filters {
                    put_string(b, f);
                    let mut opts = o.qos as u8;
                    if v5 {
                        opts |= (u8::from(o.no_local) << 2)
                            | (u8::from(o.retain_as_published) << 3)
                            | (o.retain_handling << 4);
                    }
                    b.push(opts);
                }
            }
            Self::Suback(s) | Self::Unsuback(s) => {
                put_u16(b, s.packet_id.get());
                if v5 {
                    s.properties.encode(b);
                }
                if v5 || matches!(self, Self::Suback(_)) {
                    b.extend(s.reasons.iter().map(|r| r.0));
                }
            }
            Self::Unsubscribe(u) => {
                flags = 0b0010;
                put_u16(b, u.packet_id.get());
                if v5 {
                    u.properties.encode(b);
                }
                for f in &u.filters {
                    put_string(b, f);
                }
            }
            Self::Pingreq | Self::Pingresp => {}
            Self::Disconnect(d) | Self::Auth(d) => {
                if v5 && (d.reason != ReasonCode::SUCCESS || !d.properties.is_empty()) {
                    b.push(d.reason.0);
                    if !d.properties.is_empty() {
                        d.properties.encode(b);
                    }
                }
            }
        }
        out.push((self.packet_type() << 4) | flags);
        put_varint(out, body.len() as u32);
        out.extend_from_slice(&body);
    }
}

impl<'a> Connect<'a> {
    fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        if r.string()? != "MQTT" {
            return Err(DecodeError::BadProtocolName);
        }
        let protocol = match r.u8()? {
            4 => Protocol::V311,
            5 => Protocol::V5,
            other => return Err(DecodeError::UnsupportedProtocolLevel(other)),
        };
        let v5 = protocol == Protocol::V5;
        let flags = r.u8()?;
        let will_flag = flags & 0b0000_0100 != 0;
        let will_qos = (flags >> 3) & 0b11;
        let will_retain = flags & 0b0010_0000 != 0;
        let has_password = flags & 0b0100_0000 != 0;
        let has_username = flags & 0b1000_0000 != 0;
        // [MQTT-3.1.2-3] reserved bit; [MQTT-3.1.2-11/13/15] will flags; [MQTT-3.1.2-22] v3.1.1
        if flags & 1 != 0
            || (!will_flag && (will_qos != 0 || will_retain))
            || (!v5 && has_password && !has_username)
        {
            return Err(DecodeError::InvalidConnectFlags);
        }
        let keep_alive = r.u16()?;
        let properties = if v5 {
            Properties::decode(r, Ctx::Connect)?
        } else {
            Properties::default()
        };
        let client_id = r.string()?;
        let will = if will_flag {
            let properties = if v5 {
                Properties::decode(r, Ctx::Will)?
            } else {
                Properties::default()
            };
            let topic = r.string()?;
            if topic.contains(['+', '#']) {
                return Err(DecodeError::WildcardInTopicName);
            }
            Some(Will {
                qos: QoS::from_bits(will_qos)?,
                retain: will_retain,
                properties,
                topic,
                payload: r.binary()?,
            })
        } else {
            None
        };
        let username = if has_username {
            Some(r.string()?)
        } else {
            None
        };
        let password = if has_password {
            Some(r.binary()?)
        } else {
            None
        };
        Ok(Self {
            protocol,
            clean_start: flags & 0b10 != 0,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
        })
    }

    fn encode(&self, b: &mut Vec<u8>) {
        let v5 = self.protocol == Protocol::V5;
        put_string(b, "MQTT");
        b.push(if v5 { 5 } else { 4 });
        let mut flags = u8::from(self.clean_start) << 1;
        if let Some(w) = &self.will {
            flags |= 0b100 | ((w.qos as u8) << 3) | (u8::from(w.retain) << 5);
        }
        if self.password.is_some() {
            flags |= 0b0100_0000;
        }
        if self.username.is_some() {
            flags |= 0b1000_0000;
        }
        b.push(flags);
        put_u16(b, self.keep_alive);
        if v5 {
            self.properties.encode(b);
        }
        put_string(b, self.client_id);
        if let Some(w) = &self.will {
            if v5 {
                w.properties.encode(b);
            }
            put_string(b, w.topic);
            put_binary(b, w.payload);
        }
        if let Some(u) = self.username {
            put_string(b, u);
        }
        if let Some(p) = self.password {
            put_binary(b, p);
        }
    }
}
