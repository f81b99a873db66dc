//! One error type for every store operation, with variants that map one-to-one onto HTTP statuses in
//! the admin API (404, 409, 422, 503, 500) so the API layer never has to guess.

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The plugin, version or rollout does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The write conflicts with the current state (different bytes for an existing version, a
    /// version still in use, a stale rollout revision, nothing to promote).
    #[error("{0}")]
    Conflict(String),
    /// The input is well-formed but not acceptable (bad name, not semver, percent over 100).
    #[error("{0}")]
    Invalid(String),
    /// The shared backend cannot be reached; reads still answer from the last known state.
    #[error("registry backend unavailable: {0}")]
    Unavailable(String),
    /// A local I/O failure (disk full, permissions).
    #[error("registry I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Stored data that cannot be decoded; never expected, reported rather than hidden.
    #[error("corrupt registry data: {0}")]
    Corrupt(String),
}

impl From<redis::RedisError> for RegistryError {
    fn from(e: redis::RedisError) -> Self {
        RegistryError::Unavailable(e.to_string())
    }
}

/// Shorthand for registry results.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
