//! What a persistent session keeps while its client is away.
//!
//! MQTT keeps a session after its network connection ends when the client asked for a Session
//! Expiry Interval above zero (v5) or connected with Clean Session 0 (v3.1.1) [MQTT-3.1.2-23].
//! The broker keeps the subscriptions itself (they route messages while the client is away);
//! the per-client protocol state lives here: QoS 1/2 messages sent and not acknowledged,
//! messages queued for the client, the next packet id, and the ids of QoS 2 messages received
//! and awaiting PUBREL [MQTT-4.1.0-?]. QoS 0 messages are never stored for an absent client.

use super::outbound::OutboundState;
use super::Delivery;
use crate::mqtt::QoS;
use std::collections::BTreeSet;

/// The protocol state of a session without a connection. Hand it back to
/// [`super::ServerSession::accept`] when the client resumes (Clean Start 0).
#[derive(Debug, Clone, Default)]
pub struct StoredSession {
    pub(crate) outbound: OutboundState,
    pub(crate) awaiting_pubrel: BTreeSet<u16>,
}

impl StoredSession {
    /// An empty session (nothing in flight): what a fresh persistent session starts with.
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages kept for the client: in flight plus queued.
    pub fn len(&self) -> usize {
        self.outbound.inflight.len() + self.outbound.queue.len()
    }

    /// Whether nothing is kept for the client.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues a message routed to the absent client. QoS 0 messages are not kept; at `max`
    /// queued messages, or past `max_bytes` queued bytes (one message always fits an empty
    /// queue), the new one is refused (`false`) and the caller counts the drop.
    pub fn enqueue(&mut self, d: Delivery, max: usize, max_bytes: usize) -> bool {
        let q = &mut self.outbound;
        let size = d.size();
        if d.qos == QoS::AtMostOnce
            || !super::outbound::admits(q.queue.len(), q.queued_bytes, size, max, max_bytes)
        {
            return false;
        }
        q.queued_bytes += size;
        q.queue.push_back(d);
        true
    }

    /// Ages the queued messages by `secs` seconds: their Message Expiry Interval shrinks and
    /// expired ones are discarded [MQTT-3.3.2-5]. Messages already in flight are resent as
    /// they are (the client may hold them). Returns how many were discarded.
    pub fn elapse(&mut self, secs: u64) -> usize {
        let before = self.outbound.queue.len();
        let secs = u32::try_from(secs).unwrap_or(u32::MAX);
        self.outbound.queue.retain_mut(|d| match d.expiry {
            None => true,
            Some(e) if e > secs => {
                d.expiry = Some(e - secs);
                true
            }
            Some(_) => false,
        });
        self.outbound.queued_bytes = self.outbound.queue.iter().map(Delivery::size).sum();
        before - self.outbound.queue.len()
    }
}
