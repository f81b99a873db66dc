//! Redis-backed GCRA store shared by all gateway replicas.
//!
//! * One Lua script does the whole decision with Redis's own `TIME`, so every
//!   replica uses one clock and a decision costs one round trip (`EVALSHA`; the
//!   script is loaded on connect and `redis::Script` reloads it on `NOSCRIPT`).
//! * One multiplexed connection per process, shared by every route.
//! * A strict latency budget per decision (`tokio::time::timeout`).
//! * A small [`CircuitBreaker`] on Redis itself: 3 consecutive errors or timeouts
//!   (or at once on a broken connection) open it for 500 ms, then a single probe at
//!   a time tests Redis. While it is open, or while disconnected, decisions do not
//!   touch Redis at all and the caller falls back (see `OnStoreError`).
//! * Connecting never blocks a request: a background task (re)connects with
//!   backoff while decisions fall back immediately.
//!
//! A decision that exceeded the budget was already sent: Redis may still apply it
//! (consuming one unit) after the caller fell back. Under a stall this errs towards
//! limiting, never towards admitting more than the policy.

use super::gcra::{Decision, Gcra};
use crate::breaker::{Admission, BreakerPolicy, BreakerState, CircuitBreaker, Outcome};
use crate::metrics::ResilienceMetrics;
use parking_lot::RwLock;
use redis::aio::MultiplexedConnection;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// Keys longer than this are replaced by their SHA-256 (hex, 128 bits) so a
/// client-controlled key cannot bloat Redis memory or a request.
const MAX_RAW_KEY: usize = 128;

/// GCRA in Lua. Times are microseconds (Redis `TIME` resolution) held in doubles:
/// exact integers up to 2^53 µs, i.e. ±0.25 µs of precision at today's epoch, which
/// is ample for rates below ~100k/s per key. Stored with `%.17g` so no precision
/// is lost between calls. Returns `{allowed (0|1), ahead_ns}` where `ahead_ns` is
/// `TAT_after - now`, from which [`Gcra::decision`] derives the full decision.
const SCRIPT: &str = r"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local ahead = tat - now
if ahead > tolerance then
  return {0, math.floor(ahead * 1000)}
end
tat = tat + interval
ahead = tat - now
redis.call('SET', KEYS[1], string.format('%.17g', tat), 'PX', math.max(1, math.ceil(ahead / 1000)))
return {1, math.floor(ahead * 1000)}
";

/// Settings of the shared Redis backend.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisBackendConfig {
    /// `redis://host:port/db` (or `rediss://` if the redis crate's TLS is enabled).
    pub url: String,
    /// Latency budget for one decision; past it the request falls back.
    pub timeout: Duration,
    /// Budget for one connection attempt by the background task.
    pub connect_timeout: Duration,
    /// Key prefix; keys are `{prefix}:{route}:{key}`.
    pub key_prefix: String,
    /// Consecutive errors/timeouts that open the Redis breaker.
    pub errors_to_trip: u32,
    /// How long the Redis breaker stays open before probing (doubles up to `max_open_for`).
    pub open_for: Duration,
    /// Cap for the Redis breaker's open period.
    pub max_open_for: Duration,
    /// First reconnect delay; doubles per failed attempt up to `max_reconnect_backoff`.
    pub min_reconnect_backoff: Duration,
    /// Longest delay between reconnect attempts (bounds recovery time).
    pub max_reconnect_backoff: Duration,
}

impl Default for RedisBackendConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            timeout: Duration::from_millis(5),
            connect_timeout: Duration::from_secs(1),
            key_prefix: "flexgate:rl".to_owned(),
            errors_to_trip: 3,
            open_for: Duration::from_millis(500),
            max_open_for: Duration::from_secs(2),
            min_reconnect_backoff: Duration::from_millis(50),
            max_reconnect_backoff: Duration::from_secs(1),
        }
    }
}

/// Why the backend could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RedisBackendError {
    /// The URL did not parse.
    #[error("invalid redis url: {0}")]
    Url(#[source] redis::RedisError),
    /// Must be created inside a tokio runtime (it spawns its reconnect task).
    #[error("RedisLimiterBackend::new must be called within a tokio runtime")]
    NoRuntime,
}

/// Per-policy script arguments, formatted once (µs as decimal strings).
#[derive(Debug, Clone)]
pub(crate) struct ScriptArgs {
    interval_us: String,
    tolerance_us: String,
}

