//! The connection's decisions beyond single packets: admitting a CONNECT (ban, chain decision,
//! session registration, takeover), re-authentication, wills, expiry warnings and flow
//! control.

use super::{Action, Connection};
use crate::auth::{Principal, Refusal};
use crate::backplane::Registration;
use crate::router::Resume;
use cloudsignal_core::mqtt::{Protocol, QoS, ReasonCode};
use cloudsignal_core::session::{CloseReason, ConnectRequest, Delivery, Message, StoredSession};
use cloudsignal_core::topic::TopicName;
use cloudsignal_core::UnixTime;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

impl Connection {
    /// A CONNECT arrived. A banned source is refused at once (it costs no bcrypt and no key
    /// fetch); anything else goes to the authenticator chain.
    pub(super) fn on_connect_received(
        &mut self,
        req: ConnectRequest,
        now: Instant,
    ) -> Option<Action> {
        let banned = self
            .shared
            .throttle
            .lock()
            .is_banned(self.peer.addr.ip(), now);
        if banned {
            warn!(peer = %self.peer.addr, username = req.username.as_deref().unwrap_or(""), "refused: source temporarily banned after repeated failures");
            self.refuse_after(ReasonCode::BANNED, now, Duration::ZERO);
            return None;
        }
        Some(Action::Authenticate(Box::new(req)))
    }

