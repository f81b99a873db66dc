//! Plugin call overhead with the real `headers` component (run `plugins/build.sh` first):
//! a pooled `on_request`, a per-request instance + `on_request`, and the header conversion.
#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use flexgate_plugins::{
    Binding, BodyMode, CallCtx, Chain, Isolation, OnError, PluginRuntime, PluginSpec,
    RuntimeOptions,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const CFG: &str = r#"{"request":{"set":{"x-request-id":"${request_id}"},"remove":["x-secret"]}}"#;

fn wasm() -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/dist/headers.wasm");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}: run plugins/build.sh first", p.display()))
}

fn parts() -> http::request::Parts {
    let mut b = http::Request::builder()
        .method("GET")
        .uri("/api/users/42?expand=1");
    for (n, v) in [
        ("host", "api.example.com"),
        ("user-agent", "bench/1.0"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("accept-language", "en-US,en;q=0.9"),
        (
            "authorization",
            "Bearer abcdefghijklmnopqrstuvwxyz0123456789",
        ),
        ("cookie", "session=0123456789abcdef; theme=dark"),
        ("x-forwarded-for", "198.51.100.7"),
        ("x-forwarded-proto", "https"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ] {
        b = b.header(n, v);
    }
    b.body(()).unwrap().into_parts().0
}

fn bench_calls(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = prometheus::Registry::new();
    let opts = RuntimeOptions {
        cache_dir: Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-plugin-cache"),
        ),
        max_instances: 32,
        ..Default::default()
    };
    let runtime = PluginRuntime::new(opts, &registry).unwrap();
    let ctx = CallCtx::new("192.0.2.1:1234".parse().unwrap(), "bench", "req-1");
    for (name, iso) in [
        ("pooled_on_request", Isolation::Pooled),
        ("per_request_instance_on_request", Isolation::PerRequest),
    ] {
        let mut spec = PluginSpec::new("headers", "bench", wasm());
        spec.isolation = iso;
        // Measures call cost, not deadlines: a starved bench thread on a shared machine must not
        // turn into a timeout.
        spec.timeout = Duration::from_secs(1);
        let plugin = runtime.load(spec).unwrap();
        let binding = rt
            .block_on(Binding::new(
                plugin,
                "bench",
                CFG.into(),
                OnError::FailClosed,
                BodyMode::None,
            ))
            .unwrap();
        let chain = Chain::new(vec![std::sync::Arc::new(binding)]);
        let mut p = parts();
        c.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        chain.on_request(&ctx, &mut p, None).await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
        // What one proxied request costs: a fresh context, on_request and on_response (for
        // per_request: one fresh instance shared by both hooks).
        let full = name.replace("_on_request", "_full_request");
        let mut resp = http::Response::new(()).into_parts().0;
        c.bench_function(&full, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let ctx = CallCtx::new("192.0.2.1:1234".parse().unwrap(), "bench", "req-1");
                        chain.on_request(&ctx, &mut p, None).await.unwrap();
                        chain.on_response(&ctx, &mut resp, None).await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
    }
    let p = parts();
    c.bench_function("header_conversion_all_to_guest", |b| {
        b.iter(|| {
            flexgate_plugins::bench_support::headers_to_pairs(std::hint::black_box(&p.headers))
        })
    });
    c.bench_function("header_conversion_one_to_guest", |b| {
        b.iter(|| {
            flexgate_plugins::bench_support::header_to_guest(
                std::hint::black_box(&p.headers),
                "authorization",
            )
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_calls
}
criterion_main!(benches);
