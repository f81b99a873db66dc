//! The rules every store enforces, as pure functions over [`RegistryState`], so the file and Redis
//! stores cannot disagree on what a valid upload, rollout change, promote or rollback is.

use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::error::{RegistryError, Result};
use crate::model::{PluginVersionMeta, RegistryState, RollbackRecord, Rollout, RolloutSpec};

/// Current time as RFC 3339 UTC with seconds precision (what the audit log and metadata store).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Lower-case hex SHA-256, the content address of a blob.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Plugin names become directory names and Redis key parts, so they are restricted to
/// `[a-z0-9][a-z0-9_-]{0,63}`: safe everywhere, and unambiguous in URLs.
pub fn validate_plugin_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && (b == b'-' || b == b'_'))
        });
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!(
            "invalid plugin name `{name}`: use 1-64 characters of a-z, 0-9, `-` and `_`, starting with a letter or digit"
        )))
    }
}

/// Versions must be semver (`1.2.0`, `1.3.0-rc.1`); the characters semver allows are file-name safe.
pub fn validate_version(version: &str) -> Result<semver::Version> {
    if version.len() > 64 {
        return Err(RegistryError::Invalid(
            "version is longer than 64 characters".into(),
        ));
    }
    semver::Version::parse(version).map_err(|e| {
        RegistryError::Invalid(format!(
            "invalid version `{version}`: {e} (expected semver such as 1.2.0)"
        ))
    })
}

/// Route names come from the YAML config; they only need to be non-empty, printable and short.
pub fn validate_route_name(route: &str) -> Result<()> {
    if route.is_empty() || route.len() > 128 || route.chars().any(char::is_control) {
        return Err(RegistryError::Invalid(format!(
            "invalid route name `{route}`: 1-128 printable characters"
        )));
    }
    Ok(())
}

/// Decides an upload against the current state: `Ok(Some(existing))` when the same version with
/// the same bytes exists (a no-op), `Ok(None)` when it is new, `Conflict` for different bytes.
pub fn check_put(
    state: &RegistryState,
    name: &str,
    version: &str,
    sha256: &str,
) -> Result<Option<PluginVersionMeta>> {
    validate_plugin_name(name)?;
    validate_version(version)?;
    match state.version(name, version) {
        Some(existing) if existing.sha256 == sha256 => Ok(Some(existing.clone())),
        Some(existing) => Err(RegistryError::Conflict(format!(
            "{name}@{version} already exists with different content (sha256 {}); versions are immutable, upload a new version",
            existing.sha256
        ))),
        None => Ok(None),
    }
}

/// A version may be deleted only when no rollout routes to it.
pub fn check_delete(state: &RegistryState, name: &str, version: &str) -> Result<PluginVersionMeta> {
    let meta = state.version(name, version).ok_or_else(|| {
        RegistryError::NotFound(format!("plugin version {name}@{version} not found"))
    })?;
    let users: Vec<String> = state
        .rollouts_using(name, version)
        .map(|r| r.route.clone())
        .collect();
    if !users.is_empty() {
        return Err(RegistryError::Conflict(format!(
            "{name}@{version} is used by the rollout of route(s) {}; change those rollouts first",
            users.join(", ")
        )));
    }
    Ok(meta.clone())
}

