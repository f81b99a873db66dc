use super::*;
use crate::breaker::FailureRatePolicy;
use tokio::time::advance;

const OPEN: Duration = Duration::from_secs(5);

fn consecutive(n: u32, probes: u32) -> BreakerPolicy {
    BreakerPolicy {
        consecutive_failures: Some(n),
        failure_rate: None,
        open_for: OPEN,
        max_open_for: Duration::from_secs(30),
        half_open_probes: probes,
    }
}

fn fail(m: &mut BreakerMachine) -> Option<Transition> {
    let (a, _) = m.acquire(Instant::now());
    assert_eq!(a, Admission::Allowed);
    m.record(&a, Outcome::Failure, Instant::now())
}

fn succeed(m: &mut BreakerMachine) -> Option<Transition> {
    let (a, _) = m.acquire(Instant::now());
    m.record(&a, Outcome::Success, Instant::now())
}

const fn t(from: BreakerState, to: BreakerState) -> Option<Transition> {
    Some(Transition { from, to })
}

use BreakerState::{Closed, HalfOpen, Open};

#[tokio::test(start_paused = true)]
async fn trips_after_exactly_n_consecutive_failures() {
    let mut m = BreakerMachine::new(consecutive(3, 1), Instant::now());
    assert_eq!(fail(&mut m), None);
    assert_eq!(fail(&mut m), None);
    assert_eq!(m.state(), Closed);
    assert_eq!(fail(&mut m), t(Closed, Open));
    assert_eq!(m.state(), Open);
}

#[tokio::test(start_paused = true)]
async fn success_resets_the_streak() {
    let mut m = BreakerMachine::new(consecutive(3, 1), Instant::now());
    fail(&mut m);
    fail(&mut m);
    assert_eq!(m.consecutive_failures(), 2);
    assert_eq!(succeed(&mut m), None);
    assert_eq!(m.consecutive_failures(), 0);
    assert_eq!(fail(&mut m), None);
    assert_eq!(fail(&mut m), None);
    assert_eq!(m.state(), Closed);
}