    /// The authenticator chain decided `req` (the principal and the method that accepted it,
    /// or the refusal). Usernames are never banned: a username's failures only slow down
    /// further failures, so nobody can lock a user out by naming them.
    pub(crate) fn authenticated(
        &mut self,
        req: ConnectRequest,
        decided: Result<(Arc<Principal>, &'static str), Refusal>,
        now: Instant,
    ) {
        let mut client_id = req.client_id.clone();
        let mut assigned = None;
        if client_id.is_empty() {
            if req.protocol == Protocol::V311 && !req.clean_start {
                // [MQTT-3.1.3-8] an empty id needs a clean session in v3.1.1
                warn!(peer = %self.peer.addr, "refused: empty client id without clean session");
                return self.refuse_after(
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                    now,
                    Duration::ZERO,
                );
            }
            // unpredictable, so nobody can guess (or pre-empt) the id a client will get
            client_id = crate::assigned_client_id();
            assigned = Some(client_id.clone());
        }
        let principal = match decided {
            Ok((p, method)) => {
                self.handle.info = Some(Arc::new(crate::router::LiveInfo {
                    addr: self.peer.addr,
                    listener: self.peer.listener,
                    protocol: if req.protocol == Protocol::V5 {
                        "5"
                    } else {
                        "3.1.1"
                    },
                    method,
                    username: p.username.clone(),
                    connected_at: self.clock.unix(now).secs(),
                    expires_at: p.expires_at.map(|e| e.secs()),
                }));
                self.shared.throttle.lock().record_success(&p.username);
                info!(peer = %self.peer.addr, client_id, username = %p.username, method = %method, listener = %self.peer.listener, "authenticated");
                p
            }
            Err(refusal) => {
                let extra = self.shared.throttle.lock().record_failure(
                    self.peer.addr.ip(),
                    req.username.as_deref(),
                    now,
                );
                warn!(peer = %self.peer.addr, client_id, username = req.username.as_deref().unwrap_or(""), cause = %refusal.cause, reason = %refusal.reason, "connect refused");
                {
                    // counted by the org the username names (bounded: reasons are few)
                    let org = req
                        .username
                        .as_deref()
                        .and_then(|u| u.rsplit_once('@'))
                        .map(|(_, o)| o)
                        .filter(|o| cloudsignal_core::ids::OrgId::parse(o).is_ok())
                        .unwrap_or("")
                        .to_owned();
                    *self
                        .shared
                        .refusals
                        .lock()
                        .entry((org, refusal.reason.to_string()))
                        .or_default() += 1;
                }
                if let (Some(sink), Some(subject)) = (
                    &self.shared.usage,
                    crate::usage::refused_subject(req.username.as_deref(), req.password.as_deref()),
                ) {
                    let failed = crate::usage::Counters {
                        auth_failures: 1,
                        ..Default::default()
                    };
                    sink.record(subject, self.peer.addr.ip(), failed);
                }
                return self.refuse_after(refusal.reason, now, extra);
            }
        };
        self.tenant = principal.identity.tenant();
        let owner = principal.identity.owner();
        let admitted = self.shared.router.register(
            Registration {
                conn: self.id,
                client_id: &client_id,
                owner: &owner,
                tenant: &self.tenant,
                credential: &principal.credential,
                handle: self.handle.clone(),
                clean_start: req.clean_start,
                persistent: req.session_expiry > 0,
                session_expiry: req.session_expiry,
            },
            // a resumed session keeps only what this login's ACL allows
            &|f| principal.acl.may_subscribe(f),
            now,
        );
        let admitted = match admitted {
            Ok(a) => a,
            Err(quota) => {
                warn!(peer = %self.peer.addr, client_id, username = %principal.username, %quota, "connect refused: quota exceeded");
                return self.refuse_after(ReasonCode::QUOTA_EXCEEDED, now, Duration::ZERO);
            }
        };
        if admitted.new_tenant {
            self.shared.sys_wake.notify_one();
        }
        if admitted.removed_subscriptions > 0 {
            warn!(peer = %self.peer.addr, client_id, username = %principal.username, removed_subscriptions = admitted.removed_subscriptions, "resumed session: subscriptions this login's ACL does not allow were removed");
        }
        let registered = admitted.registered;
        if let Some(will) = registered.ended_will {
            self.publish_will(will, now);
        }
        self.id = registered.id;
        self.generation = Some(registered.generation);
        self.will = req.will.map(Box::new);
        self.will_delay = req.will_delay;
        self.client_id = client_id;
        let stored = match registered.resume {
            Resume::New => None,
            Resume::Stored(s) => Some(s),
            Resume::Handoff(rx) => {
                info!(peer = %self.peer.addr, client_id = %self.client_id, username = %principal.username, "taking over a live session");
                self.principal = Some(principal);
                self.handoff = Some(Box::new((assigned, req.keep_alive)));
                self.handoff_rx = Some(rx);
                return;
            }
        };
        info!(peer = %self.peer.addr, client_id = %self.client_id, username = %principal.username, protocol = ?req.protocol, resumed = stored.is_some(), session_expiry = req.session_expiry, "connected");
        self.meter.counters.connects += 1;
        self.principal = Some(principal);
        let will = self.will.is_some();
        let ms = self.clock.millis(now);
        self.session
            .accept(ms, stored, assigned.as_deref(), will, req.keep_alive);
    }

    /// The old connection handed its session over (`None`: it did not in time; the
    /// subscriptions remain, the messages it held are lost, and the log says so).
    pub(crate) fn handed_over(&mut self, stored: Option<StoredSession>, now: Instant) {
        let Some(pending) = self.handoff.take() else {
            return;
        };
        let (assigned, keep_alive) = *pending;
        let stored = stored.unwrap_or_else(|| {
            warn!(client_id = %self.client_id, "session handoff timed out; resuming without the old connection's messages");
            StoredSession::new()
        });
        info!(peer = %self.peer.addr, client_id = %self.client_id, inherited = stored.len(), "connected (session taken over)");
        self.meter.counters.connects += 1;
        let will = self.will.is_some();
        let ms = self.clock.millis(now);
        self.session
            .accept(ms, Some(stored), assigned.as_deref(), will, keep_alive);
    }

    /// The driver waited for the subscribers the last publish congested; `stalled` of them
    /// made no room in time (they are counted, and publishers no longer wait for them).
    pub(crate) fn subscribers_waited(&mut self, stalled: usize, limit: Duration) {
        for _ in 0..stalled {
            self.shared.router.count_stalled(&self.tenant);
            warn!(client_id = %self.client_id, "a subscriber made no room for {limit:?}: it is stalled, and publishers no longer wait for it");
        }
    }

    /// What the driver should wait for next: the message log's answer for the oldest
    /// publish waiting on it (report with [`Self::logged`]), if that is the next
    /// acknowledgement due.
    pub(crate) fn take_log_wait(&mut self) -> Option<tokio::sync::oneshot::Receiver<bool>> {
        let front = self.logging.front_mut()?;
        match std::mem::replace(&mut front.2, super::Awaited::Taken) {
            super::Awaited::Log(rx) => Some(rx),
            other => {
                front.2 = other;
                None
            }
        }
    }

    /// The message log stored (`true`) the oldest publish waiting on it, or did not. Stored:
    /// it is acknowledged, and so are the decided ones queued behind it. Not stored: the
    /// client is disconnected (0x89 Server busy) without an acknowledgement, so it sends the
    /// message again when it reconnects [MQTT-4.4.0-1].
    pub(crate) fn logged(&mut self, stored: bool) {
        if !stored {
            self.logging.clear();
            warn!(client_id = %self.client_id, "the message log did not store a publish: disconnecting the publisher (0x89) so it sends it again");
            self.session.close(
                ReasonCode::SERVER_BUSY,
                Some("message log unavailable; send again"),
            );
            return;
        }
        if let Some((id, qos, _)) = self.logging.pop_front() {
            self.session.ack_publish(id, qos, ReasonCode::SUCCESS);
        }
        while let Some((_, _, super::Awaited::Ready(_))) = self.logging.front() {
            if let Some((id, qos, super::Awaited::Ready(reason))) = self.logging.pop_front() {
                self.session.ack_publish(id, qos, reason);
            }
        }
    }

    /// The driver's write to this client made no progress for `limit`: the client reads
    /// nothing for now, so its mailbox is marked lagging (a fan-out's publisher does not wait
    /// for it) until it takes deliveries again.
    pub(crate) fn client_not_reading(&mut self, limit: Duration) {
        if self.handle.mailbox.mark_lagging() {
            tracing::debug!(client_id = %self.client_id, "the client read nothing for {limit:?}: lagging");
        }
    }

    /// MQTT 5 re-authentication, once its keys are fetched: AUTH 0x19, method
    /// `cloudsignal-token`, data = a new `tkn_` for the same user. Success swaps ACL and expiry
    /// at once, drops subscriptions the new ACL no longer allows and answers AUTH 0x00;
    /// anything else closes with 0x87 (0x8C for another method).
    pub(crate) fn keys_fetched(&mut self, now: Instant) {
        let (Some(pending), Some(principal)) = (self.reauth.take(), self.principal.clone()) else {
            return;
        };
        let super::PendingAuth {
            reason,
            method,
            data,
        } = *pending;
        if reason != ReasonCode::REAUTHENTICATE
            || method.as_deref() != Some(crate::auth::TOKEN_AUTH_METHOD)
        {
            warn!(client_id = %self.client_id, ?reason, ?method, "unsupported AUTH");
            return self.session.close(
                ReasonCode::BAD_AUTHENTICATION_METHOD,
                Some("use AUTH 0x19 with method cloudsignal-token"),
            );
        }
        match self.shared.auth.reauthenticate(
            &principal,
            data.as_deref().unwrap_or_default(),
            &self.client_id,
            self.clock.unix(now),
        ) {
            Ok(next) => {
                let removed = self.shared.router.reauthenticated(
                    self.id,
                    next.credential.clone(),
                    next.expires_at.map(|e| e.secs()),
                    &|f| next.acl.may_subscribe(f),
                );
                info!(client_id = %self.client_id, username = %next.username, expires_at = ?next.expires_at, removed_subscriptions = removed, "re-authenticated");
                self.principal = Some(Arc::new(next));
                self.session
                    .send_auth(ReasonCode::SUCCESS, crate::auth::TOKEN_AUTH_METHOD);
            }
            Err(refusal) => {
                warn!(client_id = %self.client_id, cause = %refusal.cause, "re-authentication refused");
                self.session
                    .close(ReasonCode::NOT_AUTHORIZED, Some("re-authentication failed"));
            }
        }
    }

    /// The session closed: decides the will. A session ended for a revoked or expired
    /// credential speaks no more (its will would be a message sent with a credential that is
    /// no longer valid); a will is published only if the ACL allows it at disconnect time, and
    /// after its Will Delay Interval if the session outlives the connection [MQTT-3.1.3-9].
    pub(super) fn on_closed(
        &mut self,
        principal: &Principal,
        reason: &CloseReason,
        publish_will: bool,
        now: Instant,
    ) {
        let ended_by_credential = matches!(
            reason,
            CloseReason::ServerClosed(
                ReasonCode::ADMINISTRATIVE_ACTION | ReasonCode::MAXIMUM_CONNECT_TIME
            )
        );
        if ended_by_credential && self.will.is_some() {
            info!(client_id = %self.client_id, ?reason, "will discarded: the session ended with its credential");
            self.will = None;
        }
        let Some(will) = self.will.take().filter(|_| publish_will) else {
            return;
        };
        if !principal.acl.may_publish(&will.topic) {
            warn!(client_id = %self.client_id, topic = %will.topic, "will denied by ACL");
        } else if self.will_delay > 0 && self.session.session_expiry() > 0 {
            self.delayed_will = Some(will);
        } else {
            self.publish_will(*will, now);
        }
    }

    /// Tells the client, on the expiry warning topic only, that its credential expires at
    /// `exp`.
    pub(super) fn warn_expiry(&mut self, exp: UnixTime) {
        self.warned_for = Some(exp);
        let Ok(topic) = TopicName::parse(crate::EXPIRY_WARNING_TOPIC) else {
            return;
        };
        let message = Message {
            topic,
            payload: format!("{{\"expires_at\":{}}}", exp.secs()).into_bytes(),
            qos: QoS::AtMostOnce,
            retain: false,
            expiry: None,
            forwarded: Default::default(),
        };
        self.deliver(Delivery {
            message: Arc::new(message),
            qos: QoS::AtMostOnce,
            retain: false,
            subscription_ids: Vec::new(),
            expiry: None,
        });
    }
}
