//! Listeners and connections: plain TCP (HTTP/1.1 and h2c by prior knowledge) or TLS with ALPN
//! (h2, http/1.1); graceful drain on shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flexgate_config::Server as ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::conn::{ConnSettings, ConnTask};
use crate::gateway::Gateway;

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
    let conn_settings = Arc::new(ConnSettings::new(settings));
    // Every connection holds a receiver: the count is the open connections, and `closed()`
    // resolves when the last one has ended.
    let (drain, _) = watch::channel(false);
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
                let conn = ConnTask {
                    gw: gw.clone(),
                    settings: conn_settings.clone(),
                    drain: drain.subscribe(),
                    client,
                };
                tokio::spawn(conn.run(stream, tls.clone()));
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(
        open_connections = drain.receiver_count(),
        grace_secs = settings.grace_period.0.as_secs_f64(),
        "draining"
    );
    drain.send_replace(true);
    if tokio::time::timeout(settings.grace_period.0, drain.closed())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
}
