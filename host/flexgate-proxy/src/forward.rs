//! Forwarding to an upstream: request rewrite, target choice, attempts and retries, the response's
//! headers, and protocol upgrades (WebSocket tunnels).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body::Body as _;
use hyper_util::rt::TokioIo;

use crate::body::{LimitedBody, ProxyBody};
use crate::error::{ErrorKind, ProxyError};
use crate::headers::{is_upgrade_request, set_forwarded, strip_hop_by_hop};
use crate::pipeline::ConnInfo;
use crate::router::prefix_matches;
use crate::snapshot::Route;
use crate::upstream::{Outcome, Upstream, ring_hasher};
use flexgate_resilience::{AttemptResult, InFlightGuard};

/// Request-scoped facts forwarded along.
pub struct Forwarded<'a> {
    pub conn: ConnInfo,
    pub request_id: &'a HeaderValue,
}

/// What happened, for the access log, beside the response or error.
pub struct ForwardOutcome {
    pub result: Result<Response<ProxyBody>, ProxyError>,
    pub target: Option<Arc<str>>,
    pub upstream_time: Option<Duration>,
    pub attempts: u32,
    /// The upstream's `max_in_flight` slot; whoever holds it last releases it (the pipeline keeps it
    /// until the response body is sent).
    pub in_flight: Option<InFlightGuard>,
}

