//! `cloudsignal serve`: the broker.

mod people;

use anyhow::{bail, Context, Result};
use clap::Args;
use cloudsignal_broker::auth::Authenticator;
use cloudsignal_broker::{Broker, BrokerConfig, ListenerConfig, Transport};
use cloudsignal_core::session::ServerConfig;
use cloudsignal_core::token::TokenVerifier;
use people::{native_exchange, role_map, sso_config};
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
    /// MQTT over TCP listener (address or host name, and port).
    #[arg(long, env = "CLOUDSIGNAL_MQTT_ADDR", default_value = "0.0.0.0:1883",
          value_parser = listen_addr)]
    mqtt_addr: SocketAddr,
    /// MQTT over WebSocket listener (plain, for development). `off` disables it.
    #[arg(long, env = "CLOUDSIGNAL_WS_ADDR", default_value = "0.0.0.0:18884",
          value_parser = optional_listen_addr)]
    ws_addr: String,
    /// MQTT over TLS listener; opened when --tls-cert and --tls-key are given.
    #[arg(long, env = "CLOUDSIGNAL_TLS_ADDR", default_value = "0.0.0.0:8883",
          value_parser = listen_addr)]
    tls_addr: SocketAddr,
    /// MQTT over secure WebSocket listener; opened when --tls-cert and --tls-key are given.
    #[arg(long, env = "CLOUDSIGNAL_WSS_ADDR", default_value = "0.0.0.0:18885",
          value_parser = listen_addr)]
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
    /// start without delaying the listeners, refreshed when due and on an unknown kid) or a
    /// file.
    #[arg(long, env = "CLOUDSIGNAL_ISSUER_JWKS", requires = "issuer")]
    issuer_jwks: Option<String>,
    /// That issuer's revocation feed (polled every --revocation-poll seconds). Default: the
    /// JWKS URL's origin + /v1/revocations (the worker's and the control plane's feed); `off`
    /// disables polling.
    #[arg(long, env = "CLOUDSIGNAL_ISSUER_REVOCATIONS", requires = "issuer")]
    issuer_revocations: Option<String>,
    /// File holding that feed's credential, sent as `Authorization: Bearer`: the worker's
    /// CLOUDSIGNAL_FEED_SECRET, or a control plane API key with the revocations:read scope.
    #[arg(
        long,
        env = "CLOUDSIGNAL_ISSUER_REVOCATIONS_TOKEN_FILE",
        requires = "issuer"
    )]
    issuer_revocations_token_file: Option<PathBuf>,
    /// Orgs (tenants) that issuer may issue tokens for, comma-separated. An org bound to some
    /// issuers is refused from every other one; an unbound issuer may claim any org no issuer
    /// is bound to. The control plane's issuer is always bound to the control plane's orgs.
    #[arg(
        long,
        env = "CLOUDSIGNAL_ISSUER_ORG",
        value_delimiter = ',',
        requires = "issuer"
    )]
    issuer_org: Vec<String>,
    /// Seconds between polls of remote revocation feeds.
    #[arg(long, env = "CLOUDSIGNAL_REVOCATION_POLL", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..))]
    revocation_poll: u64,
    /// Further issuers, from `[[issuers]]` tables in the config file.
    #[arg(skip)]
    pub(crate) issuers: Vec<crate::issuers::IssuerConfig>,
    /// The authenticator chain, from `[[auth]]` tables in the config file (see
    /// docs/authentication.md); without them: token, api_key, then mtls and webhook when
    /// their flags are given, then anonymous.
    #[arg(skip)]
    pub(crate) auth_entries: Vec<crate::methods::AuthEntry>,
    /// LDAP / Active Directory sources to sync users from, from `[[directories]]` tables in the
    /// config file (see docs/directory.md); needs the control plane.
    #[arg(skip)]
    pub(crate) directories: Vec<cloudsignal_control::directory::SourceConfig>,
    /// PEM bundle of the CAs whose client certificates the TLS and WSS listeners accept
    /// (mTLS); enables the `mtls` method.
    #[arg(long, env = "CLOUDSIGNAL_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Client certificates on the TLS listener: `optional` (a client without one
    /// authenticates otherwise) or `required` (no certificate, no connection).
    #[arg(long, env = "CLOUDSIGNAL_TLS_CLIENT_AUTH", default_value = "optional",
          value_parser = ["optional", "required"])]
    tls_client_auth: String,
    /// The same for the WSS listener (`off`: none asked).
    #[arg(long, env = "CLOUDSIGNAL_WSS_CLIENT_AUTH", default_value = "optional",
          value_parser = ["off", "optional", "required"])]
    wss_client_auth: String,
    /// PEM CRL files checked against client certificates (comma-separated; re-read when they
    /// change).
    #[arg(long, env = "CLOUDSIGNAL_TLS_CRL", value_delimiter = ',')]
    tls_crl: Vec<PathBuf>,
    /// The org certificate identities belong to. Default: the control plane's org.
    #[arg(long, env = "CLOUDSIGNAL_MTLS_ORG")]
    mtls_org: Option<String>,
    /// How a certificate names its user: a template over {cn} {ou} {o} {dns} {uri} {email}
    /// {fingerprint}. Their ACL is users/{user}/# (roles: `[[auth]]` in the config file).
    #[arg(long, env = "CLOUDSIGNAL_MTLS_IDENTITY", default_value = "{cn}")]
    mtls_identity: String,
    /// Auth webhook URL (https://, or http:// to this machine): asked about CONNECTs no
    /// earlier method claims (see docs/authentication.md). Fails closed.
    #[arg(
        long,
        env = "CLOUDSIGNAL_WEBHOOK_URL",
        requires = "webhook_secret_file"
    )]
    webhook_url: Option<String>,
    /// File holding the webhook's HMAC-SHA256 secret (at least 16 characters).
    #[arg(
        long,
        env = "CLOUDSIGNAL_WEBHOOK_SECRET_FILE",
        requires = "webhook_url"
    )]
    webhook_secret_file: Option<PathBuf>,
    /// The org the webhook's users belong to. Default: the control plane's org.
    #[arg(long, env = "CLOUDSIGNAL_WEBHOOK_ORG")]
    webhook_org: Option<String>,
    /// Milliseconds the webhook may take to answer.
    #[arg(long, env = "CLOUDSIGNAL_WEBHOOK_TIMEOUT_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    webhook_timeout_ms: u64,
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
    /// Bytes (topics and payloads) those queued messages may hold per client, whichever limit
    /// comes first; also the high-water mark (with --max-queued-messages) at which a publisher
    /// is slowed down for a subscriber that is behind. One message always fits.
    #[arg(long, env = "CLOUDSIGNAL_MAX_QUEUED_BYTES", default_value_t = 16 << 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_queued_bytes: u64,
    /// QoS 1/2 PUBLISHes a v5 client may have unacknowledged (Receive Maximum, 1-65535).
    #[arg(long, env = "CLOUDSIGNAL_RECEIVE_MAXIMUM", default_value_t = 100,
          value_parser = clap::value_parser!(u16).range(1..))]
    receive_maximum: u16,
    /// Topic aliases the broker assigns towards a v5 client (within the client's own Topic
    /// Alias Maximum): a topic's name is sent once per connection, then its 2-byte alias.
    /// 0 turns them off.
    #[arg(
        long,
        env = "CLOUDSIGNAL_MAX_OUTBOUND_TOPIC_ALIASES",
        default_value_t = 64
    )]
    max_outbound_topic_aliases: u16,
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
    /// Failed authentications from one source IP within a minute that ban the source for
    /// --ban-seconds (MQTT CONNECTs and control-plane API calls are counted apart). A
    /// username's failures only slow down further failures for it: a username is never banned.
    #[arg(long, env = "CLOUDSIGNAL_MAX_AUTH_FAILURES", default_value_t = 10)]
    max_auth_failures: u32,
    /// Upper bound, in milliseconds, of the refusal delay that doubles with each failure from
    /// a source or for a username.
    #[arg(long, env = "CLOUDSIGNAL_MAX_REFUSAL_DELAY_MS", default_value_t = 8000)]
    max_refusal_delay_ms: u64,
    /// Length of a brute-force ban, in seconds.
    #[arg(long, env = "CLOUDSIGNAL_BAN_SECONDS", default_value_t = 300)]
    ban_seconds: u64,
    /// Live connections one identity (a user, or an API key's service) may hold; more are
    /// refused 0x97 (quota exceeded). Anonymous development clients are not limited.
    #[arg(long, env = "CLOUDSIGNAL_MAX_CONNECTIONS_PER_IDENTITY", default_value_t = 1_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_identity: u32,
    /// Persistent sessions (Session Expiry > 0, or v3.1.1 Clean Session 0), live or stored,
    /// one identity may hold; more are refused 0x97.
    #[arg(long, env = "CLOUDSIGNAL_MAX_SESSIONS_PER_IDENTITY", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_sessions_per_identity: u32,
    /// Subscriptions one session may hold; more are refused in SUBACK with 0x97.
    #[arg(long, env = "CLOUDSIGNAL_MAX_SUBSCRIPTIONS_PER_CLIENT", default_value_t = 1_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_subscriptions_per_client: u32,
    /// Retained messages one identity may store; a retained PUBLISH past it is refused
    /// (PUBACK 0x97 for v5).
    #[arg(long, env = "CLOUDSIGNAL_MAX_RETAINED_PER_IDENTITY", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_retained_per_identity: u32,
    /// Bytes of retained payload one identity may store.
    #[arg(long, env = "CLOUDSIGNAL_MAX_RETAINED_BYTES_PER_IDENTITY", default_value_t = 64 << 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_retained_bytes_per_identity: u64,
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
    /// Cluster mode: the NATS server(s) joining this node to the others (comma-separated
    /// `nats://[user:pass@]host:4222`; JetStream on, for retained messages). See docs/cluster.md.
    #[arg(long, env = "CLOUDSIGNAL_CLUSTER_NATS")]
    cluster_nats: Option<String>,
    /// Cluster mode: the cluster's name (subject prefix; nodes with the same name on the same
    /// NATS form one cluster).
    #[arg(long, env = "CLOUDSIGNAL_CLUSTER_NAME", default_value = "cloudsignal")]
    cluster_name: String,
    /// Cluster mode: seconds without a beat after which another node is forgotten.
    #[arg(long, env = "CLOUDSIGNAL_CLUSTER_PEER_TIMEOUT", default_value_t = 5)]
    cluster_peer_timeout: u64,
    /// Cluster mode: hours the message log keeps a message for persistent sessions whose client
    /// is away (when the cluster's first node creates the log).
    #[arg(long, env = "CLOUDSIGNAL_CLUSTER_LOG_MAX_AGE", default_value_t = 24)]
    cluster_log_max_age: u64,
    /// Cluster mode: the message log's size at most, in MiB (the oldest messages go first;
    /// when the cluster's first node creates the log).
    #[arg(long, env = "CLOUDSIGNAL_CLUSTER_LOG_MAX_MIB", default_value_t = 1024)]
    cluster_log_max_mib: u64,
    /// Clock-skew allowance for token times, in seconds.
    #[arg(long, env = "CLOUDSIGNAL_TOKEN_LEEWAY", default_value_t = 30)]
    token_leeway: u64,
    /// Data directory: the store (SQLite), the control plane's signing key and the admin key.
    /// Default: $XDG_DATA_HOME/cloudsignal, else ~/.local/share/cloudsignal.
    #[arg(long, env = "CLOUDSIGNAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A shared PostgreSQL store (`postgres://user:pass@host:5432/db`) instead of the data
    /// directory's SQLite file: several nodes of a cluster share keys, revocations, people and
    /// usage. Prefer the environment variable or the config file to keep the password out of
    /// `ps`. See docs/cluster.md.
    #[arg(long, env = "CLOUDSIGNAL_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// PEM file of the CA(s) that signed the PostgreSQL server's certificate (default: the
    /// public web roots). TLS is used whenever the server offers it and required with
    /// `?sslmode=require` in the URL; the certificate is always verified.
    #[arg(long, env = "CLOUDSIGNAL_DATABASE_CA_FILE")]
    database_ca_file: Option<PathBuf>,
    /// Id of the org (tenant) the control plane creates in a new data directory (`org_` and 12
    /// of a-z 0-9; default random). A data directory that holds another org is refused.
    #[arg(long, env = "CLOUDSIGNAL_ORG")]
    org: Option<String>,
    /// Control plane HTTP API (API keys, token issuance, revocation). `off` disables it.
    #[arg(long, env = "CLOUDSIGNAL_CONTROL_ADDR", default_value = "0.0.0.0:8080",
          value_parser = optional_listen_addr)]
    control_addr: String,
    /// Public URL of the control plane: the `iss` of the tokens it issues.
    /// Default: http://127.0.0.1:<control port>.
    #[arg(long, env = "CLOUDSIGNAL_PUBLIC_URL")]
    public_url: Option<String>,
    /// Supabase project URL: enables POST /v1/token/exchange for its users' access tokens
    /// (ES256/RS256 keys from <url>/auth/v1/.well-known/jwks.json).
    #[arg(long, env = "SUPABASE_URL")]
    supabase_url: Option<String>,
    /// File holding the project's legacy HS256 JWT secret (if it still signs with one).
    #[arg(long, env = "CLOUDSIGNAL_SUPABASE_JWT_SECRET_FILE")]
    supabase_jwt_secret_file: Option<PathBuf>,
    /// Identity providers for POST /v1/token/exchange, as the worker's CLOUDSIGNAL_PROVIDERS
    /// JSON (Supabase, Firebase, Auth0, Clerk, OIDC; see worker/README.md), or @<file>.
    #[arg(long, env = "CLOUDSIGNAL_PROVIDERS")]
    providers: Option<String>,
    /// Role → ACL mapping for exchanged tokens and directory users' tokens (their groups
    /// are their roles), JSON as the worker's CLOUDSIGNAL_ROLE_MAP. Default: every user gets
    /// users/{user}/#.
    #[arg(long, env = "CLOUDSIGNAL_ROLE_MAP")]
    role_map: Option<String>,
    /// Lifetime of exchanged tokens, in seconds.
    #[arg(long, env = "CLOUDSIGNAL_EXCHANGE_TTL", default_value_t = 3600)]
    exchange_ttl: u64,
    /// Longest token lifetime POST /v1/tokens grants, in seconds (60-86400).
    #[arg(long, env = "CLOUDSIGNAL_MAX_TOKEN_TTL", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(60..=86_400))]
    max_token_ttl: u64,
    /// Lifetime of sign-in access tokens (cloudsignal login, the dashboard), in seconds; the
    /// CLI refreshes them by itself (5-3600).
    #[arg(long, env = "CLOUDSIGNAL_SESSION_ACCESS_TTL", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(5..=3600))]
    session_access_ttl: u64,
    /// Single sign-on for people (CLI and dashboard) through this OpenID Connect issuer (Auth0,
    /// Okta, Keycloak, Google, Supabase…); its redirect URI is <public URL>/oauth/sso/callback.
    #[arg(long, env = "CLOUDSIGNAL_SSO_ISSUER", requires_all = ["sso_client_id", "sso_client_secret_file"])]
    sso_issuer: Option<String>,
    /// CloudSignal's client id at the SSO issuer.
    #[arg(long, env = "CLOUDSIGNAL_SSO_CLIENT_ID")]
    sso_client_id: Option<String>,
    /// A file (0600) holding CloudSignal's client secret at the SSO issuer.
    #[arg(long, env = "CLOUDSIGNAL_SSO_CLIENT_SECRET_FILE")]
    sso_client_secret_file: Option<PathBuf>,
    /// Who may sign in through SSO, and as what, first match wins (repeat):
    /// domain:<domain>=<role> (a verified e-mail address) or group:<group>=<role>; roles are
    /// owner, admin, viewer. Nobody is admitted without a rule.
    #[arg(
        long = "sso-rule",
        env = "CLOUDSIGNAL_SSO_RULES",
        value_delimiter = ','
    )]
    sso_rules: Vec<String>,
    /// The ID token claim holding the person's groups.
    #[arg(long, env = "CLOUDSIGNAL_SSO_GROUPS_CLAIM", default_value = "groups")]
    sso_groups_claim: String,
}

