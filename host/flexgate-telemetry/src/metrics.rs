use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Latency buckets in seconds, from 100 µs to 30 s: a gateway's own overhead sits in the first few.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// The gateway's own metrics. Labels are route and upstream names from the config, never raw request
/// paths, so cardinality is bounded by the config, not by clients.
#[derive(Clone)]
pub struct CoreMetrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub upstream_requests: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub open_connections: IntGauge,
    /// Idle HTTP/1.1 keep-alive connections holding no buffers (see `server.park_idle_after`).
    pub parked_connections: IntGauge,
    pub in_flight: IntGauge,
    pub config_reloads: IntCounterVec,
}

impl CoreMetrics {
    /// Registers every core metric on a fresh registry; later subsystems register on `registry` too.
    pub fn new(version: &str) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "flexgate_http_requests_total",
                "Requests answered, by route, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "flexgate_http_request_duration_seconds",
                "Time from request received to response fully sent, by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let upstream_requests = IntCounterVec::new(
            Opts::new(
                "flexgate_upstream_requests_total",
                "Attempts sent to upstream targets, by outcome (ok, 5xx, connect_failure, timeout, error).",
            ),
            &["upstream", "target", "outcome"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "flexgate_upstream_request_duration_seconds",
                "Time from sending an attempt until the upstream's response headers arrived.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["upstream"],
        )?;
        let open_connections = IntGauge::new(
            "flexgate_open_connections",
            "Downstream connections currently open.",
        )?;
        let parked_connections = IntGauge::new(
            "flexgate_parked_connections",
            "Idle HTTP/1.1 keep-alive connections parked without buffers (part of the open ones).",
        )?;
        let in_flight = IntGauge::new(
            "flexgate_in_flight_requests",
            "Requests currently being handled.",
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "flexgate_config_reloads_total",
                "Config reload attempts by result.",
            ),
            &["result"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "flexgate_build_info",
                "Always 1; labels describe the build.",
            ),
            &["version"],
        )?;
        build_info.with_label_values(&[version]).set(1);
        for result in ["success", "failure"] {
            config_reloads.with_label_values(&[result]);
        }
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(upstream_requests.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(open_connections.clone()))?;
        registry.register(Box::new(parked_connections.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(build_info))?;
        Ok(Self {
            registry,
            http_requests,
            http_duration,
            upstream_requests,
            upstream_duration,
            open_connections,
            parked_connections,
            in_flight,
            config_reloads,
        })
    }

    /// The duration histogram of one route, resolved once per config snapshot instead of per request.
    pub fn route_duration(&self, route: &str) -> Histogram {
        self.http_duration.with_label_values(&[route])
    }
}

/// Prometheus text exposition of everything registered on `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut buf = Vec::with_capacity(16 * 1024);
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut buf) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_encodes_core_metrics() {
        let m = CoreMetrics::new("9.9.9").expect("metrics");
        m.http_requests
            .with_label_values(&["r", "GET", "200"])
            .inc();
        let text = encode(&m.registry);
        assert!(
            text.contains(r#"flexgate_build_info{version="9.9.9"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"flexgate_http_requests_total{method="GET",route="r",status="200"} 1"#)
        );
        assert!(text.contains(r#"flexgate_config_reloads_total{result="failure"} 0"#));
    }
}
