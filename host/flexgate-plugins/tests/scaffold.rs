//! The scaffolded crate really builds as a component (slow: a separate cargo build, so ignored
//! by default; run with `cargo test -p flexgate-plugins --test scaffold -- --ignored`).
#![allow(clippy::unwrap_used)]

#[test]
#[ignore = "runs a full cargo build for wasm32-wasip2"]
fn scaffold_builds_and_runs() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("scaffold-e2e");
    let _ = std::fs::remove_dir_all(&dir);
    flexgate_plugins::scaffold("hello-plugin", &dir).unwrap();
    let krate = dir.join("hello-plugin");
    let target = dir.join("target");
    for args in [
        vec!["test", "--quiet"],
        vec!["build", "--release", "--target", "wasm32-wasip2", "--quiet"],
    ] {
        let status = std::process::Command::new(env!("CARGO"))
            .args(&args)
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(&krate)
            .status()
            .unwrap();
        assert!(status.success(), "cargo {args:?} failed");
    }
    let wasm = target.join("wasm32-wasip2/release/hello_plugin.wasm");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt
        .block_on(flexgate_plugins::test_plugin(
            &wasm,
            "{}",
            r#"{"path":"/x","request_id":"id-7"}"#,
            Some("{}"),
        ))
        .unwrap();
    assert!(report.contains("+ x-hello-plugin: id-7"), "{report}");
    assert!(report.contains("+ x-hello-plugin-seen: 1"), "{report}");
}
