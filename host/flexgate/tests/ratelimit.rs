//! Rate limiting end to end through real sockets: exactness under 64 concurrent clients (one gateway
//! with the local store; three gateways sharing a real `redis-server`), the 429 answer and the IETF
//! headers, per-header keys, and a Redis outage under load (no 5xx, low latency, degraded flag, and
//! recovery when Redis returns).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flexgate_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_flexgate");

/// Load tests measure rates and latencies: run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A `respond` route `limited` with `rate_limit` (a flow mapping's inside).
fn limited_config(rate_limit: &str, redis: Option<&str>) -> String {
    let redis = redis.map_or(String::new(), |r| format!("redis: {r}\n"));
    format!(
        "{redis}routes:\n  - name: limited\n    rate_limit: {{ {rate_limit} }}\n    respond:\n      status: 200\n      body: ok\n"
    )
}

/// What a load run saw.
#[derive(Debug, Default)]
struct Run {
    ok: u64,
    limited: u64,
    /// Any other status, or a client error as 0.
    other: Vec<u16>,
    latencies: Vec<Duration>,
    /// From the first request sent to the last response received.
    elapsed: Duration,
    /// `(sent at, latency, status)` of every request, when recorded.
    samples: Vec<(Instant, Duration, u16)>,
}

impl Run {
    fn percentile(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    }
}

/// `clients` concurrent clients (one keep-alive connection each, spread over `urls`) sending GETs back
/// to back (or `pace` apart) until `stop` is set.
async fn load(
    urls: Vec<String>,
    clients: usize,
    pace: Option<Duration>,
    stop: Arc<AtomicBool>,
    keep_samples: bool,
) -> Run {
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let url = urls[i % urls.len()].clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let c = HttpClient::http1();
                let mut run = Run::default();
                let mut first = None;
                let mut last = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    first.get_or_insert(sent);
                    let status = match c.get(&url).await {
                        Ok(r) => r.status.as_u16(),
                        Err(_) => 0,
                    };
                    last = Instant::now();
                    let took = last - sent;
                    match status {
                        200 => run.ok += 1,
                        429 => run.limited += 1,
                        s => run.other.push(s),
                    }
                    run.latencies.push(took);
                    if keep_samples {
                        run.samples.push((sent, took, status));
                    }
                    if let Some(p) = pace {
                        tokio::time::sleep(p).await;
                    }
                }
                (run, first, last)
            })
        })
        .collect();
    let mut total = Run::default();
    let (mut start, mut end): (Option<Instant>, Option<Instant>) = (None, None);
    for t in tasks {
        let (run, first, last) = t.await.expect("client task");
        total.ok += run.ok;
        total.limited += run.limited;
        total.other.extend(run.other);
        total.latencies.extend(run.latencies);
        total.samples.extend(run.samples);
        start = match (start, first) {
            (Some(s), Some(f)) => Some(s.min(f)),
            (s, f) => s.or(f),
        };
        end = Some(end.map_or(last, |e: Instant| e.max(last)));
    }
    if let (Some(s), Some(e)) = (start, end) {
        total.elapsed = e - s;
    }
    total
}

/// Each client waits this long between requests: 64 clients still ask for up to 3200/s, 16 times the
/// limit, while leaving CPU to the gateway (a starved gateway that misses more than the burst's
/// worth of time genuinely admits less: GCRA saves no credit beyond `burst`).
const PACE: Duration = Duration::from_millis(20);

async fn load_for(urls: Vec<String>, clients: usize, run_for: Duration) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(run_for).await;
        flag.store(true, Ordering::Relaxed);
    });
    load(urls, clients, Some(PACE), stop, true).await
}

/// GCRA's burst tolerance at 200/s burst 20: 20 × 5 ms.
const TOLERANCE: Duration = Duration::from_millis(100);

impl Run {
    /// Time during which no response at all came back for longer than [`TOLERANCE`] (beyond the
    /// tolerance): the machine starved the gateways or the clients, no decision was made, and GCRA
    /// (which saves no credit beyond `burst`) rightly admits nothing for it. Zero on a healthy machine.
    fn starved(&self) -> Duration {
        let mut done: Vec<Instant> = self.samples.iter().map(|(s, l, _)| *s + *l).collect();
        done.sort();
        done.windows(2)
            .map(|w| (w[1] - w[0]).saturating_sub(TOLERANCE))
            .sum()
    }
}

/// GCRA with `burst` 20 admits 21 at once on a rested key, then one per 5 ms at 200/s (minus time
/// the machine starved the run, reported beside the result).
fn expected_admitted(run: &Run) -> f64 {
    21.0 + 200.0 * run.elapsed.saturating_sub(run.starved()).as_secs_f64()
}

