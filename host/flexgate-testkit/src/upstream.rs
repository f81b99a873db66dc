//! In-process upstreams on `127.0.0.1:0`, each stopped (with all its connections) when dropped.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::client::{Body, empty, full};
use crate::pattern::PatternCheck;

/// Aborts a server task (and, through its `JoinSet`, every connection task) when dropped.
#[derive(Debug)]
struct TaskGuard(JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A free loopback port that refuses connections: bound, read, and released. Another bind may take
/// the port later; prefer [`RefusedPort`], which keeps it reserved.
pub fn refused_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// A loopback port that refuses connections while this value lives: a socket bound to it but not
/// listening, so connects get a reset and no other test can be handed the port.
#[derive(Debug)]
pub struct RefusedPort {
    socket: socket2::Socket,
    addr: SocketAddr,
}

impl RefusedPort {
    pub fn new() -> Self {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind");
        let addr = socket
            .local_addr()
            .expect("addr")
            .as_socket()
            .expect("inet addr");
        Self { socket, addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Frees the port (e.g. to start an upstream on it) and returns its address.
    pub fn release(self) -> SocketAddr {
        drop(self.socket);
        self.addr
    }
}

impl Default for RefusedPort {
    fn default() -> Self {
        Self::new()
    }
}

/// A free loopback port (bound, read, released). There is a small race with other binders.
pub fn free_port() -> u16 {
    refused_addr().port()
}

async fn bind(addr: Option<SocketAddr>) -> TcpListener {
    let addr = addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"))
}

/// Serves HTTP/1.1 and h2c (prior knowledge) with `handler`, counting accepted connections.
fn serve_http<F, Fut>(listener: TcpListener, conns: Arc<AtomicU64>, handler: F) -> TaskGuard
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    TaskGuard(tokio::spawn(async move {
        let mut tasks = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            conns.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            tasks.spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
            while tasks.try_join_next().is_some() {}
        }
    }))
}

/// Options of an [`EchoUpstream`].
#[derive(Debug, Clone)]
pub struct EchoOptions {
    name: String,
    status: u16,
    headers: Vec<(String, String)>,
    trailers: Vec<(String, String)>,
    delay: Duration,
    addr: Option<SocketAddr>,
}

impl Default for EchoOptions {
    fn default() -> Self {
        Self {
            name: "echo".into(),
            status: 200,
            headers: Vec::new(),
            trailers: Vec::new(),
            delay: Duration::ZERO,
            addr: None,
        }
    }
}

impl EchoOptions {
    /// Reported as `upstream` in the JSON and in the `x-upstream` response header.
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }
    /// Default response status (per request: `x-echo-status`).
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
    /// An extra response header (repeat for several values, e.g. `set-cookie`).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    /// A response trailer. Note: hyper's HTTP/1.1 server only sends trailers when the request carried
    /// `TE: trailers`; use [`TrailersUpstream`] to send them unconditionally.
    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.trailers.push((name.into(), value.into()));
        self
    }
    /// Delay before the response headers (per request: `x-echo-delay-ms`).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
    /// Listen on this address instead of a fresh port.
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = Some(addr);
        self
    }
    pub async fn start(self) -> EchoUpstream {
        EchoUpstream::start_with(self).await
    }
}

#[derive(Debug)]
struct EchoState {
    opts: EchoOptions,
    status: AtomicU16,
    health_status: AtomicU16,
    connections: Arc<AtomicU64>,
    requests: AtomicU64,
    health_checks: AtomicU64,
    received: std::sync::Mutex<Vec<EchoReport>>,
}

/// What the echo upstream received, as it reports it in its JSON answer.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
pub struct EchoReport {
    pub upstream: String,
    pub method: String,
    /// Path and query exactly as received (not decoded).
    pub uri: String,
    /// `HTTP/1.1`, `HTTP/2.0`, ...
    pub version: String,
    /// In order, names lower-case.
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    pub body_sha256: String,
    /// The body when it is at most 4 KiB of UTF-8.
    pub body: Option<String>,
}

impl EchoReport {
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }
    /// First value of a request header as the upstream saw it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Every value of a request header as the upstream saw it.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

/// Hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&sha2::Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Answers every request with JSON describing it (see [`EchoReport`]); `/healthz` answers with a
/// switchable status. Per-request controls: `x-echo-status: 503`, `x-echo-delay-ms: 500`.
#[derive(Debug)]
pub struct EchoUpstream {
    addr: SocketAddr,
    state: Arc<EchoState>,
    _task: TaskGuard,
}

impl EchoUpstream {
    /// An echo named `echo` answering 200.
    pub async fn start() -> Self {
        Self::start_with(EchoOptions::default()).await
    }

    /// Options to start a customised echo.
    pub fn builder() -> EchoOptions {
        EchoOptions::default()
    }

    /// An echo with this name.
    pub async fn named(name: &str) -> Self {
        Self::start_with(EchoOptions::default().name(name)).await
    }

    /// An echo that waits `delay` before its response headers.
    pub async fn slow(name: &str, delay: Duration) -> Self {
        Self::start_with(EchoOptions::default().name(name).delay(delay)).await
    }

    pub async fn start_with(opts: EchoOptions) -> Self {
        let listener = bind(opts.addr).await;
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(EchoState {
            status: AtomicU16::new(opts.status),
            health_status: AtomicU16::new(200),
            connections: Arc::new(AtomicU64::new(0)),
            requests: AtomicU64::new(0),
            health_checks: AtomicU64::new(0),
            received: std::sync::Mutex::new(Vec::new()),
            opts,
        });
        let st = state.clone();
        let task = serve_http(listener, state.connections.clone(), move |req| {
            let st = st.clone();
            async move { echo_handle(st, req).await }
        });
        Self {
            addr,
            state,
            _task: task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn name(&self) -> &str {
        &self.state.opts.name
    }
    /// `http://ADDR`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }
    /// Requests answered so far (health checks excluded).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }
    /// `/healthz` requests so far.
    pub fn health_checks(&self) -> u64 {
        self.state.health_checks.load(Ordering::SeqCst)
    }
    /// Status of `/healthz` from now on.
    pub fn set_health(&self, status: u16) {
        self.state.health_status.store(status, Ordering::SeqCst);
    }
    /// Default status of other requests from now on.
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }
    /// Every request received so far (health checks excluded).
    pub fn received(&self) -> Vec<EchoReport> {
        self.state
            .received
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }
}

fn header_num(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

async fn echo_handle(st: Arc<EchoState>, req: Request<Incoming>) -> Response<Body> {
    if req.uri().path() == "/healthz" {
        st.health_checks.fetch_add(1, Ordering::SeqCst);
        let status = st.health_status.load(Ordering::SeqCst);
        return Response::builder()
            .status(status)
            .body(full(format!("health {status}")))
            .expect("response");
    }
    st.requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let status = header_num(&parts.headers, "x-echo-status")
        .map(|s| s as u16)
        .unwrap_or_else(|| st.status.load(Ordering::SeqCst));
    let delay = header_num(&parts.headers, "x-echo-delay-ms")
        .map(Duration::from_millis)
        .unwrap_or(st.opts.delay);
    let body = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .body(full(format!("echo: reading the body failed: {e}")))
                .expect("response");
        }
    };
    let report = EchoReport {
        upstream: st.opts.name.clone(),
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_len: body.len() as u64,
        body_sha256: sha256_hex(&body),
        body: (body.len() <= 4096)
            .then(|| std::str::from_utf8(&body).ok().map(str::to_owned))
            .flatten(),
    };
    if let Ok(mut r) = st.received.lock() {
        r.push(report.clone());
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let json = Bytes::from(serde_json::to_vec(&report).expect("json"));
    let mut resp = if st.opts.trailers.is_empty() {
        Response::new(full(json))
    } else {
        let mut trailers = HeaderMap::new();
        for (k, v) in &st.opts.trailers {
            trailers.append(
                HeaderName::from_bytes(k.as_bytes()).expect("trailer name"),
                HeaderValue::from_str(v).expect("trailer value"),
            );
        }
        let names = st
            .opts
            .trailers
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let frames = futures_util::stream::iter(vec![
            Ok::<_, crate::BoxError>(Frame::data(json)),
            Ok(Frame::trailers(trailers)),
        ]);
        let mut r = Response::new(StreamBody::new(frames).boxed_unsync());
        r.headers_mut().insert(
            http::header::TRAILER,
            HeaderValue::from_str(&names).expect("names"),
        );
        r
    };
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        "x-upstream",
        HeaderValue::from_str(&st.opts.name).expect("name"),
    );
    for (k, v) in &st.opts.headers {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    resp
}

/// What [`UploadSink`] answers (JSON) after consuming a body.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
pub struct SinkReport {
    pub bytes: u64,
    /// Every byte matched [`crate::pattern`] at its offset.
    pub pattern_ok: bool,
    pub first_mismatch: Option<u64>,
    /// Only with `?sha256=1` (slow in debug builds for large bodies).
    pub sha256: Option<String>,
}

/// Consumes request bodies frame by frame (constant memory), answering a [`SinkReport`].
#[derive(Debug)]
pub struct UploadSink {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    _task: TaskGuard,
}

impl UploadSink {
    pub async fn start() -> Self {
        let listener = bind(None).await;
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let rx = received.clone();
        let task = serve_http(listener, connections.clone(), move |req| {
            let rx = rx.clone();
            async move { sink_handle(rx, req).await }
        });
        Self {
            addr,
            connections,
            received,
            _task: task,
        }
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
    /// Body bytes received so far, over all requests (grows while an upload streams).
    pub fn bytes_received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }
}

async fn sink_handle(received: Arc<AtomicU64>, req: Request<Incoming>) -> Response<Body> {
    let want_hash = req.uri().query().is_some_and(|q| q.contains("sha256=1"));
    let mut body = req.into_body();
    let mut check = PatternCheck::new();
    let mut hasher = want_hash.then(sha2::Sha256::new);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    check.update(d);
                    received.fetch_add(d.len() as u64, Ordering::SeqCst);
                    if let Some(h) = hasher.as_mut() {
                        h.update(d);
                    }
                }
            }
            Err(e) => {
                return Response::builder()
                    .status(StatusCode::BAD_REQUEST)
                    .body(full(format!(
                        "sink: body error after {} bytes: {e}",
                        check.len()
                    )))
                    .expect("response");
            }
        }
    }
    let report = SinkReport {
        bytes: check.len(),
        pattern_ok: check.ok(),
        first_mismatch: check.first_mismatch(),
        sha256: hasher.map(|h| hex(&h.finalize())),
    };
    Response::builder()
        .header("content-type", "application/json")
        .body(full(serde_json::to_vec(&report).expect("json")))
        .expect("response")
}

