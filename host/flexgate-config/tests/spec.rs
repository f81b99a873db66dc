//! The embedded default, the product-spec example, and how problems are located and reported.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use flexgate_config::*;

const SPEC: &str = r#"version: 1
listen: 0.0.0.0:8080
admin: { listen: 127.0.0.1:8081 }
metrics: { listen: 0.0.0.0:9090 }
upstreams:
  - name: users
    targets: [ { addr: "127.0.0.1:9001", weight: 1 } ]
    load_balancing: round_robin
    timeouts: { connect: 1s, request: 30s, idle: 90s }
    retries: { attempts: 2, on: [connect_failure, "502", "503"] }
    health_check: { path: /healthz, interval: 5s, healthy: 2, unhealthy: 3 }
    circuit_breaker: { consecutive_failures: 5, failure_rate: { threshold: 0.5, window: 10s, min_requests: 20 }, open_for: 5s, max_open_for: 2m, half_open_probes: 3, failure_on: [connect_failure, timeout, "5xx"] }
    max_in_flight: 1000
routes:
  - name: users-api
    match: { host: api.example.com, path_prefix: /users, methods: [GET, POST], headers: { x-env: prod } }
    strip_prefix: false
    upstream: users
    max_body: 10MiB
    rate_limit: { key: client_ip, rate: 100/s, burst: 50, store: local }
  - name: hello
    match: { path_prefix: / }
    respond: { status: 200, headers: { content-type: text/plain }, body: "hello from flexgate\n" }
"#;

#[test]
fn default_config_parses_and_matches_the_typed_value() {
    let parsed = parse(DEFAULT_CONFIG, "<default>").unwrap();
    assert_eq!(parsed, default_config());
    assert_eq!(
        parsed.routes[0].respond.as_ref().unwrap().body,
        "hello from flexgate\n"
    );
    assert_eq!(parsed.admin.listen.to_string(), "127.0.0.1:8081");
    assert_eq!(parsed.metrics.listen.to_string(), "0.0.0.0:9090");
}

#[test]
fn product_spec_example_parses() {
    let c = parse(SPEC, "flexgate.yaml").unwrap_or_else(|e| panic!("{e}"));
    let users = &c.upstreams[0];
    assert_eq!(users.targets[0].addr, "127.0.0.1:9001");
    assert_eq!(users.timeouts.request.get(), Duration::from_secs(30));
    assert_eq!(
        users.retries.on,
        [
            RetryOn::ConnectFailure,
            RetryOn::Status(502),
            RetryOn::Status(503)
        ]
    );
    let cb = users.circuit_breaker.as_ref().unwrap();
    assert_eq!(cb.max_open_for.get(), Duration::from_secs(120));
    assert_eq!(
        cb.failure_on,
        [
            FailureOn::ConnectFailure,
            FailureOn::Timeout,
            FailureOn::Class(5)
        ]
    );
    assert_eq!(users.max_in_flight, Some(1000));
    let api = &c.routes[0];
    assert_eq!(api.matcher.methods, ["GET", "POST"]);
    assert_eq!(api.max_body, Some(ByteSize(10 * 1024 * 1024)));
    let rl = api.rate_limit.as_ref().unwrap();
    assert_eq!(
        rl.rate,
        Rate {
            requests: 100,
            per: Duration::from_secs(1)
        }
    );
    assert_eq!(rl.burst, 50);
    assert_eq!(c.routes[1].respond.as_ref().unwrap().status, 200);
}

