//! Runtime behaviour with the real components: isolation modes, chain order, failure policy,
//! sandbox limits, metrics, cache. Requires `plugins/build.sh`.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use flexgate_plugins::{
    Binding, BodyMode, Chain, FailureKind, Isolation, OnError, PluginError, PluginRuntime,
    RequestOutcome, RuntimeOptions,
};
use flexgate_testkit::RunqueueWait;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tests share the process: the deadline test measures wall time and the memory test the process's
/// RSS, so those two take this lock exclusively and every other test takes it shared.
static EXCLUSIVE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

const HEADERS_CFG: &str = r#"{"request":{"set":{"x-request-id":"${request_id}","x-client":"${client_ip}"},"remove":["x-secret"]},
    "response":{"set":{"x-served-by":"flexgate"}}}"#;

#[tokio::test]
async fn headers_plugin_pooled_and_per_request() {
    let _guard = EXCLUSIVE.read().await;
    let (rt, reg) = runtime();
    for iso in [Isolation::Pooled, Isolation::PerRequest] {
        let p = load(&rt, "headers", iso);
        let chain = single(bind(&p, HEADERS_CFG, OnError::FailClosed, BodyMode::None).await);
        for _ in 0..3 {
            let ctx = ctx();
            let mut parts = request(
                "GET",
                "/a?b=1",
                &[("x-secret", "1"), ("connection", "keep-alive")],
            );
            let out = chain.on_request(&ctx, &mut parts, None).await.unwrap();
            assert!(matches!(out, RequestOutcome::Continue));
            assert_eq!(
                header(&parts.headers, "x-request-id").as_deref(),
                Some("req-123")
            );
            assert_eq!(
                header(&parts.headers, "x-client").as_deref(),
                Some("192.0.2.7")
            );
            assert_eq!(header(&parts.headers, "x-secret"), None);
            assert_eq!(parts.uri, "/a?b=1");
            let mut resp = response(200, &[]);
            chain.on_response(&ctx, &mut resp, None).await.unwrap();
            assert_eq!(
                header(&resp.headers, "x-served-by").as_deref(),
                Some("flexgate")
            );
        }
    }
    // Pooled: 1 instance (from Binding::new) reused; per-request: 1 (init check) + one per
    // request, shared by its on_request and on_response.
    let inst = metric_value(
        &reg,
        "flexgate_plugin_instantiations_total",
        &[("plugin", "headers")],
    );
    assert_eq!(inst, 1.0 + 1.0 + 3.0);
    assert_eq!(
        metric_value(
            &reg,
            "flexgate_plugin_invocations_total",
            &[("hook", "on_request"), ("outcome", "continue")]
        ),
        6.0
    );
}

#[tokio::test]
async fn chain_order_request_forward_response_reverse() {
    let _guard = EXCLUSIVE.read().await;
    let (rt, _reg) = runtime();
    let p = load(&rt, "headers", Isolation::Pooled);
    let a = bind(
        &p,
        r#"{"request":{"add":{"x-order":"a"}},"response":{"add":{"x-order":"a"}}}"#,
        OnError::FailClosed,
        BodyMode::None,
    )
    .await;
    let b = bind(
        &p,
        r#"{"request":{"add":{"x-order":"b"}},"response":{"add":{"x-order":"b"}}}"#,
        OnError::FailClosed,
        BodyMode::None,
    )
    .await;
    let chain = Chain::new(vec![std::sync::Arc::new(a), std::sync::Arc::new(b)]);
    let ctx = ctx();
    let mut parts = request("GET", "/", &[]);
    chain.on_request(&ctx, &mut parts, None).await.unwrap();
    let order: Vec<_> = parts
        .headers
        .get_all("x-order")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(order, ["a", "b"]);
    let mut resp = response(200, &[]);
    chain.on_response(&ctx, &mut resp, None).await.unwrap();
    let order: Vec<_> = resp
        .headers
        .get_all("x-order")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(order, ["b", "a"]);
}

