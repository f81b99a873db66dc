//! Route matching cost with 10 and 10,000 routes (issue 6 microbenchmark).
//!
//! Run: `cargo bench -p flexgate-proxy --bench router -- --quick`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use flexgate_proxy::router::{HostMatch, Matcher, PathMatch, Router};
use http::{HeaderMap, Method};

/// `n` routes of a realistic mix: per-service path prefixes, some exact paths, some host-bound.
fn table(n: usize) -> Router<usize> {
    let routes = (0..n)
        .map(|i| {
            let host = if i % 10 == 0 {
                HostMatch::Exact(format!("svc{i}.example.com"))
            } else {
                HostMatch::Any
            };
            let path = if i % 3 == 0 {
                PathMatch::Exact(format!("/svc{i}/health").into())
            } else {
                PathMatch::Prefix(format!("/svc{i}").into())
            };
            let m = Matcher {
                path,
                methods: if i % 7 == 0 {
                    vec![Method::GET]
                } else {
                    vec![]
                },
                headers: vec![],
            };
            (host, m, i)
        })
        .collect();
    Router::new(routes)
}

fn lookups(c: &mut Criterion) {
    let headers = HeaderMap::new();
    for n in [10usize, 10_000] {
        let router = table(n);
        // The last prefix route: the worst case for a scan.
        let last = (0..n)
            .rev()
            .find(|i| i % 3 != 0 && i % 10 != 0)
            .unwrap_or(1);
        let path = format!("/svc{last}/users/42");
        c.bench_function(&format!("router/{n}_routes/prefix_last"), |b| {
            b.iter(|| {
                router.find(
                    black_box(Some("api.example.com")),
                    black_box(&path),
                    &Method::GET,
                    &headers,
                )
            })
        });
        c.bench_function(&format!("router/{n}_routes/no_match"), |b| {
            b.iter(|| {
                router.find(
                    black_box(Some("api.example.com")),
                    black_box("/nothing/here"),
                    &Method::GET,
                    &headers,
                )
            })
        });
    }
}

criterion_group!(benches, lookups);
criterion_main!(benches);
