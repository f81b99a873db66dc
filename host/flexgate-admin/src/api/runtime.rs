//! The two seams between this API and the running gateway, implemented by the binary: a read
//! (and breaker-reset) view of the live runtime, and the validator that decides at upload whether
//! bytes are a loadable plugin. Plain serializable DTOs only, so this crate needs neither the proxy
//! nor wasmtime.

use async_trait::async_trait;
use bytes::Bytes;
use flexgate_registry::StatsSnapshot;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One route of the running config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RouteInfo {
    /// Route name.
    pub name: String,
    /// Human-readable match (`host api.example.com, path /v1/*, methods GET POST`).
    pub matcher: String,
    /// Upstream name, if it proxies.
    pub upstream: Option<String>,
    /// The plugin chain, in request order.
    pub plugins: Vec<PluginBindingInfo>,
    /// Rate-limit policy summary, if any.
    pub rate_limit: Option<String>,
}

/// One plugin binding on a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PluginBindingInfo {
    /// Plugin name.
    pub plugin: String,
    /// A version pinned in YAML; `None` follows the rollout.
    pub pinned_version: Option<String>,
    /// The version(s) live now (stable, and canary if any).
    pub active_versions: Vec<String>,
}

/// Circuit breaker state of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Passing traffic.
    Closed,
    /// Refusing traffic until the cool-down ends.
    Open,
    /// Letting probe requests through.
    HalfOpen,
}

/// One upstream target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TargetInfo {
    /// `host:port` (the id used by the reset endpoint).
    pub target: String,
    /// Health-check verdict.
    pub healthy: bool,
    /// Circuit breaker state.
    pub breaker: BreakerState,
    /// Recent failure rate seen by the breaker (0..=1).
    pub failure_rate: f64,
}

/// One upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UpstreamInfo {
    /// Upstream name.
    pub name: String,
    /// Load-balancing policy.
    pub load_balancing: String,
    /// Targets.
    pub targets: Vec<TargetInfo>,
}

/// One rate-limit policy (routes carry them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RateLimitInfo {
    /// The route it applies to.
    pub route: String,
    /// Key source (`client_ip`, `header:X`, ...).
    pub key: String,
    /// e.g. `100/s`.
    pub rate: String,
    /// Burst size.
    pub burst: u32,
    /// `local` or `redis`.
    pub store: String,
}

/// What config is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConfigSummary {
    /// Config file path.
    pub file: String,
    /// SHA-256 of the file text, to tell which revision runs.
    pub sha256: String,
    /// RFC 3339 time it was loaded.
    pub loaded_at: String,
    /// Proxy listener.
    pub listen: String,
    /// Number of routes.
    pub routes: u64,
    /// Number of upstreams.
    pub upstreams: u64,
    /// Plugin names declared.
    pub plugins: Vec<String>,
}

/// Live stats of one version in a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VersionStats {
    /// Version.
    pub version: String,
    /// `stable` or `canary`.
    pub role: String,
    /// Counters and latency over the guard window.
    pub stats: StatsSnapshotDto,
}

/// Serializable copy of [`StatsSnapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct StatsSnapshotDto {
    /// Requests in the window.
    pub requests: u64,
    /// Failed requests, traps included.
    pub errors: u64,
    /// Traps.
    pub traps: u64,
    /// errors / requests.
    pub error_rate: f64,
    /// traps / requests.
    pub trap_rate: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

impl From<StatsSnapshot> for StatsSnapshotDto {
    fn from(s: StatsSnapshot) -> Self {
        StatsSnapshotDto {
            requests: s.requests,
            errors: s.errors,
            traps: s.traps,
            error_rate: s.error_rate,
            trap_rate: s.trap_rate,
            p50_ms: s.p50_ms,
            p99_ms: s.p99_ms,
        }
    }
}

/// A version pinned by YAML (`version:` on a route binding): it must not be deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PinnedVersion {
    /// Route name.
    pub route: String,
    /// Plugin name.
    pub plugin: String,
    /// Pinned version.
    pub version: String,
}

/// Why a breaker reset failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetError {
    /// No such upstream or target.
    NotFound(String),
}