/// Streams generated bytes: `GET /bytes/N` (with content-length) and `GET /chunked/N` (without),
/// `?chunk=K` sets the frame size (default 64 KiB). HEAD answers the same headers without a body.
#[derive(Debug)]
pub struct DownloadSource {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    _task: TaskGuard,
}

impl DownloadSource {
    pub async fn start() -> Self {
        let listener = bind(None).await;
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let s = sent.clone();
        let task = serve_http(listener, connections.clone(), move |req| {
            let s = s.clone();
            async move { source_handle(s, req) }
        });
        Self {
            addr,
            connections,
            sent,
            _task: task,
        }
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
    /// Body bytes handed to hyper so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

fn source_handle(sent: Arc<AtomicU64>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let chunk = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("chunk=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(crate::pattern::MAX_CHUNK);
    let (chunked, n) = if let Some(n) = path.strip_prefix("/bytes/") {
        (false, n.parse::<u64>().ok())
    } else if let Some(n) = path.strip_prefix("/chunked/") {
        (true, n.parse::<u64>().ok())
    } else {
        (false, None)
    };
    let Some(n) = n else {
        return Response::builder()
            .status(404)
            .body(full("use /bytes/N or /chunked/N"))
            .expect("resp");
    };
    let mut b = Response::builder().header("content-type", "application/octet-stream");
    if !chunked {
        b = b.header("content-length", n.to_string());
    }
    if req.method() == http::Method::HEAD {
        return b.body(empty()).expect("resp");
    }
    let frames = crate::pattern::pattern_chunks(n, chunk).map(move |c| {
        sent.fetch_add(c.len() as u64, Ordering::SeqCst);
        Ok::<_, crate::BoxError>(Frame::data(c))
    });
    b.body(StreamBody::new(frames).boxed_unsync())
        .expect("resp")
}

/// How a [`BrokenUpstream`] misbehaves after reading a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakMode {
    /// Close as soon as the connection is accepted.
    CloseOnAccept,
    /// Read the request head, then close without answering.
    CloseAfterRequest,
    /// Send part of the response head, then close.
    MidHeaders,
    /// Send a full head announcing 100 000 bytes, 10 bytes of body, then close.
    MidBody,
}

/// A raw TCP upstream that breaks its connections (see [`BreakMode`]).
#[derive(Debug)]
pub struct BrokenUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    _task: TaskGuard,
}

impl BrokenUpstream {
    pub async fn start(mode: BreakMode) -> Self {
        let listener = bind(None).await;
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicU64::new(0));
        let conns = connections.clone();
        let task = TaskGuard(tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                tasks.spawn(async move {
                    if mode == BreakMode::CloseOnAccept {
                        return;
                    }
                    if read_head(&mut s).await.is_none() {
                        return;
                    }
                    let out: &[u8] = match mode {
                        BreakMode::MidHeaders => b"HTTP/1.1 200 OK\r\nContent-Type: text/pl",
                        BreakMode::MidBody => {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n0123456789"
                        }
                        _ => b"",
                    };
                    let _ = s.write_all(out).await;
                    let _ = s.flush().await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                });
                while tasks.try_join_next().is_some() {}
            }
        }));
        Self {
            addr,
            connections,
            _task: task,
        }
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Reads up to the end of a request head (within 10 s); `None` on close or timeout.
async fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(end) = crate::client::find(&buf, b"\r\n\r\n") {
            buf.truncate(end + 4);
            return Some(buf);
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// A raw HTTP/1.1 upstream answering every (body-less) request with a chunked body and trailers,
/// whatever `TE` says: body [`TrailersUpstream::BODY`], trailers `x-checksum: abc123` and
/// `x-trailer-two: v2`, declared in a `Trailer` header.
#[derive(Debug)]
pub struct TrailersUpstream {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
    _task: TaskGuard,
}

impl TrailersUpstream {
    pub const BODY: &'static str = "hello world";

    pub async fn start() -> Self {
        let listener = bind(None).await;
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicU64::new(0));
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (rq, hs) = (requests.clone(), heads.clone());
        let task = TaskGuard(tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                let (rq, hs) = (rq.clone(), hs.clone());
                tasks.spawn(async move {
                    while let Some(head) = read_head(&mut s).await {
                        rq.fetch_add(1, Ordering::SeqCst);
                        if let Ok(mut h) = hs.lock() {
                            h.push(String::from_utf8_lossy(&head).into_owned());
                        }
                        let resp = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\
                            Transfer-Encoding: chunked\r\nTrailer: x-checksum, x-trailer-two\r\n\r\n\
                            5\r\nhello\r\n6\r\n world\r\n0\r\n\
                            x-checksum: abc123\r\nx-trailer-two: v2\r\n\r\n";
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
                while tasks.try_join_next().is_some() {}
            }
        }));
        Self {
            addr,
            requests,
            heads,
            _task: task,
        }
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
    /// The raw request heads received.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

/// A WebSocket server echoing text and binary messages back.
#[derive(Debug)]
pub struct WsEchoUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    _task: TaskGuard,
}

impl WsEchoUpstream {
    pub async fn start() -> Self {
        let listener = bind(None).await;
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicU64::new(0));
        let conns = connections.clone();
        let task = TaskGuard(tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                tasks.spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        use tokio_tungstenite::tungstenite::Message;
                        let reply = match msg {
                            Message::Text(_) | Message::Binary(_) => msg,
                            Message::Close(_) => break,
                            _ => continue,
                        };
                        if ws.send(reply).await.is_err() {
                            break;
                        }
                    }
                    let _ = ws.close(None).await;
                });
                while tasks.try_join_next().is_some() {}
            }
        }));
        Self {
            addr,
            connections,
            _task: task,
        }
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}
