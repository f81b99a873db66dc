//! The admin API's two seams, implemented over the live gateway: [`GatewayView`] reads routes,
//! upstreams, breakers, limits and rollout stats from the current snapshot; [`RuntimeValidator`]
//! compiles an upload in the real plugin runtime and runs `init`, so a bad plugin is refused at
//! upload instead of at its first request.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use flexgate_admin::api::{
    BreakerState, ConfigSummary, PLUGIN_WORLD, PinnedVersion, PluginBindingInfo, PluginValidator,
    RateLimitInfo, RejectionKind, ResetError, RouteInfo, RuntimeView, TargetInfo, UploadRejection,
    UpstreamInfo, ValidatedInfo, VersionStats, check_header,
};
use flexgate_config::{Config, KeySource, RateLimitStore};
use flexgate_plugins::{Binding, BodyMode, OnError, PluginError, PluginRuntime, PluginSpec};
use flexgate_proxy::Gateway;
use flexgate_proxy::upstream::TargetState;
use flexgate_resilience::BreakerState as Breaker;

/// What the config file was when it was loaded (for `GET /api/config`).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub file: String,
    pub sha256: String,
    pub loaded_at: String,
}

/// The running gateway as the admin API sees it.
pub struct GatewayView {
    pub gateway: Arc<Gateway>,
    pub loaded: arc_swap::ArcSwap<Loaded>,
}

fn target_info(t: &TargetState) -> TargetInfo {
    let (breaker, failure_rate) = match t.breaker() {
        Some(b) => {
            let s = b.snapshot();
            let state = match s.state {
                Breaker::Closed => BreakerState::Closed,
                Breaker::Open => BreakerState::Open,
                Breaker::HalfOpen => BreakerState::HalfOpen,
            };
            let rate = if s.window_requests == 0 {
                0.0
            } else {
                s.window_failures as f64 / s.window_requests as f64
            };
            (state, rate)
        }
        None => (BreakerState::Closed, 0.0),
    };
    TargetInfo {
        target: t.addr.to_string(),
        healthy: t.is_healthy(),
        breaker,
        failure_rate,
    }
}

fn key_text(k: &KeySource) -> String {
    match k {
        KeySource::ClientIp => "client_ip".into(),
        KeySource::Header(h) => format!("header:{h}"),
        KeySource::Route => "route".into(),
    }
}

fn rate_text(r: &flexgate_config::Rate) -> String {
    match r.per.as_secs() {
        1 => format!("{}/s", r.requests),
        60 => format!("{}/min", r.requests),
        3600 => format!("{}/h", r.requests),
        _ => format!("{}/{:?}", r.requests, r.per),
    }
}

fn matcher_text(r: &flexgate_config::Route) -> String {
    let m = &r.matcher;
    let mut parts = Vec::new();
    if let Some(h) = &m.host {
        parts.push(format!("host {h}"));
    }
    match (&m.path, &m.path_prefix) {
        (Some(p), _) => parts.push(format!("path {p}")),
        (None, Some(p)) => parts.push(format!("path {p}*")),
        _ => {}
    }
    if !m.methods.is_empty() {
        parts.push(format!("methods {}", m.methods.join(" ")));
    }
    for (k, v) in &m.headers {
        parts.push(format!("header {k}={v}"));
    }
    if parts.is_empty() {
        "any".into()
    } else {
        parts.join(", ")
    }
}

#[async_trait]
impl RuntimeView for GatewayView {
    async fn routes(&self) -> Vec<RouteInfo> {
        let snap = self.gateway.snapshot();
        let cfg = &snap.config;
        cfg.routes
            .iter()
            .map(|r| {
                let live = snap.route(&r.name).and_then(|x| x.plugins.clone());
                let plugins = r
                    .plugins
                    .iter()
                    .enumerate()
                    .map(|(j, b)| {
                        let slot = live.as_ref().and_then(|p| p.slots.get(j));
                        let mut active = Vec::new();
                        if let Some(s) = slot {
                            active.push(s.stable.version.to_string());
                            if let Some(c) = &s.canary {
                                active.push(c.variant.version.to_string());
                            }
                        }
                        PluginBindingInfo {
                            plugin: b.plugin.clone(),
                            pinned_version: b.version.clone(),
                            active_versions: active,
                        }
                    })
                    .collect();
                RouteInfo {
                    name: r.name.clone(),
                    matcher: matcher_text(r),
                    upstream: r.upstream.clone(),
                    plugins,
                    rate_limit: r.rate_limit.as_ref().map(|l| {
                        format!(
                            "{} burst {} by {}",
                            rate_text(&l.rate),
                            l.burst,
                            key_text(&l.key)
                        )
                    }),
                }
            })
            .collect()
    }

    async fn upstreams(&self) -> Vec<UpstreamInfo> {
        let snap = self.gateway.snapshot();
        snap.config
            .upstreams
            .iter()
            .filter_map(|u| {
                let live = snap.upstreams.get(&u.name)?;
                Some(UpstreamInfo {
                    name: u.name.clone(),
                    load_balancing: format!("{:?}", u.load_balancing).to_ascii_lowercase(),
                    targets: live.targets.iter().map(|t| target_info(t)).collect(),
                })
            })
            .collect()
    }

