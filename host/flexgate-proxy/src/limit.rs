//! Per-route rate limiting on the request path: right after routing, before plugins and forwarding.
//!
//! A limited request gets 429 JSON with `Retry-After`; every response of a limited route (admitted or
//! not) carries the IETF `RateLimit-Policy` and `RateLimit` headers
//! (draft-ietf-httpapi-ratelimit-headers). Keys: the client IP, a request header (a missing or
//! non-text header falls back to the client IP), or one bucket for the whole route. Key spaces are
//! prefixed (`ip:`, `h:`) so a header value can never spend another client's IP bucket.
//!
//! Memory stays bounded whatever clients send: the local store has a key cap (see
//! `flexgate_resilience::LocalStore`) and Redis keys over 128 bytes are hashed.

use std::io::Write as _;
use std::net::IpAddr;

use flexgate_config::{self as config, KeySource};
use flexgate_resilience::{
    Decision, OnStoreError, RateLimitError, RateLimitPolicy, RateLimiter, RedisLimiterBackend,
    ResilienceMetrics, StoreKind,
};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::error::{ErrorKind, ProxyError};
use crate::resilience::ceil_secs;

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// One route's compiled `rate_limit`.
pub struct RouteLimit {
    limiter: RateLimiter,
    key: KeySource,
    /// `RateLimit-Policy` never changes for a policy: rendered once.
    policy_header: Option<HeaderValue>,
    /// What it was built from, to reuse it across reloads when unchanged.
    source: (config::RateLimit, Option<config::Redis>),
}

impl std::fmt::Debug for RouteLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteLimit")
            .field("policy", &self.source.0)
            .finish_non_exhaustive()
    }
}

impl RouteLimit {
    /// `redis` is the process's backend (and its settings); required for `store: redis`.
    pub fn new(
        route: &str,
        rl: &config::RateLimit,
        redis: Option<(config::Redis, RedisLimiterBackend)>,
        metrics: &ResilienceMetrics,
    ) -> Result<Self, RateLimitError> {
        let store = match rl.store {
            config::RateLimitStore::Local => StoreKind::Local,
            config::RateLimitStore::Redis => StoreKind::Redis,
        };
        let policy = RateLimitPolicy {
            rate_per: (rl.rate.requests, rl.rate.per),
            burst: rl.burst,
            store,
            on_store_error: match rl.on_store_error {
                config::OnStoreError::Local => OnStoreError::Local,
                config::OnStoreError::Allow => OnStoreError::Allow,
                config::OnStoreError::Deny => OnStoreError::Deny,
            },
        };
        let (redis_cfg, backend) = match redis {
            Some((c, b)) => (Some(c), Some(b)),
            None => (None, None),
        };
        let limiter = RateLimiter::new(policy, backend)?.with_metrics(metrics.clone());
        if store == StoreKind::Redis {
            // Exported from the start, not only after the first request.
            metrics.set_ratelimit_degraded(route, false);
        }
        let rested = limiter.gcra().decision(true, 0);
        let policy_header = HeaderValue::try_from(limiter.headers(&rested).policy).ok();
        Ok(Self {
            limiter,
            key: rl.key.clone(),
            policy_header,
            source: (
                rl.clone(),
                if store == StoreKind::Redis {
                    redis_cfg
                } else {
                    None
                },
            ),
        })
    }

    /// Whether this limiter was built from exactly this policy (and Redis settings).
    pub(crate) fn built_from(&self, rl: &config::RateLimit, redis: Option<&config::Redis>) -> bool {
        self.source.0 == *rl
            && (rl.store == config::RateLimitStore::Local || self.source.1.as_ref() == redis)
    }

