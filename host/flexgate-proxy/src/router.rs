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
    exact: HashMap<String, Group>,
    /// Wildcard groups, longest suffix first.
    suffixes: Vec<(String, Group)>,
    any: Group,
}

/// The routes of one host group, indexed by path so a lookup costs the number of path segments,
/// not the number of routes. Each list is in precedence order.
#[derive(Debug, Default)]
struct Group {
    /// Exact `path` → routes.
    exact: HashMap<Box<str>, Vec<usize>>,
    /// `path_prefix` without its trailing slash (`/` becomes "") → routes.
    prefix: HashMap<Box<str>, Vec<usize>>,
    /// Routes without a path match.
    any: Vec<usize>,
}

impl Group {
    fn add(&mut self, i: usize, path: &PathMatch) {
        match path {
            PathMatch::Exact(p) => self.exact.entry(p.clone()).or_default().push(i),
            PathMatch::Prefix(p) => self.prefix.entry(prefix_key(p).into()).or_default().push(i),
            PathMatch::Any => self.any.push(i),
        }
    }

    fn lists_mut(&mut self) -> impl Iterator<Item = &mut Vec<usize>> {
        self.exact
            .values_mut()
            .chain(self.prefix.values_mut())
            .chain(std::iter::once(&mut self.any))
    }

    /// The first route of this group matching, in precedence order: the exact path, then the
    /// path's segment prefixes longest first, then routes without a path match.
    fn find<R>(
        &self,
        routes: &[(Matcher, R)],
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<usize> {
        let first = |list: &[usize]| {
            list.iter()
                .copied()
                .find(|&i| routes[i].0.matches(path, method, headers))
        };
        if let Some(i) = self.exact.get(path).and_then(|l| first(l)) {
            return Some(i);
        }
        if !self.prefix.is_empty() {
            // `path` itself, then every cut before a `/`, then the root prefix.
            let cuts = std::iter::once(path.len())
                .chain(path.rmatch_indices('/').map(|(pos, _)| pos))
                .filter(|&pos| pos > 0);
            for pos in cuts.chain(std::iter::once(0)) {
                if let Some(i) = self.prefix.get(&path[..pos]).and_then(|l| first(l)) {
                    return Some(i);
                }
            }
        }
        first(&self.any)
    }
}

/// The index key of a prefix: `prefix_matches` ignores one trailing slash, and `/` matches all.
fn prefix_key(prefix: &str) -> &str {
    if prefix == "/" {
        ""
    } else {
        prefix.strip_suffix('/').unwrap_or(prefix)
    }
}

impl<R> Router<R> {
    /// Builds the table; `routes` are in file order (the final tie-breaker).
    pub fn new(routes: Vec<(HostMatch, Matcher, R)>) -> Self {
        let mut exact: HashMap<String, Group> = HashMap::new();
        let mut suffixes: HashMap<String, Group> = HashMap::new();
        let mut any = Group::default();
        let mut table = Vec::with_capacity(routes.len());
        for (i, (host, matcher, route)) in routes.into_iter().enumerate() {
            let group = match host {
                HostMatch::Any => &mut any,
                HostMatch::Exact(h) => exact.entry(h).or_default(),
                HostMatch::Suffix(s) => suffixes.entry(s).or_default(),
            };
            group.add(i, &matcher.path);
            table.push((matcher, route));
        }
        let order = |group: &mut Group| {
            for list in group.lists_mut() {
                list.sort_by_key(|&i| {
                    let m = &table[i].0;
                    (
                        m.path.rank(),
                        m.methods.is_empty(),
                        usize::MAX - m.headers.len(),
                        i,
                    )
                });
            }
        };
        exact.values_mut().for_each(order);
        order(&mut any);
        let mut suffixes: Vec<(String, Group)> = suffixes.into_iter().collect();
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
        let find = |g: &Group| g.find(&self.routes, path, method, headers);
        let hit = host.map(normalize_host).and_then(|host| {
            self.exact.get(host.as_ref()).and_then(find).or_else(|| {
                self.suffixes
                    .iter()
                    .filter(|(suffix, _)| {
                        host.len() > suffix.len() && host.ends_with(suffix.as_str())
                    })
                    .find_map(|(_, g)| find(g))
            })
        });
        hit.or_else(|| find(&self.any)).map(|i| &self.routes[i].1)
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

    /// The indexed lookup must agree with the documented precedence applied by brute force:
    /// among matching routes of the most specific host group, the smallest sort key wins.
    #[test]
    fn index_agrees_with_a_linear_scan() {
        let mut rng = fastrand::Rng::with_seed(7);
        let segs = ["", "a", "b", "ab", "a/b", "b/a", "a/b/c"];
        let pick = |rng: &mut fastrand::Rng| segs[rng.usize(..segs.len())];
        for _ in 0..200 {
            let mut spec = Vec::new();
            for _ in 0..rng.usize(1..12) {
                let seg = pick(&mut rng);
                let path = match rng.u8(..4) {
                    0 => PathMatch::Any,
                    1 => PathMatch::Exact(format!("/{seg}").into()),
                    2 => PathMatch::Prefix(format!("/{seg}/").into()),
                    _ => PathMatch::Prefix(format!("/{seg}").into()),
                };
                let methods = if rng.bool() {
                    vec![Method::POST]
                } else {
                    vec![]
                };
                spec.push((
                    HostMatch::Any,
                    Matcher {
                        path,
                        methods,
                        headers: vec![],
                    },
                ));
            }
            let router = Router::new(
                spec.iter()
                    .enumerate()
                    .map(|(i, (h, m))| (h.clone(), m.clone(), i))
                    .collect(),
            );
            for _ in 0..20 {
                let path = format!("/{}{}", pick(&mut rng), if rng.bool() { "/" } else { "" });
                let method = if rng.bool() {
                    Method::GET
                } else {
                    Method::POST
                };
                let h = HeaderMap::new();
                let expected = spec
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, m))| m.matches(&path, &method, &h))
                    .min_by_key(|(i, (_, m))| {
                        (
                            m.path.rank(),
                            m.methods.is_empty(),
                            usize::MAX - m.headers.len(),
                            *i,
                        )
                    })
                    .map(|(i, _)| i);
                let got = router.find(None, &path, &method, &h).copied();
                // Two prefixes differing only by a trailing slash share a bucket and rank by
                // length: either may win when both match; everything else must agree exactly.
                let same_bucket = |a: usize, b: usize| match (&spec[a].1.path, &spec[b].1.path) {
                    (PathMatch::Prefix(x), PathMatch::Prefix(y)) => prefix_key(x) == prefix_key(y),
                    _ => false,
                };
                match (expected, got) {
                    (Some(e), Some(g)) if e != g => {
                        assert!(
                            same_bucket(e, g),
                            "path {path} {method}: expected {e}, got {g}"
                        )
                    }
                    (e, g) => assert_eq!(e.is_some(), g.is_some(), "path {path} {method}"),
                }
            }
        }
    }
}
