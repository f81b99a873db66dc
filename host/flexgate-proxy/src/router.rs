//! Route matching: which route answers a request. Compiled once per config snapshot; a lookup takes
//! no lock and allocates nothing (unless the Host header has upper-case letters).
//!
//! Precedence, most specific first (documented in the README):
//! 1. host: exact host > wildcard `*.suffix` (longer suffix first) > routes without a host;
//! 2. path: exact `path` > `path_prefix` (longer first) > neither;
//! 3. routes restricting `methods` > routes that don't;
//! 4. more header matchers > fewer;
//! 5. order in the file.
//!
//! A request is tried against the most specific host group first and falls through to less specific
//! groups when nothing there matches its path, method or headers.

use std::borrow::Cow;
use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// How a route matches the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Any,
    /// Segment-aware: `/users` matches `/users`, `/users/1`, not `/usersx`. `/` matches everything.
    Prefix(Box<str>),
    Exact(Box<str>),
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(p) => path == &**p,
            Self::Prefix(p) => prefix_matches(p, path),
        }
    }

    /// Sort key: exact paths first, then longer prefixes.
    fn rank(&self) -> (u8, usize) {
        match self {
            Self::Exact(p) => (0, usize::MAX - p.len()),
            Self::Prefix(p) => (1, usize::MAX - p.len()),
            Self::Any => (2, 0),
        }
    }
}

/// Segment-aware prefix test shared with `strip_prefix`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Everything a route requires of a request besides its host.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub path: PathMatch,
    pub methods: Vec<Method>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Matcher {
    fn matches(&self, path: &str, method: &Method, headers: &HeaderMap) -> bool {
        self.path.matches(path)
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && self.headers.iter().all(|(n, v)| headers.get(n) == Some(v))
    }
}

/// The host part of a route's match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

/// A compiled route table over routes of type `R`, each with its host match and matcher.
#[derive(Debug)]
pub struct Router<R> {
    routes: Vec<(Matcher, R)>,
    exact: HashMap<String, Vec<usize>>,
    /// Wildcard groups, longest suffix first.
    suffixes: Vec<(String, Vec<usize>)>,
    any: Vec<usize>,
}

impl<R> Router<R> {
    /// Builds the table; `routes` are in file order (the final tie-breaker).
    pub fn new(routes: Vec<(HostMatch, Matcher, R)>) -> Self {
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut suffixes: HashMap<String, Vec<usize>> = HashMap::new();
        let mut any = Vec::new();
        let mut table = Vec::with_capacity(routes.len());
        for (i, (host, matcher, route)) in routes.into_iter().enumerate() {
            match host {
                HostMatch::Any => any.push(i),
                HostMatch::Exact(h) => exact.entry(h).or_default().push(i),
                HostMatch::Suffix(s) => suffixes.entry(s).or_default().push(i),
            }
            table.push((matcher, route));
        }
        let order = |group: &mut Vec<usize>| {
            group.sort_by_key(|&i| {
                let m = &table[i].0;
                (
                    m.path.rank(),
                    m.methods.is_empty(),
                    usize::MAX - m.headers.len(),
                    i,
                )
            });
        };
        exact.values_mut().for_each(order);
        order(&mut any);
        let mut suffixes: Vec<(String, Vec<usize>)> = suffixes.into_iter().collect();
        suffixes.iter_mut().for_each(|(_, g)| order(g));
        suffixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Self {
            routes: table,
            exact,
            suffixes,
            any,
        }
    }

    /// Every route, in file order (admin views; never on the request path).
    pub fn routes(&self) -> impl Iterator<Item = &R> {
        self.routes.iter().map(|(_, r)| r)
    }