#[tokio::test(start_paused = true)]
async fn open_rejects_with_retry_after_then_half_open() {
    let mut m = BreakerMachine::new(consecutive(1, 1), Instant::now());
    assert_eq!(fail(&mut m), t(Closed, Open));
    let (a, tr) = m.acquire(Instant::now());
    assert_eq!(a, Admission::Rejected { retry_after: OPEN });
    assert_eq!(tr, None);
    advance(Duration::from_secs(2)).await;
    let (a, _) = m.acquire(Instant::now());
    assert_eq!(
        a,
        Admission::Rejected {
            retry_after: Duration::from_secs(3)
        }
    );
    let snap = m.snapshot(Instant::now());
    assert_eq!(snap.retry_after, Some(Duration::from_secs(3)));
    advance(Duration::from_secs(3)).await;
    let (a, tr) = m.acquire(Instant::now());
    assert!(matches!(a, Admission::Probe(_)));
    assert_eq!(tr, t(Open, HalfOpen));
    assert_eq!(m.state(), HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn poll_moves_open_to_half_open_without_admitting() {
    let mut m = BreakerMachine::new(consecutive(1, 1), Instant::now());
    fail(&mut m);
    assert_eq!(m.poll(Instant::now()), None);
    advance(OPEN).await;
    assert_eq!(m.poll(Instant::now()), t(Open, HalfOpen));
    assert_eq!(m.poll(Instant::now()), None);
    let (a, tr) = m.acquire(Instant::now());
    assert!(matches!(a, Admission::Probe(_)));
    assert_eq!(tr, None);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_at_most_n_probes_and_closes_when_all_succeed() {
    let mut m = BreakerMachine::new(consecutive(1, 3), Instant::now());
    fail(&mut m);
    advance(OPEN).await;
    let now = Instant::now();
    let probes: Vec<_> = (0..3).map(|_| m.acquire(now).0).collect();
    assert!(probes.iter().all(|a| matches!(a, Admission::Probe(_))));
    for _ in 0..5 {
        assert!(matches!(m.acquire(now).0, Admission::Rejected { .. }));
    }
    assert_eq!(m.record(&probes[0], Outcome::Success, now), None);
    assert_eq!(m.record(&probes[1], Outcome::Success, now), None);
    // Still half-open with probes in flight: no new probe.
    assert!(matches!(m.acquire(now).0, Admission::Rejected { .. }));
    assert_eq!(
        m.record(&probes[2], Outcome::Success, now),
        t(HalfOpen, Closed)
    );
    assert_eq!(m.acquire(now).0, Admission::Allowed);
}

#[tokio::test(start_paused = true)]
async fn failed_probe_reopens_with_doubled_open_for_capped() {
    let mut m = BreakerMachine::new(consecutive(1, 1), Instant::now());
    fail(&mut m);
    let mut expected = OPEN;
    for expected_next in [10, 20, 30, 30] {
        advance(expected).await;
        let (probe, _) = m.acquire(Instant::now());
        assert!(matches!(probe, Admission::Probe(_)));
        assert_eq!(
            m.record(&probe, Outcome::Failure, Instant::now()),
            t(HalfOpen, Open)
        );
        expected = Duration::from_secs(expected_next);
        assert_eq!(m.snapshot(Instant::now()).open_for, expected);
        // One tick before the doubled period ends: still open.
        advance(expected - Duration::from_millis(1)).await;
        assert!(matches!(
            m.acquire(Instant::now()).0,
            Admission::Rejected { .. }
        ));
        advance(Duration::from_millis(1)).await;
        expected = Duration::ZERO;
    }
}

#[tokio::test(start_paused = true)]
async fn open_for_resets_after_close() {
    let mut m = BreakerMachine::new(consecutive(1, 1), Instant::now());
    fail(&mut m);
    advance(OPEN).await;
    let (p, _) = m.acquire(Instant::now());
    m.record(&p, Outcome::Failure, Instant::now());
    assert_eq!(m.snapshot(Instant::now()).open_for, OPEN * 2);
    advance(OPEN * 2).await;
    let (p, _) = m.acquire(Instant::now());
    assert_eq!(
        m.record(&p, Outcome::Success, Instant::now()),
        t(HalfOpen, Closed)
    );
    assert_eq!(m.snapshot(Instant::now()).open_for, OPEN);
    fail(&mut m);
    assert_eq!(
        m.snapshot(Instant::now()).retry_after,
        Some(OPEN),
        "first trip after closing uses the base open_for"
    );
}

#[tokio::test(start_paused = true)]
async fn ratio_trips_at_60_percent_once_min_requests_reached() {
    let policy = BreakerPolicy {
        consecutive_failures: None,
        failure_rate: Some(FailureRatePolicy {
            threshold: 0.5,
            window: Duration::from_secs(10),
            min_requests: 10,
        }),
        ..consecutive(1, 1)
    };
    let mut m = BreakerMachine::new(policy, Instant::now());
    // Pattern F S F S F: 60% failures, never more than one failure in a row.
    let pattern = [true, false, true, false, true];
    let mut trip_at = None;
    for i in 0..20 {
        let (a, _) = m.acquire(Instant::now());
        if a != Admission::Allowed {
            break;
        }
        let tr = m.record(
            &a,
            Outcome::from_failed(pattern[i % pattern.len()]),
            Instant::now(),
        );
        if tr.is_some() {
            assert_eq!(tr, t(Closed, Open));
            trip_at = Some(i + 1);
            break;
        }
        advance(Duration::from_millis(100)).await;
    }
    // The ratio is >= 0.5 from the first request on, but min_requests holds the trip
    // back until request 10, a failure making 6/10.
    assert_eq!(trip_at, Some(10));
}

#[tokio::test(start_paused = true)]
async fn ratio_below_threshold_or_min_requests_does_not_trip() {
    let policy = BreakerPolicy {
        consecutive_failures: None,
        failure_rate: Some(FailureRatePolicy {
            threshold: 0.5,
            window: Duration::from_secs(10),
            min_requests: 10,
        }),
        ..consecutive(1, 1)
    };
    let mut m = BreakerMachine::new(policy.clone(), Instant::now());
    // 100% failures but only 9 requests.
    for _ in 0..9 {
        assert_eq!(fail(&mut m), None);
    }
    let mut m = BreakerMachine::new(policy, Instant::now());
    // 40% failures over many requests (S S F S F: no prefix reaches 50%).
    for i in 0..100 {
        let (a, _) = m.acquire(Instant::now());
        let failed = matches!(i % 5, 2 | 4);
        assert_eq!(
            m.record(&a, Outcome::from_failed(failed), Instant::now()),
            None
        );
    }
    let s = m.snapshot(Instant::now());
    assert_eq!((s.window_requests, s.window_failures), (100, 40));
}

#[tokio::test(start_paused = true)]
async fn ratio_window_slides() {
    let policy = BreakerPolicy {
        consecutive_failures: None,
        failure_rate: Some(FailureRatePolicy {
            threshold: 0.5,
            window: Duration::from_secs(10),
            min_requests: 4,
        }),
        ..consecutive(1, 1)
    };
    let mut m = BreakerMachine::new(policy, Instant::now());
    for _ in 0..3 {
        assert_eq!(fail(&mut m), None);
    }
    assert_eq!(m.snapshot(Instant::now()).window_requests, 3);
    // Those failures age out of the 10 s window.
    advance(Duration::from_secs(11)).await;
    assert_eq!(m.snapshot(Instant::now()).window_requests, 0);
    assert_eq!(succeed(&mut m), None);
    assert_eq!(succeed(&mut m), None);
    assert_eq!(succeed(&mut m), None);
    assert_eq!(fail(&mut m), None, "1/4 failures only");
}

#[tokio::test(start_paused = true)]
async fn stale_results_are_ignored() {
    let mut m = BreakerMachine::new(consecutive(1, 1), Instant::now());
    let (early, _) = m.acquire(Instant::now());
    fail(&mut m);
    // A request admitted before the trip reports late: ignored while open.
    assert_eq!(m.record(&early, Outcome::Failure, Instant::now()), None);
    advance(OPEN).await;
    let (probe1, _) = m.acquire(Instant::now());
    // Round 1's probe is never settled; after open_for the round is abandoned.
    advance(OPEN).await;
    let (probe2, _) = m.acquire(Instant::now());
    assert!(matches!(probe2, Admission::Probe(_)));
    assert_ne!(probe1, probe2);
    // Late success of the abandoned probe does not close the breaker.
    assert_eq!(m.record(&probe1, Outcome::Success, Instant::now()), None);
    assert_eq!(m.state(), HalfOpen);
    assert_eq!(
        m.record(&probe2, Outcome::Success, Instant::now()),
        t(HalfOpen, Closed)
    );
    // Rejections are never counted.
    let rejected = Admission::Rejected {
        retry_after: Duration::ZERO,
    };
    assert_eq!(m.record(&rejected, Outcome::Failure, Instant::now()), None);
    assert_eq!(m.consecutive_failures(), 0);
}

#[tokio::test(start_paused = true)]
async fn reset_from_every_state() {
    let mut m = BreakerMachine::new(consecutive(2, 1), Instant::now());
    fail(&mut m);
    assert_eq!(m.reset(Instant::now()), None);
    assert_eq!(m.consecutive_failures(), 0);
    fail(&mut m);
    fail(&mut m);
    assert_eq!(m.reset(Instant::now()), t(Open, Closed));
    fail(&mut m);
    fail(&mut m);
    advance(OPEN).await;
    m.acquire(Instant::now());
    assert_eq!(m.reset(Instant::now()), t(HalfOpen, Closed));
    assert_eq!(m.acquire(Instant::now()).0, Admission::Allowed);
}

#[tokio::test(start_paused = true)]
async fn trip_forces_open() {
    let mut m = BreakerMachine::new(consecutive(100, 1), Instant::now());
    assert_eq!(m.trip(Instant::now()), t(Closed, Open));
    assert_eq!(m.trip(Instant::now()), None);
    advance(OPEN).await;
    m.acquire(Instant::now());
    assert_eq!(m.trip(Instant::now()), t(HalfOpen, Open));
    assert_eq!(m.snapshot(Instant::now()).open_for, OPEN * 2);
}

#[tokio::test(start_paused = true)]
async fn policy_update_keeps_state() {
    let mut m = BreakerMachine::new(consecutive(3, 1), Instant::now());
    fail(&mut m);
    fail(&mut m);
    m.update_policy(consecutive(5, 2), Instant::now());
    assert_eq!(m.consecutive_failures(), 2);
    assert_eq!(fail(&mut m), None, "3 < new threshold 5");
    fail(&mut m);
    assert_eq!(fail(&mut m), t(Closed, Open));
    // Update while open: stays open with the remaining time.
    advance(Duration::from_secs(1)).await;
    m.update_policy(consecutive(1, 2), Instant::now());
    assert_eq!(m.state(), Open);
    assert_eq!(
        m.snapshot(Instant::now()).retry_after,
        Some(Duration::from_secs(4))
    );
    // New probe count applies to the next half-open round.
    advance(Duration::from_secs(4)).await;
    assert!(matches!(m.acquire(Instant::now()).0, Admission::Probe(_)));
    assert!(matches!(m.acquire(Instant::now()).0, Admission::Probe(_)));
    assert!(matches!(
        m.acquire(Instant::now()).0,
        Admission::Rejected { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn policy_update_clamps_open_for_and_swaps_window() {
    let mut m = BreakerMachine::new(consecutive(1, 1), Instant::now());
    fail(&mut m);
    for _ in 0..3 {
        advance(m.snapshot(Instant::now()).retry_after.unwrap_or_default()).await;
        let (p, _) = m.acquire(Instant::now());
        m.record(&p, Outcome::Failure, Instant::now());
    }
    assert_eq!(m.snapshot(Instant::now()).open_for, Duration::from_secs(30));
    let mut smaller = consecutive(1, 1);
    smaller.max_open_for = Duration::from_secs(8);
    smaller.failure_rate = Some(FailureRatePolicy {
        threshold: 0.5,
        window: Duration::from_secs(1),
        min_requests: 1,
    });
    m.update_policy(smaller, Instant::now());
    let s = m.snapshot(Instant::now());
    assert_eq!(s.open_for, Duration::from_secs(8));
    assert_eq!(s.state, Open);
    assert_eq!(s.window_requests, 0);
}

#[tokio::test(start_paused = true)]
async fn no_trip_criteria_never_trips() {
    let policy = BreakerPolicy {
        consecutive_failures: None,
        failure_rate: None,
        ..consecutive(1, 1)
    };
    let mut m = BreakerMachine::new(policy, Instant::now());
    for _ in 0..1000 {
        assert_eq!(fail(&mut m), None);
    }
    assert_eq!(m.state(), Closed);
}

#[test]
fn state_names_and_gauges() {
    assert_eq!(
        [Closed.as_str(), Open.as_str(), HalfOpen.as_str()],
        ["closed", "open", "half_open"]
    );
    assert_eq!(
        [Closed.as_gauge(), Open.as_gauge(), HalfOpen.as_gauge()],
        [0, 1, 2]
    );
    for s in [Closed, Open, HalfOpen] {
        assert_eq!(BreakerState::from_u8(s.as_u8()), s);
    }
}

#[test]
fn machine_needs_no_runtime() {
    // Plain std context: tokio's Instant falls back to the system clock.
    let mut m = BreakerMachine::new(consecutive(1, 1), Instant::now());
    assert_eq!(fail(&mut m), t(Closed, Open));
}

#[tokio::test(start_paused = true)]
async fn snapshot_serializes_as_documented() {
    let mut m = BreakerMachine::new(consecutive(1, 1), Instant::now());
    fail(&mut m);
    let json = serde_json::to_value(m.snapshot(Instant::now())).unwrap_or_default();
    assert_eq!(
        json,
        serde_json::json!({
            "state": "open",
            "consecutive_failures": 1,
            "window_requests": 0,
            "window_failures": 0,
            "open_for_ms": 5000,
            "retry_after_ms": 5000,
        })
    );
}
