//! Header handling: hop-by-hop removal both ways, X-Forwarded-*, Via, X-Request-Id, Host, Set-Cookie.

use std::time::Duration;

use flexgate_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_flexgate");
const T: Duration = Duration::from_secs(5);

async fn gateway_to(echo: &EchoUpstream, route_extra: &str) -> Gateway {
    Gateway::start(BIN, &yaml::proxy_all(&[echo.addr()], "", route_extra)).await
}

/// A raw HTTP/1.1 request through the gateway; returns what the echo upstream saw.
async fn raw_echo(gw: &Gateway, request: &str) -> (RawHead, EchoReport) {
    let (head, body) = raw_fetch(gw.proxy_addr(), request, T)
        .await
        .expect("raw request");
    assert_eq!(
        head.status,
        200,
        "{}{}",
        head.text,
        String::from_utf8_lossy(&body)
    );
    let v: serde_json::Value = serde_json::from_slice(&body).expect("echo json");
    (head, EchoReport::from_json(&v).expect("echo report"))
}

/// All values of a (possibly repeated) header joined as one list, the way HTTP defines them.
fn joined(values: &[&str]) -> String {
    values.join(", ")
}

#[tokio::test]
async fn hop_by_hop_request_headers_are_removed() {
    let echo = EchoUpstream::start().await;
    let gw = gateway_to(&echo, "").await;
    let (_, seen) = raw_echo(
        &gw,
        "GET /h HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive, X-Drop-Me\r\nX-Drop-Me: 1\r\n\
         Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: gzip\r\nTrailer: x-foo\r\n\
         Proxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Authenticate: Basic\r\nX-Keep-Me: yes\r\n\
         Connection: close\r\n\r\n",
    )
    .await;
    for name in [
        "x-drop-me",
        "keep-alive",
        "proxy-connection",
        "trailer",
        "proxy-authorization",
        "proxy-authenticate",
    ] {
        assert!(
            !seen.has_header(name),
            "{name} reached the upstream: {:?}",
            seen.headers
        );
    }
    for c in seen.header_all("connection") {
        let c = c.to_ascii_lowercase();
        assert!(
            !c.contains("x-drop-me") && !c.contains("keep-alive"),
            "connection: {c}"
        );
    }
    // A proxy may send its own `TE: trailers`; it must not forward the client's TE.
    assert!(
        seen.header_all("te")
            .iter()
            .all(|v| v.eq_ignore_ascii_case("trailers")),
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.header("x-keep-me"), Some("yes"));
}

