//! In-process GCRA store: a sharded, bounded map from key hash to TAT.

use super::gcra::{Decision, Gcra};
use ahash::RandomState;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::table::Table;

/// 16 rather than more: enough to keep lock contention negligible (a critical
/// section is one table probe), and few enough that a shard of a store with the
/// default million keys reaches 2 MiB, the size from which its table is backed by
/// huge pages (see `slots.rs`); with 64 shards the tables would stop at 512 KiB
/// and every decision would pay a TLB miss too.
const SHARDS: usize = 16;

/// Default total key cap.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

/// Cache-line aligned so neighbouring shard locks do not false-share.
#[repr(align(128))]
struct Shard(Mutex<Table>);

/// Sharded map of `hash(route, key) -> TAT` with bounded memory.
///
/// * 16 shards, each a `parking_lot::Mutex` around a small open-addressing table
///   (see `table.rs` for why not `HashMap`): no global lock.
/// * Keys are hashed with ahash under a per-process random seed, so an attacker
///   cannot aim a flood of keys at one shard. The key string is hashed in place:
///   a decision allocates nothing (only table growth and the batched evictions
///   below do, amortized over many inserts).
/// * Memory is bounded: each shard holds at most `max_keys / 16` entries. When a
///   full shard needs room, it drops all rested keys (TAT in the past: forgetting
///   them changes no decision); if that frees less than 1/8 of the shard, it also
///   drops the entries closest to rested (smallest TAT) until 1/8 is free. Making
///   room in batches keeps the O(shard) sweep amortized to O(1) per insert.
///
/// At the cap we evict and admit rather than refuse: refusing new keys would let a
/// flood of random keys lock every new legitimate client out, whereas evicting the
/// least-indebted keys only forgives a little debt to keys that were nearly rested.
pub struct LocalStore {
    shards: Box<[Shard]>,
    hasher: RandomState,
    epoch: Instant,
    shard_cap: usize,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("max_keys", &(self.shard_cap * SHARDS))
            .finish_non_exhaustive()
    }
}

impl Default for LocalStore {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_KEYS)
    }
}

impl LocalStore {
    /// A store holding at most `max_keys` keys (rounded up to a multiple of 16,
    /// at least 16).
    pub fn new(max_keys: usize) -> Self {
        let shard_cap = max_keys.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS)
                .map(|_| Shard(Mutex::new(Table::default())))
                .collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
            shard_cap,
        }
    }

    /// Check (and count) one request for `key` on `route` at the current time.
    #[inline]
    pub fn check(&self, gcra: &Gcra, route: &str, key: &str) -> Decision {
        self.check_at(gcra, route, key, Instant::now())
    }

    /// [`check`](Self::check) at an explicit time (tests, or a caller that already
    /// read the clock).
    #[inline]
    pub fn check_at(&self, gcra: &Gcra, route: &str, key: &str, now: Instant) -> Decision {
        let hash = self.hasher.hash_one((route, key));
        self.check_hashed(gcra, hash, now)
    }

    fn check_hashed(&self, gcra: &Gcra, hash: u64, now: Instant) -> Decision {
        let now_ns = self.now_ns(now);
        // The table indexes with the low bits; shard on others so both stay well
        // distributed within a shard.
        let shard = &self.shards[((hash >> 32) as usize) % SHARDS];
        let mut map = shard.0.lock();
        if let Some(i) = map.find(hash) {
            let tat = map.tat_mut(i);
            let (decision, new_tat) = gcra.decide(*tat, now_ns);
            *tat = new_tat;
            return decision;
        }
        // An unknown key is rested, and a rested key is always admitted.
        let (decision, new_tat) = gcra.decide(0, now_ns);
        if map.len() >= self.shard_cap {
            make_room(&mut map, self.shard_cap, now_ns);
        }
        map.insert_new(hash, new_tat);
        decision
    }

    /// Nanoseconds since the store's epoch, offset by 1 so a stored TAT of 0 is
    /// always in the past.
    fn now_ns(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
            + 1
    }

    /// Number of keys currently stored.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().len()).sum()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total key cap.
    pub fn max_keys(&self) -> usize {
        self.shard_cap * SHARDS
    }

    /// Drop every rested key (TAT in the past); returns how many. Optional: full
    /// shards do this by themselves, but a periodic call returns memory sooner.
    pub fn evict_expired(&self) -> usize {
        let now_ns = self.now_ns(Instant::now());
        let mut removed = 0;
        for s in self.shards.iter() {
            let mut map = s.0.lock();
            let before = map.len();
            map.retain(|tat| tat > now_ns);
            removed += before - map.len();
        }
        removed
    }
}

