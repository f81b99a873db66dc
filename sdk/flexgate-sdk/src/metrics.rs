//! Plugin-defined metrics (`flexgate:plugin/host.counter-add` / `histogram-observe`).
//!
//! They appear in Prometheus as `flexgate_plugin_custom_total{plugin,version,name}` and
//! `flexgate_plugin_custom_value{plugin,version,name}`. Names must match `[a-z_][a-z0-9_]*`
//! (at most 64 chars); the host keeps at most 32 distinct names per plugin and drops the rest.
//! Natively the values are kept in a thread-local buffer so tests can assert on them.

use crate::prelude::*;

/// Add `value` to the counter `name`.
pub fn counter_add(name: &str, value: u64) {
    imp::counter_add(name, value)
}

/// Increment the counter `name` by one.
pub fn increment(name: &str) {
    counter_add(name, 1)
}

/// Observe `value` in the histogram `name`.
pub fn observe(name: &str, value: f64) {
    imp::observe(name, value)
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use crate::bindings::flexgate::plugin::host;
    pub fn counter_add(name: &str, value: u64) {
        host::counter_add(name, value)
    }
    pub fn observe(name: &str, value: f64) {
        host::histogram_observe(name, value)
    }
}

/// A recorded metric update (native builds only).
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// `counter_add(name, value)`.
    Counter(String, u64),
    /// `observe(name, value)`.
    Observe(String, f64),
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::Recorded;
    use std::cell::RefCell;

    thread_local! {
        static REC: RefCell<Vec<Recorded>> = const { RefCell::new(Vec::new()) };
    }
    pub fn counter_add(name: &str, value: u64) {
        REC.with(|r| {
            r.borrow_mut()
                .push(Recorded::Counter(name.to_string(), value))
        });
    }
    pub fn observe(name: &str, value: f64) {
        REC.with(|r| {
            r.borrow_mut()
                .push(Recorded::Observe(name.to_string(), value))
        });
    }
    pub fn take() -> Vec<Recorded> {
        REC.with(|r| std::mem::take(&mut *r.borrow_mut()))
    }
}

/// Natively: the metric updates made on this thread since the last call (for tests).
#[cfg(not(target_arch = "wasm32"))]
pub fn take_captured() -> Vec<Recorded> {
    imp::take()
}
