//! Breaker policy: plain data, converted from `flexgate-config` by the proxy.

use std::time::Duration;

/// Upper bound applied to `open_for`/`max_open_for` (one day): longer is surely a
/// config mistake, and it keeps instant arithmetic far from overflow.
pub const MAX_OPEN_FOR: Duration = Duration::from_secs(24 * 3600);

/// When and for how long a target's circuit opens.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    /// Trip after this many failures in a row (`None`: disabled).
    pub consecutive_failures: Option<u32>,
    /// Trip when the failure ratio over a sliding window crosses a threshold (`None`: disabled).
    pub failure_rate: Option<FailureRatePolicy>,
    /// How long the circuit stays open after the first trip.
    pub open_for: Duration,
    /// Cap for `open_for`, which doubles on each re-trip from half-open.
    pub max_open_for: Duration,
    /// Probe requests admitted in half-open; all must succeed to close.
    pub half_open_probes: u32,
}

/// Ratio-based trip condition.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureRatePolicy {
    /// Trip when `failures / requests >= threshold` (in `(0, 1]`).
    pub threshold: f64,
    /// Length of the sliding window (kept as a ring of 10 buckets).
    pub window: Duration,
    /// No ratio trip below this many requests in the window, so that one early
    /// failure out of two requests does not open the circuit.
    pub min_requests: u32,
}

impl Default for BreakerPolicy {
    /// 5 consecutive failures, open 5 s doubling up to 60 s, one probe: close to
    /// Envoy's outlier-detection defaults (5 consecutive 5xx) with a shorter first
    /// ejection so a flapping target is retried quickly.
    fn default() -> Self {
        Self {
            consecutive_failures: Some(5),
            failure_rate: None,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(60),
            half_open_probes: 1,
        }
    }
}

/// A policy value that cannot work as intended.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// `consecutive_failures: Some(0)` would trip on nothing.
    #[error("consecutive_failures must be at least 1")]
    ZeroConsecutive,
    /// Threshold outside `(0, 1]` (or NaN).
    #[error("failure_rate.threshold must be in (0, 1], got {0}")]
    Threshold(f64),
    /// The window must be long enough to hold 10 buckets of at least 1 ms.
    #[error("failure_rate.window must be at least 10ms")]
    Window,
    /// `open_for` of zero would make the breaker useless.
    #[error("open_for must be positive")]
    ZeroOpenFor,
    /// `max_open_for` below `open_for`.
    #[error("max_open_for ({max:?}) must be >= open_for ({open:?})")]
    MaxOpenFor {
        /// Configured `open_for`.
        open: Duration,
        /// Configured `max_open_for`.
        max: Duration,
    },
    /// At least one probe is needed to leave half-open.
    #[error("half_open_probes must be at least 1")]
    ZeroProbes,
}

impl BreakerPolicy {
    /// Reject values that cannot work; the proxy calls this when loading config.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.consecutive_failures == Some(0) {
            return Err(PolicyError::ZeroConsecutive);
        }
        if let Some(fr) = &self.failure_rate {
            if !(fr.threshold > 0.0 && fr.threshold <= 1.0) {
                return Err(PolicyError::Threshold(fr.threshold));
            }
            if fr.window < Duration::from_millis(10) {
                return Err(PolicyError::Window);
            }
        }
        if self.open_for.is_zero() {
            return Err(PolicyError::ZeroOpenFor);
        }
        if self.max_open_for < self.open_for {
            return Err(PolicyError::MaxOpenFor {
                open: self.open_for,
                max: self.max_open_for,
            });
        }
        if self.half_open_probes == 0 {
            return Err(PolicyError::ZeroProbes);
        }
        Ok(())
    }

    /// Clamp invalid values into range so the machine never misbehaves even if the
    /// caller skipped [`validate`](Self::validate); durations are capped at
    /// [`MAX_OPEN_FOR`].
    pub(crate) fn normalized(mut self) -> Self {
        if self.consecutive_failures == Some(0) {
            self.consecutive_failures = Some(1);
        }
        if let Some(fr) = &mut self.failure_rate {
            if fr.threshold.is_nan() || fr.threshold <= 0.0 {
                fr.threshold = f64::MIN_POSITIVE;
            }
            fr.threshold = fr.threshold.min(1.0);
            fr.window = fr.window.max(Duration::from_millis(10));
        }
        if self.open_for.is_zero() {
            self.open_for = Duration::from_millis(1);
        }
        // Keep `Instant + open_for` far from overflow.
        self.open_for = self.open_for.min(MAX_OPEN_FOR);
        self.max_open_for = self.max_open_for.clamp(self.open_for, MAX_OPEN_FOR);
        self.half_open_probes = self.half_open_probes.max(1);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(BreakerPolicy::default().validate(), Ok(()));
    }

    #[test]
    fn validate_rejects_bad_values() {
        let base = BreakerPolicy::default();
        let p = BreakerPolicy {
            half_open_probes: 0,
            ..base.clone()
        };
        assert_eq!(p.validate(), Err(PolicyError::ZeroProbes));
        let p = BreakerPolicy {
            max_open_for: Duration::from_secs(1),
            ..base.clone()
        };
        assert!(matches!(p.validate(), Err(PolicyError::MaxOpenFor { .. })));
        let p = BreakerPolicy {
            failure_rate: Some(FailureRatePolicy {
                threshold: 1.5,
                window: Duration::from_secs(10),
                min_requests: 1,
            }),
            ..base.clone()
        };
        assert!(matches!(p.validate(), Err(PolicyError::Threshold(_))));
        let p = BreakerPolicy {
            consecutive_failures: Some(0),
            ..base
        };
        assert_eq!(p.validate(), Err(PolicyError::ZeroConsecutive));
    }

    #[test]
    fn normalized_clamps() {
        let p = BreakerPolicy {
            consecutive_failures: Some(0),
            failure_rate: Some(FailureRatePolicy {
                threshold: f64::NAN,
                window: Duration::ZERO,
                min_requests: 0,
            }),
            open_for: Duration::ZERO,
            max_open_for: Duration::ZERO,
            half_open_probes: 0,
        }
        .normalized();
        assert_eq!(p.consecutive_failures, Some(1));
        assert_eq!(p.half_open_probes, 1);
        assert!(p.max_open_for >= p.open_for && !p.open_for.is_zero());
        let fr = p.failure_rate.as_ref().map(|f| (f.threshold, f.window));
        assert!(matches!(fr, Some((t, w)) if t > 0.0 && w >= Duration::from_millis(10)));
    }
}
