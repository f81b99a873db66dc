//! Guest stdout/stderr capture: bounded per call, then forwarded to `tracing` (rate-limited by
//! the plugin's [`LogLimiter`]). Writes past the bound are counted and dropped but reported as
//! successful, so a chatty guest never traps because of its own `eprintln!`.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of guest output kept per call; the rest is dropped.
pub(crate) const CAPTURE_LIMIT: usize = 2048;

#[derive(Default)]
struct Buf {
    data: Vec<u8>,
    dropped: usize,
}

/// Shared sink for stdout and stderr of one instance.
#[derive(Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<Buf>>);

impl Capture {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn push(&self, bytes: &[u8]) {
        let mut b = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let room = CAPTURE_LIMIT.saturating_sub(b.data.len());
        let take = room.min(bytes.len());
        b.data.extend_from_slice(&bytes[..take]);
        b.dropped += bytes.len() - take;
    }

    /// Take what the guest wrote since the last call: (text, bytes dropped).
    pub(crate) fn take(&self) -> Option<(String, usize)> {
        let mut b = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if b.data.is_empty() && b.dropped == 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&b.data).trim_end().to_string();
        let dropped = b.dropped;
        b.data.clear();
        b.dropped = 0;
        Some((text, dropped))
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Token bucket shared by all instances of a plugin version: guest log lines and captured
/// output beyond `burst` lines, refilled at `per_sec`, are suppressed (and counted).
pub(crate) struct LogLimiter {
    inner: Mutex<Bucket>,
    per_sec: f64,
    burst: f64,
}

struct Bucket {
    tokens: f64,
    last: Instant,
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) fn new(per_sec: f64, burst: f64) -> Self {
        LogLimiter {
            inner: Mutex::new(Bucket {
                tokens: burst,
                last: Instant::now(),
                suppressed: 0,
            }),
            per_sec,
            burst,
        }
    }

    /// `Some(suppressed_since_last_allowed)` when a line may be emitted.
    pub(crate) fn allow(&self) -> Option<u64> {
        let mut b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.last = now;
        b.tokens = (b.tokens + elapsed * self.per_sec).min(self.burst);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Some(std::mem::take(&mut b.suppressed))
        } else {
            b.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_truncates() {
        let c = Capture::new();
        c.push(&vec![b'a'; CAPTURE_LIMIT + 10]);
        let (text, dropped) = c.take().expect("output");
        assert_eq!(text.len(), CAPTURE_LIMIT);
        assert_eq!(dropped, 10);
        assert!(c.take().is_none());
    }

    #[test]
    fn limiter_bounds_bursts() {
        let l = LogLimiter::new(0.0, 3.0);
        assert!(l.allow().is_some());
        assert!(l.allow().is_some());
        assert!(l.allow().is_some());
        assert!(l.allow().is_none());
    }
}
