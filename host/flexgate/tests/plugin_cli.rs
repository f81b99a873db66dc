//! `flexgate plugin ...` through the real binary. `push`, `rollout`, `promote`, `rollback` and
//! `list` talk to a real admin API (the `api::router` served in-process on a loopback socket over
//! a file store in a temp dir), so the CLI is exercised over HTTP exactly as in production.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use async_trait::async_trait;
use flexgate_admin::api::{
    self, ApiState, AuthSettings, ConfigSummary, PinnedVersion, RateLimitInfo, ResetError, Role,
    RouteInfo, RuntimeView, TargetInfo, TokenRecord, UpstreamInfo, VersionStats,
    WasmHeaderValidator,
};
use flexgate_registry::{FileStore, Store};

const BIN: &str = env!("CARGO_BIN_EXE_flexgate");
const ADMIN_TOKEN: &str = "cli-admin-token";
const VIEWER_TOKEN: &str = "cli-viewer-token";

struct NoRuntime;

#[async_trait]
impl RuntimeView for NoRuntime {
    async fn routes(&self) -> Vec<RouteInfo> {
        Vec::new()
    }
    async fn upstreams(&self) -> Vec<UpstreamInfo> {
        Vec::new()
    }
    async fn reset_breaker(&self, u: &str, t: &str) -> Result<TargetInfo, ResetError> {
        Err(ResetError::NotFound(format!("{u}/{t}")))
    }
    async fn rate_limits(&self) -> Vec<RateLimitInfo> {
        Vec::new()
    }
    async fn config_summary(&self) -> ConfigSummary {
        ConfigSummary {
            file: String::new(),
            sha256: String::new(),
            loaded_at: String::new(),
            listen: String::new(),
            routes: 0,
            upstreams: 0,
            plugins: Vec::new(),
        }
    }
    async fn rollout_stats(&self, _: &str, _: &str) -> Vec<VersionStats> {
        Vec::new()
    }
    async fn pinned_versions(&self) -> Vec<PinnedVersion> {
        Vec::new()
    }
}

