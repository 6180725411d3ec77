//! A connection's bounded queue of deliveries from the router, and its kill switch.
//!
//! A `tokio::sync::mpsc` channel allocates a block of 32 slots up front, about 2 KB per
//! connection whether or not a message ever arrives; this queue allocates only while messages
//! wait, and the consumer takes the whole backlog at once (one lock, one wake-up per burst), so
//! an idle connection holds an empty `VecDeque` and a `Notify`. A close order (takeover, slow
//! consumer, revocation, shutdown) travels through the same wake-up and overtakes queued
//! deliveries.

use cloudsignal_core::mqtt::{QoS, ReasonCode};
use cloudsignal_core::session::Delivery;
use parking_lot::Mutex;
use std::collections::VecDeque;
use tokio::sync::Notify;

/// Why a delivery was not queued.
#[derive(Debug)]
pub enum Refused {
    /// The queue holds `capacity` deliveries: the consumer is slow.
    Full,
    /// The connection has ended.
    Closed,
}

/// What the connection task is told.
#[derive(Debug)]
pub enum Mail {
    /// Close the connection with this reason code and reason string.
    Close(ReasonCode, Option<String>),
    /// Deliver these, in order.
    Deliveries(VecDeque<Delivery>),
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Delivery>,
    closed: bool,
    kill: Option<(ReasonCode, Option<String>)>,
}

/// A bounded multi-producer, single-consumer queue of deliveries.
#[derive(Debug)]
pub struct Mailbox {
    state: Mutex<State>,
    ready: Notify,
    capacity: usize,
}

impl Mailbox {
    /// A queue holding at most `capacity` deliveries.
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            capacity,
        }
    }

    /// Queues a delivery without waiting. When the queue is full, a QoS 1/2 delivery takes the
    /// place of the oldest queued QoS 0 one (the slow-consumer policy drops QoS 0 first);
    /// `Ok(true)` says a QoS 0 message was dropped for it.
    pub fn try_send(&self, d: Delivery) -> Result<bool, Refused> {
        let mut q = self.state.lock();
        if q.closed {
            return Err(Refused::Closed);
        }
        let mut evicted = false;
        if q.queue.len() >= self.capacity {
            let qos0 = q.queue.iter().position(|x| x.qos == QoS::AtMostOnce);
            match qos0 {
                Some(i) if d.qos != QoS::AtMostOnce => {
                    q.queue.remove(i);
                    evicted = true;
                }
                _ => return Err(Refused::Full),
            }
        }
        q.queue.push_back(d);
        drop(q);
        self.ready.notify_one();
        Ok(evicted)
    }

    /// Orders the connection closed (the first order wins).
    pub fn kill(&self, reason: ReasonCode, text: Option<String>) {
        self.state.lock().kill.get_or_insert((reason, text));
        self.ready.notify_one();
    }

    /// Waits for a close order or deliveries; a close order comes first.
    pub async fn recv(&self) -> Mail {
        loop {
            {
                let mut q = self.state.lock();
                if let Some((reason, text)) = q.kill.take() {
                    return Mail::Close(reason, text);
                }
                if !q.queue.is_empty() {
                    return Mail::Deliveries(std::mem::take(&mut q.queue));
                }
            }
            // a notification sent between the check and here is kept as a permit, not lost
            self.ready.notified().await;
        }
    }

    /// Refuses further deliveries and returns what is still queued.
    pub fn close(&self) -> VecDeque<Delivery> {
        let mut q = self.state.lock();
        q.closed = true;
        std::mem::take(&mut q.queue)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cloudsignal_core::session::Message;
    use cloudsignal_core::topic::TopicName;
    use std::sync::Arc;

    fn d(qos: QoS) -> Delivery {
        Delivery {
            message: Arc::new(Message {
                topic: TopicName::parse("t").unwrap(),
                payload: vec![],
                qos,
                retain: false,
                expiry: None,
                forwarded: Default::default(),
            }),
            qos,
            retain: false,
            subscription_ids: vec![],
            expiry: None,
        }
    }

    #[test]
    fn a_full_queue_drops_qos0_first() {
        let m = Mailbox::new(2);
        assert!(!m.try_send(d(QoS::AtMostOnce)).unwrap());
        assert!(!m.try_send(d(QoS::AtLeastOnce)).unwrap());
        assert!(matches!(m.try_send(d(QoS::AtMostOnce)), Err(Refused::Full)));
        assert!(
            m.try_send(d(QoS::AtLeastOnce)).unwrap(),
            "the QoS 0 message made room"
        );
        assert!(
            matches!(m.try_send(d(QoS::ExactlyOnce)), Err(Refused::Full)),
            "only QoS 1/2 left: slow consumer"
        );
        assert_eq!(m.close().len(), 2);
    }
}
