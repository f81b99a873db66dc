//! Host bindings generated from `wit/plugin.wit` (the single source of truth).
//!
//! Imports are synchronous (they only touch host memory) and `trappable` so that a bad
//! resource handle traps the guest instead of panicking the host; exports are `async` because
//! the engine runs with async support (required by async WASI, see `runtime.rs`).

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "plugin",
    imports: { default: trappable },
    exports: { default: async },
    with: {
        "flexgate:plugin/types.request": crate::state::ReqState,
        "flexgate:plugin/types.response": crate::state::RespState,
    },
});

pub(crate) use flexgate::plugin::host::Level;
pub(crate) use flexgate::plugin::types::{Action, CallInfo, Reply};
