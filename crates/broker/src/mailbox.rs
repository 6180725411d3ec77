//! A connection's bounded queue of deliveries from the router, and its kill switch.
//!
//! A `tokio::sync::mpsc` channel allocates a block of 32 slots up front, about 2 KB per
//! connection whether or not a message ever arrives; this queue allocates only while messages
//! wait, and the consumer takes the whole backlog at once (one lock, one wake-up per burst), so
//! an idle connection holds an empty `VecDeque` and a `Notify`. A close order (takeover, slow
//! consumer, revocation, shutdown) travels through the same wake-up and overtakes queued
//! deliveries.
//!
//! **Flow control.** `capacity` deliveries or `max_bytes` bytes (topics and payloads), whichever
//! comes first, is the high-water mark: a delivery that leaves the queue at or above it reports
//! the mailbox *congested*, and the publisher's connection stops reading its
//! client until the consumer has taken the backlog ([`Mailbox::wait_space`]) — so a publisher
//! faster than its subscriber is slowed down, not dropped. The queue may hold up to twice
//! `capacity` (what a publisher had already read when it paused); past that, and for a consumer
//! that is *stalled* (publishers stop waiting for it), the slow-consumer policy applies: QoS 0
//! dropped and counted, QoS 1/2 refused (the broker disconnects the client 0x97). A consumer is
//! stalled when it took nothing for the progress limit while a publisher waited, or made no
//! room within the stall limit. Its own connection marks it *lagging* while its client reads
//! nothing ([`Mailbox::mark_lagging`]): a publisher whose message others took in stride does
//! not wait for a lagging subscriber at all (see `connection`), so one that stopped reading
//! costs a fan-out's other readers nothing, while a pipe's only subscriber is still waited
//! for through a pause.

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
    /// Nobody waits for this consumer until it has taken its backlog (see the module doc).
    stalled: bool,
    /// Its client has read nothing lately (cleared when it takes deliveries again).
    lagging: bool,
    /// When the consumer last took deliveries.
    took_at: Option<std::time::Instant>,
    /// Bytes queued (see [`Delivery::size`]).
    bytes: usize,
}

/// What became of a queued delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Queued {
    /// QoS 0 deliveries dropped to make room for it.
    pub evicted: u64,
    /// The queue is at or above its high-water mark: the publisher should wait for room.
    pub congested: bool,
}

/// A bounded multi-producer, single-consumer queue of deliveries.
#[derive(Debug)]
pub struct Mailbox {
    state: Mutex<State>,
    ready: Notify,
    /// Signalled when the consumer takes deliveries (room for waiting publishers).
    space: Notify,
    capacity: usize,
    max_bytes: usize,
}

impl Mailbox {
    /// A queue whose high-water mark is `capacity` deliveries.
    pub fn new(capacity: usize) -> Self {
        Self::with_max_bytes(capacity, usize::MAX)
    }

