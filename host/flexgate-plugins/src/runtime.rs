//! The process-wide plugin runtime: engine (pooling allocator, epochs), linker, cache, metrics.

use crate::bindings::{Plugin as Bindings, PluginIndices, PluginPre};
use crate::cache;
use crate::compiler::{self, ChildError, CompilerCommand};
use crate::error::PluginError;
use crate::metrics::Metrics;
use crate::plugin::{LoadedPlugin, PluginSpec, new_shared};
use crate::state::StoreState;
use crate::ticker::Ticker;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Runtime-wide settings (per-plugin limits live in [`PluginSpec`]).
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Where precompiled components are cached; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// Live instances across all plugins (pooling allocator slots): warm pooled instances plus
    /// one per in-flight request per `per_request` binding (kept from `on_request` to
    /// `on_response`). When all are in use a call fails at once (`FailureKind::Host`, the
    /// binding's `on_error` applies). Each slot reserves virtual address space (~4 GiB per linear
    /// memory), not RAM.
    pub max_instances: u32,
    /// Largest linear memory any instance may have; plugin `memory_limit`s above it are clamped.
    pub max_memory_per_instance: u64,
    /// Once a call is past its deadline and not yet interrupted, the epoch ticker bumps again
    /// this often. One ticker thread per runtime; it otherwise wakes only at deadlines.
    pub epoch_tick: Duration,
    /// `Pooled` plugins: warm instances kept per route binding.
    pub max_idle_per_binding: usize,
    /// With a `cache_dir`, cache misses are compiled by this child process (the gateway binary's
    /// compile subcommand), so Cranelift's code pages and heap never enter the gateway: idle RSS
    /// stays what a warm-cache restart gives. `None` (the default; library tests, benches) or a
    /// child that cannot be started: compiled in process.
    pub compiler: Option<CompilerCommand>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            cache_dir: None,
            max_instances: 1024,
            max_memory_per_instance: 128 * 1024 * 1024,
            epoch_tick: Duration::from_millis(1),
            max_idle_per_binding: std::thread::available_parallelism().map_or(4, |n| n.get() * 2),
            compiler: None,
        }
    }
}

/// One per process. Owns the wasmtime engine and everything shared by plugin versions.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<StoreState>,
    metrics: Arc<Metrics>,
    opts: RuntimeOptions,
    ticker: Ticker,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

pub(crate) fn engine_config(opts: &RuntimeOptions) -> Config {
    let n = opts.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(8))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        .total_stacks(n)
        .max_memory_size(usize::try_from(opts.max_memory_per_instance).unwrap_or(usize::MAX))
        // Keep the first pages of recycled slots resident: ~10 µs instead of ~29 µs per instance.
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(2 << 20)
        .pagemap_scan(Enabled::Auto);
    let mut cfg = Config::new();
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(true)
        // Traps are expected (fixtures, deadlines): keep them cheap.
        .wasm_backtrace_max_frames(None)
        .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable)
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    cfg
}

impl PluginRuntime {
    /// Build the engine (pooling allocator, epoch interruption), the linker (deny-by-default
    /// async WASI + the `host` interface), start the epoch ticker and register metrics.
    pub fn new(
        opts: RuntimeOptions,
        registry: &prometheus::Registry,
    ) -> Result<Arc<Self>, PluginError> {
        let engine = Engine::new(&engine_config(&opts))
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::<StoreState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        Bindings::add_to_linker::<_, HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let metrics = Arc::new(Metrics::register(registry)?);
        let ticker = Ticker::start(engine.clone(), opts.epoch_tick)
            .map_err(|e| PluginError::io("spawning the epoch ticker", e))?;
        Ok(Arc::new(PluginRuntime {
            engine,
            linker,
            metrics,
            opts,
            ticker,
        }))
    }

    /// How many times the epoch ticker thread has woken: tests and diagnostics.
    pub fn epoch_ticker_wakeups(&self) -> u64 {
        self.ticker.heartbeat().wakeups()
    }

