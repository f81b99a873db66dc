//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations and the
//! DTOs' `ToSchema` derives, so it cannot drift from the code. Served without auth.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{audit, auth, plugins, rollouts, views};

/// The admin API document.
#[derive(OpenApi)]
#[openapi(
    info(title = "FlexGate admin API", description = "Plugin registry, rollouts and runtime views of a FlexGate gateway."),
    paths(
        auth::login, auth::me,
        plugins::list, plugins::get_plugin, plugins::upload, plugins::get_version,
        plugins::download, plugins::delete_version,
        rollouts::list, rollouts::get_rollout, rollouts::put_rollout, rollouts::promote,
        rollouts::rollback, rollouts::status,
        views::routes, views::upstreams, views::reset_target, views::rate_limits,
        views::config_summary, views::validate_config,
        audit::list,
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "auth", description = "Login and identity"),
        (name = "plugins", description = "Plugin versions in the registry"),
        (name = "rollouts", description = "Which version each route binding runs"),
        (name = "runtime", description = "The running gateway"),
        (name = "audit", description = "Who changed what"),
    )
)]
pub struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT from POST /api/auth/login, or a static API token",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as JSON (for `flexgate openapi` or tests).
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// `GET /api/openapi.json`.
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
