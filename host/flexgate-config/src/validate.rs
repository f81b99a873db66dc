//! Semantic checks on the typed config: rules serde cannot express (references between sections,
//! ranges, mutually exclusive fields, files that must exist). Every rule records a problem and moves
//! on. A few fields are also normalized here (host and header names lower-cased, methods upper-cased)
//! so the proxy can compare them directly.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::conditions::is_token;
use crate::error::Issues;
use crate::schema::{
    CircuitBreaker, Config, LoadBalancing, Match, RateLimitStore, Route, StoreConfig, Upstream,
};
use crate::sections::Partial;

/// Check `partial.config`, normalizing it in place. Paths must already be resolved.
pub(crate) fn validate(partial: &mut Partial, issues: &mut Issues) {
    let c = &mut partial.config;
    if !partial.missing_version && c.version != 1 {
        issues.add(
            "version",
            format!(
                "unsupported version {}: only `version: 1` exists",
                c.version
            ),
        );
    }
    listeners(c, issues);
    if let Some(tls) = &c.tls {
        exists(&tls.cert, "tls.cert", issues);
        exists(&tls.key, "tls.key", issues);
    }
    if let Some(redis) = &c.redis
        && !(redis.url.starts_with("redis://") || redis.url.starts_with("rediss://"))
    {
        issues.add("redis.url", "must start with `redis://` or `rediss://`");
    }
    store(&c.store, issues);
    admin(c, issues);

    let idx = &partial.source_index;
    unique_names(
        "plugins",
        &idx.plugins,
        c.plugins.iter().map(|p| p.name.as_str()),
        issues,
    );
    for (i, plugin) in idx.plugins.iter().zip(&c.plugins) {
        let at = format!("plugins[{i}]");
        match &plugin.source {
            Some(source) => exists(source, &format!("{at}.source"), issues),
            // Registry plugins become folder names and Redis keys: the registry's stricter rule.
            None if !is_registry_name(&plugin.name) => issues.add(
                format!("{at}.name"),
                format!(
                    "{:?} cannot be uploaded to the registry: a plugin without `source` needs a name of a-z, 0-9, `-` and `_`, starting with a letter or digit",
                    plugin.name
                ),
            ),
            None => {}
        }
        if plugin.limits.memory.get() == 0 {
            issues.add(format!("{at}.limits.memory"), "must be greater than 0");
        }
        positive(
            plugin.limits.timeout.get(),
            &format!("{at}.limits.timeout"),
            issues,
        );
    }

    unique_names(
        "upstreams",
        &idx.upstreams,
        c.upstreams.iter().map(|u| u.name.as_str()),
        issues,
    );
    for (i, upstream) in idx.upstreams.iter().zip(&c.upstreams) {
        check_upstream(upstream, &format!("upstreams[{i}]"), issues);
    }

    let upstreams: BTreeSet<&str> = c
        .upstreams
        .iter()
        .map(|u| u.name.as_str())
        .chain(partial.broken_upstreams.iter().map(String::as_str))
        .collect();
    let plugins: BTreeSet<&str> = c
        .plugins
        .iter()
        .map(|p| p.name.as_str())
        .chain(partial.broken_plugins.iter().map(String::as_str))
        .collect();
    let file_plugins = c
        .plugins
        .iter()
        .filter(|p| p.source.is_some())
        .map(|p| p.name.as_str())
        .collect();
    let known = Known {
        upstreams,
        plugins,
        file_plugins,
        redis: c.redis.is_some(),
    };
    unique_names(
        "routes",
        &idx.routes,
        c.routes.iter().map(|r| r.name.as_str()),
        issues,
    );
    for (i, route) in idx.routes.iter().zip(&mut c.routes) {
        check_route(route, &format!("routes[{i}]"), &known, issues);
    }
}

/// What routes may refer to.
struct Known<'a> {
    upstreams: BTreeSet<&'a str>,
    plugins: BTreeSet<&'a str>,
    /// Plugins with a `source` file (the others come from the registry).
    file_plugins: BTreeSet<&'a str>,
    redis: bool,
}

