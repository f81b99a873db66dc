//! `flexgate plugin ...`: plugin development (`new`, `test`, local, no gateway needed) and the
//! registry through the admin API (`push`, `rollout`, `promote`, `rollback`, `list`), for people
//! and for CI. Exit 0 on success, 1 with one `error: ...` line on failure (2 for usage errors).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use flexgate_admin::api::client::{self, ClientError};
use serde_json::Value;

/// `flexgate plugin ...`
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create a plugin crate (SDK dependency, example hook, test, sample config and request).
    New {
        /// Plugin name: lowercase letters, digits, `-` and `_`, starting with a letter.
        name: String,
        /// Folder to create the crate in (as DIR/NAME).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Run a plugin component once (init, on_request, on_response) and show what it changed.
    Test {
        /// The component (`.wasm`, built with `--target wasm32-wasip2`).
        wasm: PathBuf,
        /// JSON file passed to the plugin's `init` (the route binding's `config`).
        #[arg(long)]
        config: PathBuf,
        /// JSON request: method, path, query, headers, body, client_addr, route, request_id.
        #[arg(long)]
        request: PathBuf,
        /// JSON upstream response for `on_response`: status, headers, body.
        #[arg(long)]
        response: Option<PathBuf>,
    },
    /// Upload a plugin version to the registry (admin role).
    Push {
        /// The component (`.wasm`).
        file: PathBuf,
        /// Plugin name as routes bind it (`use: NAME`).
        #[arg(long)]
        name: String,
        /// Semver version, e.g. 1.2.0 (immutable once uploaded).
        #[arg(long)]
        version: String,
        /// Free text shown in listings.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Start or change a canary on one route binding (operator role). Without a stable version
    /// yet, the given version becomes stable.
    Rollout {
        /// Route name from the config.
        #[arg(long)]
        route: String,
        /// Plugin name.
        #[arg(long)]
        plugin: String,
        /// Version to run as the canary.
        #[arg(long)]
        canary: String,
        /// Share of clients sent to the canary, 0-100.
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: u8,
        /// Keeps each client on one version: `client_ip`, `header:NAME` or `random` (default:
        /// keep the current one; `client_ip` for a new rollout).
        #[arg(long)]
        sticky: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make the canary the stable version (operator role).
    Promote {
        /// Route name.
        #[arg(long)]
        route: String,
        /// Plugin name.
        #[arg(long)]
        plugin: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove the canary; stable serves everyone again (operator role).
    Rollback {
        /// Route name.
        #[arg(long)]
        route: String,
        /// Plugin name.
        #[arg(long)]
        plugin: String,
        /// Why, kept in the rollout and the audit log.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the plugins in the registry with their versions.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Internal, run by `serve`: compile a component (stdin) into the compile cache, so the
    /// compiler's memory leaves with this process instead of staying in the gateway.
    #[command(hide = true)]
    Compile {
        /// The protocol's arguments (`flexgate_plugins::compiler_main` reads them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

/// Where the admin API is and who is calling.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Base URL of the admin API (the gateway's `admin.listen`).
    #[arg(
        long,
        env = "FLEXGATE_ADMIN_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub admin_url: String,
    /// Bearer token: a static API token or a JWT from `POST /api/auth/login`.
    #[arg(long, env = "FLEXGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,
}

impl AdminArgs {
    fn token(&self) -> Result<&str, String> {
        match self.token.as_deref() {
            Some(t) if !t.trim().is_empty() => Ok(t.trim()),
            _ => Err("no admin token: pass --token TOKEN or set FLEXGATE_ADMIN_TOKEN".to_owned()),
        }
    }

    fn url(&self) -> Result<&str, String> {
        let url = self.admin_url.trim();
        if url.starts_with("http://") {
            Ok(url)
        } else if url.starts_with("https://") {
            Err(format!(
                "admin URL {url}: https is not supported by this client; reach the admin listener over plain HTTP on a private network or through a local tunnel"
            ))
        } else {
            Err(format!(
                "admin URL {url:?}: expected http://HOST:PORT (set --admin-url or FLEXGATE_ADMIN_URL)"
            ))
        }
    }
}

/// Runs one `flexgate plugin` command.
pub fn run(command: PluginCommand) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(execute(command)),
        Err(e) => Err(format!("cannot start a runtime: {e}")),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: PluginCommand) -> Result<ExitCode, String> {
    match command {
        PluginCommand::Compile { args } => Ok(flexgate_plugins::compiler_main(args)),
        PluginCommand::New { name, dir } => {
            flexgate_plugins::scaffold(&name, &dir).map_err(|e| e.to_string())?;
            let root = dir.join(&name);
            println!("created {}", root.display());
            println!(
                "next: cd {} && cargo test && cargo build --release --target wasm32-wasip2",
                root.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Test {
            wasm,
            config,
            request,
            response,
        } => {
            let config = read(&config, "--config")?;
            let request = read(&request, "--request")?;
            let response = response.map(|path| read(&path, "--response")).transpose()?;
            let report =
                flexgate_plugins::test_plugin(&wasm, &config, &request, response.as_deref())
                    .await
                    .map_err(|e| format!("{}: {e}", wasm.display()))?;
            print!("{report}");
            // A hook that failed (trap, timeout, refusal) fails the command, so CI can rely on it.
            let failed = report
                .lines()
                .any(|l| l.starts_with("on_request: ERROR") || l.starts_with("on_response: ERROR"));
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        PluginCommand::Push {
            file,
            name,
            version,
            description,
            admin,
        } => {
            let (url, token) = (admin.url()?, admin.token()?);
            let answer = client::push(url, token, &file, &name, &version, description.as_deref())
                .await
                .map_err(|e| explain(e, url))?;
            if admin.json {
                print_json(&answer);
            } else {
                let meta = &answer["meta"];
                let what = format!("{}@{}", text(&meta["name"]), text(&meta["version"]));
                if answer["created"] == Value::Bool(true) {
                    println!(
                        "pushed {what}: {} bytes, sha256 {}, world {}",
                        meta["size"],
                        text(&meta["sha256"]),
                        text(&meta["wit_world"])
                    );
                } else {
                    println!(
                        "{what} is already in the registry with the same bytes (nothing to do)"
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Rollout {
            route,
            plugin,
            canary,
            percent,
            sticky,
            admin,
        } => {
            let (url, token) = (admin.url()?, admin.token()?);
            let answer = client::rollout_with(
                url,
                token,
                &route,
                &plugin,
                &canary,
                percent,
                sticky.as_deref(),
            )
            .await
            .map_err(|e| explain(e, url))?;
            show_rollout(&answer, admin.json);
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Promote {
            route,
            plugin,
            admin,
        } => {
            let (url, token) = (admin.url()?, admin.token()?);
            let answer = client::promote(url, token, &route, &plugin)
                .await
                .map_err(|e| explain(e, url))?;
            show_rollout(&answer, admin.json);
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Rollback {
            route,
            plugin,
            reason,
            admin,
        } => {
            let (url, token) = (admin.url()?, admin.token()?);
            let answer = client::rollback(url, token, &route, &plugin, reason.as_deref())
                .await
                .map_err(|e| explain(e, url))?;
            show_rollout(&answer, admin.json);
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::List { admin } => {
            let (url, token) = (admin.url()?, admin.token()?);
            let answer = client::list(url, token)
                .await
                .map_err(|e| explain(e, url))?;
            if admin.json {
                print_json(&answer);
            } else {
                print_list(&answer);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read(path: &Path, flag: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

/// One line for a failed call, with a hint where the cause is usually on the caller's side.
fn explain(e: ClientError, url: &str) -> String {
    match e {
        ClientError::Transport(m) => format!(
            "cannot reach the admin API at {url}: {m} (is the gateway running? set --admin-url or FLEXGATE_ADMIN_URL)"
        ),
        ClientError::Api {
            status: 401,
            message,
            ..
        } => format!(
            "the admin API refused the token (401): {message}; check --token or FLEXGATE_ADMIN_TOKEN"
        ),
        ClientError::Api {
            status,
            code,
            message,
        } => {
            let code = if code.is_empty() { "error" } else { &code };
            let message = if message.is_empty() {
                "(no details)".to_owned()
            } else {
                message
            };
            format!("the admin API answered {status} {code}: {message}")
        }
        other => other.to_string(),
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// `route api, plugin headers: stable 1.0.0, canary 1.1.0 at 20% (sticky client_ip), revision 3`
fn show_rollout(r: &Value, json: bool) {
    if json {
        print_json(r);
        return;
    }
    let mut line = format!(
        "route {}, plugin {}: stable {}",
        text(&r["route"]),
        text(&r["plugin"]),
        text(&r["stable"])
    );
    match r["canary"].as_str() {
        Some(canary) => line.push_str(&format!(
            ", canary {canary} at {}% (sticky {})",
            r["canary_percent"],
            text(&r["sticky"])
        )),
        None => line.push_str(", no canary"),
    }
    line.push_str(&format!(", revision {}", r["revision"]));
    println!("{line}");
    if let Some(last) = r["last_rollback"].as_object()
        && r["canary"].is_null()
    {
        println!(
            "last rollback: {} by {} at {}",
            text(&last["reason"]),
            text(&last["by"]),
            text(&last["at"])
        );
    }
}

/// A table: name, latest version, every version, description.
fn print_list(answer: &Value) {
    let plugins = answer.as_array().map(Vec::as_slice).unwrap_or_default();
    if plugins.is_empty() {
        println!("no plugins in the registry");
        return;
    }
    let rows: Vec<[String; 4]> = plugins
        .iter()
        .map(|p| {
            let versions = p["versions"]
                .as_array()
                .map(|v| v.iter().map(|x| text(x).to_owned()).collect::<Vec<_>>())
                .unwrap_or_default()
                .join(", ");
            [
                text(&p["name"]).to_owned(),
                text(&p["latest"]).to_owned(),
                versions,
                text(&p["description"]).to_owned(),
            ]
        })
        .collect();
    let header = ["NAME", "LATEST", "VERSIONS", "DESCRIPTION"].map(str::to_owned);
    let width = |i: usize| {
        rows.iter()
            .chain(std::iter::once(&header))
            .map(|r| r[i].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0), width(1), width(2));
    for row in std::iter::once(&header).chain(&rows) {
        println!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0], row[1], row[2], row[3]
        );
    }
}
