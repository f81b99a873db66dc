//! Concurrent gate around [`BreakerMachine`], used from the request path.

use super::{
    Admission, BreakerMachine, BreakerPolicy, BreakerSnapshot, BreakerState, Outcome, Transition,
};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use tokio::time::Instant;

/// Receives every transition of a breaker, including the open → half-open ones that
/// happen inside [`CircuitBreaker::try_acquire`] and are not returned to the caller.
///
/// Called while the breaker's lock is held, so calls are ordered like the
/// transitions themselves; implementations must be cheap and must not call back
/// into the breaker.
pub trait TransitionObserver: Send + Sync {
    /// One state change.
    fn on_transition(&self, transition: Transition);
}

/// Thread-safe circuit breaker for one upstream target.
///
/// Closed-state admissions take no lock (one atomic load), and so do successes
/// that cannot change anything (no failure streak to reset and no failure-rate
/// window to count in). Everything else goes through a `parking_lot::Mutex`
/// around the pure [`BreakerMachine`].
pub struct CircuitBreaker {
    /// Mirror of the machine's state, written under the lock after each change.
    state: AtomicU8,
    /// Mirror of `machine.success_is_noop()`, written under the lock.
    success_noop: AtomicBool,
    machine: Mutex<BreakerMachine>,
    observer: Option<Arc<dyn TransitionObserver>>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("state", &self.fast_state())
            .finish_non_exhaustive()
    }
}

const CLOSED: u8 = BreakerState::Closed.as_u8();

impl CircuitBreaker {
    /// A closed breaker with the given policy.
    pub fn new(policy: BreakerPolicy) -> Self {
        let machine = BreakerMachine::new(policy, Instant::now());
        Self {
            state: AtomicU8::new(CLOSED),
            success_noop: AtomicBool::new(machine.success_is_noop()),
            machine: Mutex::new(machine),
            observer: None,
        }
    }

    /// Report every transition to `observer` (e.g. [`crate::BreakerMetrics`]).
    pub fn with_observer(mut self, observer: Arc<dyn TransitionObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Ask whether a request may go to the target.
    ///
    /// `Allowed`/`Probe` must be handed back to [`record`](Self::record) once the
    /// outcome is known; `Rejected` means no connection attempt should be made.
    #[inline]
    pub fn try_acquire(&self) -> Admission {
        if self.state.load(Ordering::Acquire) == CLOSED {
            return Admission::Allowed;
        }
        let mut m = self.machine.lock();
        let (admission, transition) = m.acquire(Instant::now());
        self.publish(&m, transition);
        admission
    }

    /// Report the outcome of an admitted request; returns the transition it caused.
    ///
    /// If an observer is attached it has already seen the transition; the return
    /// value is for logging.
    #[inline]
    pub fn record(&self, admission: &Admission, outcome: Outcome) -> Option<Transition> {
        match admission {
            Admission::Rejected { .. } => return None,
            Admission::Allowed
                if outcome == Outcome::Success && self.success_noop.load(Ordering::Acquire) =>
            {
                // A concurrent failure may be recorded just before this load; ordering
                // this success first is an equally valid linearization.
                return None;
            }
            _ => {}
        }
        let mut m = self.machine.lock();
        let transition = m.record(admission, outcome, Instant::now());
        self.publish(&m, transition);
        transition
    }

    /// Current state; applies a due open → half-open transition first.
    pub fn state(&self) -> BreakerState {
        if self.state.load(Ordering::Acquire) == CLOSED {
            return BreakerState::Closed;
        }
        let mut m = self.machine.lock();
        let transition = m.poll(Instant::now());
        self.publish(&m, transition);
        m.state()
    }

    /// Manual reset to closed (admin API); returns the transition if the state changed.
    pub fn reset(&self) -> Option<Transition> {
        let mut m = self.machine.lock();
        let transition = m.reset(Instant::now());
        self.publish(&m, transition);
        transition
    }

    /// Force the breaker open (admin API, or a caller that knows the target is gone).
    pub fn trip(&self) -> Option<Transition> {
        let mut m = self.machine.lock();
        let transition = m.trip(Instant::now());
        self.publish(&m, transition);
        transition
    }

    /// Counters and timing for the admin API.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let mut m = self.machine.lock();
        let now = Instant::now();
        let transition = m.poll(now);
        self.publish(&m, transition);
        m.snapshot(now)
    }

    /// Replace the policy on config reload, keeping state and counters
    /// (see [`BreakerMachine::update_policy`]).
    pub fn update_policy(&self, policy: BreakerPolicy) {
        let mut m = self.machine.lock();
        m.update_policy(policy, Instant::now());
        self.publish(&m, None);
    }

