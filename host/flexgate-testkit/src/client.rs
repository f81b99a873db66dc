//! Clients: a hyper-util pooled client (HTTP/1.1 or h2c prior knowledge), a TLS client (ALPN h2 or
//! http/1.1) and raw TCP connections for framing tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::BoxError;
use crate::tls::TestCerts;

/// The request body type every client here takes.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body of known length, sent at once.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A streamed body of unknown length (sent chunked over HTTP/1.1).
pub fn stream_body<S>(frames: S) -> Body
where
    S: futures_util::Stream<Item = Result<http_body::Frame<Bytes>, BoxError>> + Send + 'static,
{
    StreamBody::new(frames).boxed_unsync()
}

/// `total` pattern bytes (see [`crate::pattern`]) streamed in `chunk`-sized frames. Set a
/// `content-length` header on the request to send it with a length, otherwise it goes chunked.
pub fn pattern_body(total: u64, chunk: usize) -> Body {
    let frames = crate::pattern::pattern_frames(total, chunk);
    StreamBody::new(frames).boxed_unsync()
}

/// `chunks` sent one by one with `gap` between them (chunked over HTTP/1.1).
pub fn slow_body(chunks: Vec<Bytes>, gap: Duration) -> Body {
    let s = futures_util::stream::unfold(chunks.into_iter(), move |mut it| async move {
        let next = it.next()?;
        tokio::time::sleep(gap).await;
        Some((Ok::<_, BoxError>(http_body::Frame::data(next)), it))
    });
    StreamBody::new(s).boxed_unsync()
}

