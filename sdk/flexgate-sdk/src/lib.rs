//! Guest SDK for FlexGate plugins (`flexgate:plugin@0.1.0`, see `wit/plugin.wit`).
//!
//! A plugin is a type implementing [`Plugin`] plus one [`export!`] line:
//!
//! ```
//! use flexgate_sdk::{Action, Ctx, Error, Plugin, Request};
//!
//! #[derive(serde::Deserialize)]
//! struct Config { header: String }
//!
//! struct Tag(Config);
//!
//! impl Plugin for Tag {
//!     type Config = Config;
//!     fn new(config: Config) -> Result<Self, Error> { Ok(Tag(config)) }
//!     fn on_request(&self, ctx: &Ctx, req: &mut Request) -> Result<Action, Error> {
//!         req.set_header(&self.0.header, &ctx.request_id);
//!         Ok(Action::Continue)
//!     }
//! }
//! flexgate_sdk::export!(Tag);
//! ```
//!
//! On `wasm32` the macro wires the type to the generated component bindings; on every other
//! target the same types are plain Rust values, so plugin logic is unit-tested with `cargo test`.
#![cfg_attr(target_arch = "wasm32", no_std)]
extern crate alloc;
extern crate self as flexgate_sdk;

/// `String`, `Vec`, `format!`, ... from `alloc`: the SDK is `no_std` on `wasm32` so that plugins
/// built without `std` (see [`no_std_runtime!`]) import no WASI at all.
mod prelude {
    pub(crate) use alloc::boxed::Box;
    pub(crate) use alloc::format;
    pub(crate) use alloc::string::{String, ToString};
    pub(crate) use alloc::vec::Vec;
}
#[allow(unused_imports)]
use prelude::*;

mod headers;
pub mod log;
mod message;
pub mod metrics;
#[doc(hidden)]
pub mod rt;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "::flexgate_sdk::bindings",
        runtime_path: "::flexgate_sdk::rt::wit_bindgen::rt",
    });
}

pub use headers::Headers;
pub use message::{Request, Response};
pub use serde;
pub use serde_json;

/// Facts about the current request, passed to every hook.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ctx {
    /// Client socket address, `ip:port` (`[v6]:port`).
    pub client_addr: String,
    /// Name of the matched route.
    pub route: String,
    /// The gateway's request id.
    pub request_id: String,
    /// In `on_response`: what this plugin stored with [`Request::stash`] in `on_request`.
    pub stash: Option<String>,
}

impl Ctx {
    /// A context for unit tests.
    pub fn new(client_addr: &str, route: &str, request_id: &str) -> Self {
        Ctx {
            client_addr: client_addr.to_string(),
            route: route.to_string(),
            request_id: request_id.to_string(),
            stash: None,
        }
    }

    /// Builder: the stash as `on_response` would see it.
    pub fn with_stash(mut self, stash: Option<String>) -> Self {
        self.stash = stash;
        self
    }

    /// Client IP without the port (and without IPv6 brackets).
    pub fn client_ip(&self) -> &str {
        let a = self.client_addr.as_str();
        if let Some(rest) = a.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        match a.rsplit_once(':') {
            Some((ip, port)) if !ip.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => ip,
            _ => a,
        }
    }
}

/// What `on_request` decided.
#[derive(Debug)]
pub enum Action {
    /// Go on: next plugin, then the upstream.
    Continue,
    /// Answer the client with this response; later plugins and the upstream are skipped.
    Respond(Response<'static>),
}

/// A plugin error: the hook failed. The host applies the binding's `on_error` policy
/// (`fail_closed` answers 500, `fail_open` skips the plugin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl Error {
    /// An error with this message.
    pub fn new(msg: impl Into<String>) -> Self {
        Error(msg.into())
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl core::error::Error for Error {}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Self {
        Error(s.to_string())
    }
}

/// The plugin contract. Only `new` is required; the hooks default to doing nothing.
///
/// One value is built per Wasm instance from the route binding's `config` (deserialized with
/// serde; a missing/`null` config is read as `{}`), then reused for many requests.
pub trait Plugin: Sized + 'static {
    /// Typed configuration, deserialized from the binding's `config` JSON.
    type Config: serde::de::DeserializeOwned;

    /// Validate the config and build the plugin. An error makes the route fail to load.
    fn new(config: Self::Config) -> Result<Self, Error>;

    /// Inspect/modify the request, or answer it.
    fn on_request(&self, _ctx: &Ctx, _req: &mut Request<'_>) -> Result<Action, Error> {
        Ok(Action::Continue)
    }

    /// Inspect/modify the upstream response (runs in reverse chain order).
    fn on_response(&self, _ctx: &Ctx, _resp: &mut Response<'_>) -> Result<(), Error> {
        Ok(())
    }
}

/// Build a plugin from config JSON exactly as the host's `init` does (for tests).
pub fn instantiate<P: Plugin>(config_json: &str) -> Result<P, Error> {
    let trimmed = config_json.trim();
    let json = if trimmed.is_empty() || trimmed == "null" {
        "{}"
    } else {
        trimmed
    };
    let config: P::Config =
        serde_json::from_str(json).map_err(|e| Error(format!("invalid config: {e}")))?;
    P::new(config)
}

/// Export a [`Plugin`] type as the component's `handler`. Expands to nothing off `wasm32`.
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct FlexgateGuest;
            impl $crate::rt::Guest for FlexgateGuest {
                fn init(
                    config: $crate::rt::String,
                ) -> ::core::result::Result<(), $crate::rt::String> {
                    $crate::rt::init::<$plugin>(&config)
                }
                fn on_request(
                    info: $crate::rt::CallInfo,
                    req: $crate::rt::RequestBorrow<'_>,
                ) -> ::core::result::Result<$crate::rt::WitAction, $crate::rt::String> {
                    $crate::rt::on_request::<$plugin>(info, req)
                }
                fn on_response(
                    info: $crate::rt::CallInfo,
                    resp: $crate::rt::ResponseBorrow<'_>,
                ) -> ::core::result::Result<(), $crate::rt::String> {
                    $crate::rt::on_response::<$plugin>(info, resp)
                }
            }
    $crate::bindings::__export_plugin!(FlexgateGuest with_types_in $crate::bindings);
        };
    };
}

/// For plugins built `#![cfg_attr(target_arch = "wasm32", no_std)]`: on `wasm32`, the global
/// allocator (wasi-libc's `malloc`, as `std` uses on this target) and a panic handler that logs the message through
/// the host and traps. Expands to nothing off `wasm32`.
///
/// Why: a `std` guest on `wasm32-wasip2` links wasi-libc's stdio, environment and exit for its
/// panic path and imports 13 WASI interfaces. A plugin without them imports only
/// `flexgate:plugin`, so the host wires fewer imports per instance and can call it without an
/// async fiber: per-request instantiation and every hook call get cheaper. Plugins that need
/// `std` (or WASI stdout/stderr) keep working as before.
#[macro_export]
macro_rules! no_std_runtime {
    () => {
        #[cfg(target_arch = "wasm32")]
        #[global_allocator]
        static FLEXGATE_ALLOC: $crate::rt::LibcAlloc = $crate::rt::LibcAlloc;

        #[cfg(target_arch = "wasm32")]
        #[panic_handler]
        fn flexgate_panic(info: &::core::panic::PanicInfo<'_>) -> ! {
            $crate::rt::panic(info)
        }
    };
}
