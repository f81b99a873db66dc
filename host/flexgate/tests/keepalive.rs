//! Idle HTTP/1.1 keep-alive connections: parked without buffers after `server.park_idle_after`,
//! served again on the same socket, closed after `server.idle_timeout`, closed at once on drain.

use std::time::{Duration, Instant};

use flexgate_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_flexgate");
const T: Duration = Duration::from_secs(5);
const PARKED: &str = "flexgate_parked_connections";

fn config(echo: &EchoUpstream, server: &str) -> String {
    format!(
        "server:\n{server}{}",
        yaml::proxy_all(&[echo.addr()], "", "")
    )
}

async fn get<S>(conn: &mut RawConn<S>, path: &str) -> u16
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    conn.write(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n"))
        .await
        .expect("write");
    let (head, _) = conn.read_response(T).await.expect("response");
    head.status
}

#[tokio::test]
async fn idle_connection_is_parked_then_served_again_on_the_same_socket() {
    let echo = EchoUpstream::start().await;
    let gw = Gateway::start(
        BIN,
        &config(&echo, "  park_idle_after: 100ms\n  idle_timeout: 30s\n"),
    )
    .await;
    let mut conn = RawConn::connect(gw.proxy_addr()).await.expect("connect");
    assert_eq!(get(&mut conn, "/one").await, 200);
    assert_eq!(
        gw.wait_metric(PARKED, T, |v| v == 1.0).await,
        Some(1.0),
        "never parked"
    );
    assert_eq!(get(&mut conn, "/two").await, 200);
    assert_eq!(
        gw.metric(PARKED).await,
        Some(0.0),
        "still counted as parked"
    );
    assert_eq!(echo.requests(), 2);

    // A request head split around a park: the bytes hyper already read are replayed.
    gw.wait_metric(PARKED, T, |v| v == 1.0).await;
    conn.write("GET /three HTTP/1.1\r\nHo").await.expect("half");
    tokio::time::sleep(Duration::from_millis(400)).await;
    conn.write("st: h\r\n\r\n").await.expect("rest");
    let (head, _) = conn.read_response(T).await.expect("response");
    assert_eq!(head.status, 200);
    assert_eq!(echo.requests(), 3);
}

#[tokio::test]
async fn busy_connections_are_not_parked() {
    let echo = EchoUpstream::start().await;
    let gw = Gateway::start(BIN, &config(&echo, "  park_idle_after: 100ms\n")).await;
    let mut conn = RawConn::connect(gw.proxy_addr()).await.expect("connect");
    // A response slower than the park interval: the connection must stay whole (no
    // `Connection: close`, the next request on it works).
    conn.write("GET /slow HTTP/1.1\r\nHost: h\r\nx-echo-delay-ms: 600\r\n\r\n")
        .await
        .expect("write");
    let (head, _) = conn.read_response(T).await.expect("slow response");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("connection"), None);
    for _ in 0..20 {
        assert_eq!(get(&mut conn, "/quick").await, 200);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(echo.requests(), 21);
}

#[tokio::test]
async fn parked_connection_closes_after_idle_timeout() {
    let echo = EchoUpstream::start().await;
    let gw = Gateway::start(
        BIN,
        &config(
            &echo,
            "  park_idle_after: 100ms\n  idle_timeout: 1s\n  header_read_timeout: 30s\n",
        ),
    )
    .await;
    let mut conn = RawConn::connect(gw.proxy_addr()).await.expect("connect");
    assert_eq!(get(&mut conn, "/").await, 200);
    let idle_from = Instant::now();
    let (_, closed) = conn.read_until_close(T).await;
    let after = idle_from.elapsed();
    assert!(closed, "still open 5s into a 1s idle_timeout");
    assert!(
        after >= Duration::from_millis(800) && after < Duration::from_secs(3),
        "closed after {after:?} (idle_timeout 1s)"
    );
}

#[tokio::test]
async fn drain_closes_parked_connections_at_once() {
    let echo = EchoUpstream::start().await;
    let gw = Gateway::start(
        BIN,
        &config(&echo, "  park_idle_after: 100ms\n  grace_period: 20s\n"),
    )
    .await;
    let mut conns = Vec::new();
    for _ in 0..5 {
        let mut c = RawConn::connect(gw.proxy_addr()).await.expect("connect");
        assert_eq!(get(&mut c, "/").await, 200);
        conns.push(c);
    }
    gw.wait_metric(PARKED, T, |v| v == 5.0).await;
    let signalled = Instant::now();
    gw.signal(Signal::SIGTERM);
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "parked connections held the drain for {:?}",
        signalled.elapsed()
    );
}

