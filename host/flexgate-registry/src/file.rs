//! The embedded store: a data folder, nothing else to run.
//!
//! ```text
//! DATA/plugins/NAME/SHA256.wasm     component bytes (content-addressed, shared by equal versions)
//! DATA/plugins/NAME/VERSION.json    version metadata: writing it is the upload's commit point
//! DATA/rollouts.json                every rollout, replaced whole on each change
//! DATA/audit.jsonl                  append-only, one JSON object per line, fsync per append
//! ```
//! Every file is replaced atomically (see `atomic`), and the blob is durable before its metadata,
//! so a crash at any point leaves the previous state readable; open removes temp files and blobs
//! no metadata refers to, and cuts a torn last audit line.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

use crate::atomic::{
    create_dir_durable, remove_durable, remove_temp_files, sync_dir, write_atomic,
};
use crate::error::{RegistryError, Result};
use crate::model::{
    AuditEntry, AuditPage, NewVersion, PluginVersionMeta, RegistryState, Rollout, RolloutSpec,
};
use crate::rules::{self, now_rfc3339, sha256_hex};
use crate::store::{PutOutcome, Store};

/// The file-backed [`Store`]. Writers are serialized by one lock; reads use the in-memory state.
pub struct FileStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// Serializes writes so the in-memory state always matches the files.
    write: Mutex<()>,
    /// Serializes audit appends (a separate file, a separate lock).
    audit: Mutex<()>,
    tx: watch::Sender<Arc<RegistryState>>,
}

impl FileStore {
    /// Opens (creating if needed) the data folder and loads its state, cleaning what a crash left.
    pub async fn open(root: impl Into<PathBuf>) -> Result<FileStore> {
        let root = root.into();
        let state = tokio::task::spawn_blocking({
            let root = root.clone();
            move || load(&root, true)
        })
        .await
        .map_err(join_error)??;
        let (tx, _) = watch::channel(Arc::new(state));
        Ok(FileStore {
            inner: Arc::new(Inner {
                root,
                write: Mutex::new(()),
                audit: Mutex::new(()),
                tx,
            }),
        })
    }

    /// Reads the state of a data folder without changing anything on disk (no folder created, no
    /// crash leftovers cleaned): for `flexgate validate` and other read-only tools. A folder that
    /// does not exist reads as an empty registry.
    pub async fn read_state(root: impl Into<PathBuf>) -> Result<RegistryState> {
        let root = root.into();
        tokio::task::spawn_blocking(move || {
            if root.is_dir() {
                load(&root, false)
            } else {
                Ok(RegistryState::default())
            }
        })
        .await
        .map_err(join_error)?
    }

    /// The data folder.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Runs a write on the blocking pool under the write lock.
    async fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Inner, &RegistryState) -> Result<(T, Option<RegistryState>)> + Send + 'static,
    ) -> Result<T> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _guard = lock(&inner.write);
            let current = inner.tx.borrow().clone();
            let (out, next) = op(&inner, &current)?;
            if let Some(next) = next {
                inner.tx.send_replace(Arc::new(next));
            }
            Ok(out)
        })
        .await
        .map_err(join_error)?
    }

    async fn write_rollout(
        &self,
        next: impl FnOnce(&RegistryState) -> Result<Rollout> + Send + 'static,
    ) -> Result<Rollout> {
        self.write(move |inner, state| {
            let rollout = next(state)?;
            let mut new_state = state.clone();
            new_state.rollouts.insert(
                (rollout.route.clone(), rollout.plugin.clone()),
                rollout.clone(),
            );
            let all: Vec<&Rollout> = new_state.rollouts.values().collect();
            let json = serde_json::to_vec_pretty(&all).map_err(corrupt)?;
            write_atomic(&inner.root.join("rollouts.json"), &json)?;
            Ok((rollout, Some(new_state)))
        })
        .await
    }
}

fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn join_error(e: tokio::task::JoinError) -> RegistryError {
    RegistryError::Io(io::Error::other(e.to_string()))
}

fn corrupt(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Corrupt(e.to_string())
}

