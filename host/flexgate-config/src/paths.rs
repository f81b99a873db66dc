//! Relative file paths in the config are relative to the config file's folder, not to wherever the
//! gateway was started; resolving them once here means later code only ever sees absolute paths.

use std::path::{Path, PathBuf};

use crate::schema::{Config, StoreConfig};

impl Config {
    /// Make `tls.cert`, `tls.key`, every plugin `source`, the file `store.path` and the
    /// `admin.auth` files absolute, relative to `base_dir` (the folder of the config file).
    /// Absolute paths are left alone.
    pub fn resolve_paths(&mut self, base_dir: &Path) {
        let base_dir = if base_dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base_dir
        };
        let base = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(tls) = &mut self.tls {
            fix(&mut tls.cert);
            fix(&mut tls.key);
        }
        for plugin in &mut self.plugins {
            if let Some(source) = &mut plugin.source {
                fix(source);
            }
        }
        if let StoreConfig::File { path } = &mut self.store {
            fix(path);
        }
        let auth = &mut self.admin.auth;
        for file in [&mut auth.users_file, &mut auth.tokens_file]
            .into_iter()
            .flatten()
        {
            fix(file);
        }
    }
}
