//! HTTP/2 (h2c prior knowledge) and TLS with ALPN h2 and http/1.1.

use flexgate_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_flexgate");

#[tokio::test]
async fn h2c_prior_knowledge_works() {
    let echo = EchoUpstream::start().await;
    let gw = Gateway::start(BIN, &yaml::proxy_all(&[echo.addr()], "", "")).await;
    let c = HttpClient::h2c();
    for i in 0..3 {
        let r = c
            .call(
                "POST",
                &gw.url(&format!("/h2/{i}?q=%20")),
                &[("x-req", "1")],
                full("h2 body"),
            )
            .await
            .expect("h2c request");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.version, http::Version::HTTP_2);
        let seen = r.echo();
        assert_eq!(seen.uri, format!("/h2/{i}?q=%20"));
        assert_eq!(seen.body.as_deref(), Some("h2 body"));
        assert_eq!(seen.header("x-req"), Some("1"));
        assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    }
    // many concurrent streams on one connection
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let c = c.clone();
            let url = gw.url(&format!("/c/{i}"));
            tokio::spawn(async move { c.get(&url).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("join").expect("request").status, 200);
    }
}

async fn tls_gateway(echo: &EchoUpstream, certs: &TestCerts) -> Gateway {
    Gateway::builder(BIN)
        .tls(certs)
        .config(yaml::proxy_all(&[echo.addr()], "", ""))
        .start()
        .await
}

#[tokio::test]
async fn tls_with_alpn_h2_works() {
    let echo = EchoUpstream::start().await;
    let certs = TestCerts::generate();
    let gw = tls_gateway(&echo, &certs).await;
    let req = request("GET", &gw.https_url("/secure?x=1"), &[], empty());
    let (r, alpn) = tls_fetch(gw.proxy_addr(), &certs, true, req)
        .await
        .expect("TLS h2 request");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "ALPN");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.version, http::Version::HTTP_2);
    let seen = r.echo();
    assert_eq!(seen.uri, "/secure?x=1");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header_all("via").join(", "), "2 flexgate");
}

#[tokio::test]
async fn tls_with_http11_works() {
    let echo = EchoUpstream::start().await;
    let certs = TestCerts::generate();
    let gw = tls_gateway(&echo, &certs).await;
    let req = request(
        "POST",
        &gw.https_url("/secure"),
        &[("host", "app.test")],
        full("over tls"),
    );
    let (r, alpn) = tls_fetch(gw.proxy_addr(), &certs, false, req)
        .await
        .expect("TLS http/1.1 request");
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]), "ALPN");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.version, http::Version::HTTP_11);
    let seen = r.echo();
    assert_eq!(seen.body.as_deref(), Some("over tls"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("app.test"));
    assert_eq!(seen.header_all("via").join(", "), "1.1 flexgate");
}

#[tokio::test]
async fn tls_listener_refuses_plaintext() {
    let echo = EchoUpstream::start().await;
    let certs = TestCerts::generate();
    let gw = tls_gateway(&echo, &certs).await;
    let r = raw_exchange(
        gw.proxy_addr(),
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        std::time::Duration::from_secs(3),
    )
    .await;
    if let Ok(text) = r {
        assert_ne!(
            raw_status(&text),
            Some(200),
            "plaintext HTTP served on the TLS port"
        );
    }
    assert_eq!(echo.requests(), 0);
}

#[tokio::test]
async fn upstream_protocol_h2_speaks_h2c_to_the_target() {
    let echo = EchoUpstream::start().await;
    let gw = Gateway::start(
        BIN,
        &yaml::proxy_all(&[echo.addr()], "    protocol: h2\n", ""),
    )
    .await;
    for client in [HttpClient::http1(), HttpClient::h2c()] {
        let r = client
            .call("POST", &gw.url("/up/h2?x=%20"), &[], full("to h2"))
            .await
            .expect("request");
        assert_eq!(r.status, 200, "{}", r.text());
        let seen = r.echo();
        assert_eq!(seen.version, "HTTP/2.0");
        assert_eq!(seen.uri, "/up/h2?x=%20");
        assert_eq!(seen.body.as_deref(), Some("to h2"));
    }
    assert_eq!(echo.connections(), 1, "one multiplexed upstream connection");
}
