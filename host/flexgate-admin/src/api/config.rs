//! The config sections this API needs. They are defined once, in `flexgate-config` (`store:` and
//! `admin:` of flexgate.yaml), and re-exported here under the names the API has always used.

use std::sync::Arc;

use flexgate_registry::{FileStore, RedisStore, RegistryError, Store};

pub use flexgate_config::{AdminAuthConfig, StoreConfig};

/// `admin:` of flexgate.yaml (listener, auth, `max_upload`).
pub type AdminApiConfig = flexgate_config::Admin;

/// Opens the configured store (a file store creates its folder; Redis must be reachable now).
pub async fn open_store(config: &StoreConfig) -> Result<Arc<dyn Store>, RegistryError> {
    Ok(match config {
        StoreConfig::File { path } => Arc::new(FileStore::open(path).await?),
        StoreConfig::Redis { url, prefix } => Arc::new(
            RedisStore::open(url, prefix.as_deref().unwrap_or(RedisStore::DEFAULT_PREFIX)).await?,
        ),
    })
}
