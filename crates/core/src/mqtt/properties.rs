//! MQTT 5 properties (§2.2.2): every property, checked for the packet it appears in, for
//! duplicates, and with a cap on user properties so thousands of them parse in linear time
//! and bounded memory.

use super::codec::{put_binary, put_string, put_u16, put_u32, put_varint, Reader};
use super::DecodeError;

/// Default cap on user properties per packet (a CloudSignal limit, not a spec rule).
pub const MAX_USER_PROPERTIES: usize = 128;

/// A user property (name, value), order and duplicates preserved [MQTT-3.3.2-18].
pub type UserProperty<'a> = (&'a str, &'a str);

/// Where a property block appears; decides which properties are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ctx {
    Connect,
    Will,
    Connack,
    Publish,
    Ack,
    Subscribe,
    Suback,
    Unsubscribe,
    Disconnect,
    Auth,
}

/// The properties of one packet. Absent properties are `None` / empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties<'a> {
    /// 0x01 Payload Format Indicator.
    pub payload_format_indicator: Option<u8>,
    /// 0x02 Message Expiry Interval (seconds).
    pub message_expiry_interval: Option<u32>,
    /// 0x03 Content Type.
    pub content_type: Option<&'a str>,
    /// 0x08 Response Topic.
    pub response_topic: Option<&'a str>,
    /// 0x09 Correlation Data.
    pub correlation_data: Option<&'a [u8]>,
    /// 0x0B Subscription Identifier(s): one in SUBSCRIBE, possibly several in PUBLISH.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11 Session Expiry Interval (seconds).
    pub session_expiry_interval: Option<u32>,
    /// 0x12 Assigned Client Identifier.
    pub assigned_client_identifier: Option<&'a str>,
    /// 0x13 Server Keep Alive (seconds).
    pub server_keep_alive: Option<u16>,
    /// 0x15 Authentication Method.
    pub authentication_method: Option<&'a str>,
    /// 0x16 Authentication Data.
    pub authentication_data: Option<&'a [u8]>,
    /// 0x17 Request Problem Information.
    pub request_problem_information: Option<u8>,
    /// 0x18 Will Delay Interval (seconds).
    pub will_delay_interval: Option<u32>,
    /// 0x19 Request Response Information.
    pub request_response_information: Option<u8>,
    /// 0x1A Response Information.
    pub response_information: Option<&'a str>,
    /// 0x1C Server Reference.
    pub server_reference: Option<&'a str>,
    /// 0x1F Reason String.
    pub reason_string: Option<&'a str>,
    /// 0x21 Receive Maximum (non-zero).
    pub receive_maximum: Option<u16>,
    /// 0x22 Topic Alias Maximum.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23 Topic Alias (non-zero).
    pub topic_alias: Option<u16>,
    /// 0x24 Maximum QoS (0 or 1).
    pub maximum_qos: Option<u8>,
    /// 0x25 Retain Available (0 or 1).
    pub retain_available: Option<u8>,
    /// 0x26 User Properties.
    pub user_properties: Vec<UserProperty<'a>>,
    /// 0x27 Maximum Packet Size (non-zero).
    pub maximum_packet_size: Option<u32>,
    /// 0x28 Wildcard Subscription Available (0 or 1).
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29 Subscription Identifier Available (0 or 1).
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A Shared Subscription Available (0 or 1).
    pub shared_subscription_available: Option<u8>,
}

fn allowed(id: u8, ctx: Ctx) -> bool {
    use Ctx::*;
    match id {
        0x01..=0x03 | 0x08 | 0x09 => matches!(ctx, Publish | Will),
        0x0B => matches!(ctx, Publish | Subscribe),
        0x11 => matches!(ctx, Connect | Connack | Disconnect),
        0x12 | 0x13 | 0x1A | 0x24 | 0x25 | 0x28..=0x2A => ctx == Connack,
        0x15 | 0x16 => matches!(ctx, Connect | Connack | Auth),
        0x17 | 0x19 => ctx == Connect,
        0x18 => ctx == Will,
        0x1C => matches!(ctx, Connack | Disconnect),
        0x1F => matches!(ctx, Connack | Ack | Suback | Disconnect | Auth),
        0x21 | 0x22 | 0x27 => matches!(ctx, Connect | Connack),
        0x23 => ctx == Publish,
        0x26 => true,
        _ => false,
    }
}