/// Sends the request to a target of `upstream`, retrying as its policy allows.
pub async fn forward(
    route: &Route,
    upstream: &Upstream,
    fwd: Forwarded<'_>,
    mut req: Request<ProxyBody>,
) -> ForwardOutcome {
    let mut out = ForwardOutcome {
        result: Err(ProxyError::internal("no attempt")),
        target: None,
        upstream_time: None,
        attempts: 0,
        in_flight: None,
    };
    if let Some(max) = route.max_body
        && content_length(&req).is_some_and(|len| len > max)
    {
        out.result = Err(ProxyError::client(ErrorKind::BodyTooLarge));
        return out;
    }
    match upstream.resilience.enter() {
        Ok(slot) => out.in_flight = slot,
        Err(e) => {
            out.result = Err(e);
            return out;
        }
    }
    let upgrade = req.version() == Version::HTTP_11 && is_upgrade_request(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let hash = hash_key(upstream, &fwd, &req);
    let path_and_query = match rewrite_path(route, req.uri()) {
        Ok(pq) => pq,
        Err(e) => {
            out.result = Err(e);
            return out;
        }
    };

    let (mut parts, body) = req.into_parts();
    let original_host = host_of_parts(&parts);
    let client_takes_trailers = accepts_trailers(&parts.headers, parts.version);
    strip_hop_by_hop(&mut parts.headers, upgrade);
    parts.headers.remove(header::EXPECT); // hyper answered 100-continue when we first read the body
    set_forwarded(
        &mut parts.headers,
        fwd.conn.client.ip(),
        fwd.conn.tls,
        original_host.as_ref(),
        parts.version,
    );
    parts
        .headers
        .insert(crate::headers::X_REQUEST_ID.clone(), fwd.request_id.clone());
    if route.preserve_host {
        if let Some(h) = original_host {
            parts.headers.insert(header::HOST, h);
        }
    } else {
        parts.headers.remove(header::HOST);
    }
    parts.version = if upstream.h2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };

    let replayable = body.is_end_stream();
    let mut exceeded = None;
    let mut body = Some(match (route.max_body, body) {
        (Some(max), ProxyBody::Stream(incoming)) if !replayable => {
            let flag = Arc::new(AtomicBool::new(false));
            exceeded = Some(flag.clone());
            ProxyBody::Limited(LimitedBody::new(incoming, max, flag))
        }
        (_, body) => body,
    });
    // Only a request that may be sent again needs its head kept after the first attempt.
    let may_retry = is_idempotent(&parts.method)
        && replayable
        && upstream.retries.attempts > 0
        && upstream.targets.len() > 1;
    let mut parts = Some(parts);
    let mut tried = Tried::default();
    let mut skipped = 0usize;

    loop {
        let Some(idx) = upstream.pick(hash, |i| tried.contains(i)) else {
            if out.attempts == 0 {
                out.result = Err(upstream.resilience.no_target());
            }
            return out;
        };
        let target = &upstream.targets[idx];
        tried.insert(idx);
        // Open targets are filtered out by `pick`; a half-open one may be out of probes.
        let admission = upstream.resilience.acquire(idx);
        if !admission.is_admitted() {
            skipped += 1;
            if skipped > upstream.targets.len() {
                if out.attempts == 0 {
                    out.result = Err(upstream.resilience.no_target());
                }
                return out;
            }
            continue;
        }
        out.attempts += 1;
        out.target = Some(target.addr.clone());
        let head = match (&parts, may_retry) {
            (Some(p), true) => p.clone(),
            _ => match parts.take() {
                Some(p) => p,
                None => return out,
            },
        };
        let mut attempt = Request::from_parts(head, body.take().unwrap_or_else(ProxyBody::empty));
        *attempt.uri_mut() = Uri::from(path_and_query.clone());
        if (!route.preserve_host || !attempt.headers().contains_key(header::HOST))
            && let Ok(h) = HeaderValue::from_str(target.authority.as_str())
        {
            attempt.headers_mut().insert(header::HOST, h);
        }

        let guard = target.start();
        let sent = Instant::now();
        let exchange = upstream.client.request(target, attempt, upgrade);
        let result = tokio::time::timeout(upstream.request_timeout, exchange).await;
        let elapsed = sent.elapsed();
        drop(guard);
        out.upstream_time = Some(elapsed);
        upstream.duration.observe(elapsed.as_secs_f64());
        let attempts_left = may_retry && out.attempts <= upstream.retries.attempts;
        let passive = (
            upstream.passive.connect_failures,
            upstream.passive.eject_for.0,
        );

        match result {
            Ok(Ok(resp)) => {
                let status = resp.status();
                let outcome = if status.is_server_error() {
                    Outcome::Status5xx
                } else {
                    Outcome::Ok
                };
                target.record(outcome, passive.0, passive.1);
                let result = AttemptResult::Status(status.as_u16());
                upstream.resilience.record(idx, &admission, result);
                if attempts_left && upstream.retries.statuses.contains(&status.as_u16()) {
                    continue;
                }
                out.result = Ok(finish_response(resp, client_upgrade, client_takes_trailers));
                return out;
            }
            Ok(Err(e)) => {
                let connect = e.is_connect();
                target.record(
                    if connect {
                        Outcome::ConnectFailure
                    } else {
                        Outcome::Error
                    },
                    passive.0,
                    passive.1,
                );
                let by_client = exceeded.as_ref().is_some_and(|f| f.load(Ordering::Relaxed))
                    || caused_by_request_body(&e);
                // A broken exchange is what the client sees as our 502: it counts as one for the
                // breaker, unless the client's own body failed it.
                let result = match (connect, by_client) {
                    (true, _) => AttemptResult::ConnectFailure,
                    (false, true) => AttemptResult::OtherError,
                    (false, false) => AttemptResult::Status(502),
                };
                upstream.resilience.record(idx, &admission, result);
                if exceeded.as_ref().is_some_and(|f| f.load(Ordering::Relaxed)) {
                    out.result = Err(ProxyError::client(ErrorKind::BodyTooLarge));
                    return out;
                }
                tracing::debug!(error = ?e, target = %target.addr, "upstream attempt failed");
                let kind = if connect {
                    ErrorKind::ConnectFailure
                } else {
                    ErrorKind::UpstreamBroken
                };
                out.result = Err(ProxyError::upstream(kind, connect));
                if !(connect && attempts_left && upstream.retries.on_connect_failure) {
                    return out;
                }
            }
            Err(_elapsed) => {
                target.record(Outcome::Timeout, passive.0, passive.1);
                upstream
                    .resilience
                    .record(idx, &admission, AttemptResult::Timeout);
                out.result = Err(ProxyError::upstream(ErrorKind::UpstreamTimeout, true));
                if !(attempts_left && upstream.retries.on_timeout) {
                    return out;
                }
            }
        }
    }
}

