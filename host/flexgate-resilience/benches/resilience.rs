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
use tokio::time::Instant;

fn gcra() -> Gcra {
    // 100/s with burst 10: a mix of admitted and limited decisions on a hot key.
    Gcra::new(100, Duration::from_secs(1), 10).unwrap_or_else(|e| panic!("{e}"))
}

fn local_gcra(c: &mut Criterion) {
    let g = gcra();
    // A decision is made at the request's arrival time, which the request path has already read
    // (limit.rs passes it): arrivals here are 1 µs apart, so no clock is read inside the loop.
    // `*_reading_clock` adds the clock read for comparison: on this machine `Instant::now()`
    // (rdtscp) waits for the previous table miss, so it costs far more than its ~20 ns alone.
    let mut arrived = Instant::now();
    let mut next_arrival = move || {
        arrived += Duration::from_micros(1);
        arrived
    };
    let store = LocalStore::default();
    c.bench_function("local_gcra/one_key", |b| {
        b.iter(|| {
            store.check_at(
                &g,
                black_box("route"),
                black_box("client-1"),
                next_arrival(),
            )
        })
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
            store.check_at(&g, "route", black_box(key.set(i)), next_arrival())
        })
    });
    c.bench_function("local_gcra/1M_keys_reading_clock", |b| {
        b.iter(|| {
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
    let chain: Vec<u64> = {
        let hasher = ahash::RandomState::new();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_unstable_by_key(|&x| hasher.hash_one(x));
        let mut next = vec![0u64; n];
        for w in order.windows(2) {
            next[w[0]] = w[1] as u64;
        }
        next[order[n - 1]] = order[0] as u64;
        next
    };
    let mut p = 0usize;
    c.bench_function("baseline/dependent_read_32MiB", |b| {
        b.iter(|| {
            p = chain[p] as usize;
            black_box(p)
        })
    });
    // The same chain in memory advised MADV_HUGEPAGE: the floor without TLB misses
    // (2 MiB pages map the 32 MiB in 16 TLB entries), i.e. plain memory latency.
    let mut huge = HugeBuf::new(n);
    huge.words().copy_from_slice(bytemuck::cast_slice(&chain));
    drop(chain);
    let huge_chain = huge.words();
    c.bench_function("baseline/dependent_read_32MiB_hugepages", |b| {
        b.iter(|| {
            p = huge_chain[p] as usize;
            black_box(p)
        })
    });
    // Independent random reads again, but each iteration also reads the clock as
    // every decision must. On this machine `Instant::now()` (vDSO `rdtscp`) waits
    // for earlier loads, so it serializes the misses: the floor for a store that
    // reads the clock per decision, however its table is laid out.
    c.bench_function("baseline/clock_and_random_read_32MiB_hugepages", |b| {
        let hasher = ahash::RandomState::new();
        b.iter(|| {
            i = (i + 7_919) % N;
            let h = hasher.hash_one(i) as usize;
            let t = tokio::time::Instant::now();
            (t, black_box(huge_chain[h % n]))
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

/// `n` words of anonymous memory advised `MADV_HUGEPAGE`, 2 MiB aligned.
struct HugeBuf {
    map: memmap2::MmapMut,
    offset: usize,
    n: usize,
}

impl HugeBuf {
    const HUGE: usize = 2 << 20;

    fn new(n: usize) -> Self {
        let map =
            memmap2::MmapMut::map_anon(n * 8 + Self::HUGE).unwrap_or_else(|e| panic!("mmap: {e}"));
        if let Err(e) = map.advise(memmap2::Advice::HugePage) {
            eprintln!("MADV_HUGEPAGE failed ({e}): baseline runs on normal pages");
        }
        let offset = (map.as_ptr() as usize).next_multiple_of(Self::HUGE) - map.as_ptr() as usize;
        Self { map, offset, n }
    }

    fn words(&mut self) -> &mut [u64] {
        bytemuck::cast_slice_mut(&mut self.map[self.offset..self.offset + self.n * 8])
    }
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
