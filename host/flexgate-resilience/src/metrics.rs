//! Prometheus metrics for breakers, in-flight caps and rate limiting.
//!
//! Registered on a caller-provided [`prometheus::Registry`] (no global registry) so
//! tests and multiple gateways in one process stay isolated.

use crate::breaker::{BreakerState, Transition, TransitionObserver};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Why a request to an upstream was refused before any connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The target's circuit breaker is open (or out of half-open probes).
    CircuitOpen,
    /// The upstream's in-flight cap is reached.
    MaxInFlight,
}

impl RejectReason {
    /// Label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CircuitOpen => "circuit_open",
            Self::MaxInFlight => "max_in_flight",
        }
    }
}

/// All metrics of this crate. Cheap to clone (handles to shared metric families).
#[derive(Debug, Clone)]
pub struct ResilienceMetrics {
    /// `flexgate_circuit_state{upstream,target}`: 0 closed, 1 open, 2 half-open.
    pub circuit_state: IntGaugeVec,
    /// `flexgate_circuit_transitions_total{upstream,target,from,to}`.
    pub circuit_transitions: IntCounterVec,
    /// `flexgate_upstream_rejected_total{upstream,reason}`.
    pub upstream_rejected: IntCounterVec,
    /// `flexgate_ratelimit_decisions_total{route,decision}` (allowed | limited).
    pub ratelimit_decisions: IntCounterVec,
    /// `flexgate_ratelimit_store_errors_total{store}` (redis).
    pub ratelimit_store_errors: IntCounterVec,
    /// `flexgate_ratelimit_degraded{route}`: 1 while the shared store is bypassed.
    pub ratelimit_degraded: IntGaugeVec,
}

impl ResilienceMetrics {
    /// Create the metric families and register them on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            circuit_state: IntGaugeVec::new(
                Opts::new(
                    "flexgate_circuit_state",
                    "Circuit breaker state per upstream target (0 closed, 1 open, 2 half-open)",
                ),
                &["upstream", "target"],
            )?,
            circuit_transitions: IntCounterVec::new(
                Opts::new(
                    "flexgate_circuit_transitions_total",
                    "Circuit breaker state transitions",
                ),
                &["upstream", "target", "from", "to"],
            )?,
            upstream_rejected: IntCounterVec::new(
                Opts::new(
                    "flexgate_upstream_rejected_total",
                    "Requests refused before contacting the upstream",
                ),
                &["upstream", "reason"],
            )?,
            ratelimit_decisions: IntCounterVec::new(
                Opts::new("flexgate_ratelimit_decisions_total", "Rate limit decisions"),
                &["route", "decision"],
            )?,
            ratelimit_store_errors: IntCounterVec::new(
                Opts::new(
                    "flexgate_ratelimit_store_errors_total",
                    "Errors and timeouts talking to the shared rate limit store",
                ),
                &["store"],
            )?,
            ratelimit_degraded: IntGaugeVec::new(
                Opts::new(
                    "flexgate_ratelimit_degraded",
                    "1 while a route's rate limit bypasses the shared store",
                ),
                &["route"],
            )?,
        };
        registry.register(Box::new(m.circuit_state.clone()))?;
        registry.register(Box::new(m.circuit_transitions.clone()))?;
        registry.register(Box::new(m.upstream_rejected.clone()))?;
        registry.register(Box::new(m.ratelimit_decisions.clone()))?;
        registry.register(Box::new(m.ratelimit_store_errors.clone()))?;
        registry.register(Box::new(m.ratelimit_degraded.clone()))?;
        Ok(m)
    }

    /// Count a transition and set the state gauge.
    pub fn record_transition(&self, upstream: &str, target: &str, t: Transition) {
        self.circuit_transitions
            .with_label_values(&[upstream, target, t.from.as_str(), t.to.as_str()])
            .inc();
        self.set_circuit_state(upstream, target, t.to);
    }

    /// Set the state gauge (e.g. to 0 when a target is first seen).
    pub fn set_circuit_state(&self, upstream: &str, target: &str, state: BreakerState) {
        self.circuit_state
            .with_label_values(&[upstream, target])
            .set(state.as_gauge());
    }

    /// Drop a removed target's series (config reload), so stale gauges do not linger.
    pub fn forget_target(&self, upstream: &str, target: &str) {
        // Absent series are not an error worth reporting.
        let _ = self.circuit_state.remove_label_values(&[upstream, target]);
    }

    /// Count a request refused before contacting the upstream.
    pub fn upstream_rejected(&self, upstream: &str, reason: RejectReason) {
        self.upstream_rejected
            .with_label_values(&[upstream, reason.as_str()])
            .inc();
    }

    /// Count one rate limit decision.
    pub fn ratelimit_decision(&self, route: &str, allowed: bool) {
        let d = if allowed { "allowed" } else { "limited" };
        self.ratelimit_decisions
            .with_label_values(&[route, d])
            .inc();
    }

    /// Count one error or timeout of a shared store (`store`: "redis").
    pub fn ratelimit_store_error(&self, store: &str) {
        self.ratelimit_store_errors
            .with_label_values(&[store])
            .inc();
    }

    /// Set whether `route` currently bypasses its shared store.
    pub fn set_ratelimit_degraded(&self, route: &str, degraded: bool) {
        self.ratelimit_degraded
            .with_label_values(&[route])
            .set(i64::from(degraded));
    }

    /// Pre-resolved handles for one breaker, to attach with
    /// [`CircuitBreaker::with_observer`](crate::CircuitBreaker::with_observer).
    /// Sets the state gauge to closed.
    pub fn breaker(&self, upstream: &str, target: &str) -> BreakerMetrics {
        let gauge = self.circuit_state.with_label_values(&[upstream, target]);
        gauge.set(BreakerState::Closed.as_gauge());
        BreakerMetrics {
            gauge,
            transitions: self.circuit_transitions.clone(),
            upstream: upstream.to_owned(),
            target: target.to_owned(),
        }
    }
}

