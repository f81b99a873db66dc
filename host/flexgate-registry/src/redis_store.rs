//! The shared store: every replica at every edge reads and writes one Redis.
//!
//! ```text
//! PREFIX:versions          hash  "NAME/VERSION" -> PluginVersionMeta JSON
//! PREFIX:blob:NAME:SHA256  string  component bytes (content-addressed)
//! PREFIX:rollouts          hash  "[\"ROUTE\",\"PLUGIN\"]" -> Rollout JSON
//! PREFIX:audit             list  newest first, capped at AUDIT_CAP entries
//! PREFIX:changes           pub/sub channel: a ChangeEvent JSON per write
//! ```
//! Each replica keeps the whole metadata state in memory and reloads it (one atomic pipeline of
//! two HGETALLs) when a change is published, when its subscription is (re)established and every
//! `RESYNC` as a safety net. So a replica that starts later loads the current state; one that
//! loses Redis keeps its last state (reads never touch Redis, blobs it used are cached) and does a
//! full reload as soon as its subscription is back. Rollout writes are compare-and-set in a Lua
//! script, so two replicas cannot both apply a change computed from the same revision.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{RegistryError, Result};
use crate::model::{
    AuditEntry, AuditPage, ChangeEvent, NewVersion, PluginVersionMeta, RegistryState, Rollout,
    RolloutSpec,
};
use crate::rules::{self, now_rfc3339, sha256_hex};
use crate::store::{PutOutcome, Store};

/// Audit entries kept in Redis (oldest trimmed).
const AUDIT_CAP: isize = 100_000;
/// Full reload interval, in case a published message was lost.
const RESYNC: Duration = Duration::from_secs(30);
/// Retries of a rollout compare-and-set that lost a race.
const CAS_ATTEMPTS: usize = 8;

const CAS_SCRIPT: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (cur == false and ARGV[2] == '') or cur == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  redis.call('PUBLISH', ARGV[4], ARGV[5])
  return 1
end
return 0
";

/// The Redis-backed [`Store`].
pub struct RedisStore {
    inner: Arc<Inner>,
    follower: JoinHandle<()>,
}

struct Inner {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    tx: watch::Sender<Arc<RegistryState>>,
    /// Blobs read or written by this replica, so it can rebuild chains while Redis is away.
    blobs: Mutex<HashMap<String, Bytes>>,
    cas: redis::Script,
}

struct Keys {
    versions: String,
    rollouts: String,
    audit: String,
    channel: String,
    blob_prefix: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        Keys {
            versions: format!("{prefix}:versions"),
            rollouts: format!("{prefix}:rollouts"),
            audit: format!("{prefix}:audit"),
            channel: format!("{prefix}:changes"),
            blob_prefix: format!("{prefix}:blob:"),
        }
    }

    fn blob(&self, name: &str, sha256: &str) -> String {
        format!("{}{name}:{sha256}", self.blob_prefix)
    }
}

fn version_field(name: &str, version: &str) -> String {
    format!("{name}/{version}")
}

fn rollout_field(route: &str, plugin: &str) -> String {
    serde_json::json!([route, plugin]).to_string()
}

fn corrupt(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Corrupt(e.to_string())
}

impl RedisStore {
    /// The default key prefix; the change channel is `flexgate:registry:changes`.
    pub const DEFAULT_PREFIX: &'static str = "flexgate:registry";

