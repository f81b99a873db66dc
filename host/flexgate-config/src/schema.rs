//! The typed configuration file (`version: 1`). Every struct refuses unknown keys so that a typo is an
//! error with a line number instead of a silently ignored setting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::units::{ByteSize, Dur};

/// The whole file. Topology (listeners, upstreams, routes) is config-as-code; the plugin lifecycle
/// (uploaded versions, which version each route runs) lives in the registry `store`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Schema version; only `1` exists.
    pub version: u32,
    /// Proxy listener.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// TLS on the proxy listener (ALPN h2 + http/1.1). Absent: plain HTTP/1.1 and h2c.
    #[serde(default)]
    pub tls: Option<Tls>,
    /// Admin API listener.
    #[serde(default)]
    pub admin: Admin,
    /// Metrics listener.
    #[serde(default)]
    pub metrics: Metrics,
    /// Logging settings.
    #[serde(default)]
    pub log: Log,
    /// Downstream connection handling.
    #[serde(default)]
    pub server: Server,
    /// Only needed when a route uses `rate_limit.store: redis`.
    #[serde(default)]
    pub redis: Option<Redis>,
    /// Where the plugin registry (uploaded versions, rollouts, audit log) lives.
    #[serde(default)]
    pub store: StoreConfig,
    /// Wasm plugins available to routes: a `source` file, or (without `source`) the registry.
    #[serde(default)]
    pub plugins: Vec<Plugin>,
    #[serde(default)]
    pub upstreams: Vec<Upstream>,
    #[serde(default)]
    pub routes: Vec<Route>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}

/// Certificate chain and private key (PEM) for the proxy listener; relative paths are resolved
/// against the config file's folder by [`Config::resolve_paths`].
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The admin listener (health, admin API); loopback by default because it can change the running
/// gateway.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Who may call the admin API.
    #[serde(default)]
    pub auth: AdminAuthConfig,
    /// Largest plugin upload; larger ones get 413.
    #[serde(default = "default_max_upload")]
    pub max_upload: ByteSize,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            auth: AdminAuthConfig::default(),
            max_upload: default_max_upload(),
        }
    }
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081))
}

fn default_max_upload() -> ByteSize {
    ByteSize(20 * 1024 * 1024)
}

/// `admin.auth`: HS256 tokens (`POST /api/auth/login` for users, or static API tokens), each with
/// a role: viewer, operator or admin.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminAuthConfig {
    /// Name of the environment variable holding the JWT secret (the secret never goes in the file).
    /// When the variable is not set, a random secret is generated at start (tokens do not survive a
    /// restart and are not shared between replicas).
    #[serde(default = "default_jwt_secret_env")]
    pub jwt_secret_env: String,
    /// YAML users file (`users: [{name, password_hash, role}]`) for `POST /api/auth/login`.
    #[serde(default)]
    pub users_file: Option<PathBuf>,
    /// YAML tokens file (`tokens: [{name, sha256, role}]`): static API tokens for automation.
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
}

impl Default for AdminAuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret_env: default_jwt_secret_env(),
            users_file: None,
            tokens_file: None,
        }
    }
}

/// The default `admin.auth.jwt_secret_env`.
pub const DEFAULT_JWT_SECRET_ENV: &str = "FLEXGATE_ADMIN_JWT_SECRET";

fn default_jwt_secret_env() -> String {
    DEFAULT_JWT_SECRET_ENV.to_owned()
}

/// `store: { kind: file, path: ./data }` (default: embedded, nothing else to run) or
/// `store: { kind: redis, url: "redis://..." }` (shared by every replica).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// A local data folder, relative to the config file's folder.
    File {
        /// Data folder (created when missing).
        #[serde(default = "default_store_path")]
        path: PathBuf,
    },
    /// A Redis shared by every replica.
    Redis {
        /// `redis://host:port[/db]` or `rediss://...`.
        url: String,
        /// Key prefix, to share one Redis between gateways that must not see each other's plugins
        /// (default `flexgate:registry`).
        #[serde(default)]
        prefix: Option<String>,
    },
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::File {
            path: default_store_path(),
        }
    }
}