#[tokio::test]
async fn upgrade_header_is_removed_when_not_upgrading() {
    let echo = EchoUpstream::start().await;
    let gw = gateway_to(&echo, "").await;
    let (_, seen) = raw_echo(
        &gw,
        "GET /u HTTP/1.1\r\nHost: app.test\r\nUpgrade: foo/1.0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(!seen.has_header("upgrade"), "{:?}", seen.headers);
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_removed_and_set_cookies_kept() {
    let echo = EchoUpstream::builder()
        .header("connection", "x-custom")
        .header("x-custom", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("proxy-authenticate", "Basic realm=\"x\"")
        .header("upgrade", "foo/1.0")
        .header("trailer", "x-t")
        .header("transfer-encoding", "chunked")
        .header("set-cookie", "a=1; Path=/")
        .header("set-cookie", "b=2; HttpOnly")
        .header("x-normal", "ok")
        .start()
        .await;
    let gw = gateway_to(&echo, "").await;
    let (head, body) = raw_fetch(
        gw.proxy_addr(),
        "GET / HTTP/1.1\r\nHost: app.test\r\n\r\n",
        T,
    )
    .await
    .expect("request");
    assert_eq!(head.status, 200, "{}", head.text);
    for name in [
        "x-custom",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "upgrade",
        "trailer",
    ] {
        assert!(
            head.header(name).is_none(),
            "{name} reached the client:\n{}",
            head.text
        );
    }
    for (k, v) in &head.headers {
        if k == "connection" {
            assert!(
                !v.to_ascii_lowercase().contains("x-custom"),
                "{}",
                head.text
            );
        }
        // The gateway frames the body itself: chunked once at most, never the upstream's TE verbatim
        // next to a content-length.
        if k == "transfer-encoding" {
            assert!(v.eq_ignore_ascii_case("chunked"), "{}", head.text);
            assert!(head.header("content-length").is_none(), "{}", head.text);
        }
    }
    let cookies: Vec<&str> = head
        .headers
        .iter()
        .filter(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        cookies,
        vec!["a=1; Path=/", "b=2; HttpOnly"],
        "{}",
        head.text
    );
    assert_eq!(head.header("x-normal"), Some("ok"));
    // and the body made it intact
    let v: serde_json::Value = serde_json::from_slice(&body).expect("echo json");
    assert_eq!(v["uri"], "/");
}

#[tokio::test]
async fn x_forwarded_headers_and_via_are_added() {
    let echo = EchoUpstream::start().await;
    let gw = gateway_to(&echo, "").await;
    let (_, seen) = raw_echo(
        &gw,
        "GET /f HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(joined(&seen.header_all("x-forwarded-for")), "127.0.0.1");
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("app.test"));
    assert_eq!(joined(&seen.header_all("via")), "1.1 flexgate");

    let (_, seen) = raw_echo(
        &gw,
        "GET /f HTTP/1.1\r\nHost: app.test:8443\r\nX-Forwarded-For: 1.2.3.4\r\nVia: 1.0 fred\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        joined(&seen.header_all("x-forwarded-for")),
        "1.2.3.4, 127.0.0.1"
    );
    assert_eq!(joined(&seen.header_all("via")), "1.0 fred, 1.1 flexgate");
    assert_eq!(seen.header("x-forwarded-host"), Some("app.test:8443"));
}

#[tokio::test]
async fn h2_client_gets_via_2_and_authority_as_host() {
    let echo = EchoUpstream::start().await;
    let gw = gateway_to(&echo, "").await;
    let r = conn_fetch(
        gw.proxy_addr(),
        true,
        request("GET", "http://app.test/h2?q=1", &[], empty()),
    )
    .await
    .expect("h2c request");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.version, http::Version::HTTP_2);
    let seen = r.echo();
    assert_eq!(seen.uri, "/h2?q=1");
    assert_eq!(joined(&seen.header_all("via")), "2 flexgate");
    assert_eq!(seen.header("host"), Some("app.test"));
    assert_eq!(seen.header("x-forwarded-host"), Some("app.test"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(joined(&seen.header_all("x-forwarded-for")), "127.0.0.1");
}

#[tokio::test]
async fn request_id_is_kept_or_generated_and_returned() {
    let echo = EchoUpstream::start().await;
    let gw = gateway_to(&echo, "").await;
    let c = HttpClient::http1();
    let r = c
        .call(
            "GET",
            &gw.url("/id"),
            &[("x-request-id", "my-id-123")],
            empty(),
        )
        .await
        .expect("req");
    assert_eq!(r.echo().header_all("x-request-id"), vec!["my-id-123"]);
    assert_eq!(r.header("x-request-id"), Some("my-id-123"));

    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = c.get(&gw.url("/id")).await.expect("req");
        let upstream_saw = r
            .echo()
            .header("x-request-id")
            .map(str::to_owned)
            .expect("generated id upstream");
        assert!(!upstream_saw.is_empty());
        assert_eq!(
            r.header("x-request-id"),
            Some(upstream_saw.as_str()),
            "returned to the client"
        );
        ids.push(upstream_saw);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "generated ids are unique: {ids:?}");
}

#[tokio::test]
async fn host_is_preserved_by_default() {
    let echo = EchoUpstream::start().await;
    let gw = gateway_to(&echo, "").await;
    let r = HttpClient::http1()
        .call("GET", &gw.url("/"), &[("host", "app.test")], empty())
        .await
        .expect("req");
    assert_eq!(r.echo().header_all("host"), vec!["app.test"]);
}

#[tokio::test]
async fn preserve_host_false_sends_the_target_address() {
    let echo = EchoUpstream::start().await;
    let gw = gateway_to(&echo, "    preserve_host: false\n").await;
    let r = HttpClient::http1()
        .call("GET", &gw.url("/"), &[("host", "app.test")], empty())
        .await
        .expect("req");
    let seen = r.echo();
    assert_eq!(seen.header_all("host"), vec![echo.addr().to_string()]);
    assert_eq!(seen.header("x-forwarded-host"), Some("app.test"));
}

/// `Connection` may arrive as several header lines; every name listed in any of them is hop-by-hop.
#[tokio::test]
async fn headers_named_in_any_connection_line_are_removed_both_ways() {
    let echo = EchoUpstream::builder()
        .header("connection", "x-resp-one")
        .header("connection", "x-resp-two")
        .header("x-resp-one", "1")
        .header("x-resp-two", "2")
        .start()
        .await;
    let gw = gateway_to(&echo, "").await;
    let (head, body) = raw_fetch(
        gw.proxy_addr(),
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: x-req-one\r\nConnection: x-req-two\r\n\
         X-Req-One: 1\r\nX-Req-Two: 2\r\nConnection: close\r\n\r\n",
        T,
    )
    .await
    .expect("request");
    assert_eq!(head.status, 200, "{}", head.text);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("echo json");
    let seen = EchoReport::from_json(&v).expect("echo report");
    assert!(!seen.has_header("x-req-one"), "{:?}", seen.headers);
    assert!(!seen.has_header("x-req-two"), "{:?}", seen.headers);
    assert!(head.header("x-resp-one").is_none(), "{}", head.text);
    assert!(head.header("x-resp-two").is_none(), "{}", head.text);
}

/// Several `X-Forwarded-For` / `Via` lines form one list: none of the incoming entries may be lost.
#[tokio::test]
async fn repeated_forwarding_header_lines_are_all_kept() {
    let echo = EchoUpstream::start().await;
    let gw = gateway_to(&echo, "").await;
    let (_, seen) = raw_echo(
        &gw,
        "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8, 9.9.9.9\r\n\
         Via: 1.0 fred\r\nVia: 1.1 wilma\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        joined(&seen.header_all("x-forwarded-for")),
        "1.2.3.4, 5.6.7.8, 9.9.9.9, 127.0.0.1"
    );
    assert_eq!(
        joined(&seen.header_all("via")),
        "1.0 fred, 1.1 wilma, 1.1 flexgate"
    );
}
