//! `flexgate validate` for plugins that come from the registry (no `source`): a route binding
//! without `version:` needs a rollout with a stable version in the configured store, a pinned
//! version must have been uploaded, and the store is read without being changed.

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use flexgate_registry::{FileStore, NewVersion, RolloutSpec, Store};

const BIN: &str = env!("CARGO_BIN_EXE_flexgate");

fn validate(config: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(config)
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

const CONFIG: &str = r#"version: 1
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
metrics: { listen: "127.0.0.1:0" }
store: { kind: file, path: ./registry }
plugins:
  - name: headers
  - name: cors
routes:
  - name: hello
    match: { path_prefix: / }
    respond: { status: 200 }
    plugins:
      - use: headers
      - use: cors
        version: 2.0.0
"#;

async fn upload(store: &FileStore, name: &str, version: &str) {
    store
        .put_version(
            NewVersion {
                name: name.into(),
                version: version.into(),
                wit_world: "flexgate:plugin/plugin@0.1.0".into(),
                uploaded_by: "test".into(),
                description: String::new(),
            },
            Bytes::from(format!("\0asm\r\0\x01\0{name}{version}").into_bytes()),
        )
        .await
        .expect("upload");
}

fn spec(stable: &str) -> RolloutSpec {
    RolloutSpec {
        stable: Some(stable.into()),
        canary: None,
        canary_percent: 0,
        sticky: Default::default(),
        guards: Default::default(),
        revision: None,
    }
}

#[tokio::test]
async fn registry_bindings_need_a_version_in_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("flexgate.yaml");
    std::fs::write(&file, CONFIG).expect("write");
    let name = file.display().to_string();
    let data = dir.path().join("registry");

    // Empty registry: both bindings refused, each at its field and line.
    let (code, out) = validate(&file);
    assert_eq!(code, 1, "{out}");
    let use_line = line_of(CONFIG, "- use: headers");
    assert!(
        out.lines().any(|l| l.starts_with(&format!("{name}:{use_line}:"))
            && l.ends_with(": routes[0].plugins[0].use: plugin \"headers\" has no version in the registry: upload one or pin `version:`")),
        "{out}"
    );
    let pin_line = line_of(CONFIG, "version: 2.0.0");
    assert!(
        out.lines().any(|l| l.starts_with(&format!("{name}:{pin_line}:"))
            && l.contains(": routes[0].plugins[1].version: plugin \"cors\" version \"2.0.0\" is not in the registry")),
        "{out}"
    );
    assert!(out.contains("2 problem(s)"), "{out}");
    // Validation only reads: no data folder was created.
    assert!(!data.exists());

    // Uploaded but no rollout for this route yet: still refused, with the command to fix it.
    let store = FileStore::open(&data).await.expect("store");
    upload(&store, "headers", "1.0.0").await;
    upload(&store, "cors", "2.0.0").await;
    let (code, out) = validate(&file);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("routes[0].plugins[0].use: plugin \"headers\" has no version in the registry for route \"hello\"")
            && out.contains("flexgate plugin rollout --route hello --plugin headers"),
        "{out}"
    );
    assert!(
        !out.contains("plugins[1]"),
        "the pin is satisfied now: {out}"
    );

    // A rollout for another route does not count; one for this route does.
    store
        .put_rollout("other", "headers", spec("1.0.0"))
        .await
        .expect("rollout");
    assert_eq!(validate(&file).0, 1);
    store
        .put_rollout("hello", "headers", spec("1.0.0"))
        .await
        .expect("rollout");
    let (code, out) = validate(&file);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(": ok ("), "{out}");
}

#[tokio::test]
async fn file_plugins_never_touch_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("p.wasm"), b"\0asm").expect("write");
    let file = dir.path().join("flexgate.yaml");
    let text = CONFIG
        .replace(
            "  - name: headers\n",
            "  - name: headers\n    source: p.wasm\n",
        )
        .replace("      - use: cors\n        version: 2.0.0\n", "");
    std::fs::write(&file, &text).expect("write");
    let (code, out) = validate(&file);
    assert_eq!(code, 0, "{out}");
    assert!(!dir.path().join("registry").exists());
    // Even an unreachable Redis store does not matter then.
    let text = text.replace(
        "store: { kind: file, path: ./registry }",
        "store: { kind: redis, url: \"redis://127.0.0.1:1\" }",
    );
    std::fs::write(&file, &text).expect("write");
    let (code, out) = validate(&file);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn an_unreachable_redis_store_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("flexgate.yaml");
    // Port 1 on loopback: connection refused at once.
    let text = CONFIG.replace(
        "store: { kind: file, path: ./registry }",
        "store: { kind: redis, url: \"redis://127.0.0.1:1\" }",
    );
    std::fs::write(&file, &text).expect("write");
    let started = std::time::Instant::now();
    let (code, out) = validate(&file);
    assert_eq!(code, 1, "{out}");
    let line = line_of(&text, "store:");
    assert!(
        out.contains(&format!(":{line}:"))
            && out.contains("store: cannot read the plugin registry"),
        "{out}"
    );
    assert!(
        started.elapsed().as_secs() < 10,
        "took {:?}",
        started.elapsed()
    );
}
