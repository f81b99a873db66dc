//! The command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use flexgate_config::{Config, ConfigErrors, StoreConfig};
use flexgate_registry::{FileStore, RedisStore, RegistryState, Store};
use flexgate_telemetry::LogFormat;

use crate::plugin_cmd::PluginCommand;

#[derive(Debug, Parser)]
#[command(
    name = "flexgate",
    version,
    about = "A WebAssembly-extensible edge API gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Check a config file and print every problem with its line and field path.
    Validate(ConfigArg),
    /// Plugin development (new, test) and the registry through the admin API (push, rollout,
    /// promote, rollback, list).
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Config file (YAML).
    #[arg(long, short, default_value = "flexgate.yaml", env = "FLEXGATE_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (YAML). When it does not exist and was not given explicitly, the embedded default runs.
    #[arg(long, short, env = "FLEXGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log line format: json (default, for machines) or pretty (for humans).
    #[arg(long, default_value = "json", env = "FLEXGATE_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// `flexgate validate`: exit 0 when the file is good, 1 with every problem listed otherwise.
/// Bindings of registry plugins (no `source`) are checked against the configured store: a pinned
/// version must be uploaded, an unpinned binding needs a rollout with a stable version.
pub fn validate(path: &Path) -> ExitCode {
    let checked = flexgate_config::load(path).and_then(|cfg| match registry_errors(path, &cfg) {
        Some(errors) => Err(errors),
        None => Ok(cfg),
    });
    match checked {
        Ok(cfg) => {
            println!(
                "{}: ok ({} upstreams, {} routes, {} plugins)",
                path.display(),
                cfg.upstreams.len(),
                cfg.routes.len(),
                cfg.plugins.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} problem(s)", path.display(), errors.problems.len());
            ExitCode::FAILURE
        }
    }
}

/// How long `validate` waits for a Redis store.
const REDIS_TIMEOUT: Duration = Duration::from_secs(3);

/// Problems of registry-plugin bindings, located in the file; `None` when there are none (or no
/// binding uses the registry, in which case the store is not even opened).
fn registry_errors(path: &Path, cfg: &Config) -> Option<ConfigErrors> {
    let uses_registry = cfg.routes.iter().flat_map(|r| &r.plugins).any(|b| {
        cfg.plugins
            .iter()
            .any(|p| p.name == b.plugin && p.source.is_none())
    });
    if !uses_registry {
        return None;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let state = match runtime {
        Ok(rt) => rt.block_on(read_registry(&cfg.store)),
        Err(e) => Err(anyhow::anyhow!("cannot start a runtime: {e}")),
    };
    let issues = match state {
        Ok(state) => flexgate_admin::api::registry_problems(cfg, &state),
        Err(e) => vec![(
            "store".to_owned(),
            format!("cannot read the plugin registry to check the routes' plugin versions: {e:#}"),
        )],
    };
    if issues.is_empty() {
        return None;
    }
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    Some(flexgate_config::locate_problems(&text, &file, issues))
}

/// The registry's current state, without changing it: a file store is read in place (a missing
/// folder is an empty registry), a Redis store is asked with a short timeout.
async fn read_registry(store: &StoreConfig) -> anyhow::Result<RegistryState> {
    match store {
        StoreConfig::File { path } => Ok(FileStore::read_state(path).await?),
        StoreConfig::Redis { url, prefix } => {
            let prefix = prefix.as_deref().unwrap_or(RedisStore::DEFAULT_PREFIX);
            let store = tokio::time::timeout(REDIS_TIMEOUT, RedisStore::open(url, prefix))
                .await
                .map_err(|_| {
                    anyhow::anyhow!("redis did not answer within {}s", REDIS_TIMEOUT.as_secs())
                })??;
            Ok(store.state().as_ref().clone())
        }
    }
}
