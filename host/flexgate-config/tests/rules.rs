//! One case per semantic rule: a small config with exactly one mistake, the path it must be
//! reported at and a fragment of the message.
#![allow(clippy::unwrap_used)]

use flexgate_config::*;

/// A valid config with one upstream `u`, one plugin `p` (its source is this crate's Cargo.toml,
/// which exists relative to the test's working directory) and one route `r`. `{U}` is spliced into
/// the upstream, `{R}` into the route and `{T}` at the top level.
const BASE: &str = r#"version: 1
{T}
plugins:
  - name: p
    source: Cargo.toml
upstreams:
  - name: u
    targets: [{ addr: "127.0.0.1:9001" }]
{U}
routes:
  - name: r
{R}
"#;

fn config(top: &str, upstream: &str, route: &str) -> String {
    let indent = |s: &str, n: usize| {
        s.lines()
            .map(|l| format!("{}{l}\n", " ".repeat(n)))
            .collect::<String>()
    };
    let route = if route.contains("upstream:") || route.contains("respond:") {
        route.to_owned()
    } else {
        format!("upstream: u\n{route}")
    };
    BASE.replace("{T}", top)
        .replace("{U}", &indent(upstream, 4))
        .replace("{R}", &indent(&route, 4))
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text, "t.yaml") {
        Ok(_) => Vec::new(),
        Err(e) => e.problems,
    }
}

/// Exactly one problem, at `path`, whose message contains `fragment`.
fn expect(top: &str, upstream: &str, route: &str, path: &str, fragment: &str) {
    let text = config(top, upstream, route);
    let got = problems(&text);
    assert!(
        got.len() == 1 && got[0].path == path && got[0].message.contains(fragment),
        "expected one problem at {path} containing {fragment:?}, got {got:#?}\nin:\n{text}"
    );
    let p = &got[0];
    assert!(p.line >= 1 && p.column >= 1);
}

#[test]
fn base_is_valid() {
    let text = config("", "", "");
    assert_eq!(problems(&text), [], "{text}");
    let c = parse(&text, "t.yaml").unwrap();
    assert!(c.plugins[0].source.as_ref().unwrap().is_absolute());
}

#[test]
fn top_level_rules() {
    let cases = [
        (
            "listen: 0.0.0.0:8081\nadmin: { listen: 127.0.0.1:8081 }",
            "admin.listen",
            "conflicts with `listen`",
        ),
        (
            "metrics: { listen: 127.0.0.1:8080 }",
            "metrics.listen",
            "conflicts with `listen`",
        ),
        (
            "redis: { url: \"http://localhost:6379\" }",
            "redis.url",
            "redis://",
        ),
        (
            "tls: { cert: Cargo.toml, key: no-such-key.pem }",
            "tls.key",
            "file not found",
        ),
        (
            "log: { level: info, colour: true }",
            "log.colour",
            "unknown field `colour`",
        ),
    ];
    for (top, path, fragment) in cases {
        let text = config(top, "", "");
        let got = problems(&text);
        assert!(
            got.len() == 1 && got[0].path == path && got[0].message.contains(fragment),
            "{top}: {got:#?}"
        );
    }
    let got = problems(&config("", "", "").replace("version: 1", "version: 2"));
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].path.as_str(), got[0].line), ("version", 1));
    // Port 0 (pick any) never conflicts.
    let ok = config(
        "listen: 0.0.0.0:0\nadmin: { listen: 127.0.0.1:0 }\nmetrics: { listen: 0.0.0.0:0 }",
        "",
        "",
    );
    assert_eq!(problems(&ok), []);
}

#[test]
fn name_rules() {
    let bad = config("", "", "")
        .replace("name: u\n", "name: \"-u\"\n")
        .replace("upstream: u", "upstream: \"-u\"");
    let got = problems(&bad);
    assert!(
        got.len() == 1
            && got[0].path == "upstreams[0].name"
            && got[0].message.contains("invalid name"),
        "{got:#?}"
    );
    let dup = format!("{}  - name: r\n    upstream: u\n", config("", "", ""));
    let got = problems(&dup);
    assert!(
        got.len() == 1 && got[0].path == "routes[1].name" && got[0].message.contains("duplicate"),
        "{got:#?}"
    );
    let dup = config("", "", "").replace(
        "upstreams:",
        "  - name: p\n    source: Cargo.toml\nupstreams:",
    );
    let got = problems(&dup);
    assert!(
        got.len() == 1 && got[0].path == "plugins[1].name",
        "{got:#?}"
    );
}

