//! Deterministic byte streams for large transfers.
//!
//! A 1 GiB body is never held in memory: it is a pseudo-random block of [`BLOCK_LEN`] bytes (a prime, so
//! that frame boundaries never line up with it) repeated, produced as zero-copy slices of one shared
//! buffer. The receiving side checks every byte against the same pattern at its offset
//! ([`PatternCheck`]), which catches dropped, duplicated, reordered or corrupted data just like a hash
//! would, but at memcmp speed even in a debug build.

use std::sync::LazyLock;

use bytes::Bytes;
use futures_util::stream::{self, Stream};
use http_body::Frame;

use crate::BoxError;

/// Length of the repeated block (the largest prime below 64 KiB).
pub const BLOCK_LEN: usize = 65_521;
/// Largest chunk [`pattern_chunks`] hands out.
pub const MAX_CHUNK: usize = 64 * 1024;

/// The block followed by its first `MAX_CHUNK` bytes again (wrapping), so any chunk is one contiguous slice.
static DOUBLE: LazyLock<Bytes> = LazyLock::new(|| {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = Vec::with_capacity(BLOCK_LEN + MAX_CHUNK);
    while block.len() < BLOCK_LEN {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        for b in v.to_le_bytes() {
            if block.len() < BLOCK_LEN {
                block.push(b);
            }
        }
    }
    let one = block.clone();
    while block.len() < BLOCK_LEN + MAX_CHUNK {
        let n = (BLOCK_LEN + MAX_CHUNK - block.len()).min(BLOCK_LEN);
        block.extend_from_slice(&one[..n]);
    }
    Bytes::from(block)
});

/// The `len` pattern bytes starting at `offset` (`len <= MAX_CHUNK`), without copying.
pub fn pattern_slice(offset: u64, len: usize) -> Bytes {
    assert!(len <= MAX_CHUNK, "pattern_slice: len {len} > {MAX_CHUNK}");
    let start = (offset % BLOCK_LEN as u64) as usize;
    DOUBLE.slice(start..start + len)
}

/// The first `len` bytes of the pattern in one buffer (for small bodies).
pub fn pattern_bytes(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut off = 0u64;
    while out.len() < len {
        let n = (len - out.len()).min(MAX_CHUNK);
        out.extend_from_slice(&pattern_slice(off, n));
        off += n as u64;
    }
    out
}

/// `total` pattern bytes as a stream of data frames of `chunk` bytes (the last one shorter).
pub fn pattern_frames(
    total: u64,
    chunk: usize,
) -> impl Stream<Item = Result<Frame<Bytes>, BoxError>> + Send + 'static {
    use futures_util::StreamExt;
    pattern_chunks(total, chunk).map(|b| Ok(Frame::data(b)))
}

/// `total` pattern bytes as a stream of `Bytes` chunks of `chunk` bytes (the last one shorter).
pub fn pattern_chunks(total: u64, chunk: usize) -> impl Stream<Item = Bytes> + Send + 'static {
    let chunk = chunk.clamp(1, MAX_CHUNK);
    stream::iter(ChunkIter {
        offset: 0,
        total,
        chunk,
    })
}

struct ChunkIter {
    offset: u64,
    total: u64,
    chunk: usize,
}

impl Iterator for ChunkIter {
    type Item = Bytes;
    fn next(&mut self) -> Option<Bytes> {
        if self.offset >= self.total {
            return None;
        }
        let n = (self.total - self.offset).min(self.chunk as u64) as usize;
        let b = pattern_slice(self.offset, n);
        self.offset += n as u64;
        Some(b)
    }
}

/// Checks a received byte stream against the pattern, chunk by chunk, in constant memory.
#[derive(Debug, Default, Clone)]
pub struct PatternCheck {
    offset: u64,
    first_mismatch: Option<u64>,
}

impl PatternCheck {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the next received bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = data.len().min(MAX_CHUNK);
            if self.first_mismatch.is_none() && data[..n] != pattern_slice(self.offset, n)[..] {
                let expected = pattern_slice(self.offset, n);
                let at = data[..n]
                    .iter()
                    .zip(expected.iter())
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                self.first_mismatch = Some(self.offset + at as u64);
            }
            self.offset += n as u64;
            data = &data[n..];
        }
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.offset
    }

    pub fn is_empty(&self) -> bool {
        self.offset == 0
    }

    /// Offset of the first byte that differed from the pattern, if any.
    pub fn first_mismatch(&self) -> Option<u64> {
        self.first_mismatch
    }

    /// Every byte so far matched the pattern.
    pub fn ok(&self) -> bool {
        self.first_mismatch.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn chunks_verify_whatever_the_split() {
        let total = 3 * BLOCK_LEN as u64 + 12_345;
        let chunks: Vec<Bytes> = pattern_chunks(total, 10_000).collect().await;
        let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(all.len() as u64, total);
        assert_eq!(all, pattern_bytes(total as usize));
        let mut check = PatternCheck::new();
        for piece in all.chunks(7_777) {
            check.update(piece);
        }
        assert!(check.ok());
        assert_eq!(check.len(), total);

        let mut bad = all.clone();
        bad[100_000] ^= 1;
        let mut check = PatternCheck::new();
        check.update(&bad);
        assert_eq!(check.first_mismatch(), Some(100_000));

        // A dropped frame shifts everything after it: detected.
        let mut check = PatternCheck::new();
        check.update(&all[..50_000]);
        check.update(&all[60_000..]);
        assert!(!check.ok());
    }
}