/// The admin API on 127.0.0.1:0 over a file store; dropped with the test.
struct Admin {
    url: String,
    store: Arc<dyn Store>,
    dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn admin_api() -> Admin {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(
        FileStore::open(dir.path().join("data"))
            .await
            .expect("store"),
    );
    let auth = AuthSettings::new(vec![3u8; 32])
        .and_then(|a| {
            a.with_tokens(vec![
                TokenRecord {
                    name: "ci".into(),
                    sha256: api::hash_token(ADMIN_TOKEN),
                    role: Role::Admin,
                },
                TokenRecord {
                    name: "dashboard".into(),
                    sha256: api::hash_token(VIEWER_TOKEN),
                    role: Role::Viewer,
                },
            ])
        })
        .expect("auth");
    let state = ApiState::new(
        store.clone(),
        auth,
        Arc::new(NoRuntime),
        Arc::new(WasmHeaderValidator),
        1 << 20,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, api::router(state)).await;
    });
    Admin {
        url,
        store,
        dir,
        server,
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the binary off the async threads (the admin API runs on them).
async fn flexgate(args: Vec<String>, env: Vec<(&'static str, String)>) -> Run {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(BIN);
        cmd.args(&args)
            .env_remove("FLEXGATE_ADMIN_URL")
            .env_remove("FLEXGATE_ADMIN_TOKEN")
            .env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run flexgate");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("join")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

impl Admin {
    /// `flexgate plugin ARGS --admin-url URL --token TOKEN`
    async fn cli(&self, list: &[&str], token: &str) -> Run {
        let mut a = args(list);
        a.extend(args(&["--admin-url", &self.url, "--token", token]));
        flexgate(a, Vec::new()).await
    }

    fn wasm(&self, name: &str, payload: &[u8]) -> String {
        let mut bytes = b"\0asm\x0d\x00\x01\x00".to_vec();
        bytes.extend_from_slice(payload);
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write wasm");
        path.display().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_rollout_promote_rollback_and_list() {
    let admin = admin_api().await;
    let v1 = admin.wasm("v1.wasm", b"one");
    let v2 = admin.wasm("v2.wasm", b"two");

    let r = admin
        .cli(
            &[
                "plugin",
                "push",
                &v1,
                "--name",
                "headers",
                "--version",
                "1.0.0",
                "--description",
                "adds headers",
            ],
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("pushed headers@1.0.0"), "{}", r.stdout);
    assert!(r.stdout.contains("sha256 "), "{}", r.stdout);
    let meta = admin.store.get_version("headers", "1.0.0").expect("stored");
    assert_eq!(meta.description, "adds headers");
    assert_eq!(meta.uploaded_by, "ci");

    // Same bytes again: a no-op, still success. Different bytes: 409, exit 1.
    let push = |file: String, version: &'static str| {
        let admin = &admin;
        async move {
            admin
                .cli(
                    &[
                        "plugin",
                        "push",
                        &file,
                        "--name",
                        "headers",
                        "--version",
                        version,
                    ],
                    ADMIN_TOKEN,
                )
                .await
        }
    };
    let r = push(v1.clone(), "1.0.0").await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("already in the registry"), "{}", r.stdout);
    let r = push(v2.clone(), "1.0.0").await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("409") && r.stderr.contains("conflict"),
        "{}",
        r.stderr
    );
    let r = push(v2.clone(), "1.1.0").await;
    assert_eq!(r.code, 0, "{}", r.stderr);

    // The first rollout pins stable; the next sets a canary with a sticky key.
    let rollout = |canary: &'static str, percent: &'static str, extra: &'static [&'static str]| {
        let admin = &admin;
        async move {
            let mut a = vec![
                "plugin",
                "rollout",
                "--route",
                "api",
                "--plugin",
                "headers",
                "--canary",
                canary,
                "--percent",
                percent,
            ];
            a.extend_from_slice(extra);
            admin.cli(&a, ADMIN_TOKEN).await
        }
    };
    let r = rollout("1.0.0", "0", &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("route api, plugin headers: stable 1.0.0, no canary"),
        "{}",
        r.stdout
    );
    let r = rollout("1.1.0", "20", &["--sticky", "header:x-user"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("canary 1.1.0 at 20% (sticky header:x-user)"),
        "{}",
        r.stdout
    );
    let stored = admin.store.get_rollout("api", "headers").expect("rollout");
    assert_eq!(
        (stored.canary.as_deref(), stored.canary_percent),
        (Some("1.1.0"), 20)
    );
    assert_eq!(stored.sticky.as_text(), "header:x-user");
    // The sticky key is kept when not given again.
    let r = rollout("1.1.0", "50", &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("at 50% (sticky header:x-user)"),
        "{}",
        r.stdout
    );
    // Bad input: refused by clap (exit 2) or by the API (exit 1, its message shown).
    let r = rollout("1.1.0", "101", &[]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = rollout("9.9.9", "10", &[]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("422") && r.stderr.contains("9.9.9"),
        "{}",
        r.stderr
    );
    let r = rollout("1.1.0", "10", &["--sticky", "cookie"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("invalid sticky key"), "{}", r.stderr);

    // Rollback with a reason, a new canary, promote.
    let r = admin
        .cli(
            &[
                "plugin", "rollback", "--route", "api", "--plugin", "headers", "--reason", "p99 up",
            ],
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("stable 1.0.0, no canary"), "{}", r.stdout);
    assert!(
        r.stdout.contains("last rollback: p99 up by ci"),
        "{}",
        r.stdout
    );
    let r = admin
        .cli(
            &[
                "plugin", "rollback", "--route", "api", "--plugin", "headers",
            ],
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(r.code, 1, "nothing to roll back: {}", r.stdout);
    assert!(r.stderr.contains("409"), "{}", r.stderr);
    assert_eq!(rollout("1.1.0", "30", &[]).await.code, 0);
    let r = admin
        .cli(
            &["plugin", "promote", "--route", "api", "--plugin", "headers"],
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("stable 1.1.0, no canary"), "{}", r.stdout);
    let r = admin
        .cli(
            &[
                "plugin", "promote", "--route", "nope", "--plugin", "headers", "--json",
            ],
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("404"), "{}", r.stderr);

    // List, as a table and as JSON, with a viewer token from the environment.
    let env = vec![
        ("FLEXGATE_ADMIN_URL", admin.url.clone()),
        ("FLEXGATE_ADMIN_TOKEN", VIEWER_TOKEN.to_owned()),
    ];
    let r = flexgate(args(&["plugin", "list"]), env.clone()).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut lines = r.stdout.lines();
    assert!(
        lines.next().is_some_and(|l| l.starts_with("NAME")),
        "{}",
        r.stdout
    );
    let row = lines.next().unwrap_or_default();
    assert!(
        row.starts_with("headers") && row.contains("1.1.0, 1.0.0"),
        "{}",
        r.stdout
    );
    let r = flexgate(args(&["plugin", "list", "--json"]), env.clone()).await;
    let listed: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(listed[0]["latest"], "1.1.0");
    // A viewer may not upload: 403, exit 1.
    let r = flexgate(
        args(&["plugin", "push", &v1, "--name", "x", "--version", "1.0.0"]),
        env,
    )
    .await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("403") && r.stderr.contains("admin"),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_explained() {
    let admin = admin_api().await;
    let v1 = admin.wasm("v1.wasm", b"one");
    let core = admin.dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\x00\x00\x00core").expect("write");
    let push = [
        "plugin",
        "push",
        &v1,
        "--name",
        "headers",
        "--version",
        "1.0.0",
    ];

    // No token at all.
    let mut a = args(&push);
    a.extend(args(&["--admin-url", &admin.url]));
    let r = flexgate(a, Vec::new()).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no admin token"), "{}", r.stderr);
    // A wrong token.
    let r = admin.cli(&push, "wrong").await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("401") && r.stderr.contains("FLEXGATE_ADMIN_TOKEN"),
        "{}",
        r.stderr
    );
    // Nobody listening.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let mut a = args(&push);
    a.extend(args(&[
        "--admin-url",
        &format!("http://{closed}"),
        "--token",
        ADMIN_TOKEN,
    ]));
    let r = flexgate(a, Vec::new()).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("cannot reach the admin API"),
        "{}",
        r.stderr
    );
    // Not an http URL.
    let mut a = args(&push);
    a.extend(args(&[
        "--admin-url",
        "localhost:8081",
        "--token",
        ADMIN_TOKEN,
    ]));
    let r = flexgate(a, Vec::new()).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("expected http://"), "{}", r.stderr);
    // A missing file, a core module, a bad version.
    let r = admin
        .cli(
            &[
                "plugin",
                "push",
                "/no/such.wasm",
                "--name",
                "headers",
                "--version",
                "1.0.0",
            ],
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("/no/such.wasm"), "{}", r.stderr);
    let core = core.display().to_string();
    let r = admin
        .cli(
            &[
                "plugin",
                "push",
                &core,
                "--name",
                "headers",
                "--version",
                "1.0.0",
            ],
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("400") && r.stderr.contains("wasm32-wasip2"),
        "{}",
        r.stderr
    );
    let r = admin
        .cli(
            &[
                "plugin",
                "push",
                &v1,
                "--name",
                "headers",
                "--version",
                "one",
            ],
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("422"), "{}", r.stderr);
    // Missing required flags: usage error.
    let r = admin.cli(&["plugin", "push", &v1], ADMIN_TOKEN).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--name"), "{}", r.stderr);
    assert!(admin.store.list_plugins().is_empty());
}

#[tokio::test]
async fn new_scaffolds_a_plugin_crate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    let r = flexgate(
        args(&["plugin", "new", "my-plugin", "--dir", &d]),
        Vec::new(),
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let root = dir.path().join("my-plugin");
    for file in [
        "Cargo.toml",
        "src/lib.rs",
        "config.json",
        "request.json",
        "README.md",
    ] {
        assert!(root.join(file).is_file(), "missing {file}");
    }
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("manifest");
    assert!(manifest.contains("flexgate-sdk"), "{manifest}");
    assert!(manifest.contains("cdylib"), "{manifest}");
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).expect("lib");
    assert!(lib.contains("flexgate_sdk::export!(MyPlugin)"), "{lib}");
    assert!(r.stdout.contains("created"), "{}", r.stdout);
    // The request sample is what `plugin test` reads.
    let req: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("request.json")).expect("req"))
            .expect("json");
    assert_eq!(req["method"], "GET");

    let r = flexgate(
        args(&["plugin", "new", "my-plugin", "--dir", &d]),
        Vec::new(),
    )
    .await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    let r = flexgate(
        args(&["plugin", "new", "Bad_Name", "--dir", &d]),
        Vec::new(),
    )
    .await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("lowercase"), "{}", r.stderr);
}

