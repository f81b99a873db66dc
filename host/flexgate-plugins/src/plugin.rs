//! A loaded plugin version: its pre-instantiated component, limits and instance creation.

use crate::bindings::{Action, CallInfo, Level, Plugin as Bindings, PluginIndices, PluginPre};
use crate::capture::LogLimiter;
use crate::error::{FailureKind, PluginError};
use crate::metrics::{Metrics, PluginMetrics};
use crate::state::StoreState;
use crate::state::{ReqState, RespState};
use crate::ticker::Heartbeat;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::Resource;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

/// Plugin-defined metric names kept per plugin version; further names are dropped.
const MAX_CUSTOM_NAMES: usize = 32;

/// How instances are used (mirrors the config's `isolation`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Isolation {
    /// Warm instances reused, recycled after `recycle_after` requests or after any trap.
    #[default]
    Pooled,
    /// A fresh instance (instantiate + `init`) for every request.
    PerRequest,
}

/// What to load: one plugin version and its limits (plain values, so the runtime does not
/// depend on the config crate).
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// Plugin name (a metric label, never a path).
    pub name: String,
    /// Version string (a metric label).
    pub version: String,
    /// The component bytes (`.wasm`).
    pub bytes: Vec<u8>,
    /// Instance reuse policy.
    pub isolation: Isolation,
    /// Linear memory cap per instance, bytes (default 16 MiB).
    pub memory_limit: u64,
    /// Per-call deadline (default 10 ms).
    pub timeout: Duration,
    /// `Pooled`: recycle an instance after this many requests (default 10 000).
    pub recycle_after: u64,
}

impl PluginSpec {
    /// A spec with the config defaults (pooled, 16 MiB, 10 ms, recycle after 10 000).
    pub fn new(name: impl Into<String>, version: impl Into<String>, bytes: Vec<u8>) -> Self {
        PluginSpec {
            name: name.into(),
            version: version.into(),
            bytes,
            isolation: Isolation::Pooled,
            memory_limit: 16 * 1024 * 1024,
            timeout: Duration::from_millis(10),
            recycle_after: 10_000,
        }
    }
}

/// State shared by every instance of a plugin version: identity, metrics, log limiting.
pub(crate) struct PluginShared {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) m: PluginMetrics,
    custom_names: Mutex<HashSet<String>>,
    log_limiter: LogLimiter,
}

macro_rules! guest_event {
    ($lvl:expr, $($rest:tt)*) => {
        match $lvl {
            Level::Trace => tracing::trace!($($rest)*),
            Level::Debug => tracing::debug!($($rest)*),
            Level::Info => tracing::info!($($rest)*),
            Level::Warn => tracing::warn!($($rest)*),
            Level::Error => tracing::error!($($rest)*),
        }
    };
}

impl PluginShared {
    pub(crate) fn guest_log(
        &self,
        level: Level,
        message: &str,
        fields: &[(String, String)],
        route: &str,
        request_id: &str,
    ) {
        let Some(suppressed) = self.log_limiter.allow() else {
            return;
        };
        let message = truncate(message, 2048);
        let fields: String = fields
            .iter()
            .take(16)
            .map(|(k, v)| format!("{}={} ", truncate(k, 64), truncate(v, 256)))
            .collect();
        guest_event!(level, target: "flexgate::plugin", plugin = %self.name, version = %self.version,
            route, request_id, fields = fields.trim_end(), suppressed, "{message}");
    }

    /// Forward captured stdout/stderr.
    pub(crate) fn guest_output(&self, text: &str, dropped: usize, route: &str, request_id: &str) {
        let Some(suppressed) = self.log_limiter.allow() else {
            return;
        };
        tracing::info!(target: "flexgate::plugin::stdio", plugin = %self.name,
            version = %self.version, route, request_id, truncated_bytes = dropped, suppressed,
            "{text}");
    }

    fn custom_allowed(&self, name: &str) -> bool {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit();
        if !valid {
            return false;
        }
        let mut names = self.custom_names.lock().unwrap_or_else(|e| e.into_inner());
        if names.contains(name) {
            return true;
        }
        if names.len() >= MAX_CUSTOM_NAMES {
            return false;
        }
        names.insert(name.to_string());
        true
    }

    pub(crate) fn custom_counter(&self, name: &str, value: u64) {
        if self.custom_allowed(name) {
            self.metrics
                .custom_total
                .with_label_values(&[&self.name, &self.version, name])
                .inc_by(value);
        }
    }

