//! Native resilience on the data path, wired from the config: a circuit breaker per upstream target,
//! an in-flight cap per upstream, a rate limiter per route (local or shared through Redis).
//!
//! [`Resilience`] lives in [`SharedState`](crate::snapshot::SharedState) (one per process): it owns
//! the one [`ResilienceMetrics`], the one Redis backend, and the state that must survive reloads
//! (breakers sit in their [`TargetState`]; in-flight counters and limiters are kept here, keyed by
//! upstream and route name, and reused while their policy is unchanged). Each snapshot's
//! [`Upstream`](crate::upstream::Upstream) carries an [`UpstreamResilience`]: plain `Arc`s, so the
//! request path takes no lock to reach a breaker.
//!
//! The admin API reads and resets breakers through [`Gateway::breakers`], [`Gateway::breaker`] and
//! [`Gateway::reset_breaker`]; readiness reports Redis through [`Gateway::redis_status`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use flexgate_config::{self as config, Config};
use flexgate_resilience::{
    Admission, AttemptResult, BreakerMetrics, BreakerPolicy, BreakerSnapshot, BreakerState,
    CircuitBreaker, FailureClassifier, FailureOn, FailureRatePolicy, InFlightGuard, InFlightLimit,
    RedisBackendConfig, RedisLimiterBackend, RejectReason, ResilienceMetrics, Transition,
    TransitionObserver,
};
use parking_lot::Mutex;
use prometheus::Registry;

use crate::error::{ErrorKind, ProxyError};
use crate::gateway::Gateway;
use crate::limit::RouteLimit;
use crate::snapshot::BuildError;
use crate::upstream::TargetState;

/// Process-wide resilience state (see the module docs).
pub struct Resilience {
    pub metrics: ResilienceMetrics,
    /// In-flight counters per upstream name, so requests that started under an older snapshot still
    /// count against the cap after a reload.
    in_flight: Mutex<HashMap<String, InFlightLimit>>,
    /// Rate limiters per route name, reused while the route's policy (and Redis settings) are unchanged.
    limiters: Mutex<HashMap<String, Arc<RouteLimit>>>,
    /// The one Redis backend, present while some route uses `store: redis`.
    redis: Mutex<Option<(config::Redis, RedisLimiterBackend)>>,
    /// `(upstream, target)` pairs with a breaker gauge, to drop the series of removed ones.
    breaker_series: Mutex<HashSet<(String, String)>>,
}

impl Resilience {
    /// Registers the resilience metrics on `registry` (the process registry of `CoreMetrics`).
    pub fn new(registry: &Registry) -> Self {
        let metrics = match ResilienceMetrics::new(registry) {
            Ok(m) => m,
            Err(e) => {
                // Only a second registration on the same registry can fail; keep working unexported.
                tracing::error!(error = %e, "resilience metrics cannot be registered; they are not exported");
                ResilienceMetrics::new(&Registry::new())
                    .expect("a fresh registry accepts the resilience metrics")
            }
        };
        Self {
            metrics,
            in_flight: Mutex::default(),
            limiters: Mutex::default(),
            redis: Mutex::default(),
            breaker_series: Mutex::default(),
        }
    }

    /// Per reload, before routes are compiled: forgets state of removed upstreams, targets and routes,
    /// and creates (or replaces, or drops) the Redis backend as the routes need it.
    pub fn configure(&self, config: &Config) -> Result<(), BuildError> {
        self.in_flight.lock().retain(|name, _| {
            config
                .upstreams
                .iter()
                .any(|u| &u.name == name && u.max_in_flight.is_some())
        });
        self.breaker_series.lock().retain(|(up, addr)| {
            let keep = config.upstreams.iter().any(|u| {
                &u.name == up
                    && u.circuit_breaker.is_some()
                    && u.targets.iter().any(|t| &t.addr == addr)
            });
            if !keep {
                self.metrics.forget_target(up, addr);
            }
            keep
        });
        self.limiters.lock().retain(|name, _| {
            config
                .routes
                .iter()
                .any(|r| &r.name == name && r.rate_limit.is_some())
        });
        let needs_redis = config.routes.iter().any(|r| {
            r.rate_limit
                .as_ref()
                .is_some_and(|l| l.store == config::RateLimitStore::Redis)
        });
        let mut redis = self.redis.lock();
        if !needs_redis {
            *redis = None;
            return Ok(());
        }
        let Some(cfg) = &config.redis else {
            return Err(BuildError(
                "a route uses rate_limit.store: redis but there is no top-level `redis`".into(),
            ));
        };
        if redis.as_ref().is_some_and(|(c, _)| c == cfg) {
            return Ok(());
        }
        let backend_cfg = RedisBackendConfig {
            url: cfg.url.clone(),
            timeout: cfg.timeout.0,
            ..RedisBackendConfig::default()
        };
        let backend = RedisLimiterBackend::new(backend_cfg, Some(self.metrics.clone()))
            .map_err(|e| BuildError(format!("redis: {e}")))?;
        *redis = Some((cfg.clone(), backend));
        Ok(())
    }