fn plugin_dir(root: &Path, name: &str) -> PathBuf {
    root.join("plugins").join(name)
}

#[async_trait]
impl Store for FileStore {
    fn state(&self) -> Arc<RegistryState> {
        self.inner.tx.borrow().clone()
    }

    fn subscribe(&self) -> watch::Receiver<Arc<RegistryState>> {
        self.inner.tx.subscribe()
    }

    async fn put_version(&self, new: NewVersion, bytes: Bytes) -> Result<PutOutcome> {
        let sha256 = sha256_hex(&bytes);
        self.write(move |inner, state| {
            if let Some(meta) = rules::check_put(state, &new.name, &new.version, &sha256)? {
                return Ok((
                    PutOutcome {
                        meta,
                        created: false,
                    },
                    None,
                ));
            }
            let dir = plugin_dir(&inner.root, &new.name);
            create_dir_durable(&dir)?;
            let blob = dir.join(format!("{sha256}.wasm"));
            // Content-addressed: an existing blob was renamed into place whole, so it is complete.
            if !blob.is_file() {
                write_atomic(&blob, &bytes)?;
            }
            let meta = PluginVersionMeta {
                name: new.name,
                version: new.version,
                sha256,
                size: bytes.len() as u64,
                wit_world: new.wit_world,
                uploaded_by: new.uploaded_by,
                uploaded_at: now_rfc3339(),
                description: new.description,
            };
            let json = serde_json::to_vec_pretty(&meta).map_err(corrupt)?;
            write_atomic(&dir.join(format!("{}.json", meta.version)), &json)?;
            let mut next = state.clone();
            next.plugins
                .entry(meta.name.clone())
                .or_default()
                .insert(meta.version.clone(), meta.clone());
            Ok((
                PutOutcome {
                    meta,
                    created: true,
                },
                Some(next),
            ))
        })
        .await
    }

    async fn get_blob(&self, name: &str, version: &str) -> Result<Bytes> {
        let meta = self.get_version(name, version)?;
        let path = plugin_dir(&self.inner.root, name).join(format!("{}.wasm", meta.sha256));
        let bytes = tokio::fs::read(&path).await?;
        if sha256_hex(&bytes) != meta.sha256 {
            return Err(RegistryError::Corrupt(format!(
                "{} does not match its sha256 {}",
                path.display(),
                meta.sha256
            )));
        }
        Ok(Bytes::from(bytes))
    }

    async fn delete_version(&self, name: &str, version: &str) -> Result<PluginVersionMeta> {
        let (name, version) = (name.to_owned(), version.to_owned());
        self.write(move |inner, state| {
            let meta = rules::check_delete(state, &name, &version)?;
            let dir = plugin_dir(&inner.root, &name);
            remove_durable(&dir.join(format!("{version}.json")))?;
            let mut next = state.clone();
            let shared = match next.plugins.get_mut(&name) {
                Some(versions) => {
                    versions.remove(&version);
                    let shared = versions.values().any(|m| m.sha256 == meta.sha256);
                    if versions.is_empty() {
                        next.plugins.remove(&name);
                    }
                    shared
                }
                None => false,
            };
            if !shared {
                remove_durable(&dir.join(format!("{}.wasm", meta.sha256)))?;
            }
            Ok((meta, Some(next)))
        })
        .await
    }

    async fn put_rollout(&self, route: &str, plugin: &str, spec: RolloutSpec) -> Result<Rollout> {
        let (route, plugin) = (route.to_owned(), plugin.to_owned());
        self.write_rollout(move |state| rules::apply_spec(state, &route, &plugin, spec))
            .await
    }

    async fn promote(&self, route: &str, plugin: &str) -> Result<Rollout> {
        let (route, plugin) = (route.to_owned(), plugin.to_owned());
        self.write_rollout(move |state| rules::apply_promote(state, &route, &plugin))
            .await
    }

