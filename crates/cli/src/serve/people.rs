//! The control plane's identity settings from `cloudsignal serve`'s flags: the token
//! exchange's identity providers, the role map, and single sign-on for people.

use super::ServeArgs;
use anyhow::{Context, Result};
use tracing::{info, warn};

/// `POST /v1/token/exchange`'s identity providers, from `--providers` and the Supabase flags.
pub(super) fn native_exchange(
    args: &ServeArgs,
) -> Result<Option<std::sync::Arc<cloudsignal_control::exchange::NativeExchange>>> {
    use cloudsignal_core::idp::ProvidersConfig;
    let mut cfg = match &args.providers {
        Some(v) => {
            let json = match v.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading --providers file {path}"))?,
                None => v.clone(),
            };
            ProvidersConfig::from_json(&json).context("--providers")?
        }
        None => ProvidersConfig::default(),
    };
    let secret = match &args.supabase_jwt_secret_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    cfg.add_supabase(args.supabase_url.as_deref(), secret);
    if cfg.providers.is_empty() {
        return Ok(None);
    }
    let idp = cfg
        .verifier()
        .context("identity providers for POST /v1/token/exchange")?;
    let role_map = role_map(args)?;
    let names: Vec<&str> = idp.profiles().iter().map(|p| p.provider().name()).collect();
    info!(providers = ?names, "POST /v1/token/exchange enabled");
    Ok(Some(std::sync::Arc::new(
        cloudsignal_control::exchange::NativeExchange::new(idp, role_map, args.exchange_ttl),
    )))
}

/// `--sso-*`: single sign-on for people, when an issuer is given.
pub(super) fn sso_config(
    args: &ServeArgs,
) -> Result<Option<cloudsignal_control::oauth::sso::SsoConfig>> {
    use cloudsignal_control::oauth::sso::{Rule, SsoConfig};
    let (Some(issuer), Some(client_id), Some(secret_file)) = (
        &args.sso_issuer,
        &args.sso_client_id,
        &args.sso_client_secret_file,
    ) else {
        return Ok(None);
    };
    cloudsignal_core::idp::checked_url("--sso-issuer", issuer)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let client_secret = cloudsignal_control::read_secret_file(secret_file)?
        .trim()
        .to_owned();
    let rules = args
        .sso_rules
        .iter()
        .map(|r| Rule::parse(r))
        .collect::<Result<Vec<_>>>()?;
    if rules.is_empty() {
        warn!("--sso-issuer without --sso-rule: nobody can sign in through SSO");
    }
    info!(
        issuer,
        rules = rules.len(),
        "single sign-on for people enabled"
    );
    Ok(Some(SsoConfig {
        issuer: issuer.trim_end_matches('/').to_owned(),
        client_id: client_id.clone(),
        client_secret,
        groups_claim: args.sso_groups_claim.clone(),
        rules,
    }))
}

/// `--role-map`, or the default (every user gets users/{user}/#).
pub(super) fn role_map(args: &ServeArgs) -> Result<cloudsignal_core::exchange::RoleMap> {
    match &args.role_map {
        Some(json) => cloudsignal_core::exchange::RoleMap::from_json(json).context("--role-map"),
        None => Ok(cloudsignal_core::exchange::RoleMap::default()),
    }
}
