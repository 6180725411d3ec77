//! When to fetch tokens and when to reconnect: pure functions of time and a random number, so
//! adapters and tests inject both.

use crate::session::Millis;

/// Exponential backoff with jitter: the `n`th delay is uniformly drawn from
/// `[d/2, d]` where `d = min(cap, base · 2ⁿ)`. Half the delay is fixed so retries never
/// collapse to zero; half is random so many clients cut off together (a broker restart) do
/// not come back in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay's upper bound, ms. Default 500.
    pub base: Millis,
    /// Largest delay, ms. Default 30,000.
    pub cap: Millis,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(500, 30_000)
    }
}

impl Backoff {
    /// A backoff from `base` to `cap` milliseconds.
    pub fn new(base: Millis, cap: Millis) -> Self {
        Self {
            base: base.max(1),
            cap: cap.max(base.max(1)),
            attempt: 0,
        }
    }

    /// The next delay; `random` is uniform in `[0, 1)`.
    pub fn next_delay(&mut self, random: f64) -> Millis {
        let exp = self.base.saturating_mul(1u64 << self.attempt.min(32));
        let d = exp.min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let r = random.clamp(0.0, 1.0);
        let half = d / 2;
        // truncation is fine: jitter is milliseconds
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let jitter = (r * (d - half) as f64) as Millis;
        half + jitter
    }

    /// Failures since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A token's refresh schedule (times in ms since the epoch, from the token response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPlan {
    /// When the issuer asks the client to refresh.
    pub refresh_at: Millis,
    /// When the token stops working.
    pub expires_at: Millis,
}

/// How long before expiry a failing refresh makes its last attempt.
const LAST_CHANCE: Millis = 2_000;

impl RefreshPlan {
    /// The plan for a token response.
    pub fn new(refresh_at: Millis, expires_at: Millis) -> Self {
        Self {
            refresh_at: refresh_at.min(expires_at),
            expires_at,
        }
    }

    /// When to start the refresh (now if already due).
    pub fn due(&self, now: Millis) -> Millis {
        self.refresh_at.max(now)
    }

    /// Whether the token has expired.
    pub fn expired(&self, now: Millis) -> bool {
        now >= self.expires_at
    }

    /// When to retry after a failed fetch at `now` with a backoff `delay`: no later than
    /// shortly before expiry, so a transient failure does not let the token lapse. After
    /// expiry, retries keep the backoff (the connection is gone; reconnecting needs a token).
    pub fn retry_at(&self, now: Millis, delay: Millis) -> Millis {
        let wanted = now.saturating_add(delay);
        if self.expired(now) {
            return wanted;
        }
        let last_chance = self.expires_at.saturating_sub(LAST_CHANCE).max(now);
        wanted.min(last_chance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn backoff_grows_caps_and_jitters_within_half() {
        let mut b = Backoff::new(500, 8_000);
        let lows: Vec<Millis> = (0..6).map(|_| b.next_delay(0.0)).collect();
        assert_eq!(lows, [250, 500, 1000, 2000, 4000, 4000]);
        b.reset();
        let highs: Vec<Millis> = (0..6).map(|_| b.next_delay(0.999_999)).collect();
        assert_eq!(highs, [499, 999, 1999, 3999, 7999, 7999]);
        assert_eq!(b.attempts(), 6);
        // many attempts never overflow
        for _ in 0..100 {
            assert!(b.next_delay(0.5) <= 8_000);
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn refresh_retries_never_let_the_token_lapse() {
        let plan = RefreshPlan::new(10_000, 20_000);
        assert_eq!(plan.due(0), 10_000);
        assert_eq!(plan.due(12_000), 12_000);
        assert_eq!(plan.retry_at(11_000, 1_000), 12_000);
        // a long backoff is cut to the last chance before expiry
        assert_eq!(plan.retry_at(15_000, 30_000), 18_000);
        assert_eq!(plan.retry_at(19_500, 30_000), 19_500);
        // expired: plain backoff
        assert!(plan.expired(20_000));
        assert_eq!(plan.retry_at(21_000, 4_000), 25_000);
        // refresh_at after expiry is clamped
        assert_eq!(RefreshPlan::new(30, 20).refresh_at, 20);
    }
}