async fn fixture_chain(
    rt: &flexgate_plugins::PluginRuntime,
    name: &str,
    iso: Isolation,
    cfg: &str,
    on_error: OnError,
) -> Chain {
    // Only the loops should hit the deadline: give the others room on a loaded machine.
    let p = load_with(rt, name, |s| {
        s.isolation = iso;
        if name == "fixture-loop" || cfg.contains(r#""loop":true"#) {
            s.timeout = Duration::from_millis(10);
        }
    });
    let guard = load(rt, "headers", Isolation::Pooled);
    let g = bind(
        &guard,
        r#"{"request":{"set":{"x-after":"yes"}}}"#,
        OnError::FailClosed,
        BodyMode::None,
    )
    .await;
    Chain::new(vec![
        std::sync::Arc::new(bind(&p, cfg, on_error, BodyMode::None).await),
        std::sync::Arc::new(g),
    ])
}

#[tokio::test]
async fn fixtures_fail_closed_and_fail_open() {
    let _guard = EXCLUSIVE.read().await;
    let (rt, reg) = runtime();
    let cases = [
        ("fixture-trap", r#"{"always":true}"#, FailureKind::Trap),
        ("fixture-loop", r#"{"always":true}"#, FailureKind::Timeout),
        // The same two on the direct path (no WASI imports, no fiber): fixture-trap is no_std.
        ("fixture-trap", r#"{"loop":true}"#, FailureKind::Timeout),
        ("fixture-alloc", r#"{"always":true}"#, FailureKind::Memory),
        ("fixture-flaky", r#"{"error_rate":1.0}"#, FailureKind::Error),
    ];
    for iso in [Isolation::Pooled, Isolation::PerRequest] {
        for (name, cfg, kind) in cases {
            let closed = fixture_chain(&rt, name, iso, cfg, OnError::FailClosed).await;
            for _ in 0..2 {
                let mut parts = request("GET", "/x", &[]);
                let err = closed
                    .on_request(&ctx(), &mut parts, None)
                    .await
                    .unwrap_err();
                assert_eq!((err.plugin.as_str(), err.kind), (name, kind), "{err}");
                assert_eq!(header(&parts.headers, "x-after"), None, "chain stopped");
            }
            let open = fixture_chain(&rt, name, iso, cfg, OnError::FailOpen).await;
            for _ in 0..2 {
                let mut parts = request("GET", "/x", &[("x-keep", "1")]);
                let out = open.on_request(&ctx(), &mut parts, None).await.unwrap();
                assert!(matches!(out, RequestOutcome::Continue));
                assert_eq!(
                    header(&parts.headers, "x-after").as_deref(),
                    Some("yes"),
                    "{name} skipped"
                );
                assert_eq!(header(&parts.headers, "x-keep").as_deref(), Some("1"));
                assert_eq!(parts.uri, "/x");
            }
        }
    }
    // 2 isolations × (2 fail_closed + 2 fail_open) per fixture case; two cases time out.
    for (reason, n) in [("trap", 8.0), ("timeout", 16.0), ("memory", 8.0)] {
        assert_eq!(
            metric_value(&reg, "flexgate_plugin_traps_total", &[("reason", reason)]),
            n,
            "{reason}"
        );
    }
    assert!(
        metric_value(
            &reg,
            "flexgate_plugin_memory_bytes",
            &[("plugin", "fixture-alloc")]
        ) >= 15.0 * 1024.0 * 1024.0
    );
}

#[tokio::test]
async fn flaky_fraction_and_custom_metric() {
    let _guard = EXCLUSIVE.read().await;
    let (rt, reg) = runtime();
    let chain = fixture_chain(
        &rt,
        "fixture-flaky",
        Isolation::Pooled,
        r#"{"error_rate":0.25}"#,
        OnError::FailClosed,
    )
    .await;
    let mut errors = 0;
    for _ in 0..100 {
        let mut parts = request("GET", "/", &[]);
        if chain.on_request(&ctx(), &mut parts, None).await.is_err() {
            errors += 1;
        }
    }
    assert_eq!(errors, 25);
    assert_eq!(
        metric_value(
            &reg,
            "flexgate_plugin_custom_total",
            &[("name", "flaky_errors")]
        ),
        25.0
    );
    assert_eq!(
        metric_value(
            &reg,
            "flexgate_plugin_invocations_total",
            &[("plugin", "fixture-flaky"), ("outcome", "error")]
        ),
        25.0
    );
}

#[tokio::test]
async fn stderr_flood_is_captured_and_harmless() {
    let _guard = EXCLUSIVE.read().await;
    let (rt, _reg) = runtime();
    let chain = fixture_chain(
        &rt,
        "fixture-stderr",
        Isolation::Pooled,
        r#"{"lines":5000}"#,
        OnError::FailClosed,
    )
    .await;
    for _ in 0..5 {
        let mut parts = request("GET", "/", &[]);
        let out = chain.on_request(&ctx(), &mut parts, None).await.unwrap();
        assert!(matches!(out, RequestOutcome::Continue));
        assert_eq!(header(&parts.headers, "x-after").as_deref(), Some("yes"));
    }
}

/// Runs one `on_request` that must end in a timeout; how long it took.
async fn time_out(chain: &Chain) -> Duration {
    let start = Instant::now();
    let mut parts = request("GET", "/", &[]);
    let err = chain
        .on_request(&ctx(), &mut parts, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Timeout);
    start.elapsed()
}

/// The epoch ticker sleeps while no plugin runs (it cost ~1.8% of a core at 1 kHz) and a call wakes
/// it: a plugin that loops right after a long quiet spell still hits its deadline, on both call
/// paths (fixture-loop uses WASI and fibers, fixture-trap is no_std and called directly).
#[tokio::test]
async fn sleeping_epoch_ticker_wakes_for_a_call() {
    let _guard = EXCLUSIVE.write().await;
    let (rt, _reg) = runtime();
    for (name, cfg) in [
        ("fixture-loop", r#"{"always":true}"#),
        ("fixture-trap", r#"{"loop":true}"#),
    ] {
        let p = load_with(&rt, name, |s| s.timeout = Duration::from_millis(10));
        let chain = single(bind(&p, cfg, OnError::FailClosed, BodyMode::None).await);
        let quiet = Instant::now();
        while !rt.epoch_ticker_sleeping() {
            assert!(
                quiet.elapsed() < Duration::from_secs(5),
                "the ticker never slept"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = time_out(&chain).await;
        // 10 ms deadline; a wake-up lost to the race described in ticker.rs costs at most its
        // 50 ms nap. Far below "never interrupted".
        assert!(took < Duration::from_millis(500), "{name}: {took:?}");
        assert!(
            !rt.epoch_ticker_sleeping(),
            "{name}: asleep right after a call"
        );
    }
}

/// The ticker wakes at deadlines, not on a 1 kHz beat: back-to-back short calls for 300 ms (each
/// far below its 10 ms timeout) cost it a few dozen wake-ups, where a fixed 1 ms tick would take
/// 300. The endless-loop tests show the deadlines still hold.
#[tokio::test]
async fn epoch_ticker_wakes_at_deadlines_not_every_tick() {
    let _guard = EXCLUSIVE.write().await;
    let (rt, _reg) = runtime();
    let p = load_with(&rt, "headers", |s| s.timeout = Duration::from_millis(10));
    let chain = single(
        bind(
            &p,
            r#"{"request":{"set":{"x-a":"1"}}}"#,
            OnError::FailClosed,
            BodyMode::None,
        )
        .await,
    );
    let before = rt.epoch_ticker_wakeups();
    let start = Instant::now();
    let mut calls = 0u32;
    while start.elapsed() < Duration::from_millis(300) {
        let mut parts = request("GET", "/", &[]);
        chain
            .on_request(&ctx(), &mut parts, None)
            .await
            .expect("call");
        calls += 1;
    }
    let wakeups = rt.epoch_ticker_wakeups() - before;
    eprintln!("{calls} calls in 300 ms: {wakeups} epoch ticker wake-ups");
    assert!(calls > 100, "only {calls} calls");
    assert!(
        wakeups < 150,
        "{wakeups} ticker wake-ups for {calls} calls in 300 ms"
    );
}

#[tokio::test]
async fn endless_loop_returns_within_deadline() {
    let _guard = EXCLUSIVE.write().await;
    let (rt, _reg) = runtime();
    // A sample that misses the bound while this process sat on the run queue for at least the
    // excess (a loaded machine: the epoch ticker or the calling thread did not get a CPU) is
    // measured again, a bounded number of times; the bound itself is never relaxed.
    let mut disturbed = 0;
    for timeout_ms in [10u64, 50] {
        let p = load_with(&rt, "fixture-loop", |s| {
            s.timeout = Duration::from_millis(timeout_ms)
        });
        let chain = single(
            bind(
                &p,
                r#"{"always":true}"#,
                OnError::FailClosed,
                BodyMode::None,
            )
            .await,
        );
        let limit = Duration::from_millis(timeout_ms + 20);
        let mut good = 0;
        while good < 5 {
            let waited = RunqueueWait::of_self();
            let took = time_out(&chain).await;
            let starved = waited.since();
            assert!(
                took >= Duration::from_millis(timeout_ms).saturating_sub(Duration::from_millis(1)),
                "{took:?}"
            );
            if took >= limit && starved.total >= took - limit && disturbed < 10 {
                disturbed += 1;
                eprintln!(
                    "{timeout_ms} ms: took {took:?} while starved {starved:?}: measuring again"
                );
                continue;
            }
            assert!(
                took < limit,
                "took {took:?} for {timeout_ms} ms (run-queue wait {starved:?}, {disturbed} samples retried)"
            );
            good += 1;
        }
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test]
async fn ten_thousand_traps_keep_memory_bounded() {
    let _guard = EXCLUSIVE.write().await;
    let (rt, reg) = runtime();
    let p = load(&rt, "fixture-trap", Isolation::Pooled);
    let chain = single(bind(&p, r#"{"always":true}"#, OnError::FailOpen, BodyMode::None).await);
    let run = |n: usize| {
        let chain = &chain;
        async move {
            for _ in 0..n {
                let mut parts = request("GET", "/", &[]);
                chain.on_request(&ctx(), &mut parts, None).await.unwrap();
            }
        }
    };
    run(500).await;
    let before = rss_bytes();
    run(10_000).await;
    let after = rss_bytes();
    let grown = after.saturating_sub(before);
    assert!(
        grown < 10 * 1024 * 1024,
        "RSS grew by {grown} bytes over 10 000 traps"
    );
    // Under heavy CPU contention a few calls may hit the 10 ms deadline before trapping.
    let failed = metric_value(&reg, "flexgate_plugin_traps_total", &[("reason", "trap")])
        + metric_value(
            &reg,
            "flexgate_plugin_traps_total",
            &[("reason", "timeout")],
        );
    assert_eq!(failed, 10_500.0);
}

#[tokio::test]
async fn init_rejection_is_a_load_time_error() {
    let _guard = EXCLUSIVE.read().await;
    let (rt, reg) = runtime();
    let p = load(&rt, "fixture-init-reject", Isolation::Pooled);
    let err = flexgate_plugins::Binding::new(
        p.clone(),
        "r",
        "{}".into(),
        OnError::FailOpen,
        BodyMode::None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, PluginError::Init { plugin, reason } if plugin == "fixture-init-reject" && reason.contains("rejected")),
        "{err}"
    );
    assert!(
        flexgate_plugins::Binding::new(
            p,
            "r",
            r#"{"accept":true}"#.into(),
            OnError::FailOpen,
            BodyMode::None
        )
        .await
        .is_ok()
    );
    assert_eq!(
        metric_value(&reg, "flexgate_plugin_traps_total", &[("reason", "init")]),
        1.0
    );
    // A config that does not even parse is rejected the same way.
    let h = load(&rt, "headers", Isolation::Pooled);
    assert!(
        flexgate_plugins::Binding::new(
            h,
            "r",
            r#"{"nope":1}"#.into(),
            OnError::FailOpen,
            BodyMode::None
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn invalid_component_is_rejected() {
    let _guard = EXCLUSIVE.read().await;
    let (rt, _reg) = runtime();
    let err = rt
        .load(flexgate_plugins::PluginSpec::new(
            "junk",
            "0",
            b"not wasm".to_vec(),
        ))
        .unwrap_err();
    assert!(matches!(err, PluginError::Invalid { .. }), "{err}");
}

#[tokio::test]
async fn compile_cache_is_used_across_runtimes() {
    let _guard = EXCLUSIVE.read().await;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = || flexgate_plugins::RuntimeOptions {
        cache_dir: Some(dir.clone()),
        max_instances: 8,
        ..Default::default()
    };
    let bytes = wasm("headers");
    // Not a deadline test: the default 10 ms `init` budget can expire on a loaded machine.
    let spec = |bytes: Vec<u8>| {
        let mut s = flexgate_plugins::PluginSpec::new("headers", "1", bytes);
        s.timeout = RELAXED;
        s
    };
    let t0 = Instant::now();
    let rt1 = flexgate_plugins::PluginRuntime::new(opts(), &prometheus::Registry::new()).unwrap();
    rt1.load(spec(bytes.clone())).unwrap();
    let cold = t0.elapsed();
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    let rt2 = flexgate_plugins::PluginRuntime::new(opts(), &prometheus::Registry::new()).unwrap();
    let t1 = Instant::now();
    let p = rt2.load(spec(bytes)).unwrap();
    let warm = t1.elapsed();
    assert!(warm < cold, "cached load {warm:?} vs compile {cold:?}");
    let chain = single(bind(&p, HEADERS_CFG, OnError::FailClosed, BodyMode::None).await);
    let mut parts = request("GET", "/", &[]);
    chain.on_request(&ctx(), &mut parts, None).await.unwrap();
    assert_eq!(
        header(&parts.headers, "x-request-id").as_deref(),
        Some("req-123")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn recycle_after_bounds_instance_reuse() {
    let _guard = EXCLUSIVE.read().await;
    let (rt, reg) = runtime();
    let p = load_with(&rt, "headers", |s| s.recycle_after = 3);
    let chain = single(bind(&p, HEADERS_CFG, OnError::FailClosed, BodyMode::None).await);
    for _ in 0..9 {
        let mut parts = request("GET", "/", &[]);
        chain.on_request(&ctx(), &mut parts, None).await.unwrap();
    }
    assert_eq!(
        metric_value(
            &reg,
            "flexgate_plugin_instantiations_total",
            &[("plugin", "headers")]
        ),
        3.0
    );
}

/// A binding whose `init` refused its config fails every call at once with `init` (counted),
/// without instantiating: fail_closed stops the chain, fail_open skips it (on_response too).
#[tokio::test]
async fn failed_binding_fails_every_call_with_init() {
    let _guard = EXCLUSIVE.read().await;
    let (rt, reg) = runtime();
    let p = load(&rt, "fixture-init-reject", Isolation::Pooled);
    let h = load(&rt, "headers", Isolation::Pooled);
    let reason = "fixture-init-reject: config rejected".to_string();
    let after = r#"{"request":{"set":{"x-after":"yes"}},"response":{"set":{"x-after":"yes"}}}"#;
    let instantiated = |reg: &prometheus::Registry| {
        metric_value(
            reg,
            "flexgate_plugin_instantiations_total",
            &[("plugin", "fixture-init-reject")],
        )
    };
    let before = instantiated(&reg);
    for on_error in [OnError::FailClosed, OnError::FailOpen] {
        let failed = Binding::failed(p.clone(), "r", reason.clone(), on_error, BodyMode::None);
        assert_eq!(failed.init_failure(), Some(reason.as_str()));
        let chain = Chain::new(vec![
            Arc::new(failed),
            Arc::new(bind(&h, after, OnError::FailClosed, BodyMode::None).await),
        ]);
        let ctx = ctx();
        let mut parts = request("GET", "/x?y=1", &[("x-keep", "1")]);
        let out = chain.on_request(&ctx, &mut parts, None).await;
        assert_eq!(ctx.failure(0), Some(FailureKind::Init));
        match on_error {
            OnError::FailClosed => {
                let err = out.unwrap_err();
                assert_eq!(
                    (err.plugin.as_str(), err.kind),
                    ("fixture-init-reject", FailureKind::Init)
                );
                assert!(err.reason.contains("config rejected"), "{err}");
                assert_eq!(header(&parts.headers, "x-after"), None, "chain stopped");
            }
            OnError::FailOpen => {
                assert!(matches!(out.unwrap(), RequestOutcome::Continue));
                assert_eq!(header(&parts.headers, "x-after").as_deref(), Some("yes"));
                assert_eq!(header(&parts.headers, "x-keep").as_deref(), Some("1"));
                assert_eq!(parts.uri, "/x?y=1");
                let mut resp = response(200, &[]);
                chain.on_response(&ctx, &mut resp, None).await.unwrap();
                assert_eq!(header(&resp.headers, "x-after").as_deref(), Some("yes"));
            }
        }
    }
    assert_eq!(
        instantiated(&reg),
        before,
        "a failed binding never instantiates"
    );
    assert_eq!(
        metric_value(
            &reg,
            "flexgate_plugin_traps_total",
            &[("plugin", "fixture-init-reject"), ("reason", "init")]
        ),
        2.0
    );
    assert_eq!(
        metric_value(
            &reg,
            "flexgate_plugin_invocations_total",
            &[("plugin", "fixture-init-reject"), ("outcome", "error")]
        ),
        2.0
    );
}

/// `per_request` keeps one instance per request (from on_request to on_response); when the
/// pooling allocator has no slot left a call fails at once as a host failure, and slots come back
/// when the requests end.
#[tokio::test]
async fn per_request_instance_exhaustion_fails_cleanly() {
    let _guard = EXCLUSIVE.read().await;
    let registry = prometheus::Registry::new();
    let opts = RuntimeOptions {
        max_instances: 2,
        ..RuntimeOptions::default()
    };
    let rt = PluginRuntime::new(opts, &registry).unwrap();
    let p = load(&rt, "headers", Isolation::PerRequest);
    let chain = single(bind(&p, HEADERS_CFG, OnError::FailClosed, BodyMode::None).await);
    let ctxs: Vec<_> = (0..2).map(|_| ctx()).collect();
    for c in &ctxs {
        let mut parts = request("GET", "/", &[]);
        chain.on_request(c, &mut parts, None).await.unwrap();
    }
    let started = Instant::now();
    let mut parts = request("GET", "/", &[]);
    let err = chain
        .on_request(&ctx(), &mut parts, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Host, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "did not fail at once"
    );
    // The parked instances serve their requests' on_response without instantiating again.
    for c in &ctxs {
        let mut resp = response(200, &[]);
        chain.on_response(c, &mut resp, None).await.unwrap();
        assert_eq!(
            header(&resp.headers, "x-served-by").as_deref(),
            Some("flexgate")
        );
    }
    drop(ctxs);
    let mut parts = request("GET", "/", &[]);
    chain.on_request(&ctx(), &mut parts, None).await.unwrap();
    assert_eq!(
        metric_value(&registry, "flexgate_plugin_traps_total", &[]),
        0.0,
        "exhaustion is not the plugin's fault"
    );
}

/// Plugins built without `std` (the SDK's `no_std_runtime!`) import no WASI and run without a
/// fiber; `std` plugins import WASI and keep the async path. Both isolation modes of a sync
/// plugin still give per_request a fresh instance per request (counted instantiations).
#[tokio::test]
async fn wasi_free_plugins_run_sync() {
    let _guard = EXCLUSIVE.read().await;
    let (rt, reg) = runtime();
    for (name, sync) in [
        ("headers", true),
        ("cors", true),
        ("fixture-trap", true),
        ("rewrite", false),
        ("fixture-stderr", false),
    ] {
        assert_eq!(load(&rt, name, Isolation::Pooled).is_sync(), sync, "{name}");
    }
    let p = load(&rt, "headers", Isolation::PerRequest);
    let chain = single(bind(&p, HEADERS_CFG, OnError::FailClosed, BodyMode::None).await);
    let ctx = ctx();
    for _ in 0..3 {
        let mut parts = request("GET", "/", &[("x-secret", "1")]);
        chain.on_request(&ctx, &mut parts, None).await.unwrap();
        assert_eq!(header(&parts.headers, "x-secret"), None);
    }
    // Same context, no on_response: each on_request still got its own instance.
    let inst = metric_value(
        &reg,
        "flexgate_plugin_instantiations_total",
        &[("plugin", "headers")],
    );
    // Loading instantiates nothing: 1 (Binding::new's init check) + 3 requests.
    assert_eq!(inst, 4.0);
}
