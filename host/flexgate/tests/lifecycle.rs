//! Process lifecycle: health endpoints and graceful SIGTERM.

use std::time::{Duration, Instant};

use flexgate_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_flexgate");

#[tokio::test]
async fn health_endpoints_answer_200() {
    let gw = Gateway::start(BIN, "").await;
    let c = HttpClient::http1();
    assert_eq!(
        c.get(&gw.admin_url("/health/live"))
            .await
            .expect("live")
            .status,
        200
    );
    assert_eq!(
        c.get(&gw.admin_url("/health/ready"))
            .await
            .expect("ready")
            .status,
        200
    );
}

#[tokio::test]
async fn sigterm_finishes_in_flight_refuses_new_and_exits_0() {
    let echo = EchoUpstream::start().await;
    let gw = Gateway::start(
        BIN,
        &format!(
            "server:\n  grace_period: 10s\n{}",
            yaml::proxy_all(&[echo.addr()], "", "")
        ),
    )
    .await;
    let url = gw.url("/slow");
    let in_flight = tokio::spawn(async move {
        HttpClient::http1_fresh()
            .call("GET", &url, &[("x-echo-delay-ms", "2000")], empty())
            .await
    });
    assert!(
        eventually(Duration::from_secs(5), || async { echo.requests() == 1 }).await,
        "slow request never arrived"
    );
    let signalled = Instant::now();
    gw.signal(Signal::SIGTERM);

    let refused = eventually(Duration::from_millis(1500), || async {
        tokio::net::TcpStream::connect(gw.proxy_addr())
            .await
            .is_err()
    })
    .await;
    assert!(refused, "new connections still accepted 1.5s after SIGTERM");
    assert!(
        gw.try_wait().is_none(),
        "exited while a request was in flight"
    );

    let r = in_flight
        .await
        .expect("join")
        .expect("the in-flight request must complete");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        signalled.elapsed() >= Duration::from_millis(1500),
        "answered too early?"
    );
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("still running 10s after the drain");
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[tokio::test]
async fn sigterm_when_idle_exits_promptly() {
    let gw = Gateway::start(BIN, "").await;
    gw.signal(Signal::SIGTERM);
    let status = gw
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("idle gateway did not exit within 5s");
    assert_eq!(status.code(), Some(0), "exit status {status}");
}
