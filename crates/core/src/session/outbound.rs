//! The outbound half of a session: messages to the client, packet identifiers, the inflight
//! window bounded by the client's Receive Maximum, and a bounded queue behind it.
//!
//! Slow-consumer policy (documented in the broker): QoS 0 messages are sent at once and never
//! queued here (the driver drops them when the socket backs up); QoS 1/2 messages beyond the
//! window wait in a queue of at most `max_queued` entries and `max_queued_bytes` bytes; when it
//! is full the delivery is
//! refused with [`Deliver::QueueFull`] and the broker disconnects the client with 0x97.
//!
//! Topic aliases (v5): when the client's CONNECT allows them (Topic Alias Maximum > 0), a
//! topic gets an alias the first time it is delivered (sent with its name), and later
//! deliveries on this connection send the alias alone [MQTT-3.3.2-12]; with every alias taken,
//! the oldest assignment is replaced (a PUBLISH with the alias and the new name). Aliases never
//! exceed the client's maximum [MQTT-3.3.2-9] and last for this connection only
//! [MQTT-3.3.2-7]: a resent (DUP) message always carries its topic name.

use super::Message;
use crate::mqtt::{Ack, Packet, PacketId, Properties, Protocol, Publish, QoS, ReasonCode};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::num::NonZeroU16;
use std::sync::Arc;

/// One message on its way to one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The message (shared between all its subscribers).
    pub message: Arc<Message>,
    /// QoS for this subscriber: min(published QoS, granted QoS).
    pub qos: QoS,
    /// RETAIN flag as this subscriber sees it (retain-as-published, retained replay).
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions (v5).
    pub subscription_ids: Vec<u32>,
    /// Remaining Message Expiry Interval, if the message has one.
    pub expiry: Option<u32>,
}

impl Delivery {
    /// What it weighs in a queue: its topic and payload bytes.
    pub fn size(&self) -> usize {
        self.message.topic.as_str().len() + self.message.payload.len()
    }
}

/// Whether a queue of `len` deliveries holding `bytes` takes one more of `size` bytes, within
/// `max` deliveries and `max_bytes` bytes (one delivery always fits an empty queue). The rule
/// of a live session's queue and of a stored one.
pub(crate) fn admits(len: usize, bytes: usize, size: usize, max: usize, max_bytes: usize) -> bool {
    len < max && (len == 0 || bytes + size <= max_bytes)
}

/// What happened to a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deliver {
    /// Written to the transmit buffer.
    Sent,
    /// Waiting for the inflight window.
    Queued,
    /// The message is larger than the client's Maximum Packet Size and was discarded
    /// [MQTT-3.1.2-25].
    TooLarge,
    /// The queue is full: disconnect the client (0x97 Quota exceeded).
    QueueFull,
}

/// What an inflight message waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inflight {
    Puback,
    Pubrec,
    Pubcomp,
}

#[derive(Debug)]
pub(crate) struct Outbound {
    next_id: u16,
    inflight: BTreeMap<u16, (Inflight, Delivery)>,
    queue: VecDeque<Delivery>,
    /// The client's Receive Maximum (65,535 when it sets none).
    pub(crate) window: u16,
    /// The client's Maximum Packet Size, if it set one.
    pub(crate) max_packet_size: Option<u32>,
    pub(crate) max_queued: usize,
    pub(crate) max_queued_bytes: usize,
    /// Bytes in `queue` (see [`Delivery::size`]).
    queued_bytes: usize,
    /// Topic aliases this connection may use (boxed: only clients that allow them pay).
    pub(crate) aliases: Option<Box<Aliases>>,
}

/// The server's topic aliases on one connection.
#[derive(Debug, Default)]
pub(crate) struct Aliases {
    max: u16,
    by_topic: HashMap<String, u16>,
    /// Topic of alias `i + 1`.
    topics: Vec<String>,
    /// The alias replaced last (round robin once all are taken).
    replaced: u16,
}

/// How a PUBLISH names its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Naming {
    /// The topic name alone.
    Name,
    /// The topic name, establishing (or changing) alias `n`.
    Set(u16),
    /// Alias `n` alone (an empty topic name).
    Use(u16),
}

impl Aliases {
    /// Aliases for a client allowing `max` of them (`None` for 0).
    pub(crate) fn new(max: u16) -> Option<Box<Self>> {
        (max > 0).then(|| {
            Box::new(Self {
                max,
                ..Self::default()
            })
        })
    }

