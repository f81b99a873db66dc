//! Route matching, precedence, `respond` routes, `strip_prefix` and raw path forwarding.

use flexgate_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_flexgate");

/// A `respond` route answering `body` (its name by default).
fn respond(name: &str, matcher: &str) -> String {
    format!(
        "  - name: {name}\n    match:\n{matcher}    respond:\n      status: 200\n      body: \"{name}\"\n"
    )
}

/// GETs `path` with `Host: host` (and extra headers); returns (status, body).
async fn hit(
    gw: &Gateway,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut h = vec![("host", host)];
    h.extend_from_slice(headers);
    let r = HttpClient::http1()
        .call(method, &gw.url(path), &h, empty())
        .await
        .unwrap_or_else(|e| panic!("{method} {host}{path}: {e}"));
    (r.status.as_u16(), r.text())
}

#[tokio::test]
async fn host_exact_beats_wildcards_which_beat_no_host() {
    // Listed from least to most specific: file order must not decide.
    let routes = [
        respond("nohost", "      path_prefix: /\n"),
        respond("wild", "      host: \"*.example.com\"\n"),
        respond("wild_eu", "      host: \"*.eu.example.com\"\n"),
        respond("exact", "      host: api.example.com\n"),
    ]
    .concat();
    let gw = Gateway::start(BIN, &format!("routes:\n{routes}")).await;
    for (host, want) in [
        ("api.example.com", "exact"),
        ("foo.example.com", "wild"),
        ("a.b.example.com", "wild"),
        ("x.eu.example.com", "wild_eu"),
        ("eu.example.com", "wild"),
        ("example.com", "nohost"),
        ("other.org", "nohost"),
    ] {
        assert_eq!(
            hit(&gw, "GET", host, "/", &[]).await,
            (200, want.to_owned()),
            "Host: {host}"
        );
    }
}

#[tokio::test]
async fn path_prefix_is_segment_aware() {
    let gw = Gateway::start(
        BIN,
        &format!(
            "routes:\n{}",
            respond("users", "      path_prefix: /users\n")
        ),
    )
    .await;
    for path in [
        "/users",
        "/users/",
        "/users/1",
        "/users/1/posts",
        "/users?x=1",
    ] {
        assert_eq!(
            hit(&gw, "GET", "h", path, &[]).await,
            (200, "users".into()),
            "{path}"
        );
    }
    for path in ["/usersx", "/user", "/", "/Users", "/x/users"] {
        assert_eq!(hit(&gw, "GET", "h", path, &[]).await.0, 404, "{path}");
    }
}

#[tokio::test]
async fn exact_path_matches_only_that_path() {
    let gw = Gateway::start(
        BIN,
        &format!("routes:\n{}", respond("exact", "      path: /status\n")),
    )
    .await;
    assert_eq!(
        hit(&gw, "GET", "h", "/status", &[]).await,
        (200, "exact".into())
    );
    assert_eq!(
        hit(&gw, "GET", "h", "/status?verbose=1", &[]).await,
        (200, "exact".into())
    );
    for path in ["/status/1", "/statusx", "/stat", "/"] {
        assert_eq!(hit(&gw, "GET", "h", path, &[]).await.0, 404, "{path}");
    }
}

#[tokio::test]
async fn methods_and_headers_match() {
    let routes = [
        respond("any", "      path_prefix: /m\n"),
        respond(
            "write",
            "      path_prefix: /m\n      methods: [POST, PUT]\n",
        ),
        respond(
            "blue",
            "      path_prefix: /h\n      headers:\n        x-tenant: blue\n",
        ),
        respond(
            "blue_prod",
            "      path_prefix: /h\n      headers:\n        x-tenant: blue\n        x-env: prod\n",
        ),
    ]
    .concat();
    let gw = Gateway::start(BIN, &format!("routes:\n{routes}")).await;
    assert_eq!(hit(&gw, "GET", "h", "/m", &[]).await.1, "any");
    assert_eq!(hit(&gw, "POST", "h", "/m", &[]).await.1, "write");
    assert_eq!(hit(&gw, "PUT", "h", "/m/1", &[]).await.1, "write");
    assert_eq!(hit(&gw, "DELETE", "h", "/m", &[]).await.1, "any");
    assert_eq!(hit(&gw, "GET", "h", "/h", &[]).await.0, 404);
    assert_eq!(
        hit(&gw, "GET", "h", "/h", &[("x-tenant", "red")]).await.0,
        404
    );
    assert_eq!(
        hit(&gw, "GET", "h", "/h", &[("x-tenant", "blue")]).await.1,
        "blue"
    );
    assert_eq!(
        hit(
            &gw,
            "GET",
            "h",
            "/h",
            &[("x-tenant", "blue"), ("x-env", "dev")]
        )
        .await
        .1,
        "blue"
    );
    assert_eq!(
        hit(
            &gw,
            "GET",
            "h",
            "/h",
            &[("x-tenant", "blue"), ("x-env", "prod")]
        )
        .await
        .1,
        "blue_prod"
    );
    assert_eq!(
        hit(
            &gw,
            "GET",
            "h",
            "/h",
            &[("X-Tenant", "blue"), ("X-ENV", "prod")]
        )
        .await
        .1,
        "blue_prod"
    );
}

