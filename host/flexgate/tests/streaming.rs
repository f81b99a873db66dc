//! Bodies: HEAD, `Expect: 100-continue`, chunked both ways, trailers, and 1 GiB transfers in constant
//! gateway memory.

use std::time::{Duration, Instant};

use flexgate_testkit::http_body_util::BodyExt;
use flexgate_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_flexgate");
const T: Duration = Duration::from_secs(5);
const GIB: u64 = 1 << 30;
const RSS_BUDGET_KIB: u64 = 16 * 1024;

#[tokio::test]
async fn head_passes_content_length_without_a_body() {
    let src = DownloadSource::start().await;
    let gw = Gateway::start(BIN, &yaml::proxy_all(&[src.addr()], "", "")).await;
    let mut conn = RawConn::connect(gw.proxy_addr()).await.expect("connect");
    conn.write("HEAD /bytes/12345 HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .expect("write");
    let head = conn.read_head(T).await.expect("head");
    assert_eq!(head.status, 200, "{}", head.text);
    assert_eq!(
        head.header("content-length"),
        Some("12345"),
        "{}",
        head.text
    );
    // No body may follow: the next response on the same connection must parse cleanly.
    conn.write("GET /bytes/10 HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .expect("write");
    let (head, body) = conn.read_response(T).await.expect("second response");
    assert_eq!(head.status, 200, "{}", head.text);
    assert_eq!(body, pattern::pattern_bytes(10));
}

#[tokio::test]
async fn expect_100_continue_gets_100_then_the_response() {
    let echo = EchoUpstream::start().await;
    let gw = Gateway::start(BIN, &yaml::proxy_all(&[echo.addr()], "", "")).await;
    let mut conn = RawConn::connect(gw.proxy_addr()).await.expect("connect");
    conn.write(
        "POST /upload HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n",
    )
    .await
    .expect("write head");
    let interim = conn
        .read_head(T)
        .await
        .expect("100 Continue before sending the body");
    assert_eq!(interim.status, 100, "{}", interim.text);
    conn.write("hello world").await.expect("write body");
    let (head, body) = conn.read_response(T).await.expect("final response");
    assert_eq!(head.status, 200, "{}", head.text);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["body"], "hello world");
    assert_eq!(v["body_len"], 11);
}

#[tokio::test]
async fn chunked_request_bodies_are_forwarded() {
    let echo = EchoUpstream::start().await;
    let gw = Gateway::start(BIN, &yaml::proxy_all(&[echo.addr()], "", "")).await;
    // raw chunked framing, with a chunk extension
    let (head, body) = raw_fetch(
        gw.proxy_addr(),
        "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        T,
    )
    .await
    .expect("raw chunked");
    assert_eq!(head.status, 200, "{}", head.text);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["body"], "hello world");
    // a streamed body from a client, chunks arriving over time
    let chunks: Vec<bytes::Bytes> = (0..5)
        .map(|i| bytes::Bytes::from(format!("part{i};")))
        .collect();
    let r = HttpClient::http1()
        .call(
            "PUT",
            &gw.url("/c"),
            &[],
            slow_body(chunks, Duration::from_millis(30)),
        )
        .await
        .expect("streamed");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.echo().body.as_deref(),
        Some("part0;part1;part2;part3;part4;")
    );
}

#[tokio::test]
async fn chunked_response_bodies_are_forwarded() {
    let src = DownloadSource::start().await;
    let gw = Gateway::start(BIN, &yaml::proxy_all(&[src.addr()], "", "")).await;
    let n = 3_000_017u64;
    for client in [HttpClient::http1(), HttpClient::h2c()] {
        let r = client
            .get(&gw.url(&format!("/chunked/{n}?chunk=1000")))
            .await
            .expect("download");
        assert_eq!(r.status, 200);
        let mut check = PatternCheck::new();
        check.update(&r.body);
        assert_eq!(check.len(), n);
        assert!(check.ok(), "mismatch at {:?}", check.first_mismatch());
    }
}

#[tokio::test]
async fn upstream_trailers_reach_an_h2_client() {
    let up = TrailersUpstream::start().await;
    let gw = Gateway::start(BIN, &yaml::proxy_all(&[up.addr()], "", "")).await;
    let r = HttpClient::h2c().get(&gw.url("/t")).await.expect("h2c");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), TrailersUpstream::BODY);
    assert_eq!(
        r.trailer("x-checksum"),
        Some("abc123"),
        "trailers: {:?}",
        r.trailers
    );
    assert_eq!(r.trailer("x-trailer-two"), Some("v2"));
}

