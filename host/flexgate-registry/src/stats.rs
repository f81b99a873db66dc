//! Live per-version statistics over a sliding window and the automatic-rollback decision.
//!
//! [`WindowStats`] splits the window into [`SLOTS`] time slots (the window slides in steps of
//! window/10), each with counters and a log-linear latency histogram (16 sub-buckets per power of
//! two: at most 6.25% relative error, values under 16 µs exact). Memory is fixed per recorder
//! (about 21 KiB) whatever the traffic. Time is passed in, so tests need no clock.

use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::model::Guards;

/// Time slots per window.
pub const SLOTS: usize = 10;
const SUB: u64 = 16;
const SUB_BITS: u32 = 4;
const MAX_EXP: u32 = 35;
const BUCKETS: usize = ((MAX_EXP - SUB_BITS + 2) as usize) * SUB as usize;

/// How one request through a plugin version ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served normally.
    Ok,
    /// The plugin (or the request through it) failed without a trap.
    Error,
    /// The plugin trapped (also counted as an error).
    Trap,
}

/// A summary of one version over the window.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StatsSnapshot {
    /// Requests in the window.
    pub requests: u64,
    /// Failed requests, traps included.
    pub errors: u64,
    /// Requests where the plugin trapped.
    pub traps: u64,
    /// errors / requests (0 without requests).
    pub error_rate: f64,
    /// traps / requests (0 without requests).
    pub trap_rate: f64,
    /// Median latency in milliseconds (0 without requests).
    pub p50_ms: f64,
    /// 99th percentile latency in milliseconds (0 without requests).
    pub p99_ms: f64,
}

#[derive(Clone)]
struct Slot {
    /// Index of the time slot since `origin` this slot holds; `u64::MAX` when unused.
    epoch: u64,
    requests: u64,
    errors: u64,
    traps: u64,
    min_us: u64,
    max_us: u64,
    hist: Box<[u32]>,
}

impl Slot {
    fn empty() -> Slot {
        Slot {
            epoch: u64::MAX,
            requests: 0,
            errors: 0,
            traps: 0,
            min_us: u64::MAX,
            max_us: 0,
            hist: vec![0; BUCKETS].into_boxed_slice(),
        }
    }

    fn reset(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.requests = 0;
        self.errors = 0;
        self.traps = 0;
        self.min_us = u64::MAX;
        self.max_us = 0;
        self.hist.fill(0);
    }
}

/// The sliding-window recorder for one plugin version (wrap it in a mutex to share it).
pub struct WindowStats {
    origin: Instant,
    slot_len: Duration,
    slots: Vec<Slot>,
}

impl fmt::Debug for WindowStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WindowStats")
            .field("slot_len", &self.slot_len)
            .finish_non_exhaustive()
    }
}