/// Free at least 1/8 of a full shard: rested keys first, then smallest TATs.
fn make_room(map: &mut Table, cap: usize, now_ns: u64) {
    map.retain(|tat| tat > now_ns);
    let target = cap - cap.div_ceil(8);
    if map.len() <= target {
        return;
    }
    let excess = map.len() - target;
    let mut tats: Vec<u64> = map.tats().collect();
    let (_, &mut cutoff, _) = tats.select_nth_unstable(excess - 1);
    // Remove exactly `excess`: everything below the cutoff, then as many ties as
    // needed (ties are common: keys first seen in the same clock tick).
    let below = tats.iter().filter(|&&t| t < cutoff).count();
    let mut ties = excess - below;
    map.retain(|tat| match tat.cmp(&cutoff) {
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal if ties > 0 => {
            ties -= 1;
            false
        }
        _ => true,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn gcra(rate: u64, burst: u32) -> Gcra {
        Gcra::new(rate, Duration::from_secs(1), burst).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test(start_paused = true)]
    async fn keys_and_routes_are_independent() {
        let s = LocalStore::new(1000);
        let g = gcra(1, 1);
        assert!(s.check(&g, "r", "a").allowed);
        assert!(s.check(&g, "r", "a").allowed);
        assert!(!s.check(&g, "r", "a").allowed);
        assert!(s.check(&g, "r", "b").allowed);
        assert!(s.check(&g, "r2", "a").allowed);
        // ("ra", "") and ("r", "a") must not collide through concatenation.
        assert!(s.check(&g, "ra", "").allowed);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(s.check(&g, "r", "a").allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn paced_admitted_count_with_paused_time() {
        let s = LocalStore::default();
        let g = gcra(200, 20);
        let mut admitted = 0u64;
        for _ in 0..10_000 {
            admitted += u64::from(s.check(&g, "route", "client").allowed);
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        let expected = 200 * 10 + 20;
        assert!(admitted.abs_diff(expected) <= expected / 100, "{admitted}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured() {
        let s = LocalStore::default();
        let g = gcra(5, 0);
        assert!(s.check(&g, "r", "k").allowed);
        let d = s.check(&g, "r", "k");
        assert!(!d.allowed);
        let wait = d.retry_after.unwrap_or_default();
        assert_eq!(wait, Duration::from_millis(200));
        tokio::time::advance(wait - Duration::from_nanos(2)).await;
        assert!(!s.check(&g, "r", "k").allowed);
        tokio::time::advance(Duration::from_nanos(2)).await;
        assert!(s.check(&g, "r", "k").allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn limited_requests_do_not_add_keys() {
        let s = LocalStore::new(64);
        let g = gcra(1, 0);
        assert!(s.check(&g, "r", "k").allowed);
        assert!(!s.check(&g, "r", "k").allowed);
        assert_eq!(s.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn rested_keys_are_evicted() {
        let s = LocalStore::new(6400);
        let g = gcra(10, 0);
        for i in 0..1000 {
            s.check(&g, "r", &i.to_string());
        }
        assert_eq!(s.len(), 1000);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(s.evict_expired(), 1000);
        assert!(s.is_empty());
    }

    /// A flood of 2M distinct keys (all still indebted) never exceeds the cap, and
    /// the most indebted keys survive the evictions.
    #[tokio::test(start_paused = true)]
    async fn flood_of_distinct_keys_stays_bounded() {
        let cap = 64_000;
        let s = LocalStore::new(cap);
        // 1 per hour: every key stays indebted for the whole test.
        let g = Gcra::new(1, Duration::from_secs(3600), 0).unwrap_or_else(|e| panic!("{e}"));
        let mut buf = String::with_capacity(16);
        let mut max_seen = 0;
        for i in 0..2_000_000u32 {
            use std::fmt::Write;
            buf.clear();
            let _ = write!(buf, "{i}");
            assert!(
                s.check(&g, "r", &buf).allowed,
                "new keys are admitted at cap"
            );
            if i % 100_000 == 0 {
                max_seen = max_seen.max(s.len());
                tokio::time::advance(Duration::from_millis(1)).await;
            }
        }
        assert!(max_seen <= s.max_keys() && s.len() <= s.max_keys());
        assert!(s.len() >= cap * 3 / 4, "evicts in batches, not everything");
        // Eviction takes the least indebted keys: a heavily used key survives a
        // second flood of single-use keys.
        let hot = "hot";
        let g2 = Gcra::new(1, Duration::from_secs(3600), 100).unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..50 {
            s.check(&g2, "r", hot);
        }
        for i in 0..200_000u32 {
            buf.clear();
            let _ = std::fmt::Write::write_fmt(&mut buf, format_args!("x{i}"));
            s.check(&g, "r", &buf);
        }
        assert_eq!(s.check(&g2, "r", hot).remaining, 100 - 50);
    }
}
