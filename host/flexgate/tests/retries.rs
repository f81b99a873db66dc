//! Retries: on connect failure, on a configured status, never for POST, never once a body streamed.

use std::net::SocketAddr;
use std::time::Duration;

use flexgate_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_flexgate");

fn config(targets: &[SocketAddr], retries: &str) -> String {
    // A huge failure threshold keeps a failing target in rotation, so every round exercises retries.
    let extra = format!("    passive_health:\n      connect_failures: 1000000\n{retries}");
    yaml::proxy_all(targets, &extra, "")
}

#[tokio::test]
async fn get_to_a_refused_target_is_retried_on_the_good_one() {
    let good = EchoUpstream::named("good").await;
    let down = RefusedPort::new();
    let gw = Gateway::start(BIN, &config(&[down.addr(), good.addr()], "")).await;
    let c = HttpClient::http1();
    for i in 0..10 {
        let r = c.get(&gw.url("/r")).await.expect("request");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    assert_eq!(good.requests(), 10);
}

const RETRY_503: &str = "    retries:\n      attempts: 1\n      on: [connect_failure, \"503\"]\n";

#[tokio::test]
async fn a_503_is_retried_when_configured() {
    let bad = EchoUpstream::builder()
        .name("bad")
        .status(503)
        .start()
        .await;
    let good = EchoUpstream::named("good").await;
    let gw = Gateway::start(BIN, &config(&[bad.addr(), good.addr()], RETRY_503)).await;
    let c = HttpClient::http1();
    for i in 0..10 {
        let r = c.get(&gw.url("/r")).await.expect("request");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.echo().upstream, "good");
    }
    assert!(
        bad.requests() >= 1,
        "the 503 target was never tried, so nothing was retried"
    );
    assert_eq!(good.requests(), 10);
}

#[tokio::test]
async fn a_503_is_not_retried_without_configuration() {
    let bad = EchoUpstream::builder()
        .name("bad")
        .status(503)
        .start()
        .await;
    let good = EchoUpstream::named("good").await;
    let gw = Gateway::start(BIN, &config(&[bad.addr(), good.addr()], "")).await;
    let c = HttpClient::http1();
    let mut failed = 0;
    for _ in 0..10 {
        if c.get(&gw.url("/r")).await.expect("request").status == 503 {
            failed += 1;
        }
    }
    assert_eq!(failed as u64, bad.requests());
    assert!(failed >= 1);
}

#[tokio::test]
async fn post_is_not_retried_on_503() {
    let bad = EchoUpstream::builder()
        .name("bad")
        .status(503)
        .start()
        .await;
    let good = EchoUpstream::named("good").await;
    let gw = Gateway::start(BIN, &config(&[bad.addr(), good.addr()], RETRY_503)).await;
    let c = HttpClient::http1();
    let mut got_503 = 0u64;
    for _ in 0..10 {
        let r = c
            .call("POST", &gw.url("/r"), &[], full("payload"))
            .await
            .expect("request");
        match r.status.as_u16() {
            200 => {}
            503 => got_503 += 1,
            s => panic!("unexpected status {s}: {}", r.text()),
        }
    }
    assert!(got_503 >= 1, "no POST hit the 503 target");
    assert_eq!(bad.requests(), got_503, "a POST was retried");
    assert_eq!(
        bad.requests() + good.requests(),
        10,
        "a POST was sent twice"
    );
}

#[tokio::test]
async fn a_request_whose_body_streamed_is_never_retried() {
    let bad = EchoUpstream::builder()
        .name("bad")
        .status(503)
        .start()
        .await;
    let good = EchoUpstream::named("good").await;
    let gw = Gateway::start(BIN, &config(&[bad.addr(), good.addr()], RETRY_503)).await;
    let c = HttpClient::http1();
    let mut got_503 = 0u64;
    for _ in 0..6 {
        // PUT is idempotent, so only the streamed body forbids the retry.
        let chunks = vec![
            bytes::Bytes::from_static(b"chunk-1;"),
            bytes::Bytes::from_static(b"chunk-2;"),
        ];
        let body = slow_body(chunks, Duration::from_millis(20));
        let r = c
            .call("PUT", &gw.url("/r"), &[], body)
            .await
            .expect("request");
        match r.status.as_u16() {
            200 => assert_eq!(r.echo().body.as_deref(), Some("chunk-1;chunk-2;")),
            503 => got_503 += 1,
            s => panic!("unexpected status {s}: {}", r.text()),
        }
    }
    assert!(got_503 >= 1, "no PUT hit the 503 target");
    assert_eq!(bad.requests(), got_503, "a streamed PUT was retried");
    assert_eq!(bad.requests() + good.requests(), 6);
    assert!(
        bad.received()
            .iter()
            .all(|r| r.body.as_deref() == Some("chunk-1;chunk-2;"))
    );
}
