//! The one body type the proxy hands to hyper in both directions. An enum instead of a boxed trait
//! object: no allocation per request, and the streaming case stays a plain pass-through of hyper's
//! `Incoming` frames (trailers included).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::upstream::UpstreamBody;

/// Error type of [`ProxyBody`]; hyper wants something convertible into a boxed error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body as it crosses the gateway.
pub enum ProxyBody {
    /// Streamed from the other side untouched.
    Stream(Incoming),
    /// Streamed from an upstream HTTP/1.1 connection that the body drives itself.
    Upstream(UpstreamBody),
    /// Streamed, but counted against a byte limit (`max_body` without a Content-Length).
    Limited(LimitedBody),
    /// Produced by the gateway (errors, `respond` routes) or buffered for a plugin.
    Full(Option<Bytes>),
}

impl ProxyBody {
    pub fn empty() -> Self {
        Self::Full(None)
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Self::Full(None)
        } else {
            Self::Full(Some(bytes))
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Stream(inner) => Pin::new(inner).poll_frame(cx).map_err(Into::into),
            Self::Upstream(inner) => Pin::new(inner).poll_frame(cx),
            Self::Limited(inner) => Pin::new(inner).poll_frame(cx),
            Self::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Stream(inner) => inner.is_end_stream(),
            Self::Upstream(inner) => inner.is_end_stream(),
            Self::Limited(inner) => inner.inner.is_end_stream(),
            Self::Full(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Stream(inner) => inner.size_hint(),
            Self::Upstream(inner) => inner.size_hint(),
            Self::Limited(inner) => inner.inner.size_hint(),
            Self::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

/// Counts streamed bytes and fails the stream once `remaining` is exceeded. The shared flag lets the
/// pipeline tell "the client sent too much" (413) apart from an upstream failure (502).
pub struct LimitedBody {
    inner: Incoming,
    remaining: u64,
    exceeded: Arc<AtomicBool>,
}

impl LimitedBody {
    pub fn new(inner: Incoming, limit: u64, exceeded: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            remaining: limit,
            exceeded,
        }
    }
}

/// The request body grew past the route's `max_body`.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than max_body")]
pub struct BodyTooLarge;

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        this.exceeded.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
