//! # cloudsignal-broker
//!
//! CloudSignal's native MQTT broker: a thin tokio adapter around `cloudsignal-core`'s
//! sans-IO session. It accepts MQTT 3.1.1 and 5.0 over TCP, authenticates every CONNECT with a
//! `tkn_` token (or lets anonymous clients in when explicitly allowed for development),
//! enforces the token's ACL on every PUBLISH and SUBSCRIBE, closes the session when the token
//! expires (v5 DISCONNECT 0xA0 "token expired"), routes messages to plain and shared
//! subscriptions, keeps retained messages and publishes wills.
//!
//! Listeners: MQTT over TCP and over WebSocket. Not yet: TLS/WSS, persistent sessions, in-session re-authentication,
//! revocation, `$SYS` topics and a topic trie; they follow in the broker and token-lifecycle
//! issues.
#![forbid(unsafe_code)]

pub mod auth;
mod conn;
pub mod router;
pub mod ws;

use auth::Authenticator;
use cloudsignal_core::mqtt::ReasonCode;
use cloudsignal_core::session::ServerConfig;
use router::Router;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Broker configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// MQTT over TCP listener address.
    pub mqtt_addr: SocketAddr,
    /// MQTT over WebSocket listener address (subprotocol `mqtt`, paths `/` and `/mqtt`).
    pub ws_addr: Option<SocketAddr>,
    /// WebSocket rules (origin allowlist, message size).
    pub ws: ws::WsPolicy,
    /// Per-connection protocol limits.
    pub session: ServerConfig,
    /// Who may connect.
    pub auth: Authenticator,
}

/// State shared by all connections.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) router: Mutex<Router>,
    pub(crate) auth: Authenticator,
    pub(crate) session_config: ServerConfig,
}

/// A bound broker, ready to run.
#[derive(Debug)]
pub struct Broker {
    listener: TcpListener,
    ws_listener: Option<TcpListener>,
    ws_policy: Arc<ws::WsPolicy>,
    shared: Arc<Shared>,
}

impl Broker {
    /// Binds the listeners.
    pub async fn bind(config: BrokerConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.mqtt_addr).await?;
        let ws_listener = match config.ws_addr {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let mut ws_policy = config.ws.clone();
        if ws_policy.max_message_size == 0 {
            ws_policy.max_message_size = config.session.max_packet_size as usize + 16;
        }
        Ok(Self {
            listener,
            ws_listener,
            ws_policy: Arc::new(ws_policy),
            shared: Arc::new(Shared {
                router: Mutex::new(Router::default()),
                auth: config.auth,
                session_config: config.session,
            }),
        })
    }

    /// The MQTT listener's address (useful with port 0).
    pub fn mqtt_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The WebSocket listener's address, if one is configured.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then tells every v5 client DISCONNECT 0x8B (server
    /// shutting down) and waits briefly for connections to close.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let ids = AtomicU64::new(1);
        tokio::pin!(shutdown);
        info!(addr = %self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "MQTT over TCP listening");
        if let Some(addr) = self.ws_addr() {
            info!(%addr, "MQTT over WebSocket listening (paths / and /mqtt, subprotocol mqtt)");
        }
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let id = ids.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(conn::serve(stream, peer, id, self.shared.clone()));
                    }
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                accepted = accept_opt(self.ws_listener.as_ref()) => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let id = ids.fetch_add(1, Ordering::Relaxed);
                        let (shared, policy) = (self.shared.clone(), self.ws_policy.clone());
                        tokio::spawn(async move {
                            match tokio::time::timeout(Duration::from_secs(10), ws::accept(stream, &policy)).await {
                                Ok(Ok(bytes)) => conn::serve(bytes, peer, id, shared).await,
                                Ok(Err(why)) => warn!(%peer, why, "WebSocket upgrade refused"),
                                Err(_) => warn!(%peer, "WebSocket handshake timed out"),
                            }
                        });
                    }
                    Err(e) => {
                        warn!(error = %e, "WebSocket accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = &mut shutdown => break,
            }
        }
        info!("shutting down: disconnecting clients (0x8B)");
        if let Ok(r) = self.shared.router.lock() {
            r.close_all(ReasonCode::SERVER_SHUTTING_DOWN);
        }
        for _ in 0..50 {
            let open = self
                .shared
                .router
                .lock()
                .map(|r| r.connections())
                .unwrap_or(0);
            if open == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn accept_opt(
    l: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}
