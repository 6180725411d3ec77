//! CONNECT handling: routing the CONNECT to the driver, then its acceptance (CONNACK, with a
//! resumed session if any) or refusal.

use super::{
    CloseReason, ConnectRequest, Event, ForwardedProperties, Message, Millis, ServerSession, State,
    StoredSession,
};
use crate::mqtt::{Connack, Packet, Properties, Protocol, ReasonCode, ReasonPacket};
use crate::topic::TopicName;

impl ServerSession {
    pub(super) fn on_connect(&mut self, c: crate::mqtt::Connect<'_>) {
        self.protocol = c.protocol;
        self.state = State::Authenticating;
        self.outbound.window = c.properties.receive_maximum.unwrap_or(u16::MAX);
        self.outbound.max_packet_size = c.properties.maximum_packet_size;
        self.outbound.aliases = match c.protocol {
            Protocol::V5 => super::outbound::Aliases::new(
                c.properties
                    .topic_alias_maximum
                    .unwrap_or(0)
                    .min(self.config.max_outbound_aliases),
            ),
            _ => None,
        };
        self.auth_method = c.properties.authentication_method.map(str::to_owned);
        self.deadline = None;
        let will = match &c.will {
            Some(w) => match TopicName::parse_with_limit(w.topic, self.config.max_topic_levels) {
                Ok(topic) => Some(Message {
                    topic,
                    payload: w.payload.to_vec(),
                    qos: w.qos,
                    retain: w.retain,
                    expiry: w.properties.message_expiry_interval,
                    forwarded: forwarded(&w.properties),
                }),
                Err(e) => {
                    self.violation(ReasonCode::TOPIC_NAME_INVALID, format!("will topic: {e}"));
                    return;
                }
            },
            None => None,
        };
        self.requested_expiry = match c.protocol {
            Protocol::V5 => c.properties.session_expiry_interval.unwrap_or(0),
            Protocol::V311 if c.clean_start => 0,
            Protocol::V311 => u32::MAX,
        };
        self.session_expiry = self.requested_expiry.min(self.config.max_session_expiry);
        let session_expiry = self.session_expiry;
        self.events.push_back(Event::Connect(ConnectRequest {
            protocol: c.protocol,
            client_id: c.client_id.to_owned(),
            clean_start: c.clean_start,
            keep_alive: c.keep_alive,
            username: c.username.map(str::to_owned),
            password: c.password.map(<[u8]>::to_vec),
            auth_method: c.properties.authentication_method.map(str::to_owned),
            auth_data: c.properties.authentication_data.map(<[u8]>::to_vec),
            session_expiry,
            will_delay: c
                .will
                .as_ref()
                .and_then(|w| w.properties.will_delay_interval)
                .unwrap_or(0),
            will,
        }));
    }

    pub(super) fn on_auth(&mut self, a: ReasonPacket<'_>) {
        self.events.push_back(Event::Auth {
            reason: a.reason,
            method: a.properties.authentication_method.map(str::to_owned),
            data: a.properties.authentication_data.map(<[u8]>::to_vec),
        });
    }

    /// Accepts the pending CONNECT. `assigned_client_id` is announced to v5 clients that sent
    /// an empty one; `resumed` is the stored session the client returns to (Clean Start 0),
    /// which sets Session Present and resends what was unacknowledged [MQTT-4.4.0-1].
    pub fn accept(
        &mut self,
        now: Millis,
        resumed: Option<StoredSession>,
        assigned_client_id: Option<&str>,
        will_pending: bool,
        keep_alive: u16,
    ) {
        if self.state != State::Authenticating {
            return;
        }
        let mut keep = keep_alive;
        if self.config.max_keep_alive > 0 && (keep == 0 || keep > self.config.max_keep_alive) {
            keep = self.config.max_keep_alive;
        }
        self.keep_alive_ms = u64::from(keep) * 1500;
        self.deadline = (self.keep_alive_ms > 0).then(|| now + self.keep_alive_ms);
        self.will_pending = will_pending;
        self.state = State::Connected;
        let properties = if self.protocol == Protocol::V5 {
            Properties {
                receive_maximum: Some(self.config.receive_maximum),
                maximum_packet_size: Some(self.config.max_packet_size),
                topic_alias_maximum: Some(self.config.topic_alias_maximum),
                assigned_client_identifier: assigned_client_id,
                server_keep_alive: (keep != keep_alive).then_some(keep),
                session_expiry_interval: (self.session_expiry != self.requested_expiry)
                    .then_some(self.session_expiry),
                authentication_method: self.auth_method.as_deref(),
                ..Properties::default()
            }
        } else {
            Properties::default()
        };
        let connack = Packet::Connack(Connack {
            session_present: resumed.is_some(),
            reason: ReasonCode::SUCCESS,
            properties,
        });
        connack.encode(self.protocol, &mut self.transmit);
        if let Some(stored) = resumed {
            self.awaiting_pubrel = stored.awaiting_pubrel;
            self.outbound
                .restore(stored.outbound, self.protocol, &mut self.transmit);
        }
        // now process whatever the client pipelined behind its CONNECT
        self.handle_bytes(&[], now);
    }

    /// Refuses the pending CONNECT with a v5 reason code; v3.1.1 clients get the matching
    /// return code (0x86 → 4, 0x87 → 5, 0x85 → 2, 0x84 → 1, otherwise 3).
    pub fn reject(&mut self, reason: ReasonCode) {
        if self.state != State::Authenticating {
            return;
        }
        let code = match self.protocol {
            Protocol::V5 => reason,
            Protocol::V311 => ReasonCode(match reason {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => 1,
                ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => 2,
                ReasonCode::BAD_USERNAME_OR_PASSWORD => 4,
                ReasonCode::NOT_AUTHORIZED => 5,
                _ => 3,
            }),
        };
        self.send(&Packet::Connack(Connack {
            session_present: false,
            reason: code,
            properties: Properties::default(),
        }));
        self.finish(CloseReason::Rejected(reason), false);
    }
}

/// Whether `bytes` start like an MQTT 5 CONNECT: type 1 with flags 0, a remaining length, the
/// protocol name "MQTT" and level 5.
pub(super) fn announces_v5_connect(bytes: &[u8]) -> bool {
    let Some((&0x10, rest)) = bytes.split_first() else {
        return false;
    };
    let Some(len_bytes) = rest.iter().position(|b| b & 0x80 == 0).filter(|&n| n < 4) else {
        return false;
    };
    rest.get(len_bytes + 1..len_bytes + 8) == Some(&[0, 4, b'M', b'Q', b'T', b'T', 5][..])
}

pub(super) fn forwarded(p: &Properties<'_>) -> ForwardedProperties {
    ForwardedProperties {
        payload_format_indicator: p.payload_format_indicator,
        content_type: p.content_type.map(str::to_owned),
        response_topic: p.response_topic.map(str::to_owned),
        correlation_data: p.correlation_data.map(<[u8]>::to_vec),
        user_properties: p
            .user_properties
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}
