//! The registry and admin sections: `store`, `admin.auth`, `admin.max_upload`, and plugins without
//! `source` (registry plugins) with their `version:` pins. Every problem names its field and line.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use flexgate_config::*;

fn problems(text: &str) -> Vec<Problem> {
    match parse(text, "t.yaml") {
        Ok(_) => Vec::new(),
        Err(e) => e.problems,
    }
}

/// 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in text"))
        + 1
}

/// Exactly one problem, at `path`, on the line containing `needle`, whose message contains
/// `fragment`.
fn expect_one(text: &str, path: &str, needle: &str, fragment: &str) {
    let got = problems(text);
    assert!(
        got.len() == 1 && got[0].path == path && got[0].message.contains(fragment),
        "expected one problem at {path} containing {fragment:?}, got {got:#?}\nin:\n{text}"
    );
    assert_eq!(got[0].line, line_of(text, needle), "{got:#?}\nin:\n{text}");
    assert!(got[0].column >= 1);
    // The rendered line carries file, line, column, field path and message.
    let shown = got[0].to_string();
    assert!(
        shown.starts_with(&format!("t.yaml:{}:", got[0].line)) && shown.contains(path),
        "{shown}"
    );
}

const REGISTRY: &str = r#"version: 1
plugins:
  - name: headers
  - name: local
    source: Cargo.toml
routes:
  - name: api
    respond: { status: 200 }
    plugins:
      - use: headers
      - use: headers
        version: 1.2.0
      - use: local
"#;

#[test]
fn defaults_store_in_data_next_to_the_file() {
    let c = parse("version: 1\n", "t.yaml").unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        c.store,
        StoreConfig::File {
            path: std::path::absolute(".").unwrap().join("data")
        }
    );
    assert!(matches!(&c.store, StoreConfig::File { path } if path.starts_with(&cwd)));
    assert_eq!(c.admin.max_upload, ByteSize(20 * 1024 * 1024));
    assert_eq!(c.admin.auth.jwt_secret_env, "FLEXGATE_ADMIN_JWT_SECRET");
    assert_eq!(c.admin.auth.users_file, None);
    assert_eq!(c.admin.auth.tokens_file, None);
    // The embedded default keeps its registry in ./data of the current directory.
    assert_eq!(default_config().store, c.store);

    // A file: relative paths are relative to its folder.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.yaml"), "users: []\n").unwrap();
    std::fs::write(dir.path().join("tokens.yaml"), "tokens: []\n").unwrap();
    let file = dir.path().join("flexgate.yaml");
    std::fs::write(
        &file,
        "version: 1\nstore: { kind: file, path: ./registry }\nadmin:\n  auth: { jwt_secret_env: MY_SECRET, users_file: users.yaml, tokens_file: ./tokens.yaml }\n  max_upload: 5MiB\n",
    )
    .unwrap();
    let c = load(&file).unwrap_or_else(|e| panic!("{e}"));
    let base = std::path::absolute(dir.path()).unwrap();
    match &c.store {
        StoreConfig::File { path } => assert_eq!(path, &base.join("./registry")),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.admin.auth.jwt_secret_env, "MY_SECRET");
    assert_eq!(c.admin.auth.users_file, Some(base.join("users.yaml")));
    assert_eq!(c.admin.auth.tokens_file, Some(base.join("./tokens.yaml")));
    assert_eq!(c.admin.max_upload, ByteSize(5 * 1024 * 1024));

    // `store: {kind: file}` alone means ./data.
    let c = parse("version: 1\nstore: { kind: file }\n", "t.yaml").unwrap();
    assert!(matches!(&c.store, StoreConfig::File { path } if path.ends_with("data")));
}

#[test]
fn redis_store() {
    let c = parse(
        "version: 1\nstore: { kind: redis, url: \"redis://127.0.0.1:6379/2\" }\n",
        "t.yaml",
    )
    .unwrap();
    assert_eq!(
        c.store,
        StoreConfig::Redis {
            url: "redis://127.0.0.1:6379/2".into(),
            prefix: None
        }
    );
    let c = parse(
        "version: 1\nstore:\n  kind: redis\n  url: rediss://cache:6380\n  prefix: edge-eu\n",
        "t.yaml",
    )
    .unwrap();
    assert!(matches!(c.store, StoreConfig::Redis { prefix: Some(ref p), .. } if p == "edge-eu"));
}

#[test]
fn store_mistakes() {
    let t = "version: 1\nlisten: 0.0.0.0:8000\nstore:\n  kind: redis\n  url: http://cache:6379\n";
    expect_one(t, "store.url", "url: http", "redis://");
    let t = "version: 1\nstore:\n  kind: s3\n";
    expect_one(
        t,
        "store.kind",
        "kind: s3",
        "unknown variant `s3`, expected `file` or `redis`",
    );
    let t = "version: 1\nstore:\n  kind: redis\n";
    expect_one(t, "store", "kind: redis", "missing field `url`");
    let t = "version: 1\nstore:\n  kind: file\n  url: redis://x\n";
    expect_one(t, "store.url", "url: redis", "unknown field `url`");
    let t = "version: 1\nstore:\n  kind: redis\n  url: redis://x\n  prefix: \"a b\"\n";
    expect_one(t, "store.prefix", "prefix:", "spaces");
    let t = "version: 1\nstore: { kind: file, path: Cargo.toml }\n";
    expect_one(t, "store.path", "store:", "not a folder");
    let t = "version: 1\nstores: { kind: file }\n";
    expect_one(t, "stores", "stores:", "unknown field `stores`");
}

