//! The registry's data: immutable plugin versions, per-route rollouts and audit entries. These types
//! are the wire format of the store (JSON files, Redis values) and of the admin API, so they are
//! plain serde structs; inputs refuse unknown fields so a typo is an error, never silently ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// The metadata of one uploaded plugin version. A version is immutable and content-addressed: the
/// `sha256` names its blob, so re-uploading identical bytes is recognised as a no-op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PluginVersionMeta {
    /// Plugin name as routes bind it (`use: headers`).
    pub name: String,
    /// Semantic version, e.g. `1.2.0`.
    pub version: String,
    /// Lower-case hex SHA-256 of the component bytes.
    pub sha256: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// The WIT world the component implements, e.g. `flexgate:plugin/plugin@0.1.0`.
    pub wit_world: String,
    /// Who uploaded it (user or token name).
    pub uploaded_by: String,
    /// When, RFC 3339 UTC.
    pub uploaded_at: String,
    /// Free text from the uploader.
    #[serde(default)]
    pub description: String,
}

/// What an uploader supplies besides the bytes; the store computes `sha256`, `size` and the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVersion {
    /// Plugin name (validated by [`crate::validate_plugin_name`]).
    pub name: String,
    /// Semantic version (validated by [`crate::validate_version`]).
    pub version: String,
    /// From the validator.
    pub wit_world: String,
    /// The caller's identity.
    pub uploaded_by: String,
    /// Free text.
    pub description: String,
}

/// How a client is kept on one version: the hash of this key picks its bucket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Sticky {
    /// The client's IP address (the default: works without cooperation from clients).
    #[default]
    ClientIp,
    /// The value of a request header (e.g. a user id set by an auth layer).
    Header(String),
    /// A fresh random draw per request: no stickiness, exact percentages.
    Random,
}

impl Sticky {
    /// The text form used in YAML and JSON: `client_ip`, `header:NAME`, `random`.
    pub fn as_text(&self) -> String {
        match self {
            Sticky::ClientIp => "client_ip".to_owned(),
            Sticky::Header(name) => format!("header:{name}"),
            Sticky::Random => "random".to_owned(),
        }
    }

    /// Parses the text form; header names are lower-cased (HTTP header names are case-insensitive).
    pub fn parse(text: &str) -> Result<Sticky, String> {
        match text {
            "client_ip" => Ok(Sticky::ClientIp),
            "random" => Ok(Sticky::Random),
            other => match other.strip_prefix("header:") {
                Some(name)
                    if !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
                {
                    Ok(Sticky::Header(name.to_ascii_lowercase()))
                }
                _ => Err(format!(
                    "invalid sticky key `{other}`: expected `client_ip`, `random` or `header:NAME`"
                )),
            },
        }
    }
}

impl Serialize for Sticky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_text())
    }
}

impl<'de> Deserialize<'de> for Sticky {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Sticky::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Sticky {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^(client_ip|random|header:[A-Za-z0-9_-]+)$"))
            .description(Some("Sticky key: `client_ip`, `header:NAME` or `random`"))
            .examples([serde_json::json!("client_ip")])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl ToSchema for Sticky {}

/// Thresholds for automatic rollback, checked over a sliding `window` once the canary has served at
/// least `min_requests` requests in it (fewer would make a rate meaningless).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Guards {
    /// Roll back when the canary's error rate (0..=1) is above this.
    #[serde(default)]
    pub max_error_rate: Option<f64>,
    /// Roll back when the canary's trap rate (0..=1) is above this.
    #[serde(default)]
    pub max_trap_rate: Option<f64>,
    /// Roll back when canary p99 minus stable p99 is above this many milliseconds.
    #[serde(default)]
    pub max_p99_increase_ms: Option<f64>,
    /// Canary requests needed in the window before any guard is judged.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Length of the sliding window, e.g. `60s`.
    #[serde(default = "default_window", with = "human_duration")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "60s"))]
    pub window: Duration,
}

fn default_min_requests() -> u64 {
    100
}

fn default_window() -> Duration {
    Duration::from_secs(60)
}

impl Default for Guards {
    fn default() -> Self {
        Guards {
            max_error_rate: None,
            max_trap_rate: None,
            max_p99_increase_ms: None,
            min_requests: default_min_requests(),
            window: default_window(),
        }
    }
}

/// Why and when a canary was last rolled back (by a person or by the guards).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RollbackRecord {
    /// RFC 3339 UTC.
    pub at: String,
    /// Human-readable reason (a guard breach or the operator's text).
    pub reason: String,
    /// User or token name, or `guard` for an automatic rollback.
    pub by: String,
    /// The canary version that was removed.
    #[serde(default)]
    pub canary: Option<String>,
}

