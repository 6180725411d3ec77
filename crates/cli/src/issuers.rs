//! Trusted `tkn_` issuers for `cloudsignal serve`: the `--issuer`/`--issuer-jwks` pair for the
//! common single-issuer case, and `[[issuers]]` tables in the config file for several:
//!
//! ```toml
//! [[issuers]]
//! iss = "https://tokens.example.workers.dev"
//! jwks_url = "https://tokens.example.workers.dev/.well-known/jwks.json"
//! # revocations_url defaults to <jwks_url's origin>/v1/revocations; "off" disables polling
//! # the feed's credential (the worker's CLOUDSIGNAL_FEED_SECRET, or an API key with
//! # revocations:read), read from a file
//! revocations_token_file = "/etc/cloudsignal/feed.secret"
//! # the orgs (tenants) it may issue tokens for; an org bound to some issuers is refused from
//! # every other one. Unbound issuers may claim any org no issuer is bound to.
//! orgs = ["org_k7xm4pqr2n5t"]
//!
//! [[issuers]]
//! iss = "https://backend.example"
//! jwks_file = "/etc/cloudsignal/backend-jwks.json"
//! ```

use anyhow::{bail, Context, Result};
use cloudsignal_broker::auth::Authenticator;
use cloudsignal_broker::feed::FeedSource;
use cloudsignal_core::keys::KeySet;
use cloudsignal_core::token::TokenVerifier;
use std::path::PathBuf;
use std::time::Duration;
use tracing::{info, warn};

/// An issuer whose keys are fetched: (`iss`, JWKS URL).
pub(crate) type Remote = (String, String);

/// One trusted issuer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IssuerConfig {
    /// The `iss` its tokens carry.
    pub(crate) iss: String,
    /// Its JWKS over HTTP(S) (fetched at start, refreshed when due and on an unknown `kid`).
    pub(crate) jwks_url: Option<String>,
    /// Or its JWKS in a file.
    pub(crate) jwks_file: Option<PathBuf>,
    /// Its revocation feed; default derived from `jwks_url`; `off` disables polling.
    pub(crate) revocations_url: Option<String>,
    /// A file holding the feed's bearer credential.
    #[serde(default)]
    pub(crate) revocations_token_file: Option<PathBuf>,
    /// The orgs it may issue tokens for (empty: unbound).
    #[serde(default)]
    pub(crate) orgs: Vec<String>,
}

impl IssuerConfig {
    /// The `--issuer` / `--issuer-jwks` / `--issuer-revocations` flags as one issuer.
    pub(crate) fn from_flags(
        iss: &str,
        jwks: &str,
        revocations: Option<&str>,
        token_file: Option<&std::path::Path>,
        orgs: &[String],
    ) -> Self {
        let remote = jwks.starts_with("https://") || jwks.starts_with("http://");
        Self {
            iss: iss.to_owned(),
            jwks_url: remote.then(|| jwks.to_owned()),
            jwks_file: (!remote).then(|| PathBuf::from(jwks)),
            revocations_url: revocations.map(str::to_owned),
            revocations_token_file: token_file.map(PathBuf::from),
            orgs: orgs.to_vec(),
        }
    }

    /// The feed URL to poll, if any.
    pub(crate) fn feed_url(&self) -> Option<String> {
        match self.revocations_url.as_deref() {
            Some("off") => None,
            Some(url) => Some(url.to_owned()),
            None => self
                .jwks_url
                .as_deref()
                .and_then(|u| u.strip_suffix("/.well-known/jwks.json"))
                .map(|origin| format!("{origin}/v1/revocations")),
        }
    }
}

/// Parses the `issuers` array of the config file.
pub(crate) fn from_toml(value: toml::Value, path: &str) -> Result<Vec<IssuerConfig>> {
    let issuers: Vec<IssuerConfig> = value.try_into().with_context(|| {
        format!("{path}: [[issuers]] entries take iss, jwks_url or jwks_file, revocations_url, revocations_token_file, orgs")
    })?;
    for i in &issuers {
        if i.jwks_url.is_some() == i.jwks_file.is_some() {
            bail!(
                "{path}: issuer {:?} needs exactly one of jwks_url and jwks_file",
                i.iss
            );
        }
    }
    Ok(issuers)
}