    /// The breakers, failure classifier and in-flight cap of one upstream, for its snapshot. Breakers
    /// are created on first sight of a target and kept (policy updated in place) across reloads.
    pub fn upstream(
        &self,
        u: &config::Upstream,
        targets: &[Arc<TargetState>],
    ) -> UpstreamResilience {
        let policy = u.circuit_breaker.as_ref().map(breaker_policy);
        let mut series = self.breaker_series.lock();
        let breakers = targets
            .iter()
            .map(|t| {
                let b = t.configure_breaker(policy.clone(), |p| {
                    let observer = BreakerObserver {
                        metrics: self.metrics.breaker(&u.name, &t.addr),
                        upstream: Arc::from(u.name.as_str()),
                        target: t.addr.clone(),
                    };
                    CircuitBreaker::new(p).with_observer(Arc::new(observer))
                });
                let key = (u.name.clone(), t.addr.to_string());
                if b.is_some() {
                    series.insert(key);
                } else if series.remove(&key) {
                    self.metrics.forget_target(&u.name, &t.addr);
                }
                b
            })
            .collect();
        let in_flight = u.max_in_flight.map(|max| {
            let mut caps = self.in_flight.lock();
            let cap = caps
                .entry(u.name.clone())
                .or_insert_with(|| InFlightLimit::new(max));
            cap.set_max(max);
            cap.clone()
        });
        if in_flight.is_none() {
            self.in_flight.lock().remove(&u.name);
        }
        UpstreamResilience {
            name: Arc::from(u.name.as_str()),
            breakers,
            classifier: u
                .circuit_breaker
                .as_ref()
                .map_or_else(FailureClassifier::default, |cb| {
                    FailureClassifier::new(cb.failure_on.iter().map(|f| match *f {
                        config::FailureOn::ConnectFailure => FailureOn::ConnectFailure,
                        config::FailureOn::Timeout => FailureOn::Timeout,
                        config::FailureOn::Class(c) => FailureOn::Class(c),
                        config::FailureOn::Status(s) => FailureOn::Status(s),
                    }))
                }),
            in_flight,
            metrics: Some(self.metrics.clone()),
        }
    }

    /// The rate limiter of route `r`, reused from the previous snapshot when its policy and the Redis
    /// settings are unchanged (so buckets survive reloads). Call after [`configure`](Self::configure).
    pub fn route_limit(&self, r: &config::Route) -> Result<Option<Arc<RouteLimit>>, BuildError> {
        let Some(rl) = &r.rate_limit else {
            self.limiters.lock().remove(&r.name);
            return Ok(None);
        };
        let redis = match rl.store {
            config::RateLimitStore::Local => None,
            config::RateLimitStore::Redis => self.redis.lock().clone(),
        };
        let mut limiters = self.limiters.lock();
        if let Some(existing) = limiters.get(&r.name)
            && existing.built_from(rl, redis.as_ref().map(|(c, _)| c))
        {
            return Ok(Some(existing.clone()));
        }
        let limit = RouteLimit::new(&r.name, rl, redis, &self.metrics)
            .map_err(|e| BuildError(format!("route {:?}: rate_limit: {e}", r.name)))?;
        let limit = Arc::new(limit);
        limiters.insert(r.name.clone(), limit.clone());
        Ok(Some(limit))
    }