    /// Connects, loads the current state and starts following changes. Fails when Redis cannot be
    /// reached now: a replica with no state at all has nothing to serve.
    pub async fn open(url: &str, prefix: &str) -> Result<RedisStore> {
        let client = redis::Client::open(url).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| RegistryError::Unavailable("timed out connecting to redis".into()))??;
        let keys = Keys::new(prefix);
        let (tx, _) = watch::channel(Arc::new(RegistryState::default()));
        let inner = Arc::new(Inner {
            client,
            conn,
            keys,
            tx,
            blobs: Mutex::new(HashMap::new()),
            cas: redis::Script::new(CAS_SCRIPT),
        });
        inner.reload().await?;
        let follower = tokio::spawn(follow(Arc::clone(&inner)));
        Ok(RedisStore { inner, follower })
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// Follows the change channel forever: subscribe, reload, apply changes; on loss, retry with a
/// short backoff and reload again once back.
async fn follow(inner: Arc<Inner>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match inner.follow_once().await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, "registry: lost redis subscription; serving the last state")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

impl Inner {
    async fn follow_once(&self) -> Result<()> {
        let mut pubsub =
            tokio::time::timeout(Duration::from_secs(2), self.client.get_async_pubsub())
                .await
                .map_err(|_| RegistryError::Unavailable("timed out subscribing".into()))??;
        pubsub.subscribe(&self.keys.channel).await?;
        // Subscribed first, then reload: a change published in between is not missed.
        self.reload().await?;
        let mut messages = pubsub.into_on_message();
        let mut resync = tokio::time::interval(RESYNC);
        resync.tick().await;
        loop {
            tokio::select! {
                msg = messages.next() => match msg {
                    Some(_) => self.reload().await?,
                    None => return Err(RegistryError::Unavailable("subscription closed".into())),
                },
                _ = resync.tick() => self.reload().await?,
            }
        }
    }

    /// Loads metadata and rollouts in one atomic pipeline and publishes the state if it changed.
    async fn reload(&self) -> Result<()> {
        let state = self.fetch_state().await?;
        self.tx.send_if_modified(|current| {
            if **current == state {
                false
            } else {
                *current = Arc::new(state);
                true
            }
        });
        Ok(())
    }

    async fn fetch_state(&self) -> Result<RegistryState> {
        let mut conn = self.conn.clone();
        let (versions, rollouts): (HashMap<String, String>, HashMap<String, String>) =
            redis::pipe()
                .atomic()
                .hgetall(&self.keys.versions)
                .hgetall(&self.keys.rollouts)
                .query_async(&mut conn)
                .await?;
        let mut state = RegistryState::default();
        for json in versions.values() {
            let meta: PluginVersionMeta = serde_json::from_str(json).map_err(corrupt)?;
            state
                .plugins
                .entry(meta.name.clone())
                .or_default()
                .insert(meta.version.clone(), meta);
        }
        for json in rollouts.values() {
            let r: Rollout = serde_json::from_str(json).map_err(corrupt)?;
            state
                .rollouts
                .insert((r.route.clone(), r.plugin.clone()), r);
        }
        Ok(state)
    }

    async fn publish(&self, event: &ChangeEvent) -> Result<()> {
        let mut conn = self.conn.clone();
        let payload = serde_json::to_string(event).map_err(corrupt)?;
        let _: i64 = conn.publish(&self.keys.channel, payload).await?;
        Ok(())
    }

    /// Applies a local change at once (the writer sees its own write without a round trip).
    fn apply(&self, change: impl FnOnce(&mut RegistryState)) {
        self.tx.send_modify(|state| {
            let mut next = (**state).clone();
            change(&mut next);
            *state = Arc::new(next);
        });
    }

    fn cache_blob(&self, key: String, bytes: Bytes) {
        self.blobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, bytes);
    }