/// The point of parking: 1,000 idle keep-alive connections cost far less than hyper's two 8 KiB
/// buffers each (~21 KiB per connection before parking existed).
#[tokio::test]
async fn parked_connections_hold_no_buffers() {
    const N: usize = 1000;
    let echo = EchoUpstream::start().await;
    let gw = Gateway::start(
        BIN,
        &config(&echo, "  park_idle_after: 100ms\n  workers: 1\n"),
    )
    .await;
    // Warm up allocator and pools so the baseline is not the first request's growth.
    let mut warm = RawConn::connect(gw.proxy_addr()).await.expect("connect");
    for _ in 0..20 {
        get(&mut warm, "/").await;
    }
    drop(warm);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = gw.rss_kib();
    let mut conns = Vec::with_capacity(N);
    for _ in 0..N {
        let mut c = RawConn::connect(gw.proxy_addr()).await.expect("connect");
        assert_eq!(get(&mut c, "/").await, 200);
        conns.push(c);
    }
    let parked = gw
        .wait_metric(PARKED, Duration::from_secs(10), |v| v == N as f64)
        .await;
    // Freed buffers go back to the OS after the allocator's decay (~1 s, .cargo/config.toml).
    let per_conn = || (gw.rss_kib().saturating_sub(before)) as f64 / N as f64;
    let settled = Instant::now();
    while per_conn() >= 8.0 && settled.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let per_conn = per_conn();
    eprintln!(
        "{N} parked connections: {per_conn:.2} KiB each, {:?} after all were parked (RSS {before} KiB before)",
        settled.elapsed()
    );
    assert_eq!(parked, Some(N as f64));
    assert!(
        per_conn < 8.0,
        "{per_conn:.2} KiB per parked connection (hyper's buffers alone are 16 KiB)"
    );
    // Still serviceable.
    for c in conns.iter_mut().take(10) {
        assert_eq!(get(c, "/").await, 200);
    }
}

/// TLS connections park too: rustls may hold decrypted bytes the socket no longer shows, so a
/// parked TLS connection reads for real; the request after the park must be answered.
#[tokio::test]
async fn tls_connection_is_parked_then_served_again() {
    let echo = EchoUpstream::start().await;
    let certs = TestCerts::generate();
    let gw = Gateway::builder(BIN)
        .tls(&certs)
        .config(config(&echo, "  park_idle_after: 100ms\n"))
        .start()
        .await;
    let tls = tls_connect(gw.proxy_addr(), &certs, &[b"http/1.1"])
        .await
        .expect("tls");
    let mut conn = RawConn::over(tls);
    for (i, path) in ["/one", "/two", "/three"].into_iter().enumerate() {
        if i > 0 {
            assert_eq!(
                gw.wait_metric(PARKED, T, |v| v == 1.0).await,
                Some(1.0),
                "never parked"
            );
        }
        assert_eq!(get(&mut conn, path).await, 200, "{path}");
    }
    assert_eq!(echo.requests(), 3);
}

/// A response sent while its request body is still arriving leaves hyper busy: the connection must
/// not be parked then, or the rest of the body could be read as a new request.
#[tokio::test]
async fn unfinished_request_body_is_never_parsed_as_a_request() {
    let gw = Gateway::start(
        BIN,
        "server:\n  park_idle_after: 100ms\nroutes:\n  - name: direct\n    match: { path_prefix: / }\n    respond: { status: 200, body: ok }\n",
    )
    .await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut conn = RawConn::connect(gw.proxy_addr()).await.expect("connect");
    conn.write(format!(
        "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{}",
        10 + smuggled.len(),
        "0123456789"
    ))
    .await
    .expect("head and part of the body");
    let (head, _) = conn.read_response(T).await.expect("early response");
    assert_eq!(head.status, 200);
    // Long enough for two park ticks while hyper still waits for the body.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let _ = conn.write(smuggled).await;
    let (rest, _) = conn.read_until_close(Duration::from_secs(2)).await;
    let text = String::from_utf8_lossy(&rest);
    assert!(
        !text.contains("HTTP/1.1"),
        "the body's tail was answered as a request: {text:?}"
    );
    let logs = gw.access_logs();
    assert!(
        logs.iter().all(|l| l["path"] != "/smuggled"),
        "a request was made of the body: {logs:?}"
    );
}
