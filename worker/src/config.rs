//! Worker configuration from env bindings (wrangler vars and secrets), parsed once per isolate.

use cloudsignal_core::exchange::{
    BrokerUrls, ExchangePolicy, RoleMap, DEFAULT_TTL, MAX_TTL, MIN_TTL,
};
use cloudsignal_core::idp::{IdpVerifier, SupabaseConfig};
use cloudsignal_core::ids::OrgId;
use cloudsignal_core::keys::{KeySet, SigningKey};
use worker::Env;

/// Everything a request needs, built from the environment.
pub(crate) struct Config {
    pub(crate) signing_key: SigningKey,
    pub(crate) policy: ExchangePolicy,
    pub(crate) idp: IdpVerifier,
    /// Public keys published at /.well-known/jwks.json: the signing key plus any previous ones.
    pub(crate) jwks: String,
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
        let ttl = match get(env, "CLOUDSIGNAL_TOKEN_TTL") {
            None => DEFAULT_TTL,
            Some(v) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|t| (MIN_TTL..=MAX_TTL).contains(t))
                .ok_or_else(|| {
                    format!("CLOUDSIGNAL_TOKEN_TTL must be {MIN_TTL}..={MAX_TTL} seconds")
                })?,
        };
        let role_map = match get(env, "CLOUDSIGNAL_ROLE_MAP") {
            None => RoleMap::default(),
            Some(json) => {
                RoleMap::from_json(&json).map_err(|e| format!("CLOUDSIGNAL_ROLE_MAP: {e}"))?
            }
        };
        let supabase = SupabaseConfig::new(
            get(env, "SUPABASE_URL").as_deref(),
            get(env, "SUPABASE_JWT_SECRET").as_deref(),
        );
        let idp = IdpVerifier::new(vec![supabase.profile().map_err(|e| e.to_string())?]);
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
        })
    }
}