/// A fully read response.
#[derive(Debug, Clone)]
pub struct Collected {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Collected {
    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// The body parsed as an [`crate::EchoReport`] (the echo upstream's answer).
    pub fn echo(&self) -> crate::EchoReport {
        crate::EchoReport::from_json(&self.json()).unwrap_or_else(|| {
            panic!(
                "not an echo report: status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// First value of a response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a response header, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// A trailer value, if trailers arrived.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .as_ref()?
            .get(name)
            .and_then(|v| v.to_str().ok())
    }

    /// Asserts the gateway's JSON error shape: `content-type: application/json`, a string `error` and a
    /// non-empty string `request_id`. Returns the parsed body.
    pub fn assert_json_error(&self, status: u16) -> serde_json::Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "status; body {:?}",
            self.text()
        );
        let ct = self.header("content-type").unwrap_or_default();
        assert!(
            ct.starts_with("application/json"),
            "content-type {ct:?}; body {:?}",
            self.text()
        );
        let v = self.json();
        assert!(
            v.get("error").and_then(|e| e.as_str()).is_some(),
            "no string `error` in {v}"
        );
        let id = v
            .get("request_id")
            .and_then(|e| e.as_str())
            .unwrap_or_default();
        assert!(!id.is_empty(), "no non-empty `request_id` in {v}");
        v
    }
}

/// Reads a response to its end, trailers included.
pub async fn collect(resp: Response<Incoming>) -> Result<Collected, BoxError> {
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    Ok(Collected {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}

/// Builds a request; `headers` are appended in order (a `host` header overrides the URL's authority).
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Body) -> Request<Body> {
    let mut req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("method"))
        .uri(url)
        .body(body)
        .expect("request");
    for (k, v) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    req
}

/// A pooled hyper-util client, HTTP/1.1 or h2c (prior knowledge).
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Body>,
}

impl HttpClient {
    /// HTTP/1.1 with keep-alive pooling.
    pub fn http1() -> Self {
        Self {
            inner: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// HTTP/1.1, a new connection for every request.
    pub fn http1_fresh() -> Self {
        Self {
            inner: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build_http(),
        }
    }

    /// HTTP/2 over cleartext with prior knowledge.
    pub fn h2c() -> Self {
        Self {
            inner: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    /// Sends a request; the body is not read.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, BoxError> {
        Ok(self.inner.request(req).await?)
    }

    /// Sends a request and reads the whole response.
    pub async fn fetch(&self, req: Request<Body>) -> Result<Collected, BoxError> {
        collect(self.send(req).await?).await
    }

    /// `GET url` read to the end.
    pub async fn get(&self, url: &str) -> Result<Collected, BoxError> {
        self.fetch(request("GET", url, &[], empty())).await
    }

    /// `METHOD url` with headers and body, read to the end.
    pub async fn call(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<Collected, BoxError> {
        self.fetch(request(method, url, headers, body)).await
    }
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

/// One TLS connection made by [`tls_connect`].
pub type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Connects with TLS to `addr` as `localhost`, trusting `certs`' CA and offering `alpn`.
pub async fn tls_connect(
    addr: SocketAddr,
    certs: &TestCerts,
    alpn: &[&[u8]],
) -> Result<TlsStream, BoxError> {
    let config = certs.client_config(alpn);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    Ok(connector.connect(name, tcp).await?)
}

/// Sends one request over a new TLS connection. With `h2`, ALPN offers only `h2` and the request goes
/// over HTTP/2; otherwise only `http/1.1`. Returns the response and the negotiated ALPN protocol.
pub async fn tls_fetch(
    addr: SocketAddr,
    certs: &TestCerts,
    h2: bool,
    mut req: Request<Body>,
) -> Result<(Collected, Option<Vec<u8>>), BoxError> {
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let tls = tls_connect(addr, certs, alpn).await?;
    let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let io = TokioIo::new(tls);
    if h2 {
        *req.version_mut() = Version::HTTP_2;
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        let resp = sender.send_request(req).await?;
        Ok((collect(resp).await?, negotiated))
    } else {
        if !req.headers().contains_key(http::header::HOST) {
            let host = req
                .uri()
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_default();
            req.headers_mut()
                .insert(http::header::HOST, HeaderValue::from_str(&host)?);
        }
        // HTTP/1.1 sends origin-form.
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into());
        *req.uri_mut() = pq.parse()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        let resp = sender.send_request(req).await?;
        Ok((collect(resp).await?, negotiated))
    }
}

/// Sends one request over a new plain connection to `addr`, whatever the URL's authority says
/// (so an h2 request can carry `:authority: app.test`). `h2`: HTTP/2 prior knowledge; otherwise
/// HTTP/1.1 in origin-form with a `Host` from the URL unless one is set.
pub async fn conn_fetch(
    addr: SocketAddr,
    h2: bool,
    mut req: Request<Body>,
) -> Result<Collected, BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let io = TokioIo::new(tcp);
    if h2 {
        *req.version_mut() = Version::HTTP_2;
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        collect(sender.send_request(req).await?).await
    } else {
        if !req.headers().contains_key(http::header::HOST) {
            let host = req
                .uri()
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_default();
            req.headers_mut()
                .insert(http::header::HOST, HeaderValue::from_str(&host)?);
        }
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into());
        *req.uri_mut() = pq.parse()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        collect(sender.send_request(req).await?).await
    }
}

/// The head of a response read off a raw connection.
#[derive(Debug, Clone)]
pub struct RawHead {
    pub status: u16,
    /// The status line and headers as received.
    pub text: String,
    pub headers: Vec<(String, String)>,
}

impl RawHead {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A raw connection for framing tests (plain TCP, or any stream such as [`tls_connect`]'s): write
/// bytes as given, read responses by hand.
#[derive(Debug)]
pub struct RawConn<S = TcpStream> {
    stream: S,
    buf: Vec<u8>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self::over(stream))
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> RawConn<S> {
    /// Raw exchanges over an already connected stream.
    pub fn over(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn write(&mut self, data: impl AsRef<[u8]>) -> std::io::Result<()> {
        self.stream.write_all(data.as_ref()).await?;
        self.stream.flush().await
    }

    /// Reads until a blank line and parses the head. Bytes after it stay buffered.
    pub async fn read_head(&mut self, timeout: Duration) -> Result<RawHead, BoxError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return parse_head(&head);
            }
            let n = self.read_some(deadline).await?;
            if n == 0 {
                return Err(format!(
                    "connection closed before a full response head; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                )
                .into());
            }
        }
    }

    /// Reads a whole response (skipping 1xx heads): the head and the body, framed by content-length,
    /// chunked encoding (trailers dropped) or connection close.
    pub async fn read_response(
        &mut self,
        timeout: Duration,
    ) -> Result<(RawHead, Vec<u8>), BoxError> {
        let head = loop {
            let h = self.read_head(timeout).await?;
            if !(100..200).contains(&h.status) {
                break h;
            }
        };
        if head.status == 204 || head.status == 304 {
            return Ok((head, Vec::new()));
        }
        let chunked = head
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if chunked {
            let (body, _) = self.read_chunked(timeout).await?;
            return Ok((head, body));
        }
        if let Some(len) = head
            .header("content-length")
            .and_then(|l| l.parse::<usize>().ok())
        {
            let body = self.read_exact(len, timeout).await?;
            return Ok((head, body));
        }
        let (body, _) = self.read_until_close(timeout).await;
        Ok((head, body))
    }

    /// Reads exactly `n` more bytes.
    pub async fn read_exact(&mut self, n: usize, timeout: Duration) -> Result<Vec<u8>, BoxError> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.buf.len() < n {
            if self.read_some(deadline).await? == 0 {
                return Err(format!("closed after {} of {n} bytes", self.buf.len()).into());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads until the peer closes or `timeout` passes; returns everything unread and whether the
    /// connection was closed (`false`: still open at the timeout). A reset counts as closed.
    pub async fn read_until_close(&mut self, timeout: Duration) -> (Vec<u8>, bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        let closed = loop {
            match self.read_some(deadline).await {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e) if e.to_string().contains("timed out") => break false,
                Err(_) => break true,
            }
        };
        (std::mem::take(&mut self.buf), closed)
    }

    /// Everything received until `timeout` passes or the peer closes.
    pub async fn read_for(&mut self, timeout: Duration) -> Vec<u8> {
        self.read_until_close(timeout).await.0
    }

    /// Bytes already buffered after the last head.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Reads a chunked body that follows a head; returns (body, raw trailer section text).
    pub async fn read_chunked(&mut self, timeout: Duration) -> Result<(Vec<u8>, String), BoxError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut body = Vec::new();
        loop {
            let line = self.read_line(deadline).await?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|e| format!("bad chunk size line {line:?}: {e}"))?;
            if size == 0 {
                let mut trailers = String::new();
                loop {
                    let l = self.read_line(deadline).await?;
                    if l.is_empty() {
                        return Ok((body, trailers));
                    }
                    trailers.push_str(&l);
                    trailers.push_str("\r\n");
                }
            }
            while self.buf.len() < size + 2 {
                if self.read_some(deadline).await? == 0 {
                    return Err("closed inside a chunk".into());
                }
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    async fn read_line(&mut self, deadline: tokio::time::Instant) -> Result<String, BoxError> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            if self.read_some(deadline).await? == 0 {
                return Err("closed before end of line".into());
            }
        }
    }

    async fn read_some(&mut self, deadline: tokio::time::Instant) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "read timed out",
            )),
        }
    }
}

