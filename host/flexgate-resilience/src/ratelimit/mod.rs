//! Rate limiting: GCRA ([`Gcra`]) over a local ([`LocalStore`]) or shared Redis
//! ([`RedisLimiterBackend`]) store, behind the [`RateLimiter`] façade.

mod gcra;
mod headers;
mod local;
mod redis_store;
mod slots;
mod table;

pub use gcra::{Decision, Gcra, GcraError};
pub use headers::RateLimitHeaders;
pub use local::{DEFAULT_MAX_KEYS, LocalStore};
pub use redis_store::{RedisBackendConfig, RedisBackendError, RedisLimiterBackend};

use crate::metrics::ResilienceMetrics;
use redis_store::ScriptArgs;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Where a route's rate limit state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreKind {
    /// In this process: exact per replica, not shared between replicas.
    #[default]
    Local,
    /// In Redis: one limit shared by every replica.
    Redis,
}

/// What a Redis-backed limiter does while Redis is unreachable, slow or its
/// breaker is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStoreError {
    /// Enforce the same policy per process with a local bucket (so the effective
    /// limit becomes `replicas ×` the policy until Redis is back).
    #[default]
    Local,
    /// Admit everything (fail open).
    Allow,
    /// Reject everything (fail closed).
    Deny,
}

/// A route's rate limit policy; plain data the proxy converts its config into.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitPolicy {
    /// `(n, period)`: `n` requests per `period` on average.
    pub rate_per: (u64, Duration),
    /// Extra requests allowed at once on a rested key (a fresh key admits
    /// `burst + 1`; see [`gcra`](Gcra) for how this compares with nginx/Envoy/Kong).
    pub burst: u32,
    /// Where state lives.
    pub store: StoreKind,
    /// Fallback for [`StoreKind::Redis`].
    pub on_store_error: OnStoreError,
}

/// A policy that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitError {
    /// Bad rate.
    #[error(transparent)]
    Gcra(#[from] GcraError),
    /// `store: Redis` without a [`RedisLimiterBackend`].
    #[error("policy uses the redis store but no redis backend was given")]
    MissingRedisBackend,
}

/// Retry hint for `OnStoreError::Deny` decisions: the store's state is unknown,
/// so suggest a short, fixed pause.
const DENY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// One route's rate limiter.
///
/// Local mode is synchronous under the hood (the future completes on first poll)
/// and allocation-free; Redis mode costs one round trip within the backend's
/// latency budget, or falls back per [`OnStoreError`].
#[derive(Debug)]
pub struct RateLimiter {
    policy: RateLimitPolicy,
    gcra: Gcra,
    /// Primary store in local mode, fallback bucket in redis mode.
    local: Arc<LocalStore>,
    redis: Option<(RedisLimiterBackend, ScriptArgs)>,
    metrics: Option<ResilienceMetrics>,
    policy_header: String,
}

impl RateLimiter {
    /// Build from a policy; `redis` is required when `policy.store` is
    /// [`StoreKind::Redis`] (and ignored otherwise).
    pub fn new(
        policy: RateLimitPolicy,
        redis: Option<RedisLimiterBackend>,
    ) -> Result<Self, RateLimitError> {
        let (n, period) = policy.rate_per;
        let gcra = Gcra::new(n, period, policy.burst)?;
        let redis = match policy.store {
            StoreKind::Local => None,
            StoreKind::Redis => {
                let backend = redis.ok_or(RateLimitError::MissingRedisBackend)?;
                Some((backend, ScriptArgs::new(&gcra)))
            }
        };
        Ok(Self {
            policy_header: headers::policy_header(n, period),
            policy,
            gcra,
            local: Arc::new(LocalStore::default()),
            redis,
            metrics: None,
        })
    }

    /// Use a shared local store (e.g. one for all routes, to bound total memory
    /// with one cap; keys are hashed together with the route so they don't mix).
    pub fn with_local_store(mut self, store: Arc<LocalStore>) -> Self {
        self.local = store;
        self
    }

