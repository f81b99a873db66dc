//! Where a request is transformed: which Wasm plugin versions a route runs and how a request picks
//! between a rollout's stable and canary version.
//!
//! A binding's version comes from, in order: the plugin's `source` file (one fixed version), a
//! `version:` pin in YAML, or the route's rollout in the registry (stable, plus a canary for
//! `canary_percent` of sticky keys). [`PluginHost`] loads each version once per process and keeps
//! per-version window stats across snapshots; the rollback guard reads them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flexgate_config::{self as config, Config};
use flexgate_plugins::{
    Binding, BodyMode, CallCtx, Chain, FailureKind, Isolation, LoadedPlugin, OnError, PluginError,
    PluginRuntime, PluginSpec,
};
use flexgate_registry::{
    Outcome, Rollout, StatsSnapshot, Sticky, Store, WindowStats, random_hash, sticky_hash,
};
use http::HeaderMap;
use parking_lot::Mutex;

use crate::snapshot::BuildError;

/// Default window for stats of versions whose rollout sets none.
const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// The live request/outcome window of one plugin version on one route.
#[derive(Debug)]
pub struct VersionStats {
    window: Mutex<WindowStats>,
    length: Duration,
}

impl VersionStats {
    fn new(length: Duration) -> Self {
        Self {
            window: Mutex::new(WindowStats::new(length, Instant::now())),
            length,
        }
    }

    /// Records one request through this version.
    pub fn record(&self, latency: Duration, outcome: Outcome) {
        self.window.lock().record(Instant::now(), latency, outcome);
    }

    /// The window's summary now.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.window.lock().snapshot(Instant::now())
    }
}

/// One version of a binding, bound to its route.
#[derive(Debug, Clone)]
pub struct Variant {
    pub version: Arc<str>,
    pub binding: Arc<Binding>,
    /// Present for registry-managed bindings (the ones a rollout can change).
    pub stats: Option<Arc<VersionStats>>,
}

/// One plugin in a route's chain.
#[derive(Debug)]
pub struct Slot {
    pub plugin: Arc<str>,
    pub stable: Variant,
    pub canary: Option<Canary>,
    /// The registry rollout this slot follows (None for file sources and pins).
    pub rollout: Option<Rollout>,
}

/// A canary version and its share.
#[derive(Debug)]
pub struct Canary {
    pub variant: Variant,
    pub percent: u8,
    pub sticky: Sticky,
}

/// A route's plugins, compiled.
#[derive(Debug)]
pub struct RoutePlugins {
    pub slots: Vec<Slot>,
    /// The chain every request runs when no slot has a canary.
    fixed: Option<Chain>,
    /// Cap on buffered bodies for `body: buffer` bindings.
    pub buffer_limit: u64,
    pub buffers_request: bool,
    pub buffers_response: bool,
}

/// The chain one request runs and the versions it picked (one per slot).
pub struct Selected<'a> {
    chain: Picked<'a>,
    slots: &'a [Slot],
    /// The picked versions when some slot has a canary; `None`: every slot's stable version
    /// (no allocation on the common path).
    picks: Option<Vec<&'a Variant>>,
}

enum Picked<'a> {
    Fixed(&'a Chain),
    Owned(Chain),
}

impl<'a> Selected<'a> {
    pub fn chain(&self) -> &Chain {
        match &self.chain {
            Picked::Fixed(c) => c,
            Picked::Owned(c) => c,
        }
    }

    fn picks(&self) -> impl Iterator<Item = &'a Variant> + '_ {
        let stable = self
            .picks
            .is_none()
            .then(|| self.slots.iter().map(|s| &s.stable));
        let picked = self.picks.iter().flatten().copied();
        stable.into_iter().flatten().chain(picked)
    }

    /// `name@version,...` of the picked versions, for the access log.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (i, v) in self.picks().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(v.binding.plugin().name());
            out.push('@');
            out.push_str(&v.version);
        }
        out
    }

    /// Records the request's outcome in the window stats of every version it ran.
    pub fn record(&self, ctx: &CallCtx, latency: Duration, status: u16) {
        for (i, v) in self.picks().enumerate() {
            let Some(stats) = &v.stats else { continue };
            let outcome = match ctx.failure(i) {
                Some(FailureKind::Trap | FailureKind::Timeout | FailureKind::Memory) => {
                    Outcome::Trap
                }
                Some(FailureKind::Init | FailureKind::Error | FailureKind::Host) => Outcome::Error,
                None if status >= 500 => Outcome::Error,
                None => Outcome::Ok,
            };
            stats.record(latency, outcome);
        }
    }
}

impl RoutePlugins {
    /// Picks the version of every slot for one request.
    pub fn select(&self, client: IpAddr, headers: &HeaderMap) -> Selected<'_> {
        if let Some(chain) = &self.fixed {
            return Selected {
                chain: Picked::Fixed(chain),
                slots: &self.slots,
                picks: None,
            };
        }
        let picks: Vec<&Variant> = self
            .slots
            .iter()
            .map(|s| match &s.canary {
                Some(c) if bucket_of(&s.plugin, &c.sticky, client, headers) < c.percent => {
                    &c.variant
                }
                _ => &s.stable,
            })
            .collect();
        let chain = Chain::new(picks.iter().map(|v| v.binding.clone()).collect());
        Selected {
            chain: Picked::Owned(chain),
            slots: &self.slots,
            picks: Some(picks),
        }
    }
}

