//! Backing memory for a shard's slot array: a `Vec` while small, anonymous memory
//! advised `MADV_HUGEPAGE` once large.
//!
//! Why: a big table is read at random, so every decision misses the TLB as well as
//! the cache. With 4 KiB pages a 32 MiB store spans 8192 pages, far more than the
//! TLB holds, and under virtualization a page walk is two-dimensional. 2 MiB pages
//! map each large shard with one TLB entry. Transparent huge pages are often in
//! `madvise` mode (plain allocations never get them), hence the explicit advice.
//! The advice is only a hint: when it fails or the kernel has no huge page at
//! hand, the table works the same on normal pages.

use bytemuck::{Pod, Zeroable};
use memmap2::{Advice, MmapMut};

/// One table entry; `key == 0` marks an empty slot. `Pod` so the huge-page
/// mapping (plain bytes) can be viewed as slots without `unsafe`.
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
#[repr(C)]
pub(super) struct Slot {
    pub(super) key: u64,
    pub(super) tat: u64,
}

/// Size of a transparent huge page on x86-64 and (usually) aarch64.
const HUGE_PAGE: usize = 2 << 20;

/// Zeroed slot storage.
#[derive(Debug)]
pub(super) enum Slots {
    Heap(Vec<Slot>),
    /// `map` is over-allocated by one huge page so that `offset` can start the
    /// slots on a huge-page boundary whatever address the kernel picked.
    Huge {
        map: MmapMut,
        offset: usize,
        len: usize,
    },
}

impl Default for Slots {
    fn default() -> Self {
        Self::Heap(Vec::new())
    }
}

impl Slots {
    /// `len` empty slots; huge-page backed when they fill at least one huge page.
    pub(super) fn zeroed(len: usize) -> Self {
        let bytes = len * size_of::<Slot>();
        if bytes >= HUGE_PAGE
            && let Ok(map) = MmapMut::map_anon(bytes + HUGE_PAGE)
        {
            // Ignored on failure (no THP support, `never` mode): normal pages work.
            let _ = map.advise(Advice::HugePage);
            let addr = map.as_ptr() as usize;
            let offset = addr.next_multiple_of(HUGE_PAGE) - addr;
            return Self::Huge { map, offset, len };
        }
        Self::Heap(vec![Slot::default(); len])
    }

    #[inline]
    pub(super) fn as_slice(&self) -> &[Slot] {
        match self {
            Self::Heap(v) => v,
            Self::Huge { map, offset, len } => {
                bytemuck::cast_slice(&map[*offset..*offset + *len * size_of::<Slot>()])
            }
        }
    }

    #[inline]
    pub(super) fn as_mut_slice(&mut self) -> &mut [Slot] {
        match self {
            Self::Heap(v) => v,
            Self::Huge { map, offset, len } => {
                bytemuck::cast_slice_mut(&mut map[*offset..*offset + *len * size_of::<Slot>()])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_on_heap_large_huge_aligned_and_zeroed() {
        assert!(matches!(Slots::zeroed(16), Slots::Heap(_)));
        let n = HUGE_PAGE / size_of::<Slot>();
        let mut s = Slots::zeroed(n);
        assert!(
            matches!(s, Slots::Huge { .. }),
            "anonymous mmap works on Linux"
        );
        assert_eq!(s.as_slice().as_ptr() as usize % HUGE_PAGE, 0);
        assert_eq!(s.as_slice().len(), n);
        assert!(s.as_slice().iter().all(|x| x.key == 0 && x.tat == 0));
        s.as_mut_slice()[n - 1].tat = 7;
        assert_eq!(s.as_slice()[n - 1].tat, 7);
    }
}