impl ScriptArgs {
    pub(crate) fn new(gcra: &Gcra) -> Self {
        let us = |ns: u64| format!("{}", ns as f64 / 1000.0);
        Self {
            interval_us: us(gcra.interval_ns()),
            tolerance_us: us(gcra.tolerance_ns()),
        }
    }
}

struct Inner {
    client: redis::Client,
    /// Current connection and its generation (so a stale failure cannot drop a
    /// newer connection). `None` while disconnected.
    conn: RwLock<Option<(u64, MultiplexedConnection)>>,
    wake: Arc<Notify>,
    breaker: CircuitBreaker,
    script: redis::Script,
    cfg: RedisBackendConfig,
    metrics: Option<ResilienceMetrics>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Let the reconnect task notice that the backend is gone.
        self.wake.notify_one();
    }
}

impl Inner {
    fn store_error(&self) {
        if let Some(m) = &self.metrics {
            m.ratelimit_store_error("redis");
        }
    }

    fn drop_connection(&self, generation: u64) {
        let mut conn = self.conn.write();
        if conn.as_ref().is_some_and(|(g, _)| *g == generation) {
            *conn = None;
            self.wake.notify_one();
        }
    }
}

/// The process-wide Redis store, shared by every route's [`super::RateLimiter`].
/// Cheap to clone.
#[derive(Clone)]
pub struct RedisLimiterBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisLimiterBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiterBackend")
            .field("cfg", &self.inner.cfg)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl RedisLimiterBackend {
    /// Create the backend and start connecting in the background; returns at once.
    ///
    /// Store errors (failed decisions and failed connection attempts) are counted
    /// in `metrics` if given.
    pub fn new(
        cfg: RedisBackendConfig,
        metrics: Option<ResilienceMetrics>,
    ) -> Result<Self, RedisBackendError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| RedisBackendError::NoRuntime)?;
        let client = redis::Client::open(cfg.url.as_str()).map_err(RedisBackendError::Url)?;
        let breaker = CircuitBreaker::new(BreakerPolicy {
            consecutive_failures: Some(cfg.errors_to_trip.max(1)),
            failure_rate: None,
            open_for: cfg.open_for,
            max_open_for: cfg.max_open_for.max(cfg.open_for),
            half_open_probes: 1,
        });
        let wake = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            client,
            conn: RwLock::new(None),
            wake: wake.clone(),
            breaker,
            script: redis::Script::new(SCRIPT),
            cfg,
            metrics,
        });
        runtime.spawn(reconnect_loop(Arc::downgrade(&inner), wake));
        Ok(Self { inner })
    }

    /// Whether a connection is currently established.
    pub fn is_connected(&self) -> bool {
        self.inner.conn.read().is_some()
    }

    /// State of the breaker that guards Redis.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    /// The configuration in use.
    pub fn config(&self) -> &RedisBackendConfig {
        &self.inner.cfg
    }

    /// Redis key for `route`/`key`: `{prefix}:{route}:{key}`, with keys over 128
    /// bytes replaced by `#` and 32 hex digits of their SHA-256 (a stable digest:
    /// every replica must derive the same key).
    pub fn redis_key(&self, route: &str, key: &str) -> String {
        redis_key(&self.inner.cfg.key_prefix, route, key)
    }

    /// One decision from Redis, or `None` when the caller must fall back (not
    /// connected, breaker open, error, or budget exceeded).
    pub(crate) async fn check(
        &self,
        gcra: &Gcra,
        args: &ScriptArgs,
        route: &str,
        key: &str,
    ) -> Option<Decision> {
        let inner = &*self.inner;
        let (generation, mut conn) = inner.conn.read().clone()?;
        let admission = inner.breaker.try_acquire();
        if let Admission::Rejected { .. } = admission {
            return None;
        }
        let mut invocation = inner.script.key(self.redis_key(route, key));
        invocation.arg(&args.interval_us).arg(&args.tolerance_us);
        let call = invocation.invoke_async::<(i64, i64)>(&mut conn);
        match tokio::time::timeout(inner.cfg.timeout, call).await {
            Ok(Ok((allowed, ahead_ns))) => {
                inner.breaker.record(&admission, Outcome::Success);
                Some(gcra.decision(allowed == 1, u64::try_from(ahead_ns).unwrap_or(0)))
            }
            Ok(Err(e)) => {
                inner.store_error();
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    tracing::warn!(error = %e, "redis rate limit store: connection lost");
                    inner.drop_connection(generation);
                    inner.breaker.record(&admission, Outcome::Failure);
                    inner.breaker.trip();
                } else {
                    tracing::warn!(error = %e, "redis rate limit store: error");
                    inner.breaker.record(&admission, Outcome::Failure);
                }
                None
            }
            Err(_elapsed) => {
                inner.store_error();
                tracing::debug!(budget = ?inner.cfg.timeout, "redis rate limit store: timeout");
                inner.breaker.record(&admission, Outcome::Failure);
                None
            }
        }
    }
}