    fn cached_blob(&self, key: &str) -> Option<Bytes> {
        self.blobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Computes the next rollout from a fresh state and compare-and-sets it.
    async fn cas_rollout(
        &self,
        route: &str,
        plugin: &str,
        next: impl Fn(&RegistryState) -> Result<Rollout>,
    ) -> Result<Rollout> {
        let field = rollout_field(route, plugin);
        for _ in 0..CAS_ATTEMPTS {
            let state = self.fetch_state().await?;
            let old = match state.rollout(route, plugin) {
                Some(r) => serde_json::to_string(r).map_err(corrupt)?,
                None => String::new(),
            };
            let rollout = next(&state)?;
            let json = serde_json::to_string(&rollout).map_err(corrupt)?;
            let event = serde_json::to_string(&ChangeEvent::Rollout {
                route: route.to_owned(),
                plugin: plugin.to_owned(),
                revision: rollout.revision,
            })
            .map_err(corrupt)?;
            let mut conn = self.conn.clone();
            let stored: i64 = self
                .cas
                .key(&self.keys.rollouts)
                .arg(&field)
                .arg(&old)
                .arg(&json)
                .arg(&self.keys.channel)
                .arg(&event)
                .invoke_async(&mut conn)
                .await?;
            if stored == 1 {
                let r = rollout.clone();
                self.apply(move |s| {
                    s.rollouts.insert((r.route.clone(), r.plugin.clone()), r);
                });
                return Ok(rollout);
            }
        }
        Err(RegistryError::Conflict(format!(
            "rollout {route}/{plugin} is being changed concurrently; retry"
        )))
    }
}

#[async_trait]
impl Store for RedisStore {
    fn state(&self) -> Arc<RegistryState> {
        self.inner.tx.borrow().clone()
    }

    fn subscribe(&self) -> watch::Receiver<Arc<RegistryState>> {
        self.inner.tx.subscribe()
    }

    async fn put_version(&self, new: NewVersion, bytes: Bytes) -> Result<PutOutcome> {
        let inner = &self.inner;
        let sha256 = sha256_hex(&bytes);
        rules::validate_plugin_name(&new.name)?;
        rules::validate_version(&new.version)?;
        let field = version_field(&new.name, &new.version);
        let mut conn = inner.conn.clone();
        let existing: Option<String> = conn.hget(&inner.keys.versions, &field).await?;
        let decide = |json: String| -> Result<PutOutcome> {
            let meta: PluginVersionMeta = serde_json::from_str(&json).map_err(corrupt)?;
            let mut probe = RegistryState::default();
            probe
                .plugins
                .entry(meta.name.clone())
                .or_default()
                .insert(meta.version.clone(), meta);
            let meta = rules::check_put(&probe, &new.name, &new.version, &sha256)?
                .ok_or_else(|| RegistryError::Corrupt("stored version vanished".into()))?;
            Ok(PutOutcome {
                meta,
                created: false,
            })
        };
        if let Some(json) = existing {
            return decide(json);
        }
        let blob_key = inner.keys.blob(&new.name, &sha256);
        // Blob first, metadata second: metadata is the commit point, as in the file store.
        let _: () = conn.set(&blob_key, bytes.as_ref()).await?;
        let meta = PluginVersionMeta {
            name: new.name.clone(),
            version: new.version.clone(),
            sha256: sha256.clone(),
            size: bytes.len() as u64,
            wit_world: new.wit_world.clone(),
            uploaded_by: new.uploaded_by.clone(),
            uploaded_at: now_rfc3339(),
            description: new.description.clone(),
        };
        let json = serde_json::to_string(&meta).map_err(corrupt)?;
        let created: bool = conn.hset_nx(&inner.keys.versions, &field, &json).await?;
        if !created {
            // Another replica stored this version between our read and write.
            let json: String = conn.hget(&inner.keys.versions, &field).await?;
            return decide(json);
        }
        inner.cache_blob(blob_key, bytes);
        let m = meta.clone();
        inner.apply(move |s| {
            s.plugins
                .entry(m.name.clone())
                .or_default()
                .insert(m.version.clone(), m);
        });
        inner
            .publish(&ChangeEvent::VersionPut {
                name: meta.name.clone(),
                version: meta.version.clone(),
            })
            .await?;
        Ok(PutOutcome {
            meta,
            created: true,
        })
    }

