//! The command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use flexgate_telemetry::LogFormat;

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
pub fn validate(path: &Path) -> ExitCode {
    match flexgate_config::load(path) {
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
