//! Error types: load-time [`PluginError`] and request-time [`ChainError`].

/// Why loading, configuring or testing a plugin failed. Load-time only: never on the request path.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Engine creation or configuration failed.
    #[error("plugin engine: {0}")]
    Engine(String),
    /// The bytes are not a valid component, or do not implement `flexgate:plugin/plugin@0.1.0`,
    /// or import something the host does not provide.
    #[error("plugin {plugin}: not a valid flexgate:plugin@0.1.0 component: {reason}")]
    Invalid {
        /// Plugin name.
        plugin: String,
        /// Compiler/linker message.
        reason: String,
    },
    /// `init` rejected the binding's configuration (or trapped).
    #[error("plugin {plugin}: init rejected its config: {reason}")]
    Init {
        /// Plugin name.
        plugin: String,
        /// The plugin's message.
        reason: String,
    },
    /// Metric registration failed (e.g. two runtimes on one registry).
    #[error("plugin metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// File-system error (cache, scaffold, CLI input).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Bad CLI input (request/response JSON files).
    #[error("{0}")]
    Input(String),
}

impl PluginError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        PluginError::Io {
            context: context.into(),
            source,
        }
    }
}

/// How a single plugin call failed. Also the `reason` label of `flexgate_plugin_traps_total`
/// for the first four kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The guest trapped (panic, unreachable, bad memory access, ...).
    Trap,
    /// The per-call deadline (epoch interruption) expired.
    Timeout,
    /// The guest hit its memory cap.
    Memory,
    /// A fresh instance's `init` failed.
    Init,
    /// The hook returned an error (the instance stays healthy).
    Error,
    /// The host could not run the call (e.g. the instance pool is exhausted).
    Host,
}

impl FailureKind {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::Memory => "memory",
            FailureKind::Init => "init",
            FailureKind::Error => "error",
            FailureKind::Host => "host",
        }
    }
}

/// A `fail_closed` plugin failed: the gateway answers 500 (JSON with the request id).
#[derive(Debug, Clone, thiserror::Error)]
#[error("plugin {plugin} failed ({}): {reason}", kind.as_str())]
pub struct ChainError {
    /// Name of the plugin that failed.
    pub plugin: String,
    /// What kind of failure.
    pub kind: FailureKind,
    /// Details, for logs (not for clients).
    pub reason: String,
}
