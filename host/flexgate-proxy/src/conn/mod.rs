//! One client connection: protocol choice (ALPN, or the h2c preface on plain TCP), HTTP/1.1 with
//! upgrades or HTTP/2, drain on shutdown, and parking of idle HTTP/1.1 keep-alive connections.
//!
//! Parking: hyper keeps two 8 KiB buffers per HTTP/1.1 connection for as long as it lives, idle or
//! not. A keep-alive connection that saw no request for `park_idle_after` is therefore handed back
//! by hyper (a graceful close whose socket shutdown is held back), waits for the client's next
//! bytes with no buffer at all, and gets a fresh hyper connection when they arrive: nginx does the
//! same on every keep-alive (`ngx_http_set_keepalive` frees the request buffers). 10,000 idle
//! connections cost ~1 KiB each instead of ~21 KiB (infra/bench/memory.py).

mod activity;
mod io;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_rustls::TlsAcceptor;

use crate::gateway::Gateway;
use crate::pipeline::{ConnInfo, handle};
pub use activity::{Activity, TrackedBody};
use io::{ConnIo, Parkable};

/// The HTTP/2 connection preface a prior-knowledge h2c client opens with.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Connection-level settings, built once per listener.
pub struct ConnSettings {
    pub h1: http1::Builder,
    pub h2: http2::Builder<TokioExecutor>,
    /// Park an HTTP/1.1 connection after this long without a request; `None`: never.
    pub park_idle_after: Option<Duration>,
    /// A keep-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
    pub header_read_timeout: Duration,
}

impl ConnSettings {
    pub fn new(s: &flexgate_config::Server) -> Self {
        let max_header = usize::try_from(s.max_header_size.0).unwrap_or(64 * 1024);
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(s.header_read_timeout.0)
            .max_buf_size((max_header * 2).max(8192 * 2))
            .keep_alive(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(s.h2_max_concurrent_streams)
            .max_header_list_size(u32::try_from(max_header * 2).unwrap_or(u32::MAX))
            .keep_alive_interval(Some(s.idle_timeout.0))
            .keep_alive_timeout(Duration::from_secs(20));
        Self {
            h1,
            h2,
            park_idle_after: Some(s.park_idle_after.0).filter(|d| !d.is_zero()),
            idle_timeout: s.idle_timeout.0,
            header_read_timeout: s.header_read_timeout.0,
        }
    }
}

/// One accepted connection and what serving it needs.
pub struct ConnTask {
    pub gw: Arc<Gateway>,
    pub settings: Arc<ConnSettings>,
    /// Flips to `true` when the server drains; dropping it tells the server this connection ended.
    pub drain: watch::Receiver<bool>,
    pub client: SocketAddr,
}

impl ConnTask {
    pub async fn run(self, stream: TcpStream, tls: Option<TlsAcceptor>) {
        let metrics = self.gw.shared.metrics.open_connections.clone();
        metrics.inc();
        // Only the plain HTTP/1.1 path is inline: the TLS handshake and HTTP/2 state are large,
        // and the task of every connection would otherwise be sized for them (7 KiB vs ~1 KiB).
        match tls {
            None => self.serve_plain(stream).await,
            Some(acceptor) => Box::pin(self.serve_tls(stream, acceptor)).await,
        }
        metrics.dec();
    }

    async fn serve_tls(self, stream: TcpStream, acceptor: TlsAcceptor) {
        match acceptor.accept(stream).await {
            Ok(stream) => {
                if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                    self.serve_h2(stream, true).await;
                } else {
                    self.serve_h1(stream, true, Bytes::new()).await;
                }
            }
            Err(e) => tracing::debug!(client = %self.client, error = %e, "tls handshake failed"),
        }
    }

