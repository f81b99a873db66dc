//! Upstream HTTP/1.1 keep-alive: connections go back to their target's pool after a complete
//! response (whatever its framing), are closed after `timeouts.idle`, are never reused after an
//! abandoned response, and an upstream closing an idle connection costs no request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flexgate_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_flexgate");
const T: Duration = Duration::from_secs(5);

/// Method, request headers, request body, expected status.
type Call<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, u16);

#[tokio::test]
async fn complete_responses_of_every_framing_reuse_one_upstream_connection() {
    let echo = EchoUpstream::builder().trailer("x-t", "1").start().await;
    let plain = EchoUpstream::start().await;
    for (up, label) in [(&echo, "chunked with trailers"), (&plain, "content-length")] {
        let gw = Gateway::start(BIN, &yaml::proxy_all(&[up.addr()], "", "")).await;
        let client = HttpClient::http1();
        let calls: [Call; 6] = [
            ("GET", &[], "", 200),
            ("POST", &[], "a request body", 200),
            ("HEAD", &[], "", 200),
            ("GET", &[("x-echo-status", "204")], "", 204),
            ("GET", &[("x-echo-status", "304")], "", 304),
            ("PUT", &[("x-echo-status", "404")], "x", 404),
        ];
        for round in 0..2 {
            for (method, headers, body, status) in calls {
                let r = client
                    .call(method, &gw.url("/pool"), headers, full(body))
                    .await
                    .expect("request");
                assert_eq!(r.status, status, "{label}: {method} round {round}");
            }
        }
        assert_eq!(
            up.connections(),
            1,
            "{label}: one upstream connection for 12 requests"
        );
    }
}

#[tokio::test]
async fn concurrent_requests_keep_as_many_connections_as_they_needed() {
    let echo = EchoUpstream::start().await;
    let gw = Gateway::start(BIN, &yaml::proxy_all(&[echo.addr()], "", "")).await;
    let client = HttpClient::http1();
    for _ in 0..3 {
        let url = gw.url("/c");
        let call = || client.call("GET", &url, &[("x-echo-delay-ms", "50")], empty());
        let rs = tokio::join!(call(), call(), call(), call(), call(), call());
        for r in [rs.0, rs.1, rs.2, rs.3, rs.4, rs.5] {
            assert_eq!(r.expect("request").status, 200);
        }
    }
    assert_eq!(
        echo.connections(),
        6,
        "three rounds of six share six connections"
    );
}

#[tokio::test]
async fn idle_upstream_connections_close_after_the_idle_timeout() {
    let echo = EchoUpstream::start().await;
    let gw = Gateway::start(
        BIN,
        &yaml::proxy_all(&[echo.addr()], "    timeouts:\n      idle: 400ms\n", ""),
    )
    .await;
    let client = HttpClient::http1();
    let url = gw.url("/idle");
    let get = || client.call("GET", &url, &[], empty());
    assert_eq!(get().await.expect("first").status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get().await.expect("soon after").status, 200);
    assert_eq!(echo.connections(), 1, "reused within the idle timeout");
    // Closed between 400 and 500 ms of idleness (sweeps every 100 ms).
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(get().await.expect("after idle").status, 200);
    assert_eq!(
        echo.connections(),
        2,
        "a new connection after the idle timeout"
    );
}

#[tokio::test]
async fn upstream_closing_idle_connections_costs_no_request() {
    let up = HangingUpUpstream::start().await;
    let gw = Gateway::start(BIN, &yaml::proxy_all(&[up.addr], "", "")).await;
    let client = HttpClient::http1();
    for i in 0..5 {
        let r = client.get(&gw.url("/x")).await.expect("request");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.body.len(), 16);
        // The upstream hangs up 20 ms after each response, as an upstream whose keep-alive
        // timeout is shorter than ours does.
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    assert_eq!(up.accepts.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn an_abandoned_response_never_leaves_its_connection_in_the_pool() {
    let src = DownloadSource::start().await;
    let gw = Gateway::start(BIN, &yaml::proxy_all(&[src.addr()], "", "")).await;
    for (i, framing) in ["bytes", "chunked"].into_iter().enumerate() {
        // Read the head of a 4 MiB response, then hang up.
        let mut conn = RawConn::connect(gw.proxy_addr()).await.expect("connect");
        conn.write(format!(
            "GET /{framing}/4194304 HTTP/1.1\r\nHost: h\r\n\r\n"
        ))
        .await
        .expect("write");
        assert_eq!(conn.read_head(T).await.expect("head").status, 200);
        drop(conn);
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The rest of that body must not be read as the next response.
        let r = HttpClient::http1_fresh()
            .get(&gw.url(&format!("/{framing}/100000")))
            .await
            .expect("next request");
        assert_eq!(r.status, 200, "{framing}");
        let mut check = PatternCheck::new();
        check.update(&r.body);
        assert_eq!(check.len(), 100_000, "{framing}");
        assert!(
            check.ok(),
            "{framing}: mismatch at {:?}",
            check.first_mismatch()
        );
        // The first abandoned response had a new connection, the second the pooled one the
        // check request left: each was closed, so each check needed a new one.
        let expected = i as u64 + 2;
        assert_eq!(
            src.connections(),
            expected,
            "{framing}: the abandoned connection was closed"
        );
    }
}

/// Answers a request head with 16 bytes (no `Connection: close`), then hangs up 20 ms later, as
/// an upstream whose keep-alive timeout is shorter than ours does.
struct HangingUpUpstream {
    addr: SocketAddr,
    accepts: Arc<AtomicU64>,
    _task: tokio::task::JoinHandle<()>,
}

impl HangingUpUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepts = Arc::new(AtomicU64::new(0));
        let counter = accepts.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let resp = "HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\nxxxxxxxxxxxxxxxx";
                    let _ = sock.write_all(resp.as_bytes()).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                });
            }
        });
        Self {
            addr,
            accepts,
            _task: task,
        }
    }
}
