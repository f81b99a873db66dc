//! `RateLimit-Policy` / `RateLimit` / `Retry-After` response headers.
//!
//! Format per draft-ietf-httpapi-ratelimit-headers-11 (May 2026; same shape since
//! draft-08): both fields are Structured Field Lists whose items are Strings (the
//! policy name, quoted) with parameters:
//!
//! ```text
//! RateLimit-Policy: "default";q=100;w=1
//! RateLimit: "default";r=42;t=1
//! ```
//!
//! `q` is the quota and `w` the window in whole seconds (>= 1; sub-second precision
//! is not supported by the draft, so sub-second periods are scaled up to 1 s).
//! `r` is the remaining quota. `t` is the "effective window": for an admitted
//! request we send the time until the key is fully rested (rounded up), for a
//! limited one the time until the next admission; both never overstate what the
//! client may send, as the draft requires. Names are lowercase so they can be
//! used directly with `http::HeaderName::from_static`.

use super::gcra::Decision;
use std::fmt::Write;
use std::time::Duration;

/// Name of our single policy item.
const POLICY_NAME: &str = "default";

/// Rendered header values for one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitHeaders {
    /// `ratelimit-policy` value, e.g. `"default";q=100;w=1`.
    pub policy: String,
    /// `ratelimit` value, e.g. `"default";r=42;t=1`.
    pub ratelimit: String,
    /// `retry-after` value in whole seconds (rounded up), only when limited.
    pub retry_after: Option<String>,
}

impl RateLimitHeaders {
    /// Header name of [`policy`](Self::policy).
    pub const POLICY: &'static str = "ratelimit-policy";
    /// Header name of [`ratelimit`](Self::ratelimit).
    pub const RATELIMIT: &'static str = "ratelimit";
    /// Header name of [`retry_after`](Self::retry_after).
    pub const RETRY_AFTER: &'static str = "retry-after";

    /// `(name, value)` pairs to append to the response.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            Some((Self::POLICY, self.policy.as_str())),
            Some((Self::RATELIMIT, self.ratelimit.as_str())),
            self.retry_after.as_deref().map(|v| (Self::RETRY_AFTER, v)),
        ]
        .into_iter()
        .flatten()
    }
}

/// `"default";q=..;w=..` for `n` requests per `period`.
pub(super) fn policy_header(n: u64, period: Duration) -> String {
    let nanos = period.as_nanos().max(1);
    let window_s = nanos.div_ceil(1_000_000_000).max(1);
    // Requests per whole-second window, rounded down (never overstate the quota).
    let quota = u128::from(n) * window_s * 1_000_000_000 / nanos;
    format!("\"{POLICY_NAME}\";q={quota};w={window_s}")
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

pub(super) fn build(policy: &str, d: &Decision) -> RateLimitHeaders {
    let t = match d.retry_after {
        Some(r) if !d.allowed => ceil_secs(r),
        _ => ceil_secs(d.reset_after),
    };
    let mut ratelimit = String::with_capacity(32);
    let _ = write!(ratelimit, "\"{POLICY_NAME}\";r={};t={t}", d.remaining);
    let retry_after = (!d.allowed).then(|| {
        ceil_secs(d.retry_after.unwrap_or_default())
            .max(1)
            .to_string()
    });
    RateLimitHeaders {
        policy: policy.to_owned(),
        ratelimit,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_values() {
        assert_eq!(
            policy_header(100, Duration::from_secs(1)),
            "\"default\";q=100;w=1"
        );
        assert_eq!(
            policy_header(1000, Duration::from_secs(3600)),
            "\"default\";q=1000;w=3600"
        );
        // Sub-second and fractional periods are scaled to whole seconds.
        assert_eq!(
            policy_header(10, Duration::from_millis(100)),
            "\"default\";q=100;w=1"
        );
        assert_eq!(
            policy_header(3, Duration::from_millis(1500)),
            "\"default\";q=4;w=2"
        );
    }

    #[test]
    fn allowed_and_limited() {
        let allowed = Decision {
            allowed: true,
            limit: 21,
            remaining: 20,
            reset_after: Duration::from_millis(5),
            retry_after: None,
            degraded: false,
        };
        let h = build("\"default\";q=200;w=1", &allowed);
        assert_eq!(h.ratelimit, "\"default\";r=20;t=1");
        assert_eq!(h.retry_after, None);
        assert_eq!(h.iter().count(), 2);

        let limited = Decision {
            allowed: false,
            remaining: 0,
            reset_after: Duration::from_millis(2100),
            retry_after: Some(Duration::from_millis(2001)),
            ..allowed
        };
        let h = build("p", &limited);
        assert_eq!(h.ratelimit, "\"default\";r=0;t=3");
        assert_eq!(h.retry_after.as_deref(), Some("3"));
        let names: Vec<_> = h.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["ratelimit-policy", "ratelimit", "retry-after"]);

        let rested = Decision {
            reset_after: Duration::ZERO,
            ..allowed
        };
        assert_eq!(build("p", &rested).ratelimit, "\"default\";r=20;t=0");
    }
}