fn bucket_of(plugin: &str, sticky: &Sticky, client: IpAddr, headers: &HeaderMap) -> u8 {
    let hash = match sticky {
        Sticky::Random => random_hash(),
        Sticky::Header(name) => match headers.get(name.as_str()) {
            Some(v) => sticky_hash(plugin, v.as_bytes()),
            None => ip_hash(plugin, client),
        },
        Sticky::ClientIp => ip_hash(plugin, client),
    };
    flexgate_registry::bucket(hash)
}

fn ip_hash(plugin: &str, ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => sticky_hash(plugin, &v4.octets()),
        IpAddr::V6(v6) => sticky_hash(plugin, &v6.octets()),
    }
}

type StatsKey = (String, String, String);

/// Loads plugin versions for snapshots: one per process, shared by every snapshot.
pub struct PluginHost {
    runtime: Arc<PluginRuntime>,
    store: Option<Arc<dyn Store>>,
    /// (name, version, limits fingerprint) → loaded version. Keys come from config and registry,
    /// never from clients; pruned to what the current snapshot uses.
    loaded: Mutex<HashMap<(String, String, String), Arc<LoadedPlugin>>>,
    stats: Mutex<HashMap<StatsKey, Arc<VersionStats>>>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost").finish_non_exhaustive()
    }
}

impl PluginHost {
    pub fn new(runtime: Arc<PluginRuntime>, store: Option<Arc<dyn Store>>) -> Self {
        Self {
            runtime,
            store,
            loaded: Mutex::default(),
            stats: Mutex::default(),
        }
    }

    pub fn runtime(&self) -> &Arc<PluginRuntime> {
        &self.runtime
    }

    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    /// Compiles the plugins of every route of `config`. Loaded versions not used any more are
    /// dropped afterwards.
    pub async fn build_all(
        &self,
        config: &Config,
    ) -> Result<HashMap<String, Arc<RoutePlugins>>, BuildError> {
        let mut out = HashMap::new();
        let mut used = Vec::new();
        let mut used_stats = Vec::new();
        for r in config.routes.iter().filter(|r| !r.plugins.is_empty()) {
            let rp = self.route(config, r, &mut used, &mut used_stats).await?;
            out.insert(r.name.clone(), Arc::new(rp));
        }
        self.loaded.lock().retain(|k, _| used.contains(k));
        self.stats.lock().retain(|k, _| used_stats.contains(k));
        Ok(out)
    }

