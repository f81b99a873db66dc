//! Target selection. Every strategy takes a filter so that ejected, unhealthy or circuit-open targets
//! (and targets a retry already tried) are skipped without allocating.

use std::sync::atomic::{AtomicUsize, Ordering};

use flexgate_config::LoadBalancing;

/// Virtual nodes per unit of weight on the consistent-hash ring.
const VNODES_PER_WEIGHT: u32 = 100;

/// A compiled load-balancing strategy for one upstream's target list.
#[derive(Debug)]
pub enum Balancer {
    /// Weighted round robin over a precomputed smooth schedule (nginx's smooth WRR order).
    RoundRobin {
        schedule: Box<[u16]>,
        next: AtomicUsize,
    },
    /// Power of two choices on in-flight requests divided by weight (as Envoy does).
    LeastRequests { weights: Box<[u32]> },
    /// Ketama-style ring: a key keeps its target while the target is available.
    ConsistentHash { ring: Box<[(u64, u16)]> },
}

impl Balancer {
    pub fn new(kind: LoadBalancing, weights: &[u32]) -> Self {
        match kind {
            LoadBalancing::RoundRobin => Self::RoundRobin {
                schedule: smooth_schedule(weights),
                next: AtomicUsize::new(0),
            },
            LoadBalancing::LeastRequests => Self::LeastRequests {
                weights: weights.into(),
            },
            LoadBalancing::ConsistentHash => Self::ConsistentHash {
                ring: ring(weights),
            },
        }
    }

    /// Picks a target index among `n` for which `ok` holds. `in_flight(i)` feeds least_requests;
    /// `hash` feeds consistent_hash (falls back to round robin order without one).
    pub fn pick(
        &self,
        n: usize,
        hash: Option<u64>,
        in_flight: impl Fn(usize) -> u32,
        ok: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        if n == 0 {
            return None;
        }
        match self {
            Self::RoundRobin { schedule, next } => {
                let start = next.fetch_add(1, Ordering::Relaxed);
                (0..schedule.len())
                    .map(|k| schedule[(start + k) % schedule.len()] as usize)
                    .find(|&i| ok(i))
            }
            Self::LeastRequests { weights } => {
                let a = fastrand::usize(..n);
                let b = if n > 1 {
                    (a + 1 + fastrand::usize(..n - 1)) % n
                } else {
                    a
                };
                let load = |i: usize| u64::from(in_flight(i)) * 1000 / u64::from(weights[i].max(1));
                match (ok(a), ok(b)) {
                    (true, true) => Some(if load(b) < load(a) { b } else { a }),
                    (true, false) => Some(a),
                    (false, true) => Some(b),
                    (false, false) => (0..n).filter(|&i| ok(i)).min_by_key(|&i| load(i)),
                }
            }
            Self::ConsistentHash { ring } => {
                let h = hash.unwrap_or_else(|| fastrand::u64(..));
                let start = ring.partition_point(|&(p, _)| p < h);
                (0..ring.len())
                    .map(|k| ring[(start + k) % ring.len()].1 as usize)
                    .find(|&i| ok(i))
            }
        }
    }
}

/// nginx's smooth weighted round robin, unrolled into one period of picks.
fn smooth_schedule(weights: &[u32]) -> Box<[u16]> {
    let total: i64 = weights.iter().map(|&w| i64::from(w.max(1))).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, &w) in current.iter_mut().zip(weights) {
            *c += i64::from(w.max(1));
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
            .unwrap_or((0, &0));
        current[best] -= total;
        out.push(best as u16);
    }
    out.into_boxed_slice()
}

fn ring(weights: &[u32]) -> Box<[(u64, u16)]> {
    let hasher = ring_hasher();
    let mut ring = Vec::new();
    for (i, &w) in weights.iter().enumerate() {
        for v in 0..w.max(1) * VNODES_PER_WEIGHT {
            ring.push((hasher.hash_one((i as u32, v)), i as u16));
        }
    }
    ring.sort_unstable();
    ring.into_boxed_slice()
}

/// Fixed seeds: every replica maps the same key to the same target.
pub fn ring_hasher() -> ahash::RandomState {
    ahash::RandomState::with_seeds(0x5eed_f1e7, 0x9a7e_3a11, 0x0dd_ba11, 0xc0ff_ee11)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_follows_weights() {
        let b = Balancer::new(LoadBalancing::RoundRobin, &[1, 1, 2]);
        let mut counts = [0; 3];
        for _ in 0..400 {
            counts[b.pick(3, None, |_| 0, |_| true).expect("pick")] += 1;
        }
        assert_eq!(counts, [100, 100, 200]);
    }

    #[test]
    fn skips_filtered_targets() {
        let b = Balancer::new(LoadBalancing::RoundRobin, &[1, 1, 1]);
        for _ in 0..10 {
            assert_ne!(b.pick(3, None, |_| 0, |i| i != 1), Some(1));
        }
        assert_eq!(b.pick(3, None, |_| 0, |_| false), None);
    }

    #[test]
    fn least_requests_prefers_idle() {
        let b = Balancer::new(LoadBalancing::LeastRequests, &[1, 1]);
        for _ in 0..50 {
            assert_eq!(
                b.pick(2, None, |i| if i == 0 { 10 } else { 0 }, |_| true),
                Some(1)
            );
        }
    }

    #[test]
    fn consistent_hash_is_stable_and_spreads() {
        let b = Balancer::new(LoadBalancing::ConsistentHash, &[1, 1, 1]);
        let h = ring_hasher();
        let mut seen = [0; 3];
        for user in 0..300u32 {
            let key = h.hash_one(user);
            let first = b.pick(3, Some(key), |_| 0, |_| true).expect("pick");
            assert_eq!(b.pick(3, Some(key), |_| 0, |_| true), Some(first));
            seen[first] += 1;
        }
        assert!(seen.iter().all(|&c| c > 50), "{seen:?}");
    }
}
