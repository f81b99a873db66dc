//! Logs and metrics for the whole gateway: one `tracing` setup and one Prometheus registry per process,
//! passed around explicitly (no global registries), so tests can build as many gateways as they like.
#![forbid(unsafe_code)]

mod logging;
mod metrics;

pub use logging::{LogFormat, init_logging};
pub use metrics::{CoreMetrics, encode};
