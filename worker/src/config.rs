//! Worker configuration from env bindings (wrangler vars and secrets), parsed once per isolate.

use cloudsignal_core::exchange::{
    BrokerUrls, ExchangePolicy, RoleMap, DEFAULT_TTL, MAX_TTL, MIN_TTL,
};
use cloudsignal_core::idp::{
    Auth0Config, ClerkConfig, FirebaseConfig, IdpVerifier, OidcConfig, ProviderConfig,
    ProvidersConfig,
};
use cloudsignal_core::ids::OrgId;
use cloudsignal_core::jwks_cache::JwksPolicy;
use cloudsignal_core::keys::{KeySet, SigningKey};
use worker::Env;

/// Everything a request needs, built from the environment.
pub(crate) struct Config {
    pub(crate) signing_key: SigningKey,
    pub(crate) policy: ExchangePolicy,
    pub(crate) idp: IdpVerifier,
    /// Public keys published at /.well-known/jwks.json: the signing key plus any previous ones.
    pub(crate) jwks: String,
    /// Browser origins allowed to call the worker (CORS).
    pub(crate) origins: Origins,
    /// The bearer secret of `POST /v1/revoke`; `None` disables it.
    pub(crate) admin_secret: Option<String>,
    /// `CLOUDSIGNAL_FEED_SECRET`: reads the revocation feed (brokers hold this, not the admin
    /// secret, which can also revoke).
    pub(crate) feed_secret: Option<String>,
    /// JWKS caching rules (`CLOUDSIGNAL_JWKS_MIN_TTL`, `…_MAX_TTL`, `…_REFETCH_INTERVAL`).
    pub(crate) jwks_policy: JwksPolicy,
    /// Seconds an isolate keeps the role map read from KV (`CLOUDSIGNAL_ROLE_MAP_TTL`).
    pub(crate) role_map_ttl: u64,
}

/// An optional whole number of seconds within bounds.
fn seconds(
    env: &Env,
    name: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, String> {
    match get(env, name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|t| range.contains(t))
            .ok_or_else(|| format!("{name} must be {}..={} seconds", range.start(), range.end())),
    }
}

fn jwks_policy(env: &Env) -> Result<JwksPolicy, String> {
    let d = JwksPolicy::default();
    let min_ttl = seconds(env, "CLOUDSIGNAL_JWKS_MIN_TTL", d.min_ttl, 1..=86_400)?;
    let max_ttl = seconds(
        env,
        "CLOUDSIGNAL_JWKS_MAX_TTL",
        d.max_ttl,
        min_ttl..=604_800,
    )?;
    Ok(JwksPolicy {
        default_ttl: d.default_ttl.clamp(min_ttl, max_ttl),
        min_ttl,
        max_ttl,
        refetch_interval: seconds(
            env,
            "CLOUDSIGNAL_JWKS_REFETCH_INTERVAL",
            d.refetch_interval,
            1..=3600,
        )?,
    })
}

/// `CLOUDSIGNAL_ALLOWED_ORIGINS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origins {
    /// `*`: any origin (the worker uses no cookies, so this exposes nothing a server-side
    /// caller could not already do; still opt-in).
    Any,
    /// Exactly these `scheme://host[:port]` origins; empty: no cross-origin browser calls.
    List(Vec<String>),
}

impl Origins {
    fn parse(value: Option<&str>) -> Result<Self, String> {
        let Some(value) = value else {
            return Ok(Self::List(Vec::new()));
        };
        if value.trim() == "*" {
            return Ok(Self::Any);
        }
        let mut list = Vec::new();
        for origin in value
            .split([',', ' '])
            .map(str::trim)
            .filter(|o| !o.is_empty())
        {
            let origin = origin.trim_end_matches('/');
            let valid = origin.split_once("://").is_some_and(|(scheme, host)| {
                matches!(scheme, "https" | "http") && !host.is_empty() && !host.contains('/')
            });
            if !valid {
                return Err(format!(
                    "CLOUDSIGNAL_ALLOWED_ORIGINS: {origin:?} is not an origin (scheme://host[:port])"
                ));
            }
            list.push(origin.to_owned());
        }
        Ok(Self::List(list))
    }

