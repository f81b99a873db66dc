//! The config sections this API needs, mirroring the names `flexgate-config` will carry
//! (`store:` and `admin:`), so the lead can map one onto the other field by field.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use flexgate_config::ByteSize;
use flexgate_registry::{FileStore, RedisStore, RegistryError, Store};
use serde::Deserialize;

/// `store: { kind: file, path: ./data }` or `store: { kind: redis, url: "redis://..." }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// The embedded data folder (default).
    File {
        /// Data folder.
        path: PathBuf,
    },
    /// A Redis shared by every replica.
    Redis {
        /// `redis://host:port/db`.
        url: String,
        /// Key prefix (default `flexgate:registry`).
        #[serde(default)]
        prefix: Option<String>,
    },
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::File {
            path: PathBuf::from("./data"),
        }
    }
}

/// Opens the configured store.
pub async fn open_store(config: &StoreConfig) -> Result<Arc<dyn Store>, RegistryError> {
    Ok(match config {
        StoreConfig::File { path } => Arc::new(FileStore::open(path).await?),
        StoreConfig::Redis { url, prefix } => Arc::new(
            RedisStore::open(url, prefix.as_deref().unwrap_or(RedisStore::DEFAULT_PREFIX)).await?,
        ),
    })
}

/// `admin.auth`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminAuthConfig {
    /// Name of the environment variable holding the HS256 secret (never the secret itself).
    #[serde(default = "default_secret_env")]
    pub jwt_secret_env: String,
    /// Users for `POST /api/auth/login`.
    #[serde(default)]
    pub users_file: Option<PathBuf>,
    /// Static API tokens for automation.
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
}

fn default_secret_env() -> String {
    "FLEXGATE_ADMIN_JWT_SECRET".into()
}

/// `admin:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminApiConfig {
    /// Admin listener.
    pub listen: SocketAddr,
    /// Authentication.
    pub auth: AdminAuthConfig,
    /// Largest plugin upload (413 above).
    #[serde(default = "default_max_upload")]
    pub max_upload: ByteSize,
}

fn default_max_upload() -> ByteSize {
    ByteSize(20 * 1024 * 1024)
}