/// (Host, path, headers, expected route).
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);

#[tokio::test]
async fn most_specific_route_wins() {
    // Every pair is listed less specific first, so file order alone would pick the wrong one.
    let routes = [
        // host beats any path specificity
        respond("nohost_exact_path", "      path: /p\n"),
        respond("host_root", "      host: app.test\n      path_prefix: /\n"),
        // exact path beats a prefix of the same or greater length; longer prefix beats shorter
        respond("prefix_a", "      path_prefix: /a\n"),
        respond("prefix_ab", "      path_prefix: /a/b\n"),
        respond("prefix_abc", "      path_prefix: /a/b/c\n"),
        respond("path_ab", "      path: /a/b\n"),
        // methods beat no methods (same path)
        respond("m_none", "      path: /m\n"),
        respond("m_get", "      path: /m\n      methods: [GET]\n"),
        // more headers beat fewer
        respond(
            "h_one",
            "      path: /h\n      headers:\n        x-a: \"1\"\n",
        ),
        respond(
            "h_two",
            "      path: /h\n      headers:\n        x-a: \"1\"\n        x-b: \"2\"\n",
        ),
        // identical matchers: file order
        respond("first", "      path: /same\n"),
        respond("second", "      path: /same\n"),
        // methods are compared before headers
        respond(
            "hdr_only",
            "      path: /mh\n      headers:\n        x-a: \"1\"\n",
        ),
        respond("meth_only", "      path: /mh\n      methods: [GET]\n"),
    ]
    .concat();
    let gw = Gateway::start(BIN, &format!("routes:\n{routes}")).await;
    let cases: &[Case] = &[
        ("app.test", "/p", &[], "host_root"),
        ("other", "/p", &[], "nohost_exact_path"),
        ("other", "/a/b", &[], "path_ab"),
        ("other", "/a/b/x", &[], "prefix_ab"),
        ("other", "/a/b/c/d", &[], "prefix_abc"),
        ("other", "/a/x", &[], "prefix_a"),
        ("other", "/m", &[], "m_get"),
        ("other", "/h", &[("x-a", "1"), ("x-b", "2")], "h_two"),
        ("other", "/h", &[("x-a", "1")], "h_one"),
        ("other", "/same", &[], "first"),
        ("other", "/mh", &[("x-a", "1")], "meth_only"),
    ];
    for (host, path, headers, want) in cases {
        assert_eq!(
            hit(&gw, "GET", host, path, headers).await,
            (200, (*want).to_owned()),
            "{host}{path} {headers:?}"
        );
    }
    assert_eq!(hit(&gw, "POST", "other", "/m", &[]).await.1, "m_none");
}

#[tokio::test]
async fn no_route_is_a_json_404() {
    let gw = Gateway::start(
        BIN,
        &format!("routes:\n{}", respond("only", "      path: /only\n")),
    )
    .await;
    let c = HttpClient::http1();
    let r = c.get(&gw.url("/nothing/here?x=1")).await.expect("request");
    let v = r.assert_json_error(404);
    if let Some(id) = r.header("x-request-id") {
        assert_eq!(v["request_id"], id, "body and header request ids differ");
    }
    let r = c
        .call(
            "GET",
            &gw.url("/nothing"),
            &[("x-request-id", "client-id-404")],
            empty(),
        )
        .await;
    let v = r.expect("request").assert_json_error(404);
    assert_eq!(v["request_id"], "client-id-404");
}

