//! Hot reload: on SIGHUP and when the config file changes, the file is parsed, validated and compiled
//! off the request path, then swapped in atomically. A bad file is refused and the old config keeps
//! serving; `flexgate_config_reloads_total{result}` counts both.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flexgate_proxy::Gateway;
use flexgate_telemetry::CoreMetrics;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::serve::Source;
use crate::view::{GatewayView, Loaded};

/// Editors write files in bursts (truncate, write, rename): wait for quiet before reloading.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Starts the reload task. With the embedded config there is no file: SIGHUP only logs.
///
/// The SIGHUP handler and the file watcher are armed before this returns (the task only consumes
/// their notifications), so a caller that reports readiness afterwards misses no reload request.
pub fn spawn(
    source: Source,
    gateway: Arc<Gateway>,
    metrics: CoreMetrics,
    view: Arc<GatewayView>,
) -> JoinHandle<()> {
    let Source::File(path) = source else {
        return tokio::spawn(async {
            tracing::info!("embedded config: reload disabled");
        });
    };
    // A capacity-1 channel is enough: pending notifications collapse into one reload.
    let (tx, mut rx) = mpsc::channel::<&'static str>(1);
    let watcher = watch_file(&path, tx.clone());
    forward_sighup(tx);
    tokio::spawn(async move {
        let _watcher = watcher;
        while let Some(why) = rx.recv().await {
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            reload(&path, &gateway, &metrics, &view, why).await;
        }
    })
}

async fn reload(
    path: &Path,
    gateway: &Gateway,
    metrics: &CoreMetrics,
    view: &GatewayView,
    why: &str,
) {
    let text = std::fs::read(path).unwrap_or_default();
    let result = match flexgate_config::load(path) {
        Err(e) => Err(e.to_string()),
        Ok(cfg) => {
            let old = gateway.config();
            if old.listen != cfg.listen
                || old.admin != cfg.admin
                || old.metrics != cfg.metrics
                || old.tls != cfg.tls
                || old.store != cfg.store
            {
                tracing::warn!(
                    "listener, TLS, admin or store changes need a restart; they are ignored until then"
                );
            }
            gateway.reload(cfg).await.map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(()) => {
            view.loaded.store(Arc::new(Loaded {
                file: path.display().to_string(),
                sha256: flexgate_registry::sha256_hex(&text),
                loaded_at: flexgate_registry::now_rfc3339(),
            }));
            metrics.config_reloads.with_label_values(&["success"]).inc();
            tracing::info!(trigger = why, config = %path.display(), "config reloaded");
        }
        Err(e) => {
            metrics.config_reloads.with_label_values(&["failure"]).inc();
            tracing::error!(trigger = why, config = %path.display(), error = %e, "config reload refused; previous config keeps serving");
        }
    }
}

/// Watches the file's folder (editors and ConfigMaps replace files by rename, which a watch on the file
/// itself would miss) and signals changes to our file name.
fn watch_file(path: &Path, tx: mpsc::Sender<&'static str>) -> Option<notify::RecommendedWatcher> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let name = path.file_name().map(|n| n.to_os_string());
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        // Kubernetes ConfigMaps swap a `..data` symlink: treat any change in the folder as ours then.
        let ours = event
            .paths
            .iter()
            .any(|p| p.file_name() == name.as_deref() || p.to_string_lossy().contains("..data"));
        if ours {
            let _ = tx.try_send("file");
        }
    };
    match notify::recommended_watcher(handler) {
        Ok(mut w) => match w.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot watch config folder; SIGHUP still reloads");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "file watcher unavailable; SIGHUP still reloads");
            None
        }
    }
}

/// Registers the SIGHUP handler now (from here on the signal no longer has its default action,
/// which terminates) and forwards each signal to `tx` from a task.
fn forward_sighup(tx: mpsc::Sender<&'static str>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP");
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let _ = tx.try_send("sighup");
        }
    });
}