fn redis_key(prefix: &str, route: &str, key: &str) -> String {
    if key.len() <= MAX_RAW_KEY {
        return format!("{prefix}:{route}:{key}");
    }
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(prefix.len() + route.len() + 35);
    out.push_str(prefix);
    out.push(':');
    out.push_str(route);
    out.push_str(":#");
    for b in &digest[..16] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

/// Keeps one connection up. Holds only a `Weak` while idle so dropping the last
/// backend handle ends the task (the `Drop` of `Inner` wakes it).
async fn reconnect_loop(weak: Weak<Inner>, wake: Arc<Notify>) {
    let mut generation = 0u64;
    let mut backoff = None;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.conn.read().is_some() {
            drop(inner);
            wake.notified().await;
            continue;
        }
        let min = inner.cfg.min_reconnect_backoff;
        let max = inner.cfg.max_reconnect_backoff.max(min);
        match connect(&inner).await {
            Ok(conn) => {
                generation += 1;
                *inner.conn.write() = Some((generation, conn));
                backoff = None;
                tracing::info!(url = %inner.cfg.url, "redis rate limit store connected");
            }
            Err(e) => {
                inner.store_error();
                let delay: Duration = backoff.map_or(min, |d: Duration| (d * 2).min(max));
                backoff = Some(delay);
                tracing::warn!(error = %e, retry_in = ?delay, "redis rate limit store: connect failed");
                drop(inner);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn connect(inner: &Inner) -> Result<MultiplexedConnection, redis::RedisError> {
    let budget = inner.cfg.connect_timeout;
    let attempt = async {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(budget))
            .set_response_timeout(None);
        let mut conn = inner
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        // Preload so the hot path is a single EVALSHA round trip.
        inner.script.prepare_invoke().load_async(&mut conn).await?;
        Ok(conn)
    };
    match tokio::time::timeout(budget, attempt).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connect timed out",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_and_stable() {
        assert_eq!(redis_key("flexgate:rl", "r", "abc"), "flexgate:rl:r:abc");
        let long = "x".repeat(129);
        let k = redis_key("flexgate:rl", "r", &long);
        assert_eq!(k.len(), "flexgate:rl:r:#".len() + 32);
        assert_eq!(k, redis_key("flexgate:rl", "r", &long));
        assert_ne!(k, redis_key("flexgate:rl", "r", &"x".repeat(130)));
        let exact = "y".repeat(128);
        assert!(redis_key("p", "r", &exact).ends_with(&exact));
    }

    #[test]
    fn script_args_in_microseconds() {
        let g = Gcra::new(3, Duration::from_secs(1), 2).unwrap_or_else(|e| panic!("{e}"));
        let a = ScriptArgs::new(&g);
        assert_eq!(a.interval_us, "333333.333");
        assert_eq!(a.tolerance_us, "666666.666");
    }

    #[test]
    fn new_outside_runtime_is_an_error() {
        assert!(matches!(
            RedisLimiterBackend::new(RedisBackendConfig::default(), None),
            Err(RedisBackendError::NoRuntime)
        ));
    }

    #[tokio::test]
    async fn invalid_url_is_an_error() {
        let cfg = RedisBackendConfig {
            url: "not a url".to_owned(),
            ..RedisBackendConfig::default()
        };
        assert!(matches!(
            RedisLimiterBackend::new(cfg, None),
            Err(RedisBackendError::Url(_))
        ));
    }

    #[tokio::test]
    async fn unreachable_redis_never_blocks() {
        // Port 1 on loopback: connection refused.
        let cfg = RedisBackendConfig {
            url: "redis://127.0.0.1:1".to_owned(),
            ..RedisBackendConfig::default()
        };
        let b = RedisLimiterBackend::new(cfg, None).unwrap_or_else(|e| panic!("{e}"));
        let g = Gcra::new(10, Duration::from_secs(1), 0).unwrap_or_else(|e| panic!("{e}"));
        let args = ScriptArgs::new(&g);
        let start = std::time::Instant::now();
        for _ in 0..100 {
            assert_eq!(b.check(&g, &args, "r", "k").await, None);
        }
        assert!(start.elapsed() < Duration::from_millis(50));
        assert!(!b.is_connected());
    }
}
