//! Host-measured plugin metrics, registered on the registry passed to the runtime (no globals).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// µs-range buckets: a pooled call is ~1 µs, a fresh instance ~10 µs, the deadline 10 ms.
const DURATION_BUCKETS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 2.5e-2,
];

/// All plugin metric families.
pub(crate) struct Metrics {
    pub(crate) invocations: IntCounterVec,
    pub(crate) duration: HistogramVec,
    pub(crate) traps: IntCounterVec,
    pub(crate) memory: IntGaugeVec,
    pub(crate) instantiations: IntCounterVec,
    pub(crate) custom_total: IntCounterVec,
    pub(crate) custom_value: HistogramVec,
}

impl Metrics {
    pub(crate) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Metrics {
            invocations: IntCounterVec::new(
                Opts::new(
                    "flexgate_plugin_invocations_total",
                    "Plugin hook calls by outcome",
                ),
                &["plugin", "version", "route", "hook", "outcome"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new("flexgate_plugin_duration_seconds", "Plugin hook duration")
                    .buckets(DURATION_BUCKETS.to_vec()),
                &["plugin", "version", "hook"],
            )?,
            traps: IntCounterVec::new(
                Opts::new(
                    "flexgate_plugin_traps_total",
                    "Plugin instance failures by reason",
                ),
                &["plugin", "version", "reason"],
            )?,
            memory: IntGaugeVec::new(
                Opts::new(
                    "flexgate_plugin_memory_bytes",
                    "High-water linear memory per instance",
                ),
                &["plugin", "version"],
            )?,
            instantiations: IntCounterVec::new(
                Opts::new(
                    "flexgate_plugin_instantiations_total",
                    "Plugin instances created",
                ),
                &["plugin", "version"],
            )?,
            custom_total: IntCounterVec::new(
                Opts::new("flexgate_plugin_custom_total", "Plugin-defined counters"),
                &["plugin", "version", "name"],
            )?,
            custom_value: HistogramVec::new(
                HistogramOpts::new("flexgate_plugin_custom_value", "Plugin-defined histograms"),
                &["plugin", "version", "name"],
            )?,
        };
        registry.register(Box::new(m.invocations.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        registry.register(Box::new(m.traps.clone()))?;
        registry.register(Box::new(m.memory.clone()))?;
        registry.register(Box::new(m.instantiations.clone()))?;
        registry.register(Box::new(m.custom_total.clone()))?;
        registry.register(Box::new(m.custom_value.clone()))?;
        Ok(m)
    }
}

/// Label handles of one plugin version, resolved once at load time.
pub(crate) struct PluginMetrics {
    pub(crate) dur_request: Histogram,
    pub(crate) dur_response: Histogram,
    pub(crate) dur_init: Histogram,
    /// Indexed like `FailureKind` trap|timeout|memory|init.
    pub(crate) traps: [IntCounter; 4],
    pub(crate) memory: IntGauge,
    pub(crate) instantiations: IntCounter,
}

impl PluginMetrics {
    pub(crate) fn new(m: &Metrics, plugin: &str, version: &str) -> Self {
        let d = |hook| m.duration.with_label_values(&[plugin, version, hook]);
        let t = |reason| m.traps.with_label_values(&[plugin, version, reason]);
        PluginMetrics {
            dur_request: d("on_request"),
            dur_response: d("on_response"),
            dur_init: d("init"),
            traps: [t("trap"), t("timeout"), t("memory"), t("init")],
            memory: m.memory.with_label_values(&[plugin, version]),
            instantiations: m.instantiations.with_label_values(&[plugin, version]),
        }
    }
}

/// Invocation counters of one binding (plugin × route), `[hook][outcome]`.
pub(crate) struct BindingMetrics {
    /// hook 0 = on_request, 1 = on_response; outcome 0 = continue, 1 = respond, 2 = error.
    pub(crate) calls: [[IntCounter; 3]; 2],
}

impl BindingMetrics {
    pub(crate) fn new(m: &Metrics, plugin: &str, version: &str, route: &str) -> Self {
        let c = |hook, outcome| {
            m.invocations
                .with_label_values(&[plugin, version, route, hook, outcome])
        };
        BindingMetrics {
            calls: [
                [
                    c("on_request", "continue"),
                    c("on_request", "respond"),
                    c("on_request", "error"),
                ],
                [
                    c("on_response", "continue"),
                    c("on_response", "respond"),
                    c("on_response", "error"),
                ],
            ],
        }
    }
}
