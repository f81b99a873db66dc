//! Plugin endpoints: list, detail, upload (raw `application/wasm` with query metadata, or
//! multipart), metadata, download and delete. Uploads are validated before anything is stored, so a
//! version that is in the registry is one the gateway can load.

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use flexgate_registry::{
    NewVersion, PluginSummary, PluginVersionMeta, PutOutcome, Rollout, validate_plugin_name,
    validate_version,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ApiState;
use super::audit::{audited, record};
use super::auth::{Principal, Role};
use super::error::{ApiError, ErrorBody};
use super::runtime::PinnedVersion;

/// Largest text field of a multipart upload.
const TEXT_FIELD_LIMIT: usize = 64 * 1024;

/// Every plugin in the registry.
#[utoipa::path(get, path = "/api/plugins", tag = "plugins", security(("bearer" = [])),
    responses(
        (status = 200, description = "Plugins by name", body = [PluginSummary]),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    ))]
pub async fn list(State(state): State<ApiState>, _who: Principal) -> Json<Vec<PluginSummary>> {
    Json(state.store().list_plugins())
}

/// One plugin: its versions and where they run.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PluginDetail {
    /// Plugin name.
    pub name: String,
    /// Versions, highest first.
    pub versions: Vec<PluginVersionMeta>,
    /// Rollouts that bind this plugin.
    pub rollouts: Vec<Rollout>,
    /// Versions pinned by YAML.
    pub pinned: Vec<PinnedVersion>,
}

/// A plugin with its versions, rollouts and YAML pins.
#[utoipa::path(get, path = "/api/plugins/{name}", tag = "plugins", security(("bearer" = [])),
    params(("name" = String, Path, description = "Plugin name")),
    responses(
        (status = 200, description = "The plugin", body = PluginDetail),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such plugin", body = ErrorBody),
    ))]
pub async fn get_plugin(
    State(state): State<ApiState>,
    _who: Principal,
    Path(name): Path<String>,
) -> Result<Json<PluginDetail>, ApiError> {
    let versions = state.store().get_plugin(&name)?;
    let rollouts = state
        .store()
        .list_rollouts()
        .into_iter()
        .filter(|r| r.plugin == name)
        .collect();
    let pinned = state
        .runtime()
        .pinned_versions()
        .await
        .into_iter()
        .filter(|p| p.plugin == name)
        .collect();
    Ok(Json(PluginDetail {
        name,
        versions,
        rollouts,
        pinned,
    }))
}

/// Metadata of a raw upload (`POST /api/plugins?name=..&version=..`).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Plugin name (`[a-z0-9][a-z0-9_-]*`).
    pub name: Option<String>,
    /// Semver version.
    pub version: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// JSON config passed to `init` during validation.
    pub example_config: Option<String>,
}

/// Raw component bytes (documentation only).
pub(crate) struct WasmBinary;

impl utoipa::PartialSchema for WasmBinary {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, SchemaFormat, Type};
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .description(Some("A WebAssembly component (`.wasm`)"))
            .into()
    }
}

impl ToSchema for WasmBinary {}

/// The multipart form of an upload (fields override query parameters).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct UploadForm {
    /// Plugin name.
    name: String,
    /// Semver version.
    version: String,
    /// Free text.
    description: Option<String>,
    /// JSON config for `init` during validation.
    example_config: Option<String>,
    /// The component (`.wasm`).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

struct Upload {
    name: String,
    version: String,
    description: String,
    example_config: Option<String>,
    bytes: Bytes,
}