fn default_store_path() -> PathBuf {
    PathBuf::from("data")
}

/// The Prometheus scrape listener (`/metrics`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            listen: default_metrics_listen(),
        }
    }
}

fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9090))
}

/// Logging. `RUST_LOG`, when set, wins over `level`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Log {
    #[serde(default = "default_log_level")]
    pub level: String,
    /// One line per request at info level, target `flexgate::access`.
    #[serde(default = "yes")]
    pub access_log: bool,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            access_log: true,
        }
    }
}

fn default_log_level() -> String {
    "info".to_owned()
}

fn yes() -> bool {
    true
}

/// Downstream connection handling shared by every route.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// A client must finish sending request headers within this time, or the connection is closed (408).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Dur,
    /// Total size of request headers (names + values); beyond it: 431.
    #[serde(default = "default_max_header_size")]
    pub max_header_size: ByteSize,
    /// Idle keep-alive downstream connections are closed after this.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Dur,
    /// An HTTP/1.1 keep-alive connection without a request for this long (at most twice this)
    /// gives its buffers back and waits for the next request with none, as nginx does; `0s`
    /// never parks. An idle connection then costs ~1 KiB instead of ~21 KiB.
    #[serde(default = "default_park_idle_after")]
    pub park_idle_after: Dur,
    /// SIGTERM: how long in-flight requests may take to finish before the process exits anyway.
    #[serde(default = "default_grace_period")]
    pub grace_period: Dur,
    /// Worker threads of the runtime; 0 = one per core.
    #[serde(default)]
    pub workers: usize,
    /// Per-connection HTTP/2 stream cap.
    #[serde(default = "default_h2_streams")]
    pub h2_max_concurrent_streams: u32,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            header_read_timeout: default_header_read_timeout(),
            max_header_size: default_max_header_size(),
            idle_timeout: default_idle_timeout(),
            park_idle_after: default_park_idle_after(),
            grace_period: default_grace_period(),
            workers: 0,
            h2_max_concurrent_streams: default_h2_streams(),
        }
    }
}

fn default_header_read_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_max_header_size() -> ByteSize {
    ByteSize(64 * 1024)
}
fn default_idle_timeout() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_park_idle_after() -> Dur {
    Dur(Duration::from_millis(500))
}
fn default_grace_period() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_h2_streams() -> u32 {
    256
}

/// The shared store for cluster-wide rate limits.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Latency budget per rate-limit decision; slower answers count as store errors.
    #[serde(default = "default_redis_timeout")]
    pub timeout: Dur,
}

fn default_redis_timeout() -> Dur {
    Dur(Duration::from_millis(5))
}

/// A named pool of targets that routes forward to, with its balancing and resilience policy.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub name: String,
    pub targets: Vec<Target>,
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    /// For `consistent_hash`: `client_ip` (default) or `header:NAME`.
    #[serde(default)]
    pub hash_key: Option<KeySource>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub retries: Retries,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub passive_health: PassiveHealth,
    /// Upstream protocol: `http1` (default, pooled keep-alive) or `h2` (prior knowledge).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Idle pooled connections kept per target.
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle: usize,
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Concurrency cap for the whole upstream: 503 beyond it.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
}

fn default_pool_max_idle() -> usize {
    256
}

/// One backend instance of an upstream.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `host:port`.
    pub addr: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// How a request picks a target among the healthy ones.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    #[default]
    RoundRobin,
    LeastRequests,
    ConsistentHash,
}

/// The HTTP version spoken to the targets.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    H2,
}

/// Where a per-request key comes from: `client_ip`, `route`, or `header:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    ClientIp,
    Route,
    /// Lower-cased header name.
    Header(String),
}

/// Upstream timeouts.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default = "default_connect_timeout")]
    pub connect: Dur,
    /// From sending the request until the response headers arrive.
    #[serde(default = "default_request_timeout")]
    pub request: Dur,
    /// Idle pooled upstream connections are closed after this.
    #[serde(default = "default_upstream_idle")]
    pub idle: Dur,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: default_connect_timeout(),
            request: default_request_timeout(),
            idle: default_upstream_idle(),
        }
    }
}