/// The methods the flags enable (when the config file has no `[[auth]]`).
fn flag_methods(args: &ServeArgs) -> Result<crate::methods::FlagMethods> {
    use crate::methods::AuthEntry;
    Ok(crate::methods::FlagMethods {
        mtls: args.tls_client_ca.as_ref().map(|_| AuthEntry {
            method: "mtls".into(),
            org: args.mtls_org.clone(),
            identity: Some(args.mtls_identity.clone()),
            ..AuthEntry::default()
        }),
        webhook: args.webhook_url.as_ref().map(|url| AuthEntry {
            method: "webhook".into(),
            url: Some(url.clone()),
            secret_file: args.webhook_secret_file.clone(),
            org: args.webhook_org.clone(),
            timeout_ms: Some(args.webhook_timeout_ms),
            ..AuthEntry::default()
        }),
    })
}

/// Fails, naming the flag, if a listener's address is taken: checked before anything is
/// created (a first start would otherwise make a data directory and print an admin key, then
/// stop at the busy port).
fn ports_free(args: &ServeArgs) -> Result<()> {
    let mut wanted = vec![("--mqtt-addr", args.mqtt_addr.to_string())];
    for (flag, a) in [
        ("--ws-addr", &args.ws_addr),
        ("--control-addr", &args.control_addr),
    ] {
        if !matches!(a.as_str(), "off" | "") {
            wanted.push((flag, a.clone()));
        }
    }
    if args.tls_cert.is_some() {
        wanted.push(("--tls-addr", args.tls_addr.to_string()));
        wanted.push(("--wss-addr", args.wss_addr.to_string()));
    }
    for (flag, addr) in wanted {
        if let Err(e) = std::net::TcpListener::bind(&addr) {
            bail!("{flag} {addr}: cannot listen there ({e}); is another server using it? Choose another with {flag}");
        }
    }
    Ok(())
}

