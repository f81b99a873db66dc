//! The gateway compiles plugins in a child process (issue 6: Cranelift's code pages and heap stay
//! out of the gateway's idle RSS), and a restart on the same data folder loads the cached artifact
//! without starting one.
//!
//! Needs `plugins/dist/headers.wasm` (`bash plugins/build.sh`); without it the test says why and
//! passes, unless `CI_REQUIRE_TOOLS=1`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flexgate_testkit::serde_json::Value;
use flexgate_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_flexgate");

fn headers_wasm() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/dist/headers.wasm");
    if p.is_file() {
        return Some(p);
    }
    let msg = format!("{} is missing: run `bash plugins/build.sh`", p.display());
    assert!(
        std::env::var("CI_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "{msg}"
    );
    eprintln!("skipping: {msg}");
    None
}

async fn start(body: &str) -> Gateway {
    Gateway::builder(BIN)
        .config(body)
        .env("RUST_LOG", "info,flexgate_plugins=debug")
        .ready_timeout(Duration::from_secs(120))
        .start()
        .await
}

/// The JSON log lines whose message is `message`.
fn lines(gw: &Gateway, message: &str) -> Vec<Value> {
    gw.json_logs()
        .into_iter()
        .filter(|v| v["message"] == message)
        .collect()
}

fn cached_artifacts(store: &Path) -> usize {
    std::fs::read_dir(store.join("compiled"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_cold_start_compiles_in_a_child_and_a_restart_loads_its_artifact() {
    let Some(wasm) = headers_wasm() else { return };
    let store = tempfile::tempdir().expect("store folder");
    let echo = EchoUpstream::builder().start().await;
    let body = format!(
        "store:\n  kind: file\n  path: \"{}\"\nplugins:\n  - name: hdr\n    source: \"{}\"\n    limits: {{ timeout: 1s }}\nupstreams:\n  - name: up\n{}routes:\n  - name: r\n    match:\n      path_prefix: /\n    upstream: up\n    plugins:\n      - use: hdr\n        config: {{\"request\": {{\"set\": {{\"x-compiled\": \"elsewhere\"}}}}}}\n",
        store.path().display(),
        wasm.display(),
        yaml::targets(&[echo.addr()]),
    );

    let gw = start(&body).await;
    let logs = gw.logs_text();
    let compiled = lines(&gw, "plugin compiled out of process");
    assert_eq!(compiled.len(), 1, "{logs}");
    let child = compiled[0]["compiler_pid"].as_u64().expect("compiler_pid");
    assert_ne!(child, u64::from(gw.pid()), "{logs}");
    assert!(
        lines(&gw, "plugin compiled").is_empty(),
        "compiled in process too: {logs}"
    );
    assert_eq!(cached_artifacts(store.path()), 1, "{logs}");
    // The artifact the child wrote is the one serving requests.
    let echoed = HttpClient::http1()
        .get(&gw.url("/a"))
        .await
        .expect("proxied request")
        .echo();
    assert!(
        echoed
            .headers
            .iter()
            .any(|(k, v)| k == "x-compiled" && v == "elsewhere"),
        "{:?}",
        echoed.headers
    );
    drop(gw);

    let gw = start(&body).await;
    let logs = gw.logs_text();
    assert_eq!(lines(&gw, "plugin loaded from cache").len(), 1, "{logs}");
    assert!(
        lines(&gw, "plugin compiled out of process").is_empty(),
        "{logs}"
    );
}
