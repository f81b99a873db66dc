//! A small admin API client for the CLI (`flexgate plugin push|rollout|promote|rollback|list`),
//! built on hyper-util's pooled client so the binary needs no extra HTTP stack. Plain HTTP: the
//! admin listener is meant for localhost or a private network.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::Value;

/// Why a CLI call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL or a parameter is malformed.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// File path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The server could not be reached.
    #[error("cannot reach the admin API: {0}")]
    Transport(String),
    /// The API answered with an error.
    #[error("{status}: {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error code.
        code: String,
        /// The message.
        message: String,
    },
}

/// Uploads a plugin version; returns the stored metadata (`{"meta":..., "created":...}`).
pub async fn push(
    url: &str,
    token: &str,
    file: &Path,
    name: &str,
    version: &str,
    description: Option<&str>,
) -> Result<Value, ClientError> {
    let bytes = tokio::fs::read(file)
        .await
        .map_err(|source| ClientError::File {
            path: file.display().to_string(),
            source,
        })?;
    let mut query = format!("name={}&version={}", encode(name), encode(version));
    if let Some(d) = description {
        query.push_str(&format!("&description={}", encode(d)));
    }
    call(
        Method::POST,
        &format!("{}/api/plugins?{query}", base(url)),
        token,
        Some(("application/wasm", Bytes::from(bytes))),
    )
    .await
}

/// Sets a canary: keeps the current stable (or pins `canary` as stable when there is none).
pub async fn rollout(
    url: &str,
    token: &str,
    route: &str,
    plugin: &str,
    canary: &str,
    percent: u8,
) -> Result<Value, ClientError> {
    rollout_with(url, token, route, plugin, canary, percent, None).await
}

/// [`rollout`], also setting the sticky key (`client_ip`, `header:NAME` or `random`) when given;
/// otherwise the current one is kept. The write is conditional on the revision read first, so a
/// concurrent change is reported as a conflict rather than overwritten.
pub async fn rollout_with(
    url: &str,
    token: &str,
    route: &str,
    plugin: &str,
    canary: &str,
    percent: u8,
    sticky: Option<&str>,
) -> Result<Value, ClientError> {
    if percent > 100 {
        return Err(ClientError::Invalid(format!(
            "percent {percent} is over 100"
        )));
    }
    let path = format!(
        "{}/api/rollouts/{}/{}",
        base(url),
        encode(route),
        encode(plugin)
    );
    let current = match call(Method::GET, &path, token, None).await {
        Ok(v) => Some(v),
        Err(ClientError::Api { status: 404, .. }) => None,
        Err(e) => return Err(e),
    };
    let stable = current
        .as_ref()
        .and_then(|r| r.get("stable"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut spec = match &current {
        // Keep sticky and guards as they are; only the versions and percent change.
        Some(r) => serde_json::json!({
            "sticky": r.get("sticky").cloned().unwrap_or(Value::Null),
            "guards": r.get("guards").cloned().unwrap_or(Value::Null),
            "revision": r.get("revision").cloned().unwrap_or(Value::Null),
        }),
        None => serde_json::json!({ "revision": 0 }),
    };
    if let Some(sticky) = sticky {
        spec["sticky"] = Value::from(sticky);
    }
    match stable {
        Some(stable) if stable != canary => {
            spec["stable"] = Value::from(stable);
            spec["canary"] = Value::from(canary);
            spec["canary_percent"] = Value::from(percent);
        }
        _ => spec["stable"] = Value::from(canary),
    }
    json_call(Method::PUT, &path, token, &spec).await
}

/// Promotes the canary of a route binding.
pub async fn promote(
    url: &str,
    token: &str,
    route: &str,
    plugin: &str,
) -> Result<Value, ClientError> {
    let path = format!(
        "{}/api/rollouts/{}/{}/promote",
        base(url),
        encode(route),
        encode(plugin)
    );
    call(Method::POST, &path, token, None).await
}

/// Rolls back the canary of a route binding.
pub async fn rollback(
    url: &str,
    token: &str,
    route: &str,
    plugin: &str,
    reason: Option<&str>,
) -> Result<Value, ClientError> {
    let path = format!(
        "{}/api/rollouts/{}/{}/rollback",
        base(url),
        encode(route),
        encode(plugin)
    );
    json_call(
        Method::POST,
        &path,
        token,
        &serde_json::json!({ "reason": reason }),
    )
    .await
}

/// Lists plugins.
pub async fn list(url: &str, token: &str) -> Result<Value, ClientError> {
    call(
        Method::GET,
        &format!("{}/api/plugins", base(url)),
        token,
        None,
    )
    .await
}

fn base(url: &str) -> &str {
    url.trim_end_matches('/')
}

async fn json_call(
    method: Method,
    url: &str,
    token: &str,
    body: &impl Serialize,
) -> Result<Value, ClientError> {
    let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Invalid(e.to_string()))?;
    call(
        method,
        url,
        token,
        Some(("application/json", Bytes::from(bytes))),
    )
    .await
}

async fn call(
    method: Method,
    url: &str,
    token: &str,
    body: Option<(&str, Bytes)>,
) -> Result<Value, ClientError> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut builder = Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {token}"));
    let body = match body {
        Some((content_type, bytes)) => {
            builder = builder.header("content-type", content_type);
            Full::new(bytes)
        }
        None => Full::new(Bytes::new()),
    };
    let request = builder
        .body(body)
        .map_err(|e| ClientError::Invalid(e.to_string()))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| ClientError::Transport(e.to_string()))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Transport(e.to_string()))?
        .to_bytes();
    let value: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&bytes).into_owned()))
    };
    if status.is_success() || status == StatusCode::NOT_MODIFIED {
        return Ok(value);
    }
    let field = |k: &str| {
        value
            .pointer(&format!("/error/{k}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Err(ClientError::Api {
        status: status.as_u16(),
        code: field("code"),
        message: field("message"),
    })
}

/// Percent-encodes a query or path component (RFC 3986 unreserved characters pass through).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