    /// Count decisions and degraded state in `metrics`.
    pub fn with_metrics(mut self, metrics: ResilienceMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The policy this limiter enforces.
    pub fn policy(&self) -> &RateLimitPolicy {
        &self.policy
    }

    /// The GCRA parameters derived from the policy.
    pub fn gcra(&self) -> &Gcra {
        &self.gcra
    }

    /// Check and count one request of `key` on `route`, now.
    pub async fn check(&self, route: &str, key: &str) -> Decision {
        self.check_at(route, key, Instant::now()).await
    }

    /// Check and count one request of `key` on `route` that arrived at `arrived`. The request
    /// path passes the arrival time it already read: GCRA is defined on arrival times, and a
    /// decision then reads no clock (on this machine a clock read waits for the table's cache
    /// miss, which doubled the decision's cost; see benches/resilience.rs). The Redis store keeps
    /// Redis' own clock, shared by every replica.
    pub async fn check_at(&self, route: &str, key: &str, arrived: Instant) -> Decision {
        let decision = match &self.redis {
            None => self.local.check_at(&self.gcra, route, key, arrived),
            Some((backend, args)) => {
                let d = match backend.check(&self.gcra, args, route, key).await {
                    Some(d) => d,
                    None => self.fallback(route, key, arrived),
                };
                if let Some(m) = &self.metrics {
                    m.set_ratelimit_degraded(route, d.degraded);
                }
                d
            }
        };
        if let Some(m) = &self.metrics {
            m.ratelimit_decision(route, decision.allowed);
        }
        decision
    }

    fn fallback(&self, route: &str, key: &str, arrived: Instant) -> Decision {
        let limit = self.gcra.limit();
        let d = match self.policy.on_store_error {
            OnStoreError::Local => self.local.check_at(&self.gcra, route, key, arrived),
            OnStoreError::Allow => Decision {
                allowed: true,
                limit,
                remaining: limit - 1,
                reset_after: Duration::ZERO,
                retry_after: None,
                degraded: true,
            },
            OnStoreError::Deny => Decision {
                allowed: false,
                limit,
                remaining: 0,
                reset_after: DENY_RETRY_AFTER,
                retry_after: Some(DENY_RETRY_AFTER),
                degraded: true,
            },
        };
        Decision {
            degraded: true,
            ..d
        }
    }

    /// Response headers for a decision: `RateLimit-Policy`, `RateLimit` and, when
    /// limited, `Retry-After` (see [`RateLimitHeaders`]).
    pub fn headers(&self, d: &Decision) -> RateLimitHeaders {
        headers::build(&self.policy_header, d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(store: StoreKind, on_err: OnStoreError) -> RateLimitPolicy {
        RateLimitPolicy {
            rate_per: (10, Duration::from_secs(1)),
            burst: 2,
            store,
            on_store_error: on_err,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn local_mode() {
        let rl = RateLimiter::new(policy(StoreKind::Local, OnStoreError::Local), None)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut allowed = 0;
        for _ in 0..10 {
            let d = rl.check("r", "k").await;
            assert!(!d.degraded);
            allowed += u32::from(d.allowed);
        }
        assert_eq!(allowed, 3);
    }

    #[test]
    fn redis_mode_requires_backend() {
        assert_eq!(
            RateLimiter::new(policy(StoreKind::Redis, OnStoreError::Local), None).err(),
            Some(RateLimitError::MissingRedisBackend)
        );
        let bad = RateLimitPolicy {
            rate_per: (0, Duration::from_secs(1)),
            ..policy(StoreKind::Local, OnStoreError::Local)
        };
        assert_eq!(
            RateLimiter::new(bad, None).err(),
            Some(RateLimitError::Gcra(GcraError::ZeroRate))
        );
    }

    async fn unreachable(on_err: OnStoreError) -> RateLimiter {
        let cfg = RedisBackendConfig {
            url: "redis://127.0.0.1:1".to_owned(),
            ..RedisBackendConfig::default()
        };
        let backend = RedisLimiterBackend::new(cfg, None).unwrap_or_else(|e| panic!("{e}"));
        RateLimiter::new(policy(StoreKind::Redis, on_err), Some(backend))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn fallbacks_are_degraded() {
        let rl = unreachable(OnStoreError::Local).await;
        let ds: Vec<_> = collect_n(&rl, 5).await;
        assert!(ds.iter().all(|d| d.degraded));
        assert_eq!(ds.iter().filter(|d| d.allowed).count(), 3, "local bucket");

        let rl = unreachable(OnStoreError::Allow).await;
        assert!(
            collect_n(&rl, 50)
                .await
                .iter()
                .all(|d| d.allowed && d.degraded)
        );

        let rl = unreachable(OnStoreError::Deny).await;
        let ds = collect_n(&rl, 5).await;
        assert!(ds.iter().all(|d| !d.allowed && d.degraded));
        assert_eq!(ds[0].retry_after, Some(DENY_RETRY_AFTER));
    }

    async fn collect_n(rl: &RateLimiter, n: usize) -> Vec<Decision> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(rl.check("r", "k").await);
        }
        v
    }

    #[test]
    fn check_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let rl = RateLimiter::new(policy(StoreKind::Local, OnStoreError::Local), None)
            .unwrap_or_else(|e| panic!("{e}"));
        let fut = rl.check("r", "k");
        assert_send(&fut);
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<RateLimiter>();
        assert_sync::<RedisLimiterBackend>();
        assert_sync::<crate::CircuitBreaker>();
    }
}