impl WindowStats {
    /// A recorder for a window of `window` (at least 10 ms), starting at `now`.
    pub fn new(window: Duration, now: Instant) -> WindowStats {
        let slot_len = (window / SLOTS as u32).max(Duration::from_millis(1));
        WindowStats {
            origin: now,
            slot_len,
            slots: vec![Slot::empty(); SLOTS],
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin);
        u64::try_from(since.as_nanos() / self.slot_len.as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// Records one request that ended at `now`.
    pub fn record(&mut self, now: Instant, latency: Duration, outcome: Outcome) {
        let epoch = self.epoch(now);
        let slot = &mut self.slots[(epoch % SLOTS as u64) as usize];
        if slot.epoch != epoch {
            slot.reset(epoch);
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        slot.requests += 1;
        match outcome {
            Outcome::Ok => {}
            Outcome::Error => slot.errors += 1,
            Outcome::Trap => {
                slot.errors += 1;
                slot.traps += 1;
            }
        }
        slot.min_us = slot.min_us.min(us);
        slot.max_us = slot.max_us.max(us);
        let b = bucket_of(us);
        slot.hist[b] = slot.hist[b].saturating_add(1);
    }

    /// The summary of the last [`SLOTS`] slots as of `now`.
    pub fn snapshot(&self, now: Instant) -> StatsSnapshot {
        let current = self.epoch(now);
        let live = |s: &&Slot| {
            s.epoch != u64::MAX && s.epoch <= current && current - s.epoch < SLOTS as u64
        };
        let mut snap = StatsSnapshot::default();
        let mut hist = vec![0u64; BUCKETS];
        let (mut min_us, mut max_us) = (u64::MAX, 0);
        for slot in self.slots.iter().filter(live) {
            snap.requests += slot.requests;
            snap.errors += slot.errors;
            snap.traps += slot.traps;
            min_us = min_us.min(slot.min_us);
            max_us = max_us.max(slot.max_us);
            for (total, &c) in hist.iter_mut().zip(slot.hist.iter()) {
                *total += u64::from(c);
            }
        }
        if snap.requests > 0 {
            let n = snap.requests as f64;
            snap.error_rate = snap.errors as f64 / n;
            snap.trap_rate = snap.traps as f64 / n;
            snap.p50_ms = quantile(&hist, snap.requests, 0.50, min_us, max_us) as f64 / 1000.0;
            snap.p99_ms = quantile(&hist, snap.requests, 0.99, min_us, max_us) as f64 / 1000.0;
        }
        snap
    }
}

/// Histogram bucket of a value in microseconds.
fn bucket_of(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let exp = (63 - us.leading_zeros()).min(MAX_EXP);
    if exp == MAX_EXP && us >> (MAX_EXP + 1) > 0 {
        return BUCKETS - 1;
    }
    let mantissa = (us >> (exp - SUB_BITS)) & (SUB - 1);
    ((exp - SUB_BITS + 1) as usize) * SUB as usize + mantissa as usize
}

/// The largest value that falls in bucket `b`.
fn bucket_upper(b: usize) -> u64 {
    let b = b as u64;
    if b < SUB {
        return b;
    }
    let exp = (b / SUB) as u32 + SUB_BITS - 1;
    let mantissa = b % SUB;
    ((SUB + mantissa + 1) << (exp - SUB_BITS)) - 1
}

/// The value at quantile `q`: the upper bound of the bucket holding the ceil(q·n)-th value, clamped
/// to the observed min/max (so a single sample reports itself exactly).
fn quantile(hist: &[u64], n: u64, q: f64, min_us: u64, max_us: u64) -> u64 {
    let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
    let mut seen = 0;
    for (b, &c) in hist.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return bucket_upper(b).clamp(min_us, max_us);
        }
    }
    max_us
}

/// Why the guards rolled a canary back. `label()` is the metric label, `Display` the audit text.
#[derive(Debug, Clone, PartialEq)]
pub enum RollbackReason {
    /// Canary trap rate above `max_trap_rate`.
    TrapRate {
        /// Observed canary trap rate.
        observed: f64,
        /// The guard.
        limit: f64,
    },
    /// Canary error rate above `max_error_rate`.
    ErrorRate {
        /// Observed canary error rate.
        observed: f64,
        /// The guard.
        limit: f64,
    },
    /// Canary p99 above stable p99 by more than `max_p99_increase_ms`.
    P99Increase {
        /// Canary p99, ms.
        canary_ms: f64,
        /// Stable p99, ms.
        stable_ms: f64,
        /// The guard, ms.
        limit_ms: f64,
    },
}

impl RollbackReason {
    /// `trap_rate`, `error_rate` or `p99_increase`, for `flexgate_plugin_rollbacks_total{reason}`.
    pub fn label(&self) -> &'static str {
        match self {
            RollbackReason::TrapRate { .. } => "trap_rate",
            RollbackReason::ErrorRate { .. } => "error_rate",
            RollbackReason::P99Increase { .. } => "p99_increase",
        }
    }
}

