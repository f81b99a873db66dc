//! Generic Cell Rate Algorithm: the rate limiter's arithmetic, shared by the local
//! store (in Rust) and the Redis store (mirrored in Lua).
//!
//! State per key is one number, the TAT (theoretical arrival time). With emission
//! interval `T = period / rate` and tolerance `τ = T × burst`, a request at `now` is
//! admitted iff `max(TAT, now) - now <= τ`, and then `TAT = max(TAT, now) + T`.
//!
//! # What `burst` means
//!
//! A fresh key admits `burst + 1` requests at once, then one per `T`. This matches
//! nginx `limit_req ... burst=B nodelay` (the excess counter may reach `B` on top of
//! the request being served, so `B + 1` pass at once) and redis-cell's
//! `max_burst`. Envoy's local rate limit and Kong express capacity differently:
//! Envoy's token bucket `max_tokens` is the *total* instant capacity (so Envoy
//! `max_tokens = B + 1` equals our `burst = B`), and Kong's `rate-limiting` plugin
//! counts fixed windows with no burst notion at all (a Kong limit of N/second lets up
//! to 2N through across a window boundary). `burst = 0` therefore means strict
//! pacing: one request per `T`, none saved up.

use std::time::Duration;

/// Result of one rate limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Largest number of requests a fully rested key can make at once (`burst + 1`).
    pub limit: u64,
    /// Requests that would still be admitted right now after this one.
    pub remaining: u64,
    /// Time until the key is fully rested (its state could be forgotten).
    pub reset_after: Duration,
    /// For a limited request: when the next request would be admitted.
    pub retry_after: Option<Duration>,
    /// True when the decision did not come from the configured shared store
    /// (Redis unreachable, slow or its breaker open): see `OnStoreError`.
    pub degraded: bool,
}

/// A rate policy that cannot be expressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GcraError {
    /// Zero requests per period would reject everything; use a deny rule instead.
    #[error("rate must be at least 1 request per period")]
    ZeroRate,
    /// The emission interval `period / rate` rounds to zero nanoseconds.
    #[error("rate too high: period / rate is below 1ns")]
    TooFast,
}

/// GCRA parameters for one policy; `Copy` and tiny so it can live next to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    interval_ns: u64,
    tolerance_ns: u64,
    limit: u64,
}