/// `store`: a Redis URL must be one; a file store's folder must not be a file.
fn store(store: &StoreConfig, issues: &mut Issues) {
    match store {
        StoreConfig::File { path } => {
            if path.exists() && !path.is_dir() {
                issues.add(
                    "store.path",
                    format!("{} exists and is not a folder", path.display()),
                );
            }
        }
        StoreConfig::Redis { url, prefix } => {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                issues.add("store.url", "must start with `redis://` or `rediss://`");
            }
            if let Some(prefix) = prefix
                && (prefix.is_empty()
                    || prefix.chars().any(|c| c.is_whitespace() || c.is_control()))
            {
                issues.add(
                    "store.prefix",
                    "must be non-empty, without spaces or control characters",
                );
            }
        }
    }
}

/// `admin.auth` and `admin.max_upload`.
fn admin(c: &Config, issues: &mut Issues) {
    let auth = &c.admin.auth;
    if !is_env_name(&auth.jwt_secret_env) {
        issues.add(
            "admin.auth.jwt_secret_env",
            format!(
                "{:?} is not an environment variable name (letters, digits and `_`, not starting with a digit); put the variable's name here, never the secret itself",
                auth.jwt_secret_env
            ),
        );
    }
    if let Some(users) = &auth.users_file {
        exists(users, "admin.auth.users_file", issues);
    }
    if let Some(tokens) = &auth.tokens_file {
        exists(tokens, "admin.auth.tokens_file", issues);
    }
    if c.admin.max_upload.get() == 0 {
        issues.add("admin.max_upload", "must be greater than 0");
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`
fn is_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The registry's plugin names: `[a-z0-9][a-z0-9_-]{0,63}`.
fn is_registry_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.len() <= 64
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `MAJOR.MINOR.PATCH`, optionally with `-pre` and `+build` (the registry checks the rest).
fn is_semver_like(s: &str) -> bool {
    let core = s.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && !s.ends_with(['-', '+'])
}

/// Two listeners on one port would fail at bind time, far from the config line that caused it.
fn listeners(c: &Config, issues: &mut Issues) {
    let all: [(&str, SocketAddr); 3] = [
        ("listen", c.listen),
        ("admin.listen", c.admin.listen),
        ("metrics.listen", c.metrics.listen),
    ];
    for (i, (path, addr)) in all.iter().enumerate() {
        for (other, other_addr) in &all[..i] {
            let overlap = addr.ip() == other_addr.ip()
                || addr.ip().is_unspecified()
                || other_addr.ip().is_unspecified();
            if addr.port() != 0 && addr.port() == other_addr.port() && overlap {
                issues.add(
                    *path,
                    format!("{addr} conflicts with `{other}` ({other_addr})"),
                );
            }
        }
    }
}

fn exists(path: &Path, at: &str, issues: &mut Issues) {
    if !path.exists() {
        issues.add(at, format!("file not found: {}", path.display()));
    }
}

fn positive(d: Duration, at: &str, issues: &mut Issues) {
    if d.is_zero() {
        issues.add(at, "must be greater than 0");
    }
}

/// Names appear in metrics labels, admin URLs and log lines, so they are restricted and unique.
fn unique_names<'a>(
    section: &str,
    indices: &[usize],
    names: impl Iterator<Item = &'a str>,
    issues: &mut Issues,
) {
    let mut seen = HashSet::new();
    for (i, name) in indices.iter().zip(names) {
        let at = format!("{section}[{i}].name");
        if !is_name(name) {
            issues.add(
                &at,
                format!("invalid name {name:?}: use 1 to 64 letters, digits, `_`, `.` or `-`, starting with a letter or digit"),
            );
        }
        if !seen.insert(name) {
            issues.add(at, format!("duplicate name {name:?} in `{section}`"));
        }
    }
}

/// `^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`
pub(crate) fn is_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && s.len() <= 64
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// A DNS name: dot-separated labels of letters, digits and `-` (and `_` when `underscore`, as
/// internal service names often have).
pub(crate) fn is_hostname(s: &str, underscore: bool) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || (underscore && b == b'_'))
        })
}

/// `host:port` with a hostname, an IPv4 address or a bracketed IPv6 address, and a port 1..=65535.
pub(crate) fn check_addr(addr: &str) -> Result<(), String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("invalid address {addr:?}: expected `host:port`"));
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => host.parse::<std::net::Ipv4Addr>().is_ok() || is_hostname(host, true),
    };
    if !host_ok {
        return Err(format!("invalid host {host:?} in address {addr:?}"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!(
            "invalid port {port:?} in address {addr:?}: expected 1 to 65535"
        )),
    }
}

/// Header values may hold visible characters, spaces and tabs, but no line breaks or controls.
fn is_header_value(s: &str) -> bool {
    s.bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80)
}

fn check_upstream(u: &Upstream, at: &str, issues: &mut Issues) {
    if u.targets.is_empty() {
        issues.add(format!("{at}.targets"), "at least one target is required");
    }
    let mut addrs = HashSet::new();
    for (j, t) in u.targets.iter().enumerate() {
        if let Err(e) = check_addr(&t.addr) {
            issues.add(format!("{at}.targets[{j}].addr"), e);
        }
        if !addrs.insert(t.addr.as_str()) {
            issues.add(
                format!("{at}.targets[{j}].addr"),
                format!("duplicate target {:?}", t.addr),
            );
        }
        if !(1..=10_000).contains(&t.weight) {
            issues.add(
                format!("{at}.targets[{j}].weight"),
                "must be from 1 to 10000",
            );
        }
    }
    if u.hash_key.is_some() && u.load_balancing != LoadBalancing::ConsistentHash {
        issues.add(
            format!("{at}.hash_key"),
            "only applies with `load_balancing: consistent_hash`",
        );
    }
    positive(
        u.timeouts.connect.get(),
        &format!("{at}.timeouts.connect"),
        issues,
    );
    positive(
        u.timeouts.request.get(),
        &format!("{at}.timeouts.request"),
        issues,
    );
    if let Some(hc) = &u.health_check {
        let at = format!("{at}.health_check");
        if !hc.path.starts_with('/') {
            issues.add(format!("{at}.path"), "must start with `/`");
        }
        positive(hc.interval.get(), &format!("{at}.interval"), issues);
        positive(hc.timeout.get(), &format!("{at}.timeout"), issues);
        for (field, v) in [("healthy", hc.healthy), ("unhealthy", hc.unhealthy)] {
            if v < 1 {
                issues.add(format!("{at}.{field}"), "must be at least 1");
            }
        }
    }
    if let Some(cb) = &u.circuit_breaker {
        check_breaker(cb, &format!("{at}.circuit_breaker"), issues);
    }
    if u.max_in_flight == Some(0) {
        issues.add(
            format!("{at}.max_in_flight"),
            "must be at least 1 (remove it for no limit)",
        );
    }
}

fn check_breaker(cb: &CircuitBreaker, at: &str, issues: &mut Issues) {
    if cb.consecutive_failures.is_none() && cb.failure_rate.is_none() {
        issues.add(at, "needs `consecutive_failures`, `failure_rate`, or both");
    }
    if cb.consecutive_failures == Some(0) {
        issues.add(format!("{at}.consecutive_failures"), "must be at least 1");
    }
    if let Some(rate) = &cb.failure_rate {
        if !(rate.threshold > 0.0 && rate.threshold <= 1.0) {
            issues.add(
                format!("{at}.failure_rate.threshold"),
                "must be greater than 0 and at most 1",
            );
        }
        if rate.min_requests < 1 {
            issues.add(
                format!("{at}.failure_rate.min_requests"),
                "must be at least 1",
            );
        }
        positive(
            rate.window.get(),
            &format!("{at}.failure_rate.window"),
            issues,
        );
    }
    if cb.open_for > cb.max_open_for {
        issues.add(
            format!("{at}.open_for"),
            format!(
                "{} is longer than `max_open_for` ({})",
                cb.open_for, cb.max_open_for
            ),
        );
    }
    if cb.half_open_probes < 1 {
        issues.add(format!("{at}.half_open_probes"), "must be at least 1");
    }
    if cb.failure_on.is_empty() {
        issues.add(
            format!("{at}.failure_on"),
            "must list at least one condition",
        );
    }
}

fn check_route(r: &mut Route, at: &str, known: &Known<'_>, issues: &mut Issues) {
    match (&r.upstream, &r.respond) {
        (Some(_), Some(_)) => issues.add(at, "set either `upstream` or `respond`, not both"),
        (None, None) => issues.add(
            at,
            "needs `upstream` (forward) or `respond` (answer directly)",
        ),
        _ => {}
    }
    if let Some(name) = &r.upstream
        && !known.upstreams.contains(name.as_str())
    {
        issues.add(
            format!("{at}.upstream"),
            format!("unknown upstream {name:?}"),
        );
    }
    check_match(&mut r.matcher, &format!("{at}.match"), issues);
    if let Some(respond) = &r.respond {
        let at = format!("{at}.respond");
        if !(100..=599).contains(&respond.status) {
            issues.add(format!("{at}.status"), "must be from 100 to 599");
        }
        check_headers(&respond.headers, &format!("{at}.headers"), issues);
    }
    if let Some(rl) = &r.rate_limit
        && rl.store == RateLimitStore::Redis
        && !known.redis
    {
        issues.add(
            format!("{at}.rate_limit.store"),
            "rate_limit.store: redis requires a top-level \"redis\" section",
        );
    }
    for (j, binding) in r.plugins.iter().enumerate() {
        if !known.plugins.contains(binding.plugin.as_str()) {
            issues.add(
                format!("{at}.plugins[{j}].use"),
                format!(
                    "unknown plugin {:?}: not in the top-level `plugins`",
                    binding.plugin
                ),
            );
        }
        if let Some(version) = &binding.version {
            if known.file_plugins.contains(binding.plugin.as_str()) {
                issues.add(
                    format!("{at}.plugins[{j}].version"),
                    format!(
                        "plugin {:?} is loaded from its `source` file; `version` pins a registry version and only applies to plugins without `source`",
                        binding.plugin
                    ),
                );
            } else if !is_semver_like(version) {
                issues.add(
                    format!("{at}.plugins[{j}].version"),
                    format!("invalid version {version:?}: expected semver such as \"1.2.0\""),
                );
            }
        }
    }
}

fn check_headers(headers: &BTreeMap<String, String>, at: &str, issues: &mut Issues) {
    for (name, value) in headers {
        if !is_token(name) {
            issues.add_key(
                format!("{at}.{name}"),
                format!("invalid header name {name:?}"),
            );
        }
        if !is_header_value(value) {
            issues.add(
                format!("{at}.{name}"),
                format!("invalid header value {value:?}"),
            );
        }
    }
}

fn check_match(m: &mut Match, at: &str, issues: &mut Issues) {
    if let Some(host) = &mut m.host {
        *host = host.to_ascii_lowercase();
        let bare = host.strip_prefix("*.").unwrap_or(host);
        if !is_hostname(bare, false) {
            issues.add(
                format!("{at}.host"),
                format!("invalid host {host:?}: expected a hostname such as `api.example.com` or `*.example.com`"),
            );
        }
    }
    for (field, value) in [("path_prefix", &m.path_prefix), ("path", &m.path)] {
        if let Some(p) = value
            && !p.starts_with('/')
        {
            issues.add(
                format!("{at}.{field}"),
                format!("{p:?} must start with `/`"),
            );
        }
    }
    if m.path.is_some() && m.path_prefix.is_some() {
        issues.add(
            format!("{at}.path"),
            "set either `path` or `path_prefix`, not both",
        );
    }
    for (j, method) in m.methods.iter_mut().enumerate() {
        if !is_token(method) {
            issues.add(
                format!("{at}.methods[{j}]"),
                format!("invalid HTTP method {method:?}"),
            );
        }
        *method = method.to_ascii_uppercase();
    }
    check_headers(&m.headers, &format!("{at}.headers"), issues);
    let headers = std::mem::take(&mut m.headers);
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if m.headers.contains_key(&lower) {
            issues.add_key(
                format!("{at}.headers.{name}"),
                format!("header {lower:?} is listed twice"),
            );
        }
        m.headers.insert(lower, value);
    }
}