    /// Redis as the rate limiter sees it; `None` while no route uses `store: redis`.
    pub fn redis_status(&self) -> Option<RedisStatus> {
        let redis = self.redis.lock();
        let (_, backend) = redis.as_ref()?;
        let connected = backend.is_connected();
        let breaker = backend.breaker_state();
        Some(RedisStatus {
            connected,
            breaker,
            degraded: !connected || breaker != BreakerState::Closed,
        })
    }
}

/// Redis reachability for `/health/ready` (informational: a degraded gateway still serves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisStatus {
    /// A connection is established.
    pub connected: bool,
    /// The breaker that guards Redis (open: decisions use `on_store_error` without asking Redis).
    pub breaker: BreakerState,
    /// Decisions currently bypass Redis.
    pub degraded: bool,
}

fn breaker_policy(cb: &config::CircuitBreaker) -> BreakerPolicy {
    BreakerPolicy {
        consecutive_failures: cb.consecutive_failures,
        failure_rate: cb.failure_rate.map(|f| FailureRatePolicy {
            threshold: f.threshold,
            window: f.window.0,
            min_requests: f.min_requests,
        }),
        open_for: cb.open_for.0,
        max_open_for: cb.max_open_for.0,
        half_open_probes: cb.half_open_probes,
    }
}

/// Metrics plus a log line per transition.
struct BreakerObserver {
    metrics: BreakerMetrics,
    upstream: Arc<str>,
    target: Arc<str>,
}

impl TransitionObserver for BreakerObserver {
    fn on_transition(&self, t: Transition) {
        self.metrics.on_transition(t);
        let (upstream, target) = (&*self.upstream, &*self.target);
        let (from, to) = (t.from.as_str(), t.to.as_str());
        if t.to == BreakerState::Open {
            tracing::warn!(upstream, target, from, to, "circuit breaker opened");
        } else {
            tracing::info!(upstream, target, from, to, "circuit breaker changed state");
        }
    }
}

/// One upstream's breakers (indexed like its targets), failure classifier and in-flight cap, as
/// compiled into a snapshot.
pub struct UpstreamResilience {
    name: Arc<str>,
    breakers: Box<[Option<Arc<CircuitBreaker>>]>,
    classifier: FailureClassifier,
    in_flight: Option<InFlightLimit>,
    metrics: Option<ResilienceMetrics>,
}

impl Default for UpstreamResilience {
    /// No breaker, no cap.
    fn default() -> Self {
        Self {
            name: Arc::from(""),
            breakers: Box::new([]),
            classifier: FailureClassifier::default(),
            in_flight: None,
            metrics: None,
        }
    }
}

impl UpstreamResilience {
    /// The breaker of target `i`, if the upstream configures breakers.
    #[inline]
    pub fn breaker(&self, i: usize) -> Option<&CircuitBreaker> {
        self.breakers.get(i).and_then(Option::as_deref)
    }

    /// Balancer filter: false while target `i`'s circuit is open (an open target gets no connection
    /// attempt). Half-open passes; [`acquire`](Self::acquire) then limits the probes.
    #[inline]
    pub fn may_admit(&self, i: usize) -> bool {
        self.breaker(i)
            .is_none_or(|b| b.state() != BreakerState::Open)
    }

    /// Asks target `i`'s breaker for this attempt; hand the admission back to [`record`](Self::record).
    #[inline]
    pub fn acquire(&self, i: usize) -> Admission {
        self.breaker(i)
            .map_or(Admission::Allowed, CircuitBreaker::try_acquire)
    }

    /// Feeds an attempt's result to target `i`'s breaker, classified by the upstream's `failure_on`.
    #[inline]
    pub fn record(&self, i: usize, admission: &Admission, result: AttemptResult) {
        if let Some(b) = self.breaker(i) {
            b.record(admission, self.classifier.outcome(&result));
        }
    }

    /// Takes an in-flight slot; `Err` (503) when the upstream is at `max_in_flight`.
    #[inline]
    pub fn enter(&self) -> Result<Option<InFlightGuard>, ProxyError> {
        let Some(cap) = &self.in_flight else {
            return Ok(None);
        };
        match cap.try_acquire() {
            Some(g) => Ok(Some(g)),
            None => {
                if let Some(m) = &self.metrics {
                    m.upstream_rejected(&self.name, RejectReason::MaxInFlight);
                }
                Err(ProxyError::upstream(
                    ErrorKind::Unavailable {
                        retry_after_secs: 1,
                        reason: "max_in_flight reached",
                    },
                    false,
                ))
            }
        }
    }

