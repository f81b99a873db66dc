//! The client an upstream's requests go out through: HTTP/1.1 over the targets' own idle pools,
//! driven in the request's task ([`super::h1`]); HTTP/2 (prior knowledge) through hyper-util's
//! pooled client, whose connections multiplex many requests and so need a task of their own.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::TargetState;
use super::h1::{Exchange, H1Conn, Lease, UpstreamBody};
use crate::body::{BoxError, ProxyBody};

/// Settings that, when unchanged across a reload, let the new snapshot keep the old client.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    pub connect: Duration,
    pub idle: Duration,
    pub pool_max_idle: usize,
    pub h2: bool,
}

impl ClientSettings {
    pub fn of(u: &flexgate_config::Upstream) -> Self {
        Self {
            connect: u.timeouts.connect.0,
            idle: u.timeouts.idle.0,
            pool_max_idle: u.pool_max_idle,
            h2: u.protocol == flexgate_config::UpstreamProtocol::H2,
        }
    }

    /// Builds the client; both kinds set TCP_NODELAY and the connect timeout.
    pub fn build(&self) -> HttpClient {
        if !self.h2 {
            return HttpClient::H1(Arc::new(self.clone()));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(self.connect));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.idle)
            .pool_max_idle_per_host(self.pool_max_idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .build(connector);
        HttpClient::H2(Box::new(client))
    }
}

/// An upstream's client; cheap to clone.
#[derive(Clone)]
pub enum HttpClient {
    H1(Arc<ClientSettings>),
    H2(Box<Client<HttpConnector, ProxyBody>>),
}

impl HttpClient {
    /// Sends `req` (origin-form URI, `Host` set) to `target` and returns the response head with
    /// a body that streams the rest. A request that asks for a protocol upgrade gets a connection
    /// of its own, which becomes the tunnel.
    pub async fn request(
        &self,
        target: &TargetState,
        req: Request<ProxyBody>,
        upgrade: bool,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        match self {
            Self::H1(settings) if upgrade => upgrade_request(target, settings, req).await,
            Self::H1(settings) => pooled_request(target, settings, req).await,
            Self::H2(client) => {
                let mut req = req;
                let uri = Uri::builder()
                    .scheme("http")
                    .authority(target.authority.clone())
                    .path_and_query(req.uri().path_and_query().map_or("/", |pq| pq.as_str()))
                    .build()
                    .map_err(|e| UpstreamError::exchange(e.into()))?;
                *req.uri_mut() = uri;
                match client.request(req).await {
                    Ok(resp) => Ok(resp.map(ProxyBody::Stream)),
                    Err(e) if e.is_connect() => Err(UpstreamError::connect(e)),
                    Err(e) => Err(UpstreamError::exchange(e.into())),
                }
            }
        }
    }
}

/// A kept-alive connection when one is idle and alive, a new one otherwise. A request that a
/// reused connection closed before writing goes out again on another (the upstream closed an
/// idle connection just as it was taken: the request never reached it).
async fn pooled_request(
    target: &TargetState,
    settings: &ClientSettings,
    mut req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, UpstreamError> {
    loop {
        let (conn, reused) = match checkout(&target.idle).await {
            Some(conn) => (conn, true),
            None => (
                H1Conn::connect(&target.addr, settings.connect).await?,
                false,
            ),
        };
        match conn.send(req).await {
            Exchange::Head(resp, conn) => {
                let lease = Lease {
                    conn,
                    home: target.idle.clone(),
                    max_idle: settings.pool_max_idle,
                };
                // The body drives the connection and returns it when dropped at its end (at
                // once for a response without a body).
                return Ok(
                    resp.map(|incoming| ProxyBody::Upstream(UpstreamBody::new(incoming, lease)))
                );
            }
            Exchange::Unsent(unsent, _) if reused => req = unsent,
            Exchange::Unsent(_, e) | Exchange::Failed(e) => {
                return Err(UpstreamError::exchange(e.into()));
            }
        }
    }
}

/// The most recently used idle connection that is still open.
async fn checkout(pool: &super::pool::IdlePool) -> Option<H1Conn> {
    while let Some(mut conn) = pool.take() {
        if conn.check().await {
            return Some(conn);
        }
    }
    None
}

/// An upgrade (WebSocket) gets a fresh connection run by a task of its own: after a 101 it is
/// handed to the tunnel, never back to the pool.
async fn upgrade_request(
    target: &TargetState,
    settings: &ClientSettings,
    req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, UpstreamError> {
    let (mut send, conn) = super::h1::open(&target.addr, settings.connect).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream upgrade connection failed");
        }
    });
    match send.send_request(req).await {
        Ok(resp) => Ok(resp.map(ProxyBody::Stream)),
        Err(e) => Err(UpstreamError::exchange(e.into())),
    }
}

/// Why an attempt at an upstream failed. Its source is hyper's error (the chain tells a request
/// body the client broke from an upstream fault).
#[derive(Debug, thiserror::Error)]
#[error("{}", if *.connect { "upstream connect failed" } else { "upstream exchange failed" })]
pub struct UpstreamError {
    connect: bool,
    #[source]
    source: BoxError,
}

impl UpstreamError {
    pub(crate) fn connect(e: impl Into<BoxError>) -> Self {
        Self {
            connect: true,
            source: e.into(),
        }
    }

    pub(crate) fn exchange(source: BoxError) -> Self {
        Self {
            connect: false,
            source,
        }
    }

    /// No connection was made: the request never reached the target (safe to retry elsewhere).
    pub fn is_connect(&self) -> bool {
        self.connect
    }
}
