//! The `Store` trait both backends implement. Reads answer from the in-memory [`RegistryState`]
//! (so a replica that lost Redis keeps answering); writes go to the backend first and update the
//! state only once durable, then every subscriber sees the whole new state at once.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::watch;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::error::{RegistryError, Result};
use crate::model::{
    AuditEntry, AuditPage, NewVersion, PluginVersionMeta, RegistryState, Rollout, RolloutSpec,
};

/// The result of an upload: `created` is false when the same version with the same bytes already
/// existed (re-uploading is a no-op, not an error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PutOutcome {
    /// The stored metadata (the existing one for a no-op).
    pub meta: PluginVersionMeta,
    /// Whether this call stored a new version.
    pub created: bool,
}

/// One plugin in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PluginSummary {
    /// Plugin name.
    pub name: String,
    /// Every version, highest semver first.
    pub versions: Vec<String>,
    /// The highest version.
    pub latest: String,
    /// Description of the highest version.
    pub description: String,
}

/// Storage of plugin versions, rollouts and the audit log. Object-safe so the gateway and the admin
/// API can hold an `Arc<dyn Store>` chosen by config.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The current state (cheap: an `Arc` clone).
    fn state(&self) -> Arc<RegistryState>;

    /// A receiver that sees every new state; the gateway rebuilds plugin chains on change.
    fn subscribe(&self) -> watch::Receiver<Arc<RegistryState>>;

    /// Stores a new version; identical bytes for an existing version is a no-op, different bytes a
    /// `Conflict`.
    async fn put_version(&self, new: NewVersion, bytes: Bytes) -> Result<PutOutcome>;

    /// The component bytes of a version, checked against its sha256.
    async fn get_blob(&self, name: &str, version: &str) -> Result<Bytes>;

    /// Deletes a version; `Conflict` while a rollout routes to it.
    async fn delete_version(&self, name: &str, version: &str) -> Result<PluginVersionMeta>;

    /// Creates or replaces the rollout of a route binding (optimistic on `spec.revision`).
    async fn put_rollout(&self, route: &str, plugin: &str, spec: RolloutSpec) -> Result<Rollout>;

    /// The canary becomes stable.
    async fn promote(&self, route: &str, plugin: &str) -> Result<Rollout>;

    /// The canary is removed and `reason` recorded (`by` is a user, token or `guard`).
    async fn rollback(&self, route: &str, plugin: &str, reason: &str, by: &str) -> Result<Rollout>;

    /// Appends to the audit log (durable before returning).
    async fn append_audit(&self, entry: AuditEntry) -> Result<()>;

    /// A page of the audit log, newest first.
    async fn list_audit(&self, offset: u64, limit: u64) -> Result<AuditPage>;

    /// Every plugin with its versions, by name.
    fn list_plugins(&self) -> Vec<PluginSummary> {
        let state = self.state();
        state
            .plugins
            .iter()
            .filter_map(|(name, versions)| {
                let metas = sorted_versions(versions.values().cloned().collect());
                let latest = metas.first()?;
                Some(PluginSummary {
                    name: name.clone(),
                    latest: latest.version.clone(),
                    description: latest.description.clone(),
                    versions: metas.iter().map(|m| m.version.clone()).collect(),
                })
            })
            .collect()
    }

    /// Every version of one plugin, highest first; `NotFound` when it has none.
    fn get_plugin(&self, name: &str) -> Result<Vec<PluginVersionMeta>> {
        let state = self.state();
        match state.plugins.get(name) {
            Some(versions) if !versions.is_empty() => {
                Ok(sorted_versions(versions.values().cloned().collect()))
            }
            _ => Err(RegistryError::NotFound(format!(
                "plugin `{name}` not found"
            ))),
        }
    }

    /// One version's metadata.
    fn get_version(&self, name: &str, version: &str) -> Result<PluginVersionMeta> {
        self.state().version(name, version).cloned().ok_or_else(|| {
            RegistryError::NotFound(format!("plugin version {name}@{version} not found"))
        })
    }

    /// One rollout; `NotFound` when the binding has none.
    fn get_rollout(&self, route: &str, plugin: &str) -> Result<Rollout> {
        self.state().rollout(route, plugin).cloned().ok_or_else(|| {
            RegistryError::NotFound(format!("no rollout for route `{route}` plugin `{plugin}`"))
        })
    }

    /// Every rollout, by route then plugin.
    fn list_rollouts(&self) -> Vec<Rollout> {
        self.state().rollouts.values().cloned().collect()
    }
}

/// Highest semver first; unparsable versions (never stored, but be total) sort last by text.
pub fn sorted_versions(mut metas: Vec<PluginVersionMeta>) -> Vec<PluginVersionMeta> {
    metas.sort_by(|a, b| {
        match (
            semver::Version::parse(&a.version),
            semver::Version::parse(&b.version),
        ) {
            (Ok(x), Ok(y)) => y.cmp(&x),
            (Ok(_), Err(_)) => std::cmp::Ordering::Less,
            (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
            (Err(_), Err(_)) => b.version.cmp(&a.version),
        }
    });
    metas
}