/// Installs the issuers: file keys go into `tokens` now, URL keys become remote issuers on
/// the authenticator; returns the authenticator builder step and the feeds to poll.
pub(crate) fn install(
    issuers: &[IssuerConfig],
    tokens: &mut TokenVerifier,
    poll: Duration,
) -> Result<(Vec<Remote>, Vec<FeedSource>)> {
    let mut remote = Vec::new();
    let mut feeds = Vec::new();
    for i in issuers {
        if i.orgs.is_empty() {
            warn!(issuer = %i.iss, "issuer not bound to orgs: its tokens may claim any org no issuer is bound to (set orgs, or --issuer-org)");
        } else {
            for o in &i.orgs {
                cloudsignal_core::ids::OrgId::parse(o)
                    .with_context(|| format!("issuer {:?}: org {o:?}", i.iss))?;
            }
            info!(issuer = %i.iss, orgs = ?i.orgs, "issuer bound to orgs");
            tokens.bind_orgs(&i.iss, i.orgs.iter().cloned());
        }
        if let Some(path) = &i.jwks_file {
            let doc = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let (keys, skipped) = KeySet::from_jwks_json(&doc)
                .with_context(|| format!("{} is not a JWKS", path.display()))?;
            for s in skipped {
                warn!(kid = s.kid.as_deref().unwrap_or(""), reason = %s.reason, "JWKS key skipped");
            }
            if keys.is_empty() {
                bail!("{} holds no usable signing key", path.display());
            }
            info!(issuer = %i.iss, keys = keys.keys().len(), "trusting tkn_ issuer");
            tokens.trust(&i.iss, keys.keys().iter().cloned());
        }
        if let Some(url) = &i.jwks_url {
            let url = cloudsignal_core::idp::checked_url(&format!("issuer {:?} JWKS", i.iss), url)?;
            remote.push((i.iss.clone(), url));
        }
        if let Some(url) = i.feed_url() {
            let url = cloudsignal_core::idp::checked_url(
                &format!("issuer {:?} revocation feed", i.iss),
                &url,
            )?;
            let bearer = match &i.revocations_token_file {
                Some(path) => Some(cloudsignal_broker::feed::Bearer(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?
                        .trim()
                        .to_owned(),
                )),
                None => {
                    warn!(issuer = %i.iss, %url, "no revocations_token_file: the feed will refuse this broker unless it is public");
                    None
                }
            };
            feeds.push(FeedSource {
                url,
                interval: poll,
                bearer,
                issuer: i.iss.clone(),
            });
        }
    }
    Ok((remote, feeds))
}

/// Adds the remote issuers to an authenticator.
pub(crate) fn with_remotes(mut auth: Authenticator, remote: &[Remote]) -> Authenticator {
    for (iss, url) in remote {
        auth = auth.with_remote_issuer(iss, url);
    }
    auth
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn feed_urls_and_toml() {
        let w = IssuerConfig::from_flags(
            "https://w",
            "https://w.example/.well-known/jwks.json",
            None,
            None,
            &[],
        );
        assert_eq!(
            w.feed_url().as_deref(),
            Some("https://w.example/v1/revocations")
        );
        let f = IssuerConfig::from_flags("https://b", "/etc/jwks.json", None, None, &[]);
        assert_eq!(f.feed_url(), None);
        let off = IssuerConfig::from_flags(
            "https://w",
            "https://w/.well-known/jwks.json",
            Some("off"),
            None,
            &[],
        );
        assert_eq!(off.feed_url(), None);
        let doc: toml::Table = r#"
            [[issuers]]
            iss = "a"
            jwks_url = "https://a/.well-known/jwks.json"
            [[issuers]]
            iss = "b"
            jwks_file = "/x.json"
            revocations_url = "https://b/feed"
        "#
        .parse()
        .unwrap();
        let list = from_toml(doc["issuers"].clone(), "t.toml").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].feed_url().as_deref(), Some("https://b/feed"));
        let bad: toml::Table = "[[issuers]]\niss = \"a\"\n".parse().unwrap();
        assert!(from_toml(bad["issuers"].clone(), "t.toml").is_err());
        let typo: toml::Table = "[[issuers]]\niss = \"a\"\njwks = \"x\"\n".parse().unwrap();
        assert!(from_toml(typo["issuers"].clone(), "t.toml").is_err());
    }
}
