//! FlexGate's configuration: the typed schema of `flexgate.yaml`, loading, and validation that
//! reports every mistake at once with `file:line:column: field.path: message`.
//!
//! ```
//! let config = flexgate_config::parse("version: 1\nlisten: 0.0.0.0:8000\n", "inline.yaml").unwrap();
//! assert_eq!(config.listen.port(), 8000);
//! ```

pub mod conditions;
mod error;
mod locate;
mod paths;
pub mod schema;
mod sections;
pub mod units;
mod validate;

use std::collections::BTreeMap;
use std::path::Path;

pub use error::{ConfigErrors, Problem};
pub use schema::*;
pub use units::{ByteSize, Dur};

use error::Issues;
use locate::Index;

/// Parse and validate a config file; every problem found is reported, not only the first.
/// Relative paths inside it are resolved against the file's folder.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::whole_file(&file, format!("cannot read config file: {e}")))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_in(&text, &file, base)
}

/// Same as [`load`] from text; `file` is only used in messages. Relative paths are resolved
/// against the current directory.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    parse_in(text, file, Path::new("."))
}

fn parse_in(text: &str, file: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let root: serde_yaml::Value = match serde_yaml::from_str(text) {
        Ok(root) => root,
        Err(e) => return Err(syntax_error(&e, text, file)),
    };
    let mut issues = Issues::default();
    let partial = sections::deserialize(&root, &mut issues);
    if let Some(mut partial) = partial {
        partial.config.resolve_paths(base_dir);
        validate::validate(&mut partial, &mut issues);
        if issues.is_empty() {
            return Ok(partial.config);
        }
    }
    let index = Index::build(text);
    let mut problems: Vec<Problem> = issues
        .0
        .into_iter()
        .map(|issue| {
            let (line, column) = index.locate(&issue.path, issue.at_key);
            let path = if issue.path.is_empty() {
                "(root)".to_owned()
            } else {
                issue.path
            };
            Problem {
                file: file.to_owned(),
                line,
                column,
                path,
                message: issue.message,
            }
        })
        .collect();
    problems.sort_by_key(|p| (p.line, p.column));
    Err(ConfigErrors { problems })
}

/// Problems found by checks outside this crate (for example bindings checked against the plugin
/// registry), given as `(field path, message)` and located in `text` like the crate's own, sorted
/// by position. `text` is the config file's content and `file` its name for the messages.
pub fn locate_problems(
    text: &str,
    file: &str,
    issues: impl IntoIterator<Item = (String, String)>,
) -> ConfigErrors {
    let index = Index::build(text);
    let mut problems: Vec<Problem> = issues
        .into_iter()
        .map(|(path, message)| {
            let (line, column) = index.locate(&path, false);
            Problem {
                file: file.to_owned(),
                line,
                column,
                path: if path.is_empty() {
                    "(root)".to_owned()
                } else {
                    path
                },
                message,
            }
        })
        .collect();
    problems.sort_by_key(|p| (p.line, p.column));
    ConfigErrors { problems }
}

fn syntax_error(e: &serde_yaml::Error, text: &str, file: &str) -> ConfigErrors {
    // serde_yaml reports duplicate keys without a position; the index knows where they are.
    let index = Index::build(text);
    if !index.duplicates().is_empty() {
        let problems = index
            .duplicates()
            .iter()
            .map(|(path, (line, column))| Problem {
                file: file.to_owned(),
                line: *line,
                column: *column,
                path: path.clone(),
                message: "duplicate key: this field is already set above".to_owned(),
            })
            .collect();
        return ConfigErrors { problems };
    }
    let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
    let mut message = e.to_string();
    // serde_yaml appends the position to its message; it is already in the prefix.
    if let Some(cut) = message.find(" at line ") {
        message.truncate(cut);
    }
    ConfigErrors {
        problems: vec![Problem {
            file: file.to_owned(),
            line,
            column,
            path: "(root)".to_owned(),
            message: format!("YAML syntax error: {message}"),
        }],
    }
}

/// The embedded default config, used when no config file exists: one `respond` route answering
/// "hello from flexgate\n" on `/`, so a fresh install shows it works before anything is written.
pub const DEFAULT_CONFIG: &str = r#"# FlexGate default configuration (used when no config file exists).
version: 1
listen: 0.0.0.0:8080
admin: { listen: 127.0.0.1:8081 }
metrics: { listen: 0.0.0.0:9090 }
routes:
  - name: hello
    match: { path_prefix: / }
    respond: { status: 200, headers: { content-type: text/plain }, body: "hello from flexgate\n" }
"#;

/// [`DEFAULT_CONFIG`] as a typed value. Built in code so it cannot fail; a test checks that it equals
/// the parsed text. Relative paths (the registry's `./data`) resolve against the current directory.
pub fn default_config() -> Config {
    let respond = Respond {
        status: 200,
        headers: BTreeMap::from([("content-type".to_owned(), "text/plain".to_owned())]),
        body: "hello from flexgate\n".to_owned(),
    };
    let mut config = Config {
        version: 1,
        listen: ([0, 0, 0, 0], 8080).into(),
        tls: None,
        admin: Admin {
            listen: ([127, 0, 0, 1], 8081).into(),
            ..Admin::default()
        },
        metrics: Metrics {
            listen: ([0, 0, 0, 0], 9090).into(),
        },
        log: Log::default(),
        server: Server::default(),
        redis: None,
        store: StoreConfig::default(),
        plugins: Vec::new(),
        upstreams: Vec::new(),
        routes: vec![Route {
            name: "hello".to_owned(),
            matcher: Match {
                path_prefix: Some("/".to_owned()),
                ..Match::default()
            },
            strip_prefix: false,
            preserve_host: true,
            upstream: None,
            respond: Some(respond),
            max_body: None,
            rate_limit: None,
            plugins: Vec::new(),
        }],
    };
    config.resolve_paths(Path::new("."));
    config
}