fn default_connect_timeout() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_request_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_upstream_idle() -> Dur {
    Dur(Duration::from_secs(90))
}

/// Retries apply to idempotent methods only and never once the request body started streaming.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Extra attempts after the first.
    #[serde(default = "default_retry_attempts")]
    pub attempts: u32,
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            attempts: default_retry_attempts(),
            on: default_retry_on(),
        }
    }
}

fn default_retry_attempts() -> u32 {
    1
}
fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::ConnectFailure]
}

/// A retry condition: `connect_failure`, `timeout`, or an exact status such as `"503"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    ConnectFailure,
    Timeout,
    Status(u16),
}

/// Active health checking: a request to `path` on every target each `interval`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: String,
    #[serde(default = "default_hc_interval")]
    pub interval: Dur,
    #[serde(default = "default_hc_timeout")]
    pub timeout: Dur,
    /// Consecutive successes that mark a target healthy again.
    #[serde(default = "default_hc_healthy")]
    pub healthy: u32,
    /// Consecutive failures that mark a target unhealthy.
    #[serde(default = "default_hc_unhealthy")]
    pub unhealthy: u32,
}

fn default_hc_interval() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_hc_timeout() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_hc_healthy() -> u32 {
    2
}
fn default_hc_unhealthy() -> u32 {
    3
}

/// A target whose connects fail `connect_failures` times in a row is skipped for `eject_for`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealth {
    #[serde(default = "default_passive_failures")]
    pub connect_failures: u32,
    #[serde(default = "default_eject_for")]
    pub eject_for: Dur,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self {
            connect_failures: default_passive_failures(),
            eject_for: default_eject_for(),
        }
    }
}

fn default_passive_failures() -> u32 {
    1
}
fn default_eject_for() -> Dur {
    Dur(Duration::from_secs(5))
}

/// Stops sending to a failing upstream for a while (`open_for`, at most `max_open_for`), then lets
/// `half_open_probes` requests through to test it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Trip after this many failures in a row.
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    /// Or trip on a failure ratio over a sliding window.
    #[serde(default)]
    pub failure_rate: Option<FailureRate>,
    #[serde(default = "default_open_for")]
    pub open_for: Dur,
    #[serde(default = "default_max_open_for")]
    pub max_open_for: Dur,
    #[serde(default = "default_half_open_probes")]
    pub half_open_probes: u32,
    #[serde(default = "default_failure_on")]
    pub failure_on: Vec<FailureOn>,
}

fn default_open_for() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_max_open_for() -> Dur {
    Dur(Duration::from_secs(120))
}
fn default_half_open_probes() -> u32 {
    3
}
fn default_failure_on() -> Vec<FailureOn> {
    vec![
        FailureOn::ConnectFailure,
        FailureOn::Timeout,
        FailureOn::Class(5),
    ]
}

/// Trip when at least `threshold` of the requests in the last `window` failed, once there were
/// `min_requests` of them.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FailureRate {
    pub threshold: f64,
    pub window: Dur,
    pub min_requests: u32,
}

/// What counts as a failure for the breaker: `connect_failure`, `timeout`, a class `"5xx"`, or an exact `"503"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOn {
    ConnectFailure,
    Timeout,
    /// The hundreds digit: `5` for `5xx`.
    Class(u16),
    Status(u16),
}

/// A rule that matches requests and either forwards them to an upstream or answers directly.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: String,
    #[serde(default, rename = "match")]
    pub matcher: Match,
    /// Remove the matched `path_prefix` before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Forward the client's Host header (default) instead of the target address.
    #[serde(default = "yes")]
    pub preserve_host: bool,
    /// Exactly one of `upstream` and `respond`.
    #[serde(default)]
    pub upstream: Option<String>,
    #[serde(default)]
    pub respond: Option<Respond>,
    /// Request bodies larger than this get 413. Unset: unlimited (streamed).
    #[serde(default)]
    pub max_body: Option<ByteSize>,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// The plugin chain: in order on request, in reverse on response.
    #[serde(default)]
    pub plugins: Vec<PluginBinding>,
}