/// A listen address: `ip:port`, or `host:port` resolved now (the first address it names, e.g.
/// `localhost:1883`).
fn listen_addr(s: &str) -> std::result::Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    s.to_socket_addrs()
        .map_err(|e| format!("{s:?} is not a listen address (host:port): {e}"))?
        .next()
        .ok_or_else(|| format!("{s:?} names no address"))
}

/// [`listen_addr`], or `off`/empty; kept as text (the caller turns it into an address).
fn optional_listen_addr(s: &str) -> std::result::Result<String, String> {
    match s {
        "off" | "" => Ok(s.to_owned()),
        _ => listen_addr(s).map(|a| a.to_string()),
    }
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
    ports_free(&args)?;
    // TLS files are read before anything is created: a bad certificate, CA or CRL stops a
    // first start before it makes a data directory
    let mut tls_sources = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            use cloudsignal_broker::tls::{ClientAuth, TlsFiles, TlsSource};
            let files = |mode: &str| TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client: args
                    .tls_client_ca
                    .as_ref()
                    .filter(|_| mode != "off")
                    .map(|ca| ClientAuth {
                        ca: ca.clone(),
                        crls: args.tls_crl.clone(),
                        required: mode == "required",
                    }),
            };
            if args.tls_client_ca.is_some() {
                info!(tls = %args.tls_client_auth, wss = %args.wss_client_auth, crls = args.tls_crl.len(), "client certificates (mTLS) on the TLS listeners");
            }
            Some((
                TlsSource::new(files(&args.tls_client_auth))?,
                TlsSource::new(files(&args.wss_client_auth))?,
            ))
        }
        _ => None,
    };
    let mut tokens = TokenVerifier::default();
    tokens.leeway = args.token_leeway;
    let control = match args.control_addr.as_str() {
        "off" | "" if !args.directories.is_empty() => bail!(
            "[[directories]] need the control plane (it keeps the synced users and issues their tokens); drop --control-addr off"
        ),
        "off" | "" => None,
        a => {
            let addr: SocketAddr = a.parse().with_context(|| format!("--control-addr {a:?}"))?;
            let data_dir = match &args.data_dir {
                Some(d) => d.clone(),
                None => default_data_dir()?,
            };
            let issuer = args
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://127.0.0.1:{}", addr.port()));
            let exchange = native_exchange(&args)?;
            let (cp, first) =
                cloudsignal_control::ControlPlane::open(cloudsignal_control::ControlConfig {
                    data_dir: data_dir.clone(),
                    database_url: args
                        .database_url
                        .as_deref()
                        .filter(|u| !u.is_empty())
                        .map(|u| {
                            cloudsignal_control::store::sql::DatabaseUrl::parse(u)
                                .map(|u| u.with_ca_file(args.database_ca_file.clone()))
                        })
                        .transpose()
                        .context("--database-url")?,
                    issuer,
                    broker: cloudsignal_core::exchange::BrokerUrls {
                        wss_url: format!("wss://127.0.0.1:{}", args.wss_addr.port()),
                        mqtts_url: format!("mqtts://127.0.0.1:{}", args.tls_addr.port()),
                    },
                    max_ttl: args.max_token_ttl,
                    exchange,
                    api_throttle: throttle_policy(&args),
                    org: args
                        .org
                        .as_deref()
                        .map(cloudsignal_core::ids::OrgId::parse)
                        .transpose()
                        .context("--org")?,
                    role_map: role_map(&args)?,
                    directories: args.directories.clone(),
                    access_ttl: args.session_access_ttl,
                    sso: sso_config(&args)?,
                    trusted_issuers: args
                        .issuers
                        .iter()
                        .map(|i| i.iss.clone())
                        .chain(args.issuer.clone())
                        .collect(),
                })?;
            if let Some(first) = first {
                #[allow(clippy::print_stdout)]
                {
                    println!(
                        "\nCloudSignal admin API key (shown once; also saved to {}, mode 0600):\n\n    {}\n\nIts MQTT username is admin@{} (a key is one identity).\n",
                        first.admin_key_file.display(),
                        first.admin_key.expose(),
                        cp.org().as_str()
                    );
                    if let Some(link) = &first.owner_setup_link {
                        println!(
                            "Create the first owner account (people sign in with `cloudsignal login`; this link works once, for 24 hours):\n\n    {link}\n"
                        );
                    }
                }
            }
            info!(dir = %data_dir.display(), issuer = cp.issuer(), org = cp.org().as_str(), "control plane ready; its signing key is trusted");
            tokens.trust(cp.issuer(), cp.trusted_keys()?);
            // the control plane's tokens are for its own orgs, and its orgs' tokens come only
            // from it (or from issuers explicitly bound to them)
            tokens.bind_orgs(cp.issuer(), cp.orgs()?);
            Some((std::sync::Arc::new(cp), addr))
        }
    };
    let mut issuers = args.issuers.clone();
    if let (Some(iss), Some(jwks)) = (&args.issuer, &args.issuer_jwks) {
        issuers.push(crate::issuers::IssuerConfig::from_flags(
            iss,
            jwks,
            args.issuer_revocations.as_deref(),
            args.issuer_revocations_token_file.as_deref(),
            &args.issuer_org,
        ));
    }
    let (remote, feeds) = crate::issuers::install(
        &issuers,
        &mut tokens,
        std::time::Duration::from_secs(args.revocation_poll),
    )?;
    if args.allow_anonymous {
        warn!("ANONYMOUS ACCESS IS ENABLED: any client may connect without credentials and use every topic. Never do this in production.");
    } else if issuers.is_empty() && control.is_none() {
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
    if let Some((tls, wss)) = tls_sources.take() {
        listeners.push(ListenerConfig {
            addr: args.tls_addr,
            transport: Transport::Tls(tls),
        });
        listeners.push(ListenerConfig {
            addr: args.wss_addr,
            transport: Transport::Wss(wss),
        });
    } else {
        info!("no --tls-cert/--tls-key: the TLS (8883) and WSS (18885) listeners are off");
    }
    let auth = {
        let mut auth =
            crate::issuers::with_remotes(Authenticator::new(tokens, args.allow_anonymous), &remote);
        if let Some((cp, _)) = &control {
            auth = auth.with_key_authority(std::sync::Arc::new(
                cloudsignal_control::mqtt_keys::MqttKeys(cp.clone()),
            ));
        }
        auth
    };
    let chain = crate::methods::chain(
        &args.auth_entries,
        &flag_methods(&args)?,
        &auth,
        control.as_ref().map(|(cp, _)| cp.org()),
    )?;
    let order: Vec<String> = chain
        .iter()
        .map(cloudsignal_broker::chain::ChainEntry::label)
        .collect();
    info!(order = %order.join(" → "), "authenticator chain");
    let config = BrokerConfig {
        listeners,
        ws: cloudsignal_broker::ws::WsPolicy {
            allowed_origins: args.ws_allowed_origins.clone(),
            max_message_size: 0,
        },
        session: ServerConfig {
            max_packet_size: args.max_packet_size,
            max_session_expiry: args.max_session_expiry,
            max_queued: args.max_queued_messages.max(1),
            max_queued_bytes: usize::try_from(args.max_queued_bytes).unwrap_or(usize::MAX),
            receive_maximum: args.receive_maximum,
            max_outbound_aliases: args.max_outbound_topic_aliases,
            max_keep_alive: args.max_keep_alive,
            connect_timeout_ms: args.connect_timeout.saturating_mul(1000),
            ..ServerConfig::default()
        },
        chain: Some(chain),
        auth,
        usage: control.as_ref().map(|(cp, _)| {
            std::sync::Arc::new(cloudsignal_control::usage::BrokerUsage(cp.clone()))
                as std::sync::Arc<dyn cloudsignal_broker::usage::UsageSink>
        }),
        auth_failure_delay: std::time::Duration::from_millis(args.auth_failure_delay_ms),
        throttle: throttle_policy(&args),
        expiry_grace: std::time::Duration::from_secs(args.expiry_grace),
        connect_rate: args.connect_rate,
        revocation_feeds: feeds,
        expiry_warning: (args.expiry_warning > 0)
            .then(|| std::time::Duration::from_secs(args.expiry_warning)),
        quotas: cloudsignal_broker::router::Quotas {
            connections_per_identity: args.max_connections_per_identity as usize,
            sessions_per_identity: args.max_sessions_per_identity as usize,
            subscriptions_per_client: args.max_subscriptions_per_client as usize,
            retained_per_identity: args.max_retained_per_identity as usize,
            retained_bytes_per_identity: args.max_retained_bytes_per_identity,
        },
        backplane: None,
    };
    let cluster_config = args.cluster_nats.as_ref().map(|url| {
        let mut c = cloudsignal_broker::cluster::ClusterConfig::new(url, &args.cluster_name);
        c.peer_timeout = std::time::Duration::from_secs(args.cluster_peer_timeout.max(2));
        c.max_message = args.max_packet_size as usize;
        c.log_max_age = std::time::Duration::from_secs(args.cluster_log_max_age.max(1) * 3600);
        c.log_max_bytes = i64::try_from(args.cluster_log_max_mib.max(1) << 20).unwrap_or(i64::MAX);
        c
    });
    let mut config = config;
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let now = cloudsignal_core::UnixTime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        // listeners first: an issuer that is slow or down must not keep the broker from
        // starting (a CONNECT needing its keys waits for this fetch; see broker::jwks)
        let auth = config.auth.clone();
        let auth_for_orgs = config.auth.clone();
        let cluster = match cluster_config {
            Some(c) => {
                let router = cloudsignal_broker::router::Router::new(
                    config.session.max_queued,
                    config.quotas,
                )
                .with_max_stored_bytes(config.session.max_queued_bytes);
                let cluster = cloudsignal_broker::cluster::Cluster::join(
                    c,
                    router,
                    config.auth.revocations(),
                )
                .await?;
                config.backplane = Some(cluster.clone());
                Some(cluster)
            }
            None => None,
        };
        let broker = Broker::bind(config).await?;
        tokio::spawn(async move { auth.load_remote_keys(now).await });
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut api = None;
        if let Some((cp, addr)) = control {
            let handle = broker.handle();
            let revocations = cp.all_revocations()?;
            handle.load_revocations(&revocations);
            info!(
                count = revocations.len(),
                "revocations loaded from the store"
            );
            cp.attach_broker(handle);
            if let Some(cluster) = &cluster {
                // a key revoked on another node is dropped from this one's cache at once
                let cp = cp.clone();
                cluster.on_revocation(move |entry| {
                    if let cloudsignal_core::revocation::Revocation::Key { key_id } =
                        &entry.revocation
                    {
                        cp.forget_key(key_id);
                    }
                });
            }
            // orgs created with `cloudsignal admin create-org` while serving, and (with a
            // shared store) the signing keys of nodes started since
            let (cp2, auth2) = (cp.clone(), auth_for_orgs.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(cloudsignal_control::ORG_REFRESH);
                loop {
                    tick.tick().await;
                    match cp2.orgs() {
                        Ok(orgs) => auth2.bind_orgs(cp2.issuer(), orgs),
                        Err(e) => warn!(error = %e, "reading the orgs failed"),
                    }
                    if let Err(e) = cp2.refresh_trust() {
                        warn!(error = %e, "reading the published signing keys failed");
                    }
                }
            });
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the control plane on {addr}"))?;
            info!(%addr, "control plane HTTP listening");
            api = Some(tokio::spawn(cloudsignal_control::api::serve(
                listener,
                cp,
                stopped(stop_rx.clone()),
            )));
        }
        let signal = async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        };
        broker.run(signal).await;
        if let Some(cluster) = &cluster {
            cluster.leave().await;
        }
        if let Some(api) = api {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), api).await;
        }
        Ok(())
    })
}