    /// Whether a request's `Origin` may read the response.
    pub(crate) fn allows(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::List(list) => list.iter().any(|o| o == origin),
        }
    }

    fn list(&self) -> Vec<String> {
        match self {
            Self::Any => Vec::new(),
            Self::List(list) => list.clone(),
        }
    }
}

/// The minimum length of `CLOUDSIGNAL_ADMIN_SECRET` (e.g. `openssl rand -hex 32`).
const MIN_ADMIN_SECRET: usize = 32;

/// Two variables that are set together or not at all.
fn both(env: &Env, a: &str, b: &str) -> Result<Option<(String, String)>, String> {
    match (get(env, a), get(env, b)) {
        (Some(x), Some(y)) => Ok(Some((x, y))),
        (None, None) => Ok(None),
        _ => Err(format!("{a} and {b} go together")),
    }
}

/// Identity providers: `CLOUDSIGNAL_PROVIDERS` (JSON) plus the per-provider shortcuts
/// (`SUPABASE_URL`, `FIREBASE_PROJECT_ID`, `AUTH0_DOMAIN`, `CLERK_ISSUER`, `OIDC_ISSUER`…).
fn providers(env: &Env, origins: &Origins) -> Result<IdpVerifier, String> {
    let mut cfg = match get(env, "CLOUDSIGNAL_PROVIDERS") {
        Some(json) => {
            ProvidersConfig::from_json(&json).map_err(|e| format!("CLOUDSIGNAL_PROVIDERS: {e}"))?
        }
        None => ProvidersConfig::default(),
    };
    cfg.add_supabase(
        get(env, "SUPABASE_URL").as_deref(),
        get(env, "SUPABASE_JWT_SECRET"),
    );
    let list = &mut cfg.providers;
    if let Some(project_id) = get(env, "FIREBASE_PROJECT_ID") {
        list.push(ProviderConfig::Firebase(FirebaseConfig {
            project_id,
            jwks_url: get(env, "FIREBASE_JWKS_URL"),
            role_claims: None,
        }));
    }
    if let Some((domain, audience)) = both(env, "AUTH0_DOMAIN", "AUTH0_AUDIENCE")? {
        list.push(ProviderConfig::Auth0(Auth0Config {
            domain,
            audience,
            role_claims: None,
        }));
    }
    if let Some(issuer) = get(env, "CLERK_ISSUER") {
        let authorized_parties = match get(env, "CLERK_AUTHORIZED_PARTIES") {
            Some(v) => match Origins::parse(Some(&v))? {
                Origins::Any => return Err("CLERK_AUTHORIZED_PARTIES may not be '*'".into()),
                Origins::List(l) => l,
            },
            None => origins.list(),
        };
        list.push(ProviderConfig::Clerk(ClerkConfig {
            issuer,
            authorized_parties,
            audience: None,
            role_claims: None,
        }));
    }
    if let Some((issuer, audience)) = both(env, "OIDC_ISSUER", "OIDC_AUDIENCE")? {
        list.push(ProviderConfig::Oidc(OidcConfig {
            issuer,
            audience,
            algorithms: None,
            jwks_url: None,
            role_claims: None,
        }));
    }
    if cfg.providers.is_empty() {
        return Err(
            "no identity provider is configured: set SUPABASE_URL, FIREBASE_PROJECT_ID, \
             AUTH0_DOMAIN, CLERK_ISSUER, OIDC_ISSUER or CLOUDSIGNAL_PROVIDERS"
                .into(),
        );
    }
    cfg.verifier().map_err(|e| e.to_string())
}