#[tokio::test]
async fn respond_route_sends_status_headers_and_body() {
    let cfg = r#"
routes:
  - name: teapot
    match:
      path: /tea
    respond:
      status: 418
      headers:
        content-type: text/plain
        x-brewed-by: flexgate
      body: "short and stout"
"#;
    let gw = Gateway::start(BIN, cfg).await;
    let r = HttpClient::http1()
        .get(&gw.url("/tea"))
        .await
        .expect("request");
    assert_eq!(r.status, 418);
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("x-brewed-by"), Some("flexgate"));
    assert_eq!(r.text(), "short and stout");
}

fn proxy_config(echo: &EchoUpstream, routes: &str) -> String {
    format!(
        "upstreams:\n  - name: echo\n    targets:\n      - addr: \"{}\"\nroutes:\n{routes}",
        echo.addr()
    )
}

#[tokio::test]
async fn strip_prefix_removes_the_prefix_only() {
    let echo = EchoUpstream::start().await;
    let routes = "  - name: api\n    match:\n      path_prefix: /api\n    strip_prefix: true\n    upstream: echo\n  - name: keep\n    match:\n      path_prefix: /keep\n    upstream: echo\n";
    let gw = Gateway::start(BIN, &proxy_config(&echo, routes)).await;
    let c = HttpClient::http1();
    for (sent, seen) in [
        ("/api/users/1", "/users/1"),
        ("/api", "/"),
        ("/api/", "/"),
        ("/api?x=1", "/?x=1"),
        ("/api/users?id=%20a&b=c%2F", "/users?id=%20a&b=c%2F"),
        ("/api/a%2Fb", "/a%2Fb"),
        ("/keep/users/1", "/keep/users/1"),
    ] {
        let r = c.get(&gw.url(sent)).await.expect("request");
        assert_eq!(r.status, 200, "{sent}: {}", r.text());
        assert_eq!(r.echo().uri, seen, "{sent}");
    }
}

#[tokio::test]
async fn path_and_query_arrive_byte_identical() {
    let echo = EchoUpstream::start().await;
    let gw = Gateway::start(
        BIN,
        &proxy_config(&echo, "  - name: all\n    upstream: echo\n"),
    )
    .await;
    let c = HttpClient::http1();
    for path in [
        "/a%2Fb?x=%20&y=1",
        "/%7Euser/caf%C3%A9?q=a+b&q=c%26d",
        "/x;matrix=1/y?empty=&flag",
        "/UPPER/%2f%2F?Z=%zz",
    ] {
        let r = c.get(&gw.url(path)).await.expect("request");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.echo().uri, path);
    }
    // and from a raw client, bypassing any client-side normalisation
    let text = raw_exchange(
        gw.proxy_addr(),
        "GET /a%2Fb?x=%20&y=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        std::time::Duration::from_secs(5),
    )
    .await
    .expect("raw");
    assert_eq!(raw_status(&text), Some(200), "{text}");
    assert!(text.contains(r#""uri":"/a%2Fb?x=%20&y=1""#), "{text}");
}

#[tokio::test]
async fn host_matching_ignores_port_case_and_uses_h2_authority() {
    let routes = [
        respond("nohost", "      path_prefix: /\n"),
        respond("wild", "      host: \"*.example.com\"\n"),
        respond("exact", "      host: api.example.com\n"),
    ]
    .concat();
    let gw = Gateway::start(BIN, &format!("routes:\n{routes}")).await;
    for (host, want) in [
        ("api.example.com:8443", "exact"),
        ("API.Example.COM", "exact"),
        ("Foo.Example.com:80", "wild"),
    ] {
        assert_eq!(
            hit(&gw, "GET", host, "/", &[]).await,
            (200, want.to_owned()),
            "Host: {host}"
        );
    }
    // HTTP/2 carries the host in :authority, with no Host header
    for (authority, want) in [("api.example.com", "exact"), ("x.example.com:9", "wild")] {
        let req = request("GET", &format!("http://{authority}/"), &[], empty());
        let r = conn_fetch(gw.proxy_addr(), true, req).await.expect("h2c");
        assert_eq!(
            (r.status.as_u16(), r.text()),
            (200, want.to_owned()),
            ":authority {authority}"
        );
    }
}
