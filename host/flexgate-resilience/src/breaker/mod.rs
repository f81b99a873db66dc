//! Circuit breaker for one upstream target.
//!
//! The design follows linkerd2-proxy: a pure state machine
//! ([`BreakerMachine`], in `machine.rs`) whose methods take `now` explicitly, wrapped
//! by a concurrent gate ([`CircuitBreaker`], in `gate.rs`) that the request path uses.
//! Keeping the machine pure means every transition can be unit-tested with paused
//! time and no runtime, while the gate only deals with concurrency.

mod classify;
mod gate;
mod machine;
mod policy;

pub use classify::{AttemptResult, FailureClassifier, FailureOn};
pub use gate::{CircuitBreaker, TransitionObserver};
pub use machine::BreakerMachine;
pub use policy::{BreakerPolicy, FailureRatePolicy, MAX_OPEN_FOR, PolicyError};

use serde::Serialize;
use std::time::Duration;

/// State of a circuit breaker.
///
/// Names follow the electrical metaphor ("closed" = current flows = requests pass),
/// spelled out so they cannot be misread as "open for business".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Requests flow to the target; failures are being counted.
    Closed,
    /// The target is considered down: requests are rejected without a connection attempt.
    Open,
    /// The open period elapsed: a limited number of probe requests test the target.
    HalfOpen,
}

impl BreakerState {
    /// Stable lowercase name, used as a metric label and in the admin API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// Numeric value for the `flexgate_circuit_state` gauge (0 closed, 1 open, 2 half-open).
    pub const fn as_gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }

    pub(crate) const fn as_u8(self) -> u8 {
        self.as_gauge() as u8
    }

    pub(crate) const fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Closed,
            1 => Self::Open,
            _ => Self::HalfOpen,
        }
    }
}

impl std::fmt::Display for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change, reported so the caller can log it and update metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// State before the change.
    pub from: BreakerState,
    /// State after the change.
    pub to: BreakerState,
}

/// Identifies the half-open round a probe was admitted in, so that a late result
/// from an abandoned round cannot close (or re-open) the breaker in a later round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTicket {
    pub(crate) round: u64,
}

/// Answer of [`CircuitBreaker::try_acquire`]; hand it back to `record` with the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed breaker: send the request normally.
    Allowed,
    /// Half-open breaker: this request is one of the probes that decide whether to close.
    Probe(ProbeTicket),
    /// Open breaker (or all probes in flight): do not attempt a connection.
    Rejected {
        /// Hint for a `Retry-After` header: when the breaker may admit again.
        retry_after: Duration,
    },
}

impl Admission {
    /// Whether the request may be sent to the target.
    pub const fn is_admitted(&self) -> bool {
        !matches!(self, Self::Rejected { .. })
    }
}

/// Outcome of an admitted request, as decided by a [`FailureClassifier`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The target answered acceptably.
    Success,
    /// The attempt counts against the target's health.
    Failure,
}

impl Outcome {
    /// `Failure` if `failed`, else `Success`.
    pub const fn from_failed(failed: bool) -> Self {
        if failed { Self::Failure } else { Self::Success }
    }
}

/// Point-in-time view of a breaker, for the admin API.
///
/// Durations are serialized as integer milliseconds (`*_ms` field names) because
/// serde's default `{secs, nanos}` shape is awkward for JSON consumers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    /// Current state.
    pub state: BreakerState,
    /// Failures in a row since the last success (closed state).
    pub consecutive_failures: u32,
    /// Requests in the sliding window (0 when no `failure_rate` policy is set).
    pub window_requests: u64,
    /// Failures in the sliding window (0 when no `failure_rate` policy is set).
    pub window_failures: u64,
    /// Open duration in effect (the doubled value after re-trips).
    #[serde(rename = "open_for_ms", serialize_with = "ser_ms")]
    pub open_for: Duration,
    /// Time until the breaker admits probes again (only while open).
    #[serde(rename = "retry_after_ms", serialize_with = "ser_opt_ms")]
    pub retry_after: Option<Duration>,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ser_opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_ms(d, s),
        None => s.serialize_none(),
    }
}
