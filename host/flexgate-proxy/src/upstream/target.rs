//! One upstream target's live state. It outlives config snapshots (keyed by upstream name and address)
//! so a reload keeps health verdicts, in-flight counts and breaker state.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use flexgate_resilience::CircuitBreaker;
use http::uri::Authority;
use parking_lot::Mutex;
use prometheus::IntCounter;

use super::pool::IdlePool;

/// Outcome of one attempt, as counted in `flexgate_upstream_requests_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Status5xx,
    ConnectFailure,
    Timeout,
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Self::Ok,
        Self::Status5xx,
        Self::ConnectFailure,
        Self::Timeout,
        Self::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Status5xx => "5xx",
            Self::ConnectFailure => "connect_failure",
            Self::Timeout => "timeout",
            Self::Error => "error",
        }
    }
}

/// Monotonic nanoseconds since the first call; cheap to store in an atomic.
pub fn now_nanos() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Live state of one target.
pub struct TargetState {
    pub addr: Arc<str>,
    pub authority: Authority,
    in_flight: AtomicU32,
    connect_failures: AtomicU32,
    ejected_until: AtomicU64,
    /// Verdict of the active health check (true when no check is configured).
    healthy: AtomicBool,
    outcomes: [IntCounter; 5],
    /// The target's circuit breaker, when its upstream configures one. Kept here so that its state
    /// survives reloads with the target; snapshots copy the `Arc` so the request path never locks this.
    breaker: Mutex<Option<Arc<CircuitBreaker>>>,
    /// Idle HTTP/1.1 keep-alive connections to this target.
    pub idle: Arc<IdlePool>,
}

impl std::fmt::Debug for TargetState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetState")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl TargetState {
    pub fn new(addr: &str, authority: Authority, outcomes: [IntCounter; 5]) -> Self {
        Self {
            addr: Arc::from(addr),
            authority,
            in_flight: AtomicU32::new(0),
            connect_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            outcomes,
            breaker: Mutex::new(None),
            idle: Arc::default(),
        }
    }

    /// The circuit breaker, if the upstream configures one.
    pub fn breaker(&self) -> Option<Arc<CircuitBreaker>> {
        self.breaker.lock().clone()
    }

    /// Installs, keeps or removes the breaker on (re)load: `make` builds a new one when there is none.
    /// Returns the breaker now in place.
    pub(crate) fn configure_breaker(
        &self,
        policy: Option<flexgate_resilience::BreakerPolicy>,
        make: impl FnOnce(flexgate_resilience::BreakerPolicy) -> CircuitBreaker,
    ) -> Option<Arc<CircuitBreaker>> {
        let mut slot = self.breaker.lock();
        match (policy, slot.as_ref()) {
            (None, _) => *slot = None,
            (Some(p), Some(b)) => b.update_policy(p),
            (Some(p), None) => *slot = Some(Arc::new(make(p))),
        }
        slot.clone()
    }

    /// Neither ejected by passive health nor marked down by the active check.
    pub fn is_available(&self, now: u64) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.ejected_until.load(Ordering::Relaxed) <= now
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts an attempt as in flight until the guard drops (least_requests reads this).
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Records an attempt's outcome: metrics and passive health.
    pub fn record(&self, outcome: Outcome, passive_failures: u32, eject_for: Duration) {
        self.outcomes[outcome as usize].inc();
        if outcome == Outcome::ConnectFailure {
            let n = self.connect_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= passive_failures.max(1) {
                let until = now_nanos().saturating_add(eject_for.as_nanos() as u64);
                self.ejected_until.store(until, Ordering::Relaxed);
                tracing::warn!(target = %self.addr, "target ejected after connect failures");
            }
        } else if self.connect_failures.load(Ordering::Relaxed) != 0 {
            self.connect_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Set by the active health checker.
    pub fn set_healthy(&self, healthy: bool) {
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        if was != healthy {
            tracing::info!(target = %self.addr, healthy, "active health check changed target state");
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// Decrements the target's in-flight count on drop.
pub struct InFlight(Arc<TargetState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
