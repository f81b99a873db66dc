//! Liveness and readiness, as Kubernetes probes expect them.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use parking_lot::RwLock;
use serde_json::{Value, json};

/// Named readiness conditions; the process is ready when all are true. Subsystems register their own
/// (config loaded, listeners bound, plugins compiled). Informational details (e.g. Redis reachability:
/// a gateway on its fallback still serves) are reported beside the checks without gating readiness.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<RwLock<BTreeMap<&'static str, bool>>>,
    details: Arc<RwLock<BTreeMap<&'static str, Detail>>>,
}

/// Computes a detail when `/health/ready` is asked; `None` leaves it out of the report.
type Detail = Arc<dyn Fn() -> Option<Value> + Send + Sync>;

impl Readiness {
    /// Declares a condition, initially false, so readiness waits for it.
    pub fn require(&self, name: &'static str) {
        self.checks.write().entry(name).or_insert(false);
    }

    pub fn set(&self, name: &'static str, ok: bool) {
        self.checks.write().insert(name, ok);
    }

    pub fn is_ready(&self) -> bool {
        self.checks.read().values().all(|&ok| ok)
    }

    /// Reports `detail()` under `details.NAME` on every `/health/ready`, without affecting readiness.
    pub fn detail(
        &self,
        name: &'static str,
        detail: impl Fn() -> Option<Value> + Send + Sync + 'static,
    ) {
        self.details.write().insert(name, Arc::new(detail));
    }

    fn report(&self) -> Value {
        let checks = self.checks.read();
        let ready = checks.values().all(|&ok| ok);
        let mut report =
            json!({ "status": if ready { "ready" } else { "not_ready" }, "checks": *checks });
        let details: serde_json::Map<String, Value> = self
            .details
            .read()
            .iter()
            .filter_map(|(name, f)| Some(((*name).to_owned(), f()?)))
            .collect();
        if !details.is_empty() {
            report["details"] = Value::Object(details);
        }
        report
    }
}

/// `GET /health/live` (the process answers) and `GET /health/ready` (503 until every check passes).
pub fn health_router(readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/health/live",
            get(|| async { Json(json!({ "status": "live" })) }),
        )
        .route("/health/ready", get(ready))
        .with_state(readiness)
}

async fn ready(State(r): State<Readiness>) -> (StatusCode, Json<Value>) {
    let status = if r.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(r.report()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(router: Router, path: &str) -> (StatusCode, Value) {
        let resp = router
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&body).expect("json"))
    }

    #[tokio::test]
    async fn ready_waits_for_every_check() {
        let r = Readiness::default();
        r.require("config");
        r.require("listeners");
        let (status, body) = get(health_router(r.clone()), "/health/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["checks"]["config"], false);
        r.set("config", true);
        r.set("listeners", true);
        let (status, body) = get(health_router(r.clone()), "/health/ready").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "ready");
        let (status, _) = get(health_router(r), "/health/live").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn details_inform_without_gating() {
        let r = Readiness::default();
        r.require("config");
        r.set("config", true);
        r.detail("redis", || Some(json!({ "reachable": false })));
        r.detail("absent", || None);
        let (status, body) = get(health_router(r), "/health/ready").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["details"]["redis"]["reachable"], false);
        assert!(body["details"].get("absent").is_none());
        assert!(body["checks"].get("redis").is_none());
    }
}