/// Builds the next rollout from a spec: checks the revision, that every named version exists, and
/// that the percentages make sense. The result carries `revision + 1`.
pub fn apply_spec(
    state: &RegistryState,
    route: &str,
    plugin: &str,
    spec: RolloutSpec,
) -> Result<Rollout> {
    validate_route_name(route)?;
    validate_plugin_name(plugin)?;
    let current = state
        .rollout(route, plugin)
        .cloned()
        .unwrap_or_else(|| Rollout::empty(route, plugin));
    if let Some(expected) = spec.revision
        && expected != current.revision
    {
        return Err(RegistryError::Conflict(format!(
            "rollout {route}/{plugin} is at revision {}, not {expected}; reload and retry",
            current.revision
        )));
    }
    if spec.canary_percent > 100 {
        return Err(RegistryError::Invalid(format!(
            "canary_percent {} is over 100",
            spec.canary_percent
        )));
    }
    for version in spec.stable.iter().chain(spec.canary.iter()) {
        if state.version(plugin, version).is_none() {
            return Err(RegistryError::Invalid(format!(
                "plugin version {plugin}@{version} has not been uploaded"
            )));
        }
    }
    match (&spec.stable, &spec.canary) {
        (_, None) if spec.canary_percent != 0 => {
            return Err(RegistryError::Invalid(
                "canary_percent must be 0 when no canary is set".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(RegistryError::Invalid(
                "a canary needs a stable version to compare with; set `stable` first".into(),
            ));
        }
        (Some(s), Some(c)) if s == c => {
            return Err(RegistryError::Invalid(
                "canary and stable are the same version".into(),
            ));
        }
        _ => {}
    }
    check_guards(&spec.guards)?;
    Ok(Rollout {
        route: route.to_owned(),
        plugin: plugin.to_owned(),
        stable: spec.stable,
        canary: spec.canary,
        canary_percent: spec.canary_percent,
        sticky: spec.sticky,
        guards: spec.guards,
        last_rollback: current.last_rollback,
        revision: current.revision + 1,
    })
}

fn check_guards(guards: &crate::model::Guards) -> Result<()> {
    for (field, value) in [
        ("max_error_rate", guards.max_error_rate),
        ("max_trap_rate", guards.max_trap_rate),
    ] {
        if let Some(v) = value
            && !(0.0..=1.0).contains(&v)
        {
            return Err(RegistryError::Invalid(format!(
                "guards.{field} must be between 0 and 1, got {v}"
            )));
        }
    }
    if let Some(v) = guards.max_p99_increase_ms
        && !(v.is_finite() && v >= 0.0)
    {
        return Err(RegistryError::Invalid(format!(
            "guards.max_p99_increase_ms must be a non-negative number, got {v}"
        )));
    }
    if guards.window.is_zero() || guards.window > std::time::Duration::from_secs(24 * 3600) {
        return Err(RegistryError::Invalid(
            "guards.window must be between 1s and 24h".into(),
        ));
    }
    Ok(())
}

fn existing<'a>(state: &'a RegistryState, route: &str, plugin: &str) -> Result<&'a Rollout> {
    state.rollout(route, plugin).ok_or_else(|| {
        RegistryError::NotFound(format!("no rollout for route `{route}` plugin `{plugin}`"))
    })
}

/// Promote: the canary becomes stable, no canary, percent 0.
pub fn apply_promote(state: &RegistryState, route: &str, plugin: &str) -> Result<Rollout> {
    let current = existing(state, route, plugin)?;
    let Some(canary) = current.canary.clone() else {
        return Err(RegistryError::Conflict(format!(
            "rollout {route}/{plugin} has no canary to promote"
        )));
    };
    let mut next = current.clone();
    next.stable = Some(canary);
    next.canary = None;
    next.canary_percent = 0;
    next.revision += 1;
    Ok(next)
}

/// Rollback: the canary is removed, percent 0, and the reason is recorded.
pub fn apply_rollback(
    state: &RegistryState,
    route: &str,
    plugin: &str,
    reason: &str,
    by: &str,
) -> Result<Rollout> {
    let current = existing(state, route, plugin)?;
    if current.canary.is_none() {
        return Err(RegistryError::Conflict(format!(
            "rollout {route}/{plugin} has no canary to roll back"
        )));
    }
    let mut next = current.clone();
    next.last_rollback = Some(RollbackRecord {
        at: now_rfc3339(),
        reason: reason.to_owned(),
        by: by.to_owned(),
        canary: next.canary.take(),
    });
    next.canary_percent = 0;
    next.revision += 1;
    Ok(next)
}
