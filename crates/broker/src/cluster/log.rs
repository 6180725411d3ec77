//! The tasks behind persistent sessions that outlive their node (see [`super::durable`]): the
//! log writer, the node's log reader, replays, the registry writer and the registry mirror.

use super::{wire, Inner};
use crate::router::{ConnId, RecordWrite, ReplayStep, Replayed, Routed, SessionRecord, Tenant};
use async_nats::jetstream::{self, consumer, kv, stream};
use futures_util::StreamExt;
use std::future::IntoFuture;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// How long a publisher waits for JetStream to store its message before it is told to retry.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);
/// How often changed registry records are written.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// A replay with nothing to read for this long checks whether it has caught up.
const REPLAY_IDLE: Duration = Duration::from_millis(200);
/// A replay waiting this long for entries the log no longer has gives up and attaches.
const REPLAY_GIVE_UP: Duration = Duration::from_secs(5);
/// Messages waiting for the log go in one entry, up to this many…
const BATCH_MESSAGES: usize = 512;
/// …and this many bytes.
const BATCH_BYTES: usize = 512 << 10;

/// A message to write to the log; `done` hears whether JetStream stored it.
#[derive(Debug)]
pub(super) struct LogWrite {
    pub(super) subject: String,
    pub(super) payload: Vec<u8>,
    pub(super) done: oneshot::Sender<bool>,
}

/// What a cluster keeps in JetStream, opened (created if need be).
pub(super) struct Stores {
    /// Retained messages (key-value).
    pub(super) retained: kv::Store,
    /// The message log.
    pub(super) log: stream::Stream,
    /// The session registry (key-value).
    pub(super) registry: kv::Store,
}

/// Opens (creates if need be) the cluster `name`'s retained-message bucket, message log and
/// session registry.
pub(super) async fn open(
    js: &jetstream::Context,
    name: &str,
    max_message: usize,
    max_age: Duration,
    max_bytes: i64,
) -> Result<Stores, String> {
    let retained = bucket(
        js,
        &format!("{name}_retained"),
        "retained messages",
        max_message,
    )
    .await?;
    let log = stream(
        js,
        stream::Config {
            name: format!("{name}_log"),
            subjects: vec![wire::log_subjects(name)],
            description: Some("CloudSignal message log (persistent sessions)".into()),
            max_age,
            max_bytes,
            max_message_size: i32::try_from(BATCH_BYTES + max_message + 1024).unwrap_or(i32::MAX),
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            ..Default::default()
        },
    )
    .await?;
    let registry = bucket(js, &format!("{name}_sessions"), "session registry", 1 << 20).await?;
    Ok(Stores {
        retained,
        log,
        registry,
    })
}

/// A key-value bucket whose values are at most `max_value` bytes. Its stream is made as
/// async-nats's `create_key_value` would, without the account-info request whose answer
/// nats-server 2.9 words differently.
async fn bucket(
    js: &jetstream::Context,
    bucket: &str,
    what: &str,
    max_value: usize,
) -> Result<kv::Store, String> {
    stream(
        js,
        stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            description: Some(format!("CloudSignal {what}")),
            max_messages_per_subject: 1,
            max_message_size: i32::try_from(max_value + 1024).unwrap_or(i32::MAX),
            discard: stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            ..Default::default()
        },
    )
    .await?;
    js.get_key_value(bucket).await.map_err(|e| e.to_string())
}

