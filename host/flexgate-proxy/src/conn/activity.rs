//! What a connection's parking decision needs to know about its requests, and the response body
//! wrapper that reports when one is over.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};

/// Requests begun and requests still running on one connection.
#[derive(Debug, Default)]
pub struct Activity {
    started: AtomicU64,
    running: AtomicU64,
}

impl Activity {
    /// A request began; the guard marks it over when dropped (with its response body).
    pub fn begin(self: &Arc<Self>) -> ActiveRequest {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.running.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(self.clone())
    }

    /// Requests begun so far: unchanged between two looks means none began in between.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Whether no request is running.
    pub fn is_idle(&self) -> bool {
        self.running.load(Ordering::Relaxed) == 0
    }
}

/// One running request; dropped when its response body is finished or abandoned.
#[derive(Debug)]
pub struct ActiveRequest(Arc<Activity>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that holds its request's [`ActiveRequest`] until hyper drops it.
pub struct TrackedBody<B> {
    inner: B,
    _active: ActiveRequest,
}

impl<B> TrackedBody<B> {
    pub fn new(inner: B, active: ActiveRequest) -> Self {
        Self {
            inner,
            _active: active,
        }
    }
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_begun_and_running() {
        let a = Arc::new(Activity::default());
        assert!(a.is_idle());
        let r1 = a.begin();
        let r2 = a.begin();
        assert_eq!(a.started(), 2);
        assert!(!a.is_idle());
        drop(r1);
        assert!(!a.is_idle());
        drop(r2);
        assert!(a.is_idle());
        assert_eq!(a.started(), 2);
    }
}
