//! Polling a remote issuer's revocation feed (`GET <url>?after=<cursor>`, the shape of
//! `core::revocation::Feed`), so tokens revoked at the edge worker or at another control plane
//! are refused here and their live sessions closed (0x98) within one poll interval.
//!
//! The cursor starts at 0 on every start: the feed holds every revocation still in force, so a
//! restarted broker is complete after its first poll. A failed poll is logged and retried at the
//! next interval; what was applied stays applied.
//!
//! Feeds name users, tokens and keys, so issuers serve them only to a credential: the
//! control plane's needs an API key with `revocations:read`, the worker's its
//! `CLOUDSIGNAL_FEED_SECRET`; the broker sends it as `Authorization: Bearer`.

use crate::BrokerHandle;
use cloudsignal_core::revocation::Feed;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Largest feed page accepted, in bytes.
const MAX_PAGE: u64 = 4 << 20;

/// One remote feed to poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedSource {
    /// The feed URL, without the `after` parameter.
    pub url: String,
    /// Time between polls.
    pub interval: Duration,
    /// The credential sent as `Authorization: Bearer`, if the feed needs one.
    pub bearer: Option<Bearer>,
    /// The issuer whose feed it is: a user revocation for an org this issuer may not issue
    /// for (another tenant's) is ignored, so one issuer cannot revoke another tenant's users.
    pub issuer: String,
}

/// A feed credential: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Bearer(pub String);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(<redacted>)")
    }
}

fn page_url(base: &str, after: u64) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}after={after}")
}

/// Polls `source` for ever, applying new entries through `broker`.
pub(crate) async fn poll(broker: BrokerHandle, source: FeedSource) {
    let mut cursor = 0u64;
    let mut tick = tokio::time::interval(source.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    info!(url = %source.url, interval = ?source.interval, "polling the revocation feed");
    loop {
        tick.tick().await;
        // drain every page that is ready
        loop {
            let url = page_url(&source.url, cursor);
            let bearer = source.bearer.clone();
            let fetched = tokio::task::spawn_blocking(move || {
                crate::jwks::http_get_with(&url, MAX_PAGE, bearer.as_ref().map(|b| b.0.as_str()))
                    .map(|(body, _)| body)
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
            .and_then(|body| {
                serde_json::from_str::<Feed>(&body)
                    .map_err(|e| format!("not a revocation feed: {e}"))
            });
            match fetched {
                Ok(feed) => {
                    let fresh: Vec<_> =
                        feed.revocations.iter().filter(|e| e.seq > cursor).collect();
                    for e in &fresh {
                        if let cloudsignal_core::revocation::Revocation::User { org, .. } =
                            &e.revocation
                        {
                            if !broker.may_issue(&source.issuer, org) {
                                warn!(url = %source.url, issuer = %source.issuer, %org, "revocation feed entry ignored: this issuer may not issue for that org");
                                continue;
                            }
                        }
                        broker.revoke(e);
                    }
                    debug!(url = %source.url, applied = fresh.len(), next = feed.next, "revocation feed polled");
                    if fresh.is_empty() || feed.next <= cursor {
                        break;
                    }
                    cursor = feed.next;
                }
                Err(e) => {
                    warn!(url = %source.url, error = %e, "revocation feed poll failed; retrying at the next interval");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::page_url;

    #[test]
    fn cursor_parameter() {
        assert_eq!(
            page_url("http://h/v1/revocations", 7),
            "http://h/v1/revocations?after=7"
        );
        assert_eq!(
            page_url("http://h/feed?org=x", 0),
            "http://h/feed?org=x&after=0"
        );
    }
}