    async fn route(
        &self,
        config: &Config,
        r: &config::Route,
        used: &mut Vec<(String, String, String)>,
        used_stats: &mut Vec<StatsKey>,
    ) -> Result<RoutePlugins, BuildError> {
        let err = |what: String| BuildError(format!("route {:?}: {what}", r.name));
        let state = self.store.as_ref().map(|s| s.state());
        let mut slots = Vec::with_capacity(r.plugins.len());
        for (j, b) in r.plugins.iter().enumerate() {
            let def = config
                .plugins
                .iter()
                .find(|p| p.name == b.plugin)
                .ok_or_else(|| err(format!("plugins[{j}]: unknown plugin {:?}", b.plugin)))?;
            let (stable_v, canary, rollout) = match (&def.source, &b.version) {
                (Some(_), _) => (None, None, None),
                (None, Some(pin)) => (Some(pin.clone()), None, None),
                (None, None) => {
                    let rollout = state
                        .as_ref()
                        .and_then(|s| s.rollout(&r.name, &b.plugin))
                        .cloned();
                    let Some(ro) = rollout.filter(|ro| ro.stable.is_some()) else {
                        return Err(err(format!(
                            "plugins[{j}]: plugin {:?} has no version in the registry: upload one and set a rollout, or pin `version:`",
                            b.plugin
                        )));
                    };
                    let canary = ro.canary.clone().filter(|_| ro.canary_percent > 0);
                    (ro.stable.clone(), canary, Some(ro))
                }
            };
            let window = rollout
                .as_ref()
                .map_or(DEFAULT_WINDOW, |ro| ro.guards.window);
            let stable = self
                .variant(
                    r,
                    def,
                    b,
                    stable_v.as_deref(),
                    rollout.is_some(),
                    window,
                    used,
                    used_stats,
                )
                .await
                .map_err(|e| err(format!("plugins[{j}] ({}): {e}", b.plugin)))?;
            let canary = match (canary, &rollout) {
                (Some(v), Some(ro)) => Some(Canary {
                    variant: self
                        .variant(r, def, b, Some(&v), true, window, used, used_stats)
                        .await
                        .map_err(|e| err(format!("plugins[{j}] ({}@{v}): {e}", b.plugin)))?,
                    percent: ro.canary_percent.min(100),
                    sticky: ro.sticky.clone(),
                }),
                _ => None,
            };
            slots.push(Slot {
                plugin: Arc::from(b.plugin.as_str()),
                stable,
                canary,
                rollout,
            });
        }
        let fixed = slots
            .iter()
            .all(|s| s.canary.is_none())
            .then(|| Chain::new(slots.iter().map(|s| s.stable.binding.clone()).collect()));
        let buffers = r.plugins.iter().any(|b| b.body == config::BodyMode::Buffer);
        Ok(RoutePlugins {
            slots,
            fixed,
            buffer_limit: r.max_body.map_or(DEFAULT_BUFFER_LIMIT, |b| b.0),
            buffers_request: buffers,
            buffers_response: buffers,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn variant(
        &self,
        r: &config::Route,
        def: &config::Plugin,
        b: &config::PluginBinding,
        version: Option<&str>,
        tracked: bool,
        window: Duration,
        used: &mut Vec<(String, String, String)>,
        used_stats: &mut Vec<StatsKey>,
    ) -> Result<Variant, String> {
        let plugin = self.load(def, version, used).await?;
        let config_json = serde_json::to_string(&b.config).map_err(|e| e.to_string())?;
        let on_error = match b.on_error {
            config::OnError::FailClosed => OnError::FailClosed,
            config::OnError::FailOpen => OnError::FailOpen,
        };
        let body = match b.body {
            config::BodyMode::None => BodyMode::None,
            config::BodyMode::Buffer => BodyMode::Buffer,
        };
        let version: Arc<str> = Arc::from(plugin.version());
        // A config the plugin's `init` refuses only affects the requests through this binding
        // (`on_error` decides), never the snapshot: the gateway starts and reloads as usual.
        let binding = match Binding::new(plugin.clone(), &r.name, config_json, on_error, body).await
        {
            Ok(b) => b,
            Err(PluginError::Init { reason, .. }) => {
                tracing::error!(route = %r.name, plugin = %def.name, version = %version,
                    on_error = ?b.on_error, reason = %reason,
                    "plugin init rejected its config: requests through this binding fail \
                     (fail_closed: 500; fail_open: the plugin is skipped)");
                Binding::failed(plugin, &r.name, reason, on_error, body)
            }
            Err(e) => return Err(e.to_string()),
        };
        let stats = tracked.then(|| {
            let key = (r.name.clone(), def.name.clone(), version.to_string());
            used_stats.push(key.clone());
            let mut all = self.stats.lock();
            let entry = all
                .entry(key)
                .or_insert_with(|| Arc::new(VersionStats::new(window)));
            if entry.length != window {
                *entry = Arc::new(VersionStats::new(window));
            }
            entry.clone()
        });
        Ok(Variant {
            version,
            binding: Arc::new(binding),
            stats,
        })
    }

    async fn load(
        &self,
        def: &config::Plugin,
        version: Option<&str>,
        used: &mut Vec<(String, String, String)>,
    ) -> Result<Arc<LoadedPlugin>, String> {
        let limits = format!(
            "{:?}/{}/{:?}/{}",
            def.isolation,
            def.limits.memory.0,
            def.limits.timeout.get(),
            def.recycle_after
        );
        let (version, bytes) = match (&def.source, version) {
            (Some(path), _) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                let sha = flexgate_registry::sha256_hex(&bytes);
                (format!("file-{}", &sha[..12]), Some(bytes))
            }
            (None, Some(v)) => (v.to_owned(), None),
            (None, None) => return Err("no version to run".into()),
        };
        let key = (def.name.clone(), version.clone(), limits);
        used.push(key.clone());
        if let Some(p) = self.loaded.lock().get(&key) {
            return Ok(p.clone());
        }
        let bytes = match bytes {
            Some(b) => b,
            None => {
                let store = self
                    .store
                    .as_ref()
                    .ok_or("plugin has no `source` and no registry is configured")?;
                store
                    .get_blob(&def.name, &version)
                    .await
                    .map_err(|e| format!("version {version}: {e}"))?
                    .to_vec()
            }
        };
        let mut spec = PluginSpec::new(def.name.clone(), version, bytes);
        spec.isolation = match def.isolation {
            config::Isolation::Pooled => Isolation::Pooled,
            config::Isolation::PerRequest => Isolation::PerRequest,
        };
        spec.memory_limit = def.limits.memory.0;
        spec.timeout = def.limits.timeout.get();
        spec.recycle_after = def.recycle_after.max(1);
        let runtime = self.runtime.clone();
        let plugin = tokio::task::spawn_blocking(move || runtime.load(spec))
            .await
            .map_err(|e| format!("compiling: {e}"))?
            .map_err(|e| e.to_string())?;
        self.loaded.lock().insert(key, plugin.clone());
        Ok(plugin)
    }
}

/// Buffer cap for `body: buffer` bindings on routes without `max_body`.
pub const DEFAULT_BUFFER_LIMIT: u64 = 8 * 1024 * 1024;