fn throttle_policy(args: &ServeArgs) -> cloudsignal_broker::throttle::ThrottlePolicy {
    cloudsignal_broker::throttle::ThrottlePolicy {
        max_failures: args.max_auth_failures.max(1),
        ban: std::time::Duration::from_secs(args.ban_seconds),
        max_delay: std::time::Duration::from_millis(args.max_refusal_delay_ms),
        ..Default::default()
    }
}

fn default_data_dir() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("cloudsignal"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("no --data-dir given and neither XDG_DATA_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".local/share/cloudsignal"))
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
/// The tables of the config file (what flags cannot say).
#[derive(Debug, Default)]
pub(crate) struct FileTables {
    /// `[[issuers]]`.
    pub(crate) issuers: Vec<crate::issuers::IssuerConfig>,
    /// `[[auth]]`.
    pub(crate) auth: Vec<crate::methods::AuthEntry>,
    /// `[[directories]]`.
    pub(crate) directories: Vec<cloudsignal_control::directory::SourceConfig>,
}

pub(crate) fn apply_config_file(serve: &clap::Command) -> Result<FileTables> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("serve") {
        return Ok(FileTables::default());
    }
    let from_flag = args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--config=").map(str::to_owned).or_else(|| {
            (a == "--config")
                .then(|| args.get(i + 1).cloned())
                .flatten()
        })
    });
    let Some(path) = from_flag.or_else(|| std::env::var("CLOUDSIGNAL_CONFIG").ok()) else {
        return Ok(FileTables::default());
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading config file {path}"))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{path} is not valid TOML"))?;
    // (key = the flag's name with underscores, the name of its variable without
    // CLOUDSIGNAL_ as an older spelling, the flag, the variable)
    let known: Vec<(String, String, &clap::Arg, String)> = serve
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_string_lossy().into_owned();
            let key = a.get_long()?.replace('-', "_");
            let legacy = env.trim_start_matches("CLOUDSIGNAL_").to_ascii_lowercase();
            Some((key, legacy, a, env))
        })
        .filter(|(key, ..)| key != "config")
        .collect();
    let mut tables = FileTables::default();
    for (key, value) in table {
        if key == "issuers" {
            tables.issuers = crate::issuers::from_toml(value, &path)?;
            continue;
        }
        if key == "auth" {
            tables.auth = crate::methods::from_toml(value, &path)?;
            continue;
        }
        if key == "directories" {
            let sources: Vec<cloudsignal_control::directory::SourceConfig> =
                value.try_into().with_context(|| {
                    format!(
                        "{path}: [[directories]] entries take {}",
                        cloudsignal_control::directory::CONFIG_KEYS
                    )
                })?;
            cloudsignal_control::directory::validate_all(&sources).with_context(|| path.clone())?;
            tables.directories = sources;
            continue;
        }
        let found = known.iter().find(|(k, ..)| *k == key).or_else(|| {
            let old = known.iter().find(|(_, legacy, ..)| *legacy == key)?;
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "warning: {path}: key {key:?} is an old name; use {:?} (the flag's name)",
                    old.0
                );
            }
            Some(old)
        });
        let Some((name, _, arg, env)) = found else {
            let keys: Vec<&str> = known.iter().map(|(k, ..)| k.as_str()).collect();
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
        // checked here with the flag's own parser, so a bad value names the file and the key
        if arg.get_action().takes_values() {
            if let Err(e) = serve.clone().try_get_matches_from([
                "serve".to_owned(),
                format!("--{}={value}", arg.get_long().unwrap_or(name)),
            ]) {
                use clap::error::ErrorKind;
                if matches!(
                    e.kind(),
                    ErrorKind::InvalidValue | ErrorKind::ValueValidation
                ) {
                    let why = e.to_string();
                    let why = why
                        .lines()
                        .next()
                        .unwrap_or("")
                        .trim_start_matches("error: ");
                    bail!("{path}: key {key:?}: {why}");
                }
            }
        }
        if std::env::var_os(env).is_none() {
            std::env::set_var(env, value);
        }
    }
    Ok(tables)
}
