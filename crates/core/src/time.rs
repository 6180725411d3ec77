//! Time as data. Core never reads a clock; adapters pass the current time in.

use core::fmt;
use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch (UTC), as used by JWT `exp`/`nbf`/`iat`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct UnixTime(pub u64);

impl UnixTime {
    /// Builds a time from seconds since the epoch.
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs)
    }

    /// Builds a time from milliseconds since the epoch (what `Date.now()` returns), rounding down.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms / 1000)
    }

    /// Seconds since the epoch.
    pub const fn secs(self) -> u64 {
        self.0
    }

    /// `self + secs`, saturating at the far future.
    pub const fn plus(self, secs: u64) -> Self {
        Self(self.0.saturating_add(secs))
    }

    /// `self - secs`, saturating at the epoch.
    pub const fn minus(self, secs: u64) -> Self {
        Self(self.0.saturating_sub(secs))
    }
}

impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