fn set<T>(slot: &mut Option<T>, id: u8, v: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty(id));
    }
    *slot = Some(v);
    Ok(())
}

fn flag(r: &mut Reader<'_>, id: u8) -> Result<u8, DecodeError> {
    match r.u8()? {
        v @ (0 | 1) => Ok(v),
        _ => Err(DecodeError::InvalidPropertyValue(id)),
    }
}

fn nonzero_u16(r: &mut Reader<'_>, id: u8) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::InvalidPropertyValue(id)),
        v => Ok(v),
    }
}

impl<'a> Properties<'a> {
    /// Decodes a property block (length prefix included) for a packet of kind `ctx`.
    pub(crate) fn decode(r: &mut Reader<'a>, ctx: Ctx) -> Result<Self, DecodeError> {
        let len = r.varint()?;
        let mut r = r.sub(len as usize)?;
        let mut p = Properties::default();
        while !r.is_empty() {
            // Identifiers are Variable Byte Integers, but every defined one fits in one byte.
            let id = r.varint()?;
            let id = u8::try_from(id).map_err(|_| DecodeError::UnknownProperty(0xff))?;
            if !allowed(id, ctx) {
                return Err(
                    if matches!(id, 0x01..=0x03 | 0x08 | 0x09 | 0x0B | 0x11..=0x13 | 0x15..=0x19 | 0x1A | 0x1C | 0x1F | 0x21..=0x2A)
                    {
                        DecodeError::PropertyNotAllowed(id)
                    } else {
                        DecodeError::UnknownProperty(id)
                    },
                );
            }
            match id {
                0x01 => set(&mut p.payload_format_indicator, id, flag(&mut r, id)?)?,
                0x02 => set(&mut p.message_expiry_interval, id, r.u32()?)?,
                0x03 => set(&mut p.content_type, id, r.string()?)?,
                0x08 => set(&mut p.response_topic, id, r.string()?)?,
                0x09 => set(&mut p.correlation_data, id, r.binary()?)?,
                0x0B => {
                    let v = r.varint()?;
                    if v == 0 {
                        return Err(DecodeError::InvalidPropertyValue(id));
                    }
                    if ctx == Ctx::Subscribe && !p.subscription_identifiers.is_empty() {
                        return Err(DecodeError::DuplicateProperty(id));
                    }
                    if p.subscription_identifiers.len() >= MAX_USER_PROPERTIES {
                        return Err(DecodeError::InvalidPropertyValue(id));
                    }
                    p.subscription_identifiers.push(v);
                }
                0x11 => set(&mut p.session_expiry_interval, id, r.u32()?)?,
                0x12 => set(&mut p.assigned_client_identifier, id, r.string()?)?,
                0x13 => set(&mut p.server_keep_alive, id, r.u16()?)?,
                0x15 => set(&mut p.authentication_method, id, r.string()?)?,
                0x16 => set(&mut p.authentication_data, id, r.binary()?)?,
                0x17 => set(&mut p.request_problem_information, id, flag(&mut r, id)?)?,
                0x18 => set(&mut p.will_delay_interval, id, r.u32()?)?,
                0x19 => set(&mut p.request_response_information, id, flag(&mut r, id)?)?,
                0x1A => set(&mut p.response_information, id, r.string()?)?,
                0x1C => set(&mut p.server_reference, id, r.string()?)?,
                0x1F => set(&mut p.reason_string, id, r.string()?)?,
                0x21 => set(&mut p.receive_maximum, id, nonzero_u16(&mut r, id)?)?,
                0x22 => set(&mut p.topic_alias_maximum, id, r.u16()?)?,
                0x23 => set(&mut p.topic_alias, id, nonzero_u16(&mut r, id)?)?,
                0x24 => set(&mut p.maximum_qos, id, flag(&mut r, id)?)?,
                0x25 => set(&mut p.retain_available, id, flag(&mut r, id)?)?,
                0x26 => {
                    if p.user_properties.len() >= MAX_USER_PROPERTIES {
                        return Err(DecodeError::TooManyUserProperties(MAX_USER_PROPERTIES));
                    }
                    let k = r.string()?;
                    let v = r.string()?;
                    p.user_properties.push((k, v));
                }
                0x27 => match r.u32()? {
                    0 => return Err(DecodeError::InvalidPropertyValue(id)),
                    v => set(&mut p.maximum_packet_size, id, v)?,
                },
                0x28 => set(
                    &mut p.wildcard_subscription_available,
                    id,
                    flag(&mut r, id)?,
                )?,
                0x29 => set(
                    &mut p.subscription_identifier_available,
                    id,
                    flag(&mut r, id)?,
                )?,
                0x2A => set(&mut p.shared_subscription_available, id, flag(&mut r, id)?)?,
                other => return Err(DecodeError::UnknownProperty(other)),
            }
        }
        Ok(p)
    }