/// Waits until `/health/ready` reports Redis reachable (`want`), up to `timeout`.
async fn redis_reachable(gw: &Gateway, want: bool, timeout: Duration) -> bool {
    eventually(timeout, || async {
        match HttpClient::http1_fresh()
            .get(&gw.admin_url("/health/ready"))
            .await
        {
            Ok(r) if r.status == 200 => {
                r.json()["details"]["redis"]["reachable"].as_bool() == Some(want)
            }
            _ => false,
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_limit_is_exact_under_64_concurrent_clients() {
    let _serial = SERIAL.lock().await;
    let gw = Gateway::start(
        BIN,
        &limited_config("key: route, rate: 200/s, burst: 20", None),
    )
    .await;
    let run = load_for(vec![gw.url("/")], 64, Duration::from_secs(10)).await;
    let expected = expected_admitted(&run);
    let off = (run.ok as f64 - expected) / expected;
    eprintln!(
        "local: admitted {} vs expected {expected:.1} over {:?} (starved {:?}) ({:+.2}%), limited {}, p50 {:?} p99 {:?}",
        run.ok,
        run.elapsed,
        run.starved(),
        off * 100.0,
        run.limited,
        run.percentile(0.5),
        run.percentile(0.99)
    );
    assert!(
        run.other.is_empty(),
        "unexpected answers: {:?}",
        &run.other[..run.other.len().min(20)]
    );
    assert!(run.limited > run.ok, "the load must exceed the limit");
    assert!(
        off.abs() <= 0.01,
        "admitted {} not within 1% of {expected:.1}",
        run.ok
    );
    let allowed = gw
        .metric(r#"flexgate_ratelimit_decisions_total{decision="allowed",route="limited"}"#)
        .await;
    assert_eq!(allowed, Some(run.ok as f64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_limit_is_exact_across_three_gateways() {
    let _serial = SERIAL.lock().await;
    let Some(redis) = RedisServer::start_or_skip("redis_limit_is_exact_across_three_gateways")
    else {
        return;
    };
    // A generous budget: this test is about exactness (latency under an outage is tested below).
    let redis_yaml = format!("{{ url: \"{}\", timeout: 250ms }}", redis.url());
    let cfg = limited_config(
        "key: route, rate: 200/s, burst: 20, store: redis",
        Some(&redis_yaml),
    );
    let gws = futures_util::future::join_all((0..3).map(|_| Gateway::start(BIN, &cfg))).await;
    for gw in &gws {
        assert!(
            redis_reachable(gw, true, Duration::from_secs(5)).await,
            "a gateway never reached redis"
        );
    }
    let urls = gws.iter().map(|g| g.url("/")).collect();
    let run = load_for(urls, 64, Duration::from_secs(10)).await;
    let expected = expected_admitted(&run);
    let off = (run.ok as f64 - expected) / expected;
    let mut store_errors = 0.0;
    for gw in &gws {
        store_errors += gw
            .metric(r#"flexgate_ratelimit_store_errors_total{store="redis"}"#)
            .await
            .unwrap_or(0.0);
    }
    eprintln!(
        "redis x3: admitted {} vs expected {expected:.1} over {:?} (starved {:?}) ({:+.2}%), limited {}, store errors {store_errors}, p50 {:?} p99 {:?}",
        run.ok,
        run.elapsed,
        run.starved(),
        off * 100.0,
        run.limited,
        run.percentile(0.5),
        run.percentile(0.99)
    );
    assert!(
        run.other.is_empty(),
        "unexpected answers: {:?}",
        &run.other[..run.other.len().min(20)]
    );
    assert!(
        off.abs() <= 0.02,
        "admitted {} not within 2% of {expected:.1}",
        run.ok
    );
}

/// Redis is killed under load: no 5xx, p99 under 5 ms (as the gateway measures it; the client's view is
/// printed too), degraded within 1 s; restarted on the same port: back on Redis within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_degrades_to_local_and_recovers() {
    let _serial = SERIAL.lock().await;
    for attempt in 1..=2 {
        let Some(mut redis) =
            RedisServer::start_or_skip("redis_outage_degrades_to_local_and_recovers")
        else {
            return;
        };
        let redis_yaml = format!("{{ url: \"{}\" }}", redis.url()); // default 5 ms budget
        let gw = Gateway::start(
            BIN,
            &limited_config(
                "key: route, rate: 200/s, burst: 20, store: redis, on_store_error: local",
                Some(&redis_yaml),
            ),
        )
        .await;
        assert!(redis_reachable(&gw, true, Duration::from_secs(5)).await);
        const DEGRADED: &str = r#"flexgate_ratelimit_degraded{route="limited"}"#;
        assert_eq!(gw.metric(DEGRADED).await, Some(0.0));

        let stop = Arc::new(AtomicBool::new(false));
        let loader = tokio::spawn(load(
            vec![gw.url("/")],
            12,
            Some(Duration::from_millis(3)),
            stop.clone(),
            true,
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;

        let killed = Instant::now();
        let waited = RunqueueWait::of(gw.pid());
        let logs_at_kill = gw.access_logs().len();
        tokio::task::block_in_place(|| redis.kill());
        let degraded = gw
            .wait_metric(DEGRADED, Duration::from_secs(3), |v| v == 1.0)
            .await;
        let degraded_after = killed.elapsed();
        // Still ready (200), with Redis reported unreachable as a detail.
        let reported = redis_reachable(&gw, false, Duration::from_secs(2)).await;
        tokio::time::sleep(Duration::from_secs(3).saturating_sub(killed.elapsed())).await;

        let restarted = Instant::now();
        let starved = waited.since();
        let logs_at_restart = gw.access_logs().len();
        tokio::task::block_in_place(|| redis.restart());
        let recovered = gw
            .wait_metric(DEGRADED, Duration::from_secs(8), |v| v == 0.0)
            .await;
        let recovered_after = restarted.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        let run = loader.await.expect("load");

        let outage: Vec<_> = run
            .samples
            .iter()
            .filter(|(sent, _, _)| *sent >= killed && *sent < restarted)
            .collect();
        let mut during: Vec<Duration> = outage.iter().map(|(_, l, _)| *l).collect();
        during.sort();
        let p99 = during
            .get(during.len() * 99 / 100)
            .copied()
            .unwrap_or_default();
        let outage_ok = outage.iter().filter(|(_, _, s)| *s == 200).count();
        // The gateway's own view (access log `duration_ms`: request start to body sent), free of the
        // test client's scheduling on a shared machine.
        let mut gw_ms: Vec<f64> = gw
            .access_logs()
            .get(logs_at_kill..logs_at_restart)
            .unwrap_or_default()
            .iter()
            .filter_map(|l| l["duration_ms"].as_f64())
            .collect();
        gw_ms.sort_by(f64::total_cmp);
        let gw_p99 = gw_ms
            .get(gw_ms.len() * 99 / 100)
            .copied()
            .unwrap_or(f64::MAX);
        eprintln!(
            "outage: degraded after {degraded_after:?}, back on redis {recovered_after:?} after restart; \
             {} requests during the outage ({outage_ok} admitted): gateway p99 {gw_p99:.3}ms, client p99 {p99:?}, \
             client max {:?}; whole run client p99 {:?}, {} requests",
            during.len(),
            during.last().copied().unwrap_or_default(),
            run.percentile(0.99),
            run.latencies.len()
        );
        assert!(
            run.other.is_empty(),
            "non-200/429 answers: {:?}",
            &run.other[..run.other.len().min(20)]
        );
        assert_eq!(degraded, Some(1.0), "degraded flag never set");
        assert!(
            degraded_after < Duration::from_secs(1),
            "degraded after {degraded_after:?}"
        );
        assert!(
            reported,
            "/health/ready: not 200 with details.redis.reachable false"
        );
        assert_eq!(recovered, Some(0.0), "never back on redis");
        assert!(
            recovered_after < Duration::from_secs(5),
            "back after {recovered_after:?}"
        );
        assert!(
            during.len() > 300,
            "too little load during the outage: {}",
            during.len()
        );
        assert!(outage_ok > 0, "the local fallback admits");
        assert!(
            gw_ms.len() > 300,
            "access lines during the outage: {}",
            gw_ms.len()
        );
        // The requests over 5 ms, by how much: when the gateway's threads sat on the run queue at
        // least that long during the outage, the machine (not the fallback path) made them slow and
        // the outage is run again, once; the bound itself is never relaxed.
        let excess_ms: f64 = gw_ms.iter().map(|ms| (ms - 5.0).max(0.0)).sum();
        if gw_p99 >= 5.0 && starved.total.as_secs_f64() * 1000.0 >= excess_ms && attempt < 2 {
            eprintln!(
                "attempt {attempt}: gateway p99 {gw_p99:.3}ms while its threads waited {starved:?} for a CPU: again"
            );
            continue;
        }
        assert!(
            gw_p99 < 5.0,
            "gateway p99 {gw_p99:.3}ms during the outage (gateway run-queue wait {starved:?})"
        );
        break;
    }
}

/// 429 is JSON with Retry-After; `RateLimit-Policy`/`RateLimit` are on admitted and limited answers
/// (proxied ones too); `header:x-api-key` separates clients and a missing header falls back to the IP.
#[tokio::test]
async fn answers_headers_and_keys() {
    let _serial = SERIAL.lock().await;
    let echo = EchoUpstream::start().await;
    let cfg = format!(
        "upstreams:\n  - name: echo\n{}routes:\n  - name: keyed\n    rate_limit: {{ key: \"header:x-api-key\", rate: 1/min, burst: 1 }}\n    upstream: echo\n",
        yaml::targets(&[echo.addr()])
    );
    let gw = Gateway::start(BIN, &cfg).await;
    let c = HttpClient::http1();
    let call = |key: Option<&'static str>| {
        let (c, url) = (c.clone(), gw.url("/k"));
        async move {
            let headers: Vec<(&str, &str)> = key.map(|k| ("x-api-key", k)).into_iter().collect();
            c.call("GET", &url, &headers, empty())
                .await
                .expect("request")
        }
    };
    let policy = "\"default\";q=1;w=60";

    let r = call(Some("alice")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echo().uri, "/k", "proxied");
    assert_eq!(r.header("ratelimit-policy"), Some(policy));
    assert_eq!(r.header("ratelimit"), Some("\"default\";r=1;t=60"));
    let r = call(Some("alice")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit"), Some("\"default\";r=0;t=120"));
    let r = call(Some("alice")).await;
    let body = r.assert_json_error(429);
    assert_eq!(body["error"], "rate limit exceeded");
    assert_eq!(r.header("retry-after"), Some("60"));
    assert_eq!(r.header("ratelimit-policy"), Some(policy));
    assert_eq!(r.header("ratelimit"), Some("\"default\";r=0;t=60"));

    // Another key has its own bucket.
    assert_eq!(call(Some("bob")).await.status, 200);
    // No key header: the client IP's bucket, which no header value can reach.
    assert_eq!(call(None).await.status, 200);
    assert_eq!(call(None).await.status, 200);
    call(None).await.assert_json_error(429);
    assert_eq!(call(Some("ip:127.0.0.1")).await.status, 200);
    assert_eq!(call(Some("bob")).await.status, 200);
    call(Some("bob")).await.assert_json_error(429);

    let text = gw.metrics_text().await;
    let v = |series: &str| metric_value(&text, series);
    assert_eq!(
        v(r#"flexgate_ratelimit_decisions_total{decision="limited",route="keyed"}"#),
        Some(3.0)
    );
    assert_eq!(
        v(r#"flexgate_ratelimit_decisions_total{decision="allowed",route="keyed"}"#),
        Some(7.0)
    );
    assert_eq!(
        echo.requests(),
        7,
        "limited requests never reach the upstream"
    );
}

async fn reloads(gw: &Gateway) -> f64 {
    gw.metric(r#"flexgate_config_reloads_total{result="success"}"#)
        .await
        .unwrap_or(0.0)
}

/// The local buckets survive a reload that keeps the route's policy, and restart when it changes.
#[tokio::test]
async fn local_buckets_survive_an_unchanged_reload() {
    let _serial = SERIAL.lock().await;
    let cfg = limited_config("key: route, rate: 1/min, burst: 0", None);
    let gw = Gateway::start(BIN, &cfg).await;
    let c = HttpClient::http1();
    assert_eq!(c.get(&gw.url("/")).await.expect("request").status, 200);
    assert_eq!(c.get(&gw.url("/")).await.expect("request").status, 429);
    let before = reloads(&gw).await;
    gw.rewrite_config(&format!(
        "{cfg}  - name: extra\n    match:\n      path: /extra\n    respond:\n      body: x\n"
    ));
    gw.signal(Signal::SIGHUP);
    assert!(
        eventually(Duration::from_secs(10), || async {
            reloads(&gw).await > before
        })
        .await,
        "no reload"
    );
    assert_eq!(
        c.get(&gw.url("/")).await.expect("request").status,
        429,
        "bucket kept"
    );
    let before = reloads(&gw).await;
    gw.rewrite_config(&limited_config("key: route, rate: 2/min, burst: 0", None));
    gw.signal(Signal::SIGHUP);
    assert!(
        eventually(Duration::from_secs(10), || async {
            reloads(&gw).await > before
        })
        .await,
        "no reload"
    );
    assert_eq!(
        c.get(&gw.url("/")).await.expect("request").status,
        200,
        "new policy, new bucket"
    );
}
