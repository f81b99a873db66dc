//! Circuit breakers and in-flight caps, end to end through real sockets: trip counts, no connection
//! while open, bounded half-open probing, ratio trips, the all-open answer and its latency, state
//! across a reload.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flexgate_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_flexgate");

/// The tests here measure timing (open periods, latency): run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One upstream `up` over `targets` with `breaker` (lines under `circuit_breaker:`) and a catch-all
/// route. Passive health is effectively off so the breaker alone decides.
fn config(targets: &[SocketAddr], breaker: &str, extra: &str) -> String {
    let upstream = format!(
        "    passive_health:\n      connect_failures: 1000000\n    circuit_breaker:\n{breaker}{extra}"
    );
    yaml::proxy_all(targets, &upstream, "")
}

/// A sample's value by metric name and label values, whatever order the labels print in.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            (metric == name).then_some((rest.trim_end_matches('}'), value))
        })
        .find(|(set, _)| {
            labels
                .iter()
                .all(|(k, v)| set.split(',').any(|kv| kv == format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, v)| v.parse().ok())
}

async fn state_of(gw: &Gateway, target: SocketAddr) -> Option<f64> {
    let t = target.to_string();
    sample(
        &gw.metrics_text().await,
        "flexgate_circuit_state",
        &[("upstream", "up"), ("target", &t)],
    )
}

async fn transitions(gw: &Gateway, target: SocketAddr, from: &str, to: &str) -> f64 {
    let t = target.to_string();
    sample(
        &gw.metrics_text().await,
        "flexgate_circuit_transitions_total",
        &[
            ("upstream", "up"),
            ("target", &t),
            ("from", from),
            ("to", to),
        ],
    )
    .unwrap_or(0.0)
}

async fn get(c: &HttpClient, gw: &Gateway) -> Collected {
    c.get(&gw.url("/r")).await.expect("request")
}

/// The 503 every-circuit-open answer: JSON with a `Retry-After` in whole seconds.
fn assert_open_answer(r: &Collected) -> u64 {
    let body = r.assert_json_error(503);
    let msg = body["error"].as_str().unwrap_or("");
    assert!(msg.contains("circuit"), "error message: {msg}");
    r.header("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no numeric Retry-After: {:?}", r.headers))
}

const PROBING: &str = "      consecutive_failures: 3\n      open_for: 1s\n      max_open_for: 8s\n      half_open_probes: 2\n";

