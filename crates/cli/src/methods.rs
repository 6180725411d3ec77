//! The authenticator chain of `cloudsignal serve`: `[[auth]]` tables in the config file, in
//! order, or (without them) the default chain with the methods the flags enable:
//!
//! ```toml
//! [[auth]]
//! method = "mtls"            # client certificates (needs --tls-client-ca)
//! listeners = ["tls"]        # optional: tcp, tls, ws, wss (default: all)
//! org = "org_k7xm4pqr2n5t"
//! identity = "{cn}"          # {cn} {ou} {o} {dns} {uri} {email} {fingerprint}
//! roles = [
//!   { match = "OU=sensors", publish = ["sensors/{user}/#"], subscribe = ["commands/{user}/#"] },
//!   { match = "URI:spiffe://example.org/admin/", publish = ["#"], subscribe = ["#"] },
//! ]
//! default_publish = []       # with no default_* a certificate no role matches is refused
//!
//! [[auth]]
//! method = "token"           # tkn_ tokens
//!
//! [[auth]]
//! method = "api_key"         # sk_/rk_ keys (needs the control plane)
//!
//! [[auth]]
//! method = "webhook"
//! url = "https://auth.example/mqtt"
//! secret_file = "/etc/cloudsignal/webhook.secret"
//! org = "org_k7xm4pqr2n5t"
//! timeout_ms = 2000
//! max_concurrency = 32
//!
//! [[auth]]
//! method = "anonymous"       # with --allow-anonymous only
//! ```

use anyhow::{bail, Context, Result};
use cloudsignal_broker::auth::Authenticator;
use cloudsignal_broker::chain::{AuthMethod, ChainEntry};
use cloudsignal_broker::mtls::{CertRole, Mtls, MtlsConfig};
use cloudsignal_broker::webhook::{Webhook, WebhookConfig};
use cloudsignal_core::acl::AclRules;
use cloudsignal_core::ids::OrgId;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// One `[[auth]]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthEntry {
    /// `token`, `api_key`, `mtls`, `webhook` or `anonymous`.
    pub(crate) method: String,
    /// Listeners it applies to (default: all).
    #[serde(default)]
    pub(crate) listeners: Vec<String>,
    /// mtls, webhook: the org its identities belong to.
    pub(crate) org: Option<String>,
    /// mtls: the identity template.
    pub(crate) identity: Option<String>,
    /// mtls: roles, first match wins.
    #[serde(default)]
    pub(crate) roles: Vec<CertRole>,
    /// mtls: the ACL of a certificate no role matches.
    pub(crate) default_publish: Option<Vec<String>>,
    /// mtls: the ACL of a certificate no role matches.
    pub(crate) default_subscribe: Option<Vec<String>>,
    /// webhook: the endpoint.
    pub(crate) url: Option<String>,
    /// webhook: a file holding the HMAC secret.
    pub(crate) secret_file: Option<PathBuf>,
    /// webhook: milliseconds to wait for an answer (default 2000).
    pub(crate) timeout_ms: Option<u64>,
    /// webhook: calls in flight at once (default 32).
    pub(crate) max_concurrency: Option<usize>,
}

/// Parses the `auth` array of the config file.
pub(crate) fn from_toml(value: toml::Value, path: &str) -> Result<Vec<AuthEntry>> {
    let entries: Vec<AuthEntry> = value
        .try_into()
        .with_context(|| format!("{path}: [[auth]] entries (see `cloudsignal serve --help`)"))?;
    for e in &entries {
        for l in &e.listeners {
            if !matches!(l.as_str(), "tcp" | "tls" | "ws" | "wss") {
                bail!(
                    "{path}: [[auth]] {}: listener {l:?} is not tcp, tls, ws or wss",
                    e.method
                );
            }
        }
    }
    Ok(entries)
}

/// What the flags say about client certificates and the webhook (used when the config file
/// has no `[[auth]]`).
#[derive(Debug, Clone, Default)]
pub(crate) struct FlagMethods {
    pub(crate) mtls: Option<AuthEntry>,
    pub(crate) webhook: Option<AuthEntry>,
}

fn org(e: &AuthEntry, fallback: Option<&OrgId>) -> Result<OrgId> {
    match (&e.org, fallback) {
        (Some(o), _) => OrgId::parse(o).with_context(|| format!("the {} method: org {o:?}", e.method)),
        (None, Some(f)) => Ok(f.clone()),
        (None, None) => bail!(
            "the {} method needs an org (org = \"org_…\" in [[auth]], or --{}-org) when the control plane is off",
            e.method,
            e.method
        ),
    }
}

fn method(
    e: &AuthEntry,
    auth: &Authenticator,
    default_org: Option<&OrgId>,
) -> Result<Arc<dyn AuthMethod>> {
    Ok(match e.method.as_str() {
        "token" | "api_key" | "anonymous" => auth.method(&e.method).context("built-in method")?,
        "mtls" => {
            let default_acl = match (&e.default_publish, &e.default_subscribe) {
                (None, None) if !e.roles.is_empty() => None,
                (None, None) => Some(AclRules::new(["users/{user}/#"], ["users/{user}/#"])?),
                (p, s) => Some(AclRules::new(
                    p.iter().flatten().map(String::as_str),
                    s.iter().flatten().map(String::as_str),
                )?),
            };
            Arc::new(
                Mtls::new(MtlsConfig {
                    org: org(e, default_org)?,
                    identity: e.identity.clone().unwrap_or_else(|| "{cn}".into()),
                    roles: e.roles.clone(),
                    default_acl,
                })
                .map_err(anyhow::Error::msg)?,
            )
        }
        "webhook" => {
            let url = e
                .url
                .as_deref()
                .context("[[auth]] webhook: url is required")?;
            let url = cloudsignal_core::idp::checked_url("webhook url", url)?;
            let secret_file = e
                .secret_file
                .as_ref()
                .context("[[auth]] webhook: secret_file is required (the HMAC secret)")?;
            let secret = std::fs::read_to_string(secret_file)
                .with_context(|| format!("reading {}", secret_file.display()))?
                .trim()
                .to_owned();
            if secret.len() < 16 {
                bail!(
                    "{}: the webhook secret must have at least 16 characters",
                    secret_file.display()
                );
            }
            Arc::new(Webhook::new(WebhookConfig {
                url,
                secret,
                org: org(e, default_org)?,
                timeout: Duration::from_millis(e.timeout_ms.unwrap_or(2000).max(1)),
                max_concurrency: e.max_concurrency.unwrap_or(32).max(1),
            }))
        }
        other => {
            bail!("[[auth]] method {other:?}: one of token, api_key, mtls, webhook, anonymous")
        }
    })
}

/// The chain: the `[[auth]]` entries in order, or the default chain with what the flags
/// enable (`token`, `api_key`, `mtls`, `webhook`, `anonymous`).
pub(crate) fn chain(
    entries: &[AuthEntry],
    flags: &FlagMethods,
    auth: &Authenticator,
    default_org: Option<&OrgId>,
) -> Result<Vec<ChainEntry>> {
    let entry = |e: &AuthEntry| -> Result<ChainEntry> {
        Ok(ChainEntry {
            method: method(e, auth, default_org)?,
            listeners: e.listeners.clone(),
        })
    };
    if !entries.is_empty() {
        return entries.iter().map(entry).collect();
    }
    let extra = [&flags.mtls, &flags.webhook]
        .into_iter()
        .flatten()
        .map(entry)
        .collect::<Result<Vec<_>>>()?;
    Ok(auth.default_chain(extra))
}
