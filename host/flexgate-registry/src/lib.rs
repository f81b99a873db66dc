//! FlexGate's plugin registry: immutable, content-addressed plugin versions and the per-route
//! rollout of those versions (stable, canary, percentage, sticky key, guards), held in a data
//! folder ([`FileStore`]) or a shared Redis ([`RedisStore`]) behind one [`Store`] trait, plus the
//! pure logic the request path needs: [`choose_version`] and [`evaluate_guards`] over
//! [`WindowStats`]. No HTTP here: the admin API and the gateway build on it.

mod atomic;
mod error;
mod file;
mod model;
mod redis_store;
mod rules;
mod select;
mod stats;
mod store;

pub use error::{RegistryError, Result};
pub use file::FileStore;
pub use model::{
    AuditEntry, AuditPage, ChangeEvent, Guards, NewVersion, PluginVersionMeta, RegistryState,
    RollbackRecord, Rollout, RolloutSpec, Sticky, human_duration,
};
pub use redis_store::RedisStore;
pub use rules::{
    now_rfc3339, sha256_hex, validate_plugin_name, validate_route_name, validate_version,
};
pub use select::{bucket, choose_version, random_hash, sticky_hash};
pub use stats::{Outcome, RollbackReason, SLOTS, StatsSnapshot, WindowStats, evaluate_guards};
pub use store::{PluginSummary, PutOutcome, Store, sorted_versions};