    /// Plain TCP: h2c by prior knowledge when the client opens with the HTTP/2 preface, else
    /// HTTP/1.1. The first bytes are peeked, not read, unless the preface arrives in pieces.
    async fn serve_plain(self, stream: TcpStream) {
        let mut first = [0u8; 24];
        let sniffed = tokio::time::timeout(self.settings.header_read_timeout, async {
            let n = stream.peek(&mut first).await?;
            if n == 0 || first[..n] != H2_PREFACE[..n] {
                return Ok::<_, std::io::Error>((false, Bytes::new()));
            }
            if n == H2_PREFACE.len() {
                return Ok((true, Bytes::new()));
            }
            // A preface split across segments: read it (peek would not wait for the rest).
            let mut read = vec![0u8; 24];
            let mut got = 0;
            while got < read.len() {
                stream.readable().await?;
                match stream.try_read(&mut read[got..]) {
                    Ok(0) => break,
                    Ok(k) => got += k,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if read[..got] != H2_PREFACE[..got] {
                    break;
                }
            }
            read.truncate(got);
            Ok((read[..] == H2_PREFACE[..], Bytes::from(read)))
        })
        .await;
        match sniffed {
            Ok(Ok((true, prefix))) => {
                let io = ConnIo::new(stream, prefix, Arc::default());
                Box::pin(self.serve_h2(io, false)).await
            }
            Ok(Ok((false, prefix))) => self.serve_h1(stream, false, prefix).await,
            Ok(Err(e)) => tracing::debug!(client = %self.client, error = %e, "connection failed"),
            Err(_) => {
                tracing::debug!(client = %self.client, "no request before header_read_timeout")
            }
        }
    }

    async fn serve_h2<S>(mut self, stream: S, tls: bool)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let info = ConnInfo {
            client: self.client,
            tls,
        };
        let gw = self.gw.clone();
        let service = service_fn(move |req| {
            let fut = Box::pin(handle(gw.clone(), info, req));
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let conn = self
            .settings
            .h2
            .serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let mut draining = *self.drain.borrow();
        if draining {
            conn.as_mut().graceful_shutdown();
        }
        loop {
            tokio::select! {
                res = conn.as_mut() => {
                    self.log_end(res);
                    return;
                }
                changed = self.drain.changed(), if !draining => {
                    draining = true;
                    if changed.is_ok() {
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }

    /// Logs how a connection ended; whether it ended cleanly.
    fn log_end(&self, res: Result<(), hyper::Error>) -> bool {
        if let Err(e) = &res {
            tracing::debug!(client = %self.client, error = %e, "connection ended with error");
        }
        res.is_ok()
    }

    /// HTTP/1.1 with upgrades, parked whenever it sits idle (see the module docs).
    async fn serve_h1<S: Parkable>(mut self, stream: S, tls: bool, prefix: Bytes) {
        let info = ConnInfo {
            client: self.client,
            tls,
        };
        let activity = Arc::new(Activity::default());
        let service = {
            let gw = self.gw.clone();
            let activity = activity.clone();
            service_fn(move |req: hyper::Request<Incoming>| {
                let active = activity.begin();
                let fut = Box::pin(handle(gw.clone(), info, req));
                async move {
                    let resp = fut.await;
                    Ok::<_, Infallible>(resp.map(|b| TrackedBody::new(b, active)))
                }
            })
        };
        let hold = Arc::new(AtomicBool::new(false));
        let mut stream = stream;
        let mut prefix = prefix;
        // Parking more than once without a request in between would restart hyper's
        // header_read_timeout for a client that trickles a request head.
        let mut may_park = true;
        loop {
            hold.store(false, Ordering::Relaxed);
            let io = TokioIo::new(ConnIo::new(stream, prefix, hold.clone()));
            let mut conn = Box::pin(
                self.settings
                    .h1
                    .serve_connection(io, service.clone())
                    .with_upgrades(),
            );
            let park_after = self.settings.park_idle_after.filter(|_| may_park);
            // Shutting down: the server drains, or a park found hyper busy.
            let mut closing = *self.drain.borrow();
            if closing {
                conn.as_mut().graceful_shutdown();
            }
            let mut tick = park_after.map(|d| {
                let mut t = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
                t.set_missed_tick_behavior(MissedTickBehavior::Delay);
                t
            });
            let mut seen = activity.started();
            let parked = loop {
                tokio::select! {
                    res = conn.as_mut() => {
                        self.log_end(res);
                        break false;
                    }
                    _ = async { if let Some(t) = tick.as_mut() { t.tick().await; } }, if tick.is_some() && !closing => {
                        let now = activity.started();
                        if now == seen && activity.is_idle() {
                            hold.store(true, Ordering::Relaxed);
                            conn.as_mut().graceful_shutdown();
                            // An idle hyper connection closes at once, without I/O. One that is
                            // not (e.g. still reading a request body whose response is already
                            // sent) must not be parked: bytes left unread would be parsed as a
                            // new request. It closes for real once its exchange is over.
                            let first = std::future::poll_fn(|cx| {
                                std::task::Poll::Ready(conn.as_mut().poll(cx))
                            })
                            .await;
                            if let std::task::Poll::Ready(res) = first {
                                break self.log_end(res);
                            }
                            hold.store(false, Ordering::Relaxed);
                            closing = true;
                        }
                        seen = now;
                    }
                    _ = self.drain.changed(), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            };
            if !parked {
                return;
            }
            let Some(parts) = std::pin::Pin::into_inner(conn).into_parts() else {
                return; // upgraded meanwhile: the tunnel owns the socket now
            };
            let (inner, unread) = parts.io.into_inner().into_parts();
            stream = inner;
            prefix = if parts.read_buf.is_empty() {
                unread
            } else {
                parts.read_buf
            };
            if !prefix.is_empty() {
                may_park = false;
                continue;
            }
            may_park = true;
            let wait = self
                .settings
                .idle_timeout
                .saturating_sub(park_after.unwrap_or_default());
            let parked = &self.gw.shared.metrics.parked_connections;
            parked.inc();
            let next = tokio::select! {
                next = tokio::time::timeout(wait, stream.next_data()) => Some(next),
                _ = self.drain.changed() => None,
            };
            parked.dec();
            match next {
                None => return, // draining
                Some(next) => match next {
                    Ok(Ok(bytes)) => prefix = bytes.unwrap_or_default(),
                    Ok(Err(e)) => {
                        tracing::debug!(client = %self.client, error = %e, "parked connection failed");
                        return;
                    }
                    Err(_) => return, // idle_timeout
                },
            }
        }
    }
}
