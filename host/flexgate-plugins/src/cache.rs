//! On-disk cache of precompiled components, so a restart skips Cranelift (~35 ms per plugin).
//!
//! Key: sha256 of the component bytes + a digest of `Engine::precompile_compatibility_hash`
//! (wasmtime version and every codegen-relevant setting). Each file carries a sha256 of its
//! payload, checked before loading, so a torn or corrupted write is a cache miss, not UB.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Feeds `Hash` output into sha256 so the key is stable across processes (unlike `DefaultHasher`).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cache file for these bytes on this engine.
pub(crate) fn path_for(dir: &Path, engine: &Engine, bytes: &[u8]) -> PathBuf {
    let mut h = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    let engine_key = h.0.finalize();
    let code_key = Sha256::digest(bytes);
    dir.join(format!(
        "{}-{}.cwasm",
        hex(&code_key),
        hex(&engine_key[..8])
    ))
}

/// Load a cached artifact, if present and intact.
pub(crate) fn load(path: &Path, engine: &Engine) -> Option<Component> {
    let data = std::fs::read(path).ok()?;
    if data.len() < 32 {
        return None;
    }
    let (digest, payload) = data.split_at(32);
    if Sha256::digest(payload).as_slice() != digest {
        tracing::warn!(path = %path.display(), "corrupt plugin cache entry; recompiling");
        return None;
    }
    deserialize(engine, payload)
}

/// The one `unsafe` in the plugin platform.
///
/// SAFETY: `Component::deserialize` runs the machine code it is given. The payload was written
/// by [`store`] from `Component::serialize` of an engine with the same compatibility hash (it is
/// part of the file name), and its sha256 was verified by [`load`]. The cache directory must be
/// as trusted as the gateway binary itself (it is created owner-only).
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, payload: &[u8]) -> Option<Component> {
    match unsafe { Component::deserialize(engine, payload) } {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "unusable plugin cache entry; recompiling");
            None
        }
    }
}

/// Write an artifact atomically (temp file + rename). Failures only cost a recompile later.
pub(crate) fn store(dir: &Path, path: &Path, component: &Component) {
    if let Err(e) = write(dir, path, component) {
        tracing::warn!(error = %e, path = %path.display(), "could not write plugin cache");
    }
}

/// Create the cache folder, owner-only (its files are run as machine code).
pub(crate) fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

/// [`store`], reporting failure: the out-of-process compiler (`crate::compiler`) must say so.
pub(crate) fn write(dir: &Path, path: &Path, component: &Component) -> std::io::Result<()> {
    ensure_dir(dir)?;
    let payload = component.serialize().map_err(std::io::Error::other)?;
    let mut data = Vec::with_capacity(32 + payload.len());
    data.extend_from_slice(&Sha256::digest(&payload));
    data.extend_from_slice(&payload);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &data)?;
    std::fs::rename(&tmp, path)
}
