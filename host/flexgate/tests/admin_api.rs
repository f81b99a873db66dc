//! The admin API of a running gateway: the real router behind the admin listener, with the
//! wasmtime-backed upload validator, so the upload errors of the spec are checked on real
//! components (a core module, a component of another world, a plugin whose `init` refuses).

use std::path::PathBuf;

use flexgate_admin::api::{AuthSettings, Role};
use flexgate_testkit::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_flexgate");
const SECRET: &str = "admin-api-test-secret-0123456789abcdef0123456789";

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

fn token(role: Role) -> String {
    AuthSettings::new(SECRET.as_bytes().to_vec())
        .expect("auth")
        .issue("admin-api-test", role)
        .expect("token")
        .0
}

async fn call(
    gw: &Gateway,
    method: &str,
    path: &str,
    role: Option<Role>,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, Value) {
    let auth = role.map(|r| format!("Bearer {}", token(r)));
    let mut headers = Vec::new();
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
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

async fn upload(gw: &Gateway, query: &str, bytes: Vec<u8>) -> (u16, Value) {
    call(
        gw,
        "POST",
        &format!("/api/plugins?{query}"),
        Some(Role::Admin),
        Some(("application/wasm", bytes)),
    )
    .await
}

fn message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn uploads_are_validated_by_the_real_runtime() {
    let Some(headers) = dist("headers") else {
        return;
    };
    let gw = Gateway::builder(BIN)
        .env("FLEXGATE_ADMIN_JWT_SECRET", SECRET)
        .config("routes:\n  - name: hello\n    respond: { status: 200 }\n")
        .start()
        .await;

    // Public document, authenticated everything else.
    let (status, doc) = call(&gw, "GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(call(&gw, "GET", "/api/plugins", None, None).await.0, 401);
    let (status, me) = call(&gw, "GET", "/api/me", Some(Role::Viewer), None).await;
    assert_eq!((status, me["role"].clone()), (200, json!("viewer")));

    // A real component: stored, then a no-op, then a conflict for other bytes.
    let (status, body) = upload(&gw, "name=headers&version=1.0.0", headers.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["meta"]["wit_world"], "flexgate:plugin/plugin@0.1.0");
    let (status, body) = upload(&gw, "name=headers&version=1.0.0", headers.clone()).await;
    assert_eq!((status, body["created"].clone()), (200, json!(false)));
    let mut other = headers.clone();
    other.extend_from_slice(&[0, 4, 3, b'a', b'b', b'c']); // a custom section: new bytes
    let (status, body) = upload(&gw, "name=headers&version=1.0.0", other).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("conflict"))
    );

    // Not WebAssembly; a core module (with the hint); a component of another world (here: an
    // empty component, which exports nothing).
    let (status, body) = upload(&gw, "name=x&version=1.0.0", b"PK\x03\x04zip".to_vec()).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("not_webassembly"))
    );
    let core = b"\0asm\x01\x00\x00\x00".to_vec();
    let (status, body) = upload(&gw, "name=x&version=1.0.0", core).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("not_a_component"))
    );
    assert!(message(&body).contains("--target wasm32-wasip2"), "{body}");
    let empty_component = b"\0asm\x0d\x00\x01\x00".to_vec();
    let (status, body) = upload(&gw, "name=x&version=1.0.0", empty_component).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (422, json!("wrong_world")),
        "{body}"
    );
    assert!(message(&body).contains("flexgate:plugin/handler"), "{body}");

    // `init` runs with the example config at upload: refused config → 422 with the reason.
    if let Some(reject) = dist("fixture-init-reject") {
        let (status, body) = upload(&gw, "name=picky&version=1.0.0", reject.clone()).await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (422, json!("init_failed")),
            "{body}"
        );
        let (status, body) = upload(
            &gw,
            "name=picky&version=1.0.0&example_config=%7B%22accept%22%3Atrue%7D",
            reject,
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }

    // Over the default max_upload (20 MiB): 413 from the declared length, before the body is read
    // (a raw request, so the early answer cannot race the client's write of 20 MiB).
    let head = format!(
        "POST /api/plugins?name=big&version=1.0.0 HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {}\r\nContent-Type: application/wasm\r\nContent-Length: {}\r\n\r\n\0asm",
        token(Role::Admin),
        20 * 1024 * 1024 + 1
    );
    let (head, body) = raw_fetch(gw.admin_addr(), head, std::time::Duration::from_secs(5))
        .await
        .expect("raw fetch");
    let body = String::from_utf8_lossy(&body);
    assert_eq!(head.status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");

    // A version a rollout uses cannot be deleted; an unused one can.
    let (status, _) = upload(&gw, "name=headers&version=1.1.0", {
        let mut v = headers.clone();
        v.extend_from_slice(&[0, 4, 3, b'v', b'1', b'1']);
        v
    })
    .await;
    assert_eq!(status, 201);
    let (status, body) = call(
        &gw,
        "PUT",
        "/api/rollouts/hello/headers",
        Some(Role::Operator),
        Some(("application/json", br#"{"stable": "1.0.0"}"#.to_vec())),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &gw,
        "DELETE",
        "/api/plugins/headers/versions/1.0.0",
        Some(Role::Admin),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("conflict"))
    );
    let (status, _) = call(
        &gw,
        "DELETE",
        "/api/plugins/headers/versions/1.1.0",
        Some(Role::Operator),
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &gw,
        "DELETE",
        "/api/plugins/headers/versions/1.1.0",
        Some(Role::Admin),
        None,
    )
    .await;
    assert_eq!(status, 204);

    // Every write above is in the audit log, refusals included.
    let (status, page) = call(
        &gw,
        "GET",
        "/api/audit?limit=1000",
        Some(Role::Viewer),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let entries = page["entries"].as_array().cloned().unwrap_or_default();
    let uploads = entries
        .iter()
        .filter(|e| e["action"] == "plugin.upload")
        .count();
    assert!(uploads >= 8, "{page}");
    assert!(entries.iter().any(|e| {
        e["action"] == "plugin.delete"
            && e["result"]
                .as_str()
                .is_some_and(|r| r.starts_with("error: forbidden"))
    }));
}