    /// Appends the property block (length prefix included).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::new();
        let b = &mut body;
        let byte = |b: &mut Vec<u8>, id: u8, v: Option<u8>| {
            if let Some(v) = v {
                b.extend_from_slice(&[id, v]);
            }
        };
        let u16p = |b: &mut Vec<u8>, id: u8, v: Option<u16>| {
            if let Some(v) = v {
                b.push(id);
                put_u16(b, v);
            }
        };
        let u32p = |b: &mut Vec<u8>, id: u8, v: Option<u32>| {
            if let Some(v) = v {
                b.push(id);
                put_u32(b, v);
            }
        };
        let strp = |b: &mut Vec<u8>, id: u8, v: Option<&str>| {
            if let Some(v) = v {
                b.push(id);
                put_string(b, v);
            }
        };
        let binp = |b: &mut Vec<u8>, id: u8, v: Option<&[u8]>| {
            if let Some(v) = v {
                b.push(id);
                put_binary(b, v);
            }
        };
        byte(b, 0x01, self.payload_format_indicator);
        u32p(b, 0x02, self.message_expiry_interval);
        strp(b, 0x03, self.content_type);
        strp(b, 0x08, self.response_topic);
        binp(b, 0x09, self.correlation_data);
        for id in &self.subscription_identifiers {
            b.push(0x0B);
            put_varint(b, *id);
        }
        u32p(b, 0x11, self.session_expiry_interval);
        strp(b, 0x12, self.assigned_client_identifier);
        u16p(b, 0x13, self.server_keep_alive);
        strp(b, 0x15, self.authentication_method);
        binp(b, 0x16, self.authentication_data);
        byte(b, 0x17, self.request_problem_information);
        u32p(b, 0x18, self.will_delay_interval);
        byte(b, 0x19, self.request_response_information);
        strp(b, 0x1A, self.response_information);
        strp(b, 0x1C, self.server_reference);
        strp(b, 0x1F, self.reason_string);
        u16p(b, 0x21, self.receive_maximum);
        u16p(b, 0x22, self.topic_alias_maximum);
        u16p(b, 0x23, self.topic_alias);
        byte(b, 0x24, self.maximum_qos);
        byte(b, 0x25, self.retain_available);
        for (k, v) in &self.user_properties {
            b.push(0x26);
            put_string(b, k);
            put_string(b, v);
        }
        u32p(b, 0x27, self.maximum_packet_size);
        byte(b, 0x28, self.wildcard_subscription_available);
        byte(b, 0x29, self.subscription_identifier_available);
        byte(b, 0x2A, self.shared_subscription_available);
        put_varint(out, body.len() as u32);
        out.extend_from_slice(&body);
    }

    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}