    pub(crate) fn custom_observe(&self, name: &str, value: f64) {
        if value.is_finite() && self.custom_allowed(name) {
            self.metrics
                .custom_value
                .with_label_values(&[&self.name, &self.version, name])
                .observe(value);
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// A plugin version compiled and pre-instantiated once; shared by every route that uses it.
pub struct LoadedPlugin {
    pub(crate) shared: Arc<PluginShared>,
    pub(crate) pre: PluginPre<StoreState>,
    /// Export indices resolved once at load, so the sync path does no name lookups per instance.
    indices: PluginIndices,
    /// The component imports no WASI (e.g. a `no_std` plugin built with the SDK's
    /// `no_std_runtime!`), so none of its imports is async: instantiate and call it directly on
    /// the caller's stack. WASI plugins need the async path (a fiber per call), because async
    /// WASI is what keeps a guest's stderr write from blocking inside tokio.
    sync: bool,
    pub(crate) engine: Engine,
    pub(crate) isolation: Isolation,
    pub(crate) memory_limit: usize,
    /// Per-call deadline (wall clock).
    pub(crate) timeout: Duration,
    /// Gives each store the slot where the epoch ticker watches its call's deadline.
    heartbeat: Arc<Heartbeat>,
    pub(crate) recycle_after: u64,
    pub(crate) max_idle: usize,
    spare: Mutex<Vec<StoreState>>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.shared.name)
            .field("version", &self.shared.version)
            .field("isolation", &self.isolation)
            .finish_non_exhaustive()
    }
}

/// A failed call, classified.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) kind: FailureKind,
    pub(crate) reason: String,
}

impl Failure {
    pub(crate) fn new(kind: FailureKind, reason: impl Into<String>) -> Self {
        Failure {
            kind,
            reason: reason.into(),
        }
    }
}

/// One live instance with its store.
pub(crate) struct Instance {
    pub(crate) store: Store<StoreState>,
    pub(crate) bindings: Bindings,
    pub(crate) uses: u64,
    /// The request and response resources of this instance, pushed once and refilled for every
    /// call (no table insert/remove per call).
    pub(crate) req: u32,
    pub(crate) resp: u32,
}

impl Instance {
    /// `on_request` in this instance: directly for a [`sync`](LoadedPlugin::sync) plugin,
    /// otherwise on a fiber.
    pub(crate) async fn on_request(
        &mut self,
        sync: bool,
        info: &CallInfo,
        req: Resource<ReqState>,
    ) -> wasmtime::Result<Result<Action, String>> {
        let h = self.bindings.flexgate_plugin_handler();
        if sync {
            h.func_on_request()
                .call(&mut self.store, (info, req))
                .map(|(r,)| r)
        } else {
            h.call_on_request(&mut self.store, info, req).await
        }
    }

    /// `on_response` in this instance, like [`on_request`](Self::on_request).
    pub(crate) async fn on_response(
        &mut self,
        sync: bool,
        info: &CallInfo,
        resp: Resource<RespState>,
    ) -> wasmtime::Result<Result<(), String>> {
        let h = self.bindings.flexgate_plugin_handler();
        if sync {
            h.func_on_response()
                .call(&mut self.store, (info, resp))
                .map(|(r,)| r)
        } else {
            h.call_on_response(&mut self.store, info, resp).await
        }
    }
}

/// Store data kept from retired instances, reused by the next instantiation (building a WASI
/// context allocates and seeds RNGs; per_request plugins create an instance per request).
const MAX_SPARE_STATES: usize = 32;

impl LoadedPlugin {
    pub(crate) fn new(
        shared: PluginShared,
        pre: PluginPre<StoreState>,
        indices: PluginIndices,
        sync: bool,
        spec: &PluginSpec,
        heartbeat: Arc<Heartbeat>,
        max_idle: usize,
    ) -> Self {
        heartbeat.watch_timeout(spec.timeout);
        LoadedPlugin {
            engine: pre.engine().clone(),
            shared: Arc::new(shared),
            indices,
            sync,
            pre,
            isolation: spec.isolation,
            memory_limit: usize::try_from(spec.memory_limit).unwrap_or(usize::MAX),
            timeout: spec.timeout,
            heartbeat,
            recycle_after: spec.recycle_after.max(1),
            max_idle,
            spare: Mutex::new(Vec::new()),
        }
    }

    /// Plugin name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Plugin version.
    pub fn version(&self) -> &str {
        &self.shared.version
    }

    /// Instance reuse policy.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// Whether instances are created and called without a fiber (the component imports no WASI).
    pub fn is_sync(&self) -> bool {
        self.sync
    }

    /// Starts the per-call deadline: `timeout` of wall time from now (returned). The store checks
    /// it on the next epoch bump, which the ticker makes once this or another call is due.
    pub(crate) fn arm(&self, store: &mut Store<StoreState>) -> Instant {
        let now = Instant::now();
        let deadline = now + self.timeout;
        let data = store.data_mut();
        data.deadline = Some(deadline);
        data.slot.start(deadline);
        store.set_epoch_deadline(1);
        now
    }

