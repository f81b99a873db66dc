//! HTTP/1.1 to an upstream, driven by the request's own task, as Pingora does, rather than by a
//! task per upstream connection (hyper-util's pooled client). The request future writes the
//! request and reads the response head; the response body ([`UpstreamBody`]) reads the rest and
//! hands the connection back to its target's idle pool at the end. Nothing crosses tasks, so a
//! request costs no wake-ups of other tasks and no scheduling between them.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::client::UpstreamError;
use super::pool::IdlePool;
use crate::body::{BoxError, ProxyBody};

pub type Conn = http1::Connection<TokioIo<TcpStream>, ProxyBody>;

/// One keep-alive connection: hyper's sending half and its connection state machine, kept
/// together so that whoever sends a request also drives the connection. Boxed: hyper's state is
/// several hundred bytes, and this moves through the pool, the exchange and the response body.
pub struct H1Conn(Box<Parts>);

struct Parts {
    send: http1::SendRequest<ProxyBody>,
    /// `None` once the connection has ended (closed by either side, or failed).
    conn: Option<Conn>,
}

impl H1Conn {
    /// Opens a connection for the pool.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Self, UpstreamError> {
        let (send, conn) = open(addr, timeout).await?;
        Ok(Self(Box::new(Parts {
            send,
            conn: Some(conn),
        })))
    }

    /// Polls the connection state machine; `false` once it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let parts = &mut *self.0;
        if let Some(conn) = parts.conn.as_mut()
            && Pin::new(conn).poll(cx).is_ready()
        {
            parts.conn = None;
        }
        parts.conn.is_some()
    }

    /// Alive and ready for a new request (the previous exchange is complete). Polling also notices
    /// a peer that closed the connection while it was idle.
    pub fn is_reusable(&mut self, cx: &mut Context<'_>) -> bool {
        self.drive(cx) && self.0.send.is_ready()
    }

    /// Whether it is still usable, checked from the calling task (whose waker the poll registers).
    pub async fn check(&mut self) -> bool {
        poll_fn(|cx| Poll::Ready(self.is_reusable(cx))).await
    }

    /// Sends `req` and drives the connection until the response head has arrived. A request the
    /// connection closed before writing comes back in [`Exchange::Unsent`] (the caller may send it
    /// on another connection).
    pub async fn send(mut self, req: Request<ProxyBody>) -> Exchange {
        let mut response = pin!(self.0.send.try_send_request(req));
        let res = poll_fn(|cx| {
            // The connection writes the request and reads the head; when it ends instead, hyper
            // completes `response` with the reason.
            self.drive(cx);
            response.as_mut().poll(cx)
        })
        .await;
        match res {
            Ok(resp) => Exchange::Head(resp, self),
            Err(mut e) => match e.take_message() {
                Some(req) => Exchange::Unsent(req, e.into_error()),
                None => Exchange::Failed(e.into_error()),
            },
        }
    }
}

/// How [`H1Conn::send`] ended.
pub enum Exchange {
    /// The response head; the connection is still needed for its body.
    Head(Response<Incoming>, H1Conn),
    /// The connection closed before the request was written.
    Unsent(Request<ProxyBody>, hyper::Error),
    /// The exchange failed after the request was (maybe partly) written.
    Failed(hyper::Error),
}

/// Where a connection goes back when its response is complete.
pub struct Lease {
    pub conn: H1Conn,
    pub home: Arc<IdlePool>,
    pub max_idle: usize,
}

/// A response body read from an upstream connection that this body drives. When the body has
/// been read to its end, dropping it returns the connection to the pool; dropping it earlier
/// closes the connection (the rest of the response would otherwise be read as the next one).
pub struct UpstreamBody {
    incoming: Incoming,
    lease: Option<Lease>,
    ended: bool,
}

impl UpstreamBody {
    pub fn new(incoming: Incoming, lease: Lease) -> Self {
        Self {
            incoming,
            lease: Some(lease),
            ended: false,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut polled = Pin::new(&mut this.incoming).poll_frame(cx);
        if polled.is_pending()
            && let Some(lease) = this.lease.as_mut()
        {
            // Read more from the upstream (or learn it has ended), then look again.
            lease.conn.drive(cx);
            polled = Pin::new(&mut this.incoming).poll_frame(cx);
        }
        match &polled {
            Poll::Ready(None) => this.ended = true,
            Poll::Ready(Some(Err(_))) => this.lease = None,
            _ => {}
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if !self.is_end_stream() {
            return;
        }
        if let Some(mut lease) = self.lease.take() {
            // Let hyper finish the exchange (it may still owe itself a poll to become idle); the
            // next user polls it again with its own waker.
            let mut cx = Context::from_waker(Waker::noop());
            if lease.conn.is_reusable(&mut cx) {
                lease.home.put(lease.conn, lease.max_idle);
            }
        }
    }
}

/// Connects to `addr` (name resolution included within `timeout`) with TCP_NODELAY and TCP
/// keep-alive probes after 60 s idle, and starts HTTP/1.1 on it.
pub async fn open(
    addr: &str,
    timeout: Duration,
) -> Result<(http1::SendRequest<ProxyBody>, Conn), UpstreamError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(UpstreamError::connect(e)),
        Err(_) => return Err(UpstreamError::connect(ConnectTimeout)),
    };
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    http1::handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::connect)
}

/// The TCP handshake took longer than the upstream's connect timeout.
#[derive(Debug, thiserror::Error)]
#[error("connect timed out")]
struct ConnectTimeout;