/// A target that refuses connections trips after exactly 3 failures, gets no connection while open
/// (a listener then takes its port and counts accepts), at most 2 probes when half-open, and closes
/// once they succeed.
#[tokio::test]
async fn refused_target_trips_on_exact_count_then_probes_and_closes() {
    let _serial = SERIAL.lock().await;
    let refused = RefusedPort::new();
    let addr = refused.addr();
    let gw = Gateway::start(BIN, &config(&[addr], PROBING, "")).await;
    let c = HttpClient::http1();
    let connect_failures = |text: &str| {
        sample(
            text,
            "flexgate_upstream_requests_total",
            &[("upstream", "up"), ("outcome", "connect_failure")],
        )
        .unwrap_or(0.0)
    };

    for i in 0..3 {
        assert_eq!(
            state_of(&gw, addr).await,
            Some(0.0),
            "closed before failure {i}"
        );
        get(&c, &gw).await.assert_json_error(502);
    }
    let tripped = Instant::now();
    assert_eq!(state_of(&gw, addr).await, Some(1.0), "open after exactly 3");
    assert_eq!(connect_failures(&gw.metrics_text().await), 3.0);

    // Open: answered at once, no connection attempt, even once the target is back up.
    for _ in 0..3 {
        let retry = assert_open_answer(&get(&c, &gw).await);
        assert_eq!(retry, 1, "Retry-After for open_for 1s");
    }
    let up = ScriptedUpstream::start_on(refused.release()).await;
    up.set_delay(Duration::from_millis(300));
    let mut open_answers = 0;
    while tripped.elapsed() < Duration::from_millis(700) {
        assert_open_answer(&get(&c, &gw).await);
        open_answers += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(open_answers > 5);
    assert_eq!(
        up.accepts(),
        0,
        "a connection reached the target while its circuit was open"
    );
    assert_eq!(connect_failures(&gw.metrics_text().await), 3.0);

    // Half-open: 8 requests at once, at most 2 reach the target, and their success closes it.
    tokio::time::sleep(Duration::from_millis(1100).saturating_sub(tripped.elapsed())).await;
    let burst: Vec<_> = (0..8)
        .map(|_| {
            let (c, url) = (c.clone(), gw.url("/r"));
            tokio::spawn(async move { c.get(&url).await.expect("request") })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in burst {
        statuses.push(t.await.expect("task").status.as_u16());
    }
    let probes = up.accepts();
    eprintln!("half-open burst: {statuses:?}, probes that reached the target: {probes}");
    assert!(
        (1..=2).contains(&probes),
        "{probes} probes for half_open_probes: 2"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count() as u64,
        probes
    );
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 503),
        "{statuses:?}"
    );
    if probes == 1 {
        // Both probes must succeed to close: send the second one now.
        assert_eq!(get(&c, &gw).await.status, 200);
    }
    assert_eq!(
        state_of(&gw, addr).await,
        Some(0.0),
        "closed after the probes"
    );
    up.set_delay(Duration::ZERO);
    for _ in 0..5 {
        assert_eq!(get(&c, &gw).await.status, 200);
    }
    assert_eq!(transitions(&gw, addr, "closed", "open").await, 1.0);
    assert_eq!(transitions(&gw, addr, "open", "half_open").await, 1.0);
    assert_eq!(transitions(&gw, addr, "half_open", "closed").await, 1.0);
}

/// A target that accepts and drops every connection (our 502) trips after exactly 3 accepts and then
/// sees no further accept.
#[tokio::test]
async fn broken_target_trips_after_exactly_n_accepts() {
    let _serial = SERIAL.lock().await;
    let up = ScriptedUpstream::start().await;
    up.set_close_on_accept(true);
    let breaker = "      consecutive_failures: 3\n      open_for: 30s\n";
    let gw = Gateway::start(BIN, &config(&[up.addr()], breaker, "")).await;
    let c = HttpClient::http1();
    for _ in 0..3 {
        get(&c, &gw).await.assert_json_error(502);
    }
    assert_eq!(up.accepts(), 3);
    for _ in 0..20 {
        let retry = assert_open_answer(&get(&c, &gw).await);
        assert!((29..=30).contains(&retry), "Retry-After {retry}");
    }
    assert_eq!(up.accepts(), 3, "connections while open");
    assert_eq!(state_of(&gw, up.addr()).await, Some(1.0));
    let rejected = sample(
        &gw.metrics_text().await,
        "flexgate_upstream_rejected_total",
        &[("upstream", "up"), ("reason", "circuit_open")],
    );
    assert_eq!(rejected, Some(20.0));
}

/// 60% of requests fail (500): the ratio trips at `min_requests` (no consecutive rule configured).
/// The ratio is evaluated when a failure is recorded, so the pattern ends its 20th request on one.
#[tokio::test]
async fn sixty_percent_failures_trip_on_the_ratio() {
    let _serial = SERIAL.lock().await;
    let up = ScriptedUpstream::start().await;
    up.set_status_fn(|n| if n % 5 >= 2 { 500 } else { 200 });
    let breaker = "      failure_rate: { threshold: 0.5, window: 10s, min_requests: 20 }\n      open_for: 30s\n      failure_on: [\"5xx\"]\n";
    let gw = Gateway::start(BIN, &config(&[up.addr()], breaker, "")).await;
    let c = HttpClient::http1();
    for i in 0..20u64 {
        let r = get(&c, &gw).await;
        let want = if i % 5 >= 2 { 500 } else { 200 };
        assert_eq!(r.status.as_u16(), want, "request {i} passes through");
        if i == 18 {
            assert_eq!(
                state_of(&gw, up.addr()).await,
                Some(0.0),
                "closed below min_requests"
            );
        }
    }
    assert_eq!(
        state_of(&gw, up.addr()).await,
        Some(1.0),
        "open at 12/20 failures"
    );
    for _ in 0..5 {
        assert_open_answer(&get(&c, &gw).await);
    }
    assert_eq!(up.requests(), 20);
}

/// Every target open: 503 JSON with Retry-After, answered in well under a millisecond. The latency
/// asserted is the gateway's own (access log `duration_ms`: request head parsed to response sent):
/// the client's round trip on a shared 2-core machine measures the test client's scheduling too,
/// and is only printed.
#[tokio::test]
async fn all_open_answers_503_at_once() {
    let _serial = SERIAL.lock().await;
    let (a, b) = (RefusedPort::new(), RefusedPort::new());
    let breaker = "      consecutive_failures: 1\n      open_for: 30s\n";
    let gw = Gateway::start(BIN, &config(&[a.addr(), b.addr()], breaker, "")).await;
    let c = HttpClient::http1();
    let mut first = get(&c, &gw).await;
    for _ in 0..3 {
        if first.status == 503 {
            break;
        }
        first = get(&c, &gw).await;
    }
    assert_open_answer(&first);
    assert_eq!(state_of(&gw, a.addr()).await, Some(1.0));
    assert_eq!(state_of(&gw, b.addr()).await, Some(1.0));
    // Warm the connection, then time sequential requests on it.
    for _ in 0..20 {
        assert_eq!(get(&c, &gw).await.status, 503);
    }
    let is_503 = |v: &serde_json::Value| v["target"] == "flexgate::access" && v["status"] == 503;
    let before = gw.json_logs().iter().filter(|v| is_503(v)).count();
    let mut took = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let r = get(&c, &gw).await;
        took.push(t.elapsed());
        assert_eq!(r.status, 503);
        assert!(r.header("retry-after").is_some());
    }
    took.sort();
    let (median, p90) = (took[took.len() / 2], took[took.len() * 9 / 10]);
    let lines = gw
        .wait_for_logs(before + 200, Duration::from_secs(5), is_503)
        .await;
    let mut gw_ms: Vec<f64> = lines
        .get(before..)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v["duration_ms"].as_f64())
        .collect();
    assert_eq!(gw_ms.len(), 200, "access lines of the timed requests");
    gw_ms.sort_by(f64::total_cmp);
    let (gw_median, gw_p90) = (gw_ms[100], gw_ms[180]);
    eprintln!(
        "all-open 503: gateway median {gw_median:.3} ms, p90 {gw_p90:.3} ms; \
         client round trip median {median:?}, p90 {p90:?}"
    );
    assert!(gw_median < 1.0, "gateway median {gw_median:.3} ms");
}