/// Gets or creates a stream. Nodes starting together race to create it, and the loser's
/// answer is an error (in 2.9: subjects overlap): it finds the stream on a later try.
async fn stream(js: &jetstream::Context, config: stream::Config) -> Result<stream::Stream, String> {
    let mut tries = 0;
    loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(s) => return Ok(s),
            Err(e) if tries < 10 => {
                tries += 1;
                debug!(error = %e, stream = %config.name, "cluster: stream not opened yet; retrying");
                tokio::time::sleep(Duration::from_millis(100 * tries)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Writes messages to the log in the order this node routed them, and tells each publisher
/// when its message is stored. Messages that wait together go in one entry (a batch: one
/// JetStream write and acknowledgement for all), so a busy node pays one round trip per batch,
/// and an idle one none.
pub(super) async fn write_log(
    js: jetstream::Context,
    name: String,
    mut rx: mpsc::UnboundedReceiver<LogWrite>,
) {
    while let Some(first) = rx.recv().await {
        let mut bytes = first.payload.len();
        let mut batch = vec![first];
        while batch.len() < BATCH_MESSAGES && bytes < BATCH_BYTES {
            let Ok(w) = rx.try_recv() else { break };
            bytes += w.payload.len();
            batch.push(w);
        }
        let subject = match &batch[..] {
            [one] => one.subject.clone(),
            _ => wire::log_batch_subject(&name),
        };
        let mut frames = Vec::with_capacity(batch.len());
        let mut done = Vec::with_capacity(batch.len());
        for w in batch {
            frames.push(w.payload);
            done.push(w.done);
        }
        let entry = wire::encode_log_entry(&frames);
        match js.publish(subject, entry.into()).await {
            Ok(ack) => {
                tokio::spawn(async move {
                    let stored = tokio::time::timeout(LOG_TIMEOUT, ack.into_future()).await;
                    let ok = matches!(stored, Ok(Ok(_)));
                    if !ok {
                        warn!(messages = done.len(), "cluster: messages not stored in the message log; their publishers are told to send them again");
                    }
                    answer(ok, done);
                });
            }
            Err(e) => {
                warn!(error = %e, "cluster: message log unavailable; publishers are told to send again");
                answer(false, done);
            }
        }
    }
}

fn answer(stored: bool, done: Vec<oneshot::Sender<bool>>) {
    for d in done {
        let _ = d.send(stored);
    }
}

/// An ordered reader of the whole log from `start`.
async fn reader(
    inner: &Inner,
    log: &stream::Stream,
    start: u64,
) -> Result<consumer::push::Ordered, String> {
    let consumer = log
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: inner.client.new_inbox(),
            description: Some("cloudsignal log reader".into()),
            filter_subject: wire::log_subjects(&inner.config.name),
            replay_policy: consumer::ReplayPolicy::Instant,
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start.max(1),
            },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    consumer.messages().await.map_err(|e| e.to_string())
}

/// A log entry's messages, each with its tenant.
type Messages = Vec<(Tenant, Arc<cloudsignal_core::session::Message>)>;

/// One log entry: its position and messages (`None`: malformed, counted and logged).
fn entry(inner: &Inner, m: &jetstream::Message) -> Option<(u64, Messages)> {
    let seq = m.info().ok()?.stream_sequence;
    match wire::decode_log_entry(&m.payload, inner.config.max_message) {
        Ok(frames) => Some((
            seq,
            frames
                .into_iter()
                .map(|f| (f.tenant.into(), Arc::new(f.message)))
                .collect(),
        )),
        Err(e) => {
            inner.stats.malformed.fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, seq, "cluster: malformed log entry ignored");
            None
        }
    }
}

async fn wait_congested(routed: Routed) {
    for m in routed.congested {
        m.wait_space(Duration::from_secs(2), Duration::from_millis(500))
            .await;
    }
}

/// Hands every new log entry, in order, to this node's persistent sessions.
pub(super) async fn read_log(inner: Arc<Inner>, log: stream::Stream) {
    let mut rejoined = inner.rejoined.subscribe();
    loop {
        let start = inner.router.lock().log_position() + 1;
        let mut entries = match reader(&inner, &log, start).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cluster: reading the message log failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            // after NATS comes back, read on from the last entry handed out at once
            let m = tokio::select! {
                m = entries.next() => m,
                _ = rejoined.changed() => break,
            };
            let m = match m {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    warn!(error = %e, "cluster: message log reader interrupted");
                    break;
                }
                None => break,
            };
            let Some((seq, messages)) = entry(&inner, &m) else {
                continue;
            };
            for (tenant, message) in &messages {
                let routed = inner.router.lock().route_logged(tenant, message, seq);
                wait_congested(routed).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Replays the log after `cursor` to session `id` (registry `key`), then attaches it to the
/// node's log reader.
pub(super) async fn replay(
    inner: Arc<Inner>,
    log: stream::Stream,
    id: ConnId,
    key: Arc<str>,
    cursor: u64,
) {
    let step = |s: ReplayStep<'_>| inner.router.lock().replay(id, &key, s);
    if step(ReplayStep::Idle).0 != Replayed::More {
        return;
    }
    let mut entries = match reader(&inner, &log, cursor + 1).await {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "cluster: replaying the message log failed; the session attaches without it");
            step(ReplayStep::GiveUp);
            return;
        }
    };
    let (mut replayed, mut idle) = (0u64, Duration::ZERO);
    loop {
        let next = tokio::time::timeout(REPLAY_IDLE, entries.next()).await;
        let (done, routed) = match next {
            Ok(Some(Ok(m))) => {
                idle = Duration::ZERO;
                let Some((seq, messages)) = entry(&inner, &m) else {
                    continue;
                };
                let (done, routed) = step(ReplayStep::Entry(seq, &messages));
                replayed += routed.reached as u64;
                (done, routed)
            }
            Ok(_) => step(ReplayStep::GiveUp),
            Err(_) => {
                idle += REPLAY_IDLE;
                if idle >= REPLAY_GIVE_UP {
                    warn!(session = %key, "cluster: the message log lacks entries a replay waited for (expired?); the session goes on without them");
                    step(ReplayStep::GiveUp)
                } else {
                    step(ReplayStep::Idle)
                }
            }
        };
        wait_congested(routed).await;
        match done {
            Replayed::More => {}
            Replayed::Attached => {
                info!(session = %key, from = cursor + 1, replayed, "cluster: session resumed from the registry; log replayed");
                return;
            }
            Replayed::Gone => return,
        }
    }
}

/// Writes changed registry records and removes those of sessions that ended here.
pub(super) async fn write_registry(inner: Arc<Inner>, registry: kv::Store) {
    let me = format!("{:016x}", inner.me);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for round in 0u64.. {
        tick.tick().await;
        if round % 25 == 0 && inner.connected.load(Ordering::SeqCst) {
            remove_expired(&inner, &registry, &me).await;
        }
        let (writes, gone) = inner.router.lock().durable_changes(&me);
        for (key, revision) in gone {
            if let Err(e) = registry.delete_expect_revision(&*key, Some(revision)).await {
                debug!(error = %e, "cluster: session record not removed (another node holds it)");
            }
        }
        for w in writes {
            write_record(&inner, &registry, w).await;
        }
    }
}

/// Removes the records of sessions whose node was lost and whose expiry has passed.
async fn remove_expired(inner: &Inner, registry: &kv::Store, me: &str) {
    let peers: Vec<String> = inner
        .routes
        .lock()
        .peers()
        .into_iter()
        .map(|n| format!("{n:016x}"))
        .collect();
    let alive = |node: &str| node == me || peers.iter().any(|p| p == node);
    let expired =
        inner
            .mirror
            .lock()
            .expired(&alive, std::time::Instant::now(), inner.config.log_max_age);
    for (key, revision) in expired {
        if registry
            .delete_expect_revision(&key, Some(revision))
            .await
            .is_ok()
        {
            info!(session = %key, "cluster: the session of a lost node expired; its record removed");
        }
    }
}

async fn write_record(inner: &Inner, registry: &kv::Store, w: RecordWrite) {
    let Ok(value) = serde_json::to_vec(&w.record) else {
        return;
    };
    let written = match w.revision {
        // the first write here claims the record, whoever held it
        None => registry
            .put(&*w.key, value.into())
            .await
            .map_err(|e| (false, e.to_string())),
        Some(rev) => registry
            .update(&*w.key, value.into(), rev)
            .await
            .map_err(|e| {
                (
                    e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                    e.to_string(),
                )
            }),
    };
    match written {
        Ok(revision) => inner.router.lock().durable_written(w, revision),
        Err((true, _)) => {
            // another node claimed the session: it moved there
            let SessionRecord {
                owner, client_id, ..
            } = &w.record;
            if inner.with_router(|r| r.evict(owner, client_id)) {
                info!(%client_id, "cluster: session claimed by another node; ended here");
            }
        }
        Err((false, e)) => {
            warn!(error = %e, "cluster: session record not written; retrying");
        }
    }
}

/// Keeps this node's mirror of the registry in step with the bucket.
pub(super) fn registry_changed(inner: &Inner, entry: kv::Entry) {
    let record = match entry.operation {
        kv::Operation::Put => match serde_json::from_slice::<SessionRecord>(&entry.value) {
            Ok(r) => Some(r),
            Err(e) => {
                inner.stats.malformed.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, key = %entry.key, "cluster: malformed session record ignored");
                None
            }
        },
        kv::Operation::Delete | kv::Operation::Purge => None,
    };
    inner
        .mirror
        .lock()
        .apply(&entry.key, entry.revision, record);
}
