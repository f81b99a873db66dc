//! The request path, one direction: checks → route → (respond | forward) → response headers →
//! completion (metrics, access log). Each phase either passes the request on or answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use flexgate_plugins::{CallCtx, Chain};
use http::{HeaderMap, HeaderValue, Request, Response, header};
use hyper::body::Incoming;

use crate::access::{Completion, LoggedBody};
use crate::body::ProxyBody;
use crate::error::{ErrorKind, ProxyError};
use crate::forward::{self, Forwarded};
use crate::gateway::Gateway;
use crate::headers::{X_REQUEST_ID, via_value};
use crate::plugins::RoutePlugins;
use crate::request_id;
use crate::snapshot::{Route, RouteAction};
use crate::transform::{self, Next};

/// Per-connection facts the pipeline needs.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub client: SocketAddr,
    pub tls: bool,
}

/// Handles one request end to end; never fails (errors become JSON responses).
pub async fn handle(
    gw: Arc<Gateway>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Response<LoggedBody> {
    let started = Instant::now();
    let metrics = &gw.shared.metrics;
    metrics.in_flight.inc();
    let request_id = match req.headers().get(&X_REQUEST_ID) {
        Some(v) if request_id::accept(v) => v.clone(),
        _ => request_id::generate(),
    };
    let snap = gw.snapshot();
    let method = req.method().clone();
    // Only the access log needs the path: no allocation when it is off.
    let path: Box<str> = if snap.access_log {
        req.uri().path().into()
    } else {
        Box::default()
    };
    let version = req.version();

    let route = check_framing(req.headers(), snap.max_header_size).and_then(|()| {
        let host = host_of(&req);
        snap.router
            .find(host, req.uri().path(), req.method(), req.headers())
            .ok_or_else(|| ProxyError::client(ErrorKind::NoRoute))
    });

    let mut done = Completion {
        started,
        route: snap.no_route_name.clone(),
        method,
        path,
        status: http::StatusCode::OK,
        request_id: request_id.clone(),
        upstream: None,
        target: None,
        upstream_time: None,
        attempts: 0,
        client_ip: conn.client.ip(),
        duration: snap.no_route_duration.clone(),
        requests: snap.no_route_requests.clone(),
        log: snap.access_log,
        plugins: None,
        in_flight: None,
    };

    let mut rate_limit = None;
    let result = match route {
        Err(e) => Err(e),
        Ok(route) => 'route: {
            done.route = route.name.clone();
            done.duration = route.duration.clone();
            done.requests = route.requests.clone();
            if let Some(limit) = &route.rate_limit
                && let Err(e) = (limit.admit(
                    &route.name,
                    started,
                    conn.client.ip(),
                    req.headers(),
                    &mut rate_limit,
                ))
                .await
            {
                break 'route Err(e);
            }
            let req = req.map(ProxyBody::Stream);
            match &route.plugins {
                None => act(route, conn, &request_id, req, &mut done).await,
                Some(rp) => {
                    let selected = rp.select(conn.client.ip(), req.headers());
                    if done.log {
                        done.plugins = Some(selected.describe());
                    }
                    let ctx =
                        CallCtx::new(conn.client, &route.name, request_id.to_str().unwrap_or(""));
                    let phases = Phases {
                        rp,
                        chain: selected.chain(),
                        ctx: &ctx,
                    };
                    let result = phases.run(route, conn, &request_id, req, &mut done).await;
                    let status = result.as_ref().map_or_else(|e| e.status(), |r| r.status());
                    selected.record(&ctx, started.elapsed(), status.as_u16());
                    result
                }
            }
        }
    };

    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            if e.status().is_server_error() {
                tracing::warn!(request_id = request_id.to_str().unwrap_or(""), error = ?e.kind, "request failed");
            }
            e.into_response(request_id.to_str().unwrap_or(""))
        }
    };
    let headers = resp.headers_mut();
    headers.insert(X_REQUEST_ID.clone(), request_id);
    if done.upstream.is_some() {
        headers.append(header::VIA, via_value(version));
    }
    if let Some(h) = &rate_limit {
        h.apply(headers);
    }
    done.status = resp.status();
    metrics.in_flight.dec();
    resp.map(|body| LoggedBody::new(body, done))
}

/// The route's action: answer from config or forward upstream.
async fn act(
    route: &Route,
    conn: ConnInfo,
    request_id: &HeaderValue,
    req: Request<ProxyBody>,
    done: &mut Completion,
) -> Result<Response<ProxyBody>, ProxyError> {
    match &route.action {
        RouteAction::Respond {
            status,
            headers,
            body,
        } => {
            let mut resp = Response::new(ProxyBody::full(body.clone()));
            *resp.status_mut() = *status;
            *resp.headers_mut() = headers.clone();
            Ok(resp)
        }
        RouteAction::Proxy(upstream) => {
            done.upstream = Some(upstream.name.clone());
            let fwd = Forwarded { conn, request_id };
            let outcome = forward::forward(route, upstream, fwd, req).await;
            done.target = outcome.target;
            done.upstream_time = outcome.upstream_time;
            done.attempts = outcome.attempts;
            done.in_flight = outcome.in_flight;
            outcome.result
        }
    }
}

/// The plugin chain around the route's action: `on_request` in order, the action (unless a plugin
/// answered), then `on_response` in reverse. Gateway errors (502, 504, ...) skip `on_response`.
struct Phases<'a> {
    rp: &'a RoutePlugins,
    chain: &'a Chain,
    ctx: &'a CallCtx,
}

impl Phases<'_> {
    async fn run(
        &self,
        route: &Route,
        conn: ConnInfo,
        request_id: &HeaderValue,
        req: Request<ProxyBody>,
        done: &mut Completion,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let resp = match transform::request(self.rp, self.chain, self.ctx, req).await? {
            Next::Respond(resp) => resp,
            Next::Forward(req) => act(route, conn, request_id, req, done).await?,
        };
        transform::response(self.rp, self.chain, self.ctx, resp).await
    }
}

/// `Host` header, or the `:authority` of HTTP/2 and absolute-form requests.
pub fn host_of<B>(req: &Request<B>) -> Option<&str> {
    req.uri().host().or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

/// Refuses requests whose framing is ambiguous (request smuggling vectors) or whose headers are too large.
fn check_framing(headers: &HeaderMap, max_header_size: usize) -> Result<(), ProxyError> {
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        if headers.contains_key(header::TRANSFER_ENCODING) {
            return Err(ProxyError::client(ErrorKind::AmbiguousFraming(
                "both Content-Length and Transfer-Encoding",
            )));
        }
        if lengths.any(|v| v != first) || first.to_str().map_or(true, |s| s.contains(',')) {
            return Err(ProxyError::client(ErrorKind::AmbiguousFraming(
                "conflicting Content-Length values",
            )));
        }
    }
    let size: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if size > max_header_size {
        return Err(ProxyError::client(ErrorKind::HeadersTooLarge));
    }
    Ok(())
}
