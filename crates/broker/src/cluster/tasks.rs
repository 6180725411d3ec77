//! A node's tasks: the driver that sends what the synchronous side queued, the handlers of
//! control messages and of messages for this node, the retained-message watch, the beat, and
//! the pumps that drain links into NATS.

use super::routes::Applied;
use super::{wire, Command, Control, Inner, REMOTE};
use crate::mailbox::{Mail, Mailbox};
use crate::router::{Scope, Tenant};
use crate::unix_now;
use async_nats::jetstream::kv;
use cloudsignal_core::topic::TopicFilter;
use futures_util::StreamExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Sends what the node's synchronous side queued, in order.
pub(super) async fn drive(
    inner: Arc<Inner>,
    mut rx: mpsc::UnboundedReceiver<Command>,
    store: kv::Store,
) {
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Rejoin => {
                // peers get a fresh timeout before the beat may judge them again
                let t = Instant::now();
                {
                    let mut routes = inner.routes.lock();
                    for p in routes.peers() {
                        routes.seen(p, t);
                    }
                }
                inner.connected.store(true, Ordering::SeqCst);
                // watches and the log reader start again from where they were
                inner.rejoined.send_modify(|n| *n += 1);
                inner.send_control(&Control::Hello { node: inner.me }).await;
                inner.send_routes().await;
            }
            Command::Control(c) => inner.send_control(&c).await,
            Command::Full => inner.send_routes().await,
            Command::Retain(tenant, message) => {
                let key = wire::retained_key(&tenant, message.topic.as_str());
                let value = wire::encode_retained(inner.me, unix_now(), &tenant, &message);
                match store.put(key, value.into()).await {
                    Ok(revision) => {
                        tracing::debug!(topic = %message.topic, revision, "cluster: retained message shared");
                    }
                    Err(e) => {
                        warn!(error = %e, topic = %message.topic, "cluster: retained message not shared");
                    }
                }
            }
        }
    }
}

/// Handles what other nodes say.
pub(super) async fn on_control(inner: Arc<Inner>, mut sub: async_nats::Subscriber) {
    while let Some(msg) = sub.next().await {
        let c: Control = match serde_json::from_slice(&msg.payload) {
            Ok(c) => c,
            Err(e) => {
                inner.stats.malformed.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "cluster: malformed control message ignored");
                continue;
            }
        };
        let node = c.node();
        if node == inner.me {
            continue;
        }
        let now = Instant::now();
        let new = inner.routes.lock().seen(node, now);
        if new {
            info!(node = %format_args!("{node:016x}"), "cluster: node joined");
        }
        let resync = Command::Control(Control::Resync {
            node: inner.me,
            to: node,
        });
        match c {
            Control::Hello { .. } => {
                let _ = inner.tx.send(Command::Full);
            }
            Control::Beat { version, .. } => {
                if !inner.routes.lock().current(node, version) {
                    let _ = inner.tx.send(resync);
                }
            }
            Control::Bye { .. } => inner.forget(node, "it left"),
            Control::Routes {
                version,
                reset,
                changes,
                ..
            } => {
                let applied = inner
                    .routes
                    .lock()
                    .apply(node, version, reset, &changes, now);
                if applied == Applied::Gap {
                    let _ = inner.tx.send(resync);
                }
            }
            Control::Resync { to, .. } => {
                if to == inner.me {
                    let _ = inner.tx.send(Command::Full);
                }
            }
            Control::Revoke { entry, .. } => inner.revoked(&entry),
            Control::Takeover {
                owner, client_id, ..
            } => {
                if inner.with_router(|r| r.evict(&owner, &client_id)) {
                    info!(%client_id, "cluster: session taken over on another node (0x8E)");
                }
            }
        }
    }
}