#[test]
fn admin_mistakes() {
    let t = "version: 1\nadmin:\n  listen: 127.0.0.1:8081\n  auth:\n    jwt_secret_env: \"s3cr3t value!\"\n";
    expect_one(
        t,
        "admin.auth.jwt_secret_env",
        "jwt_secret_env",
        "never the secret itself",
    );
    let t = "version: 1\nadmin:\n  auth:\n    users_file: no-such-users.yaml\n";
    expect_one(t, "admin.auth.users_file", "users_file", "file not found");
    let t = "version: 1\nadmin:\n  auth:\n    tokens_file: no-such-tokens.yaml\n";
    expect_one(t, "admin.auth.tokens_file", "tokens_file", "file not found");
    let t = "version: 1\nadmin:\n  auth:\n    jwt_secret: abc\n";
    expect_one(
        t,
        "admin.auth.jwt_secret",
        "jwt_secret:",
        "unknown field `jwt_secret`",
    );
    let t = "version: 1\nadmin:\n  max_upload: 0B\n";
    expect_one(t, "admin.max_upload", "max_upload", "greater than 0");
    let t = "version: 1\nadmin:\n  max_upload: lots\n";
    expect_one(t, "admin.max_upload", "max_upload", "");
}

#[test]
fn plugins_without_source_come_from_the_registry() {
    let c = parse(REGISTRY, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.plugins[0].source, None);
    assert!(c.plugins[1].source.as_ref().unwrap().is_absolute());
    assert_eq!(c.routes[0].plugins[1].version.as_deref(), Some("1.2.0"));
    // Limits and isolation still apply to registry plugins.
    let c = parse(
        &REGISTRY.replace(
            "  - name: headers\n",
            "  - name: headers\n    isolation: per_request\n    limits: { memory: 32MiB }\n",
        ),
        "t.yaml",
    )
    .unwrap();
    assert_eq!(c.plugins[0].isolation, Isolation::PerRequest);
    assert_eq!(c.plugins[0].source, None::<PathBuf>);
}

#[test]
fn version_pins() {
    // A pin on a plugin that has a `source` file makes no sense.
    let t = REGISTRY.replace(
        "      - use: local\n",
        "      - use: local\n        version: 1.0.0\n",
    );
    expect_one(
        &t,
        "routes[0].plugins[2].version",
        "version: 1.0.0",
        "only applies to plugins without `source`",
    );
    for bad in ["latest", "1.2", "\"1.2.x\"", "1.2.3-"] {
        let t = REGISTRY.replace("version: 1.2.0", &format!("version: {bad}"));
        let got = problems(&t);
        assert!(
            got.len() == 1 && got[0].path == "routes[0].plugins[1].version",
            "{bad}: {got:#?}"
        );
        assert_eq!(
            got[0].line,
            line_of(&t, &format!("version: {bad}")),
            "{bad}"
        );
    }
    for good in ["1.2.0-rc.1", "0.0.1+build.5", "\"10.20.30\""] {
        let t = REGISTRY.replace("version: 1.2.0", &format!("version: {good}"));
        assert_eq!(problems(&t), [], "{good}");
    }
    // Registry plugins need names the registry accepts.
    let t = REGISTRY
        .replace("  - name: headers\n", "  - name: Headers.v2\n")
        .replace("use: headers", "use: Headers.v2");
    expect_one(&t, "plugins[0].name", "Headers.v2", "registry");
    // An unknown plugin is still an unknown plugin.
    let t = REGISTRY.replace("      - use: local\n", "      - use: nope\n");
    expect_one(
        &t,
        "routes[0].plugins[2].use",
        "use: nope",
        "unknown plugin",
    );
}

#[test]
fn outside_problems_are_located_like_our_own() {
    let errors = locate_problems(
        REGISTRY,
        "t.yaml",
        [
            (
                "routes[0].plugins[1].version".to_owned(),
                "not uploaded".to_owned(),
            ),
            (
                "routes[0].plugins[0].use".to_owned(),
                "no rollout".to_owned(),
            ),
        ],
    );
    let p = &errors.problems;
    assert_eq!(p.len(), 2);
    assert_eq!(
        (p[0].path.as_str(), p[0].line),
        (
            "routes[0].plugins[0].use",
            line_of(REGISTRY, "- use: headers")
        )
    );
    assert_eq!(p[1].line, line_of(REGISTRY, "version: 1.2.0"));
    assert!(errors.to_string().contains("t.yaml:"));
}
