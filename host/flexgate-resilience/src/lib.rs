//! Resilience primitives that the FlexGate proxy calls on its hot path.
//!
//! * [`breaker`]: a per-target circuit breaker, split into a pure state machine
//!   ([`breaker::BreakerMachine`], unit-testable with paused time) and a concurrent
//!   gate ([`breaker::CircuitBreaker`]) with an atomic fast path for the closed state.
//! * [`ratelimit`]: a GCRA rate limiter with a bounded, sharded local store and a
//!   Redis-backed store that degrades gracefully (see [`ratelimit::OnStoreError`]).
//! * [`inflight`]: a lock-free concurrency cap with RAII guards.
//! * [`metrics`]: Prometheus metrics registered on a caller-provided registry.
//!
//! Every time-dependent computation uses [`tokio::time::Instant`] so tests can run with
//! paused tokio time. This crate deliberately does not depend on `flexgate-config`:
//! it defines plain policy structs that the proxy converts into.

pub mod breaker;
pub mod inflight;
pub mod metrics;
pub mod ratelimit;

pub use breaker::{
    Admission, AttemptResult, BreakerMachine, BreakerPolicy, BreakerSnapshot, BreakerState,
    CircuitBreaker, FailureClassifier, FailureOn, FailureRatePolicy, MAX_OPEN_FOR, Outcome,
    PolicyError, ProbeTicket, Transition, TransitionObserver,
};
pub use inflight::{InFlightGuard, InFlightLimit};
pub use metrics::{BreakerMetrics, RejectReason, ResilienceMetrics};
pub use ratelimit::{
    Decision, Gcra, GcraError, LocalStore, OnStoreError, RateLimitError, RateLimitHeaders,
    RateLimitPolicy, RateLimiter, RedisBackendConfig, RedisBackendError, RedisLimiterBackend,
    StoreKind,
};