/// Uploads a plugin version (admin). The same version with the same bytes is a no-op (200).
#[utoipa::path(post, path = "/api/plugins", tag = "plugins", security(("bearer" = [])),
    params(UploadQuery),
    request_body(content(
        (WasmBinary = "application/wasm"),
        (UploadForm = "multipart/form-data"),
    )),
    responses(
        (status = 201, description = "Stored", body = PutOutcome),
        (status = 200, description = "Identical version already stored", body = PutOutcome),
        (status = 400, description = "Not WebAssembly, a core module, or missing metadata", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 409, description = "Version exists with different bytes", body = ErrorBody),
        (status = 413, description = "Over max_upload", body = ErrorBody),
        (status = 415, description = "Neither application/wasm nor multipart", body = ErrorBody),
        (status = 422, description = "Wrong world, init failed, or invalid name/version", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
pub async fn upload(
    State(state): State<ApiState>,
    who: Principal,
    req: Request,
) -> Result<Response, ApiError> {
    let mut target = "plugins".to_owned();
    let result = upload_inner(&state, &who, req, &mut target).await;
    record(&state, &who, "plugin.upload", &target, &result).await;
    let outcome = result?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!(
        "/api/plugins/{}/versions/{}",
        outcome.meta.name, outcome.meta.version
    );
    let mut response = (status, Json(outcome)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

async fn upload_inner(
    state: &ApiState,
    who: &Principal,
    req: Request,
    target: &mut String,
) -> Result<PutOutcome, ApiError> {
    who.require(Role::Admin)?;
    let upload = read_upload(state, req).await?;
    *target = format!("{}@{}", upload.name, upload.version);
    validate_plugin_name(&upload.name)?;
    validate_version(&upload.version)?;
    if let Some(cfg) = &upload.example_config
        && let Err(e) = serde_json::from_str::<serde_json::Value>(cfg)
    {
        return Err(ApiError::unprocessable(
            "invalid_example_config",
            format!("example_config is not valid JSON: {e}"),
        ));
    }
    let info = state
        .validator()
        .validate(
            &upload.name,
            upload.bytes.clone(),
            upload.example_config.as_deref(),
        )
        .await
        .map_err(|r| {
            let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST);
            ApiError::new(status, r.code(), r.message)
        })?;
    let new = NewVersion {
        name: upload.name,
        version: upload.version,
        wit_world: info.wit_world,
        uploaded_by: who.name.clone(),
        description: upload.description,
    };
    Ok(state.store().put_version(new, upload.bytes).await?)
}

async fn read_upload(state: &ApiState, req: Request) -> Result<Upload, ApiError> {
    let query = axum::extract::Query::<UploadQuery>::try_from_uri(req.uri())
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?
        .0;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let max = state.max_upload();
    let mut upload = Upload {
        name: query.name.unwrap_or_default(),
        version: query.version.unwrap_or_default(),
        description: query.description.unwrap_or_default(),
        example_config: query.example_config,
        bytes: Bytes::new(),
    };
    if content_type.starts_with("multipart/form-data") {
        let mut form = Multipart::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), "invalid_multipart", e.body_text()))?;
        let mut file = None;
        while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
            let name = field.name().unwrap_or_default().to_owned();
            let limit = if name == "file" {
                usize::try_from(max).unwrap_or(usize::MAX)
            } else {
                TEXT_FIELD_LIMIT
            };
            let mut buf = BytesMut::new();
            while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                if buf.len() + chunk.len() > limit {
                    return Err(ApiError::too_large(limit as u64));
                }
                buf.extend_from_slice(&chunk);
            }
            let text = || {
                String::from_utf8(buf.to_vec()).map_err(|_| {
                    ApiError::bad_request(
                        "invalid_multipart",
                        format!("field `{name}` is not UTF-8"),
                    )
                })
            };
            match name.as_str() {
                "file" => file = Some(buf.freeze()),
                "name" => upload.name = text()?,
                "version" => upload.version = text()?,
                "description" => upload.description = text()?,
                "example_config" => upload.example_config = Some(text()?),
                other => {
                    return Err(ApiError::bad_request(
                        "invalid_multipart",
                        format!(
                            "unknown form field `{other}`; expected file, name, version, description, example_config"
                        ),
                    ));
                }
            }
        }
        upload.bytes = file.ok_or_else(|| {
            ApiError::bad_request(
                "missing_parameter",
                "the multipart form has no `file` field",
            )
        })?;
    } else if content_type.starts_with("application/wasm")
        || content_type.starts_with("application/octet-stream")
    {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max) {
            return Err(ApiError::too_large(max));
        }
        upload.bytes =
            super::json::read_limited(req.into_body(), usize::try_from(max).unwrap_or(usize::MAX))
                .await?;
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the component as `application/wasm` (metadata in the query) or as `multipart/form-data`",
        ));
    }
    for (field, value) in [("name", &upload.name), ("version", &upload.version)] {
        if value.is_empty() {
            return Err(ApiError::bad_request(
                "missing_parameter",
                format!("`{field}` is required"),
            ));
        }
    }
    Ok(upload)
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(status, "payload_too_large", e.body_text());
    }
    ApiError::new(status, "invalid_multipart", e.body_text())
}

/// One version's metadata.
#[utoipa::path(get, path = "/api/plugins/{name}/versions/{version}", tag = "plugins",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Plugin name"),
           ("version" = String, Path, description = "Semver version")),
    responses(
        (status = 200, description = "The version", body = PluginVersionMeta),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such version", body = ErrorBody),
    ))]
pub async fn get_version(
    State(state): State<ApiState>,
    _who: Principal,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<PluginVersionMeta>, ApiError> {
    Ok(Json(state.store().get_version(&name, &version)?))
}

/// Downloads the component bytes.
#[utoipa::path(get, path = "/api/plugins/{name}/versions/{version}/wasm", tag = "plugins",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Plugin name"),
           ("version" = String, Path, description = "Semver version")),
    responses(
        (status = 200, description = "The component", body = WasmBinary, content_type = "application/wasm"),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such version", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
pub async fn download(
    State(state): State<ApiState>,
    _who: Principal,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let meta = state.store().get_version(&name, &version)?;
    let bytes = state.store().get_blob(&name, &version).await?;
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/wasm"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}-{version}.wasm\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", meta.sha256)) {
        headers.insert(header::ETAG, v);
    }
    Ok(response)
}

/// Deletes a version (admin); 409 while a rollout or a YAML pin uses it.
#[utoipa::path(delete, path = "/api/plugins/{name}/versions/{version}", tag = "plugins",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Plugin name"),
           ("version" = String, Path, description = "Semver version")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such version", body = ErrorBody),
        (status = 409, description = "In use", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
pub async fn delete_version(
    State(state): State<ApiState>,
    who: Principal,
    Path((name, version)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let target = format!("{name}@{version}");
    audited(&state, &who, "plugin.delete", &target, async {
        who.require(Role::Admin)?;
        let pins: Vec<String> = state
            .runtime()
            .pinned_versions()
            .await
            .into_iter()
            .filter(|p| p.plugin == name && p.version == version)
            .map(|p| p.route)
            .collect();
        if !pins.is_empty() {
            return Err(ApiError::conflict(format!(
                "{target} is pinned in the config by route(s) {}",
                pins.join(", ")
            )));
        }
        state.store().delete_version(&name, &version).await?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