    async fn rollback(&self, route: &str, plugin: &str, reason: &str, by: &str) -> Result<Rollout> {
        let (route, plugin, reason, by) = (
            route.to_owned(),
            plugin.to_owned(),
            reason.to_owned(),
            by.to_owned(),
        );
        self.write_rollout(move |state| rules::apply_rollback(state, &route, &plugin, &reason, &by))
            .await
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _guard = lock(&inner.audit);
            let mut line = serde_json::to_vec(&entry).map_err(corrupt)?;
            line.push(b'\n');
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(inner.root.join("audit.jsonl"))?;
            file.write_all(&line)?;
            file.sync_data()?;
            Ok(())
        })
        .await
        .map_err(join_error)?
    }

    async fn list_audit(&self, offset: u64, limit: u64) -> Result<AuditPage> {
        let path = self.inner.root.join("audit.jsonl");
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        // A line that does not parse can only be a torn append from a crash: skip it.
        let all: Vec<AuditEntry> = text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        let entries = all
            .iter()
            .rev()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .cloned()
            .collect();
        Ok(AuditPage {
            total: all.len() as u64,
            offset,
            entries,
        })
    }
}

/// Loads the state from disk; with `repair`, also removes what an interrupted write left behind
/// (without it nothing on disk changes, and leftovers are simply not part of the state).
fn load(root: &Path, repair: bool) -> Result<RegistryState> {
    let plugins_dir = root.join("plugins");
    if repair {
        create_dir_durable(&plugins_dir)?;
        remove_temp_files(root)?;
        remove_temp_files(&plugins_dir)?;
    } else if !plugins_dir.is_dir() {
        return load_rollouts(root, RegistryState::default());
    }
    let mut state = RegistryState::default();
    for entry in fs::read_dir(&plugins_dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let versions = load_plugin(&entry.path(), &name, repair)?;
        if !versions.is_empty() {
            state.plugins.insert(name, versions);
        }
    }
    if repair {
        repair_audit_tail(&root.join("audit.jsonl"))?;
    }
    load_rollouts(root, state)
}

/// Adds `rollouts.json` (if present) to `state`.
fn load_rollouts(root: &Path, mut state: RegistryState) -> Result<RegistryState> {
    let rollouts_path = root.join("rollouts.json");
    if rollouts_path.is_file() {
        let text = fs::read(&rollouts_path)?;
        let rollouts: Vec<Rollout> = serde_json::from_slice(&text)
            .map_err(|e| RegistryError::Corrupt(format!("{}: {e}", rollouts_path.display())))?;
        for r in rollouts {
            state
                .rollouts
                .insert((r.route.clone(), r.plugin.clone()), r);
        }
    }
    Ok(state)
}

/// Reads one plugin folder: metadata files whose blob is present; blobs nobody refers to (an
/// upload killed between blob and metadata, or a delete killed half-way) are removed.
fn load_plugin(
    dir: &Path,
    name: &str,
    repair: bool,
) -> Result<BTreeMap<String, PluginVersionMeta>> {
    if repair {
        remove_temp_files(dir)?;
    }
    let mut versions = BTreeMap::new();
    let mut blobs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                let text = fs::read(&path)?;
                let meta: PluginVersionMeta = serde_json::from_slice(&text)
                    .map_err(|e| RegistryError::Corrupt(format!("{}: {e}", path.display())))?;
                let blob = dir.join(format!("{}.wasm", meta.sha256));
                match fs::metadata(&blob) {
                    Ok(m) if m.len() == meta.size && meta.name == name => {
                        versions.insert(meta.version.clone(), meta);
                    }
                    _ => {
                        tracing::warn!(path = %path.display(), "plugin metadata without a matching blob; ignored")
                    }
                }
            }
            Some("wasm") if repair => blobs.push(path),
            _ => {}
        }
    }
    let used: HashSet<String> = versions
        .values()
        .map(|m| format!("{}.wasm", m.sha256))
        .collect();
    let mut removed = false;
    for blob in blobs {
        let file = blob
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !used.contains(&file) {
            fs::remove_file(&blob)?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(versions)
}

/// Cuts a torn last line (a crash during an append) so the next append starts on its own line.
fn repair_audit_tail(path: &Path) -> io::Result<()> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(());
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(keep as u64)?;
    file.sync_all()
}
