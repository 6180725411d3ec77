//! `cloudsignal serve`: the broker.

use anyhow::{bail, Context, Result};
use clap::Args;
use cloudsignal_broker::auth::Authenticator;
use cloudsignal_broker::{Broker, BrokerConfig, ListenerConfig, Transport};
use cloudsignal_core::keys::KeySet;
use cloudsignal_core::session::ServerConfig;
use cloudsignal_core::token::TokenVerifier;
use std::net::SocketAddr;
use std::path::PathBuf;
use tracing::{info, warn};

/// Options of `cloudsignal serve`. Every flag also reads a `CLOUDSIGNAL_*` variable, and a TOML
/// file given with `--config` may set any of them under the flag's name with underscores
/// (`mqtt_addr = "0.0.0.0:1883"`). Precedence: flag, then environment, then file, then default.
#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// TOML configuration file (keys: the flag names with underscores).
    #[arg(long, env = "CLOUDSIGNAL_CONFIG")]
    config: Option<PathBuf>,
    /// MQTT over TCP listener.
    #[arg(long, env = "CLOUDSIGNAL_MQTT_ADDR", default_value = "0.0.0.0:1883")]
    mqtt_addr: SocketAddr,
    /// MQTT over WebSocket listener (plain, for development). `off` disables it.
    #[arg(long, env = "CLOUDSIGNAL_WS_ADDR", default_value = "0.0.0.0:18884")]
    ws_addr: String,
    /// MQTT over TLS listener; opened when --tls-cert and --tls-key are given.
    #[arg(long, env = "CLOUDSIGNAL_TLS_ADDR", default_value = "0.0.0.0:8883")]
    tls_addr: SocketAddr,
    /// MQTT over secure WebSocket listener; opened when --tls-cert and --tls-key are given.
    #[arg(long, env = "CLOUDSIGNAL_WSS_ADDR", default_value = "0.0.0.0:18885")]
    wss_addr: SocketAddr,
    /// PEM certificate chain for the TLS and WSS listeners.
    #[arg(long, env = "CLOUDSIGNAL_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for the TLS and WSS listeners.
    #[arg(long, env = "CLOUDSIGNAL_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Allowed WebSocket `Origin`s, comma-separated; empty allows any.
    #[arg(long, env = "CLOUDSIGNAL_WS_ALLOWED_ORIGINS", value_delimiter = ',')]
    ws_allowed_origins: Vec<String>,
    /// Issuer (`iss`) of the tkn_ tokens to trust, e.g. the worker's URL.
    #[arg(long, env = "CLOUDSIGNAL_TRUSTED_ISSUER", requires = "issuer_jwks")]
    issuer: Option<String>,
    /// JWKS of that issuer: an http(s) URL (e.g. <worker>/.well-known/jwks.json, fetched at
    /// start, refreshed when due and on an unknown kid) or a file.
    #[arg(long, env = "CLOUDSIGNAL_ISSUER_JWKS", requires = "issuer")]
    issuer_jwks: Option<String>,
    /// Let clients without credentials in with full access. Development only.
    #[arg(long, env = "CLOUDSIGNAL_ALLOW_ANONYMOUS")]
    allow_anonymous: bool,
    /// Largest MQTT packet accepted, in bytes.
    #[arg(long, env = "CLOUDSIGNAL_MAX_PACKET_SIZE", default_value_t = 1 << 20)]
    max_packet_size: u32,
    /// Longest session a client may keep while disconnected, in seconds (v5 Session Expiry
    /// Interval; v3.1.1 Clean Session 0 sessions get exactly this). Longer requests are capped
    /// and v5 clients are told in CONNACK.
    #[arg(long, env = "CLOUDSIGNAL_MAX_SESSION_EXPIRY", default_value_t = 7 * 24 * 3600)]
    max_session_expiry: u32,
    /// QoS 1/2 messages queued per client, connected (behind its inflight window) or away
    /// (in its stored session). A connected client that falls this far behind is a slow
    /// consumer and is disconnected (0x97); an absent client's newest messages are dropped.
    #[arg(long, env = "CLOUDSIGNAL_MAX_QUEUED_MESSAGES", default_value_t = 1000)]
    max_queued_messages: usize,
    /// QoS 1/2 PUBLISHes a v5 client may have unacknowledged (Receive Maximum, 1-65535).
    #[arg(long, env = "CLOUDSIGNAL_RECEIVE_MAXIMUM", default_value_t = 100,
          value_parser = clap::value_parser!(u16).range(1..))]
    receive_maximum: u16,
    /// Upper bound on the keep-alive a client may ask for, in seconds (0: no bound). Clients
    /// asking for more, or for none, are told this value (v5 Server Keep Alive).
    #[arg(long, env = "CLOUDSIGNAL_MAX_KEEP_ALIVE", default_value_t = 0)]
    max_keep_alive: u16,
    /// Seconds a new connection may take to send CONNECT before it is closed.
    #[arg(long, env = "CLOUDSIGNAL_CONNECT_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    connect_timeout: u64,
    /// Every refused CONNECT is answered this many milliseconds after it arrived, whatever the
    /// cause, so refusal timing reveals nothing.
    #[arg(long, env = "CLOUDSIGNAL_AUTH_FAILURE_DELAY_MS", default_value_t = 500)]
    auth_failure_delay_ms: u64,
    /// Failed authentications from one source IP or for one username, within a minute, that
    /// ban it for --ban-seconds.
    #[arg(long, env = "CLOUDSIGNAL_MAX_AUTH_FAILURES", default_value_t = 10)]
    max_auth_failures: u32,
    /// Length of a brute-force ban, in seconds.
    #[arg(long, env = "CLOUDSIGNAL_BAN_SECONDS", default_value_t = 300)]
    ban_seconds: u64,
    /// Seconds a session may outlive its token's expiry before it is closed (0xA0).
    #[arg(long, env = "CLOUDSIGNAL_EXPIRY_GRACE", default_value_t = 0)]
    expiry_grace: u64,
    /// Seconds before expiry at which a client subscribed to $cloudsignal/session/expiring is
    /// warned (0 disables the warning).
    #[arg(long, env = "CLOUDSIGNAL_EXPIRY_WARNING", default_value_t = 60)]
    expiry_warning: u64,
    /// New connections accepted per second on each listener (bursts of twice as many).
    #[arg(long, env = "CLOUDSIGNAL_CONNECT_RATE", default_value_t = 1000)]
    connect_rate: u32,
    /// Clock-skew allowance for token times, in seconds.
    #[arg(long, env = "CLOUDSIGNAL_TOKEN_LEEWAY", default_value_t = 30)]
    token_leeway: u64,
}