/// Metrics of one breaker; implements [`TransitionObserver`].
#[derive(Debug, Clone)]
pub struct BreakerMetrics {
    gauge: IntGauge,
    transitions: IntCounterVec,
    upstream: String,
    target: String,
}

impl BreakerMetrics {
    fn counter(&self, t: Transition) -> IntCounter {
        self.transitions.with_label_values(&[
            self.upstream.as_str(),
            self.target.as_str(),
            t.from.as_str(),
            t.to.as_str(),
        ])
    }
}

impl TransitionObserver for BreakerMetrics {
    fn on_transition(&self, t: Transition) {
        self.counter(t).inc();
        self.gauge.set(t.to.as_gauge());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::{BreakerPolicy, CircuitBreaker, Outcome};
    use std::sync::Arc;

    fn value(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        registry
            .gather()
            .iter()
            .find(|f| f.name() == name)?
            .get_metric()
            .iter()
            .find(|m| {
                labels.iter().all(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == *k && l.value() == *v)
                })
            })
            // A family is either gauges or counters; the other field reads 0.
            .map(|m| m.get_gauge().get_value() + m.get_counter().get_value())
    }

    #[test]
    fn registers_on_given_registry_only_once() {
        let r = Registry::new();
        assert!(ResilienceMetrics::new(&r).is_ok());
        assert!(
            ResilienceMetrics::new(&r).is_err(),
            "duplicate registration"
        );
        assert!(ResilienceMetrics::new(&Registry::new()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_observer_updates_gauge_and_counters() {
        let r = Registry::new();
        let m = ResilienceMetrics::new(&r).unwrap_or_else(|e| panic!("{e}"));
        let b = CircuitBreaker::new(BreakerPolicy {
            consecutive_failures: Some(1),
            ..BreakerPolicy::default()
        })
        .with_observer(Arc::new(m.breaker("users", "10.0.0.1:80")));
        let lbl = [("upstream", "users"), ("target", "10.0.0.1:80")];
        assert_eq!(value(&r, "flexgate_circuit_state", &lbl), Some(0.0));
        let a = b.try_acquire();
        b.record(&a, Outcome::Failure);
        assert_eq!(value(&r, "flexgate_circuit_state", &lbl), Some(1.0));
        let t = [("from", "closed"), ("to", "open")];
        assert_eq!(
            value(&r, "flexgate_circuit_transitions_total", &t),
            Some(1.0)
        );
        m.upstream_rejected("users", RejectReason::MaxInFlight);
        m.ratelimit_decision("r1", false);
        m.ratelimit_store_error("redis");
        m.set_ratelimit_degraded("r1", true);
        assert_eq!(
            value(
                &r,
                "flexgate_upstream_rejected_total",
                &[("reason", "max_in_flight")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &r,
                "flexgate_ratelimit_decisions_total",
                &[("decision", "limited")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&r, "flexgate_ratelimit_store_errors_total", &[]),
            Some(1.0)
        );
        assert_eq!(value(&r, "flexgate_ratelimit_degraded", &[]), Some(1.0));
        m.forget_target("users", "10.0.0.1:80");
        assert_eq!(value(&r, "flexgate_circuit_state", &lbl), None);
    }
}
