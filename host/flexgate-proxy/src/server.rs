//! Listeners and connections: plain TCP (HTTP/1.1 and h2c by prior knowledge) or TLS with ALPN
//! (h2, http/1.1); graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flexgate_config::Server as ServerConfig;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::gateway::Gateway;
use crate::pipeline::{ConnInfo, handle};

/// Binds a listener with SO_REUSEADDR and a deep backlog.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// TLS setup failed: unreadable or invalid certificate/key files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: no private key found")]
    NoKey { path: String },
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Loads a PEM certificate chain and key into an acceptor offering h2 and http/1.1 via ALPN.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Io {
            path: p.display().to_string(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Io {
            path: cert.display().to_string(),
            source,
        })?;
    let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|source| TlsError::Io {
            path: key.display().to_string(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey {
            path: key.display().to_string(),
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections until `shutdown` resolves, then drains for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    gw: Arc<Gateway>,
    settings: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let builder = Arc::new(connection_builder(settings));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, client) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = ConnTask { gw: gw.clone(), builder: builder.clone(), watcher: graceful.watcher(), client };
                tokio::spawn(conn.run(stream, tls.clone()));
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(
        open_connections = open,
        grace_secs = settings.grace_period.0.as_secs_f64(),
        "draining"
    );
    if tokio::time::timeout(settings.grace_period.0, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
}

fn connection_builder(settings: &ServerConfig) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    let max_header = usize::try_from(settings.max_header_size.0).unwrap_or(64 * 1024);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout.0)
        .max_buf_size((max_header * 2).max(8192 * 2))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(max_header * 2).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(settings.idle_timeout.0))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

struct ConnTask {
    gw: Arc<Gateway>,
    builder: Arc<Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    client: SocketAddr,
}

impl ConnTask {
    async fn run(self, stream: TcpStream, tls: Option<TlsAcceptor>) {
        let metrics = self.gw.shared.metrics.open_connections.clone();
        metrics.inc();
        match tls {
            None => self.serve(stream, false).await,
            Some(acceptor) => match acceptor.accept(stream).await {
                Ok(stream) => self.serve(stream, true).await,
                Err(e) => {
                    tracing::debug!(client = %self.client, error = %e, "tls handshake failed")
                }
            },
        }
        metrics.dec();
    }

    async fn serve<S>(self, stream: S, tls: bool)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let info = ConnInfo {
            client: self.client,
            tls,
        };
        let gw = self.gw;
        // The request future is large (routing, plugins, forwarding, retries); boxed, an idle
        // keep-alive connection does not carry its space (measured by infra/bench/memory.py).
        let service = service_fn(move |req| {
            let gw = gw.clone();
            let fut = Box::pin(handle(gw, info, req));
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service);
        if let Err(e) = self.watcher.watch(conn.into_owned()).await {
            tracing::debug!(client = %self.client, error = %e, "connection ended with error");
        }
    }
}