#[test]
fn upstream_rules() {
    let cases = [
        (
            "load_balancing: least_requests\nhash_key: header:x-user",
            "upstreams[0].hash_key",
            "consistent_hash",
        ),
        (
            "health_check: { path: healthz }",
            "upstreams[0].health_check.path",
            "start with `/`",
        ),
        (
            "health_check: { path: /h, healthy: 0 }",
            "upstreams[0].health_check.healthy",
            "at least 1",
        ),
        (
            "health_check: { path: /h, unhealthy: 0 }",
            "upstreams[0].health_check.unhealthy",
            "at least 1",
        ),
        (
            "circuit_breaker: { open_for: 1s }",
            "upstreams[0].circuit_breaker",
            "consecutive_failures",
        ),
        (
            "circuit_breaker: { consecutive_failures: 0 }",
            "upstreams[0].circuit_breaker.consecutive_failures",
            "at least 1",
        ),
        (
            "circuit_breaker: { failure_rate: { threshold: 1.5, window: 10s, min_requests: 5 } }",
            "upstreams[0].circuit_breaker.failure_rate.threshold",
            "at most 1",
        ),
        (
            "circuit_breaker: { failure_rate: { threshold: 0, window: 10s, min_requests: 5 } }",
            "upstreams[0].circuit_breaker.failure_rate.threshold",
            "greater than 0",
        ),
        (
            "circuit_breaker: { failure_rate: { threshold: 0.5, window: 10s, min_requests: 0 } }",
            "upstreams[0].circuit_breaker.failure_rate.min_requests",
            "at least 1",
        ),
        (
            "circuit_breaker: { failure_rate: { threshold: 0.5, window: 0s, min_requests: 1 } }",
            "upstreams[0].circuit_breaker.failure_rate.window",
            "greater than 0",
        ),
        (
            "circuit_breaker: { consecutive_failures: 3, open_for: 5m, max_open_for: 1m }",
            "upstreams[0].circuit_breaker.open_for",
            "max_open_for",
        ),
        (
            "circuit_breaker: { consecutive_failures: 3, half_open_probes: 0 }",
            "upstreams[0].circuit_breaker.half_open_probes",
            "at least 1",
        ),
        (
            "circuit_breaker: { consecutive_failures: 3, failure_on: [\"6xx\"] }",
            "upstreams[0].circuit_breaker.failure_on[0]",
            "invalid failure condition",
        ),
        (
            "retries: { on: [\"700\"] }",
            "upstreams[0].retries.on[0]",
            "100 to 599",
        ),
        (
            "timeouts: { request: 0s }",
            "upstreams[0].timeouts.request",
            "greater than 0",
        ),
        (
            "max_in_flight: 0",
            "upstreams[0].max_in_flight",
            "at least 1",
        ),
    ];
    for (upstream, path, fragment) in cases {
        expect("", upstream, "", path, fragment);
    }
    let targets = [
        ("[]", "upstreams[0].targets", "at least one target"),
        (
            "[{ addr: localhost }]",
            "upstreams[0].targets[0].addr",
            "host:port",
        ),
        (
            "[{ addr: \"localhost:70000\" }]",
            "upstreams[0].targets[0].addr",
            "invalid port",
        ),
        (
            "[{ addr: \"localhost:0\" }]",
            "upstreams[0].targets[0].addr",
            "invalid port",
        ),
        (
            "[{ addr: \"bad host:80\" }]",
            "upstreams[0].targets[0].addr",
            "invalid host",
        ),
        (
            "[{ addr: \"a:1\", weight: 0 }]",
            "upstreams[0].targets[0].weight",
            "1 to 10000",
        ),
        (
            "[{ addr: \"a:1\", weight: 10001 }]",
            "upstreams[0].targets[0].weight",
            "1 to 10000",
        ),
        (
            "[{ addr: \"a:1\" }, { addr: \"a:1\" }]",
            "upstreams[0].targets[1].addr",
            "duplicate target",
        ),
    ];
    for (targets, path, fragment) in targets {
        let text = config("", "", "").replace("[{ addr: \"127.0.0.1:9001\" }]", targets);
        let got = problems(&text);
        assert!(
            got.len() == 1 && got[0].path == path && got[0].message.contains(fragment),
            "{targets}: {got:#?}"
        );
    }
    let ok = config(
        "",
        "load_balancing: consistent_hash\nhash_key: header:X-User",
        "",
    );
    let ok = ok.replace(
        "[{ addr: \"127.0.0.1:9001\" }]",
        "[{ addr: \"[::1]:80\" }, { addr: \"svc_a.internal:8080\", weight: 10000 }]",
    );
    let c = parse(&ok, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.upstreams[0].hash_key,
        Some(KeySource::Header("x-user".into()))
    );
}

