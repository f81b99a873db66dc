//! Error types: every problem carries the file, line, column and field path so an operator can jump
//! straight to the mistake, and all problems are reported together so fixing a file takes one round.

use std::fmt;

/// One mistake in a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The file name as given by the caller (only used in messages).
    pub file: String,
    /// 1-based line; 0 when the problem has no position (the file could not be read).
    pub line: usize,
    /// 1-based column; 0 when the problem has no position.
    pub column: usize,
    /// Field path such as `routes[2].upstream`, or `(root)` for the document itself.
    pub path: String,
    /// What is wrong, in words meant for the person editing the file.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.path, self.message
        )
    }
}

/// Every problem found in a config file, sorted by position. Displays one problem per line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", lines(.problems))]
pub struct ConfigErrors {
    /// Never empty when returned by this crate.
    pub problems: Vec<Problem>,
}

fn lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigErrors {
    /// A single problem that has no position in the file (e.g. the file cannot be read).
    pub fn whole_file(file: &str, message: impl Into<String>) -> Self {
        ConfigErrors {
            problems: vec![Problem {
                file: file.to_owned(),
                line: 0,
                column: 0,
                path: "(root)".to_owned(),
                message: message.into(),
            }],
        }
    }
}

/// A problem before it is given a position: the field path (`a.b[2].c`, "" for the root) and whether
/// it is about the key itself (an unknown field) rather than the value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Issue {
    pub path: String,
    pub message: String,
    pub at_key: bool,
}

/// Collects issues while the config is checked; everything is reported, nothing stops early.
#[derive(Debug, Default)]
pub(crate) struct Issues(pub Vec<Issue>);

impl Issues {
    /// A problem with the value at `path`.
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Issue {
            path: path.into(),
            message: message.into(),
            at_key: false,
        });
    }

    /// A problem with the key at `path` (reported at the key's position).
    pub fn add_key(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Issue {
            path: path.into(),
            message: message.into(),
            at_key: true,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `base.key`, or `key` at the root.
pub(crate) fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_owned()
    } else {
        format!("{base}.{key}")
    }
}
