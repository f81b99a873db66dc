//! Pure breaker state machine: no locks, no runtime, time passed in by the caller.

use super::{
    Admission, BreakerPolicy, BreakerSnapshot, BreakerState, Outcome, ProbeTicket, Transition,
};
use std::time::Duration;
use tokio::time::Instant;

/// Number of buckets in the failure-rate ring: the window slides in steps of 1/10th.
const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        /// When this probe round started (a round whose probes never settle is
        /// abandoned after the current `open_for`, so a lost probe cannot wedge us).
        since: Instant,
        issued: u32,
        succeeded: u32,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Absolute bucket number (`elapsed / width`); stale when older than `BUCKETS`.
    index: u64,
    requests: u32,
    failures: u32,
}

/// Ring of time buckets counting requests and failures over a sliding window.
#[derive(Debug, Clone)]
struct Window {
    epoch: Instant,
    width_ns: u64,
    buckets: [Bucket; BUCKETS],
}

impl Window {
    fn new(window: Duration, epoch: Instant) -> Self {
        let width_ns = (window.as_nanos() / BUCKETS as u128).clamp(1, u64::MAX as u128) as u64;
        Self {
            epoch,
            width_ns,
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    fn index(&self, now: Instant) -> u64 {
        let ns = now.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(ns / u128::from(self.width_ns)).unwrap_or(u64::MAX)
    }

    fn record(&mut self, now: Instant, failure: bool) {
        let idx = self.index(now);
        let b = &mut self.buckets[(idx % BUCKETS as u64) as usize];
        if b.index != idx {
            *b = Bucket {
                index: idx,
                requests: 0,
                failures: 0,
            };
        }
        b.requests = b.requests.saturating_add(1);
        if failure {
            b.failures = b.failures.saturating_add(1);
        }
    }

    fn totals(&self, now: Instant) -> (u64, u64) {
        let idx = self.index(now);
        self.buckets
            .iter()
            .filter(|b| b.index <= idx && idx - b.index < BUCKETS as u64)
            .fold((0, 0), |(r, f), b| {
                (r + u64::from(b.requests), f + u64::from(b.failures))
            })
    }

    fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }
}

/// The breaker's state machine for one target.
///
/// Every method takes `now` so tests drive time explicitly (or with paused tokio
/// time); [`super::CircuitBreaker`] wraps it for concurrent use.
#[derive(Debug, Clone)]
pub struct BreakerMachine {
    policy: BreakerPolicy,
    phase: Phase,
    consecutive_failures: u32,
    /// Present iff the policy has a `failure_rate`.
    window: Option<Window>,
    /// Open duration in effect: `policy.open_for`, doubled per re-trip from half-open.
    open_for: Duration,
    /// Half-open round counter, embedded in [`ProbeTicket`]s.
    round: u64,
}

impl BreakerMachine {
    /// A closed breaker. Invalid policy values are clamped (see [`BreakerPolicy::validate`]).
    pub fn new(policy: BreakerPolicy, now: Instant) -> Self {
        let policy = policy.normalized();
        let window = policy
            .failure_rate
            .as_ref()
            .map(|fr| Window::new(fr.window, now));
        Self {
            open_for: policy.open_for,
            policy,
            phase: Phase::Closed,
            consecutive_failures: 0,
            window,
            round: 0,
        }
    }

    /// Current state, as last updated (see [`poll`](Self::poll) for the lazy open → half-open step).
    pub fn state(&self) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// The policy in force (after clamping).
    pub fn policy(&self) -> &BreakerPolicy {
        &self.policy
    }

    /// Failures in a row since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Whether a success in the closed state can change anything: false when there
    /// is no window to count in and no failure streak to reset. Lets the gate skip
    /// its lock on the common path.
    pub fn success_is_noop(&self) -> bool {
        self.phase == Phase::Closed && self.window.is_none() && self.consecutive_failures == 0
    }

    /// Apply time-driven transitions (open → half-open once `open_for` elapsed).
    pub fn poll(&mut self, now: Instant) -> Option<Transition> {
        match self.phase {
            Phase::Open { until } if now >= until => {
                self.round += 1;
                self.phase = Phase::HalfOpen {
                    since: now,
                    issued: 0,
                    succeeded: 0,
                };
                Some(Transition {
                    from: BreakerState::Open,
                    to: BreakerState::HalfOpen,
                })
            }
            _ => None,
        }
    }

    /// Decide whether a request may go to the target.
    ///
    /// Returns the admission and the transition it caused, if any (open → half-open).
    pub fn acquire(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        let transition = self.poll(now);
        let admission = match &mut self.phase {
            Phase::Closed => Admission::Allowed,
            Phase::Open { until } => Admission::Rejected {
                retry_after: until.saturating_duration_since(now),
            },
            Phase::HalfOpen {
                since,
                issued,
                succeeded,
            } => {
                let probes = self.policy.half_open_probes;
                if *issued >= probes && now.saturating_duration_since(*since) >= self.open_for {
                    // Probes of this round never all settled (cancelled requests that
                    // were never recorded): abandon the round rather than wedge.
                    self.round += 1;
                    *since = now;
                    *issued = 0;
                    *succeeded = 0;
                }
                if *issued < probes {
                    *issued += 1;
                    Admission::Probe(ProbeTicket { round: self.round })
                } else {
                    Admission::Rejected {
                        retry_after: (*since + self.open_for).saturating_duration_since(now),
                    }
                }
            }
        };
        (admission, transition)
    }

