//! Wasm plugin chains through real sockets (issue 3): every first-party plugin's documented
//! behaviour, chain order, both isolation modes, `on_error` both ways for every sandbox fixture,
//! the loop deadline, 10 000 traps without leaking, the plugin metrics and a reload under load.
//!
//! The plugins come from `plugins/dist/*.wasm` (`bash plugins/build.sh`). When they are missing the
//! tests print why and pass, unless `CI_REQUIRE_TOOLS=1`, which makes them fail.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flexgate_testkit::serde_json::{Value, json};
use flexgate_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_flexgate");

/// The deadline and memory tests measure time and RSS: they take this lock exclusively, so no other
/// gateway of this file (compiling jwt-auth takes a debug gateway ~20 s of CPU) competes with them
/// for the two cores; every other test takes it shared.
static EXCLUSIVE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

const ALL_WASM: &[&str] = &[
    "headers",
    "rewrite",
    "cors",
    "jwt-auth",
    "json-redact",
    "fixture-trap",
    "fixture-loop",
    "fixture-alloc",
    "fixture-stderr",
    "fixture-init-reject",
    "fixture-flaky",
];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `plugins/dist/{name}.wasm`, absolute.
fn wasm(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/dist")
        .join(format!("{name}.wasm"));
    p.canonicalize().unwrap_or(p)
}

/// Whether the plugin components are built; skips (returns false) or, with `CI_REQUIRE_TOOLS=1`,
/// fails when they are not.
fn plugins_built() -> bool {
    let missing: Vec<&str> = ALL_WASM
        .iter()
        .copied()
        .filter(|n| !wasm(n).is_file())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("plugins/dist lacks {missing:?}: run `bash plugins/build.sh` first");
    assert!(
        std::env::var("CI_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "{msg}"
    );
    eprintln!("skipping: {msg}");
    false
}

macro_rules! require_plugins {
    () => {
        if !plugins_built() {
            return;
        }
    };
}

/// A value as one-line YAML flow (JSON with `": "` and `", "`, which every YAML parser reads).
fn flow(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let items: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), flow(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(flow).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// A top-level `plugins` entry `name` loading `plugins/dist/{file}.wasm`; `extra`: more lines,
/// indented by 4 spaces.
fn def(name: &str, file: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    source: \"{}\"\n{extra}",
        wasm(file).display()
    )
}

/// A chain entry binding `plugin` with `config`; `extra`: more lines, indented by 8 spaces.
fn bind(plugin: &str, config: Value, extra: &str) -> String {
    format!(
        "      - use: {plugin}\n        config: {}\n{extra}",
        flow(&config)
    )
}

/// A route on `path_prefix: prefix` to upstream `up` running `bindings`; `extra`: more route
/// lines, indented by 4 spaces.
fn route(name: &str, prefix: &str, extra: &str, bindings: &[String]) -> String {
    format!(
        "  - name: {name}\n    match:\n      path_prefix: {prefix}\n    upstream: up\n{extra}    plugins:\n{}",
        bindings.concat()
    )
}

/// A route without plugins.
fn plain_route(name: &str, prefix: &str) -> String {
    format!("  - name: {name}\n    match:\n      path_prefix: {prefix}\n    upstream: up\n")
}

/// The config body: this test's `store`, plugin definitions, one upstream `up` at `up`, and the
/// routes.
fn config(up: SocketAddr, defs: &[String], routes: &[String]) -> String {
    format!(
        "{}plugins:\n{}upstreams:\n  - name: up\n{}routes:\n{}",
        store_section(),
        defs.concat(),
        yaml::targets(&[up]),
        routes.concat()
    )
}

/// A `store:` section with a registry folder of this test's own, whose `compiled/` (the gateway's
/// cache of precompiled components) is shared by every gateway of every run: a debug gateway takes
/// ~20 s to compile jwt-auth and seconds for the others, so each is compiled once, not once per
/// gateway. Folders of test processes that are gone are removed on first use.
fn store_section() -> String {
    static BASE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let base = BASE.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-tests");
        std::fs::create_dir_all(base.join("compiled")).expect("compile cache folder");
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix("stores-")
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        base
    });
    let test = std::thread::current()
        .name()
        .unwrap_or("main")
        .replace("::", "-");
    let dir = base
        .join(format!("stores-{}", std::process::id()))
        .join(test);
    std::fs::create_dir_all(&dir).expect("store folder");
    let link = dir.join("compiled");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(base.join("compiled"), &link).expect("link the compile cache");
    }
    format!("store:\n  kind: file\n  path: \"{}\"\n", dir.display())
}

/// Starts a gateway on `body`, allowing for a cold compile cache (see [`store_section`]).
async fn start(body: &str) -> Gateway {
    Gateway::builder(BIN)
        .config(body)
        .ready_timeout(Duration::from_secs(120))
        .start()
        .await
}

/// Limits for tests of behaviour rather than deadlines: epochs count wall time, so on a loaded
/// 2-core machine running a debug gateway even a trivial call occasionally misses 10 ms.
const RELAXED: &str = "    limits: { timeout: 1s }\n";

const FAIL_OPEN: &str = "        on_error: fail_open\n";
const FAIL_CLOSED: &str = "        on_error: fail_closed\n";

async fn call(
    c: &HttpClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Collected {
    let b = if body.is_empty() {
        empty()
    } else {
        full(body.to_owned())
    };
    c.call(method, url, headers, b)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Collected {
    call(&HttpClient::http1(), "GET", &gw.url(path), headers, "").await
}

/// The plugin `version` label of a file source: `file-` and 12 hex digits of its SHA-256.
fn file_version(file: &str) -> String {
    let bytes = std::fs::read(wasm(file)).expect("read wasm");
    format!("file-{}", &sha256_hex(&bytes)[..12])
}

/// One sample of Prometheus text: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn parse_sample(line: &str) -> Option<Sample> {
    let (head, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, mut rest) = match head.split_once('{') {
        Some((n, r)) => (n, r.strip_suffix('}')?),
        None => (head, ""),
    };
    let mut labels = BTreeMap::new();
    while !rest.is_empty() {
        let (k, r) = rest.split_once("=\"")?;
        let mut val = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => val.push('\n'),
                    c => val.push(c),
                },
                (i, '"') => break i,
                (_, c) => val.push(c),
            }
        };
        labels.insert(k.trim_start_matches(',').to_owned(), val);
        rest = r[end + 1..].trim_start_matches(',');
    }
    Some((name.to_owned(), labels, value))
}

fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_sample)
        .collect()
}

/// The sum of the samples of `name` whose labels include all of `want`; `None` if none match.
fn metric_sum(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples(text)
        .into_iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

async fn metric_of(gw: &Gateway, name: &str, want: &[(&str, &str)]) -> f64 {
    metric_sum(&gw.metrics_text().await, name, want).unwrap_or(0.0)
}

/// Sends `total` requests `GET url` from `concurrency` workers sharing one keep-alive client;
/// returns the count per status and the transport errors.
async fn hammer(
    url: &str,
    total: usize,
    concurrency: usize,
) -> (BTreeMap<u16, usize>, Vec<String>) {
    let next = Arc::new(AtomicUsize::new(0));
    let client = HttpClient::http1();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (next, client, url) = (next.clone(), client.clone(), url.to_owned());
        set.spawn(async move {
            let mut statuses = BTreeMap::<u16, usize>::new();
            let mut errors = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                match client.get(&url).await {
                    Ok(r) => *statuses.entry(r.status.as_u16()).or_default() += 1,
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (statuses, errors)
        });
    }
    let mut statuses = BTreeMap::new();
    let mut errors = Vec::new();
    while let Some(r) = set.join_next().await {
        let (s, e) = r.expect("worker");
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
        errors.extend(e);
    }
    (statuses, errors)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A JSON log field, top-level (flattened events) or under `fields`.
fn log_field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key)
        .or_else(|| v.get("fields").and_then(|f| f.get(key)))
}