    async fn get_blob(&self, name: &str, version: &str) -> Result<Bytes> {
        let meta = self.get_version(name, version)?;
        let key = self.inner.keys.blob(name, &meta.sha256);
        if let Some(bytes) = self.inner.cached_blob(&key) {
            return Ok(bytes);
        }
        let mut conn = self.inner.conn.clone();
        let bytes: Option<Vec<u8>> = conn.get(&key).await?;
        let bytes = bytes.ok_or_else(|| {
            RegistryError::Corrupt(format!("blob of {name}@{version} is missing in redis"))
        })?;
        if sha256_hex(&bytes) != meta.sha256 {
            return Err(RegistryError::Corrupt(format!(
                "blob of {name}@{version} does not match its sha256"
            )));
        }
        let bytes = Bytes::from(bytes);
        self.inner.cache_blob(key, bytes.clone());
        Ok(bytes)
    }

    async fn delete_version(&self, name: &str, version: &str) -> Result<PluginVersionMeta> {
        let inner = &self.inner;
        let state = inner.fetch_state().await?;
        let meta = rules::check_delete(&state, name, version)?;
        let mut conn = inner.conn.clone();
        let removed: i64 = conn
            .hdel(&inner.keys.versions, version_field(name, version))
            .await?;
        if removed == 0 {
            return Err(RegistryError::NotFound(format!(
                "plugin version {name}@{version} not found"
            )));
        }
        let shared = state.plugins.get(name).is_some_and(|v| {
            v.values()
                .any(|m| m.version != version && m.sha256 == meta.sha256)
        });
        if !shared {
            let key = inner.keys.blob(name, &meta.sha256);
            let _: i64 = conn.del(&key).await?;
            inner
                .blobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&key);
        }
        let (n, v) = (name.to_owned(), version.to_owned());
        inner.apply(move |s| {
            if let Some(versions) = s.plugins.get_mut(&n) {
                versions.remove(&v);
                if versions.is_empty() {
                    s.plugins.remove(&n);
                }
            }
        });
        inner
            .publish(&ChangeEvent::VersionDeleted {
                name: name.to_owned(),
                version: version.to_owned(),
            })
            .await?;
        Ok(meta)
    }

    async fn put_rollout(&self, route: &str, plugin: &str, spec: RolloutSpec) -> Result<Rollout> {
        self.inner
            .cas_rollout(route, plugin, |state| {
                rules::apply_spec(state, route, plugin, spec.clone())
            })
            .await
    }

    async fn promote(&self, route: &str, plugin: &str) -> Result<Rollout> {
        self.inner
            .cas_rollout(route, plugin, |state| {
                rules::apply_promote(state, route, plugin)
            })
            .await
    }

    async fn rollback(&self, route: &str, plugin: &str, reason: &str, by: &str) -> Result<Rollout> {
        self.inner
            .cas_rollout(route, plugin, |state| {
                rules::apply_rollback(state, route, plugin, reason, by)
            })
            .await
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<()> {
        let json = serde_json::to_string(&entry).map_err(corrupt)?;
        let mut conn = self.inner.conn.clone();
        let _: () = redis::pipe()
            .atomic()
            .lpush(&self.inner.keys.audit, json)
            .ignore()
            .ltrim(&self.inner.keys.audit, 0, AUDIT_CAP - 1)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn list_audit(&self, offset: u64, limit: u64) -> Result<AuditPage> {
        let mut conn = self.inner.conn.clone();
        let start = isize::try_from(offset).unwrap_or(isize::MAX);
        let stop = start.saturating_add(isize::try_from(limit).unwrap_or(isize::MAX)) - 1;
        let (total, lines): (u64, Vec<String>) = redis::pipe()
            .atomic()
            .llen(&self.inner.keys.audit)
            .lrange(&self.inner.keys.audit, start, stop)
            .query_async(&mut conn)
            .await?;
        let entries = if limit == 0 {
            Vec::new()
        } else {
            lines
                .iter()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        };
        Ok(AuditPage {
            total,
            offset,
            entries,
        })
    }
}