/// `plugins/dist/NAME.wasm`, built by `bash plugins/build.sh`; `None` (test skipped) when missing,
/// unless CI_REQUIRE_TOOLS=1.
fn dist(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/dist")
        .join(format!("{name}.wasm"));
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("CI_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "{} is missing: run `bash plugins/build.sh`",
        path.display()
    );
    eprintln!(
        "skipping: {} is missing (run `bash plugins/build.sh`)",
        path.display()
    );
    None
}

#[tokio::test]
async fn test_runs_a_component_once() {
    let Some(headers) = dist("headers") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let config = write(
        "config.json",
        r#"{"request": {"set": {"x-route": "${route}"}, "remove": ["x-debug"]}, "response": {"add": {"x-served-by": "flexgate"}}}"#,
    );
    let request = write(
        "request.json",
        r#"{"method": "GET", "path": "/hello", "headers": {"x-debug": "1"}, "route": "api"}"#,
    );
    let response = write(
        "response.json",
        r#"{"status": 200, "headers": {"content-type": "text/plain"}}"#,
    );
    let wasm = headers.display().to_string();
    let r = flexgate(
        args(&[
            "plugin",
            "test",
            &wasm,
            "--config",
            &config,
            "--request",
            &request,
            "--response",
            &response,
        ]),
        Vec::new(),
    )
    .await;
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("init ok"), "{}", r.stdout);
    assert!(r.stdout.contains("on_request: CONTINUE"), "{}", r.stdout);
    assert!(r.stdout.contains("+ x-route: api"), "{}", r.stdout);
    assert!(r.stdout.contains("- x-debug"), "{}", r.stdout);
    assert!(r.stdout.contains("on_response: OK"), "{}", r.stdout);
    assert!(r.stdout.contains("+ x-served-by: flexgate"), "{}", r.stdout);

    // A config the plugin refuses, and a missing file: exit 1 with the reason.
    let bad = write("bad.json", r#"{"colour": "red"}"#);
    let r = flexgate(
        args(&[
            "plugin",
            "test",
            &wasm,
            "--config",
            &bad,
            "--request",
            &request,
        ]),
        Vec::new(),
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains("colour"), "{}", r.stderr);
    let r = flexgate(
        args(&[
            "plugin",
            "test",
            &wasm,
            "--config",
            "/no/config.json",
            "--request",
            &request,
        ]),
        Vec::new(),
    )
    .await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("--config /no/config.json"),
        "{}",
        r.stderr
    );

    // A plugin that traps fails the command.
    if let Some(trap) = dist("fixture-trap") {
        let always = write("always.json", r#"{"always": true}"#);
        let r = flexgate(
            args(&[
                "plugin",
                "test",
                &trap.display().to_string(),
                "--config",
                &always,
                "--request",
                &request,
            ]),
            Vec::new(),
        )
        .await;
        assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("ERROR"), "{}", r.stdout);
    }
}