impl fmt::Display for RollbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RollbackReason::TrapRate { observed, limit } => write!(
                f,
                "trap_rate: canary trap rate {:.2}% is above the guard {:.2}%",
                observed * 100.0,
                limit * 100.0
            ),
            RollbackReason::ErrorRate { observed, limit } => write!(
                f,
                "error_rate: canary error rate {:.2}% is above the guard {:.2}%",
                observed * 100.0,
                limit * 100.0
            ),
            RollbackReason::P99Increase {
                canary_ms,
                stable_ms,
                limit_ms,
            } => write!(
                f,
                "p99_increase: canary p99 {canary_ms:.1} ms exceeds stable p99 {stable_ms:.1} ms by more than {limit_ms:.1} ms"
            ),
        }
    }
}

/// Decides whether a canary breaches its guards. Nothing is judged until the canary has at least
/// `min_requests` requests in the window. Checked in order trap rate, error rate, p99 increase (the
/// most specific reason first); a rate breaches when strictly above its limit. The p99 comparison
/// also needs stable traffic in the window (without it there is nothing to compare with).
pub fn evaluate_guards(
    guards: &Guards,
    stable: &StatsSnapshot,
    canary: &StatsSnapshot,
) -> Option<RollbackReason> {
    if canary.requests == 0 || canary.requests < guards.min_requests {
        return None;
    }
    if let Some(limit) = guards.max_trap_rate
        && canary.trap_rate > limit
    {
        return Some(RollbackReason::TrapRate {
            observed: canary.trap_rate,
            limit,
        });
    }
    if let Some(limit) = guards.max_error_rate
        && canary.error_rate > limit
    {
        return Some(RollbackReason::ErrorRate {
            observed: canary.error_rate,
            limit,
        });
    }
    if let Some(limit_ms) = guards.max_p99_increase_ms
        && stable.requests > 0
        && canary.p99_ms - stable.p99_ms > limit_ms
    {
        return Some(RollbackReason::P99Increase {
            canary_ms: canary.p99_ms,
            stable_ms: stable.p99_ms,
            limit_ms,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn buckets_are_monotonic_and_bounded() {
        let mut last = 0;
        for v in (0..100_000u64).chain([u64::MAX / 2, u64::MAX]) {
            let b = bucket_of(v);
            assert!(b < BUCKETS);
            assert!(b >= last || v >= u64::MAX / 2);
            last = b;
            if v < 1 << 30 {
                assert!(bucket_upper(b) >= v, "v={v} b={b}");
                // relative error at most 1/16
                assert!(
                    (bucket_upper(b) - v) as f64 <= v as f64 / 16.0 + 1.0,
                    "v={v}"
                );
            }
        }
    }

    #[test]
    fn percentiles_and_rates() {
        let t0 = Instant::now();
        let mut w = WindowStats::new(Duration::from_secs(60), t0);
        // 100 requests: latencies 1..=100 ms; 10 errors of which 3 traps.
        for i in 1..=100u64 {
            let outcome = match i {
                1..=3 => Outcome::Trap,
                4..=10 => Outcome::Error,
                _ => Outcome::Ok,
            };
            w.record(t0 + ms(i), ms(i), outcome);
        }
        let s = w.snapshot(t0 + ms(200));
        assert_eq!((s.requests, s.errors, s.traps), (100, 10, 3));
        assert!((s.error_rate - 0.10).abs() < 1e-12);
        assert!((s.trap_rate - 0.03).abs() < 1e-12);
        assert!(
            (50.0..=50.0 * 1.0625).contains(&s.p50_ms),
            "p50 {}",
            s.p50_ms
        );
        assert!((99.0..=100.0).contains(&s.p99_ms), "p99 {}", s.p99_ms);
    }

    #[test]
    fn single_sample_is_exact() {
        let t0 = Instant::now();
        let mut w = WindowStats::new(Duration::from_secs(10), t0);
        w.record(t0, Duration::from_micros(12_345), Outcome::Ok);
        let s = w.snapshot(t0);
        assert_eq!(s.p50_ms, 12.345);
        assert_eq!(s.p99_ms, 12.345);
    }

    #[test]
    fn old_slots_slide_out() {
        let t0 = Instant::now();
        let mut w = WindowStats::new(Duration::from_secs(10), t0);
        w.record(t0, ms(1), Outcome::Error);
        w.record(t0 + Duration::from_secs(5), ms(1), Outcome::Ok);
        assert_eq!(w.snapshot(t0 + Duration::from_millis(9_999)).requests, 2);
        // The first slot (0..1s) leaves the window once 10 slots have passed.
        let s = w.snapshot(t0 + Duration::from_secs(10));
        assert_eq!((s.requests, s.errors), (1, 0));
        assert_eq!(w.snapshot(t0 + Duration::from_secs(15)).requests, 0);
        // Reusing a slot resets it.
        w.record(t0 + Duration::from_secs(20), ms(2), Outcome::Ok);
        assert_eq!(w.snapshot(t0 + Duration::from_secs(20)).requests, 1);
    }

    fn snap(requests: u64, errors: u64, traps: u64, p99_ms: f64) -> StatsSnapshot {
        StatsSnapshot {
            requests,
            errors,
            traps,
            error_rate: errors as f64 / requests.max(1) as f64,
            trap_rate: traps as f64 / requests.max(1) as f64,
            p50_ms: p99_ms / 2.0,
            p99_ms,
        }
    }

    #[test]
    fn guards() {
        let g = Guards {
            max_error_rate: Some(0.05),
            max_trap_rate: Some(0.01),
            max_p99_increase_ms: Some(20.0),
            min_requests: 50,
            window: Duration::from_secs(60),
        };
        let stable = snap(1000, 0, 0, 10.0);
        // below min_requests: never judged
        assert_eq!(evaluate_guards(&g, &stable, &snap(49, 49, 49, 999.0)), None);
        // exactly at the limit: not a breach
        assert_eq!(evaluate_guards(&g, &stable, &snap(100, 5, 1, 30.0)), None);
        let r = evaluate_guards(&g, &stable, &snap(100, 6, 0, 10.0));
        assert_eq!(r.as_ref().map(RollbackReason::label), Some("error_rate"));
        let r = evaluate_guards(&g, &stable, &snap(100, 30, 2, 10.0));
        assert_eq!(r.as_ref().map(RollbackReason::label), Some("trap_rate"));
        let r = evaluate_guards(&g, &stable, &snap(100, 0, 0, 30.5));
        assert_eq!(r.as_ref().map(RollbackReason::label), Some("p99_increase"));
        assert!(
            r.map(|r| r.to_string())
                .unwrap_or_default()
                .contains("30.5 ms")
        );
        // no stable traffic: latency is not compared
        assert_eq!(
            evaluate_guards(&g, &snap(0, 0, 0, 0.0), &snap(100, 0, 0, 500.0)),
            None
        );
        // no guards set: nothing breaches
        let none = Guards::default();
        assert_eq!(
            evaluate_guards(&none, &stable, &snap(1000, 1000, 1000, 1e6)),
            None
        );
    }

    #[test]
    fn flaky_canary_is_caught() {
        // A canary failing 30% of requests against a 5% guard, 20% of traffic, min 50 requests.
        let t0 = Instant::now();
        let g = Guards {
            max_error_rate: Some(0.05),
            min_requests: 50,
            ..Guards::default()
        };
        let (mut stable, mut canary) = (
            WindowStats::new(g.window, t0),
            WindowStats::new(g.window, t0),
        );
        let mut rolled_back_at = None;
        for i in 0..1000u64 {
            let now = t0 + ms(i);
            if i % 5 == 0 {
                let outcome = if (i / 5) % 10 < 3 {
                    Outcome::Error
                } else {
                    Outcome::Ok
                };
                canary.record(now, ms(2), outcome);
            } else {
                stable.record(now, ms(2), Outcome::Ok);
            }
            if evaluate_guards(&g, &stable.snapshot(now), &canary.snapshot(now)).is_some() {
                rolled_back_at = Some(i);
                break;
            }
        }
        // The 50th canary request is request 245.
        assert_eq!(rolled_back_at, Some(245));
    }
}