    /// How to name `topic` now (nothing changes until [`Self::commit`]).
    fn naming(&self, topic: &str) -> Naming {
        if let Some(a) = self.by_topic.get(topic) {
            return Naming::Use(*a);
        }
        let free = u16::try_from(self.topics.len()).unwrap_or(u16::MAX);
        if free < self.max {
            Naming::Set(free + 1)
        } else {
            Naming::Set(self.replaced % self.max + 1)
        }
    }

    /// Records that alias `n` now names `topic` (the PUBLISH carrying both was sent).
    fn commit(&mut self, topic: &str, n: u16) {
        let i = usize::from(n - 1);
        if i < self.topics.len() {
            let old = std::mem::replace(&mut self.topics[i], topic.to_owned());
            self.by_topic.remove(&old);
            self.replaced = n;
        } else {
            self.topics.push(topic.to_owned());
        }
        self.by_topic.insert(topic.to_owned(), n);
    }
}

impl Outbound {
    pub(crate) fn new(max_queued: usize, max_queued_bytes: usize) -> Self {
        Self {
            next_id: 1,
            inflight: BTreeMap::new(),
            queue: VecDeque::new(),
            window: u16::MAX,
            max_packet_size: None,
            max_queued,
            max_queued_bytes,
            queued_bytes: 0,
            aliases: None,
        }
    }

    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    pub(crate) fn inflight(&self) -> usize {
        self.inflight.len()
    }

