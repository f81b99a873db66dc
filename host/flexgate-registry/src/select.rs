//! Which version a request runs. Deterministic so that one client stays on one version across
//! requests *and across replicas*: the bucket comes from a fixed hash (FNV-1a + a SplitMix64
//! finalizer), never from a per-process seeded hasher.

use crate::model::Rollout;

/// The hash of a sticky key for `plugin` (the plugin name is mixed in so the 10% of clients on one
/// plugin's canary are not the same 10% on every other plugin's canary).
pub fn sticky_hash(plugin: &str, key: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for &b in plugin.as_bytes().iter().chain([0xffu8].iter()).chain(key) {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    splitmix64(h)
}

/// A hash for `sticky: random` (a fresh draw per request).
pub fn random_hash() -> u64 {
    fastrand::u64(..)
}

/// Spreads FNV's weak low bits over the whole word, so `hash % 100` is uniform.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The bucket 0..100 of a hash.
pub fn bucket(hash: u64) -> u8 {
    // `hash % 100` < 100, so the cast is lossless.
    (hash % 100) as u8
}

/// Picks the version for a request whose sticky key hashed to `hash`: the canary when the bucket is
/// below `canary_percent`, else stable. `None` when the rollout has no version yet.
pub fn choose_version(rollout: &Rollout, hash: u64) -> Option<&str> {
    match (&rollout.canary, &rollout.stable) {
        (Some(canary), _) if bucket(hash) < rollout.canary_percent => Some(canary),
        (_, Some(stable)) => Some(stable),
        // A canary without stable is refused by the rules; still be total.
        (Some(canary), None) => Some(canary),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(percent: u8) -> Rollout {
        let mut r = Rollout::empty("r", "p");
        r.stable = Some("1.0.0".into());
        r.canary = Some("1.1.0".into());
        r.canary_percent = percent;
        r
    }

    #[test]
    fn percent_bounds_are_exact() {
        for h in 0..1000u64 {
            assert_eq!(choose_version(&rollout(0), h), Some("1.0.0"));
            assert_eq!(choose_version(&rollout(100), h), Some("1.1.0"));
        }
        // bucket == percent goes to stable, below goes to canary
        assert_eq!(choose_version(&rollout(20), 19), Some("1.1.0"));
        assert_eq!(choose_version(&rollout(20), 20), Some("1.0.0"));
        assert_eq!(choose_version(&rollout(20), 119), Some("1.1.0"));
    }

    #[test]
    fn same_client_same_version_and_share_close_to_percent() {
        let r = rollout(20);
        let mut canary = 0;
        for client in 0..10_000u32 {
            let key = format!("10.0.{}.{}", client / 256, client % 256);
            let first = choose_version(&r, sticky_hash("p", key.as_bytes()));
            for _ in 0..3 {
                assert_eq!(choose_version(&r, sticky_hash("p", key.as_bytes())), first);
            }
            if first == Some("1.1.0") {
                canary += 1;
            }
        }
        assert!(
            (1800..=2200).contains(&canary),
            "canary share {canary}/10000"
        );
    }

    #[test]
    fn hash_is_stable_across_processes() {
        // Pinned value: replicas must agree, so the function must never change silently.
        assert_eq!(sticky_hash("p", b"k"), 0xa0b2_5b40_8a40_61e7);
        assert_ne!(sticky_hash("headers", b"a"), sticky_hash("cors", b"a"));
    }

    #[test]
    fn no_versions() {
        assert_eq!(choose_version(&Rollout::empty("r", "p"), 1), None);
    }
}