/// A Wasm plugin that routes can bind by name.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Plugin {
    pub name: String,
    /// Path to a `.wasm` component, relative to the config file's folder. Absent: the plugin comes
    /// from the registry (a binding's `version:` pin, otherwise the route's rollout in the store).
    #[serde(default)]
    pub source: Option<PathBuf>,
    #[serde(default)]
    pub isolation: Isolation,
    #[serde(default)]
    pub limits: PluginLimits,
    /// `pooled` only: an instance is recycled after this many requests.
    #[serde(default = "default_recycle_after")]
    pub recycle_after: u64,
}

fn default_recycle_after() -> u64 {
    10_000
}

/// How plugin instances are shared between requests.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Warm instances reused per worker, recycled after `recycle_after` requests or any trap.
    #[default]
    Pooled,
    /// A fresh instance for every request.
    PerRequest,
}

/// Per-instance resource caps, so one plugin cannot starve the gateway.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginLimits {
    #[serde(default = "default_plugin_memory")]
    pub memory: ByteSize,
    #[serde(default = "default_plugin_timeout")]
    pub timeout: Dur,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            memory: default_plugin_memory(),
            timeout: default_plugin_timeout(),
        }
    }
}

fn default_plugin_memory() -> ByteSize {
    ByteSize(16 * 1024 * 1024)
}
fn default_plugin_timeout() -> Dur {
    Dur(Duration::from_millis(10))
}

/// One entry of a route's plugin chain.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginBinding {
    /// Name of an entry in the top-level `plugins`.
    #[serde(rename = "use")]
    pub plugin: String,
    /// Passed to the plugin's `init` as JSON.
    #[serde(default)]
    pub config: serde_json::Value,
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default)]
    pub body: BodyMode,
    /// Pin a registry version (plugins without `source` only); unset follows the route's rollout.
    #[serde(default)]
    pub version: Option<String>,
}

/// What a plugin failure (trap, timeout, limit) does to the request.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// 500 JSON error with the request id.
    #[default]
    FailClosed,
    /// Skip this plugin for this request.
    FailOpen,
}

/// Whether a plugin gets the request and response bodies.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BodyMode {
    /// Bodies stream through untouched; the plugin sees headers only.
    #[default]
    None,
    /// Buffer up to the route's `max_body` so the plugin can read and replace the body.
    Buffer,
}

/// Every field is optional; all given fields must match.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// `api.example.com` or `*.example.com` (matches any subdomain, not the apex).
    #[serde(default)]
    pub host: Option<String>,
    /// Segment-aware prefix: `/users` matches `/users` and `/users/1`, not `/usersx`.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Exact path (query excluded).
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header name → exact value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// A fixed response, for health endpoints, redirects and placeholders without an upstream.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Respond {
    #[serde(default = "default_respond_status")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

fn default_respond_status() -> u16 {
    200
}

/// A limit per key: `rate` sustained, plus `burst` extra requests for short spikes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    #[serde(default = "default_rl_key")]
    pub key: KeySource,
    pub rate: Rate,
    #[serde(default)]
    pub burst: u32,
    #[serde(default)]
    pub store: RateLimitStore,
    #[serde(default)]
    pub on_store_error: OnStoreError,
}

fn default_rl_key() -> KeySource {
    KeySource::ClientIp
}

/// `100/s`, `6000/min`, `1000/h`: requests per period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub requests: u64,
    pub per: Duration,
}

/// Where the token buckets live: per-process, or shared through the top-level `redis`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitStore {
    #[default]
    Local,
    Redis,
}

/// What a redis rate-limit decision does when the store is down or too slow: fall back to a local
/// bucket, let the request through, or refuse it.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    #[default]
    Local,
    Allow,
    Deny,
}