// ---------------------------------------------------------------------------------------------
// First-party plugins
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn headers_plugin_edits_both_directions_with_substitutions() {
    let _guard = EXCLUSIVE.read().await;
    require_plugins!();
    let echo = EchoUpstream::builder()
        .header("x-powered-by", "echo")
        .header("x-kept", "k")
        .start()
        .await;
    let cfg = json!({
        "request": {
            "set": {"x-team": "gw", "x-real-ip": "${client_ip}", "x-rid": "id=${request_id}"},
            "add": {"x-tag": "gw", "x-via": "flexgate-${route}"},
            "remove": ["x-internal-token"]
        },
        "response": {
            // content-length is protected: the host drops the edit and frames the real body.
            "set": {"server": "flexgate", "x-echo-rid": "${request_id}", "content-length": "1"},
            "add": {"x-upstream": "added"},
            "remove": ["x-powered-by"]
        }
    });
    let gw = start(&config(
        echo.addr(),
        &[def("headers", "headers", RELAXED)],
        &[route("hdr", "/", "", &[bind("headers", cfg, "")])],
    ))
    .await;
    for (proto, client) in [("http1", HttpClient::http1()), ("h2c", HttpClient::h2c())] {
        let r = call(
            &client,
            "GET",
            &gw.url("/x"),
            &[
                ("x-team", "client"),
                ("x-tag", "client"),
                ("x-internal-token", "secret"),
            ],
            "",
        )
        .await;
        assert_eq!(r.status, 200, "{proto}: {}", r.text());
        let rid = r.header("x-request-id").expect("x-request-id").to_owned();
        let e = r.echo();
        assert_eq!(e.header_all("x-team"), ["gw"], "{proto}: set replaces");
        assert_eq!(e.header("x-real-ip"), Some("127.0.0.1"), "{proto}");
        assert_eq!(
            e.header("x-rid"),
            Some(format!("id={rid}").as_str()),
            "{proto}"
        );
        assert_eq!(
            e.header_all("x-tag"),
            ["client", "gw"],
            "{proto}: add appends"
        );
        assert_eq!(e.header("x-via"), Some("flexgate-hdr"), "{proto}");
        assert!(!e.has_header("x-internal-token"), "{proto}: removed");
        assert_eq!(r.header("server"), Some("flexgate"), "{proto}");
        assert_eq!(r.header("x-echo-rid"), Some(rid.as_str()), "{proto}");
        assert_eq!(r.header_all("x-upstream"), ["echo", "added"], "{proto}");
        assert_eq!(r.header("x-powered-by"), None, "{proto}");
        assert_eq!(r.header("x-kept"), Some("k"), "{proto}: untouched");
        if let Some(len) = r.header("content-length") {
            assert_eq!(len, r.body.len().to_string(), "{proto}: host-framed");
        }
    }
}

#[tokio::test]
async fn rewrite_plugin_rewrites_paths_and_queries_and_redirects() {
    let _guard = EXCLUSIVE.read().await;
    require_plugins!();
    let echo = EchoUpstream::start().await;
    let cfg = json!({
        "redirects": [
            {"match": "^/old/301/(.*)$", "location": "https://new.example.com/$1", "status": 301},
            {"match": "^/old/302/(?P<rest>.*)$", "location": "/new/${rest}"},
            {"match": "^/old/307/(.*)$", "location": "/new307/$1", "status": 307},
            {"match": "^/old/308/(.*)$", "location": "/new308/$1", "status": 308, "keep_query": false}
        ],
        "rules": [
            {"match": "^/api/v1/(?P<rest>.*)$", "replace": "/v2/${rest}"},
            {"match": "^/users/(\\d+)/profile$", "replace": "/profiles/$1"}
        ],
        "query": {"add": {"source": "gate way"}, "remove": ["debug"]}
    });
    let gw = start(&config(
        echo.addr(),
        &[def("rewrite", "rewrite", RELAXED)],
        &[
            route(
                "qs",
                "/qs",
                "",
                &[bind("rewrite", json!({"query": {"remove": ["debug"]}}), "")],
            ),
            route("rw", "/", "", &[bind("rewrite", cfg, "")]),
        ],
    ))
    .await;
    for (path, want) in [
        (
            "/api/v1/items/7?debug=1&keep=yes&source=client",
            "/v2/items/7?keep=yes&source=gate%20way",
        ),
        ("/users/42/profile", "/profiles/42?source=gate%20way"),
        ("/users/42/other", "/users/42/other?source=gate%20way"),
        ("/qs/a?debug=1", "/qs/a"),
        ("/qs/a?debug=1&b=2", "/qs/a?b=2"),
    ] {
        let r = get(&gw, path, &[]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.echo().uri, want, "{path}");
    }
    let seen = echo.requests();
    for (path, status, location) in [
        ("/old/301/a/b?x=1", 301, "https://new.example.com/a/b?x=1"),
        ("/old/302/p", 302, "/new/p"),
        ("/old/307/p?q=1", 307, "/new307/p?q=1"),
        ("/old/308/p?q=1", 308, "/new308/p"),
    ] {
        let r = get(&gw, path, &[]).await;
        assert_eq!(r.status.as_u16(), status, "{path}: {}", r.text());
        assert_eq!(r.header("location"), Some(location), "{path}");
    }
    assert_eq!(echo.requests(), seen, "redirects never reach the upstream");
}

#[tokio::test]
async fn cors_plugin_answers_preflights_and_decorates_responses() {
    let _guard = EXCLUSIVE.read().await;
    require_plugins!();
    let echo = EchoUpstream::start().await;
    let strict = json!({
        "allowed_origins": ["https://app.example.com", "https://*.example.org"],
        "allowed_methods": ["GET", "PUT"],
        "allowed_headers": ["content-type", "authorization"],
        "exposed_headers": ["x-total-count"],
        "allow_credentials": true,
        "max_age": 60
    });
    let gw = start(&config(
        echo.addr(),
        &[def("cors", "cors", RELAXED)],
        &[
            route("strict", "/cors", "", &[bind("cors", strict, "")]),
            route(
                "any",
                "/any",
                "",
                &[bind("cors", json!({"allowed_origins": ["*"]}), "")],
            ),
        ],
    ))
    .await;
    let c = HttpClient::http1();
    let preflight = |path: &'static str, origin: &'static str, method: &'static str| {
        let (c, url) = (c.clone(), gw.url(path));
        async move {
            call(
                &c,
                "OPTIONS",
                &url,
                &[
                    ("origin", origin),
                    ("access-control-request-method", method),
                    ("access-control-request-headers", "x-custom, content-type"),
                ],
                "",
            )
            .await
        }
    };
    let seen = echo.requests();
    for origin in ["https://app.example.com", "https://a.b.example.org"] {
        let r = preflight("/cors/x", origin, "PUT").await;
        assert_eq!(r.status, 204, "{origin}: {}", r.text());
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        assert_eq!(r.header("access-control-allow-methods"), Some("GET, PUT"));
        assert_eq!(
            r.header("access-control-allow-headers"),
            Some("content-type, authorization")
        );
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        assert_eq!(r.header("access-control-max-age"), Some("60"));
        assert!(r.header("vary").unwrap_or_default().contains("Origin"));
        assert!(r.body.is_empty());
    }
    for (origin, method) in [
        ("https://example.org", "GET"),  // the apex is not under the wildcard
        ("http://a.example.org", "GET"), // other scheme
        ("https://evil.example.com", "GET"), // not listed
        ("https://app.example.com", "DELETE"),
    ] {
        let r = preflight("/cors/x", origin, method).await;
        assert_eq!(r.status, 403, "{origin} {method}");
        assert_eq!(r.header("access-control-allow-origin"), None);
        assert_eq!(r.header("vary"), Some("Origin"));
    }
    // Any origin without credentials: `*`, requested headers reflected.
    let r = preflight("/any/x", "https://whoever.test", "POST").await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("x-custom, content-type")
    );
    assert_eq!(echo.requests(), seen, "preflights never reach the upstream");

    // Actual requests reach the upstream and get the CORS headers.
    let r = get(&gw, "/cors/y", &[("origin", "https://app.example.com")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echo().uri, "/cors/y");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("x-total-count")
    );
    assert_eq!(r.header_all("vary"), ["Origin"]);
    let r = get(&gw, "/cors/y", &[("origin", "https://evil.example.com")]).await;
    assert_eq!(
        r.status, 200,
        "a disallowed origin is not blocked, only undecorated"
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("access-control-allow-credentials"), None);
    assert_eq!(r.header_all("vary"), ["Origin"]);
    let r = get(&gw, "/cors/y", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("vary"), None, "no Origin: untouched");
    let r = get(&gw, "/any/y", &[("origin", "https://whoever.test")]).await;
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("vary"), None, "`*` does not depend on the origin");
    assert_eq!(echo.requests(), seen + 4);
}