/// The live gateway, as the admin API sees it. Implemented by the binary over its snapshot.
#[async_trait]
pub trait RuntimeView: Send + Sync + 'static {
    /// Routes of the running config.
    async fn routes(&self) -> Vec<RouteInfo>;
    /// Upstreams with breaker state per target.
    async fn upstreams(&self) -> Vec<UpstreamInfo>;
    /// Closes the breaker of one target; returns its new state.
    async fn reset_breaker(&self, upstream: &str, target: &str) -> Result<TargetInfo, ResetError>;
    /// Rate-limit policies.
    async fn rate_limits(&self) -> Vec<RateLimitInfo>;
    /// The running config.
    async fn config_summary(&self) -> ConfigSummary;
    /// Live per-version stats of a rollout (empty when it serves no traffic).
    async fn rollout_stats(&self, route: &str, plugin: &str) -> Vec<VersionStats>;
    /// Plugin versions pinned by YAML.
    async fn pinned_versions(&self) -> Vec<PinnedVersion>;
}

/// What a successful validation learned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatedInfo {
    /// The world the component implements, e.g. `flexgate:plugin/plugin@0.1.0`.
    pub wit_world: String,
}

/// Why an upload is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionKind {
    /// Not WebAssembly at all (400).
    NotWebAssembly,
    /// A core module, not a component (400).
    NotAComponent,
    /// A component of another world (422).
    WrongWorld,
    /// `init` with the example config trapped or refused (422).
    InitFailed,
}

/// A refused upload: the kind decides the status, the message is shown as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRejection {
    /// What was wrong.
    pub kind: RejectionKind,
    /// For the uploader.
    pub message: String,
}

impl UploadRejection {
    /// 400 for bytes that are not a component at all, 422 for a component that will not work.
    pub fn status(&self) -> u16 {
        match self.kind {
            RejectionKind::NotWebAssembly | RejectionKind::NotAComponent => 400,
            RejectionKind::WrongWorld | RejectionKind::InitFailed => 422,
        }
    }

    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self.kind {
            RejectionKind::NotWebAssembly => "not_webassembly",
            RejectionKind::NotAComponent => "not_a_component",
            RejectionKind::WrongWorld => "wrong_world",
            RejectionKind::InitFailed => "init_failed",
        }
    }
}

/// Decides at upload whether bytes are a loadable plugin (the real one compiles and runs `init`).
#[async_trait]
pub trait PluginValidator: Send + Sync + 'static {
    /// Validates `bytes` for plugin `name`, running `init` with `example_config` (JSON) if given.
    async fn validate(
        &self,
        name: &str,
        bytes: Bytes,
        example_config: Option<&str>,
    ) -> Result<ValidatedInfo, UploadRejection>;
}

/// The WIT world every plugin implements today.
pub const PLUGIN_WORLD: &str = "flexgate:plugin/plugin@0.1.0";

/// A validator that only reads the 8-byte preamble: `\0asm`, then version 1 / layer 0 for a core
/// module or layer 1 for a component. It cannot see the world, so it reports [`PLUGIN_WORLD`];
/// the runtime-backed validator replaces it in the gateway.
#[derive(Debug, Clone, Copy, Default)]
pub struct WasmHeaderValidator;

#[async_trait]
impl PluginValidator for WasmHeaderValidator {
    async fn validate(
        &self,
        _name: &str,
        bytes: Bytes,
        _example_config: Option<&str>,
    ) -> Result<ValidatedInfo, UploadRejection> {
        check_header(&bytes)?;
        Ok(ValidatedInfo {
            wit_world: PLUGIN_WORLD.into(),
        })
    }
}

/// The preamble check shared with any richer validator.
pub fn check_header(bytes: &[u8]) -> Result<(), UploadRejection> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(UploadRejection {
            kind: RejectionKind::NotWebAssembly,
            message: "not WebAssembly: the file does not start with the `\\0asm` magic".into(),
        });
    }
    match (u16::from_le_bytes([bytes[4], bytes[5]]), u16::from_le_bytes([bytes[6], bytes[7]])) {
        (_, 1) => Ok(()),
        (1, 0) => Err(UploadRejection {
            kind: RejectionKind::NotAComponent,
            message: "this is a core WebAssembly module, not a component; build the plugin with `cargo build --target wasm32-wasip2` (or wrap it with `wasm-tools component new`)".into(),
        }),
        (version, layer) => Err(UploadRejection {
            kind: RejectionKind::NotWebAssembly,
            message: format!("unsupported WebAssembly binary (version {version}, layer {layer})"),
        }),
    }
}
