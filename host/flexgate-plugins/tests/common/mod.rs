//! Shared helpers: real components from plugins/dist, a runtime per test, request builders.
#![allow(dead_code, clippy::unwrap_used)]

use bytes::Bytes;
use flexgate_plugins::{
    Binding, BodyMode, CallCtx, Chain, Isolation, LoadedPlugin, OnError, PluginRuntime, PluginSpec,
    RuntimeOptions,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Bytes of `plugins/dist/NAME.wasm`; fails with instructions when the build step was skipped.
pub fn wasm(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/dist")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): run plugins/build.sh first to build the plugin components",
            path.display()
        )
    })
}

pub fn runtime() -> (Arc<PluginRuntime>, prometheus::Registry) {
    let registry = prometheus::Registry::new();
    let opts = RuntimeOptions {
        cache_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")),
        max_instances: 64,
        ..RuntimeOptions::default()
    };
    (PluginRuntime::new(opts, &registry).unwrap(), registry)
}

/// Deadline used by tests that are not about deadlines: CI machines are shared and a starved
/// test thread must not turn into a spurious timeout.
pub const RELAXED: Duration = Duration::from_secs(2);

pub fn load(rt: &PluginRuntime, name: &str, isolation: Isolation) -> Arc<LoadedPlugin> {
    let mut spec = PluginSpec::new(name, "1.0.0", wasm(name));
    spec.isolation = isolation;
    spec.timeout = RELAXED;
    rt.load(spec).unwrap()
}

pub fn load_with(
    rt: &PluginRuntime,
    name: &str,
    f: impl FnOnce(&mut PluginSpec),
) -> Arc<LoadedPlugin> {
    let mut spec = PluginSpec::new(name, "1.0.0", wasm(name));
    spec.timeout = RELAXED;
    f(&mut spec);
    rt.load(spec).unwrap()
}

pub async fn bind(
    p: &Arc<LoadedPlugin>,
    config: &str,
    on_error: OnError,
    body: BodyMode,
) -> Binding {
    Binding::new(p.clone(), "test-route", config.to_string(), on_error, body)
        .await
        .unwrap()
}

pub fn ctx() -> CallCtx {
    CallCtx::new("192.0.2.7:40000".parse().unwrap(), "test-route", "req-123")
}

pub fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap().into_parts().0
}

pub fn response(status: u16, headers: &[(&str, &str)]) -> http::response::Parts {
    let mut b = http::Response::builder().status(status);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap().into_parts().0
}

pub fn header(map: &http::HeaderMap, name: &str) -> Option<String> {
    map.get(name).map(|v| v.to_str().unwrap().to_string())
}

pub fn body_json(b: &Bytes) -> serde_json::Value {
    serde_json::from_slice(b).unwrap()
}

pub fn metric_value(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    for mf in registry.gather() {
        if mf.name() != name {
            continue;
        }
        for m in mf.get_metric() {
            let ok = labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            });
            if ok {
                total += match mf.get_field_type() {
                    prometheus::proto::MetricType::COUNTER => m.get_counter().get_value(),
                    prometheus::proto::MetricType::GAUGE => m.get_gauge().get_value(),
                    _ => m.get_histogram().get_sample_count() as f64,
                };
            }
        }
    }
    total
}

pub fn single(b: Binding) -> Chain {
    Chain::new(vec![Arc::new(b)])
}
