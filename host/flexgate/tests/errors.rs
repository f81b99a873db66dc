//! Error answers: 502, 504, 413, 431, 408/close, 400 for ambiguous framing.

use std::time::{Duration, Instant};

use flexgate_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_flexgate");
const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn refused_upstream_is_a_json_502() {
    let down = RefusedPort::new();
    let gw = Gateway::start(BIN, &yaml::proxy_all(&[down.addr()], "", "")).await;
    let r = HttpClient::http1()
        .get(&gw.url("/x"))
        .await
        .expect("request");
    r.assert_json_error(502);
}

#[tokio::test]
async fn upstream_breaking_before_or_inside_the_response_head_is_a_json_502() {
    for mode in [
        BreakMode::CloseOnAccept,
        BreakMode::CloseAfterRequest,
        BreakMode::MidHeaders,
    ] {
        let up = BrokenUpstream::start(mode).await;
        let gw = Gateway::start(BIN, &yaml::proxy_all(&[up.addr()], "", "")).await;
        let r = HttpClient::http1()
            .get(&gw.url("/x"))
            .await
            .expect("request");
        assert_eq!(r.status, 502, "{mode:?}: {}", r.text());
        r.assert_json_error(502);
        assert!(up.connections() >= 1, "{mode:?}: upstream never contacted");
    }
}

#[tokio::test]
async fn upstream_breaking_mid_body_aborts_the_client_response() {
    let up = BrokenUpstream::start(BreakMode::MidBody).await;
    let gw = Gateway::start(BIN, &yaml::proxy_all(&[up.addr()], "", "")).await;
    // The head (200, content-length 100000) was already forwarded: the only honest signal left is
    // an aborted body, never a silently short one.
    let r = HttpClient::http1_fresh().get(&gw.url("/x")).await;
    match r {
        Err(_) => {}
        Ok(c) => assert_eq!(
            c.status,
            502,
            "a truncated body was delivered as complete: {} bytes",
            c.body.len()
        ),
    }
}

#[tokio::test]
async fn slow_upstream_is_a_json_504_after_the_request_timeout() {
    let slow = EchoUpstream::slow("slow", Duration::from_secs(3)).await;
    let gw = Gateway::start(
        BIN,
        &yaml::proxy_all(
            &[slow.addr()],
            "    timeouts:\n      request: 200ms\n    retries:\n      attempts: 0\n",
            "",
        ),
    )
    .await;
    let started = Instant::now();
    let r = HttpClient::http1()
        .get(&gw.url("/slow"))
        .await
        .expect("request");
    let took = started.elapsed();
    r.assert_json_error(504);
    assert!(
        took >= Duration::from_millis(150),
        "answered 504 too early: {took:?}"
    );
    assert!(
        took < Duration::from_millis(2500),
        "504 only after {took:?} (timeout 200ms)"
    );
}

#[tokio::test]
async fn content_length_over_max_body_is_a_json_413() {
    let echo = EchoUpstream::start().await;
    let gw = Gateway::start(
        BIN,
        &yaml::proxy_all(&[echo.addr()], "", "    max_body: 1KiB\n"),
    )
    .await;
    let c = HttpClient::http1();
    let r = c
        .call("POST", &gw.url("/up"), &[], full(vec![b'a'; 1024]))
        .await
        .expect("at the limit");
    assert_eq!(r.status, 200, "exactly max_body is allowed: {}", r.text());
    let r = c
        .call("POST", &gw.url("/up"), &[], full(vec![b'a'; 2048]))
        .await
        .expect("over the limit");
    r.assert_json_error(413);
    assert_eq!(
        echo.requests(),
        1,
        "the oversized request must not reach the upstream"
    );
}

