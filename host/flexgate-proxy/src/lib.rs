//! The data path: listeners, route matching, upstream pools and load balancing, the request pipeline,
//! and the mapping of every gateway error to an HTTP answer.
//!
//! Where things happen, by file:
//! - `server.rs`: accept and drain; `conn/`: one connection (TLS/ALPN, h2c, HTTP/1.1 + upgrades,
//!   parking of idle keep-alive connections);
//! - `pipeline.rs`: one request end to end (checks → route → respond or forward → log);
//! - `router.rs`: which route answers (precedence rules documented there);
//! - `plugins.rs`: which Wasm plugin versions a route runs (stable/canary), per-version stats;
//! - `forward.rs`: rewrite, pick a target, attempts, retries, upgrades;
//! - `upstream/`: targets, balancing, passive and active health, pooled clients;
//! - `resilience.rs` + `limit.rs`: circuit breakers, in-flight caps and rate limits, wired from the config;
//! - `headers.rs`: hop-by-hop and forwarding headers; `error.rs`: errors → JSON answers;
//! - `snapshot.rs` + `gateway.rs`: the compiled config and its atomic swap on reload.
#![forbid(unsafe_code)]

pub mod access;
pub mod body;
pub mod conn;
pub mod error;
pub mod forward;
pub mod gateway;
pub mod headers;
pub mod limit;
pub mod pipeline;
pub mod plugins;
pub mod request_id;
pub mod resilience;
pub mod router;
pub mod server;
pub mod snapshot;
pub mod transform;
pub mod upstream;

pub use gateway::Gateway;
