//! A token bucket for the connect-rate limit of each listener: over the limit, the listener
//! stops accepting for a moment (the kernel's backlog holds the newcomers) instead of letting a
//! connection storm starve established clients.

use std::time::{Duration, Instant};

/// A token bucket with `rate` tokens per second and room for `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate_per_sec.max(1)),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes a token at `now`, or says how long to wait for one.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3, t0);
        assert!(b.take(t0).is_ok() && b.take(t0).is_ok() && b.take(t0).is_ok());
        let wait = b.take(t0).expect_err("the burst is used up");
        assert!(
            wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(
            b.take(t0 + Duration::from_millis(100)).is_ok(),
            "one token per 100 ms at 10/s"
        );
        assert!(b.take(t0 + Duration::from_millis(100)).is_err());
        // idle time refills up to the burst only
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(b.take(later).is_ok());
        }
        assert!(b.take(later).is_err());
    }
}