/// Breaker state survives a SIGHUP reload when the upstream and target are unchanged (the policy may
/// change: it is applied in place).
#[tokio::test]
async fn open_state_survives_a_reload() {
    let _serial = SERIAL.lock().await;
    let refused = RefusedPort::new();
    let addr = refused.addr();
    let breaker = "      consecutive_failures: 2\n      open_for: 30s\n";
    let gw = Gateway::start(BIN, &config(&[addr], breaker, "")).await;
    let c = HttpClient::http1();
    for _ in 0..2 {
        get(&c, &gw).await.assert_json_error(502);
    }
    assert_eq!(state_of(&gw, addr).await, Some(1.0));

    let changed = "      consecutive_failures: 2\n      open_for: 30s\n      half_open_probes: 5\n";
    gw.rewrite_config(&format!(
        "{}  - name: extra\n    match:\n      path: /extra\n    respond:\n      body: added\n",
        config(&[addr], changed, "")
    ));
    gw.signal(Signal::SIGHUP);
    let reloaded = eventually(Duration::from_secs(10), || async {
        matches!(HttpClient::http1_fresh().get(&gw.url("/extra")).await, Ok(r) if r.status == 200)
    })
    .await;
    assert!(reloaded, "the reload was not applied");
    // The target is back, but its circuit stays open: no connection.
    let up = ScriptedUpstream::start_on(refused.release()).await;
    let retry = assert_open_answer(&get(&c, &gw).await);
    assert!(retry > 20, "the open period restarted: Retry-After {retry}");
    assert_eq!(up.accepts(), 0);
    assert_eq!(state_of(&gw, addr).await, Some(1.0));
    assert_eq!(transitions(&gw, addr, "closed", "open").await, 1.0);
}

/// `max_in_flight: 2`: the third concurrent request gets 503 JSON at once; slots come back.
#[tokio::test]
async fn max_in_flight_caps_concurrency() {
    let _serial = SERIAL.lock().await;
    let up = ScriptedUpstream::start().await;
    up.set_delay(Duration::from_millis(500));
    let extra = "    max_in_flight: 2\n";
    let gw = Gateway::start(BIN, &yaml::proxy_all(&[up.addr()], extra, "")).await;
    let c = HttpClient::http1();
    let burst: Vec<_> = (0..6)
        .map(|_| {
            let (c, url) = (c.clone(), gw.url("/r"));
            tokio::spawn(async move { c.get(&url).await.expect("request") })
        })
        .collect();
    let mut ok = 0;
    for t in burst {
        let r = t.await.expect("task");
        if r.status == 200 {
            ok += 1;
        } else {
            let body = r.assert_json_error(503);
            assert!(
                body["error"]
                    .as_str()
                    .unwrap_or("")
                    .contains("max_in_flight")
            );
            assert!(r.header("retry-after").is_some());
        }
    }
    assert_eq!(ok, 2);
    assert_eq!(up.requests(), 2);
    let rejected = sample(
        &gw.metrics_text().await,
        "flexgate_upstream_rejected_total",
        &[("upstream", "up"), ("reason", "max_in_flight")],
    );
    assert_eq!(rejected, Some(4.0));
    up.set_delay(Duration::ZERO);
    for _ in 0..3 {
        assert_eq!(get(&c, &gw).await.status, 200, "slots are released");
    }
}
