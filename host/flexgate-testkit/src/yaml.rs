//! Small YAML snippets for gateway configs (the rest is written inline in tests).

use std::net::SocketAddr;

/// `targets:` lines (indented for an upstream entry) for `addrs`, each with weight 1.
pub fn targets(addrs: &[SocketAddr]) -> String {
    let mut s = String::from("    targets:\n");
    for a in addrs {
        s.push_str(&format!("      - addr: \"{a}\"\n"));
    }
    s
}

/// A config with one upstream `up` over `addrs` and one catch-all route `all` to it.
/// `upstream_extra` and `route_extra` are raw lines appended to each (indent them by 4 spaces).
pub fn proxy_all(addrs: &[SocketAddr], upstream_extra: &str, route_extra: &str) -> String {
    format!(
        "upstreams:\n  - name: up\n{}{upstream_extra}routes:\n  - name: all\n    upstream: up\n{route_extra}",
        targets(addrs)
    )
}