#[test]
fn three_mistakes_are_all_reported_with_their_lines() {
    let text = r#"version: 1
upstreams:
  - name: users
    targets: [{ addr: "127.0.0.1:9001" }]
  - name: orders
    targtes: [{ addr: "127.0.0.1:9002" }]
  - name: billing
    targets: [{ addr: "127.0.0.1:9003" }]
    timeouts: { connect: 5 }
routes:
  - name: a
    upstream: users
  - name: b
    upstream: orders
  - name: c
    upstream: users2
"#;
    let err = parse(text, "flexgate.yaml").unwrap_err();
    let got: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
    assert_eq!(err.problems.len(), 3, "{got:#?}");
    let p = &err.problems;
    assert_eq!(
        (p[0].line, p[0].column, p[0].path.as_str()),
        (6, 5, "upstreams[1].targtes"),
        "{got:#?}"
    );
    assert!(p[0].message.contains("unknown field `targtes`"), "{got:#?}");
    assert_eq!(
        (p[1].line, p[1].column, p[1].path.as_str()),
        (9, 26, "upstreams[2].timeouts.connect"),
        "{got:#?}"
    );
    assert!(p[1].message.contains("needs a unit"), "{got:#?}");
    assert_eq!(
        got[2],
        r#"flexgate.yaml:16:15: routes[2].upstream: unknown upstream "users2""#
    );
    assert_eq!(err.to_string().lines().count(), 3);
}

#[test]
fn syntax_error_has_its_location() {
    let err = parse("version: 1\nroutes:\n  - name: a\n   bad: [\n", "f.yaml").unwrap_err();
    assert_eq!(err.problems.len(), 1);
    let p = &err.problems[0];
    assert!(p.message.starts_with("YAML syntax error"), "{p}");
    assert!(p.line >= 3, "{p}");
    assert!(!p.message.contains(" at line "), "{p}");
}

#[test]
fn unknown_top_level_key() {
    let err = parse(
        "version: 1\nlisten: 0.0.0.0:1234\nlistne: 0.0.0.0:80\n",
        "f.yaml",
    )
    .unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(
        err.problems[0]
            .to_string()
            .split(", expected")
            .next()
            .unwrap(),
        "f.yaml:3:1: listne: unknown field `listne`"
    );
    assert!(err.problems[0].message.contains("`routes`"));
}

#[test]
fn empty_file_and_missing_version() {
    let err = parse("", "f.yaml").unwrap_err();
    assert_eq!(err.problems[0].path, "(root)");
    let err = parse("listen: 0.0.0.0:1234\n", "f.yaml").unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert!(err.problems[0].message.contains("missing field `version`"));
}

#[test]
fn load_resolves_paths_against_the_config_folder() {
    let dir = std::env::temp_dir().join(format!("flexgate-config-test-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    std::fs::write(dir.join("certs/cert.pem"), "x").unwrap();
    std::fs::write(dir.join("certs/key.pem"), "x").unwrap();
    let file = dir.join("flexgate.yaml");
    std::fs::write(
        &file,
        "version: 1\ntls: { cert: certs/cert.pem, key: certs/key.pem }\n",
    )
    .unwrap();
    let c = load(&file).unwrap_or_else(|e| panic!("{e}"));
    let tls = c.tls.unwrap();
    assert!(tls.cert.is_absolute() && tls.cert.ends_with("certs/cert.pem"));
    std::fs::write(
        &file,
        "version: 1\ntls: { cert: certs/cert.pem, key: certs/nope.pem }\n",
    )
    .unwrap();
    let err = load(&file).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(
        (err.problems[0].line, err.problems[0].path.as_str()),
        (2, "tls.key")
    );
    assert!(err.problems[0].message.contains("file not found"));
    std::fs::remove_dir_all(&dir).unwrap();
    let err = load(&dir.join("missing.yaml")).unwrap_err();
    assert!(err.problems[0].message.contains("cannot read"));
}

#[test]
fn duplicate_keys_are_located() {
    let err = parse("version: 1\nlisten: 0.0.0.0:1\nadmin: { listen: 127.0.0.1:2, listen: 127.0.0.1:3 }\nlisten: 0.0.0.0:2\n", "f.yaml")
        .unwrap_err();
    let got: Vec<(usize, usize, &str)> = err
        .problems
        .iter()
        .map(|p| (p.line, p.column, p.path.as_str()))
        .collect();
    assert_eq!(got, [(3, 31, "admin.listen"), (4, 1, "listen")]);
}