#[test]
fn route_rules() {
    let cases = [
        (
            "upstream: u\nrespond: { status: 200 }",
            "routes[0]",
            "not both",
        ),
        (
            "upstream: users2",
            "routes[0].upstream",
            "unknown upstream \"users2\"",
        ),
        (
            "match: { host: \"bad_host!\" }",
            "routes[0].match.host",
            "invalid host",
        ),
        (
            "match: { host: \"*.\" }",
            "routes[0].match.host",
            "invalid host",
        ),
        (
            "match: { path_prefix: users }",
            "routes[0].match.path_prefix",
            "start with `/`",
        ),
        (
            "match: { path: users }",
            "routes[0].match.path",
            "start with `/`",
        ),
        (
            "match: { path: /a, path_prefix: /b }",
            "routes[0].match.path",
            "not both",
        ),
        (
            "match: { methods: [GET, \"GE T\"] }",
            "routes[0].match.methods[1]",
            "invalid HTTP method",
        ),
        (
            "match: { headers: { \"bad header\": x } }",
            "routes[0].match.headers.bad header",
            "invalid header name",
        ),
        (
            "match: { hots: a.com }",
            "routes[0].match.hots",
            "unknown field `hots`",
        ),
        (
            "respond: { status: 700 }",
            "routes[0].respond.status",
            "100 to 599",
        ),
        (
            "respond: { headers: { \"x-a\": \"a\\nb\" } }",
            "routes[0].respond.headers.x-a",
            "invalid header value",
        ),
        (
            "respond: { headers: { \"x a\": b } }",
            "routes[0].respond.headers.x a",
            "invalid header name",
        ),
        (
            "rate_limit: { rate: 10/s, store: redis }",
            "routes[0].rate_limit.store",
            "requires a top-level \"redis\" section",
        ),
        (
            "rate_limit: { rate: 0/s }",
            "routes[0].rate_limit.rate",
            "at least one request",
        ),
        (
            "rate_limit: { rate: 10/s, key: \"header:a b\" }",
            "routes[0].rate_limit.key",
            "invalid header name",
        ),
        (
            "rate_limit: { rate: 10/s, burst: -1 }",
            "routes[0].rate_limit.burst",
            "invalid value",
        ),
        (
            "plugins: [{ use: q }]",
            "routes[0].plugins[0].use",
            "unknown plugin \"q\"",
        ),
        ("max_body: 10 parsecs", "routes[0].max_body", "invalid size"),
    ];
    for (route, path, fragment) in cases {
        expect("", "", route, path, fragment);
    }
    let neither = config("", "", "").replace("    upstream: u\n", "    strip_prefix: true\n");
    let got = problems(&neither);
    assert!(
        got.len() == 1 && got[0].path == "routes[0]" && got[0].message.contains("needs"),
        "{got:#?}"
    );
}

#[test]
fn normalization() {
    let text = config(
        "redis: { url: \"redis://127.0.0.1:6379\" }",
        "",
        "match: { host: \"*.Example.COM\", methods: [get], headers: { X-Env: prod } }\nrate_limit: { rate: 6000/min, store: redis, on_store_error: allow }\nplugins: [{ use: p, config: { a: [1, 2] } }]",
    );
    let c = parse(&text, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    let m = &c.routes[0].matcher;
    assert_eq!(m.host.as_deref(), Some("*.example.com"));
    assert_eq!(m.methods, ["GET"]);
    assert_eq!(m.headers.get("x-env").map(String::as_str), Some("prod"));
    assert_eq!(
        c.routes[0].plugins[0].config,
        serde_json::json!({ "a": [1, 2] })
    );
}

#[test]
fn unknown_key_points_at_the_key_and_every_bad_element_is_reported() {
    let text = config("", "", "match: { hots: a.com }");
    let text = format!("{text}  - name: s\n    upstream: nope\n");
    let got = problems(&text);
    assert_eq!(got.len(), 2, "{got:#?}");
    let line = text.lines().position(|l| l.contains("hots")).unwrap() + 1;
    let col = text.lines().nth(line - 1).unwrap().find("hots").unwrap() + 1;
    assert_eq!(
        (got[0].line, got[0].column),
        (line, col),
        "{got:#?}\n{text}"
    );
    assert_eq!(got[1].path, "routes[1].upstream");
}
