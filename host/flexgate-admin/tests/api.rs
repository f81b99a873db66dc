//! The admin API through the real router (`oneshot`, no socket): every endpoint, role and error.

use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use bytes::Bytes;
use flexgate_admin::api::{
    self, ApiState, AuthSettings, BreakerState, ConfigSummary, PinnedVersion, PluginBindingInfo,
    PluginValidator, RateLimitInfo, RejectionKind, ResetError, Role, RouteInfo, RuntimeView,
    StatsSnapshotDto, TargetInfo, TokenRecord, UploadRejection, UpstreamInfo, UserRecord,
    ValidatedInfo, VersionStats, WasmHeaderValidator,
};
use flexgate_registry::{FileStore, Store};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00component-one";
const COMPONENT_2: &[u8] = b"\0asm\x0d\x00\x01\x00component-two";
const CORE_MODULE: &[u8] = b"\0asm\x01\x00\x00\x00core";
const MAX_UPLOAD: u64 = 4096;

#[derive(Default)]
struct FakeRuntime {
    pinned: Mutex<Vec<PinnedVersion>>,
    resets: Mutex<Vec<(String, String)>>,
}

#[async_trait]
impl RuntimeView for FakeRuntime {
    async fn routes(&self) -> Vec<RouteInfo> {
        vec![RouteInfo {
            name: "api".into(),
            matcher: "path_prefix /api".into(),
            upstream: Some("backend".into()),
            plugins: vec![PluginBindingInfo {
                plugin: "headers".into(),
                pinned_version: None,
                active_versions: vec!["1.0.0".into()],
            }],
            rate_limit: Some("100/s per client_ip".into()),
        }]
    }
    async fn upstreams(&self) -> Vec<UpstreamInfo> {
        vec![UpstreamInfo {
            name: "backend".into(),
            load_balancing: "round_robin".into(),
            targets: vec![TargetInfo {
                target: "127.0.0.1:9000".into(),
                healthy: true,
                breaker: BreakerState::Open,
                failure_rate: 0.6,
            }],
        }]
    }
    async fn reset_breaker(&self, upstream: &str, target: &str) -> Result<TargetInfo, ResetError> {
        if upstream != "backend" || target != "127.0.0.1:9000" {
            return Err(ResetError::NotFound(format!(
                "no target {upstream}/{target}"
            )));
        }
        self.resets
            .lock()
            .expect("lock")
            .push((upstream.into(), target.into()));
        Ok(TargetInfo {
            target: target.into(),
            healthy: true,
            breaker: BreakerState::Closed,
            failure_rate: 0.0,
        })
    }
    async fn rate_limits(&self) -> Vec<RateLimitInfo> {
        vec![RateLimitInfo {
            route: "api".into(),
            key: "client_ip".into(),
            rate: "100/s".into(),
            burst: 20,
            store: "local".into(),
        }]
    }
    async fn config_summary(&self) -> ConfigSummary {
        ConfigSummary {
            file: "flexgate.yaml".into(),
            sha256: "00".repeat(32),
            loaded_at: "2026-01-01T00:00:00Z".into(),
            listen: "0.0.0.0:8000".into(),
            routes: 1,
            upstreams: 1,
            plugins: vec!["headers".into()],
        }
    }
    async fn rollout_stats(&self, _route: &str, _plugin: &str) -> Vec<VersionStats> {
        vec![VersionStats {
            version: "1.0.0".into(),
            role: "stable".into(),
            stats: StatsSnapshotDto {
                requests: 80,
                p99_ms: 3.0,
                ..Default::default()
            },
        }]
    }
    async fn pinned_versions(&self) -> Vec<PinnedVersion> {
        self.pinned.lock().expect("lock").clone()
    }
}

/// The header check plus a refusal for the plugin name `wrongworld` / `badinit`, to test how
/// 422 rejections are mapped.
struct TestValidator;

#[async_trait]
impl PluginValidator for TestValidator {
    async fn validate(
        &self,
        name: &str,
        bytes: Bytes,
        example_config: Option<&str>,
    ) -> Result<ValidatedInfo, UploadRejection> {
        let info = WasmHeaderValidator
            .validate(name, bytes, example_config)
            .await?;
        match name {
            "wrongworld" => Err(UploadRejection {
                kind: RejectionKind::WrongWorld,
                message: "missing export flexgate:plugin/handler".into(),
            }),
            "badinit" => Err(UploadRejection {
                kind: RejectionKind::InitFailed,
                message: format!("init refused config {}", example_config.unwrap_or("none")),
            }),
            _ => Ok(info),
        }
    }
}

struct Harness {
    app: Router,
    state: ApiState,
    runtime: Arc<FakeRuntime>,
    _dir: tempfile::TempDir,
}

