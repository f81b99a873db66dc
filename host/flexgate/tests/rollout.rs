//! Plugin rollouts through the real gateway: registry changes apply live (also across replicas
//! sharing Redis), canaries are sticky per client, and a failing canary is rolled back by its guard.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use flexgate_admin::api::{AuthSettings, Role};
use flexgate_testkit::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_flexgate");
const SECRET: &str = "rollout-test-secret-0123456789abcdef0123456789";
const SECRET_ENV: &str = "FLEXGATE_ADMIN_JWT_SECRET";

fn dist(name: &str) -> Option<Vec<u8>> {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../plugins/dist/{name}.wasm"));
    match std::fs::read(&p) {
        Ok(b) => Some(b),
        Err(e) if std::env::var("CI_REQUIRE_TOOLS").is_ok_and(|v| v == "1") => {
            panic!("{}: {e} (run `bash plugins/build.sh`)", p.display())
        }
        Err(e) => {
            eprintln!(
                "skipping: {}: {e} (run `bash plugins/build.sh`)",
                p.display()
            );
            None
        }
    }
}

/// The same component with an extra custom section: different bytes (a new sha256, a new
/// version), identical behaviour.
fn variant(bytes: &[u8], tag: &str) -> Vec<u8> {
    let mut payload = vec![u8::try_from(tag.len()).expect("short tag")];
    payload.extend_from_slice(tag.as_bytes());
    payload.extend_from_slice(b"variant");
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    out.push(u8::try_from(payload.len()).expect("short section"));
    out.extend_from_slice(&payload);
    out
}

fn token() -> String {
    AuthSettings::new(SECRET.as_bytes().to_vec())
        .expect("auth")
        .issue("rollout-test", Role::Admin)
        .expect("token")
        .0
}

async fn api(
    gw: &Gateway,
    method: &str,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, Value) {
    let auth = format!("Bearer {}", token());
    let mut headers = vec![("authorization", auth.as_str())];
    let body = match body {
        Some((ct, b)) => {
            headers.push(("content-type", ct));
            full(b)
        }
        None => empty(),
    };
    let r = HttpClient::http1()
        .call(method, &gw.admin_url(path), &headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status.as_u16(), v)
}

async fn upload(gw: &Gateway, name: &str, version: &str, bytes: Vec<u8>) {
    let (status, body) = api(
        gw,
        "POST",
        &format!("/api/plugins?name={name}&version={version}"),
        Some(("application/wasm", bytes)),
    )
    .await;
    assert!(
        status == 201 || status == 200,
        "upload {name}@{version}: {status} {body}"
    );
}

async fn put_rollout(gw: &Gateway, route: &str, plugin: &str, spec: Value) -> Value {
    let (status, body) = api(
        gw,
        "PUT",
        &format!("/api/rollouts/{route}/{plugin}"),
        Some(("application/json", spec.to_string().into_bytes())),
    )
    .await;
    assert_eq!(status, 200, "put rollout: {body}");
    body
}

async fn get_rollout(gw: &Gateway, route: &str, plugin: &str) -> Value {
    let (status, body) = api(gw, "GET", &format!("/api/rollouts/{route}/{plugin}"), None).await;
    assert_eq!(status, 200, "get rollout: {body}");
    body
}

fn upstream_yaml(echo: &EchoUpstream) -> String {
    format!(
        "upstreams:\n  - name: up\n    targets:\n      - addr: \"{}\"\n",
        echo.addr()
    )
}

/// A config whose route `r` binds registry plugin `plugin` (or binds nothing when `bind` is false).
fn config(
    echo: &EchoUpstream,
    store: &str,
    plugin: &str,
    bind: bool,
    plugin_config: &str,
) -> String {
    let binding = if bind {
        format!("    plugins:\n      - use: {plugin}\n        config: {plugin_config}\n")
    } else {
        String::new()
    };
    format!(
        "{store}plugins:\n  - name: {plugin}\n{}routes:\n  - name: r\n    upstream: up\n{binding}",
        upstream_yaml(echo)
    )
}

/// Which version served each path, from the access log (`plugins` = `name@version`).
fn versions_by_path(gw: &Gateway, plugin: &str) -> HashMap<String, HashSet<String>> {
    let mut out: HashMap<String, HashSet<String>> = HashMap::new();
    for line in gw.access_logs() {
        let path = line["fields"]["path"]
            .as_str()
            .or_else(|| line["path"].as_str())
            .unwrap_or("")
            .to_owned();
        let plugins = line["fields"]["plugins"]
            .as_str()
            .or_else(|| line["plugins"].as_str())
            .unwrap_or("");
        for p in plugins.split(',') {
            if let Some(v) = p.strip_prefix(&format!("{plugin}@")) {
                out.entry(path.clone()).or_default().insert(v.to_owned());
            }
        }
    }
    out
}