/// Which plugin version(s) one route binding runs. `revision` grows by one on every change and is
/// used for optimistic concurrency: a writer states the revision it read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// Route name from the YAML config.
    pub route: String,
    /// Plugin name bound on that route.
    pub plugin: String,
    /// The version most requests run; `None` until the first version is pinned.
    pub stable: Option<String>,
    /// The version under test, if any.
    pub canary: Option<String>,
    /// Share of clients (0..=100) sent to the canary.
    pub canary_percent: u8,
    /// How clients are kept on one version.
    pub sticky: Sticky,
    /// Automatic rollback thresholds.
    pub guards: Guards,
    /// The last rollback, kept for the operator to see.
    pub last_rollback: Option<RollbackRecord>,
    /// Grows by one on every change; 0 means "never written".
    pub revision: u64,
}

impl Rollout {
    /// An empty rollout for a binding that has none yet (revision 0).
    pub fn empty(route: &str, plugin: &str) -> Rollout {
        Rollout {
            route: route.to_owned(),
            plugin: plugin.to_owned(),
            stable: None,
            canary: None,
            canary_percent: 0,
            sticky: Sticky::default(),
            guards: Guards::default(),
            last_rollback: None,
            revision: 0,
        }
    }

    /// The versions this rollout can route to (stable and canary).
    pub fn referenced_versions(&self) -> impl Iterator<Item = &str> {
        self.stable
            .iter()
            .chain(self.canary.iter())
            .map(String::as_str)
    }
}

/// The writable part of a rollout (route and plugin come from the URL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// Stable version; required once a canary is set.
    #[serde(default)]
    pub stable: Option<String>,
    /// Canary version; omit to run stable only (pinning).
    #[serde(default)]
    pub canary: Option<String>,
    /// 0..=100; must be 0 without a canary.
    #[serde(default)]
    pub canary_percent: u8,
    /// Defaults to `client_ip`.
    #[serde(default)]
    pub sticky: Sticky,
    /// Defaults to no thresholds, `min_requests: 100`, `window: 60s`.
    #[serde(default)]
    pub guards: Guards,
    /// The revision the writer last read; when given and different from the stored one, the write
    /// is refused with a conflict. 0 means "create only".
    #[serde(default)]
    pub revision: Option<u64>,
}

/// One line of the append-only audit log: who did what to which target, when, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// RFC 3339 UTC.
    pub at: String,
    /// User or token name (`guard` for automatic actions).
    pub who: String,
    /// `viewer`, `operator`, `admin` or `system`.
    pub role: String,
    /// e.g. `plugin.upload`, `rollout.put`, `rollout.rollback`.
    pub action: String,
    /// e.g. `headers@1.2.0` or `route/plugin`.
    pub target: String,
    /// `ok`, or `error: <code>: <message>`.
    pub result: String,
}

/// One page of the audit log, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditPage {
    /// Total number of entries in the log.
    pub total: u64,
    /// Entries skipped (newest first).
    pub offset: u64,
    /// The entries of this page.
    pub entries: Vec<AuditEntry>,
}

/// Everything the gateway needs to build plugin chains: every version's metadata and every
/// rollout. Published whole on every change so a subscriber never sees half of an update.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegistryState {
    /// Plugin name → version string → metadata.
    pub plugins: BTreeMap<String, BTreeMap<String, PluginVersionMeta>>,
    /// (route, plugin) → rollout.
    pub rollouts: BTreeMap<(String, String), Rollout>,
}

impl RegistryState {
    /// The metadata of one version, if uploaded.
    pub fn version(&self, name: &str, version: &str) -> Option<&PluginVersionMeta> {
        self.plugins.get(name).and_then(|v| v.get(version))
    }

    /// The rollout of one route binding, if any.
    pub fn rollout(&self, route: &str, plugin: &str) -> Option<&Rollout> {
        self.rollouts.get(&(route.to_owned(), plugin.to_owned()))
    }

    /// Rollouts that route to `name@version` (a version they use must not be deleted).
    pub fn rollouts_using<'a>(
        &'a self,
        name: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a Rollout> + 'a {
        self.rollouts
            .values()
            .filter(move |r| r.plugin == name && r.referenced_versions().any(|v| v == version))
    }
}

/// What changed, for subscribers that want to react to one kind of change only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChangeEvent {
    /// A version was uploaded.
    VersionPut {
        /// Plugin name.
        name: String,
        /// Version.
        version: String,
    },
    /// A version was deleted.
    VersionDeleted {
        /// Plugin name.
        name: String,
        /// Version.
        version: String,
    },
    /// A rollout was created or changed.
    Rollout {
        /// Route name.
        route: String,
        /// Plugin name.
        plugin: String,
        /// Its new revision.
        revision: u64,
    },
}

/// Serde adapter for `Duration` as a human string (`60s`, `5m`, `1h 30m`), as the YAML config uses.
pub mod human_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `60s` rather than `{secs, nanos}`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Reads `60s`, `1m 30s`, `500ms`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("invalid duration `{text}`: {e} (e.g. `60s`)"))
        })
    }
}
