//! The CLI client against the real router on a loopback socket.

use std::sync::Arc;

use async_trait::async_trait;
use flexgate_admin::api::{
    self, ApiState, AuthSettings, ConfigSummary, PinnedVersion, RateLimitInfo, ResetError, Role,
    RouteInfo, RuntimeView, TargetInfo, TokenRecord, UpstreamInfo, VersionStats,
    WasmHeaderValidator, client,
};
use flexgate_registry::FileStore;

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

#[tokio::test]
async fn push_rollout_promote_rollback_list() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(FileStore::open(dir.path().join("data")).await?);
    let auth = AuthSettings::new(vec![1u8; 32])?.with_tokens(vec![TokenRecord {
        name: "cli".into(),
        sha256: api::hash_token("tok"),
        role: Role::Admin,
    }])?;
    let state = ApiState::new(
        store,
        auth,
        Arc::new(NoRuntime),
        Arc::new(WasmHeaderValidator),
        1 << 20,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, api::router(state)).await;
    });

    let v1 = dir.path().join("v1.wasm");
    let v2 = dir.path().join("v2.wasm");
    std::fs::write(&v1, b"\0asm\x0d\x00\x01\x00one")?;
    std::fs::write(&v2, b"\0asm\x0d\x00\x01\x00two")?;
    let pushed = client::push(&url, "tok", &v1, "headers", "1.0.0", Some("first one")).await?;
    assert_eq!(pushed["created"], true);
    client::push(&url, "tok", &v2, "headers", "1.1.0", None).await?;

    // First rollout pins the version as stable; the next sets a canary.
    let r = client::rollout(&url, "tok", "api v1", "headers", "1.0.0", 0).await?;
    assert_eq!(r["stable"], "1.0.0");
    let r = client::rollout(&url, "tok", "api v1", "headers", "1.1.0", 20).await?;
    assert_eq!(
        (r["canary"].as_str(), r["canary_percent"].as_u64()),
        (Some("1.1.0"), Some(20))
    );
    let r = client::rollback(&url, "tok", "api v1", "headers", Some("errors")).await?;
    assert_eq!(r["last_rollback"]["reason"], "errors");
    client::rollout(&url, "tok", "api v1", "headers", "1.1.0", 50).await?;
    let r = client::promote(&url, "tok", "api v1", "headers").await?;
    assert_eq!(r["stable"], "1.1.0");
    let list = client::list(&url, "tok").await?;
    assert_eq!(list[0]["versions"], serde_json::json!(["1.1.0", "1.0.0"]));

    match client::list(&url, "wrong").await {
        Err(client::ClientError::Api {
            status: 401, code, ..
        }) => assert_eq!(code, "unauthorized"),
        other => panic!("expected 401, got {other:?}"),
    }
    match client::push(
        &url,
        "tok",
        &dir.path().join("missing.wasm"),
        "x",
        "1.0.0",
        None,
    )
    .await
    {
        Err(client::ClientError::File { .. }) => {}
        other => panic!("expected a file error, got {other:?}"),
    }
    server.abort();
    Ok(())
}