    fn fast_state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Refresh the atomic mirrors and notify the observer; called with the lock held.
    fn publish(&self, m: &BreakerMachine, transition: Option<Transition>) {
        self.state.store(m.state().as_u8(), Ordering::Release);
        self.success_noop
            .store(m.success_is_noop(), Ordering::Release);
        if let (Some(t), Some(obs)) = (transition, &self.observer) {
            obs.on_transition(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            consecutive_failures: Some(3),
            failure_rate: None,
            open_for: Duration::from_secs(1),
            max_open_for: Duration::from_secs(4),
            half_open_probes: 2,
        }
    }

    #[derive(Default)]
    struct Count {
        into: [AtomicUsize; 3],
        out_of: [AtomicUsize; 3],
    }
    impl TransitionObserver for Count {
        fn on_transition(&self, t: Transition) {
            self.out_of[t.from.as_u8() as usize].fetch_add(1, Ordering::SeqCst);
            self.into[t.to.as_u8() as usize].fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn full_cycle_through_the_gate() {
        let count = Arc::new(Count::default());
        let b = CircuitBreaker::new(policy()).with_observer(count.clone());
        for _ in 0..3 {
            let a = b.try_acquire();
            b.record(&a, Outcome::Failure);
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(
            matches!(b.try_acquire(), Admission::Rejected { retry_after } if retry_after == Duration::from_secs(1))
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let p1 = b.try_acquire();
        let p2 = b.try_acquire();
        assert!(matches!(p1, Admission::Probe(_)) && matches!(p2, Admission::Probe(_)));
        assert!(!b.try_acquire().is_admitted());
        assert_eq!(b.record(&p1, Outcome::Success), None);
        assert_eq!(
            b.record(&p2, Outcome::Success),
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Closed
            })
        );
        assert_eq!(b.try_acquire(), Admission::Allowed);
        // Closed → Open, Open → HalfOpen (seen only by the observer), HalfOpen → Closed.
        let into: Vec<_> = count
            .into
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect();
        assert_eq!(into, vec![1, 1, 1]);
        assert_eq!(b.trip().map(|t| t.to), Some(BreakerState::Open));
        assert_eq!(b.reset().map(|t| t.to), Some(BreakerState::Closed));
        assert_eq!(b.snapshot().state, BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn fast_path_success_still_resets_streak() {
        let b = CircuitBreaker::new(policy());
        for _ in 0..2 {
            let a = b.try_acquire();
            b.record(&a, Outcome::Failure);
        }
        let a = b.try_acquire();
        b.record(&a, Outcome::Success);
        assert_eq!(b.snapshot().consecutive_failures, 0);
        for _ in 0..2 {
            let a = b.try_acquire();
            b.record(&a, Outcome::Failure);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn update_policy_through_gate_keeps_state() {
        let b = CircuitBreaker::new(policy());
        b.trip();
        b.update_policy(BreakerPolicy {
            half_open_probes: 1,
            ..policy()
        });
        assert_eq!(b.state(), BreakerState::Open);
    }

    /// Many tasks hammer one breaker with a mix of outcomes while time moves; every
    /// transition must be observed: per state, entries minus exits equals whether
    /// the breaker ends in that state.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_use_loses_no_transitions() {
        let count = Arc::new(Count::default());
        let b = Arc::new(
            CircuitBreaker::new(BreakerPolicy {
                consecutive_failures: Some(2),
                failure_rate: None,
                open_for: Duration::from_micros(200),
                max_open_for: Duration::from_millis(1),
                half_open_probes: 2,
            })
            .with_observer(count.clone()),
        );
        let returned = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for task in 0..16u64 {
            let b = b.clone();
            let returned = returned.clone();
            tasks.push(tokio::spawn(async move {
                let mut x = task.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                for _ in 0..20_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let a = b.try_acquire();
                    if a.is_admitted() {
                        let outcome = Outcome::from_failed(x % 3 == 0);
                        if b.record(&a, outcome).is_some() {
                            returned.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    if x % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        for t in tasks {
            assert!(t.await.is_ok());
        }
        let end = b.state();
        let mut total_into = 0;
        for s in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ] {
            let i = s.as_u8() as usize;
            let into = count.into[i].load(Ordering::SeqCst) as i64;
            let out = count.out_of[i].load(Ordering::SeqCst) as i64;
            total_into += into;
            let initial = i64::from(s == BreakerState::Closed);
            let now_in = i64::from(s == end);
            assert_eq!(
                initial + into - out,
                now_in,
                "state {s}: into {into} out {out}"
            );
        }
        assert!(total_into > 10, "the test should exercise transitions");
        // Transitions returned by `record` are a subset of the observed ones (the
        // observer additionally sees open → half-open from try_acquire/state).
        let half_open_entries = count.into[2].load(Ordering::SeqCst);
        assert_eq!(
            returned.load(Ordering::SeqCst) + half_open_entries,
            total_into as usize
        );
    }
}
