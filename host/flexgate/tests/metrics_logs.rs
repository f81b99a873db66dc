//! Prometheus metrics and JSON access logs.

use std::time::Duration;

use flexgate_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_flexgate");

async fn gateway(echo: &EchoUpstream) -> Gateway {
    let cfg = format!(
        "upstreams:\n  - name: echo_up\n{}routes:\n  - name: echo_route\n    match:\n      path_prefix: /some\n    upstream: echo_up\n",
        yaml::targets(&[echo.addr()])
    );
    Gateway::start(BIN, &cfg).await
}

/// Every label value in a Prometheus text exposition.
fn label_values(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (Some(open), Some(close)) = (line.find('{'), line.rfind('}')) else {
            continue;
        };
        let mut rest = &line[open + 1..close];
        while let Some(q) = rest.find("=\"") {
            let after = &rest[q + 2..];
            let mut end = 0;
            let bytes = after.as_bytes();
            while end < bytes.len()
                && !(bytes[end] == b'"' && (end == 0 || bytes[end - 1] != b'\\'))
            {
                end += 1;
            }
            out.push(after[..end].to_owned());
            rest = after.get(end + 1..).unwrap_or("");
        }
    }
    out
}

#[tokio::test]
async fn metrics_expose_the_core_series_without_raw_paths() {
    let echo = EchoUpstream::start().await;
    let gw = gateway(&echo).await;
    let c = HttpClient::http1();
    for _ in 0..3 {
        assert_eq!(
            c.get(&gw.url("/some/raw/path-12345?token=secret"))
                .await
                .expect("req")
                .status,
            200
        );
    }
    assert_eq!(
        c.get(&gw.url("/unmatched-zzz/987"))
            .await
            .expect("req")
            .status,
        404
    );
    let text = gw.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            r#"flexgate_http_requests_total{method="GET",route="echo_route",status="200"}"#
        ),
        Some(3.0),
        "{text}"
    );
    for needle in [
        r#"flexgate_http_request_duration_seconds_bucket{route="echo_route""#,
        r#"flexgate_http_request_duration_seconds_count{route="echo_route"} 3"#,
        "flexgate_upstream_requests_total{",
        r#"upstream="echo_up""#,
        "flexgate_upstream_request_duration_seconds_bucket{",
        "flexgate_open_connections ",
        "flexgate_in_flight_requests ",
        r#"flexgate_build_info{version="0.1.0"} 1"#,
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let upstream_ok: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("flexgate_upstream_requests_total{")
                && l.contains(r#"upstream="echo_up""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(upstream_ok, 3.0, "upstream attempts: {text}");
    let labels = label_values(&text);
    assert!(!labels.is_empty());
    for v in &labels {
        assert!(!v.starts_with('/'), "a raw path is a label value: {v:?}");
        assert!(
            !v.contains("path-12345") && !v.contains("unmatched-zzz") && !v.contains("secret"),
            "{v:?}"
        );
    }
}

#[tokio::test]
async fn metrics_pass_promtool_check() {
    let Ok(out) = std::process::Command::new("promtool")
        .arg("--version")
        .output()
    else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "promtool is not on PATH (install the `prometheus` package); required when CI is set"
            );
        }
        eprintln!(
            "note: promtool not on PATH, skipping `promtool check metrics` (set CI to make this fail)"
        );
        return;
    };
    assert!(out.status.success(), "promtool --version failed");
    let echo = EchoUpstream::start().await;
    let gw = gateway(&echo).await;
    let c = HttpClient::http1();
    assert_eq!(c.get(&gw.url("/some/x")).await.expect("req").status, 200);
    assert_eq!(c.get(&gw.url("/nope")).await.expect("req").status, 404);
    let text = gw.metrics_text().await;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(text.as_bytes())
            .expect("write metrics to promtool");
    }
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- metrics ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn status_of(v: &serde_json::Value) -> Option<u64> {
    v.get("status")
        .and_then(|s| s.as_u64().or_else(|| s.as_str()?.parse().ok()))
}

#[tokio::test]
async fn one_json_access_log_line_per_request() {
    let echo = EchoUpstream::start().await;
    let gw = gateway(&echo).await;
    let c = HttpClient::http1();
    let ids = ["log-id-1", "log-id-2", "log-id-3"];
    for id in ids {
        let r = c
            .call(
                "GET",
                &gw.url("/some/thing?x=1"),
                &[("x-request-id", id)],
                empty(),
            )
            .await
            .expect("req");
        assert_eq!(r.status, 200);
    }
    let r = c
        .call(
            "POST",
            &gw.url("/missing"),
            &[("x-request-id", "log-id-404")],
            full("x"),
        )
        .await
        .expect("req");
    assert_eq!(r.status, 404);

    let lines = gw
        .wait_for_logs(4, Duration::from_secs(5), |v| {
            v.get("request_id")
                .and_then(|i| i.as_str())
                .is_some_and(|i| i.starts_with("log-id-"))
        })
        .await;
    let access = gw.access_logs();
    for id in ids {
        let mine: Vec<_> = lines.iter().filter(|v| v["request_id"] == id).collect();
        assert_eq!(
            mine.len(),
            1,
            "expected exactly one log line for {id}: {mine:?}\nall output:\n{}",
            gw.logs_text()
        );
        let v = mine[0];
        assert_eq!(v["target"], "flexgate::access", "{v}");
        assert_eq!(v["route"], "echo_route", "{v}");
        assert_eq!(v["method"], "GET", "{v}");
        assert_eq!(status_of(v), Some(200), "{v}");
        let ms = v.get("duration_ms").and_then(|d| d.as_f64());
        assert!(
            ms.is_some_and(|ms| (0.0..5000.0).contains(&ms)),
            "duration_ms: {v}"
        );
        assert!(access.contains(v));
    }
    let miss: Vec<_> = lines
        .iter()
        .filter(|v| v["request_id"] == "log-id-404")
        .collect();
    assert_eq!(miss.len(), 1, "{miss:?}");
    assert_eq!(miss[0]["target"], "flexgate::access");
    assert_eq!(miss[0]["method"], "POST");
    assert_eq!(status_of(miss[0]), Some(404));
    // access lines go to stdout, as JSON, one object per line
    assert!(access.len() >= 4);
}
