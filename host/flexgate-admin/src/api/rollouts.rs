//! Rollout endpoints: read, set (canary, percent, pin), promote, rollback, and the live status
//! with per-version stats from the runtime. Changes need the operator role and are audited.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use flexgate_registry::{Rollout, RolloutSpec};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use super::audit::audited;
use super::auth::{Principal, Role};
use super::error::{ApiError, ErrorBody};
use super::json::{ApiJson, JSON_LIMIT, parse_json};
use super::runtime::VersionStats;

/// Every rollout.
#[utoipa::path(get, path = "/api/rollouts", tag = "rollouts", security(("bearer" = [])),
    responses(
        (status = 200, description = "Rollouts by route and plugin", body = [Rollout]),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    ))]
pub async fn list(State(state): State<ApiState>, _who: Principal) -> Json<Vec<Rollout>> {
    Json(state.store().list_rollouts())
}

/// One rollout.
#[utoipa::path(get, path = "/api/rollouts/{route}/{plugin}", tag = "rollouts",
    security(("bearer" = [])),
    params(("route" = String, Path, description = "Route name"),
           ("plugin" = String, Path, description = "Plugin name")),
    responses(
        (status = 200, description = "The rollout", body = Rollout),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No rollout for this binding", body = ErrorBody),
    ))]
pub async fn get_rollout(
    State(state): State<ApiState>,
    _who: Principal,
    Path((route, plugin)): Path<(String, String)>,
) -> Result<Json<Rollout>, ApiError> {
    Ok(Json(state.store().get_rollout(&route, &plugin)?))
}

/// Creates or replaces a rollout (operator). Send `revision` to make it conditional.
#[utoipa::path(put, path = "/api/rollouts/{route}/{plugin}", tag = "rollouts",
    security(("bearer" = [])),
    params(("route" = String, Path, description = "Route name"),
           ("plugin" = String, Path, description = "Plugin name")),
    request_body = RolloutSpec,
    responses(
        (status = 200, description = "The new rollout", body = Rollout),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Not an operator", body = ErrorBody),
        (status = 409, description = "Stale revision", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid rollout (unknown version, bad percent, unknown field)", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
pub async fn put_rollout(
    State(state): State<ApiState>,
    who: Principal,
    Path((route, plugin)): Path<(String, String)>,
    body: Result<ApiJson<RolloutSpec>, ApiError>,
) -> Result<Json<Rollout>, ApiError> {
    let target = format!("{route}/{plugin}");
    audited(&state, &who, "rollout.put", &target, async {
        who.require(Role::Operator)?;
        let ApiJson(spec) = body?;
        Ok(Json(
            state.store().put_rollout(&route, &plugin, spec).await?,
        ))
    })
    .await
}

/// Promotes the canary to stable (operator).
#[utoipa::path(post, path = "/api/rollouts/{route}/{plugin}/promote", tag = "rollouts",
    security(("bearer" = [])),
    params(("route" = String, Path, description = "Route name"),
           ("plugin" = String, Path, description = "Plugin name")),
    responses(
        (status = 200, description = "The new rollout", body = Rollout),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Not an operator", body = ErrorBody),
        (status = 404, description = "No rollout for this binding", body = ErrorBody),
        (status = 409, description = "No canary to promote", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
pub async fn promote(
    State(state): State<ApiState>,
    who: Principal,
    Path((route, plugin)): Path<(String, String)>,
) -> Result<Json<Rollout>, ApiError> {
    let target = format!("{route}/{plugin}");
    audited(&state, &who, "rollout.promote", &target, async {
        who.require(Role::Operator)?;
        Ok(Json(state.store().promote(&route, &plugin).await?))
    })
    .await
}

/// Optional body of a rollback.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// Why (kept in the rollout and the audit log).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Rolls the canary back (operator): canary removed, percent 0, reason recorded.
#[utoipa::path(post, path = "/api/rollouts/{route}/{plugin}/rollback", tag = "rollouts",
    security(("bearer" = [])),
    params(("route" = String, Path, description = "Route name"),
           ("plugin" = String, Path, description = "Plugin name")),
    request_body(content = Option<RollbackRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "The new rollout", body = Rollout),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Not an operator", body = ErrorBody),
        (status = 404, description = "No rollout for this binding", body = ErrorBody),
        (status = 409, description = "No canary to roll back", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Unknown field", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
pub async fn rollback(
    State(state): State<ApiState>,
    who: Principal,
    Path((route, plugin)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Rollout>, ApiError> {
    let target = format!("{route}/{plugin}");
    audited(&state, &who, "rollout.rollback", &target, async {
        who.require(Role::Operator)?;
        if body.len() > JSON_LIMIT {
            return Err(ApiError::too_large(JSON_LIMIT as u64));
        }
        let req: RollbackRequest = if body.iter().all(u8::is_ascii_whitespace) {
            RollbackRequest::default()
        } else {
            parse_json(&body)?
        };
        let reason = req.reason.unwrap_or_else(|| "manual rollback".into());
        Ok(Json(
            state
                .store()
                .rollback(&route, &plugin, &reason, &who.name)
                .await?,
        ))
    })
    .await
}

/// A rollout with live per-version stats.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RolloutStatus {
    /// The stored rollout.
    pub rollout: Rollout,
    /// Stats per version over the guard window (stable first).
    pub versions: Vec<VersionStats>,
}

/// A rollout with live requests, errors, traps and p50/p99 per version.
#[utoipa::path(get, path = "/api/rollouts/{route}/{plugin}/status", tag = "rollouts",
    security(("bearer" = [])),
    params(("route" = String, Path, description = "Route name"),
           ("plugin" = String, Path, description = "Plugin name")),
    responses(
        (status = 200, description = "The rollout and its stats", body = RolloutStatus),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No rollout for this binding", body = ErrorBody),
    ))]
pub async fn status(
    State(state): State<ApiState>,
    _who: Principal,
    Path((route, plugin)): Path<(String, String)>,
) -> Result<Json<RolloutStatus>, ApiError> {
    let rollout = state.store().get_rollout(&route, &plugin)?;
    let versions = state.runtime().rollout_stats(&route, &plugin).await;
    Ok(Json(RolloutStatus { rollout, versions }))
}
