//! Each first-party plugin's documented behaviour, through the real components and the host
//! (resources, stash, reply conversion, body buffering). Requires `plugins/build.sh`.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use flexgate_plugins::{BodyMode, Chain, Isolation, OnError, RequestOutcome};
use serde_json::json;

async fn chain_of(name: &str, config: serde_json::Value, body: BodyMode) -> Chain {
    let (rt, _reg) = runtime();
    let p = load(&rt, name, Isolation::Pooled);
    single(bind(&p, &config.to_string(), OnError::FailClosed, body).await)
}

fn respond(out: RequestOutcome) -> http::Response<Bytes> {
    match out {
        RequestOutcome::Respond(r) => r,
        RequestOutcome::Continue => panic!("expected a direct response"),
    }
}

#[tokio::test]
async fn rewrite_paths_query_and_redirects() {
    let chain = chain_of(
        "rewrite",
        json!({"rules": [{"match": "^/api/v1/(.*)$", "replace": "/v2/$1"}],
               "query": {"add": {"via": "gw"}, "remove": ["debug"]},
               "redirects": [{"match": "^/old/(.*)$", "location": "https://new.example.com/$1", "status": 308}]}),
        BodyMode::None,
    )
    .await;
    let mut parts = request(
        "GET",
        "http://api.example.com/api/v1/users/7?debug=1&x=2",
        &[],
    );
    let out = chain.on_request(&ctx(), &mut parts, None).await.unwrap();
    assert!(matches!(out, RequestOutcome::Continue));
    assert_eq!(
        parts.uri.to_string(),
        "http://api.example.com/v2/users/7?x=2&via=gw"
    );
    let mut parts = request("GET", "/old/a?q=1", &[]);
    let r = respond(chain.on_request(&ctx(), &mut parts, None).await.unwrap());
    assert_eq!(r.status(), 308);
    assert_eq!(
        header(r.headers(), "location").as_deref(),
        Some("https://new.example.com/a?q=1")
    );
    assert_eq!(header(r.headers(), "content-length").as_deref(), Some("0"));
}