    /// Whether the epoch ticker sleeps (no plugin call for a while): tests and diagnostics.
    pub fn epoch_ticker_sleeping(&self) -> bool {
        self.ticker.heartbeat().is_sleeping()
    }

    /// Compile (or load from the disk cache) and pre-instantiate a plugin version. Fails if the
    /// bytes are not a component implementing `flexgate:plugin/plugin@0.1.0` or import anything
    /// beyond WASI and the `host` interface.
    pub fn load(&self, spec: PluginSpec) -> Result<Arc<LoadedPlugin>, PluginError> {
        let invalid = |e: wasmtime::Error| PluginError::Invalid {
            plugin: spec.name.clone(),
            reason: format!("{e:#}"),
        };
        let component = self.compile(&spec.name, &spec.bytes)?;
        let pre = self.linker.instantiate_pre(&component).map_err(invalid)?;
        let indices = PluginIndices::new(&pre).map_err(invalid)?;
        let pre = PluginPre::new(pre).map_err(invalid)?;
        // No WASI import means no async import (the `host`/`types` imports are synchronous):
        // such a plugin runs on the caller's stack instead of a fiber, bounded by wasmtime's
        // `max_wasm_stack` (512 KiB) like a fiber is, well within a tokio worker's 2 MiB.
        let sync = component
            .component_type()
            .imports(&self.engine)
            .all(|(name, _)| !name.starts_with("wasi:"));
        let mut spec = spec;
        spec.memory_limit = spec.memory_limit.min(self.opts.max_memory_per_instance);
        let shared = new_shared(self.metrics.clone(), &spec.name, &spec.version);
        Ok(Arc::new(LoadedPlugin::new(
            shared,
            pre,
            indices,
            sync,
            &spec,
            self.ticker.heartbeat().clone(),
            self.opts.max_idle_per_binding,
        )))
    }

    fn compile(&self, name: &str, bytes: &[u8]) -> Result<Component, PluginError> {
        let start = Instant::now();
        let cached = self
            .opts
            .cache_dir
            .as_ref()
            .map(|d| (d, cache::path_for(d, &self.engine, bytes)));
        if let Some((_, path)) = &cached
            && let Some(c) = cache::load(path, &self.engine)
        {
            tracing::debug!(plugin = name, elapsed = ?start.elapsed(), "plugin loaded from cache");
            return Ok(c);
        }
        if let (Some((_, path)), Some(cmd)) = (&cached, &self.opts.compiler) {
            let invalid = |reason| PluginError::Invalid {
                plugin: name.to_string(),
                reason,
            };
            match compiler::compile(cmd, &self.opts, bytes, path) {
                Ok(pid) => match cache::load(path, &self.engine) {
                    Some(c) => {
                        tracing::debug!(plugin = name, compiler_pid = pid, elapsed = ?start.elapsed(), "plugin compiled out of process");
                        return Ok(c);
                    }
                    None => tracing::warn!(
                        plugin = name,
                        "the plugin compiler's artifact does not load here; compiling in process"
                    ),
                },
                Err(ChildError::Invalid(reason)) => return Err(invalid(reason)),
                Err(ChildError::Failed(why)) => {
                    return Err(PluginError::Engine(format!(
                        "compiling plugin {name}: {why}"
                    )));
                }
                Err(ChildError::Spawn(e)) => {
                    tracing::warn!(plugin = name, error = %e, "cannot start the plugin compiler; compiling in process")
                }
            }
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| PluginError::Invalid {
            plugin: name.to_string(),
            reason: format!("{e:#}"),
        })?;
        tracing::debug!(plugin = name, elapsed = ?start.elapsed(), "plugin compiled");
        if let Some((dir, path)) = &cached {
            cache::store(dir, path, &component);
        }
        Ok(component)
    }
}