    /// The answer when no target could be attempted: every circuit open (503 with the time until the
    /// first breaker admits again as `Retry-After`), or no target at all.
    pub fn no_target(&self) -> ProxyError {
        if self.breakers.iter().all(Option::is_none) {
            return ProxyError::upstream(
                ErrorKind::Unavailable {
                    retry_after_secs: 1,
                    reason: "no target available",
                },
                false,
            );
        }
        if let Some(m) = &self.metrics {
            m.upstream_rejected(&self.name, RejectReason::CircuitOpen);
        }
        let wait = self
            .breakers
            .iter()
            .flatten()
            .map(|b| b.snapshot().retry_after.unwrap_or(Duration::from_secs(1)))
            .min()
            .unwrap_or(Duration::from_secs(1));
        ProxyError::upstream(
            ErrorKind::Unavailable {
                retry_after_secs: ceil_secs(wait),
                reason: "the circuit breaker of every target is open",
            },
            false,
        )
    }
}

/// Whole seconds, rounded up, at least 1 (`Retry-After` granularity).
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// One target's breaker, for the admin API.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerInfo {
    pub upstream: Arc<str>,
    pub target: Arc<str>,
    /// `Closed` for a target whose upstream configures no breaker.
    pub state: BreakerState,
    /// Failures / requests in the breaker's sliding window (0 without `failure_rate` or requests).
    pub failure_rate: f64,
    /// Active health verdict and passive-health ejection combined.
    pub healthy: bool,
    /// Counters and timing; `None` when the upstream configures no breaker.
    pub detail: Option<BreakerSnapshot>,
}

impl BreakerInfo {
    fn of(upstream: &str, t: &TargetState, breaker: Option<&CircuitBreaker>) -> Self {
        let detail = breaker.map(CircuitBreaker::snapshot);
        let failure_rate = detail.as_ref().map_or(0.0, |d| {
            if d.window_requests == 0 {
                0.0
            } else {
                d.window_failures as f64 / d.window_requests as f64
            }
        });
        Self {
            upstream: Arc::from(upstream),
            target: t.addr.clone(),
            state: detail.as_ref().map_or(BreakerState::Closed, |d| d.state),
            failure_rate,
            healthy: t.is_available(crate::upstream::now_nanos()),
            detail,
        }
    }
}

/// The internal API the admin endpoints use.
impl Gateway {
    /// Every target of every upstream of the running config, in config order, with breaker state.
    pub fn breakers(&self) -> Vec<BreakerInfo> {
        let snap = self.snapshot();
        let mut out = Vec::new();
        for u in &snap.config.upstreams {
            if let Some(up) = snap.upstreams.get(&u.name) {
                for (i, t) in up.targets.iter().enumerate() {
                    out.push(BreakerInfo::of(&u.name, t, up.resilience.breaker(i)));
                }
            }
        }
        out
    }

    /// One target's breaker; `None` when the running config has no such upstream or target.
    pub fn breaker(&self, upstream: &str, target: &str) -> Option<BreakerInfo> {
        let snap = self.snapshot();
        let up = snap.upstreams.get(upstream)?;
        let i = up.targets.iter().position(|t| &*t.addr == target)?;
        Some(BreakerInfo::of(
            upstream,
            &up.targets[i],
            up.resilience.breaker(i),
        ))
    }

    /// Closes one target's breaker by hand (clearing its counters and open backoff). `false` when the
    /// running config has no such upstream or target; a target without a breaker is trivially closed.
    pub fn reset_breaker(&self, upstream: &str, target: &str) -> bool {
        let snap = self.snapshot();
        let Some(up) = snap.upstreams.get(upstream) else {
            return false;
        };
        let Some(i) = up.targets.iter().position(|t| &*t.addr == target) else {
            return false;
        };
        if let Some(b) = up.resilience.breaker(i) {
            b.reset();
            tracing::info!(upstream, target, "circuit breaker reset by hand");
        }
        true
    }

