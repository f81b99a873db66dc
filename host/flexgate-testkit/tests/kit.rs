//! The kit tested on its own, without the gateway.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flexgate_testkit::futures_util::{SinkExt, StreamExt};
use flexgate_testkit::http_body_util::BodyExt;
use flexgate_testkit::tokio_tungstenite::tungstenite::Message;
use flexgate_testkit::*;

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn echo_reports_the_request_as_received() {
    let echo = EchoUpstream::builder()
        .name("e1")
        .status(201)
        .header("set-cookie", "a=1")
        .header("set-cookie", "b=2")
        .header("x-custom", "yes")
        .start()
        .await;
    let c = HttpClient::http1();
    let url = format!("{}/a%2Fb?x=%20&y=1", echo.url());
    let r = c
        .call(
            "POST",
            &url,
            &[("x-one", "1"), ("x-two", "2"), ("x-one", "3")],
            full("hello"),
        )
        .await
        .expect("request");
    assert_eq!(r.status, 201);
    assert_eq!(r.header_all("set-cookie"), vec!["a=1", "b=2"]);
    assert_eq!(r.header("x-upstream"), Some("e1"));
    let rep = r.echo();
    assert_eq!(rep.method, "POST");
    assert_eq!(rep.uri, "/a%2Fb?x=%20&y=1");
    assert_eq!(rep.version, "HTTP/1.1");
    assert_eq!(rep.header_all("x-one"), vec!["1", "3"]);
    assert_eq!(rep.header("x-two"), Some("2"));
    assert_eq!(rep.body.as_deref(), Some("hello"));
    assert_eq!(rep.body_len, 5);
    assert_eq!(rep.body_sha256, sha256_hex(b"hello"));
    assert_eq!(echo.requests(), 1);
    assert_eq!(echo.connections(), 1);
    assert_eq!(echo.received()[0], rep);

    // per-request controls, health switch
    let r = c
        .call("GET", &echo.url(), &[("x-echo-status", "503")], empty())
        .await
        .expect("req");
    assert_eq!(r.status, 503);
    assert_eq!(
        c.get(&format!("{}/healthz", echo.url()))
            .await
            .expect("hz")
            .status,
        200
    );
    echo.set_health(503);
    assert_eq!(
        c.get(&format!("{}/healthz", echo.url()))
            .await
            .expect("hz")
            .status,
        503
    );
    assert_eq!(echo.health_checks(), 2);
    assert_eq!(echo.requests(), 2);
    let t0 = Instant::now();
    let r = c
        .call("GET", &echo.url(), &[("x-echo-delay-ms", "200")], empty())
        .await
        .expect("req");
    assert_eq!(r.status, 201);
    assert!(t0.elapsed() >= Duration::from_millis(200));
    assert_eq!(echo.connections(), 1, "keep-alive reused");
}