/// Whether the client can receive trailers: always over h2, over HTTP/1.1 only with `TE: trailers`.
fn accepts_trailers(headers: &http::HeaderMap, version: Version) -> bool {
    version >= Version::HTTP_2
        || headers.get_all(header::TE).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().split(';').next() == Some("trailers"))
            })
        })
}

/// Strips hop-by-hop headers from the upstream response and wires protocol upgrades. The upstream's
/// `Trailer` declaration survives when the client takes trailers: hyper's HTTP/1.1 server only
/// sends the trailers a response declares.
fn finish_response(
    mut resp: Response<ProxyBody>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    client_takes_trailers: bool,
) -> Response<ProxyBody> {
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let declared: Vec<_> = if client_takes_trailers {
        resp.headers()
            .get_all(header::TRAILER)
            .iter()
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    strip_hop_by_hop(resp.headers_mut(), switching);
    for v in declared {
        resp.headers_mut().append(header::TRAILER, v);
    }
    if switching && let Some(client) = client_upgrade {
        let upstream = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(client, upstream) {
                Ok((down, up)) => {
                    let mut down = TokioIo::new(down);
                    let mut up = TokioIo::new(up);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                        tracing::debug!(error = %e, "upgraded tunnel closed with error");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "protocol upgrade failed"),
            }
        });
    }
    resp
}

/// Applies `strip_prefix`; the query string and percent-encoding are kept byte for byte.
fn rewrite_path(route: &Route, uri: &Uri) -> Result<PathAndQuery, ProxyError> {
    let original = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let Some(prefix) = route.strip_prefix.as_deref() else {
        return match uri.path_and_query() {
            Some(pq) => Ok(pq.clone()),
            None => Ok(PathAndQuery::from_static("/")),
        };
    };
    let path = uri.path();
    if !prefix_matches(prefix, path) {
        return PathAndQuery::try_from(original)
            .map_err(|_| ProxyError::client(ErrorKind::BadRequest("path")));
    }
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    let rest = &original[trimmed.len().min(original.len())..];
    let rewritten = if rest.is_empty() || rest.starts_with('?') {
        format!("/{rest}")
    } else {
        rest.to_owned()
    };
    PathAndQuery::try_from(rewritten).map_err(|_| ProxyError::client(ErrorKind::BadRequest("path")))
}

fn content_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn host_of_parts(parts: &http::request::Parts) -> Option<HeaderValue> {
    match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Whether hyper gave up because of the request body we were streaming (the client's fault).
fn caused_by_request_body(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = e.source();
    while let Some(err) = cur {
        if err
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_user)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The consistent-hash key of this request, when the upstream uses one.
fn hash_key<B>(upstream: &Upstream, fwd: &Forwarded<'_>, req: &Request<B>) -> Option<u64> {
    use flexgate_config::KeySource;
    let hasher = ring_hasher();
    match upstream.hash_key.as_ref()? {
        KeySource::Header(name) => match req.headers().get(name.as_str()) {
            Some(v) => Some(hasher.hash_one(v.as_bytes())),
            None => Some(hasher.hash_one(fwd.conn.client.ip())),
        },
        KeySource::ClientIp => Some(hasher.hash_one(fwd.conn.client.ip())),
        KeySource::Route => Some(0),
    }
}

/// Targets already tried by this request: a bit set, no allocation (upstreams beyond 64 targets
/// simply may retry a target twice).
#[derive(Default)]
struct Tried(u64);

impl Tried {
    fn insert(&mut self, i: usize) {
        if i < 64 {
            self.0 |= 1 << i;
        }
    }

    fn contains(&self, i: usize) -> bool {
        i < 64 && self.0 & (1 << i) != 0
    }
}