    /// Redis reachability, when a route of the running config uses `store: redis`.
    pub fn redis_status(&self) -> Option<RedisStatus> {
        self.shared.resilience.redis_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flexgate_telemetry::CoreMetrics;

    fn config(breaker: &str, rate: &str) -> Config {
        let text = format!(
            "version: 1\nlisten: 127.0.0.1:0\nupstreams:\n  - name: up\n    targets:\n      - addr: \"127.0.0.1:9\"\n      - addr: \"127.0.0.1:10\"\n{breaker}routes:\n  - name: r\n    upstream: up\n    rate_limit: {{ rate: {rate} }}\n"
        );
        flexgate_config::parse(&text, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    const BREAKER: &str =
        "    circuit_breaker:\n      consecutive_failures: 2\n      open_for: 30s\n";

    async fn gateway(cfg: Config) -> Arc<Gateway> {
        let metrics = CoreMetrics::new("test").unwrap_or_else(|e| panic!("{e}"));
        Gateway::new(cfg, metrics, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn limit_of(gw: &Gateway) -> Option<Arc<RouteLimit>> {
        gw.snapshot()
            .router
            .routes()
            .next()
            .and_then(|r| r.rate_limit.clone())
    }

    #[tokio::test]
    async fn admin_api_reads_and_resets_breakers() {
        let gw = gateway(config(BREAKER, "10/s")).await;
        let all = gw.breakers();
        assert_eq!(all.len(), 2);
        assert!(
            all.iter()
                .all(|b| b.state == BreakerState::Closed && &*b.upstream == "up")
        );
        let snap = gw.snapshot();
        let up = snap
            .upstreams
            .get("up")
            .unwrap_or_else(|| panic!("upstream"));
        let b = up
            .resilience
            .breaker(0)
            .unwrap_or_else(|| panic!("breaker"));
        for _ in 0..2 {
            let a = b.try_acquire();
            b.record(&a, flexgate_resilience::Outcome::Failure);
        }
        let info = gw
            .breaker("up", "127.0.0.1:9")
            .unwrap_or_else(|| panic!("info"));
        assert_eq!(info.state, BreakerState::Open);
        assert!(info.detail.is_some_and(|d| d.consecutive_failures == 2));
        assert!(!up.resilience.may_admit(0) && up.resilience.may_admit(1));
        assert!(gw.reset_breaker("up", "127.0.0.1:9"));
        assert_eq!(
            gw.breaker("up", "127.0.0.1:9").map(|b| b.state),
            Some(BreakerState::Closed)
        );
        assert!(!gw.reset_breaker("up", "127.0.0.1:1"));
        assert!(!gw.reset_breaker("nope", "127.0.0.1:9"));
        assert!(gw.breaker("nope", "127.0.0.1:9").is_none());
        assert!(gw.redis_status().is_none(), "no route uses redis");
    }

    #[tokio::test]
    async fn reloads_keep_unchanged_state_and_apply_changes() {
        let gw = gateway(config(BREAKER, "10/s")).await;
        let breaker = |gw: &Gateway| {
            gw.snapshot()
                .upstreams
                .get("up")
                .and_then(|u| u.targets[0].breaker())
        };
        let first = breaker(&gw).unwrap_or_else(|| panic!("breaker"));
        first.trip();
        let limit = limit_of(&gw).unwrap_or_else(|| panic!("limit"));

        // Same upstream and route policy: the very same breaker (still open) and limiter.
        let changed = BREAKER.replace("30s", "40s");
        gw.reload(config(&changed, "10/s"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let again = breaker(&gw).unwrap_or_else(|| panic!("breaker"));
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(again.state(), BreakerState::Open);
        assert!(limit_of(&gw).is_some_and(|l| Arc::ptr_eq(&l, &limit)));

        // A new rate: a new limiter. No breaker: none, and no gauge.
        gw.reload(config("", "20/s"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(limit_of(&gw).is_some_and(|l| !Arc::ptr_eq(&l, &limit)));
        assert!(breaker(&gw).is_none());
        let text = flexgate_telemetry::encode(&gw.shared.metrics.registry);
        assert!(!text.contains("flexgate_circuit_state{"), "{text}");
    }
}