#[tokio::test]
async fn echo_over_h2c_and_trailers_with_te() {
    let echo = EchoUpstream::builder().trailer("x-t", "v").start().await;
    let r = HttpClient::h2c().get(&echo.url()).await.expect("h2c");
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.echo().version, "HTTP/2.0");
    assert_eq!(r.trailer("x-t"), Some("v"));
    // HTTP/1.1: hyper only sends trailers when asked with TE: trailers.
    let mut raw = RawConn::connect(echo.addr()).await.expect("connect");
    raw.write("GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
        .await
        .expect("write");
    let head = raw.read_head(T).await.expect("head");
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    let (_body, trailers) = raw.read_chunked(T).await.expect("chunked");
    assert!(
        trailers.to_ascii_lowercase().contains("x-t: v"),
        "{trailers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_and_source_verify_pattern() {
    let sink = UploadSink::start().await;
    let n: u64 = 10 * 1024 * 1024 + 17;
    let c = HttpClient::http1();
    let len = n.to_string();
    let r = c
        .call(
            "PUT",
            &format!("http://{}/up?sha256=1", sink.addr()),
            &[("content-length", &len)],
            pattern_body(n, 16 * 1024),
        )
        .await
        .expect("upload");
    let rep: SinkReport = serde_json::from_slice(&r.body).expect("sink json");
    assert_eq!(rep.bytes, n);
    assert!(rep.pattern_ok);
    let expected = sha256_hex(&pattern::pattern_bytes(n as usize));
    assert_eq!(rep.sha256.as_deref(), Some(expected.as_str()));
    // chunked upload
    let r = c
        .call(
            "POST",
            &format!("http://{}/up", sink.addr()),
            &[],
            pattern_body(100_000, 999),
        )
        .await
        .expect("upload");
    let rep: SinkReport = serde_json::from_slice(&r.body).expect("sink json");
    assert_eq!((rep.bytes, rep.pattern_ok), (100_000, true));

    let src = DownloadSource::start().await;
    for path in [format!("/bytes/{n}"), format!("/chunked/{n}?chunk=1000")] {
        let resp = c
            .send(request(
                "GET",
                &format!("http://{}{path}", src.addr()),
                &[],
                empty(),
            ))
            .await;
        let resp = resp.expect("download");
        assert_eq!(
            resp.headers().get("content-length").is_some(),
            path.starts_with("/bytes")
        );
        let mut body = resp.into_body();
        let mut check = PatternCheck::new();
        while let Some(f) = body.frame().await {
            if let Some(d) = f.expect("frame").data_ref() {
                check.update(d);
            }
        }
        assert_eq!(check.len(), n);
        assert!(check.ok());
    }
    let r = c
        .call(
            "HEAD",
            &format!("http://{}/bytes/77", src.addr()),
            &[],
            empty(),
        )
        .await;
    let r = r.expect("head");
    assert_eq!(r.header("content-length"), Some("77"));
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn broken_upstreams_break() {
    for mode in [
        BreakMode::CloseOnAccept,
        BreakMode::CloseAfterRequest,
        BreakMode::MidHeaders,
    ] {
        let up = BrokenUpstream::start(mode).await;
        let r = HttpClient::http1_fresh()
            .get(&format!("http://{}/", up.addr()))
            .await;
        assert!(r.is_err(), "{mode:?}: {r:?}");
        assert_eq!(up.connections(), 1);
    }
    let up = BrokenUpstream::start(BreakMode::MidBody).await;
    let r = HttpClient::http1_fresh()
        .get(&format!("http://{}/", up.addr()))
        .await;
    assert!(r.is_err(), "{r:?}");
    let refused = RefusedPort::new();
    for _ in 0..3 {
        let e = tokio::net::TcpStream::connect(refused.addr())
            .await
            .expect_err("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    }
    let addr = refused.release();
    let echo = EchoUpstream::builder().addr(addr).start().await;
    assert_eq!(echo.addr(), addr);
}

#[tokio::test]
async fn trailers_upstream_sends_trailers() {
    let up = TrailersUpstream::start().await;
    let c = HttpClient::http1();
    for _ in 0..2 {
        let r = c
            .get(&format!("http://{}/t", up.addr()))
            .await
            .expect("get");
        assert_eq!(r.text(), TrailersUpstream::BODY);
        assert_eq!(r.trailer("x-checksum"), Some("abc123"));
        assert_eq!(r.trailer("x-trailer-two"), Some("v2"));
    }
    assert_eq!(up.requests(), 2);
}

#[tokio::test]
async fn websocket_echo() {
    let up = WsEchoUpstream::start().await;
    let tcp = tokio::net::TcpStream::connect(up.addr())
        .await
        .expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", up.addr()), tcp)
        .await
        .expect("handshake");
    ws.send(Message::text("hi")).await.expect("send");
    assert_eq!(
        ws.next().await.expect("msg").expect("msg"),
        Message::text("hi")
    );
    ws.send(Message::binary(vec![0u8, 1, 255]))
        .await
        .expect("send");
    assert_eq!(
        ws.next().await.expect("msg").expect("msg"),
        Message::binary(vec![0u8, 1, 255])
    );
    ws.close(None).await.expect("close");
}

#[tokio::test]
async fn tls_client_negotiates_h2_and_http11() {
    let certs = TestCerts::generate();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(Arc::new(certs.server_config(&[b"h2", b"http/1.1"])));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.expect("accept");
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let tls = acceptor.accept(s).await.expect("tls accept");
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(full(format!(
                            "{:?}",
                            req.version()
                        ))))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            });
        }
    });
    let url = format!("https://localhost:{}/", addr.port());
    let (r, alpn) = tls_fetch(addr, &certs, true, request("GET", &url, &[], empty()))
        .await
        .expect("h2");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(r.text(), "HTTP/2.0");
    let (r, alpn) = tls_fetch(addr, &certs, false, request("GET", &url, &[], empty()))
        .await
        .expect("h1");
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(r.text(), "HTTP/1.1");
    assert!(certs.yaml().contains("cert: "));
}

#[test]
fn metric_value_parses_exposition() {
    let text = "# HELP x y\n# TYPE x counter\nx_total{a=\"1\"} 3\nx_total{a=\"10\"} 4\ng 2.5\n";
    assert_eq!(metric_value(text, "x_total{a=\"1\"}"), Some(3.0));
    assert_eq!(metric_value(text, "x_total{a=\"10\"}"), Some(4.0));
    assert_eq!(metric_value(text, "g"), Some(2.5));
    assert_eq!(metric_value(text, "x_total"), None);
}

#[tokio::test]
async fn raw_conn_reads_heads_and_chunks() {
    let echo = EchoUpstream::start().await;
    let mut raw = RawConn::connect(echo.addr()).await.expect("connect");
    raw.write("POST /p HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        .await
        .expect("write");
    let head = raw.read_head(T).await.expect("100");
    assert_eq!(head.status, 100);
    raw.write("abc").await.expect("body");
    let head = raw.read_head(T).await.expect("200");
    assert_eq!(head.status, 200);
    let len: usize = head
        .header("content-length")
        .expect("cl")
        .parse()
        .expect("num");
    let body = raw.read_exact(len, T).await.expect("body");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["body"], "abc");
    let text = raw_exchange(
        echo.addr(),
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        T,
    )
    .await
    .expect("raw");
    assert_eq!(raw_status(&text), Some(200));
}
