//! A small MQTT 3.1.1 load client on core's codec.

use anyhow::{bail, Result};
use cloudsignal_core::mqtt::{
    self, Ack, Connect, Packet, Properties, Protocol, Publish, QoS, ReasonCode, Subscribe,
    SubscriptionOptions,
};
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const P: Protocol = Protocol::V311;
/// Stop counting when nothing arrived for this long (QoS 0 messages may be dropped).
const IDLE: Duration = Duration::from_secs(2);

pub(crate) struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    out: Vec<u8>,
}

fn id(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n.max(1)).unwrap_or(NonZeroU16::MIN)
}

impl Client {
    pub(crate) async fn connect(addr: SocketAddr, client_id: &str) -> Result<Self> {
        Self::connect_with(addr, client_id, None).await
    }

    /// [`Self::connect`] asking for a session that outlives the connection (`session_expiry`
    /// seconds).
    pub(crate) async fn connect_with(
        addr: SocketAddr,
        client_id: &str,
        session_expiry: Option<u32>,
    ) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut c = Client {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            out: Vec::with_capacity(64 * 1024),
        };
        c.queue(&Packet::Connect(Connect {
            protocol: P,
            // v3.1.1: Clean Session 0 asks for a session that outlives the connection
            clean_start: session_expiry.is_none(),
            keep_alive: 0,
            properties: Properties {
                session_expiry_interval: session_expiry,
                ..Properties::default()
            },
            client_id,
            will: None,
            username: None,
            password: None,
        }));
        c.flush().await?;
        match c.next(Duration::from_secs(10)).await? {
            Some(Kind::Connack(0)) => Ok(c),
            other => bail!("CONNACK expected, got {other:?}"),
        }
    }

    fn queue(&mut self, p: &Packet<'_>) {
        p.encode(P, &mut self.out);
    }

    async fn flush(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// The next packet's essentials, or `None` on timeout.
    async fn next(&mut self, timeout: Duration) -> Result<Option<Kind>> {
        loop {
            if let Some((p, n)) = mqtt::decode(&self.buf, P, 1 << 20)? {
                let k = Kind::of(&p);
                self.buf.drain(..n);
                return Ok(Some(k));
            }
            let mut chunk = [0u8; 32 * 1024];
            let n = match tokio::time::timeout(timeout, self.stream.read(&mut chunk)).await {
                Err(_) => return Ok(None),
                Ok(r) => r?,
            };
            if n == 0 {
                bail!("connection closed");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub(crate) async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<()> {
        let opts = SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        };
        self.queue(&Packet::Subscribe(Subscribe {
            packet_id: id(1),
            properties: Properties::default(),
            filters: vec![(filter, opts)],
        }));
        self.flush().await?;
        match self.next(Duration::from_secs(10)).await? {
            Some(Kind::Suback) => Ok(()),
            other => bail!("SUBACK expected, got {other:?}"),
        }
    }

    fn publish(&mut self, topic: &str, qos: QoS, pid: u16, payload: &[u8]) {
        self.queue(&Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic,
            packet_id: (qos != QoS::AtMostOnce).then(|| id(pid)),
            properties: Properties::default(),
            payload,
        }));
    }

    /// Publishes `n` messages of `size` bytes as fast as the protocol allows (QoS 1: windows of
    /// 100 unacknowledged messages).
    pub(crate) async fn publish_many(
        &mut self,
        topic: &str,
        n: usize,
        qos: QoS,
        size: usize,
    ) -> Result<()> {
        let payload = vec![b'x'; size];
        let window = if qos == QoS::AtMostOnce { 256 } else { 100 };
        let mut sent = 0;
        while sent < n {
            let batch = window.min(n - sent);
            for i in 0..batch {
                self.publish(topic, qos, ((sent + i) % 65_535 + 1) as u16, &payload);
            }
            self.flush().await?;
            if qos != QoS::AtMostOnce {
                let mut acked = 0;
                while acked < batch {
                    match self.next(Duration::from_secs(30)).await? {
                        Some(Kind::Puback) => acked += 1,
                        Some(_) => {}
                        None => bail!("no PUBACK within 30 s"),
                    }
                }
            }
            sent += batch;
        }
        Ok(())
    }

    /// Publishes `n` QoS 0 messages, pausing `gap` between batches of 10.
    pub(crate) async fn publish_paced(
        &mut self,
        topic: &str,
        n: usize,
        qos: QoS,
        gap: Duration,
    ) -> Result<()> {
        let payload = [b'x'; 16];
        for i in 0..n {
            self.publish(topic, qos, 1, &payload);
            if i % 10 == 9 {
                self.flush().await?;
                tokio::time::sleep(gap).await;
            }
        }
        self.flush().await
    }

    /// Publishes `n` messages at `rate` per second, each carrying its send time.
    pub(crate) async fn publish_timestamped(
        &mut self,
        topic: &str,
        n: usize,
        rate: u64,
        epoch: Instant,
        size: usize,
    ) -> Result<()> {
        let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
        let start = Instant::now();
        for i in 0..n {
            let due = start + interval * i as u32;
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            }
            let mut payload = vec![0u8; size.max(16)];
            payload[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
            payload[8..16].copy_from_slice(&(i as u64).to_be_bytes());
            self.publish(topic, QoS::AtMostOnce, 1, &payload);
            self.flush().await?;
        }
        Ok(())
    }

    /// Counts deliveries (acknowledging QoS 1) until `want` arrived or the stream went idle;
    /// adds them to `total`. Returns when the last one arrived.
    pub(crate) async fn count_until(
        mut self,
        want: u64,
        total: Arc<AtomicU64>,
        limit: Duration,
    ) -> Result<Instant> {
        let started = Instant::now();
        let mut got = 0;
        let mut last = Instant::now();
        while got < want && started.elapsed() < limit {
            match self.next(IDLE).await? {
                Some(Kind::Publish(pid)) => {
                    got += 1;
                    total.fetch_add(1, Ordering::Relaxed);
                    last = Instant::now();
                    if let Some(pid) = pid {
                        self.queue(&Packet::Puback(Ack {
                            packet_id: id(pid),
                            reason: ReasonCode::SUCCESS,
                            properties: Properties::default(),
                        }));
                    }
                    if self.buf.is_empty() || self.out.len() > 16 * 1024 {
                        self.flush().await?;
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
        self.flush().await?;
        Ok(last)
    }

    /// Records publish→deliver latency of timestamped messages, in microseconds.
    pub(crate) async fn latencies(
        mut self,
        n: usize,
        epoch: Instant,
        limit: Duration,
    ) -> Result<Histogram<u64>> {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let started = Instant::now();
        let mut got = 0;
        while got < n && started.elapsed() < limit {
            let Some(k) = self.next(IDLE).await? else {
                break;
            };
            if let Kind::Timestamped(sent) = k {
                let now = epoch.elapsed().as_nanos() as u64;
                h.record(now.saturating_sub(sent).max(1000) / 1000)?;
                got += 1;
            }
        }
        Ok(h)
    }
}

#[derive(Debug)]
pub(crate) enum Kind {
    Connack(u8),
    Suback,
    Puback,
    Publish(Option<u16>),
    Timestamped(u64),
    Other,
}

impl Kind {
    fn of(p: &Packet<'_>) -> Self {
        match p {
            Packet::Connack(c) => Kind::Connack(c.reason.0),
            Packet::Suback(_) => Kind::Suback,
            Packet::Puback(_) => Kind::Puback,
            Packet::Publish(p) if p.topic == "lat" && p.payload.len() >= 16 => {
                let mut t = [0u8; 8];
                t.copy_from_slice(&p.payload[..8]);
                Kind::Timestamped(u64::from_be_bytes(t))
            }
            Packet::Publish(p) => Kind::Publish(p.packet_id.map(|i| i.get())),
            _ => Kind::Other,
        }
    }
}
