//! The client connection's byte stream as hyper sees it: bytes read ahead (while sniffing the
//! protocol or while parked) are replayed first, and a parked connection's "shutdown" is held back
//! so the socket outlives the hyper connection that is being dropped.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A client stream plus the bytes already read from it.
pub struct ConnIo<S> {
    prefix: Bytes,
    inner: S,
    /// Set while the connection is being parked: hyper's closing `shutdown` must not reach the
    /// socket, which lives on without hyper.
    hold_shutdown: Arc<AtomicBool>,
}

impl<S> ConnIo<S> {
    pub fn new(inner: S, prefix: Bytes, hold_shutdown: Arc<AtomicBool>) -> Self {
        Self {
            prefix,
            inner,
            hold_shutdown,
        }
    }

    /// The stream and whatever prefix hyper did not read.
    pub fn into_parts(self) -> (S, Bytes) {
        (self.inner, self.prefix)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.hold_shutdown.load(Ordering::Relaxed) {
            return Pin::new(&mut self.inner).poll_flush(cx);
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A client stream that can wait for the next request without a read buffer.
pub trait Parkable: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Resolves when the client sent something (or closed): `Some(bytes)` when they had to be read
    /// to find out, `None` when they are still in the socket.
    fn next_data(&mut self) -> impl std::future::Future<Output = io::Result<Option<Bytes>>> + Send;
}

impl Parkable for TcpStream {
    async fn next_data(&mut self) -> io::Result<Option<Bytes>> {
        self.readable().await.map(|()| None)
    }
}

impl Parkable for TlsStream<TcpStream> {
    /// TLS may hold decrypted bytes the socket no longer shows as readable, so read for real (a
    /// small buffer, allocated only once the socket has something).
    async fn next_data(&mut self) -> io::Result<Option<Bytes>> {
        if self.get_ref().1.wants_read() {
            self.get_ref().0.readable().await?;
        }
        let mut buf = BytesMut::with_capacity(2048);
        self.read_buf(&mut buf).await?;
        Ok(Some(buf.freeze()))
    }
}
