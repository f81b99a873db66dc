//! Route bindings of registry plugins (plugins without `source`) checked against the registry:
//! a pinned `version:` must have been uploaded, and an unpinned binding needs a rollout with a
//! stable version for its route. Used by `flexgate validate`, by `POST /api/config/validate` and
//! by the gateway before it applies a config.

use std::collections::BTreeSet;

use flexgate_config::Config;
use flexgate_registry::RegistryState;

/// Every binding the registry cannot serve, as `(field path, message)` (for
/// [`flexgate_config::locate_problems`]). Bindings of plugins with a `source` file are not checked.
pub fn registry_problems(config: &Config, state: &RegistryState) -> Vec<(String, String)> {
    let registry: BTreeSet<&str> = config
        .plugins
        .iter()
        .filter(|p| p.source.is_none())
        .map(|p| p.name.as_str())
        .collect();
    let mut problems = Vec::new();
    for (i, route) in config.routes.iter().enumerate() {
        for (j, binding) in route.plugins.iter().enumerate() {
            let plugin = binding.plugin.as_str();
            if !registry.contains(plugin) {
                continue;
            }
            let at = format!("routes[{i}].plugins[{j}]");
            match &binding.version {
                Some(version) => {
                    if state.version(plugin, version).is_none() {
                        problems.push((
                            format!("{at}.version"),
                            format!(
                                "plugin {plugin:?} version {version:?} is not in the registry: upload it (`flexgate plugin push`) or change the pin"
                            ),
                        ));
                    }
                }
                None => {
                    let stable = state
                        .rollout(&route.name, plugin)
                        .and_then(|r| r.stable.as_deref());
                    if stable.is_some() {
                        continue;
                    }
                    let uploaded = state.plugins.get(plugin).is_some_and(|v| !v.is_empty());
                    let message = if uploaded {
                        format!(
                            "plugin {plugin:?} has no version in the registry for route {:?} (no rollout yet): start one with `flexgate plugin rollout --route {} --plugin {plugin} --canary VERSION --percent 0` or pin `version:`",
                            route.name, route.name
                        )
                    } else {
                        format!(
                            "plugin {plugin:?} has no version in the registry: upload one or pin `version:`"
                        )
                    };
                    problems.push((format!("{at}.use"), message));
                }
            }
        }
    }
    problems
}
