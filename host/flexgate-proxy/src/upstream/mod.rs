//! Upstreams: their targets, the client that reaches them (and its per-target connection pools),
//! load balancing and health.

mod balancer;
mod client;
mod h1;
mod health;
mod pool;
mod target;

use std::sync::Arc;
use std::time::Duration;

use flexgate_config as config;
use prometheus::Histogram;
use tokio::task::JoinHandle;

pub use balancer::{Balancer, ring_hasher};
pub use client::{ClientSettings, HttpClient, UpstreamError};
pub use h1::UpstreamBody;
pub use target::{InFlight, Outcome, TargetState, now_nanos};

use crate::resilience::UpstreamResilience;

/// Which failures a retry may follow.
#[derive(Debug, Clone, Default)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub on_connect_failure: bool,
    pub on_timeout: bool,
    pub statuses: Vec<u16>,
}

impl RetryPolicy {
    pub fn of(r: &config::Retries) -> Self {
        let mut p = Self {
            attempts: r.attempts,
            ..Self::default()
        };
        for on in &r.on {
            match on {
                config::RetryOn::ConnectFailure => p.on_connect_failure = true,
                config::RetryOn::Timeout => p.on_timeout = true,
                config::RetryOn::Status(s) => p.statuses.push(*s),
            }
        }
        p
    }
}

/// One upstream as compiled into a config snapshot.
pub struct Upstream {
    pub name: Arc<str>,
    pub targets: Box<[Arc<TargetState>]>,
    pub balancer: Balancer,
    pub hash_key: Option<config::KeySource>,
    pub client: HttpClient,
    /// Requests go out as HTTP/2 (prior knowledge) instead of HTTP/1.1.
    pub h2: bool,
    pub request_timeout: Duration,
    pub retries: RetryPolicy,
    pub passive: config::PassiveHealth,
    pub duration: Histogram,
    /// Circuit breakers per target, failure classifier, in-flight cap.
    pub resilience: UpstreamResilience,
    health_task: Option<JoinHandle<()>>,
    sweeper: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("targets", &self.targets)
            .finish()
    }
}

impl Upstream {
    /// Assembles an upstream from shared parts; starts the active health checker if configured.
    pub fn new(
        cfg: &config::Upstream,
        targets: Vec<Arc<TargetState>>,
        client: HttpClient,
        duration: Histogram,
    ) -> Self {
        let weights: Vec<u32> = cfg.targets.iter().map(|t| t.weight).collect();
        let health_task = cfg.health_check.as_ref().map(|hc| {
            health::spawn(
                cfg.name.clone(),
                hc.clone(),
                targets.clone(),
                client.clone(),
            )
        });
        let sweeper = matches!(client, HttpClient::H1(_)).then(|| {
            let pools = targets.iter().map(|t| t.idle.clone()).collect();
            pool::spawn_sweeper(pools, cfg.timeouts.idle.0)
        });
        if cfg.health_check.is_none() {
            targets.iter().for_each(|t| t.set_healthy(true));
        }
        Self {
            name: Arc::from(cfg.name.as_str()),
            balancer: Balancer::new(cfg.load_balancing, &weights),
            targets: targets.into_boxed_slice(),
            hash_key: match cfg.load_balancing {
                config::LoadBalancing::ConsistentHash => {
                    Some(cfg.hash_key.clone().unwrap_or(config::KeySource::ClientIp))
                }
                _ => None,
            },
            client,
            h2: cfg.protocol == config::UpstreamProtocol::H2,
            request_timeout: cfg.timeouts.request.0,
            retries: RetryPolicy::of(&cfg.retries),
            passive: cfg.passive_health,
            duration,
            resilience: UpstreamResilience::default(),
            health_task,
            sweeper,
        }
    }

    /// Attaches the breakers and in-flight cap (from [`crate::resilience::Resilience::upstream`]).
    pub fn with_resilience(mut self, resilience: UpstreamResilience) -> Self {
        self.resilience = resilience;
        self
    }

    /// Picks a target not in `tried`. Prefers available targets; when none is, falls back to any
    /// untried one (a "panic mode" as in Envoy: better to try than to fail everything). A target
    /// whose circuit is open is never picked, not even in panic mode.
    pub fn pick(&self, hash: Option<u64>, tried: impl Fn(usize) -> bool) -> Option<usize> {
        let now = now_nanos();
        let n = self.targets.len();
        let in_flight = |i: usize| self.targets[i].in_flight();
        self.balancer
            .pick(n, hash, in_flight, |i| {
                !tried(i) && self.targets[i].is_available(now) && self.resilience.may_admit(i)
            })
            .or_else(|| {
                self.balancer.pick(n, hash, in_flight, |i| {
                    !tried(i) && self.resilience.may_admit(i)
                })
            })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        for task in [self.health_task.take(), self.sweeper.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}