#[tokio::test]
async fn chunked_body_over_max_body_is_a_413_while_streaming() {
    let echo = EchoUpstream::start().await;
    let gw = Gateway::start(
        BIN,
        &yaml::proxy_all(&[echo.addr()], "", "    max_body: 1KiB\n"),
    )
    .await;
    // within the limit, chunked
    let r = HttpClient::http1()
        .call(
            "POST",
            &gw.url("/up"),
            &[],
            slow_body(vec![bytes::Bytes::from(vec![b'a'; 500]); 2], Duration::ZERO),
        )
        .await
        .expect("small chunked");
    assert_eq!(r.status, 200, "{}", r.text());
    // over the limit: 10 chunks of 512 bytes, raw so that an early answer or close is visible
    let mut conn = RawConn::connect(gw.proxy_addr()).await.expect("connect");
    conn.write("POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .expect("head");
    let chunk = format!("200\r\n{}\r\n", "b".repeat(512));
    for _ in 0..10 {
        if conn.write(&chunk).await.is_err() {
            break; // the gateway may answer and close early
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = conn.write("0\r\n\r\n").await;
    let head = conn.read_head(T).await.expect("a response");
    assert_eq!(head.status, 413, "{}", head.text);
    assert_eq!(
        head.header("content-type")
            .map(|c| c.starts_with("application/json")),
        Some(true),
        "{}",
        head.text
    );
    assert!(
        echo.received().iter().all(|r| r.body_len <= 1024),
        "an oversized body reached the upstream"
    );
}

#[tokio::test]
async fn oversized_request_headers_are_a_431() {
    let echo = EchoUpstream::start().await;
    let gw = Gateway::start(
        BIN,
        &format!(
            "server:\n  max_header_size: 4KiB\n{}",
            yaml::proxy_all(&[echo.addr()], "", "")
        ),
    )
    .await;
    let small = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(1000)
    );
    let (head, _) = raw_fetch(gw.proxy_addr(), small, T)
        .await
        .expect("small headers");
    assert_eq!(head.status, 200, "{}", head.text);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(8 * 1024)
    );
    let text = raw_exchange(gw.proxy_addr(), big, T)
        .await
        .expect("big headers");
    assert_eq!(raw_status(&text), Some(431), "{text}");
    assert_eq!(echo.requests(), 1);
}

#[tokio::test]
async fn stalled_request_headers_get_408_or_a_close() {
    let echo = EchoUpstream::start().await;
    let gw = Gateway::start(
        BIN,
        &format!(
            "server:\n  header_read_timeout: 300ms\n{}",
            yaml::proxy_all(&[echo.addr()], "", "")
        ),
    )
    .await;
    let mut conn = RawConn::connect(gw.proxy_addr()).await.expect("connect");
    conn.write("GET / HTTP/1.1\r\nHost: h\r\n")
        .await
        .expect("partial head");
    let started = Instant::now();
    let (got, closed) = conn.read_until_close(Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        closed,
        "connection still open after 5s with a stalled header (timeout 300ms); got {text:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed only after {:?}",
        started.elapsed()
    );
    if !text.is_empty() {
        assert_eq!(raw_status(&text), Some(408), "{text}");
    }
    assert_eq!(echo.requests(), 0);
}

/// RFC 9112 §6.1: a request with both Content-Length and Transfer-Encoding is either refused or
/// framed by Transfer-Encoding alone, and the connection is closed after the response. FlexGate (via
/// hyper) does the latter; what matters for smuggling is that the bytes hidden behind the chunked
/// terminator never become a second request and that the upstream sees one unambiguous framing.
#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_smuggle() {
    let echo = EchoUpstream::start().await;
    let gw = Gateway::start(BIN, &yaml::proxy_all(&[echo.addr()], "", "")).await;
    for req in [
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
    ] {
        let before = echo.requests();
        let text = raw_exchange(gw.proxy_addr(), req, Duration::from_secs(3))
            .await
            .expect("exchange");
        let status = raw_status(&text);
        assert!(
            matches!(status, Some(200 | 400)),
            "request:\n{req}\nresponse:\n{text}"
        );
        assert!(
            text.matches("HTTP/1.1 ").count() == 1,
            "the hidden request was answered too:\n{text}"
        );
        assert!(
            !text.contains("/smuggled"),
            "smuggled request reached the upstream:\n{text}"
        );
        if status == Some(200) {
            assert!(
                text.to_ascii_lowercase().contains("connection: close"),
                "the connection must close after an ambiguous request:\n{text}"
            );
            assert!(
                !text.to_ascii_lowercase().contains("\"content-length\""),
                "upstream saw a Content-Length beside chunked framing:\n{text}"
            );
            assert_eq!(echo.requests(), before + 1);
        } else {
            assert_eq!(echo.requests(), before);
        }
    }
}

#[tokio::test]
async fn differing_duplicate_content_length_is_a_400() {
    let echo = EchoUpstream::start().await;
    let gw = Gateway::start(BIN, &yaml::proxy_all(&[echo.addr()], "", "")).await;
    let req = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
    let text = raw_exchange(gw.proxy_addr(), req, Duration::from_secs(3))
        .await
        .expect("exchange");
    assert_eq!(raw_status(&text), Some(400), "{text}");
    let req = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\nhello!";
    let text = raw_exchange(gw.proxy_addr(), req, Duration::from_secs(3))
        .await
        .expect("exchange");
    assert_eq!(raw_status(&text), Some(400), "{text}");
    assert_eq!(echo.requests(), 0);
}
