//! Per-identity and per-client quotas.

/// Per-identity and per-client limits. An identity is a user (token), a service (API key) or
/// anonymous; anonymous development clients are not limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Live connections of one identity. Default 1,000 (a service key may run a fleet).
    pub connections_per_identity: usize,
    /// Persistent sessions (Session Expiry > 0, or v3.1.1 Clean Session 0), live or stored, of
    /// one identity. Default 100: each may hold --max-queued-messages while its client is away.
    pub sessions_per_identity: usize,
    /// Subscriptions of one session. Default 1,000.
    pub subscriptions_per_client: usize,
    /// Retained messages stored by one identity. Default 10,000.
    pub retained_per_identity: usize,
    /// Bytes of retained payload stored by one identity. Default 64 MiB.
    pub retained_bytes_per_identity: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            connections_per_identity: 1_000,
            sessions_per_identity: 100,
            subscriptions_per_client: 1_000,
            retained_per_identity: 10_000,
            retained_bytes_per_identity: 64 << 20,
        }
    }
}

/// A quota a request would exceed (answered 0x97, quota exceeded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaExceeded {
    /// [`Quotas::connections_per_identity`].
    Connections(usize),
    /// [`Quotas::sessions_per_identity`].
    Sessions(usize),
    /// [`Quotas::subscriptions_per_client`].
    Subscriptions(usize),
    /// [`Quotas::retained_per_identity`].
    RetainedMessages(usize),
    /// [`Quotas::retained_bytes_per_identity`].
    RetainedBytes(u64),
}

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connections(n) => write!(f, "at most {n} live connections per identity"),
            Self::Sessions(n) => write!(f, "at most {n} persistent sessions per identity"),
            Self::Subscriptions(n) => write!(f, "at most {n} subscriptions per client"),
            Self::RetainedMessages(n) => write!(f, "at most {n} retained messages per identity"),
            Self::RetainedBytes(n) => {
                write!(f, "at most {n} bytes of retained messages per identity")
            }
        }
    }
}