/// Writes `data` on a new connection and returns everything read until the peer closes (or `timeout`).
pub async fn raw_exchange(
    addr: SocketAddr,
    data: impl AsRef<[u8]>,
    timeout: Duration,
) -> std::io::Result<String> {
    let mut conn = RawConn::connect(addr).await?;
    conn.write(data).await?;
    Ok(String::from_utf8_lossy(&conn.read_for(timeout).await).into_owned())
}

/// Writes `data` on a new connection and reads one whole response (see [`RawConn::read_response`]).
pub async fn raw_fetch(
    addr: SocketAddr,
    data: impl AsRef<[u8]>,
    timeout: Duration,
) -> Result<(RawHead, Vec<u8>), BoxError> {
    let mut conn = RawConn::connect(addr).await?;
    conn.write(data).await?;
    conn.read_response(timeout).await
}

/// The status code of the first response in raw response text (`HTTP/1.1 400 ...`).
pub fn raw_status(text: &str) -> Option<u16> {
    let line = text.lines().next()?;
    let mut parts = line.split_whitespace();
    let proto = parts.next()?;
    if !proto.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

fn parse_head(head: &[u8]) -> Result<RawHead, BoxError> {
    let text = String::from_utf8_lossy(head).into_owned();
    let status = raw_status(&text).ok_or_else(|| format!("not an HTTP response head: {text:?}"))?;
    let headers = text
        .split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect();
    Ok(RawHead {
        status,
        text,
        headers,
    })
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
