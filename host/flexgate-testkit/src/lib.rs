//! FlexGate's test kit: a black-box [`Gateway`] harness around the real binary, in-process upstreams
//! (echo, upload sink, download source, slow, broken, trailers, WebSocket, switchable health, scripted
//! faults), a throwaway `redis-server`,
//! clients (HTTP/1.1, h2c, TLS with ALPN, raw TCP) and generated TLS certificates.
//!
//! Everything binds `127.0.0.1:0`, so tests run in parallel. Crates the tests need are re-exported,
//! so an integration test only depends on this crate and `tokio`.

pub mod client;
pub mod gateway;
pub mod jwt;
pub mod pattern;
pub mod redis;
pub mod sched;
pub mod scripted;
pub mod tls;
pub mod upstream;
pub mod yaml;

pub use client::{
    Body, Collected, HttpClient, RawConn, RawHead, collect, conn_fetch, empty, full, pattern_body,
    raw_exchange, raw_fetch, raw_status, request, slow_body, stream_body, tls_connect, tls_fetch,
};
pub use gateway::{Gateway, GatewayBuilder, Signal, Stream, metric_value};
pub use pattern::PatternCheck;
pub use redis::RedisServer;
pub use sched::{RunqueueWait, Starved};
pub use scripted::ScriptedUpstream;
pub use tls::TestCerts;
pub use upstream::{
    BreakMode, BrokenUpstream, DownloadSource, EchoOptions, EchoReport, EchoUpstream, RefusedPort,
    SinkReport, TrailersUpstream, UploadSink, WsEchoUpstream, free_port, refused_addr, sha256_hex,
};

pub use {
    bytes, futures_util, http, http_body, http_body_util, hyper, serde_json, tempfile,
    tokio_tungstenite,
};

/// The error type used across the kit.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Polls `check` every 25 ms until it returns `true` or `timeout` passes; returns the last result.
pub async fn eventually<F, Fut>(timeout: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}
