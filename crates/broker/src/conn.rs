//! One task per connection: the tokio driver around the sans-IO
//! [`Connection`](crate::connection::Connection). It reads, writes, sleeps and waits for what
//! the connection asks (an authentication, a takeover's state, subscribers' room); every
//! decision is the connection's.

use crate::chain::PeerInfo;
use crate::connection::{Action, Clock, Connection, Parked, STALL_LIMIT};
use crate::router::ConnId;
use crate::Shared;
use cloudsignal_core::session::StoredSession;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{info, warn};

/// Deliveries buffered per connection before the router counts it as a slow consumer (or
/// `--max-queued-messages`, if larger).
const CHANNEL_CAPACITY: usize = 1024;
/// The read buffer of a quiet connection; it grows ×4 after each read that fills it, up to
/// [`MAX_READ`], and falls back after a short read, so idle connections hold 64 bytes and busy
/// ones read in large chunks.
const MIN_READ: usize = 64;
const MAX_READ: usize = 64 * 1024;
/// A write that cannot complete in this time ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// A write to the client that makes no progress for this long marks the connection's own
/// mailbox lagging: its client reads nothing for now, and a fan-out's publisher should not
/// wait for it.
const WRITE_PROGRESS_LIMIT: Duration = Duration::from_millis(250);
/// How long a closed connection drains what its client still sends (see the end of [`serve`]).
const LINGER: Duration = Duration::from_secs(2);
/// How long a connection taking over a live session waits for the old connection's state.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes everything the connection has to send. A write that makes no progress for
/// [`WRITE_PROGRESS_LIMIT`] marks the connection's mailbox lagging; one that makes none for
/// [`WRITE_TIMEOUT`] ends the connection.
async fn flush<W: AsyncWrite + Unpin>(
    conn: &mut Connection,
    writer: &mut W,
) -> std::io::Result<()> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out");
    while let Some(bytes) = conn.poll_transmit() {
        let mut at = 0;
        while at < bytes.len() {
            // a write that has not completed wrote nothing: cancelling it loses no bytes
            let n = match tokio::time::timeout(WRITE_PROGRESS_LIMIT, writer.write(&bytes[at..]))
                .await
            {
                Ok(n) => n?,
                Err(_) => {
                    conn.client_not_reading(WRITE_PROGRESS_LIMIT);
                    tokio::time::timeout(WRITE_TIMEOUT, writer.write(&bytes[at..]))
                        .await
                        .map_err(|_| timed_out())??
                }
            };
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            at += n;
        }
    }
    Ok(())
}

/// A takeover's wait for the old connection's state (boxed: only a connection taking over a
/// live session has one).
type Handoff = std::pin::Pin<Box<dyn std::future::Future<Output = Option<StoredSession>> + Send>>;

/// Carries out one action (the rare ones that wait are boxed, so the connection's future stays
/// small while idle).
async fn act<W: AsyncWrite + Unpin>(
    action: Action,
    conn: &mut Connection,
    writer: &mut W,
    shared: &Shared,
    handoff: &mut Option<Handoff>,
) {
    match action {
        Action::Authenticate(req) => {
            let now = conn.unix(Instant::now());
            let decided = Box::pin(shared.chain.connect(&req, conn.peer(), now)).await;
            conn.authenticated(*req, decided, Instant::now());
        }
        Action::FetchKeys(data) => {
            let now = conn.unix(Instant::now());
            let _ = Box::pin(shared.auth.prepare(data.as_deref(), now)).await;
            conn.keys_fetched(Instant::now());
        }
        Action::AwaitHandoff(rx) => {
            *handoff = Some(Box::pin(async move {
                tokio::time::timeout(HANDOFF_TIMEOUT, rx)
                    .await
                    .ok()
                    .and_then(Result::ok)
            }));
        }
        Action::WaitForSubscribers {
            mailboxes,
            patience,
        } => {
            // flow control: answer what was handled, then hold this publisher (its further
            // packets stay unread, in its socket) until the subscribers it fed have room
            if flush(conn, writer).await.is_err() {
                conn.connection_lost();
            }
            let stalled = Box::pin(async {
                let mut stalled = 0;
                for mailbox in mailboxes {
                    let room = mailbox.wait_space(STALL_LIMIT, patience).await;
                    stalled += usize::from(!room);
                }
                stalled
            })
            .await;
            conn.subscribers_waited(stalled, patience);
        }
    }
}

