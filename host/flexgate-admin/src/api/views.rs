//! Read views of the running gateway (routes, upstreams with breakers, rate limits, config), the
//! breaker reset, and validation of a candidate config before it is deployed.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use super::audit::audited;
use super::auth::{Principal, Role};
use super::error::{ApiError, ErrorBody};
use super::json::{JSON_LIMIT, read_limited};
use super::runtime::{
    ConfigSummary, RateLimitInfo, ResetError, RouteInfo, TargetInfo, UpstreamInfo,
};

/// Routes of the running config.
#[utoipa::path(get, path = "/api/routes", tag = "runtime", security(("bearer" = [])),
    responses(
        (status = 200, description = "Routes in match order", body = [RouteInfo]),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    ))]
pub async fn routes(State(state): State<ApiState>, _who: Principal) -> Json<Vec<RouteInfo>> {
    Json(state.runtime().routes().await)
}

/// Upstreams with health and circuit breaker state per target.
#[utoipa::path(get, path = "/api/upstreams", tag = "runtime", security(("bearer" = [])),
    responses(
        (status = 200, description = "Upstreams", body = [UpstreamInfo]),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    ))]
pub async fn upstreams(State(state): State<ApiState>, _who: Principal) -> Json<Vec<UpstreamInfo>> {
    Json(state.runtime().upstreams().await)
}

/// Closes the circuit breaker of one target (operator).
#[utoipa::path(post, path = "/api/upstreams/{upstream}/targets/{target}/reset", tag = "runtime",
    security(("bearer" = [])),
    params(("upstream" = String, Path, description = "Upstream name"),
           ("target" = String, Path, description = "Target `host:port`")),
    responses(
        (status = 200, description = "The target after the reset", body = TargetInfo),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Not an operator", body = ErrorBody),
        (status = 404, description = "No such upstream or target", body = ErrorBody),
    ))]
pub async fn reset_target(
    State(state): State<ApiState>,
    who: Principal,
    Path((upstream, target)): Path<(String, String)>,
) -> Result<Json<TargetInfo>, ApiError> {
    let name = format!("{upstream}/{target}");
    audited(&state, &who, "breaker.reset", &name, async {
        who.require(Role::Operator)?;
        match state.runtime().reset_breaker(&upstream, &target).await {
            Ok(info) => Ok(Json(info)),
            Err(ResetError::NotFound(m)) => Err(ApiError::not_found(m)),
        }
    })
    .await
}

/// Rate-limit policies.
#[utoipa::path(get, path = "/api/rate-limits", tag = "runtime", security(("bearer" = [])),
    responses(
        (status = 200, description = "Policies by route", body = [RateLimitInfo]),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    ))]
pub async fn rate_limits(
    State(state): State<ApiState>,
    _who: Principal,
) -> Json<Vec<RateLimitInfo>> {
    Json(state.runtime().rate_limits().await)
}

/// The running config.
#[utoipa::path(get, path = "/api/config", tag = "runtime", security(("bearer" = [])),
    responses(
        (status = 200, description = "Summary", body = ConfigSummary),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    ))]
pub async fn config_summary(State(state): State<ApiState>, _who: Principal) -> Json<ConfigSummary> {
    Json(state.runtime().config_summary().await)
}

/// One problem in a candidate config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ValidateProblem {
    /// 1-based line; 0 when the problem has no position.
    pub line: u64,
    /// 1-based column; 0 when the problem has no position.
    pub column: u64,
    /// Field path such as `routes[2].upstream`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// The verdict on a candidate config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ValidateResult {
    /// True when there are no problems.
    pub valid: bool,
    /// Every problem, by position.
    pub problems: Vec<ValidateProblem>,
}

/// Validates a candidate YAML config (the body) without applying it. Besides the config's own
/// rules, every binding of a registry plugin must be servable: a pinned version must be uploaded,
/// an unpinned binding needs a rollout with a stable version.
#[utoipa::path(post, path = "/api/config/validate", tag = "runtime", security(("bearer" = [])),
    request_body(content = String, content_type = "application/yaml",
        description = "The candidate flexgate.yaml"),
    responses(
        (status = 200, description = "Verdict (also when invalid)", body = ValidateResult),
        (status = 400, description = "Body is not UTF-8", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ))]
pub async fn validate_config(
    State(state): State<ApiState>,
    _who: Principal,
    body: Body,
) -> Result<Json<ValidateResult>, ApiError> {
    let bytes = read_limited(body, JSON_LIMIT).await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::bad_request("invalid_body", "the config is not UTF-8 text"))?;
    let problems = match flexgate_config::parse(text, "candidate.yaml") {
        Ok(config) => {
            let state = state.store().state();
            let issues = super::bindings::registry_problems(&config, &state);
            if issues.is_empty() {
                Vec::new()
            } else {
                to_problems(flexgate_config::locate_problems(
                    text,
                    "candidate.yaml",
                    issues,
                ))
            }
        }
        Err(errors) => to_problems(errors),
    };
    Ok(Json(ValidateResult {
        valid: problems.is_empty(),
        problems,
    }))
}

fn to_problems(errors: flexgate_config::ConfigErrors) -> Vec<ValidateProblem> {
    errors
        .problems
        .into_iter()
        .map(|p| ValidateProblem {
            line: p.line as u64,
            column: p.column as u64,
            path: p.path,
            message: p.message,
        })
        .collect()
}
