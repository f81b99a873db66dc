//! The admin listener's router (health probes and the admin API under `/api`) and the plugin
//! registry store the API and the gateway share, both built from the config.
//!
//! `serve.rs` opens the store once with [`open_store`], hands it to the plugin runtime and to
//! [`admin_router`] together with its views of the live gateway ([`RuntimeView`]) and its
//! upload validator ([`PluginValidator`]).

use std::sync::Arc;

use anyhow::Context;
use flexgate_admin::Readiness;
use flexgate_admin::api::{self, ApiState, AuthSettings, PluginValidator, RuntimeView};
use flexgate_config::{AdminAuthConfig, Config, StoreConfig};
use flexgate_registry::Store;

/// Opens the registry store named by `store:` (a file store creates its folder and repairs what a
/// crash left; a Redis store must be reachable now and loads the current state).
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let what = describe_store(&config.store);
    let store = api::open_store(&config.store)
        .await
        .with_context(|| format!("opening the plugin registry ({what})"))?;
    tracing::info!(store = %what, "plugin registry opened");
    Ok(store)
}

/// The admin listener's router: `GET /health/live`, `GET /health/ready` and the admin API under
/// `/api`, with auth from `admin.auth` and the upload limit from `admin.max_upload`.
///
/// The JWT secret comes from the environment variable named by `admin.auth.jwt_secret_env`; when
/// it is not set, a random secret is generated and a warning logged (login tokens then do not
/// survive a restart and are not accepted by other replicas). A secret shorter than 32 bytes or an
/// unreadable or malformed users/tokens file is an error.
pub async fn admin_router(
    config: &Config,
    readiness: Readiness,
    store: Arc<dyn Store>,
    runtime_view: Arc<dyn RuntimeView>,
    validator: Arc<dyn PluginValidator>,
) -> anyhow::Result<axum::Router> {
    let auth_config = config.admin.auth.clone();
    let auth = tokio::task::spawn_blocking(move || auth_settings(&auth_config))
        .await
        .context("loading admin.auth")??;
    let state = ApiState::new(
        store,
        auth,
        runtime_view,
        validator,
        config.admin.max_upload.get(),
    );
    Ok(flexgate_admin::health_router(readiness).merge(api::router(state)))
}

/// The secret (from the environment, or random) plus the users and tokens files.
fn auth_settings(auth: &AdminAuthConfig) -> anyhow::Result<AuthSettings> {
    let secret = match std::env::var(&auth.jwt_secret_env) {
        Ok(secret) if !secret.is_empty() => secret.into_bytes(),
        _ => {
            tracing::warn!(
                env = %auth.jwt_secret_env,
                "admin API: {} is not set; using a random JWT secret for this process: login tokens will not survive a restart and other replicas will not accept them",
                auth.jwt_secret_env
            );
            api::random_secret()
        }
    };
    let settings = AuthSettings::with_files(secret, auth)
        .map_err(|e| anyhow::anyhow!("admin.auth: {e} (secret from ${})", auth.jwt_secret_env))?;
    if auth.users_file.is_none() && auth.tokens_file.is_none() {
        tracing::warn!(
            "admin API: neither admin.auth.users_file nor admin.auth.tokens_file is set; only JWTs signed with the secret are accepted"
        );
    }
    Ok(settings)
}

/// The store for log lines and errors, without a password from a Redis URL.
fn describe_store(store: &StoreConfig) -> String {
    match store {
        StoreConfig::File { path } => format!("file store in {}", path.display()),
        StoreConfig::Redis { url, .. } => format!("redis store at {}", redact_url(url)),
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://:hunter2@cache:6379/1"),
            "redis://:***@cache:6379/1"
        );
        assert_eq!(
            redact_url("rediss://app:pw@cache"),
            "rediss://app:***@cache"
        );
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
    }
}