/// Serves one connection until it closes.
pub(crate) async fn serve<S>(stream: S, peer: PeerInfo, id: ConnId, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // one stream, not split: reads and writes never overlap (writes happen between reads), and
    // a split would cost every connection a shared allocation and a lock
    let mut stream = stream;
    let capacity = CHANNEL_CAPACITY.max(shared.session_config.max_queued);
    let bytes = shared.session_config.max_queued_bytes;
    let mailbox = Arc::new(crate::mailbox::Mailbox::with_max_bytes(capacity, bytes));
    let mut conn = Connection::new(shared.clone(), peer, id, mailbox.clone(), Clock::system());
    let mut handoff = None;
    let mut buf = vec![0u8; MIN_READ];
    let mut quiet = false;
    // the message log's answer for the oldest publish waiting on it (cluster mode)
    let mut log_wait: Option<tokio::sync::oneshot::Receiver<bool>> = None;
    loop {
        while let Some(action) = conn.poll_action(Instant::now()) {
            // boxed: a connection waits here rarely (CONNECT, re-authentication, congestion), and
            // never while idle
            Box::pin(act(action, &mut conn, &mut stream, &shared, &mut handoff)).await;
        }
        if flush(&mut conn, &mut stream).await.is_err() {
            conn.connection_lost();
            continue;
        }
        if conn.is_finished() {
            break;
        }
        conn.idle(Instant::now());
        if std::mem::take(&mut quiet) {
            // everything is handled and written: drop what the last burst allocated
            conn.release_memory();
        }
        let deadline = conn.poll_timeout();
        let (room, room_bytes) = conn.room();
        if log_wait.is_none() {
            log_wait = conn.take_log_wait();
        }
        tokio::select! {
            // while a CONNECT awaits its decision nothing is read: the socket's own window
            // holds what the client pipelines, not this process's memory
            read = stream.read(&mut buf), if conn.wants_input() => match read {
                Ok(0) | Err(_) => conn.connection_lost(),
                Ok(n) => {
                    conn.handle_bytes(&buf[..n], Instant::now());
                    if n == buf.len() && n < MAX_READ {
                        buf = vec![0u8; n * 4];
                    } else if n <= MIN_READ {
                        if buf.len() > MIN_READ {
                            buf = vec![0u8; MIN_READ];
                        }
                        quiet = true;
                    }
                }
            },
            stored = wait_handoff(&mut handoff) => conn.handed_over(stored, Instant::now()),
            // bounded by the log writer's own timeout
            stored = wait_logged(&mut log_wait) => conn.logged(stored),
            mail = mailbox.recv(room, room_bytes), if room > 0 => conn.handle_mail(mail),
            // one timer for the whole table: each pending `Sleep` would cost its own space in
            // this connection's future
            () = sleep_until(deadline) => conn.handle_timeout(Instant::now()),
        }
    }
    let _ = stream.shutdown().await;
    // the session is handed on (takeover) or stored first: a client that lingers must not
    // delay the connection taking its place
    if let Some(parked) = conn.finish(Instant::now()) {
        tokio::spawn(session_timers(shared, parked));
    }
    // lingering close: the write side is shut (FIN after the DISCONNECT or CONNACK); read and
    // discard what the client still sends, briefly, so closing with unread data does not reset
    // the connection before the client has read why it was closed (0x93, 0x98, 0xA0, 0x8E…)
    let _ = tokio::time::timeout(LINGER, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// While a session waits for its client: publishes its delayed will after the Will Delay
/// Interval, and ends it after the Session Expiry Interval (publishing a will still waiting)
/// [MQTT-3.1.3-9]. Both are no-ops once the client has returned.
async fn session_timers(shared: Arc<Shared>, parked: Parked) {
    let Parked {
        tenant,
        id,
        generation,
        will_delay,
        expiry,
    } = parked;
    let start = tokio::time::Instant::now();
    let publish = |will: cloudsignal_core::session::Message| {
        info!(topic = %will.topic, "publishing delayed will");
        let topic = will.topic.clone();
        if let Err(quota) = shared
            .router
            .publish(id, &tenant, Arc::new(will), Instant::now())
        {
            warn!(%topic, %quota, "delayed will not published: quota exceeded");
        }
    };
    if will_delay > 0 && will_delay < expiry {
        tokio::time::sleep_until(start + Duration::from_secs(will_delay.into())).await;
        if let Some(will) = shared.router.take_delayed_will(id, generation) {
            publish(will);
        }
    }
    tokio::time::sleep_until(start + Duration::from_secs(expiry.into())).await;
    if let Some(will) = shared.router.expire(id, generation) {
        publish(will);
    }
}

/// The state of the session this connection takes over (`None` if it does not come in time).
async fn wait_handoff(pending: &mut Option<Handoff>) -> Option<StoredSession> {
    match pending.as_mut() {
        Some(wait) => {
            let stored = wait.await;
            *pending = None;
            stored
        }
        None => std::future::pending().await,
    }
}

/// Whether the message log stored the publish `pending` waits for (a dropped answer: no).
async fn wait_logged(pending: &mut Option<tokio::sync::oneshot::Receiver<bool>>) -> bool {
    match pending.as_mut() {
        Some(rx) => {
            let stored = rx.await.unwrap_or(false);
            *pending = None;
            stored
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod footprint {
    //! What one connection costs while idle, by part (issue 13 asks what each byte is). The
    //! figures are printed (`cargo test -p cloudsignal-broker footprint -- --nocapture`) and
    //! held to a budget so a change that grows them is seen.
    use super::*;
    use crate::auth::Principal;
    use cloudsignal_core::session::ServerSession;
    use std::mem::size_of;

    #[tokio::test]
    async fn idle_connection_parts() {
        let auth = crate::auth::Authenticator::new(Default::default(), true);
        let config = crate::BrokerConfig::tcp("127.0.0.1:0".parse().unwrap(), auth);
        let broker = crate::Broker::bind(config).await.unwrap();
        let (stream, _peer) = tokio::io::duplex(64);
        let peer = crate::chain::PeerInfo::plain("127.0.0.1:1".parse().unwrap(), "tcp");
        let task = serve(stream, peer, 1, broker.shared.clone());
        let parts = [
            (
                "connection task (its future: Connection, read buffer handle, await states)",
                std::mem::size_of_val(&task),
            ),
            ("Connection (sans-IO policy state)", size_of::<Connection>()),
            (
                "ServerSession (sans-IO protocol state)",
                size_of::<ServerSession>(),
            ),
            (
                "Mailbox (shared with the router)",
                size_of::<crate::mailbox::Mailbox>(),
            ),
            (
                "Principal (who, ACL, credential; shared by Arc, one for all anonymous clients)",
                size_of::<Principal>(),
            ),
            ("read buffer while idle (heap)", MIN_READ),
        ];
        for (what, bytes) in parts {
            eprintln!("{bytes:>6} B  {what}");
        }
        drop(task);
        // the suspended task is the largest part: keep it from growing unseen
        assert!(
            parts[0].1 <= 4096,
            "the connection future grew to {} bytes",
            parts[0].1
        );
    }
}
