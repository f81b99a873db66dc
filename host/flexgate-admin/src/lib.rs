//! The admin listener (health now; the admin API and UI come later) and the metrics listener.
#![forbid(unsafe_code)]

pub mod api;
mod health;

pub use health::{Readiness, health_router};

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::Registry;

/// `GET /metrics` in the Prometheus text format, for the metrics listener.
pub fn metrics_router(registry: Registry) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    flexgate_telemetry::encode(&registry),
                )
                    .into_response()
            }
        }),
    )
}
