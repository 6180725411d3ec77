//! Retained messages: stored per tenant and topic, counted against their publisher's quota,
//! replayed to matching new subscriptions [MQTT-3.3.1-5..-11].

use super::{unlimited, ConnId, QuotaExceeded, Retained, Router, Tenant};
use cloudsignal_core::session::Message;
use cloudsignal_core::topic::{FilterLevel, TopicFilter};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

impl Router {
    /// Stores (or, with an empty payload, clears) the retained message of `message`'s topic in
    /// `tenant` for the session `from`; refused when its owner would exceed the retained quota.
    pub(super) fn retain(
        &mut self,
        from: ConnId,
        tenant: &Tenant,
        message: &Arc<Message>,
        now: Instant,
    ) -> Result<(), QuotaExceeded> {
        let topic = message.topic.as_str();
        let owner: Option<Arc<str>> = self
            .sessions
            .get(&from)
            .filter(|s| !unlimited(&s.owner))
            .map(|s| s.owner.clone());
        let size = message.payload.len() as u64;
        if let (Some(owner), false) = (&owner, message.payload.is_empty()) {
            let (count, bytes) = self
                .owners
                .get(owner)
                .map_or((0, 0), |u| (u.retained, u.retained_bytes));
            let replaced = self
                .spaces
                .get(tenant)
                .and_then(|s| s.retained.get(topic))
                .filter(|r| r.owner.as_ref() == Some(owner))
                .map(|r| r.message.payload.len() as u64);
            let count = count + usize::from(replaced.is_none());
            if count > self.quotas.retained_per_identity {
                return Err(QuotaExceeded::RetainedMessages(
                    self.quotas.retained_per_identity,
                ));
            }
            if bytes.saturating_sub(replaced.unwrap_or(0)) + size
                > self.quotas.retained_bytes_per_identity
            {
                return Err(QuotaExceeded::RetainedBytes(
                    self.quotas.retained_bytes_per_identity,
                ));
            }
        }
        let old = self
            .spaces
            .get_mut(tenant)
            .and_then(|s| s.retained.remove(topic));
        if let Some(old) = old {
            self.release_retained(&old);
        }
        if !message.payload.is_empty() {
            if let Some(o) = &owner {
                let usage = self.owners.entry(o.clone()).or_default();
                usage.retained += 1;
                usage.retained_bytes += size;
            }
            self.spaces
                .entry(tenant.clone())
                .or_default()
                .retained
                .insert(
                    topic.to_owned(),
                    Retained {
                        message: message.clone(),
                        at: now,
                        owner,
                    },
                );
        }
        Ok(())
    }

    /// Gives a removed retained message's quota back to its owner.
    pub(super) fn release_retained(&mut self, old: &Retained) {
        let Some(o) = &old.owner else { return };
        if let Some(usage) = self.owners.get_mut(o) {
            usage.retained = usage.retained.saturating_sub(1);
            usage.retained_bytes = usage
                .retained_bytes
                .saturating_sub(old.message.payload.len() as u64);
            if usage.sessions.is_empty() && usage.retained == 0 {
                self.owners.remove(o);
            }
        }
    }
}

/// Retained messages matching `filter`, scanning only the range of its literal prefix.
pub(super) fn retained_matching<'a>(
    retained: &'a BTreeMap<String, Retained>,
    filter: &'a TopicFilter,
) -> impl Iterator<Item = &'a Retained> + 'a {
    let mut prefix = String::new();
    for level in filter.levels() {
        match level {
            FilterLevel::Literal(l) => {
                prefix.push_str(l);
                prefix.push('/');
            }
            _ => break,
        }
    }
    // "a/b/" covers "a/b/…"; the topic "a/b" itself (matched by "a/b" or "a/b/#") sorts
    // just before it
    let start = prefix.strip_suffix('/').unwrap_or("").to_owned();
    retained
        .range(start..)
        .take_while(move |(t, _)| t.starts_with(prefix.trim_end_matches('/')))
        .filter(move |(_, r)| filter.matches(&r.message.topic))
        .map(|(_, r)| r)
}