fn cheap_hash(password: &str) -> String {
    let argon = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(8, 1, 1, None).expect("params"),
    );
    let salt = SaltString::encode_b64(b"fixed-test-salt").expect("salt");
    argon
        .hash_password(password.as_bytes(), &salt)
        .expect("hash")
        .to_string()
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(FileStore::open(dir.path()).await.expect("store"));
    let users = vec![
        UserRecord {
            name: "alice".into(),
            password_hash: cheap_hash("alice-pw"),
            role: Role::Admin,
        },
        UserRecord {
            name: "vic".into(),
            password_hash: cheap_hash("vic-pw"),
            role: Role::Viewer,
        },
    ];
    let tokens = vec![TokenRecord {
        name: "ci".into(),
        sha256: api::hash_token("ci-secret-token"),
        role: Role::Operator,
    }];
    let auth = AuthSettings::new(vec![7u8; 32])
        .and_then(|a| a.with_users(users))
        .and_then(|a| a.with_tokens(tokens))
        .expect("auth");
    let runtime = Arc::new(FakeRuntime::default());
    let state = ApiState::new(
        store,
        auth,
        runtime.clone(),
        Arc::new(TestValidator),
        MAX_UPLOAD,
    );
    Harness {
        app: api::router(state.clone()),
        state,
        runtime,
        _dir: dir,
    }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

impl Harness {
    fn token(&self, role: Role) -> String {
        self.state
            .auth()
            .issue(role.as_str(), role)
            .expect("issue")
            .0
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(body.into()).expect("request"))
            .await
            .expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str, role: Role) -> Reply {
        let t = self.token(role);
        self.send(Method::GET, uri, Some(&t), None, Body::empty())
            .await
    }

    async fn json(&self, method: Method, uri: &str, role: Role, body: Value) -> Reply {
        let t = self.token(role);
        self.send(
            method,
            uri,
            Some(&t),
            Some("application/json"),
            body.to_string(),
        )
        .await
    }

    async fn upload(&self, role: Role, query: &str, bytes: &'static [u8]) -> Reply {
        let t = self.token(role);
        self.send(
            Method::POST,
            &format!("/api/plugins?{query}"),
            Some(&t),
            Some("application/wasm"),
            bytes,
        )
        .await
    }
}

fn multipart(fields: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "XBOUNDARYX";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        if *name == "file" {
            body.extend_from_slice(
                b"Content-Disposition: form-data; name=\"file\"; filename=\"p.wasm\"\r\nContent-Type: application/wasm\r\n\r\n",
            );
        } else {
            body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            );
        }
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn openapi_is_public_and_complete() {
    let h = harness().await;
    let r = h
        .send(Method::GET, "/api/openapi.json", None, None, Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/api/auth/login",
        "/api/plugins",
        "/api/plugins/{name}",
        "/api/plugins/{name}/versions/{version}",
        "/api/plugins/{name}/versions/{version}/wasm",
        "/api/rollouts",
        "/api/rollouts/{route}/{plugin}",
        "/api/rollouts/{route}/{plugin}/promote",
        "/api/rollouts/{route}/{plugin}/rollback",
        "/api/rollouts/{route}/{plugin}/status",
        "/api/routes",
        "/api/upstreams",
        "/api/upstreams/{upstream}/targets/{target}/reset",
        "/api/rate-limits",
        "/api/config",
        "/api/config/validate",
        "/api/audit",
    ] {
        assert!(paths.contains_key(p), "missing {p}");
    }
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for s in [
        "Rollout",
        "RolloutSpec",
        "Guards",
        "PluginVersionMeta",
        "ErrorBody",
        "Sticky",
    ] {
        assert!(schemas.contains_key(s), "missing schema {s}");
    }
    assert!(api::openapi_json().contains("\"3.1.0\""));
}