impl Gcra {
    /// `rate` requests per `period`, with `burst` extra requests allowed at once.
    pub fn new(rate: u64, period: Duration, burst: u32) -> Result<Self, GcraError> {
        if rate == 0 {
            return Err(GcraError::ZeroRate);
        }
        let interval = period.as_nanos() / u128::from(rate);
        let interval_ns = u64::try_from(interval).unwrap_or(u64::MAX);
        if interval_ns == 0 {
            return Err(GcraError::TooFast);
        }
        Ok(Self {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(burst)),
            limit: u64::from(burst) + 1,
        })
    }

    /// Emission interval `T` in nanoseconds.
    pub const fn interval_ns(&self) -> u64 {
        self.interval_ns
    }

    /// Tolerance `τ = T × burst` in nanoseconds.
    pub const fn tolerance_ns(&self) -> u64 {
        self.tolerance_ns
    }

    /// `burst + 1`.
    pub const fn limit(&self) -> u64 {
        self.limit
    }

    /// Decide for a request at `now_ns` on a key whose stored TAT is `tat_ns`
    /// (`0` or any value `<= now_ns` for a rested or unknown key).
    ///
    /// Returns the decision and the TAT to store (unchanged when limited). Both
    /// times are nanoseconds since the same arbitrary epoch.
    #[inline]
    pub fn decide(&self, tat_ns: u64, now_ns: u64) -> (Decision, u64) {
        let tat = tat_ns.max(now_ns);
        let ahead = tat - now_ns;
        if ahead > self.tolerance_ns {
            (self.decision(false, ahead), tat_ns)
        } else {
            let new_tat = tat.saturating_add(self.interval_ns);
            (self.decision(true, new_tat - now_ns), new_tat)
        }
    }

    /// Build the decision from the verdict and `ahead = TAT_after - now` (the key's
    /// "debt"). Shared with the Redis store, whose script returns exactly these two.
    #[inline]
    pub fn decision(&self, allowed: bool, ahead_ns: u64) -> Decision {
        let remaining = if ahead_ns <= self.tolerance_ns {
            (self.tolerance_ns - ahead_ns) / self.interval_ns + 1
        } else {
            0
        };
        Decision {
            allowed,
            limit: self.limit,
            remaining: remaining.min(self.limit),
            reset_after: Duration::from_nanos(ahead_ns),
            retry_after: (!allowed)
                .then(|| Duration::from_nanos(ahead_ns.saturating_sub(self.tolerance_ns))),
            degraded: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn fresh_key_admits_burst_plus_one() {
        let g = Gcra::new(10, Duration::from_secs(1), 4).unwrap_or_else(|e| panic!("{e}"));
        let mut tat = 0;
        let now = 1_000 * MS;
        let mut admitted = 0;
        for i in 0..10 {
            let (d, t) = g.decide(tat, now);
            tat = t;
            if d.allowed {
                admitted += 1;
                assert_eq!(d.remaining, 4 - i, "remaining after request {i}");
            }
        }
        assert_eq!(admitted, 5);
        assert_eq!(g.limit(), 5);
    }

    #[test]
    fn retry_after_is_exact() {
        // 10/s, burst 0: T = 100 ms.
        let g = Gcra::new(10, Duration::from_secs(1), 0).unwrap_or_else(|e| panic!("{e}"));
        let (d, tat) = g.decide(0, 0);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.reset_after, Duration::from_millis(100));
        let (d, tat2) = g.decide(tat, 30 * MS);
        assert!(!d.allowed);
        assert_eq!(tat2, tat, "limited requests do not consume");
        assert_eq!(d.retry_after, Some(Duration::from_millis(70)));
        // Just before retry_after: still limited; at it: admitted.
        assert!(!g.decide(tat, 100 * MS - 1).0.allowed);
        let (d, _) = g.decide(tat, 100 * MS);
        assert!(d.allowed);
        assert_eq!(d.retry_after, None);
    }

    #[test]
    fn retry_after_with_burst() {
        // 1 per 10 ms, burst 2 => tolerance 20 ms.
        let g = Gcra::new(100, Duration::from_secs(1), 2).unwrap_or_else(|e| panic!("{e}"));
        let mut tat = 0;
        for _ in 0..3 {
            let (d, t) = g.decide(tat, 0);
            assert!(d.allowed);
            tat = t;
        }
        let (d, _) = g.decide(tat, 0);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Duration::from_millis(10)));
        assert_eq!(d.reset_after, Duration::from_millis(30));
        let (d, _) = g.decide(tat, 10 * MS);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
    }

    #[test]
    fn paced_requests_admit_rate_times_duration_plus_burst() {
        // 200/s, burst 20, a request every 1 ms for 10 s (5x the rate).
        let g = Gcra::new(200, Duration::from_secs(1), 20).unwrap_or_else(|e| panic!("{e}"));
        let mut tat = 0;
        let mut admitted = 0u64;
        for ms in 0..10_000u64 {
            let (d, t) = g.decide(tat, ms * MS);
            tat = t;
            admitted += u64::from(d.allowed);
        }
        let expected = 200 * 10 + 20;
        assert!(admitted.abs_diff(expected) <= expected / 100, "{admitted}");
    }

    #[test]
    fn rested_key_regains_full_burst() {
        let g = Gcra::new(1, Duration::from_secs(1), 3).unwrap_or_else(|e| panic!("{e}"));
        let mut tat = 0;
        for _ in 0..4 {
            tat = g.decide(tat, 0).1;
        }
        assert!(!g.decide(tat, 0).0.allowed);
        let (d, _) = g.decide(tat, 4_000 * MS);
        assert!(d.allowed);
        assert_eq!(d.remaining, 3);
    }

    #[test]
    fn invalid_rates() {
        assert_eq!(
            Gcra::new(0, Duration::from_secs(1), 0),
            Err(GcraError::ZeroRate)
        );
        assert_eq!(
            Gcra::new(2_000_000_000, Duration::from_secs(1), 0),
            Err(GcraError::TooFast)
        );
    }
}
