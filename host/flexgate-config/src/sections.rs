//! Typed deserialization that keeps going after an error.
//!
//! serde stops at the first error, so the document is deserialized piece by piece: each top-level
//! section on its own and each element of `upstreams`, `routes` and `plugins` on its own. One bad
//! route then hides nothing else. `serde_path_to_error` supplies the path inside each piece.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_yaml::{Mapping, Value};

use crate::error::{Issues, join};
use crate::schema::Config;

/// The top-level keys, in the order serde would list them.
const TOP_LEVEL: [&str; 12] = [
    "version",
    "listen",
    "tls",
    "admin",
    "metrics",
    "log",
    "server",
    "redis",
    "store",
    "plugins",
    "upstreams",
    "routes",
];

/// A config built from the pieces that deserialized, plus the names of list elements that did not,
/// so references to them are not reported a second time as dangling.
#[derive(Debug)]
pub(crate) struct Partial {
    pub config: Config,
    /// `version` was absent (already reported; do not also complain that it is not 1).
    pub missing_version: bool,
    pub broken_upstreams: BTreeSet<String>,
    pub broken_plugins: BTreeSet<String>,
    /// Position in the file of each element of `config.upstreams`, `config.routes` and
    /// `config.plugins` (elements that failed are missing, so the two can differ).
    pub source_index: SourceIndex,
}

/// For each list, the index in the file of each element kept in the typed config.
#[derive(Debug, Default)]
pub(crate) struct SourceIndex {
    pub upstreams: Vec<usize>,
    pub routes: Vec<usize>,
    pub plugins: Vec<usize>,
}

/// Deserialize `root`, recording every error in `issues`. `None` only when not even the defaults
/// could be built (the root is not a mapping).
pub(crate) fn deserialize(root: &Value, issues: &mut Issues) -> Option<Partial> {
    let map = match root {
        Value::Mapping(map) => map,
        Value::Null => {
            issues.add(
                "",
                "the file is empty: expected a mapping with at least `version: 1`",
            );
            return None;
        }
        _ => {
            issues.add("", "expected a mapping of settings at the top level");
            return None;
        }
    };
    let mut defaults = Mapping::new();
    defaults.insert("version".into(), 1.into());
    let mut config: Config = match serde_yaml::from_value(Value::Mapping(defaults)) {
        Ok(config) => config,
        Err(e) => {
            issues.add("", format!("internal error building defaults: {e}"));
            return None;
        }
    };
    for key in map.keys() {
        match key.as_str() {
            Some(k) if TOP_LEVEL.contains(&k) => {}
            Some(k) => issues.add_key(k, unknown_field(k, &TOP_LEVEL)),
            None => issues.add("", format!("keys must be strings, found {}", describe(key))),
        }
    }
    let missing_version = !map.contains_key("version");
    if missing_version {
        issues.add("", "missing field `version` (write `version: 1`)");
    }
    let (mut broken_upstreams, mut broken_plugins) = (BTreeSet::new(), BTreeSet::new());
    let c = &mut config;
    section(map, "version", &mut c.version, issues);
    section(map, "listen", &mut c.listen, issues);
    section(map, "tls", &mut c.tls, issues);
    section(map, "admin", &mut c.admin, issues);
    section(map, "metrics", &mut c.metrics, issues);
    section(map, "log", &mut c.log, issues);
    section(map, "server", &mut c.server, issues);
    section(map, "redis", &mut c.redis, issues);
    section(map, "store", &mut c.store, issues);
    let mut source_index = SourceIndex::default();
    (source_index.upstreams, c.upstreams) = list(map, "upstreams", issues, &mut broken_upstreams);
    (source_index.routes, c.routes) = list(map, "routes", issues, &mut BTreeSet::new());
    (source_index.plugins, c.plugins) = list(map, "plugins", issues, &mut broken_plugins);
    let partial = Partial {
        config,
        missing_version,
        broken_upstreams,
        broken_plugins,
        source_index,
    };
    Some(partial)
}

/// Overwrite `slot` with the value under `key` if present and valid.
fn section<T: DeserializeOwned>(map: &Mapping, key: &str, slot: &mut T, issues: &mut Issues) {
    if let Some(value) = map.get(key)
        && let Some(v) = piece(value, key, issues)
    {
        *slot = v;
    }
}

/// Each element of the sequence under `key` on its own: the good ones with their index in the file;
/// names of failed elements go to `broken`.
fn list<T: DeserializeOwned>(
    map: &Mapping,
    key: &str,
    issues: &mut Issues,
    broken: &mut BTreeSet<String>,
) -> (Vec<usize>, Vec<T>) {
    match map.get(key) {
        None | Some(Value::Null) => Default::default(),
        Some(Value::Sequence(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let parsed = piece(item, &format!("{key}[{i}]"), issues);
                if parsed.is_none()
                    && let Some(name) = item.get("name").and_then(Value::as_str)
                {
                    broken.insert(name.to_owned());
                }
                Some((i, parsed?))
            })
            .unzip(),
        Some(other) => {
            issues.add(key, format!("expected a list, found {}", describe(other)));
            Default::default()
        }
    }
}

/// Deserialize one piece, recording its error (with the full path) on failure.
fn piece<T: DeserializeOwned>(value: &Value, base: &str, issues: &mut Issues) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value.clone()) {
        Ok(v) => Some(v),
        Err(err) => {
            let mut path = base.to_owned();
            for segment in err.path().iter() {
                match segment {
                    Segment::Seq { index } => path.push_str(&format!("[{index}]")),
                    Segment::Map { key } | Segment::Enum { variant: key } => {
                        path = join(&path, key)
                    }
                    Segment::Unknown => {}
                }
            }
            let message = err.into_inner().to_string();
            // For an unknown key, point at the key itself.
            match backticked(&message, "unknown field `") {
                Some(field) if !path.ends_with(field) => {
                    issues.add_key(join(&path, field), message)
                }
                Some(_) => issues.add_key(path, message),
                None => issues.add(path, message),
            }
            None
        }
    }
}

/// The text between `prefix` and the next backtick, if `message` starts with `prefix`.
fn backticked<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    message.strip_prefix(prefix)?.split('`').next()
}

/// serde's wording, so unknown keys read the same at every level.
fn unknown_field(field: &str, expected: &[&str]) -> String {
    let list = expected
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("unknown field `{field}`, expected one of {list}")
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}