async fn hit_user(gw: &Gateway, user: u32) -> u16 {
    let path = format!("/u/{user}");
    let id = user.to_string();
    HttpClient::http1()
        .call("GET", &gw.url(&path), &[("x-user", id.as_str())], empty())
        .await
        .map_or(0, |r| r.status.as_u16())
}

/// Two replicas share one Redis: a canary set on A reaches B within 1 s, about 20% of clients
/// get it, each client always the same version (on both replicas); a rollback on B reaches A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_on_one_replica_reaches_the_other_through_redis() {
    let Some(headers) = dist("headers") else {
        return;
    };
    let Some(redis) = RedisServer::start_or_skip("canary_on_one_replica") else {
        return;
    };
    let echo = EchoUpstream::start().await;
    let store = format!("store:\n  kind: redis\n  url: \"{}\"\n", redis.url());
    let plugin_cfg = "{response: {set: {x-tagged: \"yes\"}}}";
    let a = Gateway::builder(BIN)
        .config(config(&echo, &store, "tagger", false, plugin_cfg))
        .env(SECRET_ENV, SECRET)
        .start()
        .await;
    upload(&a, "tagger", "1.0.0", variant(&headers, "v1")).await;
    upload(&a, "tagger", "2.0.0", variant(&headers, "v2")).await;
    put_rollout(
        &a,
        "r",
        "tagger",
        json!({"stable": "1.0.0", "sticky": "header:x-user", "revision": 0}),
    )
    .await;
    a.rewrite_config(&config(&echo, &store, "tagger", true, plugin_cfg));
    a.wait_metric(
        "flexgate_config_reloads_total{result=\"success\"}",
        Duration::from_secs(5),
        |v| v >= 1.0,
    )
    .await
    .expect("A reloaded with the binding");
    let b = Gateway::builder(BIN)
        .config(config(&echo, &store, "tagger", true, plugin_cfg))
        .env(SECRET_ENV, SECRET)
        .start()
        .await;
    assert_eq!(hit_user(&b, 0).await, 200);

    let current = get_rollout(&a, "r", "tagger").await;
    let set_at = Instant::now();
    put_rollout(
        &a,
        "r",
        "tagger",
        json!({"stable": "1.0.0", "canary": "2.0.0", "canary_percent": 20,
               "sticky": "header:x-user", "revision": current["revision"]}),
    )
    .await;
    // B serves the canary within 1 s (the first 50 users include some canary ones w.h.p.).
    let mut seen_at = None;
    while set_at.elapsed() < Duration::from_secs(3) && seen_at.is_none() {
        for u in 0..50 {
            hit_user(&b, u).await;
        }
        if versions_by_path(&b, "tagger")
            .values()
            .any(|v| v.contains("2.0.0"))
        {
            seen_at = Some(set_at.elapsed());
        }
    }
    let seen_at = seen_at.expect("B never served the canary");
    eprintln!("canary visible on B after {seen_at:?}");
    assert!(seen_at < Duration::from_secs(1), "B took {seen_at:?}");

    // 400 clients, 3 requests each, on both replicas.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let first = 1000;
    for round in 0..3 {
        for u in first..first + 400 {
            let gw = if (u + round) % 2 == 0 { &a } else { &b };
            assert_eq!(hit_user(gw, u).await, 200);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut by_user: HashMap<String, HashSet<String>> = HashMap::new();
    for gw in [&a, &b] {
        for (path, vs) in versions_by_path(gw, "tagger") {
            let user: u32 = path.trim_start_matches("/u/").parse().unwrap_or(0);
            if user >= first {
                by_user.entry(path).or_default().extend(vs);
            }
        }
    }
    assert_eq!(by_user.len(), 400, "every client was logged");
    let inconsistent: Vec<_> = by_user.iter().filter(|(_, v)| v.len() != 1).collect();
    assert!(
        inconsistent.is_empty(),
        "clients that switched versions: {inconsistent:?}"
    );
    let canary = by_user.values().filter(|v| v.contains("2.0.0")).count();
    let share = canary as f64 / 400.0;
    eprintln!("canary share {share:.3} ({canary}/400)");
    assert!((0.13..=0.27).contains(&share), "canary share {share}");

    // Rollback on B; A follows within 1 s.
    let (status, body) = api(
        &b,
        "POST",
        "/api/rollouts/r/tagger/rollback",
        Some(("application/json", br#"{"reason":"test"}"#.to_vec())),
    )
    .await;
    assert_eq!(status, 200, "rollback: {body}");
    let canary_users: Vec<u32> = by_user
        .iter()
        .filter(|(_, v)| v.contains("2.0.0"))
        .filter_map(|(p, _)| p.trim_start_matches("/u/").parse().ok())
        .collect();
    let rolled_at = Instant::now();
    let probe = canary_users[0];
    loop {
        hit_user(&a, probe).await;
        let last = a
            .access_logs()
            .iter()
            .rev()
            .find(|l| {
                l["fields"]["path"].as_str().or(l["path"].as_str()) == Some(&format!("/u/{probe}"))
            })
            .map(|l| {
                l["fields"]["plugins"]
                    .as_str()
                    .or(l["plugins"].as_str())
                    .unwrap_or("")
                    .to_owned()
            })
            .unwrap_or_default();
        if last == "tagger@1.0.0" {
            break;
        }
        assert!(
            rolled_at.elapsed() < Duration::from_secs(2),
            "A still serves {last} after the rollback on B"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("rollback visible on A after {:?}", rolled_at.elapsed());
    assert!(rolled_at.elapsed() < Duration::from_secs(1));
}

/// A canary that fails 30% of its requests is rolled back by the error-rate guard within its
/// window while stable keeps serving; the metric and the audit log say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_canary_is_rolled_back_by_its_guard() {
    let (Some(headers), Some(flaky)) = (dist("headers"), dist("fixture-flaky")) else {
        return;
    };
    let echo = EchoUpstream::start().await;
    let gw = Gateway::builder(BIN)
        .config(config(&echo, "", "edge", false, "{}"))
        .env(SECRET_ENV, SECRET)
        .start()
        .await;
    upload(&gw, "edge", "1.0.0", headers).await;
    upload(&gw, "edge", "1.1.0", flaky).await;
    put_rollout(&gw, "r", "edge", json!({"stable": "1.0.0", "revision": 0})).await;
    gw.rewrite_config(&config(&echo, "", "edge", true, "{}"));
    gw.wait_metric(
        "flexgate_config_reloads_total{result=\"success\"}",
        Duration::from_secs(5),
        |v| v >= 1.0,
    )
    .await
    .expect("reloaded with the binding");
    let current = get_rollout(&gw, "r", "edge").await;
    put_rollout(
        &gw,
        "r",
        "edge",
        json!({"stable": "1.0.0", "canary": "1.1.0", "canary_percent": 50, "sticky": "random",
               "guards": {"max_error_rate": 0.1, "min_requests": 40, "window": "10s"},
               "revision": current["revision"]}),
    )
    .await;
    let started = Instant::now();
    let mut failures = 0;
    let rolled_back = loop {
        for u in 0..20 {
            if hit_user(&gw, u).await == 500 {
                failures += 1;
            }
        }
        let r = get_rollout(&gw, "r", "edge").await;
        if r["canary"].is_null() {
            break Some(r);
        }
        if started.elapsed() > Duration::from_secs(10) {
            break None;
        }
    };
    let r = rolled_back.expect("the canary was not rolled back within its 10 s window");
    eprintln!(
        "rolled back after {:?} with {failures} failed requests",
        started.elapsed()
    );
    assert!(
        failures > 0,
        "the canary never failed: the test proves nothing"
    );
    let reason = r["last_rollback"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("error_rate"), "reason: {r}");
    assert_eq!(r["canary_percent"], 0);
    assert_eq!(r["stable"], "1.0.0");

    // Stable never failed: every 500 ran the canary.
    let failed_versions: HashSet<String> = gw
        .access_logs()
        .iter()
        .filter(|l| l["fields"]["status"].as_u64().or(l["status"].as_u64()) == Some(500))
        .map(|l| {
            l["fields"]["plugins"]
                .as_str()
                .or(l["plugins"].as_str())
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(failed_versions, HashSet::from(["edge@1.1.0".to_owned()]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for u in 0..100 {
        assert_eq!(hit_user(&gw, u).await, 200, "stable after rollback");
    }
    let metric = gw
        .wait_metric(
            "flexgate_plugin_rollbacks_total{plugin=\"edge\",reason=\"error_rate\",route=\"r\"}",
            Duration::from_secs(2),
            |v| v >= 1.0,
        )
        .await;
    assert_eq!(metric, Some(1.0), "{}", gw.metrics_text().await);
    let (status, audit) = api(&gw, "GET", "/api/audit", None).await;
    assert_eq!(status, 200);
    let entry = audit["entries"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["action"] == "rollout.auto_rollback"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(entry["who"], "guard", "audit: {audit}");
    assert!(
        entry["result"]
            .as_str()
            .unwrap_or("")
            .contains("error_rate"),
        "audit: {entry}"
    );
}