    /// Feed back the outcome of an admitted request.
    ///
    /// Outcomes that no longer apply are ignored: an `Allowed` result arriving
    /// while open or half-open, or a probe from an earlier half-open round.
    pub fn record(
        &mut self,
        admission: &Admission,
        outcome: Outcome,
        now: Instant,
    ) -> Option<Transition> {
        match (admission, self.phase) {
            (Admission::Allowed, Phase::Closed) => {
                let failed = outcome == Outcome::Failure;
                if let Some(w) = &mut self.window {
                    w.record(now, failed);
                }
                if !failed {
                    self.consecutive_failures = 0;
                    return None;
                }
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.should_trip(now) {
                    self.open(now)
                } else {
                    None
                }
            }
            (
                Admission::Probe(ticket),
                Phase::HalfOpen {
                    since,
                    issued,
                    succeeded,
                },
            ) if ticket.round == self.round => match outcome {
                Outcome::Success => {
                    let succeeded = succeeded + 1;
                    if succeeded >= self.policy.half_open_probes {
                        self.close()
                    } else {
                        self.phase = Phase::HalfOpen {
                            since,
                            issued,
                            succeeded,
                        };
                        None
                    }
                }
                Outcome::Failure => {
                    self.open_for = self
                        .open_for
                        .saturating_mul(2)
                        .min(self.policy.max_open_for);
                    self.open(now)
                }
            },
            _ => None,
        }
    }

    /// Force the breaker open (e.g. on a connection refused, or from the admin API).
    ///
    /// From half-open this counts as a re-trip and doubles `open_for`; when already
    /// open it changes nothing.
    pub fn trip(&mut self, now: Instant) -> Option<Transition> {
        match self.phase {
            Phase::Closed => self.open(now),
            Phase::HalfOpen { .. } => {
                self.open_for = self
                    .open_for
                    .saturating_mul(2)
                    .min(self.policy.max_open_for);
                self.open(now)
            }
            Phase::Open { .. } => None,
        }
    }

    /// Manual reset to closed (admin API); clears all counters and the open backoff.
    pub fn reset(&mut self, _now: Instant) -> Option<Transition> {
        if self.phase == Phase::Closed {
            self.consecutive_failures = 0;
            if let Some(w) = &mut self.window {
                w.clear();
            }
            self.open_for = self.policy.open_for;
            None
        } else {
            self.close()
        }
    }

    /// Swap the policy (config reload) without losing state.
    ///
    /// The state, the failure streak and a running open period are kept; the
    /// current `open_for` is clamped into the new `[open_for, max_open_for]`; the
    /// sliding window is kept if its length is unchanged and restarted otherwise
    /// (buckets of a different width cannot be translated).
    pub fn update_policy(&mut self, policy: BreakerPolicy, now: Instant) {
        let policy = policy.normalized();
        let old_window = self.policy.failure_rate.as_ref().map(|f| f.window);
        let new_window = policy.failure_rate.as_ref().map(|f| f.window);
        if old_window != new_window {
            self.window = new_window.map(|w| Window::new(w, now));
        }
        self.open_for = self.open_for.clamp(policy.open_for, policy.max_open_for);
        self.policy = policy;
    }

    /// Counters and timing for the admin API.
    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let (window_requests, window_failures) =
            self.window.as_ref().map_or((0, 0), |w| w.totals(now));
        let retry_after = match self.phase {
            Phase::Open { until } => Some(until.saturating_duration_since(now)),
            _ => None,
        };
        BreakerSnapshot {
            state: self.state(),
            consecutive_failures: self.consecutive_failures,
            window_requests,
            window_failures,
            open_for: self.open_for,
            retry_after,
        }
    }

    fn should_trip(&self, now: Instant) -> bool {
        if let Some(n) = self.policy.consecutive_failures
            && self.consecutive_failures >= n
        {
            return true;
        }
        if let (Some(fr), Some(w)) = (&self.policy.failure_rate, &self.window) {
            let (requests, failures) = w.totals(now);
            if requests > 0 && requests >= u64::from(fr.min_requests) {
                return failures as f64 / requests as f64 >= fr.threshold;
            }
        }
        false
    }

    fn open(&mut self, now: Instant) -> Option<Transition> {
        let from = self.state();
        self.phase = Phase::Open {
            until: now + self.open_for,
        };
        Some(Transition {
            from,
            to: BreakerState::Open,
        })
    }

    fn close(&mut self) -> Option<Transition> {
        let from = self.state();
        self.phase = Phase::Closed;
        self.consecutive_failures = 0;
        if let Some(w) = &mut self.window {
            w.clear();
        }
        self.open_for = self.policy.open_for;
        self.round += 1;
        Some(Transition {
            from,
            to: BreakerState::Closed,
        })
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