    async fn reset_breaker(&self, upstream: &str, target: &str) -> Result<TargetInfo, ResetError> {
        let snap = self.gateway.snapshot();
        let t = snap
            .upstreams
            .get(upstream)
            .and_then(|u| u.targets.iter().find(|t| &*t.addr == target))
            .ok_or_else(|| {
                ResetError::NotFound(format!("no target {target} in upstream {upstream}"))
            })?;
        if let Some(b) = t.breaker() {
            b.reset();
        }
        Ok(target_info(t))
    }

    async fn rate_limits(&self) -> Vec<RateLimitInfo> {
        let cfg = self.gateway.config();
        cfg.routes
            .iter()
            .filter_map(|r| {
                let l = r.rate_limit.as_ref()?;
                Some(RateLimitInfo {
                    route: r.name.clone(),
                    key: key_text(&l.key),
                    rate: rate_text(&l.rate),
                    burst: l.burst,
                    store: match l.store {
                        RateLimitStore::Local => "local".into(),
                        RateLimitStore::Redis => "redis".into(),
                    },
                })
            })
            .collect()
    }

    async fn config_summary(&self) -> ConfigSummary {
        let cfg: Arc<Config> = self.gateway.config();
        let loaded = self.loaded.load();
        ConfigSummary {
            file: loaded.file.clone(),
            sha256: loaded.sha256.clone(),
            loaded_at: loaded.loaded_at.clone(),
            listen: cfg.listen.to_string(),
            routes: cfg.routes.len() as u64,
            upstreams: cfg.upstreams.len() as u64,
            plugins: cfg.plugins.iter().map(|p| p.name.clone()).collect(),
        }
    }

    async fn rollout_stats(&self, route: &str, plugin: &str) -> Vec<VersionStats> {
        let snap = self.gateway.snapshot();
        let Some(rp) = snap.route(route).and_then(|r| r.plugins.clone()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for slot in rp.slots.iter().filter(|s| &*s.plugin == plugin) {
            if let Some(stats) = &slot.stable.stats {
                out.push(VersionStats {
                    version: slot.stable.version.to_string(),
                    role: "stable".into(),
                    stats: stats.snapshot().into(),
                });
            }
            if let Some(c) = &slot.canary
                && let Some(stats) = &c.variant.stats
            {
                out.push(VersionStats {
                    version: c.variant.version.to_string(),
                    role: "canary".into(),
                    stats: stats.snapshot().into(),
                });
            }
        }
        out
    }

    async fn pinned_versions(&self) -> Vec<PinnedVersion> {
        let cfg = self.gateway.config();
        cfg.routes
            .iter()
            .flat_map(|r| {
                r.plugins.iter().filter_map(|b| {
                    Some(PinnedVersion {
                        route: r.name.clone(),
                        plugin: b.plugin.clone(),
                        version: b.version.clone()?,
                    })
                })
            })
            .collect()
    }
}

/// Validates uploads in the real runtime: compile + link against the host's world, then `init`.
pub struct RuntimeValidator {
    pub runtime: Arc<PluginRuntime>,
}

#[async_trait]
impl PluginValidator for RuntimeValidator {
    async fn validate(
        &self,
        name: &str,
        bytes: Bytes,
        example_config: Option<&str>,
    ) -> Result<ValidatedInfo, UploadRejection> {
        check_header(&bytes)?;
        let runtime = self.runtime.clone();
        let spec = PluginSpec::new(name, "upload-check", bytes.to_vec());
        let loaded = tokio::task::spawn_blocking(move || runtime.load(spec))
            .await
            .map_err(|e| UploadRejection {
                kind: RejectionKind::WrongWorld,
                message: format!("validation aborted: {e}"),
            })?;
        let plugin = loaded.map_err(|e| match e {
            PluginError::Invalid { reason, .. } => UploadRejection {
                kind: RejectionKind::WrongWorld,
                message: format!(
                    "the component does not implement `{PLUGIN_WORLD}`: a plugin must export \
                     `flexgate:plugin/handler@0.1.0` (init, on-request, on-response) and may import only \
                     `flexgate:plugin/host@0.1.0` and wasi:* interfaces; build it with the flexgate-sdk \
                     (`flexgate plugin new`). wasmtime says: {reason}"
                ),
            },
            other => UploadRejection {
                kind: RejectionKind::WrongWorld,
                message: other.to_string(),
            },
        })?;
        let config = example_config.unwrap_or("{}").to_owned();
        Binding::new(
            plugin,
            "upload-check",
            config,
            OnError::FailClosed,
            BodyMode::None,
        )
        .await
        .map_err(|e| UploadRejection {
            kind: RejectionKind::InitFailed,
            message: format!("`init` with the example config failed: {e}"),
        })?;
        Ok(ValidatedInfo {
            wit_world: PLUGIN_WORLD.into(),
        })
    }
}
