//! `flexgate serve`: load config, build the gateway, bind listeners, run until SIGTERM, drain, exit.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use std::sync::Arc;

use flexgate_admin::{Readiness, metrics_router};
use flexgate_config::Config;
use flexgate_plugins::{CompilerCommand, PluginRuntime, RuntimeOptions};
use flexgate_proxy::Gateway;
use flexgate_proxy::plugins::PluginHost;
use flexgate_telemetry::CoreMetrics;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cli::ServeArgs;
use crate::{admin, reload, rollouts, view};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the config came from; reloads re-read the same file.
pub enum Source {
    File(PathBuf),
    Embedded,
}

pub fn run(args: ServeArgs) -> ExitCode {
    let (source, config) = match load(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = flexgate_telemetry::init_logging(args.log_format, &config.log.level) {
        eprintln!("logging: {e}");
    }
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // One worker: a current-thread runtime (no work-stealing queues, no cross-thread wakeups); the
    // request path only ever spawns, never blocks, so nothing needs a second scheduler thread.
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let runtime = builder.enable_all().thread_name("flexgate-worker").build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(source, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "gateway failed");
            ExitCode::FAILURE
        }
    }
}

fn load(args: &ServeArgs) -> anyhow::Result<(Source, Config)> {
    match &args.config {
        Some(path) => Ok((Source::File(path.clone()), load_file(path)?)),
        None => {
            let path = PathBuf::from("flexgate.yaml");
            if path.exists() {
                Ok((Source::File(path.clone()), load_file(&path)?))
            } else {
                Ok((Source::Embedded, flexgate_config::default_config()))
            }
        }
    }
}

fn load_file(path: &std::path::Path) -> anyhow::Result<Config> {
    flexgate_config::load(path)
        .map_err(|e| anyhow::anyhow!("{e}\nrefusing to start: invalid config"))
}

async fn serve(source: Source, config: Config) -> anyhow::Result<()> {
    let metrics = CoreMetrics::new(VERSION).context("metrics registry")?;
    let readiness = Readiness::default();
    readiness.require("config");
    readiness.require("plugins");
    readiness.require("listeners");

    let store = admin::open_store(&config).await?;
    let plugin_runtime = PluginRuntime::new(
        RuntimeOptions {
            cache_dir: Some(cache_dir(&config)),
            compiler: compiler_command(),
            ..RuntimeOptions::default()
        },
        &metrics.registry,
    )
    .context("starting the plugin runtime")?;
    let loaded = view::Loaded {
        file: match &source {
            Source::File(p) => p.display().to_string(),
            Source::Embedded => "(embedded default)".into(),
        },
        sha256: match &source {
            Source::File(p) => std::fs::read(p)
                .map(|b| flexgate_registry::sha256_hex(&b))
                .unwrap_or_default(),
            Source::Embedded => String::new(),
        },
        loaded_at: flexgate_registry::now_rfc3339(),
    };

    let proxy_addr = config.listen;
    let tls = match &config.tls {
        Some(t) => Some(flexgate_proxy::server::tls_acceptor(&t.cert, &t.key).context("tls")?),
        None => None,
    };
    let server_settings = config.server.clone();
    let (admin_addr, metrics_addr) = (config.admin.listen, config.metrics.listen);
    let admin_config = config.clone();
    let plugin_host = PluginHost::new(plugin_runtime.clone(), Some(store.clone()));
    let gateway = Gateway::new(config, metrics.clone(), Some(plugin_host))
        .await
        .context("building gateway")?;
    readiness.set("config", true);
    // Informational: a gateway whose Redis is down keeps serving on its `on_store_error` fallback.
    let redis_view = gateway.clone();
    readiness.detail("redis", move || {
        redis_view.redis_status().map(|r| {
            serde_json::json!({
                "reachable": r.connected, "degraded": r.degraded, "breaker": r.breaker.as_str(),
            })
        })
    });
    readiness.set("plugins", true);
    let runtime_view = Arc::new(view::GatewayView {
        gateway: gateway.clone(),
        loaded: arc_swap::ArcSwap::from_pointee(loaded),
    });
    let validator = Arc::new(view::RuntimeValidator {
        runtime: plugin_runtime,
    });
    let admin_app = admin::admin_router(
        &admin_config,
        readiness.clone(),
        store.clone(),
        runtime_view.clone(),
        validator,
    )
    .await?;
    drop(admin_config);
    let rollout_tasks = rollouts::spawn(gateway.clone(), store, &metrics.registry)?;

    let proxy = flexgate_proxy::server::bind(proxy_addr)
        .with_context(|| format!("binding {proxy_addr}"))?;
    let admin = TcpListener::bind(admin_addr)
        .await
        .with_context(|| format!("binding admin {admin_addr}"))?;
    let metrics_listener = TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("binding metrics {metrics_addr}"))?;
    readiness.set("listeners", true);
    tracing::info!(
        version = VERSION,
        proxy = %proxy.local_addr()?,
        admin = %admin.local_addr()?,
        metrics = %metrics_listener.local_addr()?,
        tls = tls.is_some(),
        config = match &source { Source::File(p) => p.display().to_string(), Source::Embedded => "(embedded default)".into() },
        "flexgate started"
    );

    // Before the admin listener answers `/health/ready`: `reload::spawn` arms the SIGHUP handler and
    // the file watcher before it returns, so a reload requested right after readiness is never
    // missed (and an early SIGHUP cannot hit the default disposition, which terminates).
    let reloader = reload::spawn(source, gateway.clone(), metrics.clone(), runtime_view);

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|&s| s).await;
    };
    let admin_task = tokio::spawn(
        axum::serve(admin, admin_app)
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );
    let metrics_task = tokio::spawn(
        axum::serve(metrics_listener, metrics_router(metrics.registry.clone()))
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );

    flexgate_proxy::server::serve(proxy, tls, gateway, &server_settings, shutdown_signal()).await;
    readiness.set("listeners", false);
    reloader.abort();
    rollout_tasks.iter().for_each(JoinHandle::abort);
    let _ = stop_tx.send(true);
    let _ = tokio::join!(admin_task, metrics_task);
    tracing::info!("flexgate stopped");
    Ok(())
}

/// Compiled plugins are cached beside the file store's data (or in the temp folder with Redis), so a
/// restart deserializes instead of compiling (~0.1 ms instead of ~35 ms per version).
fn cache_dir(config: &Config) -> PathBuf {
    match &config.store {
        flexgate_config::StoreConfig::File { path } => path.join("compiled"),
        flexgate_config::StoreConfig::Redis { .. } => {
            std::env::temp_dir().join("flexgate-compiled")
        }
    }
}

/// Plugins are compiled by a child `flexgate plugin compile` (this binary), so Cranelift's code
/// pages and heap (~29 MiB of idle RSS with a few plugins) leave with it; the gateway only loads
/// the artifact from the compile cache. Without a path to this binary, compiled in process.
fn compiler_command() -> Option<CompilerCommand> {
    match std::env::current_exe() {
        Ok(exe) => Some(CompilerCommand::new(exe, ["plugin", "compile"])),
        Err(e) => {
            tracing::warn!(error = %e, "cannot locate the flexgate binary; plugins compile in process");
            None
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
    }
}