    /// Create an instance and run `init(config)` in it.
    pub(crate) async fn instantiate(&self, config: &str) -> Result<Instance, Failure> {
        let start = Instant::now();
        let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let data = spare.unwrap_or_else(|| {
            StoreState::new(
                self.shared.clone(),
                self.memory_limit,
                self.heartbeat.slot(),
            )
        });
        let mut store = Store::new(&self.engine, data);
        store.limiter(|s| &mut s.limiter);
        // Every epoch bump while a call runs lands here: interrupt once the call's wall-clock
        // deadline has passed (the bump may be for another store's call), else wait for the next.
        store.epoch_deadline_callback(|ctx| {
            let due = ctx.data().deadline.is_none_or(|d| Instant::now() >= d);
            Ok(if due {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(1)
            })
        });
        self.arm(&mut store);
        let bindings = if self.sync {
            self.pre
                .instance_pre()
                .instantiate(&mut store)
                .and_then(|i| self.indices.load(&mut store, &i))
        } else {
            self.pre.instantiate_async(&mut store).await
        };
        let bindings = match bindings {
            Ok(b) => b,
            Err(e) => return Err(self.fail(&mut store, e, true)),
        };
        self.shared.m.instantiations.inc();
        let handler = bindings.flexgate_plugin_handler();
        let res = if self.sync {
            handler
                .func_init()
                .call(&mut store, (config,))
                .map(|(r,)| r)
        } else {
            handler.call_init(&mut store, config).await
        };
        self.shared
            .m
            .dur_init
            .observe(start.elapsed().as_secs_f64());
        self.after_call(&mut store);
        match res {
            Ok(Ok(())) => {
                let table = &mut store.data_mut().table;
                let (req, resp) = match (
                    table.push(ReqState::empty()),
                    table.push(RespState::empty()),
                ) {
                    (Ok(req), Ok(resp)) => (req.rep(), resp.rep()),
                    (Err(e), _) | (_, Err(e)) => {
                        return Err(Failure::new(FailureKind::Host, e.to_string()));
                    }
                };
                Ok(Instance {
                    store,
                    bindings,
                    uses: 0,
                    req,
                    resp,
                })
            }
            Ok(Err(msg)) => {
                self.shared.m.traps[3].inc();
                Err(Failure::new(FailureKind::Init, msg))
            }
            Err(e) => Err(self.fail(&mut store, e, true)),
        }
    }

    /// An instance that will not run again (and did not trap): keep its store data for the next
    /// instantiation.
    pub(crate) fn retire(&self, inst: Instance) {
        let mut data = inst.store.into_data();
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < MAX_SPARE_STATES {
            data.reset();
            spare.push(data);
        }
    }

    /// Classify a wasmtime error and count it.
    pub(crate) fn fail(
        &self,
        store: &mut Store<StoreState>,
        err: wasmtime::Error,
        in_init: bool,
    ) -> Failure {
        if pool_exhausted(&err) {
            // Not the plugin's fault: no trap is counted and the caller's policy applies.
            return Failure::new(FailureKind::Host, format!("{err:#}"));
        }
        let kind = if matches!(err.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            FailureKind::Timeout
        } else if store.data().limiter.hit {
            FailureKind::Memory
        } else if in_init {
            FailureKind::Init
        } else {
            FailureKind::Trap
        };
        let idx = match kind {
            FailureKind::Trap => 0,
            FailureKind::Timeout => 1,
            FailureKind::Memory => 2,
            _ => 3,
        };
        self.shared.m.traps[idx].inc();
        Failure::new(kind, format!("{err:#}"))
    }

    /// Bookkeeping after every call: captured output and memory high-water mark.
    pub(crate) fn after_call(&self, store: &mut Store<StoreState>) {
        let data = store.data();
        data.slot.end();
        // A sync plugin imports no WASI, so it has no stdout/stderr to forward.
        if !self.sync
            && let Some((text, dropped)) = data.capture.take()
        {
            self.shared
                .guest_output(&text, dropped, &data.route, &data.request_id);
        }
        let peak = i64::try_from(data.limiter.peak).unwrap_or(i64::MAX);
        if peak > self.shared.m.memory.get() {
            self.shared.m.memory.set(peak);
        }
    }
}

/// Whether `err` is the pooling allocator refusing a slot (instances, memories, tables or fiber
/// stacks all in use): the call fails at once with [`FailureKind::Host`].
fn pool_exhausted(err: &wasmtime::Error) -> bool {
    err.chain()
        .any(|e| e.is::<wasmtime::PoolConcurrencyLimitError>())
}

pub(crate) fn new_shared(metrics: Arc<Metrics>, name: &str, version: &str) -> PluginShared {
    PluginShared {
        name: name.to_string(),
        version: version.to_string(),
        m: PluginMetrics::new(&metrics, name, version),
        metrics,
        custom_names: Mutex::new(HashSet::new()),
        log_limiter: LogLimiter::new(20.0, 50.0),
    }
}

/// Re-exported for the runtime's validation of plugin errors at load time.
pub(crate) fn init_error(plugin: &str, f: Failure) -> PluginError {
    PluginError::Init {
        plugin: plugin.to_string(),
        reason: f.reason,
    }
}