pub(crate) fn run(args: ServeArgs) -> Result<()> {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CLOUDSIGNAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut tokens = TokenVerifier::default();
    tokens.leeway = args.token_leeway;
    let mut remote = None;
    if let (Some(iss), Some(path)) = (&args.issuer, &args.issuer_jwks) {
        if path.starts_with("https://") || path.starts_with("http://") {
            remote = Some((iss.clone(), path.clone()));
        }
    }
    if let (Some(iss), Some(path), None) = (&args.issuer, &args.issuer_jwks, &remote) {
        let doc = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        let (keys, skipped) =
            KeySet::from_jwks_json(&doc).with_context(|| format!("{path} is not a JWKS"))?;
        for s in skipped {
            warn!(kid = s.kid.as_deref().unwrap_or(""), reason = %s.reason, "JWKS key skipped");
        }
        if keys.is_empty() {
            bail!("{path} holds no usable signing key");
        }
        info!(issuer = %iss, keys = keys.keys().len(), "trusting tkn_ issuer");
        tokens.trust(iss, keys.keys().iter().cloned());
    }
    if args.allow_anonymous {
        warn!("ANONYMOUS ACCESS IS ENABLED: any client may connect without credentials and use every topic. Never do this in production.");
    } else if args.issuer.is_none() {
        warn!("no token issuer is configured and anonymous access is off: every CONNECT will be refused (see --issuer/--issuer-jwks)");
    }
    let mut listeners = vec![ListenerConfig {
        addr: args.mqtt_addr,
        transport: Transport::Tcp,
    }];
    match args.ws_addr.as_str() {
        "off" | "" => {}
        a => listeners.push(ListenerConfig {
            addr: a
                .parse::<SocketAddr>()
                .with_context(|| format!("--ws-addr {a:?}"))?,
            transport: Transport::Ws,
        }),
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let acceptor = cloudsignal_broker::tls::acceptor(cert, key)?;
        listeners.push(ListenerConfig {
            addr: args.tls_addr,
            transport: Transport::Tls(acceptor.clone()),
        });
        listeners.push(ListenerConfig {
            addr: args.wss_addr,
            transport: Transport::Wss(acceptor),
        });
    } else {
        info!("no --tls-cert/--tls-key: the TLS (8883) and WSS (18885) listeners are off");
    }
    let config = BrokerConfig {
        listeners,
        ws: cloudsignal_broker::ws::WsPolicy {
            allowed_origins: args.ws_allowed_origins,
            max_message_size: 0,
        },
        session: ServerConfig {
            max_packet_size: args.max_packet_size,
            max_session_expiry: args.max_session_expiry,
            max_queued: args.max_queued_messages.max(1),
            receive_maximum: args.receive_maximum,
            max_keep_alive: args.max_keep_alive,
            connect_timeout_ms: args.connect_timeout.saturating_mul(1000),
            ..ServerConfig::default()
        },
        auth: match &remote {
            Some((iss, url)) => {
                Authenticator::new(tokens, args.allow_anonymous).with_remote_issuer(iss, url)
            }
            None => Authenticator::new(tokens, args.allow_anonymous),
        },
        auth_failure_delay: std::time::Duration::from_millis(args.auth_failure_delay_ms),
        throttle: cloudsignal_broker::throttle::ThrottlePolicy {
            max_failures: args.max_auth_failures.max(1),
            ban: std::time::Duration::from_secs(args.ban_seconds),
            ..Default::default()
        },
        expiry_grace: std::time::Duration::from_secs(args.expiry_grace),
        connect_rate: args.connect_rate,
        expiry_warning: (args.expiry_warning > 0)
            .then(|| std::time::Duration::from_secs(args.expiry_warning)),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let now = cloudsignal_core::UnixTime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        config.auth.load_remote_keys(now).await;
        let broker = Broker::bind(config).await?;
        broker.run(shutdown_signal()).await;
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Applies `cloudsignal serve --config FILE` (or `CLOUDSIGNAL_CONFIG`) before the command line is
/// parsed: each key sets the matching `CLOUDSIGNAL_*` variable unless the environment already
/// has it, so flags and environment keep precedence and clap stays the one source of truth.
pub(crate) fn apply_config_file(serve: &clap::Command) -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("serve") {
        return Ok(());
    }
    let from_flag = args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--config=").map(str::to_owned).or_else(|| {
            (a == "--config")
                .then(|| args.get(i + 1).cloned())
                .flatten()
        })
    });
    let Some(path) = from_flag.or_else(|| std::env::var("CLOUDSIGNAL_CONFIG").ok()) else {
        return Ok(());
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading config file {path}"))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{path} is not valid TOML"))?;
    let known: Vec<(String, String)> = serve
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_string_lossy().into_owned();
            Some((
                env.trim_start_matches("CLOUDSIGNAL_").to_ascii_lowercase(),
                env,
            ))
        })
        .filter(|(key, _)| key != "config")
        .collect();
    for (key, value) in table {
        let Some((_, env)) = known.iter().find(|(k, _)| *k == key) else {
            let keys: Vec<&str> = known.iter().map(|(k, _)| k.as_str()).collect();
            bail!(
                "{path}: unknown key {key:?}; known keys: {}",
                keys.join(", ")
            );
        };
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect::<Vec<_>>()
                .join(","),
            other => bail!("{path}: {key} has an unsupported value {other}"),
        };
        if std::env::var_os(env).is_none() {
            std::env::set_var(env, value);
        }
    }
    Ok(())
}
