//! Hot-path costs: local GCRA decisions and breaker admission/recording.
//!
//! Run: `cargo bench -p flexgate-resilience -- --quick`

use criterion::{Criterion, criterion_group, criterion_main};
use flexgate_resilience::{
    BreakerPolicy, CircuitBreaker, FailureRatePolicy, Gcra, LocalStore, OnStoreError, Outcome,
    RateLimitPolicy, RateLimiter, StoreKind,
};
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

fn gcra() -> Gcra {
    // 100/s with burst 10: a mix of admitted and limited decisions on a hot key.
    Gcra::new(100, Duration::from_secs(1), 10).unwrap_or_else(|e| panic!("{e}"))
}

fn local_gcra(c: &mut Criterion) {
    let g = gcra();
    let store = LocalStore::default();
    c.bench_function("local_gcra/one_key", |b| {
        b.iter(|| store.check(&g, black_box("route"), black_box("client-1")))
    });

    const N: u32 = 1_000_000;
    // Room for all keys so the bench measures lookups, not evictions.
    let store = LocalStore::new(2 * N as usize);
    let mut key = KeyBuf::default();
    for i in 0..N {
        store.check(&g, "route", key.set(i));
    }
    assert!(store.len() >= N as usize * 99 / 100);
    // Keys are rendered into a stack buffer (as a request's key would be in cache)
    // so the bench measures the store, not misses on a 1M-entry key vector.
    let mut i = 0u32;
    c.bench_function("local_gcra/1M_keys", |b| {
        b.iter(|| {
            // Large odd stride: successive keys are unrelated.
            i = (i + 7_919) % N;
            store.check(&g, "route", black_box(key.set(i)))
        })
    });
    // The floor for any store of this size: one uncached read at a random spot of a
    // 32 MiB array (about the size of 1M entries in a hash table) per iteration.
    let table: Vec<u64> = (0..4u64 << 20).collect();
    c.bench_function("baseline/random_read_32MiB", |b| {
        let hasher = ahash::RandomState::new();
        b.iter(|| {
            i = (i + 7_919) % N;
            let h = hasher.hash_one(i) as usize;
            black_box(table[h % table.len()])
        })
    });
    // The same, but each read depends on the previous one (as a decision behind a
    // lock does): the machine's true memory latency.
    let n = table.len();
    let chain: Vec<usize> = {
        let hasher = ahash::RandomState::new();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_unstable_by_key(|&x| hasher.hash_one(x));
        let mut next = vec![0usize; n];
        for w in order.windows(2) {
            next[w[0]] = w[1];
        }
        next[order[n - 1]] = order[0];
        next
    };
    let mut p = 0usize;
    c.bench_function("baseline/dependent_read_32MiB", |b| {
        b.iter(|| {
            p = chain[p];
            black_box(p)
        })
    });
    c.bench_function("baseline/key_render_and_hash", |b| {
        let hasher = ahash::RandomState::new();
        b.iter(|| {
            i = (i + 7_919) % N;
            hasher.hash_one(("route", black_box(key.set(i))))
        })
    });

    // The façade in local mode: the future completes on its first poll.
    let rl = RateLimiter::new(
        RateLimitPolicy {
            rate_per: (100, Duration::from_secs(1)),
            burst: 10,
            store: StoreKind::Local,
            on_store_error: OnStoreError::Local,
        },
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut cx = Context::from_waker(Waker::noop());
    c.bench_function("ratelimiter_local_check", |b| {
        b.iter(|| {
            let fut = pin!(rl.check(black_box("route"), black_box("client-1")));
            match fut.poll(&mut cx) {
                Poll::Ready(d) => d,
                Poll::Pending => unreachable!("local checks never wait"),
            }
        })
    });
}

fn breaker(c: &mut Criterion) {
    let b = CircuitBreaker::new(BreakerPolicy::default());
    c.bench_function("breaker/acquire_record_success", |bch| {
        bch.iter(|| {
            let a = b.try_acquire();
            b.record(black_box(&a), Outcome::Success)
        })
    });

    // With a failure-rate window every outcome is counted under the mutex.
    let b = CircuitBreaker::new(BreakerPolicy {
        failure_rate: Some(FailureRatePolicy {
            threshold: 0.5,
            window: Duration::from_secs(10),
            min_requests: 20,
        }),
        ..BreakerPolicy::default()
    });
    c.bench_function("breaker/acquire_record_success_with_window", |bch| {
        bch.iter(|| {
            let a = b.try_acquire();
            b.record(black_box(&a), Outcome::Success)
        })
    });
}

/// `client-NNNNNNN` rendered without allocating.
#[derive(Default)]
struct KeyBuf {
    buf: [u8; 16],
}

impl KeyBuf {
    fn set(&mut self, mut n: u32) -> &str {
        self.buf[..7].copy_from_slice(b"client-");
        for d in (7..14).rev() {
            self.buf[d] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        std::str::from_utf8(&self.buf[..14]).unwrap_or_default()
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = local_gcra, breaker
}
criterion_main!(benches);