/// Delivers what other nodes routed here, waiting (briefly) for congested subscribers like a
/// publisher's connection does.
pub(super) async fn on_inbox(inner: Arc<Inner>, mut sub: async_nats::Subscriber) {
    while let Some(msg) = sub.next().await {
        let frame = match wire::decode_frame(&msg.payload, inner.config.max_message) {
            Ok(f) => f,
            Err(e) => {
                inner.stats.malformed.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, subject = %msg.subject, "cluster: malformed message ignored");
                continue;
            }
        };
        inner.stats.received.fetch_add(1, Ordering::Relaxed);
        let groups: Vec<crate::router::Key> = frame
            .groups
            .iter()
            .filter_map(|(g, f)| Some((Some(g.as_str().into()), TopicFilter::parse(f).ok()?)))
            .collect();
        let tenant: Tenant = frame.tenant.into();
        let scope = Scope::Selected {
            plain: frame.plain,
            groups: &groups,
            logged: frame.logged,
        };
        let routed = inner
            .router
            .lock()
            .route(REMOTE, &tenant, Arc::new(frame.message), &scope);
        for m in routed.congested {
            m.wait_space(Duration::from_secs(2), Duration::from_millis(500))
                .await;
        }
    }
}

/// Follows a key-value bucket: every stored value first, then each change, handed to
/// `apply`. After NATS comes back the watch starts again from the last revision seen (a
/// stalled watch would otherwise wait for its heartbeat to time out).
pub(super) async fn watch_bucket(
    inner: Arc<Inner>,
    store: kv::Store,
    what: &'static str,
    mut apply: impl FnMut(&Inner, kv::Entry),
) {
    let mut from = 0u64;
    let mut rejoined = inner.rejoined.subscribe();
    'watch: loop {
        let watch = if from == 0 {
            store.watch_with_history(">").await
        } else {
            store.watch_all_from_revision(from + 1).await
        };
        let mut watch = match watch {
            Ok(w) => {
                tracing::debug!(what, from, "cluster: watching a bucket");
                w
            }
            Err(e) => {
                warn!(error = %e, what, "cluster: watching a bucket failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let entry = tokio::select! {
                entry = watch.next() => entry,
                _ = rejoined.changed() => {
                    tracing::debug!(what, "cluster: NATS is back; watching the bucket again");
                    continue 'watch;
                }
            };
            match entry {
                Some(Ok(entry)) => {
                    from = from.max(entry.revision);
                    apply(&inner, entry);
                }
                Some(Err(e)) => {
                    warn!(error = %e, what, "cluster: bucket watch interrupted");
                    break;
                }
                None => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Keeps this node's retained messages in step with the bucket.
pub(super) fn retained_changed(inner: &Inner, entry: kv::Entry) {
    if entry.operation != kv::Operation::Put {
        return;
    }
    match wire::decode_retained(&entry.value, inner.config.max_message) {
        Ok(v) if v.node == inner.me => {}
        Ok(v) => {
            // expired while in the bucket: nothing to keep (a live copy expires here)
            let Some((tenant, message)) = v.at(unix_now()) else {
                return;
            };
            let tenant: Tenant = tenant.into();
            inner
                .router
                .lock()
                .store_retained(&tenant, &Arc::new(message), Instant::now());
        }
        Err(e) => {
            inner.stats.malformed.fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, key = %entry.key, "cluster: malformed retained message ignored");
        }
    }
}

/// Beats, and forgets nodes that stopped beating.
pub(super) async fn beat(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(inner.config.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let version = inner.routes.lock().own().0;
        let _ = inner.tx.send(Command::Control(Control::Beat {
            node: inner.me,
            version,
        }));
        if !inner.connected.load(Ordering::SeqCst) {
            continue;
        }
        let silent = inner
            .routes
            .lock()
            .silent(Instant::now(), inner.config.peer_timeout);
        for node in silent {
            inner.forget(node, "it stopped beating");
        }
    }
}

/// Drains a link into NATS.
pub(super) async fn pump(inner: Arc<Inner>, link: Arc<Mailbox>) {
    loop {
        let batch = match link.recv(256, 4 << 20).await {
            Mail::Close(..) => return,
            Mail::Deliveries(batch) => batch,
        };
        for d in batch {
            let m = Arc::try_unwrap(d.message).unwrap_or_else(|shared| (*shared).clone());
            match inner
                .client
                .publish(m.topic.as_str().to_owned(), m.payload.into())
                .await
            {
                Ok(()) => {
                    inner.stats.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    inner.count_dropped(1, &e.to_string());
                }
            }
        }
    }
}