    /// A queue whose high-water mark is `capacity` deliveries or `max_bytes` bytes.
    pub fn with_max_bytes(capacity: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            space: Notify::new(),
            capacity,
            max_bytes,
        }
    }

    /// Below the high-water mark.
    fn has_room(&self, q: &State) -> bool {
        q.queue.len() < self.capacity && q.bytes < self.max_bytes
    }

    /// Whether one more delivery of `size` bytes would pass twice the high-water mark (one
    /// delivery always fits an empty queue).
    fn full_for(&self, q: &State, size: usize) -> bool {
        q.queue.len() >= self.capacity.saturating_mul(2)
            || (q.bytes + size > self.max_bytes.saturating_mul(2) && !q.queue.is_empty())
    }

    /// Queues a delivery without waiting. When the queue is full (twice the high-water mark),
    /// a QoS 1/2 delivery takes the place of the oldest queued QoS 0 ones (the slow-consumer
    /// policy drops QoS 0 first).
    pub fn try_send(&self, d: Delivery) -> Result<Queued, Refused> {
        let mut q = self.state.lock();
        if q.closed {
            return Err(Refused::Closed);
        }
        let size = d.size();
        let mut evicted = 0;
        while self.full_for(&q, size) {
            let qos0 = q.queue.iter().position(|x| x.qos == QoS::AtMostOnce);
            match qos0 {
                Some(i) if d.qos != QoS::AtMostOnce => {
                    if let Some(gone) = q.queue.remove(i) {
                        q.bytes -= gone.size();
                    }
                    evicted += 1;
                }
                _ => return Err(Refused::Full),
            }
        }
        q.bytes += size;
        q.queue.push_back(d);
        let congested = !self.has_room(&q) && !q.stalled;
        drop(q);
        self.ready.notify_one();
        Ok(Queued { evicted, congested })
    }

    /// Waits until the consumer has brought the queue below its high-water mark: at most
    /// `limit`, and at most `progress` without the consumer taking anything. `false`: it did
    /// not (it is marked stalled; nobody waits for it again until it takes its backlog).
    pub async fn wait_space(
        &self,
        limit: std::time::Duration,
        progress: std::time::Duration,
    ) -> bool {
        let started = std::time::Instant::now();
        let end = started + limit;
        loop {
            let room = self.space.notified();
            tokio::pin!(room);
            // registered before the check: a signal in between is not lost
            room.as_mut().enable();
            let stuck_at = {
                let q = self.state.lock();
                if q.closed || q.stalled || self.has_room(&q) {
                    return true;
                }
                q.took_at.map_or(started, |t| t.max(started)) + progress
            };
            let now = std::time::Instant::now();
            if now >= end || now >= stuck_at {
                self.state.lock().stalled = true;
                return false;
            }
            let wake = tokio::time::Instant::from_std(end.min(stuck_at));
            let _ = tokio::time::timeout_at(wake, room).await;
        }
    }

    /// Marks the consumer lagging (its client has read nothing for a while) until it takes
    /// deliveries again. Whether it was not lagging already.
    pub fn mark_lagging(&self) -> bool {
        !std::mem::replace(&mut self.state.lock().lagging, true)
    }

    /// Deliveries waiting in it.
    pub fn len(&self) -> usize {
        self.state.lock().queue.len()
    }

    /// Whether no delivery waits in it.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the consumer's client has read nothing lately.
    pub fn is_lagging(&self) -> bool {
        self.state.lock().lagging
    }

    /// Orders the connection closed (the first order wins).
    pub fn kill(&self, reason: ReasonCode, text: Option<String>) {
        self.state.lock().kill.get_or_insert((reason, text));
        self.ready.notify_one();
    }

    /// Waits for a close order or deliveries (the oldest: at most `max` of them and at most
    /// `max_bytes` bytes; it waits while the oldest alone is larger); a close order comes
    /// first. Taking deliveries makes room for waiting publishers.
    pub async fn recv(&self, max: usize, max_bytes: usize) -> Mail {
        loop {
            {
                let mut q = self.state.lock();
                if let Some((reason, text)) = q.kill.take() {
                    return Mail::Close(reason, text);
                }
                let (mut n, mut taken) = (0, 0);
                for d in q.queue.iter().take(max) {
                    let size = d.size();
                    if taken + size > max_bytes {
                        break;
                    }
                    taken += size;
                    n += 1;
                }
                if n > 0 {
                    q.took_at = Some(std::time::Instant::now());
                    q.lagging = false;
                    let batch = if n == q.queue.len() {
                        std::mem::take(&mut q.queue)
                    } else {
                        let rest = q.queue.split_off(n);
                        std::mem::replace(&mut q.queue, rest)
                    };
                    q.bytes -= taken;
                    if self.has_room(&q) {
                        q.stalled = false;
                        drop(q);
                        self.space.notify_waiters();
                    }
                    return Mail::Deliveries(batch);
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
        q.bytes = 0;
        let left = std::mem::take(&mut q.queue);
        drop(q);
        self.space.notify_waiters();
        left
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
        let m = Mailbox::new(1);
        assert_eq!(m.try_send(d(QoS::AtMostOnce)).unwrap().evicted, 0);
        assert_eq!(m.try_send(d(QoS::AtLeastOnce)).unwrap().evicted, 0);
        assert!(matches!(m.try_send(d(QoS::AtMostOnce)), Err(Refused::Full)));
        assert_eq!(
            m.try_send(d(QoS::AtLeastOnce)).unwrap().evicted,
            1,
            "the QoS 0 message made room"
        );
        assert!(
            matches!(m.try_send(d(QoS::ExactlyOnce)), Err(Refused::Full)),
            "only QoS 1/2 left: slow consumer"
        );
        assert_eq!(m.close().len(), 2);
    }

    #[test]
    fn bytes_bound_the_queue_as_well_as_count() {
        // 100-byte payloads (+ 1-byte topic) against a 250-byte high-water mark
        let big = |qos| {
            let mut x = d(qos);
            Arc::make_mut(&mut x.message).payload = vec![0; 100];
            x
        };
        let m = Mailbox::with_max_bytes(1_000, 250);
        assert!(!m.try_send(big(QoS::AtMostOnce)).unwrap().congested);
        assert!(!m.try_send(big(QoS::AtMostOnce)).unwrap().congested);
        assert!(
            m.try_send(big(QoS::AtMostOnce)).unwrap().congested,
            "303 bytes ≥ 250: the publisher should wait"
        );
        m.try_send(big(QoS::AtMostOnce)).unwrap();
        assert!(
            matches!(m.try_send(big(QoS::AtMostOnce)), Err(Refused::Full)),
            "past twice the mark: QoS 0 is dropped"
        );
        assert_eq!(
            m.try_send(big(QoS::AtLeastOnce)).unwrap().evicted,
            1,
            "a QoS 1 message takes a QoS 0 one's place"
        );
        // one message always fits an empty queue, whatever its size
        let one = Mailbox::with_max_bytes(1_000, 10);
        assert!(one.try_send(big(QoS::AtLeastOnce)).is_ok());
        assert_eq!(one.close().len(), 1);
    }

    #[tokio::test]
    async fn lagging_lasts_until_the_consumer_takes_deliveries() {
        let m = Mailbox::new(4);
        m.try_send(d(QoS::AtMostOnce)).unwrap();
        assert!(!m.is_lagging());
        assert!(m.mark_lagging(), "newly lagging");
        assert!(!m.mark_lagging(), "reported once");
        assert!(m.is_lagging());
        let _ = m.recv(usize::MAX, usize::MAX).await;
        assert!(!m.is_lagging(), "it read again");
    }

    #[tokio::test]
    async fn congestion_waits_for_room_then_marks_a_stalled_consumer() {
        let m = Arc::new(Mailbox::new(2));
        assert!(!m.try_send(d(QoS::AtMostOnce)).unwrap().congested);
        assert!(m.try_send(d(QoS::AtMostOnce)).unwrap().congested);
        let waiter = {
            let m = m.clone();
            tokio::spawn(async move {
                let secs = std::time::Duration::from_secs(30);
                m.wait_space(secs, secs).await
            })
        };
        tokio::task::yield_now().await;
        match m.recv(1, usize::MAX).await {
            Mail::Deliveries(batch) => assert_eq!(batch.len(), 1, "at most what was asked"),
            Mail::Close(..) => panic!("no close order"),
        }
        assert!(waiter.await.unwrap(), "taking a delivery made room");
        assert!(m.try_send(d(QoS::AtMostOnce)).unwrap().congested);
        // a consumer that takes nothing: the wait ends at the progress limit and marks it
        // stalled
        let ms = std::time::Duration::from_millis;
        assert!(!m.wait_space(ms(30_000), ms(20)).await);
        assert!(
            !m.try_send(d(QoS::AtMostOnce)).unwrap().congested,
            "stalled: publishers no longer wait for it"
        );
        let _ = m.recv(usize::MAX, usize::MAX).await;
        assert!(m.try_send(d(QoS::AtMostOnce)).is_ok());
        assert!(
            m.try_send(d(QoS::AtMostOnce)).unwrap().congested,
            "it took its backlog: waited for again"
        );
    }
}