#[tokio::test]
async fn authentication() {
    let h = harness().await;
    let r = h
        .send(Method::GET, "/api/plugins", None, None, Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "unauthorized");
    assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
    assert!(r.json()["error"]["message"].is_string());

    for bad in ["nonsense", "Basic abc"] {
        let mut req = Request::get("/api/plugins");
        req = req.header(header::AUTHORIZATION, bad);
        let resp = h
            .app
            .clone()
            .oneshot(req.body(Body::empty()).expect("req"))
            .await
            .expect("ok");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{bad}");
    }
    let r = h
        .send(
            Method::GET,
            "/api/plugins",
            Some("not.a.jwt"),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // A token signed with another secret, and an expired one.
    let other = AuthSettings::new(vec![9u8; 32]).expect("auth");
    let forged = other.issue("mallory", Role::Admin).expect("issue").0;
    let r = h
        .send(
            Method::GET,
            "/api/plugins",
            Some(&forged),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "alice", "role": "admin", "exp": 1_000_000}),
        &jsonwebtoken::EncodingKey::from_secret(&[7u8; 32]),
    )
    .expect("encode");
    let r = h
        .send(
            Method::GET,
            "/api/plugins",
            Some(&expired),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Login.
    let login = |body: String, ct: &'static str| {
        let h = &h;
        async move {
            h.send(Method::POST, "/api/auth/login", None, Some(ct), body)
                .await
        }
    };
    let r = login(
        json!({"username": "alice", "password": "alice-pw"}).to_string(),
        "application/json",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    assert_eq!(r.json()["role"], "admin");
    let token = r.json()["token"].as_str().expect("token").to_owned();
    let me = h
        .send(Method::GET, "/api/me", Some(&token), None, Body::empty())
        .await;
    assert_eq!(me.json()["name"], "alice");
    assert_eq!(me.json()["role"], "admin");
    for (body, status) in [
        (
            json!({"username": "alice", "password": "wrong"}).to_string(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            json!({"username": "nobody", "password": "x"}).to_string(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            json!({"username": "alice", "password": "alice-pw", "admin": true}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"username": "alice"}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("{not json".to_owned(), StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(
            login(body.clone(), "application/json").await.status,
            status,
            "{body}"
        );
    }
    assert_eq!(
        login("username=alice".into(), "application/x-www-form-urlencoded")
            .await
            .status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let huge = format!(
        "{{\"username\":\"{}\",\"password\":\"x\"}}",
        "a".repeat(2 * 1024 * 1024)
    );
    assert_eq!(
        login(huge, "application/json").await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );

    // Static API token.
    let me = h
        .send(
            Method::GET,
            "/api/me",
            Some("ci-secret-token"),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(me.json()["name"], "ci");
    assert_eq!(me.json()["role"], "operator");
    assert_eq!(me.json()["via"], "token");
}

#[tokio::test]
async fn upload_download_and_delete() {
    let h = harness().await;
    let r = h
        .upload(
            Role::Admin,
            "name=headers&version=1.0.0&description=adds%20headers",
            COMPONENT,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json());
    assert_eq!(r.json()["created"], true);
    assert_eq!(r.json()["meta"]["uploaded_by"], "admin");
    assert_eq!(
        r.json()["meta"]["wit_world"],
        "flexgate:plugin/plugin@0.1.0"
    );
    assert_eq!(
        r.headers[header::LOCATION],
        "/api/plugins/headers/versions/1.0.0"
    );
    // Same bytes: 200 no-op; different bytes: 409.
    let r = h
        .upload(Role::Admin, "name=headers&version=1.0.0", COMPONENT)
        .await;
    assert_eq!(
        (r.status, r.json()["created"].clone()),
        (StatusCode::OK, json!(false))
    );
    let r = h
        .upload(Role::Admin, "name=headers&version=1.0.0", COMPONENT_2)
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::CONFLICT, "conflict")
    );

    // Validation errors.
    let r = h
        .upload(Role::Admin, "name=headers&version=2.0.0", CORE_MODULE)
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "not_a_component")
    );
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("wasm32-wasip2")
    );
    let r = h
        .upload(Role::Admin, "name=headers&version=2.0.0", b"PK\x03\x04zip")
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "not_webassembly")
    );
    let r = h
        .upload(Role::Admin, "name=wrongworld&version=1.0.0", COMPONENT)
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "wrong_world")
    );
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("missing export")
    );
    let r = h
        .upload(
            Role::Admin,
            "name=badinit&version=1.0.0&example_config=%7B%22a%22%3A1%7D",
            COMPONENT,
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "init_failed")
    );
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("{\"a\":1}")
    );
    let r = h
        .upload(
            Role::Admin,
            "name=headers&version=2.0.0&example_config=%7Bnope",
            COMPONENT,
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_example_config")
    );
    let r = h.upload(Role::Admin, "version=2.0.0", COMPONENT).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "missing_parameter")
    );
    let r = h
        .upload(Role::Admin, "name=headers&version=two", COMPONENT)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = h
        .upload(Role::Admin, "name=Headers!&version=2.0.0", COMPONENT)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = h
        .upload(
            Role::Admin,
            "name=headers&version=2.0.0&colour=red",
            COMPONENT,
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_query")
    );
    static BIG: [u8; MAX_UPLOAD as usize + 1] = [0; MAX_UPLOAD as usize + 1];
    let r = h
        .upload(Role::Admin, "name=headers&version=2.0.0", &BIG)
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    let t = h.token(Role::Admin);
    let r = h
        .send(
            Method::POST,
            "/api/plugins?name=headers&version=2.0.0",
            Some(&t),
            Some("text/plain"),
            "x",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Multipart upload.
    let (ct, body) = multipart(&[
        ("name", b"cors"),
        ("version", b"0.2.0"),
        ("description", b"CORS"),
        ("file", COMPONENT_2),
    ]);
    let r = h
        .send(Method::POST, "/api/plugins", Some(&t), Some(&ct), body)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json());
    assert_eq!(r.json()["meta"]["description"], "CORS");
    let (ct, body) = multipart(&[("name", b"cors"), ("version", b"0.3.0"), ("file", &BIG)]);
    let r = h
        .send(Method::POST, "/api/plugins", Some(&t), Some(&ct), body)
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let (ct, body) = multipart(&[
        ("name", b"cors"),
        ("version", b"0.3.0"),
        ("colour", b"red"),
        ("file", COMPONENT),
    ]);
    let r = h
        .send(Method::POST, "/api/plugins", Some(&t), Some(&ct), body)
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_multipart")
    );
    let (ct, body) = multipart(&[("name", b"cors"), ("version", b"0.3.0")]);
    let r = h
        .send(Method::POST, "/api/plugins", Some(&t), Some(&ct), body)
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "missing_parameter")
    );

    // Reads.
    h.upload(Role::Admin, "name=headers&version=1.1.0", COMPONENT_2)
        .await;
    let r = h.get("/api/plugins", Role::Viewer).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()[1]["name"], "headers");
    assert_eq!(r.json()[1]["versions"], json!(["1.1.0", "1.0.0"]));
    let r = h.get("/api/plugins/headers", Role::Viewer).await;
    assert_eq!(r.json()["versions"][0]["version"], "1.1.0");
    assert_eq!(
        h.get("/api/plugins/nope", Role::Viewer).await.status,
        StatusCode::NOT_FOUND
    );
    let r = h
        .get("/api/plugins/headers/versions/1.0.0", Role::Viewer)
        .await;
    assert_eq!(r.json()["sha256"], flexgate_registry::sha256_hex(COMPONENT));
    assert_eq!(
        h.get("/api/plugins/headers/versions/9.9.9", Role::Viewer)
            .await
            .code(),
        "not_found"
    );
    let r = h
        .get("/api/plugins/headers/versions/1.0.0/wasm", Role::Viewer)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/wasm");
    assert_eq!(&r.body[..], COMPONENT);
    assert_eq!(
        h.get("/api/plugins/headers/versions/9.9.9/wasm", Role::Viewer)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Delete: refused while a rollout or a YAML pin uses the version.
    let r = h
        .json(
            Method::PUT,
            "/api/rollouts/api/headers",
            Role::Operator,
            json!({"stable": "1.0.0"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let t = h.token(Role::Admin);
    let del = |uri: &'static str| {
        let (h, t) = (&h, t.clone());
        async move {
            h.send(Method::DELETE, uri, Some(&t), None, Body::empty())
                .await
        }
    };
    let r = del("/api/plugins/headers/versions/1.0.0").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::CONFLICT, "conflict")
    );
    h.runtime.pinned.lock().expect("lock").push(PinnedVersion {
        route: "static".into(),
        plugin: "headers".into(),
        version: "1.1.0".into(),
    });
    let r = del("/api/plugins/headers/versions/1.1.0").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("static")
    );
    let r = del("/api/plugins/cors/versions/0.2.0").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        del("/api/plugins/cors/versions/0.2.0").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn roles_are_enforced_and_audited() {
    let h = harness().await;
    let r = h
        .upload(Role::Operator, "name=headers&version=1.0.0", COMPONENT)
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let r = h
        .upload(Role::Viewer, "name=headers&version=1.0.0", COMPONENT)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    h.upload(Role::Admin, "name=headers&version=1.0.0", COMPONENT)
        .await;
    for role in [Role::Viewer, Role::Operator] {
        let t = h.token(role);
        let r = h
            .send(
                Method::DELETE,
                "/api/plugins/headers/versions/1.0.0",
                Some(&t),
                None,
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{role:?}");
    }
    let r = h
        .json(
            Method::PUT,
            "/api/rollouts/api/headers",
            Role::Viewer,
            json!({"stable": "1.0.0"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The role check comes before the body: a viewer learns nothing about validity.
    let r = h
        .json(
            Method::PUT,
            "/api/rollouts/api/headers",
            Role::Viewer,
            json!({"bogus": 1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    for action in ["promote", "rollback"] {
        let r = h
            .json(
                Method::POST,
                &format!("/api/rollouts/api/headers/{action}"),
                Role::Viewer,
                json!({}),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{action}");
    }
    let t = h.token(Role::Viewer);
    let r = h
        .send(
            Method::POST,
            "/api/upstreams/backend/targets/127.0.0.1:9000/reset",
            Some(&t),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The operator token may change rollouts and reset breakers.
    let r = h
        .send(
            Method::PUT,
            "/api/rollouts/api/headers",
            Some("ci-secret-token"),
            Some("application/json"),
            json!({"stable": "1.0.0"}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());

    let r = h.get("/api/audit?limit=100", Role::Viewer).await;
    assert_eq!(r.status, StatusCode::OK);
    let page = r.json();
    let entries = page["entries"].as_array().expect("entries");
    assert_eq!(page["total"].as_u64(), Some(entries.len() as u64));
    // Newest first: the operator token's rollout change.
    assert_eq!(entries[0]["who"], "ci");
    assert_eq!(entries[0]["role"], "operator");
    assert_eq!(entries[0]["action"], "rollout.put");
    assert_eq!(entries[0]["target"], "api/headers");
    assert_eq!(entries[0]["result"], "ok");
    let denied = entries
        .iter()
        .filter(|e| {
            e["result"]
                .as_str()
                .unwrap_or("")
                .starts_with("error: forbidden")
        })
        .count();
    assert_eq!(denied, 9);
    assert!(entries.iter().any(|e| e["action"] == "plugin.upload"
        && e["target"] == "headers@1.0.0"
        && e["who"] == "admin"
        && e["result"] == "ok"));
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "breaker.reset" && e["role"] == "viewer")
    );
    let r = h.get("/api/audit?offset=1&limit=2", Role::Viewer).await;
    assert_eq!(r.json()["entries"].as_array().map(Vec::len), Some(2));
    assert_eq!(r.json()["entries"][0], entries[1]);
    assert_eq!(
        h.get("/api/audit?limit=0", Role::Viewer).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        h.get("/api/audit?page=2", Role::Viewer).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn rollouts_lifecycle() {
    let h = harness().await;
    h.upload(Role::Admin, "name=headers&version=1.0.0", COMPONENT)
        .await;
    h.upload(Role::Admin, "name=headers&version=1.1.0", COMPONENT_2)
        .await;
    assert_eq!(
        h.get("/api/rollouts/api/headers", Role::Viewer)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let spec = json!({
        "stable": "1.0.0", "canary": "1.1.0", "canary_percent": 20, "sticky": "header:X-User",
        "guards": {"max_error_rate": 0.05, "min_requests": 50, "window": "30s"}, "revision": 0
    });
    let r = h
        .json(
            Method::PUT,
            "/api/rollouts/api/headers",
            Role::Operator,
            spec.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let rollout = r.json();
    assert_eq!(rollout["revision"], 1);
    assert_eq!(rollout["sticky"], "header:x-user");
    assert_eq!(rollout["guards"]["window"], "30s");
    // Stale revision, invalid bodies.
    let r = h
        .json(
            Method::PUT,
            "/api/rollouts/api/headers",
            Role::Operator,
            spec,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    for (body, status) in [
        (
            json!({"stable": "1.0.0", "colour": "red"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"stable": "1.0.0", "guards": {"window": "soon"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"stable": "1.0.0", "guards": {"max_error_rate": 2.0}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"stable": "1.0.0", "sticky": "cookie"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"stable": "9.0.0"}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"stable": "1.0.0", "canary": "1.1.0", "canary_percent": 101}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"stable": "1.0.0", "canary_percent": 10}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let r = h
            .json(
                Method::PUT,
                "/api/rollouts/api/headers",
                Role::Operator,
                body.clone(),
            )
            .await;
        assert_eq!(r.status, status, "{body}: {:?}", r.json());
    }
    let t = h.token(Role::Operator);
    let r = h
        .send(
            Method::PUT,
            "/api/rollouts/api/headers",
            Some(&t),
            Some("application/json"),
            "{\"stable\":",
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_json")
    );

    let r = h.get("/api/rollouts", Role::Viewer).await;
    assert_eq!(r.json().as_array().map(Vec::len), Some(1));
    let r = h
        .get("/api/rollouts/api/headers/status", Role::Viewer)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["rollout"]["canary_percent"], 20);
    assert_eq!(r.json()["versions"][0]["stats"]["requests"], 80);
    assert_eq!(
        h.get("/api/rollouts/x/headers/status", Role::Viewer)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Rollback with a reason, then a new canary, promote.
    let r = h
        .json(
            Method::POST,
            "/api/rollouts/api/headers/rollback",
            Role::Operator,
            json!({"reason": "p99 up"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["canary"], Value::Null);
    assert_eq!(r.json()["last_rollback"]["reason"], "p99 up");
    assert_eq!(r.json()["last_rollback"]["by"], "operator");
    let r = h
        .send(
            Method::POST,
            "/api/rollouts/api/headers/rollback",
            Some(&t),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = h
        .json(
            Method::POST,
            "/api/rollouts/api/headers/rollback",
            Role::Operator,
            json!({"why": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    h.json(
        Method::PUT,
        "/api/rollouts/api/headers",
        Role::Operator,
        json!({"stable": "1.0.0", "canary": "1.1.0", "canary_percent": 50}),
    )
    .await;
    let r = h
        .send(
            Method::POST,
            "/api/rollouts/api/headers/promote",
            Some(&t),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (
            r.json()["stable"].clone(),
            r.json()["canary_percent"].clone()
        ),
        (json!("1.1.0"), json!(0))
    );
    let r = h
        .send(
            Method::POST,
            "/api/rollouts/api/headers/promote",
            Some(&t),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = h
        .send(
            Method::POST,
            "/api/rollouts/nope/headers/promote",
            Some(&t),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // The store saw every change: subscribers get the new state.
    assert_eq!(
        h.state
            .store()
            .state()
            .rollout("api", "headers")
            .map(|r| r.revision),
        Some(4)
    );
}

#[tokio::test]
async fn runtime_views_and_config_validation() {
    let h = harness().await;
    let r = h.get("/api/routes", Role::Viewer).await;
    assert_eq!(r.json()[0]["name"], "api");
    let r = h.get("/api/upstreams", Role::Viewer).await;
    assert_eq!(r.json()[0]["targets"][0]["breaker"], "open");
    assert_eq!(
        h.get("/api/rate-limits", Role::Viewer).await.json()[0]["rate"],
        "100/s"
    );
    assert_eq!(h.get("/api/config", Role::Viewer).await.json()["routes"], 1);

    let t = h.token(Role::Operator);
    let r = h
        .send(
            Method::POST,
            "/api/upstreams/backend/targets/127.0.0.1:9000/reset",
            Some(&t),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["breaker"], "closed");
    assert_eq!(h.runtime.resets.lock().expect("lock").len(), 1);
    let r = h
        .send(
            Method::POST,
            "/api/upstreams/backend/targets/10.0.0.1:1/reset",
            Some(&t),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let v = h.token(Role::Viewer);
    let validate = |yaml: &'static str| {
        let (h, v) = (&h, v.clone());
        async move {
            h.send(
                Method::POST,
                "/api/config/validate",
                Some(&v),
                Some("application/yaml"),
                yaml,
            )
            .await
        }
    };
    let r = validate("version: 1\nlisten: 0.0.0.0:8000\n").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"valid": true, "problems": []}));
    let r = validate("version: 1\nlisten: 0.0.0.0:8000\nroutez: []\n").await;
    assert_eq!(r.json()["valid"], false);
    let problem = &r.json()["problems"][0];
    assert_eq!(problem["line"], 3);
    assert!(problem["column"].as_u64().unwrap_or(0) >= 1);
    assert!(problem["message"].is_string());
    let r = validate("version: [\n").await;
    assert_eq!(r.json()["valid"], false);
    let t = h.token(Role::Viewer);
    let r = h
        .send(
            Method::POST,
            "/api/config/validate",
            Some(&t),
            Some("application/yaml"),
            vec![0xffu8, 0xfe],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unknown_endpoints_and_methods_use_the_error_shape() {
    let h = harness().await;
    let r = h.get("/api/nothing", Role::Viewer).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let t = h.token(Role::Admin);
    let r = h
        .send(Method::PATCH, "/api/plugins", Some(&t), None, Body::empty())
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
}

/// (method, uri, content type, body, least role that may call it).
type Endpoint = (Method, &'static str, Option<&'static str>, Vec<u8>, Role);

/// Every `/api` endpoint except the OpenAPI document and login, with a body that is valid where
/// one is needed.
fn protected_endpoints() -> Vec<Endpoint> {
    let json = Some("application/json");
    vec![
        (Method::GET, "/api/me", None, Vec::new(), Role::Viewer),
        (Method::GET, "/api/plugins", None, Vec::new(), Role::Viewer),
        (
            Method::POST,
            "/api/plugins?name=headers&version=3.0.0",
            Some("application/wasm"),
            COMPONENT.to_vec(),
            Role::Admin,
        ),
        (
            Method::GET,
            "/api/plugins/headers",
            None,
            Vec::new(),
            Role::Viewer,
        ),
        (
            Method::GET,
            "/api/plugins/headers/versions/1.0.0",
            None,
            Vec::new(),
            Role::Viewer,
        ),
        (
            Method::GET,
            "/api/plugins/headers/versions/1.0.0/wasm",
            None,
            Vec::new(),
            Role::Viewer,
        ),
        (
            Method::DELETE,
            "/api/plugins/headers/versions/1.2.0",
            None,
            Vec::new(),
            Role::Admin,
        ),
        (Method::GET, "/api/rollouts", None, Vec::new(), Role::Viewer),
        (
            Method::GET,
            "/api/rollouts/api/headers",
            None,
            Vec::new(),
            Role::Viewer,
        ),
        (
            Method::PUT,
            "/api/rollouts/api/headers",
            json,
            br#"{"stable": "1.0.0", "canary": "1.1.0", "canary_percent": 10}"#.to_vec(),
            Role::Operator,
        ),
        (
            Method::POST,
            "/api/rollouts/api/headers/promote",
            None,
            Vec::new(),
            Role::Operator,
        ),
        (
            Method::POST,
            "/api/rollouts/api/headers/rollback",
            json,
            br#"{"reason": "test"}"#.to_vec(),
            Role::Operator,
        ),
        (
            Method::GET,
            "/api/rollouts/api/headers/status",
            None,
            Vec::new(),
            Role::Viewer,
        ),
        (Method::GET, "/api/routes", None, Vec::new(), Role::Viewer),
        (
            Method::GET,
            "/api/upstreams",
            None,
            Vec::new(),
            Role::Viewer,
        ),
        (
            Method::POST,
            "/api/upstreams/backend/targets/127.0.0.1:9000/reset",
            None,
            Vec::new(),
            Role::Operator,
        ),
        (
            Method::GET,
            "/api/rate-limits",
            None,
            Vec::new(),
            Role::Viewer,
        ),
        (Method::GET, "/api/config", None, Vec::new(), Role::Viewer),
        (
            Method::POST,
            "/api/config/validate",
            Some("application/yaml"),
            b"version: 1\n".to_vec(),
            Role::Viewer,
        ),
        (Method::GET, "/api/audit", None, Vec::new(), Role::Viewer),
    ]
}

/// The shared error shape: JSON `{"error": {"code", "message"}}`.
fn assert_error_shape(r: &Reply, what: &str) {
    assert_eq!(
        r.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{what}"
    );
    let body = r.json();
    assert!(
        body["error"]["code"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
            && body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
}

/// Uploads 1.0.0, 1.1.0 and 1.2.0 of `headers` and a rollout `api/headers`: stable 1.0.0,
/// canary 1.1.0 at 10% (1.2.0 is unused, so it may be deleted).
async fn seeded() -> Harness {
    let h = harness().await;
    for (query, bytes) in [
        ("name=headers&version=1.0.0", COMPONENT),
        ("name=headers&version=1.1.0", COMPONENT_2),
        ("name=headers&version=1.2.0", COMPONENT),
    ] {
        let r = h.upload(Role::Admin, query, bytes).await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let r = h
        .json(
            Method::PUT,
            "/api/rollouts/api/headers",
            Role::Operator,
            json!({"stable": "1.0.0", "canary": "1.1.0", "canary_percent": 10}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    h
}

#[tokio::test]
async fn every_endpoint_needs_a_valid_token() {
    let h = seeded().await;
    for (method, uri, ct, body, _) in protected_endpoints() {
        for token in [None, Some("garbage"), Some("Bearer-less")] {
            let r = h.send(method.clone(), uri, token, ct, body.clone()).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} {token:?}"
            );
            assert_eq!(r.code(), "unauthorized", "{method} {uri}");
            assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
            assert_error_shape(&r, uri);
        }
    }
    // Nothing changed, and refused calls without a caller are not audited as anyone.
    assert_eq!(h.state.store().list_plugins()[0].versions.len(), 3);
    // The two public endpoints.
    let r = h
        .send(Method::GET, "/api/openapi.json", None, None, Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = h
        .send(
            Method::POST,
            "/api/auth/login",
            None,
            Some("application/json"),
            json!({"username": "vic", "password": "vic-pw"}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["role"], "viewer");
}

#[tokio::test]
async fn every_endpoint_checks_the_role() {
    for (method, uri, ct, body, least) in protected_endpoints() {
        for role in [Role::Viewer, Role::Operator, Role::Admin] {
            // A fresh registry per call, so one call's effect does not change the next one's.
            let h = seeded().await;
            let t = h.token(role);
            let r = h
                .send(method.clone(), uri, Some(&t), ct, body.clone())
                .await;
            if role < least {
                assert_eq!(
                    (r.status, r.code().as_str()),
                    (StatusCode::FORBIDDEN, "forbidden"),
                    "{role:?} {method} {uri}"
                );
                assert!(
                    r.json()["error"]["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains(least.as_str()),
                    "{role:?} {method} {uri}: {:?}",
                    r.json()
                );
                assert_error_shape(&r, uri);
            } else {
                assert!(
                    r.status.is_success(),
                    "{role:?} {method} {uri}: {} {:?}",
                    r.status,
                    r.json()
                );
            }
        }
    }
}

#[tokio::test]
async fn bodies_are_size_limited() {
    let h = seeded().await;
    let big_json = format!("{{\"reason\": \"{}\"}}", "x".repeat(api::JSON_LIMIT));
    let t = h.token(Role::Operator);
    for (method, uri, ct) in [
        (Method::PUT, "/api/rollouts/api/headers", "application/json"),
        (
            Method::POST,
            "/api/rollouts/api/headers/rollback",
            "application/json",
        ),
        (Method::POST, "/api/config/validate", "application/yaml"),
        (Method::POST, "/api/auth/login", "application/json"),
    ] {
        let r = h
            .send(method.clone(), uri, Some(&t), Some(ct), big_json.clone())
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            "{method} {uri}"
        );
        assert_error_shape(&r, uri);
    }
    // Uploads: a declared Content-Length over max_upload is refused before reading, a streamed
    // body as soon as it passes the limit, a multipart text field past its own limit too.
    let admin = h.token(Role::Admin);
    let req = Request::post("/api/plugins?name=headers&version=4.0.0")
        .header(header::AUTHORIZATION, format!("Bearer {admin}"))
        .header(header::CONTENT_TYPE, "application/wasm")
        .header(header::CONTENT_LENGTH, (MAX_UPLOAD + 1).to_string())
        .body(Body::from(COMPONENT))
        .expect("request");
    let resp = h.app.clone().oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let huge_description = vec![b'd'; 65 * 1024];
    let (ct, body) = multipart(&[
        ("name", b"cors"),
        ("version", b"0.1.0"),
        ("description", &huge_description),
        ("file", COMPONENT),
    ]);
    let r = h
        .send(Method::POST, "/api/plugins", Some(&admin), Some(&ct), body)
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error_shape(&r, "multipart");
    assert!(h.state.store().get_plugin("cors").is_err());
    // Exactly max_upload is accepted (the limit is inclusive).
    static EXACT: [u8; MAX_UPLOAD as usize] = {
        let mut b = [b'x'; MAX_UPLOAD as usize];
        b[0] = 0;
        b[1] = b'a';
        b[2] = b's';
        b[3] = b'm';
        b[4] = 0x0d;
        b[5] = 0;
        b[6] = 1;
        b[7] = 0;
        b
    };
    let r = h
        .upload(Role::Admin, "name=big&version=1.0.0", &EXACT)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json());
    assert_eq!(r.json()["meta"]["size"], MAX_UPLOAD);
}

#[tokio::test]
async fn unknown_fields_and_wrong_types_are_refused() {
    let h = seeded().await;
    let cases: Vec<(Method, &str, Value)> = vec![
        (
            Method::PUT,
            "/api/rollouts/api/headers",
            json!({"stable": "1.0.0", "guards": {"max_error_rate": 0.1, "typo": 1}}),
        ),
        (
            Method::PUT,
            "/api/rollouts/api/headers",
            json!({"stable": "1.0.0", "canary_percent": "ten"}),
        ),
        (
            Method::PUT,
            "/api/rollouts/api/headers",
            json!({"stable": "1.0.0", "canary_percent": -1}),
        ),
        (
            Method::PUT,
            "/api/rollouts/api/headers",
            json!(["stable", "1.0.0"]),
        ),
        (
            Method::POST,
            "/api/rollouts/api/headers/rollback",
            json!({"reason": 5}),
        ),
        (
            Method::POST,
            "/api/auth/login",
            json!({"username": "vic", "password": "vic-pw", "role": "admin"}),
        ),
    ];
    for (method, uri, body) in cases {
        let r = h.json(method.clone(), uri, Role::Admin, body.clone()).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
            "{method} {uri} {body}"
        );
        assert_error_shape(&r, uri);
    }
    // The message names the offending field.
    let r = h
        .json(
            Method::PUT,
            "/api/rollouts/api/headers",
            Role::Operator,
            json!({"stable": "1.0.0", "guards": {"typo": 1}}),
        )
        .await;
    let message = r.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        message.contains("guards") && message.contains("typo"),
        "{message}"
    );
    // Trailing garbage after the JSON value, and a body that is not JSON at all.
    let t = h.token(Role::Operator);
    for body in ["{\"stable\": \"1.0.0\"} {}", "stable=1.0.0"] {
        let r = h
            .send(
                Method::PUT,
                "/api/rollouts/api/headers",
                Some(&t),
                Some("application/json"),
                body,
            )
            .await;
        assert_eq!(r.code(), "invalid_json", "{body}");
    }
    // Not JSON by content type.
    let r = h
        .send(
            Method::PUT,
            "/api/rollouts/api/headers",
            Some(&t),
            Some("text/plain"),
            "{\"stable\": \"1.0.0\"}",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_error_shape(&r, "415");
    // Unknown query parameters.
    for uri in ["/api/audit?limit=5&sort=asc", "/api/audit?limit=abc"] {
        let r = h.get(uri, Role::Viewer).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::BAD_REQUEST, "invalid_query"),
            "{uri}"
        );
    }
    // Nothing above changed the rollout.
    assert_eq!(
        h.state
            .store()
            .get_rollout("api", "headers")
            .map(|r| r.revision)
            .ok(),
        Some(1)
    );
}

#[tokio::test]
async fn config_validation_checks_registry_bindings() {
    let h = seeded().await;
    let v = h.token(Role::Viewer);
    let validate = |yaml: String| {
        let (h, v) = (&h, v.clone());
        async move {
            h.send(
                Method::POST,
                "/api/config/validate",
                Some(&v),
                Some("application/yaml"),
                yaml,
            )
            .await
            .json()
        }
    };
    let yaml = |route: &str, pin: &str| {
        format!(
            "version: 1\nplugins:\n  - name: headers\nroutes:\n  - name: {route}\n    respond: {{ status: 200 }}\n    plugins:\n      - use: headers\n{pin}"
        )
    };
    // The seeded rollout `api/headers` serves route `api`.
    assert_eq!(
        validate(yaml("api", "")).await,
        json!({"valid": true, "problems": []})
    );
    let r = validate(yaml("web", "")).await;
    assert_eq!(r["valid"], false);
    assert_eq!(r["problems"][0]["path"], "routes[0].plugins[0].use");
    assert_eq!(r["problems"][0]["line"], 8);
    assert!(
        r["problems"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("no version in the registry for route \"web\""),
        "{r}"
    );
    assert_eq!(
        validate(yaml("web", "        version: 1.1.0\n")).await["valid"],
        true
    );
    let r = validate(yaml("web", "        version: 7.0.0\n")).await;
    assert_eq!(r["problems"][0]["path"], "routes[0].plugins[0].version");
    assert_eq!(r["problems"][0]["line"], 9);
}
