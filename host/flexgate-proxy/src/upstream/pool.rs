//! A target's idle keep-alive connections. It lives in the target's state, so it needs no lookup
//! by address per request and survives config reloads with the target.
//!
//! Idle time is kept in sweep generations rather than timestamps, so neither putting nor taking a
//! connection reads the clock: the upstream's sweeper ([`spawn_sweeper`]) advances the generation
//! every quarter of the idle timeout and closes connections put five generations ago, i.e. idle
//! for at least the timeout and at most a quarter longer. It also closes the ones the upstream
//! has closed meanwhile.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::task::JoinHandle;

use super::h1::H1Conn;

/// Generations a connection may stay idle: its idle time is then in `[timeout, 1.25 × timeout]`.
const GENERATIONS: u32 = 5;

/// The idle connections of one target, most recently used last (taken first: its socket and
/// buffers are the warmest, and the oldest expire undisturbed at the front).
#[derive(Default)]
pub struct IdlePool {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    conns: VecDeque<(H1Conn, u32)>,
    generation: u32,
    /// When the generation last advanced: a second sweeper over the same pool (an old snapshot's,
    /// still held by a request in flight after a reload) must not make connections age faster.
    advanced: Option<Instant>,
}

impl std::fmt::Debug for IdlePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdlePool")
            .field("idle", &self.len())
            .finish()
    }
}

impl IdlePool {
    /// The most recently returned connection, if any. The caller checks it is still alive.
    pub fn take(&self) -> Option<H1Conn> {
        self.inner.lock().conns.pop_back().map(|(c, _)| c)
    }

    /// Keeps `conn` for the next request, unless `max_idle` connections are already waiting (the
    /// oldest goes then).
    pub fn put(&self, conn: H1Conn, max_idle: usize) {
        if max_idle == 0 {
            return;
        }
        let evicted = {
            let mut inner = self.inner.lock();
            let generation = inner.generation;
            inner.conns.push_back((conn, generation));
            (inner.conns.len() > max_idle)
                .then(|| inner.conns.pop_front())
                .flatten()
        };
        drop(evicted); // closes the socket outside the lock
    }

    /// Idle connections now.
    pub fn len(&self) -> usize {
        self.inner.lock().conns.len()
    }

    /// Whether no connection is idle.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Advances the generation (unless it advanced less than ¾ of `period` ago); closes
    /// connections idle too long and those whose peer hung up.
    fn sweep(&self, period: Duration) {
        let mut cx = Context::from_waker(Waker::noop());
        let closed: Vec<H1Conn> = {
            let mut inner = self.inner.lock();
            let now = Instant::now();
            if inner
                .advanced
                .is_none_or(|at| now.duration_since(at) >= period * 3 / 4)
            {
                inner.generation = inner.generation.wrapping_add(1);
                inner.advanced = Some(now);
            }
            let now = inner.generation;
            let mut closed = Vec::new();
            let mut kept = VecDeque::with_capacity(inner.conns.len());
            for (mut conn, since) in inner.conns.drain(..) {
                if now.wrapping_sub(since) >= GENERATIONS || !conn.is_reusable(&mut cx) {
                    closed.push(conn);
                } else {
                    kept.push_back((conn, since));
                }
            }
            inner.conns = kept;
            closed
        };
        drop(closed);
    }
}

/// Sweeps the pools every quarter of `idle` until aborted (when the upstream is dropped).
pub fn spawn_sweeper(pools: Vec<Arc<IdlePool>>, idle: Duration) -> JoinHandle<()> {
    let period = (idle / (GENERATIONS - 1)).max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            pools.iter().for_each(|p| p.sweep(period));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` open connections to a listener that accepts and holds them.
    async fn conns(n: usize) -> (Vec<H1Conn>, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let mut out = Vec::new();
        for _ in 0..n {
            let c = H1Conn::connect(&addr, Duration::from_secs(5))
                .await
                .expect("connect");
            out.push(c);
        }
        (out, hold)
    }

    #[tokio::test]
    async fn connections_expire_after_five_generations_taken_newest_first() {
        let pool = IdlePool::default();
        let (mut cs, _hold) = conns(3).await;
        let newest = cs.pop().expect("conn");
        pool.put(cs.pop().expect("conn"), 8);
        let period = Duration::ZERO; // every sweep advances
        pool.sweep(period);
        pool.sweep(period);
        pool.put(cs.pop().expect("conn"), 8);
        pool.put(newest, 8);
        assert_eq!(pool.len(), 3);
        pool.sweep(period);
        pool.sweep(period);
        assert_eq!(pool.len(), 3, "four generations: still idle");
        pool.sweep(period);
        assert_eq!(pool.len(), 2, "the first one put aged out after five");
        assert!(pool.take().is_some());
        assert_eq!(pool.len(), 1);
        pool.sweep(period);
        pool.sweep(period);
        pool.sweep(period);
        assert!(pool.is_empty());
    }

    #[tokio::test]
    async fn a_second_sweeper_does_not_age_connections_faster() {
        let pool = IdlePool::default();
        let (mut cs, _hold) = conns(1).await;
        pool.put(cs.pop().expect("conn"), 8);
        // Two sweepers with a long period sweeping back to back: one generation between them.
        for _ in 0..20 {
            pool.sweep(Duration::from_secs(3600));
        }
        assert_eq!(pool.len(), 1);
    }

    #[tokio::test]
    async fn max_idle_evicts_the_oldest_and_zero_keeps_none() {
        let pool = IdlePool::default();
        let (cs, _hold) = conns(3).await;
        for c in cs {
            pool.put(c, 2);
        }
        assert_eq!(pool.len(), 2);
        let (mut more, _hold2) = conns(1).await;
        let pool0 = IdlePool::default();
        pool0.put(more.pop().expect("conn"), 0);
        assert!(pool0.is_empty());
    }
}
