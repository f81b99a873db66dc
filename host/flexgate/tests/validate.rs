//! `flexgate validate` and `flexgate --version`.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_flexgate");

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run flexgate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle in text")
        + 1
}

const GOOD: &str = r#"version: 1
listen: "127.0.0.1:18080"
admin:
  listen: "127.0.0.1:18081"
metrics:
  listen: "127.0.0.1:19090"
upstreams:
  - name: users
    load_balancing: round_robin
    targets:
      - addr: "127.0.0.1:9001"
        weight: 2
      - addr: "127.0.0.1:9002"
    timeouts:
      request: 5s
routes:
  - name: users
    match:
      host: "*.example.com"
      path_prefix: /users
    strip_prefix: true
    upstream: users
  - name: hello
    match:
      path: /hello
    respond:
      status: 200
      body: hi
"#;

#[test]
fn a_good_file_validates() {
    let dir = flexgate_testkit::tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("good.yaml");
    std::fs::write(&path, GOOD).expect("write");
    let (code, text) = run(&["validate", "--config", path.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn three_mistakes_are_all_reported_with_file_line_column_and_path() {
    let bad = r#"version: 1
upstreams:
  - name: users
    targets:
      - addr: "127.0.0.1:9001"
    timeouts:
      request: 5
routes:
  - name: a
    upstream: users
  - name: b
    upstream: users
    strip_prefx: true
  - name: c
    upstream: users2
"#;
    let dir = flexgate_testkit::tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, bad).expect("write");
    let file = path.to_str().expect("utf8");
    let (code, text) = run(&["validate", "--config", file]);
    assert_ne!(code, 0, "{text}");
    let expected = [
        (
            line_of(bad, "request: 5"),
            "upstreams[0].timeouts.request",
            "",
        ),
        (line_of(bad, "strip_prefx"), "routes[1]", "strip_prefx"),
        (
            line_of(bad, "users2"),
            "routes[2].upstream",
            r#"unknown upstream "users2""#,
        ),
    ];
    for (line, field, message) in expected {
        let prefix = format!("{file}:{line}:");
        let found = text
            .lines()
            .find(|l| l.starts_with(&prefix) && l.contains(field) && l.contains(message));
        let found = found
            .unwrap_or_else(|| panic!("no `{prefix}COL: {field}...{message}` line in:\n{text}"));
        // FILE:LINE:COL: path: message
        let rest = &found[prefix.len()..];
        let (col, rest) = rest.split_once(": ").expect("COL: after LINE");
        assert!(
            col.parse::<usize>().is_ok_and(|c| c >= 1),
            "column in {found:?}"
        );
        assert!(
            rest.starts_with(field),
            "path right after the column in {found:?}"
        );
    }
    let exact = format!("{file}:{}:", line_of(bad, "users2"));
    assert!(
        text.lines().any(|l| l.starts_with(&exact)
            && l.ends_with(r#"routes[2].upstream: unknown upstream "users2""#)),
        "{text}"
    );
}

#[test]
fn version_prints_name_and_version() {
    let (code, text) = run(&["--version"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(text.trim(), "flexgate 0.1.0");
}