    fn allocate_id(&mut self) -> Option<PacketId> {
        for _ in 0..u16::MAX {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&id) {
                return NonZeroU16::new(id);
            }
        }
        None
    }

    /// Offers a delivery; encodes it into `out` when it can go now.
    pub(crate) fn deliver(
        &mut self,
        d: Delivery,
        protocol: Protocol,
        out: &mut Vec<u8>,
    ) -> Deliver {
        if d.qos == QoS::AtMostOnce {
            return self.write_fresh(&d, None, protocol, out);
        }
        if self.inflight.len() >= usize::from(self.window) || !self.queue.is_empty() {
            let size = d.size();
            let (len, bytes) = (self.queue.len(), self.queued_bytes);
            if !admits(len, bytes, size, self.max_queued, self.max_queued_bytes) {
                return Deliver::QueueFull;
            }
            self.queued_bytes += size;
            self.queue.push_back(d);
            return Deliver::Queued;
        }
        self.send_qos(d, protocol, out)
    }

    fn send_qos(&mut self, d: Delivery, protocol: Protocol, out: &mut Vec<u8>) -> Deliver {
        let Some(id) = self.allocate_id() else {
            return Deliver::QueueFull;
        };
        let outcome = self.write_fresh(&d, Some(id), protocol, out);
        if outcome == Deliver::Sent {
            let state = if d.qos == QoS::AtLeastOnce {
                Inflight::Puback
            } else {
                Inflight::Pubrec
            };
            self.inflight.insert(id.get(), (state, d));
        }
        outcome
    }

    /// Writes a first delivery, with a topic alias when the connection has them.
    fn write_fresh(
        &mut self,
        d: &Delivery,
        id: Option<PacketId>,
        protocol: Protocol,
        out: &mut Vec<u8>,
    ) -> Deliver {
        let topic = d.message.topic.as_str();
        let naming = match &self.aliases {
            Some(a) if protocol == Protocol::V5 => a.naming(topic),
            _ => Naming::Name,
        };
        let outcome = self.write(d, id, false, naming, protocol, out);
        if let (Deliver::Sent, Naming::Set(n), Some(a)) = (outcome, naming, &mut self.aliases) {
            a.commit(topic, n);
        }
        outcome
    }

    fn write(
        &self,
        d: &Delivery,
        id: Option<PacketId>,
        dup: bool,
        naming: Naming,
        protocol: Protocol,
        out: &mut Vec<u8>,
    ) -> Deliver {
        let m = &d.message;
        let f = &m.forwarded;
        let topic_alias = match naming {
            Naming::Name => None,
            Naming::Set(n) | Naming::Use(n) => Some(n),
        };
        let properties = if protocol == Protocol::V5 {
            Properties {
                topic_alias,
                subscription_identifiers: d.subscription_ids.clone(),
                ..super::forwarded_properties(f, d.expiry)
            }
        } else {
            Properties::default()
        };
        let packet = Packet::Publish(Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic: if matches!(naming, Naming::Use(_)) {
                ""
            } else {
                m.topic.as_str()
            },
            packet_id: id,
            properties,
            payload: &m.payload,
        });
        let start = out.len();
        packet.encode(protocol, out);
        if self
            .max_packet_size
            .is_some_and(|max| out.len() - start > max as usize)
        {
            out.truncate(start);
            return Deliver::TooLarge;
        }
        Deliver::Sent
    }

    fn pump(&mut self, protocol: Protocol, out: &mut Vec<u8>) {
        while self.inflight.len() < usize::from(self.window) {
            let Some(d) = self.queue.pop_front() else {
                return;
            };
            self.queued_bytes = self.queued_bytes.saturating_sub(d.size());
            self.send_qos(d, protocol, out);
        }
    }

    /// Handles PUBACK, PUBREC or PUBCOMP from the client. `Err` means the acknowledgement
    /// matches nothing in flight (a protocol error).
    pub(crate) fn on_ack(
        &mut self,
        packet: &Packet<'_>,
        protocol: Protocol,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let (kind, ack) = match packet {
            Packet::Puback(a) => ("PUBACK", a),
            Packet::Pubrec(a) => ("PUBREC", a),
            Packet::Pubcomp(a) => ("PUBCOMP", a),
            _ => return Ok(()),
        };
        let id = ack.packet_id.get();
        let expected = match self.inflight.get(&id) {
            Some((Inflight::Puback, _)) => "PUBACK",
            Some((Inflight::Pubrec, _)) => "PUBREC",
            Some((Inflight::Pubcomp, _)) => "PUBCOMP",
            None => return Err(format!("{kind} for packet id {id}, which is not in flight")),
        };
        if expected != kind {
            return Err(format!(
                "{kind} for packet id {id}, which awaits {expected}"
            ));
        }
        if kind == "PUBREC" && !ack.reason.is_error() {
            if let Some(entry) = self.inflight.get_mut(&id) {
                entry.0 = Inflight::Pubcomp;
            }
            Packet::Pubrel(Ack {
                packet_id: ack.packet_id,
                reason: ReasonCode::SUCCESS,
                properties: Properties::default(),
            })
            .encode(protocol, out);
        } else {
            self.inflight.remove(&id);
        }
        self.pump(protocol, out);
        Ok(())
    }

    /// Everything not yet acknowledged, for a persistent session to resend on reconnect.
    pub(crate) fn unacknowledged(&self) -> impl Iterator<Item = &Delivery> {
        self.inflight
            .values()
            .map(|(_, d)| d)
            .chain(self.queue.iter())
    }

    pub(crate) fn release_memory(&mut self) {
        if self.queue.is_empty() {
            self.queue = VecDeque::new();
        }
    }

    /// Moves out what a persistent session keeps: messages in flight and queued.
    pub(crate) fn take(&mut self) -> OutboundState {
        OutboundState {
            next_id: self.next_id,
            inflight: std::mem::take(&mut self.inflight),
            queue: std::mem::take(&mut self.queue),
            queued_bytes: std::mem::take(&mut self.queued_bytes),
        }
    }

    /// Resumes a stored session: every unacknowledged PUBLISH is sent again with DUP set and
    /// its original packet id, every PUBREL again [MQTT-4.4.0-1]; then the queue moves into
    /// the (new) window.
    pub(crate) fn restore(&mut self, state: OutboundState, protocol: Protocol, out: &mut Vec<u8>) {
        self.next_id = state.next_id.max(1);
        self.queue = state.queue;
        self.queued_bytes = self.queue.iter().map(Delivery::size).sum();
        for (id, (stage, d)) in state.inflight {
            let Some(pid) = NonZeroU16::new(id) else {
                continue;
            };
            if stage == Inflight::Pubcomp {
                Packet::Pubrel(Ack {
                    packet_id: pid,
                    reason: ReasonCode::SUCCESS,
                    properties: Properties::default(),
                })
                .encode(protocol, out);
            } else if self.write(&d, Some(pid), true, Naming::Name, protocol, out) != Deliver::Sent
            {
                // larger than this connection's Maximum Packet Size [MQTT-3.1.2-25]
                continue;
            }
            self.inflight.insert(id, (stage, d));
        }
        self.pump(protocol, out);
    }
}

/// The outbound half of a stored session.
#[derive(Debug, Clone, Default)]
pub(crate) struct OutboundState {
    pub(crate) next_id: u16,
    pub(crate) inflight: BTreeMap<u16, (Inflight, Delivery)>,
    pub(crate) queue: VecDeque<Delivery>,
    /// Bytes in `queue`.
    pub(crate) queued_bytes: usize,
}