#[tokio::test]
async fn cors_preflight_and_actual_request() {
    let chain = chain_of(
        "cors",
        json!({"allowed_origins": ["https://*.example.com"], "allowed_methods": ["GET", "PUT"],
               "allow_credentials": true, "max_age": 120}),
        BodyMode::None,
    )
    .await;
    let mut parts = request(
        "OPTIONS",
        "/x",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "content-type"),
        ],
    );
    let r = respond(chain.on_request(&ctx(), &mut parts, None).await.unwrap());
    assert_eq!(r.status(), 204);
    assert_eq!(
        header(r.headers(), "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(r.headers(), "access-control-allow-headers").as_deref(),
        Some("content-type")
    );
    assert_eq!(
        header(r.headers(), "access-control-max-age").as_deref(),
        Some("120")
    );
    // Actual request: on_request stashes the origin, on_response (same CallCtx) decorates.
    let c = ctx();
    let mut parts = request("GET", "/x", &[("origin", "https://app.example.com")]);
    assert!(matches!(
        chain.on_request(&c, &mut parts, None).await.unwrap(),
        RequestOutcome::Continue
    ));
    let mut resp = response(200, &[]);
    chain.on_response(&c, &mut resp, None).await.unwrap();
    assert_eq!(
        header(&resp.headers, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(&resp.headers, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert_eq!(header(&resp.headers, "vary").as_deref(), Some("Origin"));
}

#[tokio::test]
async fn jwt_auth_accepts_and_rejects() {
    let secret = "0123456789abcdef-secret";
    let chain = chain_of(
        "jwt-auth",
        json!({"secret": secret, "issuer": "iss-1", "forward_claims": {"sub": "x-user"}}),
        BodyMode::None,
    )
    .await;
    let exp = jsonwebtoken::get_current_timestamp() + 60;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "alice", "iss": "iss-1", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let auth = format!("Bearer {token}");
    let mut parts = request(
        "GET",
        "/",
        &[("authorization", auth.as_str()), ("x-user", "forged")],
    );
    assert!(matches!(
        chain.on_request(&ctx(), &mut parts, None).await.unwrap(),
        RequestOutcome::Continue
    ));
    assert_eq!(header(&parts.headers, "x-user").as_deref(), Some("alice"));
    for bad in [
        None,
        Some("Bearer abc.def.ghi"),
        Some(&auth[..auth.len() - 2]),
    ] {
        let h: Vec<(&str, &str)> = bad.map(|b| ("authorization", b)).into_iter().collect();
        let mut parts = request("GET", "/", &h);
        let r = respond(chain.on_request(&ctx(), &mut parts, None).await.unwrap());
        assert_eq!(r.status(), 401);
        assert!(
            header(r.headers(), "www-authenticate")
                .unwrap()
                .starts_with("Bearer realm=\"flexgate\"")
        );
        assert_eq!(body_json(r.body())["error"], "unauthorized");
    }
}

#[tokio::test]
async fn json_redact_needs_body_buffer() {
    let cfg = json!({"request": {"remove": ["password"]}, "response": {"mask": ["user.email"]}});
    let chain = chain_of("json-redact", cfg.clone(), BodyMode::Buffer).await;
    assert!(chain.buffers_request_body() && chain.buffers_response_body());
    let c = ctx();
    let mut parts = request(
        "POST",
        "/",
        &[
            ("content-type", "application/json"),
            ("content-length", "30"),
        ],
    );
    let mut body = Bytes::from(json!({"name": "a", "password": "p"}).to_string());
    chain
        .on_request(&c, &mut parts, Some(&mut body))
        .await
        .unwrap();
    assert_eq!(body_json(&body), json!({"name": "a"}));
    assert_eq!(
        header(&parts.headers, "content-length"),
        Some(body.len().to_string())
    );
    let mut resp = response(200, &[("content-type", "application/json")]);
    let mut rbody = Bytes::from(json!({"user": {"email": "a@b", "id": 1}}).to_string());
    chain
        .on_response(&c, &mut resp, Some(&mut rbody))
        .await
        .unwrap();
    assert_eq!(
        body_json(&rbody),
        json!({"user": {"email": "***", "id": 1}})
    );

    // Without `body: buffer` the plugin sees no body and changes nothing.
    let chain = chain_of("json-redact", cfg, BodyMode::None).await;
    assert!(!chain.buffers_request_body());
    let original = Bytes::from(json!({"password": "p"}).to_string());
    let mut body = original.clone();
    let mut parts = request("POST", "/", &[("content-type", "application/json")]);
    chain
        .on_request(&ctx(), &mut parts, Some(&mut body))
        .await
        .unwrap();
    assert_eq!(body, original);
}

#[tokio::test]
async fn responder_short_circuits_later_plugins_and_earlier_see_reply() {
    let (rt, _reg) = runtime();
    let headers = load(&rt, "headers", Isolation::Pooled);
    let cors = load(&rt, "cors", Isolation::Pooled);
    let first = bind(
        &headers,
        r#"{"response":{"set":{"x-first":"1"}}}"#,
        OnError::FailClosed,
        BodyMode::None,
    )
    .await;
    let second = bind(
        &cors,
        r#"{"allowed_origins":["*"]}"#,
        OnError::FailClosed,
        BodyMode::None,
    )
    .await;
    let third = bind(
        &headers,
        r#"{"request":{"set":{"x-third":"1"}},"response":{"set":{"x-third":"1"}}}"#,
        OnError::FailClosed,
        BodyMode::None,
    )
    .await;
    let chain = Chain::new(vec![
        std::sync::Arc::new(first),
        std::sync::Arc::new(second),
        std::sync::Arc::new(third),
    ]);
    let c = ctx();
    let mut parts = request(
        "OPTIONS",
        "/",
        &[
            ("origin", "https://a.io"),
            ("access-control-request-method", "GET"),
        ],
    );
    let r = respond(chain.on_request(&c, &mut parts, None).await.unwrap());
    assert_eq!(
        header(&parts.headers, "x-third"),
        None,
        "later plugin skipped"
    );
    let (mut rparts, body) = r.into_parts();
    let mut body = body;
    chain
        .on_response(&c, &mut rparts, Some(&mut body))
        .await
        .unwrap();
    assert_eq!(header(&rparts.headers, "x-first").as_deref(), Some("1"));
    assert_eq!(header(&rparts.headers, "x-third"), None);
}

#[tokio::test]
async fn cli_test_plugin_reports_changes() {
    let dist = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/dist/headers.wasm");
    let _ = wasm("headers");
    let report = flexgate_plugins::test_plugin(
        &dist,
        r#"{"request":{"set":{"x-id":"${request_id}"},"remove":["cookie"]},"response":{"set":{"server":"fg"}}}"#,
        r#"{"method":"GET","path":"/a","headers":{"cookie":"c=1","accept":["a","b"]},"request_id":"r-9"}"#,
        Some(r#"{"status":200,"headers":{"server":"nginx"},"body":"ok"}"#),
    )
    .await
    .unwrap();
    assert!(report.contains("on_request: CONTINUE"), "{report}");
    assert!(report.contains("+ x-id: r-9"), "{report}");
    assert!(report.contains("- cookie"), "{report}");
    assert!(report.contains("~ server: nginx -> fg"), "{report}");
    let bad = flexgate_plugins::test_plugin(&dist, r#"{"bogus":1}"#, "{}", None).await;
    assert!(bad.is_err());
}