fn get(env: &Env, name: &str) -> Option<String> {
    env.var(name)
        .map(|v| v.to_string())
        .or_else(|_| env.secret(name).map(|v| v.to_string()))
        .ok()
        .filter(|v| !v.trim().is_empty())
}

fn required(env: &Env, name: &str) -> Result<String, String> {
    get(env, name).ok_or_else(|| format!("{name} is not set"))
}

impl Config {
    /// Reads and validates the configuration. Errors name the variable at fault.
    pub(crate) fn from_env(env: &Env) -> Result<Self, String> {
        let signing_key = SigningKey::from_jwk_json(&required(env, "CLOUDSIGNAL_SIGNING_KEY")?)
            .map_err(|e| format!("CLOUDSIGNAL_SIGNING_KEY: {e}"))?;
        let issuer = required(env, "CLOUDSIGNAL_ISSUER")?;
        let org = OrgId::parse(&required(env, "CLOUDSIGNAL_ORG")?)
            .map_err(|e| format!("CLOUDSIGNAL_ORG: {e}"))?;
        let ttl = seconds(env, "CLOUDSIGNAL_TOKEN_TTL", DEFAULT_TTL, MIN_TTL..=MAX_TTL)?;
        let role_map = match get(env, "CLOUDSIGNAL_ROLE_MAP") {
            None => RoleMap::default(),
            Some(json) => {
                RoleMap::from_json(&json).map_err(|e| format!("CLOUDSIGNAL_ROLE_MAP: {e}"))?
            }
        };
        let origins = Origins::parse(get(env, "CLOUDSIGNAL_ALLOWED_ORIGINS").as_deref())?;
        let idp = providers(env, &origins)?;
        let admin_secret = get(env, "CLOUDSIGNAL_ADMIN_SECRET");
        if admin_secret
            .as_ref()
            .is_some_and(|s| s.trim().len() < MIN_ADMIN_SECRET)
        {
            return Err(format!(
                "CLOUDSIGNAL_ADMIN_SECRET must be at least {MIN_ADMIN_SECRET} characters"
            ));
        }
        let feed_secret = get(env, "CLOUDSIGNAL_FEED_SECRET");
        if feed_secret
            .as_ref()
            .is_some_and(|s| s.trim().len() < MIN_ADMIN_SECRET)
        {
            return Err(format!(
                "CLOUDSIGNAL_FEED_SECRET must be at least {MIN_ADMIN_SECRET} characters"
            ));
        }
        let mut published = KeySet::new(vec![signing_key.verifying_entry()]);
        if let Some(previous) = get(env, "CLOUDSIGNAL_PREVIOUS_PUBLIC_KEYS") {
            let (old, _) = KeySet::from_jwks_json(&previous)
                .map_err(|e| format!("CLOUDSIGNAL_PREVIOUS_PUBLIC_KEYS: {e}"))?;
            for k in old.keys() {
                published.push(k.clone());
            }
        }
        Ok(Self {
            jwks: published.to_jwks_json(),
            policy: ExchangePolicy {
                issuer,
                org,
                ttl,
                role_map,
                broker: BrokerUrls {
                    wss_url: get(env, "CLOUDSIGNAL_BROKER_WSS_URL")
                        .unwrap_or_else(|| "wss://localhost:18885/mqtt".into()),
                    mqtts_url: get(env, "CLOUDSIGNAL_BROKER_MQTTS_URL")
                        .unwrap_or_else(|| "mqtts://localhost:8883".into()),
                },
            },
            signing_key,
            idp,
            origins,
            admin_secret: admin_secret.map(|s| s.trim().to_owned()),
            feed_secret: feed_secret.map(|s| s.trim().to_owned()),
            jwks_policy: jwks_policy(env)?,
            role_map_ttl: seconds(env, "CLOUDSIGNAL_ROLE_MAP_TTL", 60, 0..=3600)?,
        })
    }
}