fn jwt_key(file: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/jwt-auth/tests/keys")
        .join(file);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[tokio::test]
async fn jwt_auth_plugin_verifies_tokens_and_forwards_claims() {
    let _guard = EXCLUSIVE.read().await;
    require_plugins!();
    const SECRET: &str = "0123456789abcdef-secret";
    let echo = EchoUpstream::start().await;
    let (rsa_priv, rsa_pub) = (jwt_key("rsa_private.pem"), jwt_key("rsa_public.pem"));
    let (ec_priv, ec_pub) = (jwt_key("ec_private.pem"), jwt_key("ec_public.pem"));
    let jwks: Value = serde_json::from_str(&jwt_key("jwks.json")).expect("jwks.json");
    let hs_cfg = json!({
        "secret": SECRET, "issuer": "https://issuer.test", "audience": ["api"],
        "forward_claims": {"sub": "x-user-id", "roles": "x-roles"}
    });
    let gw = start(&config(
        echo.addr(),
        &[def("jwt", "jwt-auth", RELAXED)],
        &[
            route("hs", "/hs", "", &[bind("jwt", hs_cfg, "")]),
            route(
                "rs",
                "/rs",
                "",
                &[bind(
                    "jwt",
                    json!({"public_key_pem": rsa_pub, "forward_claims": {"sub": "x-user-id"}}),
                    "",
                )],
            ),
            route(
                "es",
                "/es",
                "",
                &[bind(
                    "jwt",
                    json!({"public_key_pem": ec_pub, "algorithm": "ES256",
                               "forward_claims": {"sub": "x-user-id"}}),
                    "",
                )],
            ),
            route(
                "jwks",
                "/jwks",
                "",
                &[bind(
                    "jwt",
                    json!({"jwks": jwks, "realm": "keys", "forward_claims": {"sub": "x-user-id"}}),
                    "",
                )],
            ),
        ],
    ))
    .await;
    let now = jwt::now();
    let hs_claims = |extra: Value| {
        let mut c =
            json!({"sub": "u1", "iss": "https://issuer.test", "aud": "api", "exp": now + 60});
        if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        c
    };
    let bearer = |t: String| format!("Bearer {t}");

    // Valid: passes, claims forwarded (a forged x-user-id is replaced).
    let token = bearer(jwt::hs256(SECRET, &hs_claims(json!({"roles": ["a", "b"]}))));
    let r = get(
        &gw,
        "/hs/me",
        &[("authorization", &token), ("x-user-id", "forged")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let e = r.echo();
    assert_eq!(e.header_all("x-user-id"), ["u1"]);
    assert_eq!(e.header("x-roles"), Some(r#"["a","b"]"#));
    // A forwarded claim that is absent removes the client's header.
    let token = bearer(jwt::hs256(SECRET, &hs_claims(json!({}))));
    let r = get(
        &gw,
        "/hs/me",
        &[("authorization", &token), ("x-roles", "admin")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(!r.echo().has_header("x-roles"), "forged claim header kept");
    // Expired 10 s ago: inside the default 30 s leeway.
    let token = bearer(jwt::hs256(SECRET, &hs_claims(json!({"exp": now - 10}))));
    assert_eq!(
        get(&gw, "/hs/me", &[("authorization", &token)])
            .await
            .status,
        200
    );
    let reached = echo.requests();

    // Missing token: a bare challenge.
    let r = get(&gw, "/hs/me", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="flexgate""#)
    );
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json")
    );
    assert_eq!(r.json()["error"], "unauthorized");
    let other_secret = "another-secret-of-16+bytes";
    let denied = [
        ("Basic dXNlcjpwdw==".to_owned(), "expected a Bearer token"),
        ("Bearer not.a.jwt".to_owned(), "malformed token"),
        (
            bearer(jwt::hs256(SECRET, &hs_claims(json!({"exp": now - 120})))),
            "token expired",
        ),
        (
            bearer(jwt::hs256(SECRET, &hs_claims(json!({"nbf": now + 300})))),
            "token not yet valid",
        ),
        (
            bearer(jwt::hs256(other_secret, &hs_claims(json!({})))),
            "invalid signature",
        ),
        (
            bearer(jwt::hs256(
                SECRET,
                &hs_claims(json!({"iss": "https://evil.test"})),
            )),
            "invalid issuer",
        ),
        (
            bearer(jwt::hs256(SECRET, &hs_claims(json!({"aud": "other"})))),
            "invalid audience",
        ),
        (
            bearer(jwt::hs256(
                SECRET,
                &json!({"sub": "u1", "iss": "https://issuer.test", "aud": "api"}),
            )),
            "missing claim exp",
        ),
        // Algorithm confusion: an RS256 token on the HS256 route.
        (
            bearer(jwt::rs256(&rsa_priv, None, &hs_claims(json!({})))),
            "unexpected algorithm",
        ),
    ];
    for (auth, why) in &denied {
        let r = get(&gw, "/hs/me", &[("authorization", auth)]).await;
        assert_eq!(r.status, 401, "{why}: {}", r.text());
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with(r#"Bearer realm="flexgate", error="invalid_token""#)
                && challenge.contains(&format!(r#"error_description="{why}""#)),
            "{why}: WWW-Authenticate {challenge:?}"
        );
        assert_eq!(r.json()["message"], *why);
    }
    assert_eq!(
        echo.requests(),
        reached,
        "denied requests reached the upstream"
    );

    // RS256 and ES256 with PEM keys; an inline JWKS selecting by `kid`.
    let claims = json!({"sub": "pem-user", "exp": now + 60});
    let rs = jwt::rs256(&rsa_priv, None, &claims);
    let es = jwt::es256(&ec_priv, None, &claims);
    for (path, token, ok) in [
        ("/rs/x", &rs, true),
        ("/rs/x", &es, false),
        ("/es/x", &es, true),
        ("/es/x", &rs, false),
    ] {
        let r = get(&gw, path, &[("authorization", &bearer(token.clone()))]).await;
        if ok {
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            assert_eq!(r.echo().header("x-user-id"), Some("pem-user"));
        } else {
            assert_eq!(r.status, 401, "{path}");
        }
    }
    // A tampered payload fails the RS256 signature.
    let mut parts: Vec<String> = rs.split('.').map(str::to_owned).collect();
    parts[1] = jwt::hs256(SECRET, &json!({"sub": "admin", "exp": now + 60}))
        .split('.')
        .nth(1)
        .expect("payload")
        .to_owned();
    let r = get(&gw, "/rs/x", &[("authorization", &bearer(parts.join(".")))]).await;
    assert_eq!(r.status, 401);
    let expired_es = jwt::es256(&ec_priv, None, &json!({"sub": "u", "exp": now - 300}));
    let r = get(&gw, "/es/x", &[("authorization", &bearer(expired_es))]).await;
    assert!(
        r.header("www-authenticate")
            .unwrap_or_default()
            .contains("token expired")
    );
    for (kid, ok) in [("rsa-1", true), ("ec-1", true), ("nope", false)] {
        let token = if kid == "ec-1" {
            jwt::es256(&ec_priv, Some(kid), &claims)
        } else {
            jwt::rs256(&rsa_priv, Some(kid), &claims)
        };
        let r = get(&gw, "/jwks/x", &[("authorization", &bearer(token))]).await;
        if ok {
            assert_eq!(r.status, 200, "kid {kid}: {}", r.text());
            assert_eq!(r.echo().header("x-user-id"), Some("pem-user"));
        } else {
            assert_eq!(r.status, 401);
            assert_eq!(
                r.header("www-authenticate"),
                Some(
                    r#"Bearer realm="keys", error="invalid_token", error_description="unknown signing key""#
                )
            );
        }
    }
}

#[tokio::test]
async fn json_redact_plugin_edits_buffered_bodies_and_fixes_content_length() {
    let _guard = EXCLUSIVE.read().await;
    require_plugins!();
    let echo = EchoUpstream::start().await;
    let cfg = json!({
        "request": {"remove": ["password"], "mask": ["card.number", "users.email"]},
        "response": {"remove": ["body_sha256", "version"], "mask": ["upstream"]}
    });
    let gw = start(&config(
        echo.addr(),
        &[def("redact", "json-redact", RELAXED)],
        &[
            route(
                "redact",
                "/redact",
                "    max_body: 4KiB\n",
                &[bind("redact", cfg.clone(), "        body: buffer\n")],
            ),
            route("unbuffered", "/plain", "", &[bind("redact", cfg, "")]),
        ],
    ))
    .await;
    let input = json!({
        "user": "ann", "password": "hunter2",
        "card": {"number": "4111111111111111", "exp": "12/30"},
        "users": [{"email": "a@x.test"}, {"email": "b@x.test", "name": "b"}]
    });
    let want = json!({
        "user": "ann",
        "card": {"number": "***", "exp": "12/30"},
        "users": [{"email": "***"}, {"email": "***", "name": "b"}]
    });
    let text = input.to_string();
    let ct = [("content-type", "application/json")];
    let check = |r: &Collected, how: &str| {
        assert_eq!(r.status, 200, "{how}: {}", r.text());
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str()),
            "{how}: response content-length"
        );
        let v = r.json();
        assert_eq!(v["upstream"], "***", "{how}: {v}");
        assert!(
            v.get("body_sha256").is_none() && v.get("version").is_none(),
            "{how}: {v}"
        );
        assert_eq!(v["method"], "POST");
        let body = v["body"].as_str().expect("body echoed");
        let got: Value = serde_json::from_str(body).expect("upstream got JSON");
        assert_eq!(got, want, "{how}: request redaction");
        assert_eq!(v["body_len"], body.len(), "{how}");
        let up = echo.received().last().cloned().expect("received");
        assert_eq!(
            up.header("content-length"),
            Some(body.len().to_string().as_str()),
            "{how}: upstream content-length"
        );
    };
    let r = call(
        &HttpClient::http1(),
        "POST",
        &gw.url("/redact/a"),
        &ct,
        &text,
    )
    .await;
    check(&r, "sized");
    // A chunked request body is buffered and sent on with the new length.
    let (a, b) = text.split_at(text.len() / 2);
    let chunks = vec![
        bytes::Bytes::from(a.to_owned()),
        bytes::Bytes::from(b.to_owned()),
    ];
    let r = HttpClient::http1()
        .call(
            "POST",
            &gw.url("/redact/b"),
            &ct,
            slow_body(chunks, Duration::from_millis(5)),
        )
        .await
        .expect("chunked POST");
    check(&r, "chunked");
    // Over HTTP/2 too.
    let r = call(&HttpClient::h2c(), "POST", &gw.url("/redact/c"), &ct, &text).await;
    check(&r, "h2c");
    // Not JSON: untouched.
    let r = call(
        &HttpClient::http1(),
        "POST",
        &gw.url("/redact/d"),
        &[("content-type", "text/plain")],
        &text,
    )
    .await;
    assert_eq!(r.json()["body"], text.as_str());
    // Not JSON and chunked: buffered, passed on unchanged with a consistent framing.
    let chunks = vec![bytes::Bytes::from("plain "), bytes::Bytes::from("text")];
    let r = HttpClient::http1()
        .call(
            "POST",
            &gw.url("/redact/d"),
            &[("content-type", "text/plain")],
            slow_body(chunks, Duration::from_millis(5)),
        )
        .await
        .expect("chunked text POST");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body"], "plain text");
    // HEAD: the buffered (empty) response keeps the upstream's length and sends no body.
    let r = call(&HttpClient::http1(), "HEAD", &gw.url("/redact/h"), &[], "").await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    // Larger than the route's max_body: 413, the upstream is not reached.
    let seen = echo.requests();
    let big = json!({"password": "x".repeat(5000)}).to_string();
    let r = call(
        &HttpClient::http1(),
        "POST",
        &gw.url("/redact/e"),
        &ct,
        &big,
    )
    .await;
    r.assert_json_error(413);
    assert_eq!(echo.requests(), seen);
    // Without `body: buffer` the plugin sees no body: nothing is redacted.
    let r = call(
        &HttpClient::http1(),
        "POST",
        &gw.url("/plain/f"),
        &ct,
        &text,
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["body"], text.as_str());
    assert!(v.get("body_sha256").is_some());
}

// ---------------------------------------------------------------------------------------------
// Chains and isolation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn chain_runs_in_order_on_requests_and_in_reverse_on_responses() {
    let _guard = EXCLUSIVE.read().await;
    require_plugins!();
    let echo = EchoUpstream::start().await;
    let edits = |who: &str| {
        json!({
            "request": {"add": {"x-order": who}, "set": {"x-last": who}},
            "response": {"add": {"x-order-resp": who}, "set": {"x-resp-last": who}}
        })
    };
    let cors = json!({"allowed_origins": ["https://app.test"]});
    let gw = start(&config(
        echo.addr(),
        &[
            def("headers", "headers", RELAXED),
            def("cors", "cors", RELAXED),
        ],
        &[
            route(
                "chain",
                "/chain",
                "",
                &[
                    bind("headers", edits("first"), ""),
                    bind("headers", edits("second"), ""),
                ],
            ),
            route(
                "answered",
                "/pre",
                "",
                &[
                    bind(
                        "headers",
                        json!({"response": {"set": {"x-outer": "yes"}}}),
                        "",
                    ),
                    bind("cors", cors, ""),
                    bind(
                        "headers",
                        json!({"response": {"set": {"x-inner": "yes"}}}),
                        "",
                    ),
                ],
            ),
        ],
    ))
    .await;
    let r = get(&gw, "/chain", &[]).await;
    assert_eq!(r.status, 200);
    let e = r.echo();
    assert_eq!(
        e.header_all("x-order"),
        ["first", "second"],
        "request order"
    );
    assert_eq!(
        e.header("x-last"),
        Some("second"),
        "the later binding wins on requests"
    );
    assert_eq!(
        r.header_all("x-order-resp"),
        ["second", "first"],
        "response order"
    );
    assert_eq!(
        r.header("x-resp-last"),
        Some("first"),
        "the earlier binding wins on responses"
    );

    // A plugin that answers: only the bindings before it see the response.
    let seen = echo.requests();
    let r = call(
        &HttpClient::http1(),
        "OPTIONS",
        &gw.url("/pre"),
        &[
            ("origin", "https://app.test"),
            ("access-control-request-method", "GET"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("x-outer"), Some("yes"));
    assert_eq!(r.header("x-inner"), None);
    assert_eq!(echo.requests(), seen);
    let r = get(&gw, "/pre", &[]).await;
    assert_eq!(
        (r.header("x-outer"), r.header("x-inner")),
        (Some("yes"), Some("yes"))
    );
}

#[tokio::test]
async fn pooled_reuses_instances_and_per_request_leaks_no_state() {
    let _guard = EXCLUSIVE.read().await;
    require_plugins!();
    let echo = EchoUpstream::start().await;
    let rid = json!({"request": {"set": {"x-rid": "${request_id}"}}});
    let flaky = json!({"error_rate": 0.0});
    let gw = start(&config(
        echo.addr(),
        &[
            def(
                "flaky-pooled",
                "fixture-flaky",
                &format!("    isolation: pooled\n{RELAXED}"),
            ),
            def(
                "flaky-fresh",
                "fixture-flaky",
                &format!("    isolation: per_request\n{RELAXED}"),
            ),
            def("hdr-pooled", "headers", RELAXED),
            def(
                "hdr-fresh",
                "headers",
                &format!("    isolation: per_request\n{RELAXED}"),
            ),
        ],
        &[
            route(
                "pooled",
                "/pooled",
                "",
                &[
                    bind("flaky-pooled", flaky.clone(), ""),
                    bind("hdr-pooled", rid.clone(), ""),
                ],
            ),
            route(
                "fresh",
                "/fresh",
                "",
                &[bind("flaky-fresh", flaky, ""), bind("hdr-fresh", rid, "")],
            ),
        ],
    ))
    .await;
    let inst = |plugin: &'static str| {
        let gw = &gw;
        async move {
            metric_of(
                gw,
                "flexgate_plugin_instantiations_total",
                &[("plugin", plugin)],
            )
            .await
        }
    };
    let (pooled0, fresh0) = (inst("flaky-pooled").await, inst("flaky-fresh").await);
    const N: usize = 20;
    let (mut pooled_calls, mut fresh_calls) = (Vec::new(), Vec::new());
    for _ in 0..N {
        for (path, calls) in [
            ("/pooled/x", &mut pooled_calls),
            ("/fresh/x", &mut fresh_calls),
        ] {
            let r = get(&gw, path, &[]).await;
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            let e = r.echo();
            assert_eq!(e.header("x-rid"), r.header("x-request-id"), "{path}");
            calls.push(
                e.header("x-flaky-calls")
                    .and_then(|v| v.parse::<u64>().ok())
                    .expect("x-flaky-calls"),
            );
        }
    }
    // per_request: every request meets a fresh instance (its call counter is always 1).
    assert_eq!(
        fresh_calls,
        vec![1; N],
        "state leaked between per_request calls"
    );
    // pooled: sequential requests reuse the warm instance (init ran at load: calls 1, 2, ...).
    assert_eq!(
        pooled_calls,
        (1..=N as u64).collect::<Vec<_>>(),
        "pooled instance not reused"
    );
    let (pooled1, fresh1) = (inst("flaky-pooled").await, inst("flaky-fresh").await);
    eprintln!(
        "instantiations over {N} requests: pooled {}, per_request {}",
        pooled1 - pooled0,
        fresh1 - fresh0
    );
    assert_eq!(pooled1 - pooled0, 0.0, "pooled instantiated per request");
    assert!(
        fresh1 - fresh0 >= N as f64,
        "per_request: {} instantiations for {N} requests",
        fresh1 - fresh0
    );
}

// ---------------------------------------------------------------------------------------------
// Failure policy and sandbox fixtures
// ---------------------------------------------------------------------------------------------

/// For every failing fixture: `fail_closed` answers 500 JSON with the request id and the upstream
/// never sees the request; `fail_open` skips the plugin, so the request reaches the upstream
/// unchanged (method, path, query, headers, body) and the rest of the chain still runs.
#[tokio::test]
async fn on_error_fail_closed_and_fail_open_for_every_failing_fixture() {
    let _guard = EXCLUSIVE.read().await;
    require_plugins!();
    let echo = EchoUpstream::start().await;
    // (route suffix, plugin, fixture file, its config, failure kind in the error and metrics)
    let cases = [
        ("trap", "fixture-trap", json!({"always": true}), "trap"),
        ("loop", "fixture-loop", json!({"always": true}), "timeout"),
        ("alloc", "fixture-alloc", json!({"always": true}), "memory"),
        (
            "flaky",
            "fixture-flaky",
            json!({"error_rate": 1.0}),
            "error",
        ),
    ];
    let mut defs = vec![def("hdr", "headers", RELAXED)];
    let mut routes = Vec::new();
    for (name, file, cfg, _) in &cases {
        // loop: the default 10 ms deadline stops it; alloc: a generous deadline, so the memory cap
        // (not the clock) stops it; the others must fail only the way they are built to.
        let extra = match *name {
            "loop" => "",
            "alloc" => "    limits: { memory: 8MiB, timeout: 1s }\n",
            _ => RELAXED,
        };
        defs.push(def(name, file, extra));
        for (mode, policy) in [("fc", FAIL_CLOSED), ("fo", FAIL_OPEN)] {
            let after = json!({"request": {"set": {"x-after": name}}});
            routes.push(route(
                &format!("{mode}-{name}"),
                &format!("/{mode}-{name}"),
                "",
                &[bind(name, cfg.clone(), policy), bind("hdr", after, "")],
            ));
        }
    }
    let gw = start(&config(echo.addr(), &defs, &routes)).await;
    let c = HttpClient::http1();
    for (name, _, _, kind) in &cases {
        let body = format!("payload-{name}");
        let headers = [("x-client", "keep"), ("content-type", "text/plain")];
        let seen = echo.requests();
        let r = call(
            &c,
            "POST",
            &gw.url(&format!("/fc-{name}/p?q=1")),
            &headers,
            &body,
        )
        .await;
        let v = r.assert_json_error(500);
        assert_eq!(
            v["request_id"].as_str(),
            r.header("x-request-id"),
            "{name}: the body's request_id is the response's"
        );
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains(name) && msg.contains(kind),
            "{name}: error {msg:?} should name the plugin and `{kind}`"
        );
        assert_eq!(
            echo.requests(),
            seen,
            "{name}: fail_closed reached the upstream"
        );

        let r = call(
            &c,
            "POST",
            &gw.url(&format!("/fo-{name}/p?q=1")),
            &headers,
            &body,
        )
        .await;
        assert_eq!(r.status, 200, "{name} fail_open: {}", r.text());
        let e = r.echo();
        assert_eq!(
            (e.method.as_str(), e.uri.as_str()),
            ("POST", format!("/fo-{name}/p?q=1").as_str())
        );
        assert_eq!(e.body.as_deref(), Some(body.as_str()), "{name}");
        assert_eq!(e.header("x-client"), Some("keep"), "{name}");
        assert_eq!(
            e.header("x-after"),
            Some(*name),
            "{name}: the rest of the chain ran"
        );
    }
    let text = gw.metrics_text().await;
    for (name, _, _, kind) in &cases {
        let errors = metric_sum(
            &text,
            "flexgate_plugin_invocations_total",
            &[
                ("plugin", name),
                ("hook", "on_request"),
                ("outcome", "error"),
            ],
        );
        assert_eq!(errors, Some(2.0), "{name}: on_request errors");
        if *kind != "error" {
            let traps = metric_sum(
                &text,
                "flexgate_plugin_traps_total",
                &[("plugin", name), ("reason", kind)],
            );
            assert_eq!(traps, Some(2.0), "{name}: traps_total{{reason={kind}}}");
        }
    }
    assert_eq!(
        metric_sum(
            &text,
            "flexgate_plugin_custom_total",
            &[("plugin", "flaky"), ("name", "flaky_errors")]
        ),
        Some(2.0),
        "the plugin-defined counter"
    );
    let ready = HttpClient::http1()
        .get(&gw.admin_url("/health/ready"))
        .await
        .expect("ready");
    assert_eq!(ready.status, 200, "{}", ready.text());
}

/// A plugin flooding stdout/stderr: the output is captured, truncated per call (2 KiB) and
/// rate-limited in the log; requests are not affected under either policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_flood_is_truncated_and_rate_limited_without_breaking_requests() {
    let _guard = EXCLUSIVE.read().await;
    require_plugins!();
    let echo = EchoUpstream::start().await;
    // ~70 bytes a line: 300 lines overflow the 2 KiB capture of every call.
    let flood = json!({"lines": 300});
    let gw = start(&config(
        echo.addr(),
        // The README's note: 10 000 writes need more than the default 10 ms.
        &[def(
            "stderr",
            "fixture-stderr",
            "    limits: { timeout: 2s }\n",
        )],
        &[
            route(
                "fc-stderr",
                "/fc",
                "",
                &[bind("stderr", flood.clone(), FAIL_CLOSED)],
            ),
            route("fo-stderr", "/fo", "", &[bind("stderr", flood, FAIL_OPEN)]),
        ],
    ))
    .await;
    let started = Instant::now();
    let mut requests = 0;
    for path in ["/fc/x", "/fo/x"] {
        let (statuses, errors) = hammer(&gw.url(path), 100, 8).await;
        assert!(errors.is_empty(), "{path}: {errors:?}");
        assert_eq!(statuses, BTreeMap::from([(200, 100)]), "{path}");
        requests += 100;
    }
    let elapsed = started.elapsed();
    let stdio: Vec<Value> = gw
        .wait_for_logs(1, Duration::from_secs(2), |v| {
            v["target"] == "flexgate::plugin::stdio"
        })
        .await;
    assert!(!stdio.is_empty(), "no captured output in the log");
    for line in &stdio {
        let msg = log_field(line, "message")
            .and_then(Value::as_str)
            .unwrap_or_default();
        assert!(
            msg.len() <= 2048,
            "captured output not truncated: {} bytes",
            msg.len()
        );
        let dropped = log_field(line, "truncated_bytes")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        assert!(dropped > 0, "300 lines fit in 2 KiB? {line}");
    }
    // Token bucket: burst 50, 20 per second.
    let allowed = 50.0 + 20.0 * elapsed.as_secs_f64() + 2.0;
    eprintln!(
        "{requests} flooding requests in {elapsed:?} logged {} stdio lines",
        stdio.len()
    );
    assert!(
        (stdio.len() as f64) <= allowed,
        "{} stdio log lines in {elapsed:?}: not rate-limited",
        stdio.len()
    );
    if stdio.len() < requests {
        assert!(
            stdio
                .iter()
                .any(|l| log_field(l, "suppressed").and_then(Value::as_u64) > Some(0)),
            "lines were dropped but none reports `suppressed`"
        );
    }
}

/// `init` refusing its config only affects the requests through that binding: the gateway starts
/// and is ready (one error in the log names route, plugin, version and the plugin's message), the
/// `fail_closed` route answers 500 JSON with the request id without reaching the upstream, the
/// `fail_open` route skips the plugin (the rest of its chain runs), other routes are unaffected,
/// and reloads to and from such a config are accepted.
#[tokio::test]
async fn init_rejection_fails_only_that_bindings_requests_and_reloads_are_accepted() {
    let _guard = EXCLUSIVE.read().await;
    require_plugins!();
    let echo = EchoUpstream::start().await;
    let cfg = |accept: bool| {
        let reject = json!({"accept": accept});
        config(
            echo.addr(),
            &[
                def("reject", "fixture-init-reject", RELAXED),
                def("hdr", "headers", RELAXED),
            ],
            &[
                plain_route("other", "/other"),
                route(
                    "closed",
                    "/closed",
                    "",
                    &[bind("reject", reject.clone(), FAIL_CLOSED)],
                ),
                route(
                    "open",
                    "/open",
                    "",
                    &[
                        bind("reject", reject, FAIL_OPEN),
                        bind("hdr", json!({"request": {"set": {"x-after": "yes"}}}), ""),
                    ],
                ),
            ],
        )
    };
    let gw = start(&cfg(false)).await;
    let logs = gw.logs_text();
    let version = file_version("fixture-init-reject");
    assert!(
        [
            "init rejected its config",
            "fixture-init-reject: config rejected",
            "closed",
            &version
        ]
        .iter()
        .all(|s| logs.contains(s)),
        "the build-time error should name route, plugin, version and the plugin's message:\n{logs}"
    );
    let check = |accepted: bool| {
        let (gw, echo) = (&gw, &echo);
        async move {
            let seen = echo.requests();
            let r = get(gw, "/closed/x", &[]).await;
            if accepted {
                assert_eq!(r.status, 200, "{}", r.text());
            } else {
                let v = r.assert_json_error(500);
                assert_eq!(v["request_id"].as_str(), r.header("x-request-id"));
                let msg = v["error"].as_str().unwrap_or_default();
                assert!(msg.contains("reject") && msg.contains("init"), "{msg:?}");
                assert_eq!(echo.requests(), seen, "fail_closed reached the upstream");
            }
            let r = get(gw, "/open/x", &[]).await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.echo().header("x-after"), Some("yes"), "the chain went on");
            assert_eq!(get(gw, "/other/x", &[]).await.status, 200);
        }
    };
    let init_failures = || {
        metric_of(
            &gw,
            "flexgate_plugin_traps_total",
            &[("plugin", "reject"), ("reason", "init")],
        )
    };
    let at_build = init_failures().await;
    assert_eq!(at_build, 2.0, "one init failure per binding at build");
    check(false).await;
    let traps = init_failures().await - at_build;
    assert_eq!(
        traps, 2.0,
        "one init failure per request through the binding"
    );
    let errors = metric_of(
        &gw,
        "flexgate_plugin_invocations_total",
        &[("plugin", "reject"), ("outcome", "error")],
    )
    .await;
    assert_eq!(errors, 2.0);
    let ready = HttpClient::http1()
        .get(&gw.admin_url("/health/ready"))
        .await
        .expect("ready");
    assert_eq!(ready.status, 200, "{}", ready.text());
    // Reloads to an accepted config and back to a rejected one both succeed.
    let successes = r#"flexgate_config_reloads_total{result="success"}"#;
    for accept in [true, false] {
        let before = gw.metric(successes).await.unwrap_or(0.0);
        gw.rewrite_config(&cfg(accept));
        gw.signal(Signal::SIGHUP);
        let after = gw
            .wait_metric(successes, Duration::from_secs(10), |v| v > before)
            .await;
        assert!(
            after > Some(before),
            "reload (accept: {accept}) refused: {after:?}"
        );
        check(accept).await;
    }
    assert!(gw.try_wait().is_none(), "the gateway exited");
}

/// An endless loop under `timeout: 10ms` answers within the deadline plus 20 ms: the median of the
/// gateway's own measurement (access log `duration_ms`, request head to response sent) over 21
/// requests per route; the client's round trips are printed beside it. A set whose median misses
/// while the gateway sat on the run queue for at least the excess of the 11 slowest requests is
/// measured again (at most twice); the bound is never relaxed.
#[tokio::test]
async fn endless_loop_answers_within_the_deadline_plus_20ms() {
    let _guard = EXCLUSIVE.write().await;
    require_plugins!();
    let echo = EchoUpstream::start().await;
    let spin = json!({"always": true});
    let gw = start(&config(
        echo.addr(),
        &[def(
            "loop",
            "fixture-loop",
            "    limits: { memory: 16MiB, timeout: 10ms }\n",
        )],
        &[
            route("fc", "/fc", "", &[bind("loop", spin.clone(), FAIL_CLOSED)]),
            route("fo", "/fo", "", &[bind("loop", spin, FAIL_OPEN)]),
            plain_route("base", "/base"),
        ],
    ))
    .await;
    let c = HttpClient::http1();
    let limit_ms = 10.0 + 20.0;
    let mut looping_calls = 0.0;
    for (path, status) in [("/base", 200), ("/fc", 500), ("/fo", 200)] {
        let url = gw.url(path);
        for _ in 0..3 {
            call(&c, "GET", &url, &[], "").await; // warm the connection and the pool
        }
        looping_calls += 3.0;
        for attempt in 1..=3 {
            let waited = RunqueueWait::of(gw.pid());
            let mut ids = std::collections::HashSet::new();
            let mut times = Vec::new();
            for i in 0..21 {
                let id = format!("loop{path}-{attempt}-{i}").replace('/', "-");
                let t = Instant::now();
                let r = call(&c, "GET", &url, &[("x-request-id", &id)], "").await;
                times.push(t.elapsed());
                assert_eq!(r.status, status, "{path}: {}", r.text());
                ids.insert(id);
            }
            looping_calls += 21.0;
            let starved = waited.since();
            let lines = gw
                .wait_for_logs(21, Duration::from_secs(5), |v| {
                    v["target"] == "flexgate::access"
                        && v["request_id"].as_str().is_some_and(|id| ids.contains(id))
                })
                .await;
            let mut gw_ms: Vec<f64> = lines
                .iter()
                .filter_map(|v| v["duration_ms"].as_f64())
                .collect();
            assert_eq!(
                gw_ms.len(),
                21,
                "{path}: access lines of the timed requests"
            );
            gw_ms.sort_by(f64::total_cmp);
            let (med, max) = (gw_ms[10], gw_ms[20]);
            let client_med = median(times.clone());
            let client_max = *times.iter().max().expect("times");
            eprintln!(
                "{path}: gateway median {med:.2} ms, max {max:.2} ms; client median {client_med:?}, \
                 max {client_max:?}; gateway run-queue wait {starved:?}"
            );
            if path == "/base" {
                break;
            }
            let excess_ms: f64 = gw_ms[10..].iter().map(|ms| ms - limit_ms).sum();
            if med >= limit_ms && starved.total.as_secs_f64() * 1000.0 >= excess_ms && attempt < 3 {
                eprintln!("{path}: attempt {attempt} disturbed by starvation: measuring again");
                continue;
            }
            assert!(
                med < limit_ms,
                "{path}: gateway median {med:.2} ms ≥ {limit_ms} ms (run-queue wait {starved:?})"
            );
            break;
        }
    }
    // Only /fc and /fo loop: the /base calls are not counted (3 + 21 of them, subtracted here).
    looping_calls -= 24.0;
    let timeouts = metric_of(
        &gw,
        "flexgate_plugin_traps_total",
        &[("plugin", "loop"), ("reason", "timeout")],
    )
    .await;
    assert_eq!(
        timeouts, looping_calls,
        "every looping call ends in a timeout"
    );
}

/// 10 000 trapping requests (fail_closed, concurrency 16) leave the gateway ready with RSS within
/// 10 MiB of where it was after a 500-request warm-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_traps_leave_the_gateway_ready_without_growth() {
    let _guard = EXCLUSIVE.write().await;
    require_plugins!();
    let echo = EchoUpstream::start().await;
    let gw = start(&config(
        echo.addr(),
        &[def("trap", "fixture-trap", "")],
        &[
            route(
                "trap",
                "/trap",
                "",
                &[bind("trap", json!({"always": true}), FAIL_CLOSED)],
            ),
            plain_route("ok", "/ok"),
        ],
    ))
    .await;
    let url = gw.url("/trap/x");
    get(&gw, "/trap/x", &[]).await.assert_json_error(500);
    let (warm, errors) = hammer(&url, 500, 16).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(warm, BTreeMap::from([(500, 500)]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0 = gw.rss_kib();
    let started = Instant::now();
    let ((statuses, errors), peak) = gw
        .sample_rss(Duration::from_millis(100), hammer(&url, 10_000, 16))
        .await;
    let elapsed = started.elapsed();
    assert!(
        errors.is_empty(),
        "{} errors, first {:?}",
        errors.len(),
        errors.first()
    );
    assert_eq!(statuses, BTreeMap::from([(500, 10_000)]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss1 = gw.rss_kib();
    let delta = rss1 as i64 - rss0 as i64;
    eprintln!(
        "10000 traps in {elapsed:?}: RSS {rss0} KiB -> {rss1} KiB (delta {delta} KiB, peak {peak} KiB)"
    );
    let ready = HttpClient::http1()
        .get(&gw.admin_url("/health/ready"))
        .await
        .expect("ready");
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(get(&gw, "/ok", &[]).await.status, 200);
    get(&gw, "/trap/x", &[]).await.assert_json_error(500);
    assert!(delta.abs() < 10 * 1024, "RSS moved by {delta} KiB");
    // Every trapping call is counted once. Under this load (16 clients on 2 cores, debug build) a
    // few calls are descheduled past the 10 ms wall-clock deadline and count as `timeout`.
    let text = gw.metrics_text().await;
    let by_reason = |reason: &str| {
        metric_sum(
            &text,
            "flexgate_plugin_traps_total",
            &[("plugin", "trap"), ("reason", reason)],
        )
        .unwrap_or(0.0)
    };
    let (traps, timeouts) = (by_reason("trap"), by_reason("timeout"));
    eprintln!("traps_total: trap {traps}, timeout {timeouts}");
    if timeouts > 0.0 {
        let timed_out: std::collections::HashSet<String> = gw
            .json_logs()
            .iter()
            .filter(|v| v["message"] == "plugin failed" && v["kind"] == "timeout")
            .filter_map(|v| v["request_id"].as_str().map(str::to_owned))
            .collect();
        let mut ms: Vec<f64> = gw
            .access_logs()
            .iter()
            .filter(|v| {
                v["request_id"]
                    .as_str()
                    .is_some_and(|id| timed_out.contains(id))
            })
            .filter_map(|v| v["duration_ms"].as_f64())
            .collect();
        ms.sort_by(f64::total_cmp);
        eprintln!(
            "timed-out requests: {} (min {:?} ms, median {:?} ms)",
            ms.len(),
            ms.first(),
            ms.get(ms.len() / 2)
        );
    }
    assert_eq!(traps + timeouts, 10_502.0);
    assert_eq!(by_reason("memory") + by_reason("init"), 0.0);
}

// ---------------------------------------------------------------------------------------------
// Metrics and reload
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn plugin_metrics_are_exported_with_sensible_values() {
    let _guard = EXCLUSIVE.read().await;
    require_plugins!();
    let echo = EchoUpstream::start().await;
    let gw = start(&config(
        echo.addr(),
        &[
            def("hdr", "headers", RELAXED),
            def("trap", "fixture-trap", RELAXED),
            def(
                "flaky",
                "fixture-flaky",
                &format!("    isolation: per_request\n{RELAXED}"),
            ),
        ],
        &[
            route(
                "m-hdr",
                "/hdr",
                "",
                &[bind("hdr", json!({"response": {"set": {"x-m": "1"}}}), "")],
            ),
            // fixture-trap traps on paths containing `/trap`.
            route("m-trap", "/t", "", &[bind("trap", json!({}), FAIL_OPEN)]),
            route(
                "m-flaky",
                "/flaky",
                "",
                &[bind("flaky", json!({"error_rate": 0.0}), "")],
            ),
        ],
    ))
    .await;
    for _ in 0..10 {
        assert_eq!(get(&gw, "/hdr/x", &[]).await.status, 200);
    }
    for path in ["/t/trap", "/t/trap", "/t/ok"] {
        assert_eq!(get(&gw, path, &[]).await.status, 200, "{path}");
    }
    for _ in 0..5 {
        assert_eq!(get(&gw, "/flaky/x", &[]).await.status, 200);
    }
    let text = gw.metrics_text().await;
    let hdr_v = file_version("headers");
    let trap_v = file_version("fixture-trap");
    let inv = |plugin: &str, version: &str, route: &str, hook: &str, outcome: &str| {
        metric_sum(
            &text,
            "flexgate_plugin_invocations_total",
            &[
                ("plugin", plugin),
                ("version", version),
                ("route", route),
                ("hook", hook),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(
        inv("hdr", &hdr_v, "m-hdr", "on_request", "continue"),
        Some(10.0)
    );
    assert_eq!(
        inv("hdr", &hdr_v, "m-hdr", "on_response", "continue"),
        Some(10.0)
    );
    assert_eq!(
        inv("hdr", &hdr_v, "m-hdr", "on_request", "error"),
        Some(0.0)
    );
    assert_eq!(
        inv("trap", &trap_v, "m-trap", "on_request", "error"),
        Some(2.0)
    );
    assert_eq!(
        inv("trap", &trap_v, "m-trap", "on_request", "continue"),
        Some(1.0)
    );
    let hist = |suffix: &str, hook: &str, extra: &[(&str, &str)]| {
        let mut want = vec![
            ("plugin", "hdr"),
            ("version", hdr_v.as_str()),
            ("hook", hook),
        ];
        want.extend_from_slice(extra);
        metric_sum(
            &text,
            &format!("flexgate_plugin_duration_seconds{suffix}"),
            &want,
        )
    };
    for hook in ["on_request", "on_response"] {
        let count = hist("_count", hook, &[]).expect("duration count");
        let sum = hist("_sum", hook, &[]).expect("duration sum");
        let inf = hist("_bucket", hook, &[("le", "+Inf")]).expect("+Inf bucket");
        assert_eq!(count, 10.0, "{hook}: one observation per call");
        assert_eq!(inf, count, "{hook}");
        assert!(
            sum > 0.0 && sum / count < 0.010,
            "{hook}: mean {} s",
            sum / count
        );
    }
    assert!(
        hist("_count", "init", &[]).unwrap_or(0.0) >= 1.0,
        "init durations"
    );
    assert_eq!(
        metric_sum(
            &text,
            "flexgate_plugin_traps_total",
            &[("plugin", "trap"), ("version", &trap_v), ("reason", "trap")]
        ),
        Some(2.0)
    );
    for reason in ["timeout", "memory", "init"] {
        assert_eq!(
            metric_sum(
                &text,
                "flexgate_plugin_traps_total",
                &[("plugin", "trap"), ("reason", reason)]
            ),
            Some(0.0),
            "{reason} exported at 0"
        );
    }
    let mem = metric_sum(
        &text,
        "flexgate_plugin_memory_bytes",
        &[("plugin", "hdr"), ("version", &hdr_v)],
    )
    .expect("memory gauge");
    assert!(
        mem > 0.0 && mem <= 16.0 * 1024.0 * 1024.0,
        "memory high-water {mem}"
    );
    let inst = |plugin: &str| {
        metric_sum(
            &text,
            "flexgate_plugin_instantiations_total",
            &[("plugin", plugin)],
        )
    };
    assert!(
        inst("hdr").is_some_and(|n| (1.0..=3.0).contains(&n)),
        "pooled: {:?}",
        inst("hdr")
    );
    // A trap drops the pooled instance: at least the load-time one and one after each trap.
    assert!(
        inst("trap").is_some_and(|n| n >= 3.0),
        "trap: {:?}",
        inst("trap")
    );
    assert!(
        inst("flaky").is_some_and(|n| n >= 6.0),
        "per_request: {:?}",
        inst("flaky")
    );

    match which("promtool") {
        Some(promtool) => {
            let mut child = std::process::Command::new(promtool)
                .args(["check", "metrics"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn promtool");
            {
                use std::io::Write;
                let mut stdin = child.stdin.take().expect("stdin");
                stdin.write_all(text.as_bytes()).expect("write metrics");
            }
            let out = child.wait_with_output().expect("promtool");
            assert!(
                out.status.success(),
                "promtool check metrics: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        None => {
            assert!(
                std::env::var("CI_REQUIRE_TOOLS").as_deref() != Ok("1"),
                "promtool is not installed"
            );
            eprintln!("skipping promtool check: promtool not installed");
        }
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// Reloads (SIGHUP, then a file replace picked up by the watcher) switch a route's plugin config,
/// and its isolation, while 4 clients keep sending: no request fails and each new config applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_switches_plugin_config_without_dropping_requests() {
    let _guard = EXCLUSIVE.read().await;
    require_plugins!();
    let echo = EchoUpstream::start().await;
    let cfg = |v: &str, isolation: &str| {
        config(
            echo.addr(),
            &[def(
                "hdr",
                "headers",
                &format!("    isolation: {isolation}\n{RELAXED}"),
            )],
            &[route(
                "r",
                "/r",
                "",
                &[bind(
                    "hdr",
                    json!({"request": {"set": {"x-config": v}}, "response": {"set": {"x-config": v}}}),
                    "",
                )],
            )],
        )
    };
    let gw = start(&cfg("v1", "pooled")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (stop, ok, bad, url) = (
                stop.clone(),
                ok.clone(),
                bad.clone(),
                gw.url(&format!("/r/{w}")),
            );
            tokio::spawn(async move {
                let c = HttpClient::http1();
                while !stop.load(Ordering::Relaxed) {
                    match c.get(&url).await {
                        Ok(r) if r.status == 200 => {
                            let up = r.echo();
                            if up.header("x-config") != r.header("x-config") {
                                bad.lock().expect("lock").push(format!(
                                    "mixed configs: request {:?}, response {:?}",
                                    up.header("x-config"),
                                    r.header("x-config")
                                ));
                            }
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => bad.lock().expect("lock").push(format!(
                            "status {}: {}",
                            r.status,
                            r.text()
                        )),
                        Err(e) => bad.lock().expect("lock").push(format!("error: {e}")),
                    }
                }
            })
        })
        .collect();
    let serving = |want: &'static str| {
        let gw = &gw;
        async move {
            eventually(Duration::from_secs(8), || async {
                get(gw, "/r/probe", &[]).await.echo().header("x-config") == Some(want)
            })
            .await
        }
    };
    assert!(serving("v1").await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.rewrite_config(&cfg("v2", "pooled"));
    gw.signal(Signal::SIGHUP);
    assert!(serving("v2").await, "SIGHUP reload not applied");
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.rewrite_config(&cfg("v3", "per_request"));
    assert!(serving("v3").await, "watched reload not applied");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    let bad = bad.lock().expect("lock").clone();
    let ok = ok.load(Ordering::Relaxed);
    eprintln!("{ok} requests OK across 2 plugin reloads");
    assert!(
        bad.is_empty(),
        "{} failed, first: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert!(ok >= 50, "too little load: {ok}");
    for _ in 0..5 {
        let r = get(&gw, "/r/after", &[]).await;
        assert_eq!(
            (r.echo().header("x-config"), r.header("x-config")),
            (Some("v3"), Some("v3"))
        );
    }
}