    /// Counts this request against its key. Sets `headers` (for the response, whatever it is) and
    /// returns the 429 error when the request is limited.
    pub async fn admit(
        &self,
        route: &str,
        arrived: std::time::Instant,
        client: IpAddr,
        request: &HeaderMap,
        headers: &mut Option<LimitHeaders>,
    ) -> Result<(), ProxyError> {
        let mut ip_buf = [0u8; 64];
        let header_key;
        let key: &str = match &self.key {
            KeySource::Route => "route",
            KeySource::ClientIp => ip_key(client, &mut ip_buf),
            KeySource::Header(name) => {
                match request
                    .get(name.as_str())
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty())
                {
                    Some(v) => {
                        header_key = format!("h:{v}");
                        &header_key
                    }
                    None => ip_key(client, &mut ip_buf),
                }
            }
        };
        let arrived = tokio::time::Instant::from_std(arrived);
        let decision = self.limiter.check_at(route, key, arrived).await;
        *headers = Some(self.headers(&decision));
        if decision.allowed {
            Ok(())
        } else {
            Err(ProxyError::client(ErrorKind::RateLimited {
                retry_after_secs: ceil_secs(decision.retry_after.unwrap_or_default()),
            }))
        }
    }

    fn headers(&self, d: &Decision) -> LimitHeaders {
        LimitHeaders {
            policy: self.policy_header.clone(),
            ratelimit: HeaderValue::try_from(self.limiter.headers(d).ratelimit).ok(),
        }
    }
}

/// `ip:ADDR`, written into `buf` (no allocation).
fn ip_key(ip: IpAddr, buf: &mut [u8; 64]) -> &str {
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "ip:{ip}");
    let len = usize::try_from(cursor.position()).unwrap_or(0);
    std::str::from_utf8(&buf[..len]).unwrap_or("ip:?")
}

/// `RateLimit-Policy` and `RateLimit` for one response.
#[derive(Debug, Clone)]
pub struct LimitHeaders {
    policy: Option<HeaderValue>,
    ratelimit: Option<HeaderValue>,
}

impl LimitHeaders {
    /// Adds the headers to a response (replacing any the upstream sent for the same names).
    pub fn apply(&self, headers: &mut HeaderMap) {
        if let Some(p) = &self.policy {
            headers.insert(RATELIMIT_POLICY.clone(), p.clone());
        }
        if let Some(r) = &self.ratelimit {
            headers.insert(RATELIMIT.clone(), r.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limit(key: KeySource) -> RouteLimit {
        let rl = config::RateLimit {
            key,
            rate: config::Rate {
                requests: 1,
                per: Duration::from_secs(60),
            },
            burst: 0,
            store: config::RateLimitStore::Local,
            on_store_error: config::OnStoreError::Local,
        };
        let metrics =
            ResilienceMetrics::new(&prometheus::Registry::new()).unwrap_or_else(|e| panic!("{e}"));
        RouteLimit::new("r", &rl, None, &metrics).unwrap_or_else(|e| panic!("{e}"))
    }

    async fn admitted(l: &RouteLimit, ip: [u8; 4], h: &[(&'static str, &'static str)]) -> bool {
        let mut map = HeaderMap::new();
        for (n, v) in h {
            map.insert(*n, HeaderValue::from_static(v));
        }
        let mut out = None;
        let r = l
            .admit(
                "r",
                std::time::Instant::now(),
                IpAddr::from(ip),
                &map,
                &mut out,
            )
            .await;
        assert!(out.is_some(), "headers on every decision");
        r.is_ok()
    }

    #[tokio::test]
    async fn keys_are_separate_and_fall_back_to_the_ip() {
        let l = limit(KeySource::Header("x-api-key".into()));
        assert!(admitted(&l, [10, 0, 0, 1], &[("x-api-key", "a")]).await);
        assert!(!admitted(&l, [10, 0, 0, 2], &[("x-api-key", "a")]).await);
        assert!(admitted(&l, [10, 0, 0, 1], &[("x-api-key", "b")]).await);
        // No header: the client IP's own bucket, which a header value cannot reach.
        assert!(admitted(&l, [10, 0, 0, 1], &[]).await);
        assert!(!admitted(&l, [10, 0, 0, 1], &[]).await);
        assert!(admitted(&l, [10, 0, 0, 9], &[("x-api-key", "ip:10.0.0.1")]).await);
        assert!(admitted(&l, [10, 0, 0, 2], &[]).await);

        let l = limit(KeySource::Route);
        assert!(admitted(&l, [10, 0, 0, 1], &[]).await);
        assert!(!admitted(&l, [10, 0, 0, 2], &[]).await);
    }

    #[test]
    fn ip_keys_fit_the_buffer() {
        let mut buf = [0u8; 64];
        let v6: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ip_key(v6, &mut buf), format!("ip:{v6}"));
        let mapped: IpAddr = "::ffff:255.255.255.255"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ip_key(mapped, &mut buf), "ip:::ffff:255.255.255.255");
    }
}
