//! Minimal open-addressing table `u64 hash -> u64 TAT` for one local-store shard.
//!
//! Why not `HashMap`: with a million keys the table is tens of MiB, so every
//! decision is a cache (and TLB) miss. hashbrown keeps control bytes apart from
//! the entries, which costs two dependent misses per lookup; here key and value
//! sit together in a 16-byte slot, four per cache line, so a lookup usually costs
//! one. Keys are already uniformly distributed hashes, so linear probing with a
//! 3/4 maximum load is both simple and short. Removal only happens in bulk
//! (eviction rebuilds the table), so no tombstones are needed. Large tables live
//! on huge pages so the miss is not also a TLB miss (see `slots.rs`).

use super::slots::{Slot, Slots};

const MIN_CAPACITY: usize = 16;

#[derive(Debug, Default)]
pub(super) struct Table {
    /// Power-of-two many slots (or none), huge-page backed when large.
    slots: Slots,
    len: usize,
}

/// Map a hash to a non-zero key (0 means "empty"); merging hash 0 with 1 is
/// a 2^-64 event per pair.
#[inline]
fn key_of(hash: u64) -> u64 {
    hash.max(1)
}

impl Table {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Index of `hash`'s slot if present.
    #[inline]
    pub(super) fn find(&self, hash: u64) -> Option<usize> {
        let slots = self.slots.as_slice();
        if slots.is_empty() {
            return None;
        }
        let key = key_of(hash);
        let mask = slots.len() - 1;
        let mut i = key as usize & mask;
        loop {
            let s = slots[i];
            if s.key == key {
                return Some(i);
            }
            if s.key == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    pub(super) fn tat_mut(&mut self, index: usize) -> &mut u64 {
        &mut self.slots.as_mut_slice()[index].tat
    }

    /// Insert a key known to be absent.
    pub(super) fn insert_new(&mut self, hash: u64, tat: u64) {
        let capacity = self.capacity();
        if (self.len + 1) * 4 > capacity * 3 {
            self.rebuild((capacity * 2).max(MIN_CAPACITY), |_| true);
        }
        self.place(Slot {
            key: key_of(hash),
            tat,
        });
        self.len += 1;
    }

    /// All stored TATs (for eviction decisions).
    pub(super) fn tats(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots
            .as_slice()
            .iter()
            .filter(|s| s.key != 0)
            .map(|s| s.tat)
    }

    /// Keep the entries whose TAT satisfies `keep`. Shrinks the table when it
    /// became mostly empty, so idle memory is given back.
    pub(super) fn retain(&mut self, keep: impl FnMut(u64) -> bool) {
        self.rebuild(self.capacity(), keep);
        if self.len * 8 < self.capacity() && self.capacity() > MIN_CAPACITY {
            let smaller = (self.len * 2).next_power_of_two().max(MIN_CAPACITY);
            self.rebuild(smaller, |_| true);
        }
    }

    fn capacity(&self) -> usize {
        self.slots.as_slice().len()
    }

    fn rebuild(&mut self, capacity: usize, mut keep: impl FnMut(u64) -> bool) {
        let old = std::mem::replace(&mut self.slots, Slots::zeroed(capacity));
        self.len = 0;
        for &s in old.as_slice() {
            if s.key != 0 && keep(s.tat) {
                self.place(s);
                self.len += 1;
            }
        }
    }

    fn place(&mut self, slot: Slot) {
        let slots = self.slots.as_mut_slice();
        let mask = slots.len() - 1;
        let mut i = slot.key as usize & mask;
        while slots[i].key != 0 {
            i = (i + 1) & mask;
        }
        slots[i] = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_retain() {
        let mut t = Table::default();
        assert_eq!(t.find(42), None);
        for k in 0..1000u64 {
            // Spread keys like a hash would; include 0 (mapped to 1).
            t.insert_new(k.wrapping_mul(0x9E37_79B9_7F4A_7C15), k);
        }
        assert_eq!(t.len(), 1000);
        for k in 0..1000u64 {
            let i = t.find(k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            assert_eq!(i.map(|i| *t.tat_mut(i)), Some(k));
        }
        t.retain(|tat| tat % 2 == 0);
        assert_eq!(t.len(), 500);
        assert_eq!(t.tats().count(), 500);
        assert!(t.find(3u64.wrapping_mul(0x9E37_79B9_7F4A_7C15)).is_none());
        assert!(t.find(4u64.wrapping_mul(0x9E37_79B9_7F4A_7C15)).is_some());
        let big = t.capacity();
        t.retain(|tat| tat < 10);
        assert_eq!(t.len(), 5);
        assert!(t.capacity() < big, "shrinks when mostly empty");
        t.retain(|_| false);
        assert_eq!(t.len(), 0);
        t.insert_new(7, 7);
        assert!(t.find(7).is_some());
    }

    #[test]
    fn colliding_low_bits_probe_linearly() {
        let mut t = Table::default();
        for k in 0..10u64 {
            t.insert_new(k << 40, k);
        }
        for k in 0..10u64 {
            assert!(t.find(k << 40).is_some());
        }
        assert!(t.find(11 << 40).is_none());
    }
}
