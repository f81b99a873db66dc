//! The end of a request: metrics and the access-log line are emitted when the response body has been
//! fully sent (or the client went away), so durations and byte counts cover the whole exchange.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use prometheus::{Histogram, IntCounter, IntCounterVec};

use crate::body::{BoxError, ProxyBody};

/// What the access log and request metrics need, captured while handling the request.
pub struct Completion {
    pub started: Instant,
    pub route: Arc<str>,
    pub method: Method,
    pub path: Box<str>,
    pub status: StatusCode,
    pub request_id: HeaderValue,
    pub upstream: Option<Arc<str>>,
    pub target: Option<Arc<str>>,
    pub upstream_time: Option<Duration>,
    pub attempts: u32,
    pub client_ip: std::net::IpAddr,
    pub duration: Histogram,
    pub requests: Arc<RouteRequests>,
    pub log: bool,
    /// `name@version` of every plugin the request ran, comma-separated (set only when logging).
    pub plugins: Option<String>,
    /// The upstream's `max_in_flight` slot, released with the completion (response fully sent).
    pub in_flight: Option<flexgate_resilience::InFlightGuard>,
}

impl Completion {
    fn finish(self, bytes_sent: u64, complete: bool) {
        let elapsed = self.started.elapsed();
        self.duration.observe(elapsed.as_secs_f64());
        self.requests.inc(&self.method, self.status);
        if self.log {
            tracing::info!(
                target: "flexgate::access",
                request_id = self.request_id.to_str().unwrap_or(""),
                route = &*self.route,
                method = self.method.as_str(),
                path = &*self.path,
                status = self.status.as_u16(),
                client_ip = %self.client_ip,
                upstream = self.upstream.as_deref().unwrap_or(""),
                upstream_target = self.target.as_deref().unwrap_or(""),
                attempts = self.attempts,
                plugins = self.plugins.as_deref().unwrap_or(""),
                bytes_sent,
                complete,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                upstream_ms = self.upstream_time.map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            );
        }
    }
}

/// The response body handed to hyper: the proxied body plus the completion fired once at its end.
pub struct LoggedBody {
    inner: ProxyBody,
    sent: u64,
    done: Option<Completion>,
}

impl LoggedBody {
    pub fn new(inner: ProxyBody, done: Completion) -> Self {
        let mut body = Self {
            inner,
            sent: 0,
            done: Some(done),
        };
        if body.inner.is_end_stream() {
            body.fire(true);
        }
        body
    }

    fn fire(&mut self, complete: bool) {
        if let Some(done) = self.done.take() {
            done.finish(self.sent, complete);
        }
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        // A client that disconnects early still gets its log line, marked incomplete.
        self.fire(false);
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.sent += d.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.fire(true);
                }
            }
            Poll::Ready(None) => this.fire(true),
            Poll::Ready(Some(Err(_))) => this.fire(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `flexgate_http_requests_total` of one route, with its children cached by (method, status) so the
/// request path skips Prometheus' label hashing. Methods outside the standard set are counted as
/// `other`: a client cannot create series by inventing methods.
pub struct RouteRequests {
    vec: IntCounterVec,
    route: Arc<str>,
    /// At most 10 methods × the status codes seen (100..=999): bounded.
    cache: parking_lot::Mutex<ahash::AHashMap<(u8, u16), IntCounter>>,
}

impl std::fmt::Debug for RouteRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteRequests")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl RouteRequests {
    pub fn new(vec: IntCounterVec, route: Arc<str>) -> Self {
        Self {
            vec,
            route,
            cache: parking_lot::Mutex::default(),
        }
    }

    pub fn inc(&self, method: &Method, status: StatusCode) {
        let (idx, label) = method_label(method);
        let key = (idx, status.as_u16());
        let mut cache = self.cache.lock();
        if let Some(c) = cache.get(&key) {
            c.inc();
            return;
        }
        let c = self
            .vec
            .with_label_values(&[&*self.route, label, status.as_str()]);
        c.inc();
        cache.insert(key, c);
    }
}

fn method_label(m: &Method) -> (u8, &'static str) {
    match *m {
        Method::GET => (0, "GET"),
        Method::HEAD => (1, "HEAD"),
        Method::POST => (2, "POST"),
        Method::PUT => (3, "PUT"),
        Method::DELETE => (4, "DELETE"),
        Method::PATCH => (5, "PATCH"),
        Method::OPTIONS => (6, "OPTIONS"),
        Method::CONNECT => (7, "CONNECT"),
        Method::TRACE => (8, "TRACE"),
        _ => (9, "other"),
    }
}
