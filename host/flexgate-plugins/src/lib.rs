//! Wasm plugin runtime for FlexGate.
//!
//! Plugins are WebAssembly components implementing `flexgate:plugin/plugin@0.1.0`
//! (`wit/plugin.wit`). One [`PluginRuntime`] per process owns the wasmtime engine (pooling
//! allocator, epoch deadlines, on-disk compile cache) and the metrics; [`PluginRuntime::load`]
//! turns component bytes into a shared [`LoadedPlugin`]; a route's plugins form a [`Chain`] of
//! [`Binding`]s that the proxy calls on every request and response.
//!
//! Isolation guarantees: deny-by-default WASI (no files, sockets, env or args; stdout/stderr go
//! to the log, truncated and rate-limited), a memory cap and a per-call deadline per instance;
//! a trap, timeout, memory exhaustion or a config its `init` refuses ([`Binding::failed`]) only
//! affects the requests that plugin touched.

mod bindings;
mod cache;
mod capture;
mod chain;
mod cli;
mod compiler;
mod error;
mod headers;
mod metrics;
mod plugin;
mod runtime;
mod state;
mod ticker;

pub use chain::{Binding, BodyMode, CallCtx, Chain, OnError, RequestOutcome};
pub use cli::{scaffold, test_plugin};
pub use compiler::{CompilerCommand, compiler_main};
pub use error::{ChainError, FailureKind, PluginError};
pub use plugin::{Isolation, LoadedPlugin, PluginSpec};
pub use runtime::{PluginRuntime, RuntimeOptions};
pub use state::{ReqState, RespState};

/// Internals exposed for `benches/` only; not a stable API.
#[doc(hidden)]
pub mod bench_support {
    /// What `headers()` does: copy every header into guest-bound pairs.
    pub fn headers_to_pairs(map: &http::HeaderMap) -> Vec<(String, String)> {
        crate::headers::all(map)
    }
    /// What `header(name)` does: copy one value.
    pub fn header_to_guest(map: &http::HeaderMap, name: &str) -> Option<String> {
        crate::headers::get(map, name)
    }
}