/// hyper's HTTP/1.1 server sends trailers only when the request had `TE: trailers` and the response
/// declares them in a `Trailer` header, so the gateway has to re-declare the upstream's trailers.
#[tokio::test]
async fn upstream_trailers_reach_an_http11_client_that_sent_te_trailers() {
    let up = TrailersUpstream::start().await;
    let gw = Gateway::start(BIN, &yaml::proxy_all(&[up.addr()], "", "")).await;
    let mut conn = RawConn::connect(gw.proxy_addr()).await.expect("connect");
    conn.write("GET /t HTTP/1.1\r\nHost: h\r\nTE: trailers\r\n\r\n")
        .await
        .expect("write");
    let head = conn.read_head(T).await.expect("head");
    assert_eq!(head.status, 200, "{}", head.text);
    assert_eq!(
        head.header("transfer-encoding"),
        Some("chunked"),
        "{}",
        head.text
    );
    let (body, trailers) = conn.read_chunked(T).await.expect("chunked body");
    assert_eq!(body, TrailersUpstream::BODY.as_bytes());
    let trailers = trailers.to_ascii_lowercase();
    assert!(
        trailers.contains("x-checksum: abc123"),
        "trailer section: {trailers:?}\nhead:\n{}",
        head.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_1gib_streams_in_constant_memory() {
    let sink = UploadSink::start().await;
    let gw = Gateway::start(BIN, &yaml::proxy_all(&[sink.addr()], "", "")).await;
    let c = HttpClient::http1();
    // warm up the connection pools and allocator
    let warm_url = gw.url("/warm");
    let warm = c.call(
        "POST",
        &warm_url,
        &[("content-length", "100000")],
        pattern_body(100_000, 8192),
    );
    assert_eq!(warm.await.expect("warm-up").status, 200);
    let base = gw.rss_kib();
    let started = Instant::now();
    let len = GIB.to_string();
    let url = gw.url("/upload");
    let headers = [("content-length", len.as_str())];
    let upload = c.call("PUT", &url, &headers, pattern_body(GIB, 64 * 1024));
    let (result, peak) = gw
        .sample_rss(
            Duration::from_millis(20),
            tokio::time::timeout(Duration::from_secs(120), upload),
        )
        .await;
    let r = result.expect("upload timed out").expect("upload");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(r.status, 200, "{}", r.text());
    let rep: SinkReport = serde_json::from_slice(&r.body).expect("sink json");
    assert_eq!(rep.bytes, GIB);
    assert!(rep.pattern_ok, "corrupted at byte {:?}", rep.first_mismatch);
    eprintln!(
        "upload: 1 GiB in {secs:.1}s ({:.0} MiB/s), rss {base} KiB -> peak {peak} KiB",
        1024.0 / secs
    );
    assert!(
        peak.saturating_sub(base) < RSS_BUDGET_KIB,
        "gateway RSS grew by {} KiB (base {base}, peak {peak})",
        peak - base
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_1gib_streams_in_constant_memory() {
    let src = DownloadSource::start().await;
    let gw = Gateway::start(BIN, &yaml::proxy_all(&[src.addr()], "", "")).await;
    let c = HttpClient::http1();
    assert_eq!(
        c.get(&gw.url("/bytes/100000"))
            .await
            .expect("warm-up")
            .body
            .len(),
        100_000
    );
    let base = gw.rss_kib();
    let started = Instant::now();
    let url = gw.url(&format!("/bytes/{GIB}"));
    let download = async {
        let resp = c.send(request("GET", &url, &[], empty())).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        let mut check = PatternCheck::new();
        while let Some(frame) = body.frame().await {
            if let Some(d) = frame?.data_ref() {
                check.update(d);
            }
        }
        Ok::<_, BoxError>((status, check))
    };
    let (result, peak) = gw
        .sample_rss(
            Duration::from_millis(20),
            tokio::time::timeout(Duration::from_secs(120), download),
        )
        .await;
    let (status, check) = result.expect("download timed out").expect("download");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(status, 200);
    assert_eq!(check.len(), GIB);
    assert!(check.ok(), "corrupted at byte {:?}", check.first_mismatch());
    eprintln!(
        "download: 1 GiB in {secs:.1}s ({:.0} MiB/s), rss {base} KiB -> peak {peak} KiB",
        1024.0 / secs
    );
    assert!(
        peak.saturating_sub(base) < RSS_BUDGET_KIB,
        "gateway RSS grew by {} KiB (base {base}, peak {peak})",
        peak - base
    );
}
