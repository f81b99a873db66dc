//! The audit trail: every write through the API (successful, refused or failed) is appended with
//! who, role, action, target, when and result, and can be paged through newest first.

use axum::Json;
use axum::extract::State;
use flexgate_registry::{AuditEntry, AuditPage, now_rfc3339};
use serde::Deserialize;
use utoipa::IntoParams;

use super::ApiState;
use super::auth::Principal;
use super::error::{ApiError, ErrorBody};
use super::json::ApiQuery;

/// Runs a write and records its outcome (see [`record`]).
pub(crate) async fn audited<T>(
    state: &ApiState,
    who: &Principal,
    action: &str,
    target: &str,
    write: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let result = write.await;
    record(state, who, action, target, &result).await;
    result
}

/// Appends the outcome of a write. An audit failure is logged, not returned: the write itself
/// already happened (or failed) and the caller must learn that.
pub(crate) async fn record<T>(
    state: &ApiState,
    who: &Principal,
    action: &str,
    target: &str,
    result: &Result<T, ApiError>,
) {
    let entry = AuditEntry {
        at: now_rfc3339(),
        who: who.name.clone(),
        role: who.role.as_str().to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        result: match result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.audit_text(),
        },
    };
    if let Err(e) = state.store().append_audit(entry.clone()).await {
        tracing::error!(error = %e, ?entry, "could not append to the audit log");
    }
}

/// Paging of `GET /api/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries to skip (newest first), default 0.
    #[serde(default)]
    pub offset: Option<u64>,
    /// Page size, 1..=1000, default 100.
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/api/audit", tag = "audit", params(AuditQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of entries", body = AuditPage),
        (status = 400, description = "Bad paging parameters", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<ApiState>,
    _who: Principal,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 1000",
        ));
    }
    Ok(Json(
        state
            .store()
            .list_audit(q.offset.unwrap_or(0), limit)
            .await?,
    ))
}