    /// The route for a request. `host` is the Host header or `:authority`, port included or not.
    pub fn find(
        &self,
        host: Option<&str>,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<&R> {
        let first = |group: &[usize]| {
            group
                .iter()
                .map(|&i| &self.routes[i])
                .find(|(m, _)| m.matches(path, method, headers))
        };
        if let Some(host) = host.map(normalize_host) {
            if let Some(group) = self.exact.get(host.as_ref())
                && let Some((_, r)) = first(group)
            {
                return Some(r);
            }
            for (suffix, group) in &self.suffixes {
                if host.len() > suffix.len()
                    && host.ends_with(suffix.as_str())
                    && let Some((_, r)) = first(group)
                {
                    return Some(r);
                }
            }
        }
        first(&self.any).map(|(_, r)| r)
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// Drops the port and a trailing dot, lower-cases only when needed.
fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(path: PathMatch) -> Matcher {
        Matcher {
            path,
            methods: vec![],
            headers: vec![],
        }
    }

    fn router() -> Router<&'static str> {
        Router::new(vec![
            (
                HostMatch::Any,
                m(PathMatch::Prefix("/".into())),
                "catch-all",
            ),
            (
                HostMatch::Any,
                m(PathMatch::Prefix("/users".into())),
                "users",
            ),
            (
                HostMatch::Any,
                m(PathMatch::Exact("/users/me".into())),
                "me",
            ),
            (
                HostMatch::Any,
                Matcher {
                    path: PathMatch::Prefix("/users".into()),
                    methods: vec![Method::POST],
                    headers: vec![],
                },
                "users-post",
            ),
            (
                HostMatch::Exact("api.example.com".into()),
                m(PathMatch::Prefix("/".into())),
                "api",
            ),
            (
                HostMatch::Suffix(".example.com".into()),
                m(PathMatch::Prefix("/".into())),
                "wild",
            ),
            (
                HostMatch::Suffix(".b.example.com".into()),
                m(PathMatch::Prefix("/".into())),
                "wild-b",
            ),
            (
                HostMatch::Exact("only.example.com".into()),
                m(PathMatch::Exact("/x".into())),
                "only-x",
            ),
        ])
    }

    fn find<'a>(
        r: &'a Router<&'static str>,
        host: &str,
        path: &str,
        method: Method,
    ) -> Option<&'a str> {
        r.find(Some(host), path, &method, &HeaderMap::new())
            .copied()
    }

    #[test]
    fn precedence() {
        let r = router();
        assert_eq!(find(&r, "other", "/users/1", Method::GET), Some("users"));
        assert_eq!(find(&r, "other", "/usersx", Method::GET), Some("catch-all"));
        assert_eq!(find(&r, "other", "/users/me", Method::GET), Some("me"));
        assert_eq!(
            find(&r, "other", "/users", Method::POST),
            Some("users-post")
        );
        assert_eq!(
            find(&r, "API.example.com:8080", "/users", Method::GET),
            Some("api")
        );
        assert_eq!(find(&r, "x.example.com", "/", Method::GET), Some("wild"));
        assert_eq!(
            find(&r, "x.b.example.com", "/", Method::GET),
            Some("wild-b")
        );
        assert_eq!(find(&r, "example.com", "/", Method::GET), Some("catch-all"));
        // Falls through to a less specific host group when the path does not match.
        assert_eq!(
            find(&r, "only.example.com", "/y", Method::GET),
            Some("wild")
        );
        assert_eq!(
            find(&r, "only.example.com", "/x", Method::GET),
            Some("only-x")
        );
    }

    #[test]
    fn prefix_is_segment_aware() {
        assert!(prefix_matches("/users", "/users"));
        assert!(prefix_matches("/users", "/users/1"));
        assert!(prefix_matches("/users/", "/users/1"));
        assert!(!prefix_matches("/users", "/usersx"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn header_matchers_rank_higher() {
        let with = Matcher {
            path: PathMatch::Any,
            methods: vec![],
            headers: vec![(
                HeaderName::from_static("x-env"),
                HeaderValue::from_static("prod"),
            )],
        };
        let r = Router::new(vec![
            (HostMatch::Any, m(PathMatch::Any), "plain"),
            (HostMatch::Any, with, "prod"),
        ]);
        let mut h = HeaderMap::new();
        assert_eq!(r.find(None, "/", &Method::GET, &h).copied(), Some("plain"));
        h.insert("x-env", HeaderValue::from_static("prod"));
        assert_eq!(r.find(None, "/", &Method::GET, &h).copied(), Some("prod"));
    }
}
