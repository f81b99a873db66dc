//! The admin API under `/api`: plugin registry (upload, versions, download, delete), rollouts
//! (canary, promote, rollback, live status), runtime views (routes, upstreams and breakers, rate
//! limits, config), audit, login, and the OpenAPI document generated from this code.
//!
//! The binary builds an [`ApiState`] from the store, auth settings and its implementations of
//! [`RuntimeView`] and [`PluginValidator`], then mounts [`router`] on the admin listener.

mod audit;
mod auth;
mod bindings;
pub mod client;
mod config;
mod error;
mod json;
mod openapi;
mod plugins;
mod rollouts;
mod runtime;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use flexgate_registry::Store;

pub use auth::{
    AuthSettings, AuthSetupError, DEFAULT_TOKEN_TTL, LoginRequest, LoginResponse, Principal, Role,
    TokenRecord, UserRecord, hash_password, hash_token, parse_tokens, parse_users, random_secret,
};
pub use bindings::registry_problems;
pub use config::{AdminApiConfig, AdminAuthConfig, StoreConfig, open_store};
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use json::JSON_LIMIT;
pub use openapi::{ApiDoc, openapi_json};
pub use plugins::{PluginDetail, UploadQuery};
pub use rollouts::{RollbackRequest, RolloutStatus};
pub use runtime::{
    BreakerState, ConfigSummary, PLUGIN_WORLD, PinnedVersion, PluginBindingInfo, PluginValidator,
    RateLimitInfo, RejectionKind, ResetError, RouteInfo, RuntimeView, StatsSnapshotDto, TargetInfo,
    UploadRejection, UpstreamInfo, ValidatedInfo, VersionStats, WasmHeaderValidator, check_header,
};
pub use views::{ValidateProblem, ValidateResult};

/// Shared by every handler: cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    auth: AuthSettings,
    runtime: Arc<dyn RuntimeView>,
    validator: Arc<dyn PluginValidator>,
    max_upload: u64,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("auth", &self.inner.auth)
            .field("max_upload", &self.inner.max_upload)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// Everything the API needs; `max_upload` is `admin.max_upload` in bytes.
    pub fn new(
        store: Arc<dyn Store>,
        auth: AuthSettings,
        runtime: Arc<dyn RuntimeView>,
        validator: Arc<dyn PluginValidator>,
        max_upload: u64,
    ) -> ApiState {
        ApiState {
            inner: Arc::new(Inner {
                store,
                auth,
                runtime,
                validator,
                max_upload,
            }),
        }
    }

    /// The registry store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Auth settings.
    pub fn auth(&self) -> &AuthSettings {
        &self.inner.auth
    }

    /// The live runtime.
    pub fn runtime(&self) -> &Arc<dyn RuntimeView> {
        &self.inner.runtime
    }

    /// The upload validator.
    pub fn validator(&self) -> &Arc<dyn PluginValidator> {
        &self.inner.validator
    }

    /// Largest upload in bytes.
    pub fn max_upload(&self) -> u64 {
        self.inner.max_upload
    }
}

/// The `/api` router, to merge into the admin router.
pub fn router(state: ApiState) -> Router {
    // Multipart framing around the wasm field needs a little room above `max_upload`.
    let upload_limit =
        usize::try_from(state.max_upload().saturating_add(64 * 1024)).unwrap_or(usize::MAX);
    let api = Router::new()
        .route("/openapi.json", get(openapi::serve))
        .route("/auth/login", post(auth::login))
        .route("/me", get(auth::me))
        .route(
            "/plugins",
            get(plugins::list)
                .post(plugins::upload)
                .layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/plugins/{name}", get(plugins::get_plugin))
        .route(
            "/plugins/{name}/versions/{version}",
            get(plugins::get_version).delete(plugins::delete_version),
        )
        .route(
            "/plugins/{name}/versions/{version}/wasm",
            get(plugins::download),
        )
        .route("/rollouts", get(rollouts::list))
        .route(
            "/rollouts/{route}/{plugin}",
            get(rollouts::get_rollout).put(rollouts::put_rollout),
        )
        .route(
            "/rollouts/{route}/{plugin}/promote",
            post(rollouts::promote),
        )
        .route(
            "/rollouts/{route}/{plugin}/rollback",
            post(rollouts::rollback),
        )
        .route("/rollouts/{route}/{plugin}/status", get(rollouts::status))
        .route("/routes", get(views::routes))
        .route("/upstreams", get(views::upstreams))
        .route(
            "/upstreams/{upstream}/targets/{target}/reset",
            post(views::reset_target),
        )
        .route("/rate-limits", get(views::rate_limits))
        .route("/config", get(views::config_summary))
        .route("/config/validate", post(views::validate_config))
        .route("/audit", get(audit::list))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    // Nested so the JSON fallbacks apply under `/api` only and the router merges with others.
    Router::new().nest("/api", api.with_state(state))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such API endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not support that method",
    )
}
