//! The compiled, immutable view of one config: route table, upstreams and pre-resolved metric handles.
//! A reload builds a new snapshot off the request path and swaps it in; requests in flight keep theirs.
//! State that must outlive a snapshot (target health, connection pools) lives in [`SharedState`].

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use flexgate_config::{self as config, Config};
use flexgate_telemetry::CoreMetrics;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, uri::Authority};
use parking_lot::Mutex;
use prometheus::Histogram;

use crate::access::RouteRequests;
use crate::limit::RouteLimit;
use crate::plugins::{PluginHost, RoutePlugins};
use crate::resilience::Resilience;
use crate::router::{HostMatch, Matcher, PathMatch, Router};
use crate::upstream::{ClientSettings, HttpClient, Outcome, TargetState, Upstream};

/// What a matched route does.
#[derive(Debug)]
pub enum RouteAction {
    Proxy(Arc<Upstream>),
    Respond {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
}

/// One route, compiled.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub action: RouteAction,
    /// The prefix to remove before forwarding, when `strip_prefix` is on.
    pub strip_prefix: Option<Box<str>>,
    pub preserve_host: bool,
    pub max_body: Option<u64>,
    pub duration: Histogram,
    pub requests: Arc<RouteRequests>,
    /// The Wasm plugin chain; `None` when the route binds no plugin (the hooks are skipped).
    pub plugins: Option<Arc<RoutePlugins>>,
    /// `rate_limit`, checked right after routing; `None` when the route has none.
    pub rate_limit: Option<Arc<RouteLimit>>,
}

/// Everything a request needs from the config, compiled.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub router: Router<Route>,
    pub upstreams: HashMap<String, Arc<Upstream>>,
    pub max_header_size: usize,
    pub access_log: bool,
    /// Label and duration histogram for requests that matched no route.
    pub no_route_name: Arc<str>,
    pub no_route_duration: Histogram,
    pub no_route_requests: Arc<RouteRequests>,
}

impl Snapshot {
    /// The compiled route named `name` (admin views; a linear scan, never on the request path).
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.router.routes().find(|r| &*r.name == name)
    }
}

/// A snapshot could not be compiled (the config passed validation, so this is rare: e.g. an address
/// that is valid YAML but not a valid URI authority).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

/// State shared by every snapshot of a process: survives reloads.
pub struct SharedState {
    pub metrics: CoreMetrics,
    /// Breakers, in-flight caps, rate limiters and the Redis backend (one set per process).
    pub resilience: Resilience,
    /// Loads plugin versions; `None` in a gateway built without a plugin runtime (then a config
    /// that binds plugins is refused).
    pub plugins: Option<PluginHost>,
    targets: Mutex<HashMap<(String, String), Arc<TargetState>>>,
    clients: Mutex<HashMap<String, (ClientSettings, HttpClient)>>,
}

impl SharedState {
    pub fn new(metrics: CoreMetrics, plugins: Option<PluginHost>) -> Self {
        Self {
            resilience: Resilience::new(&metrics.registry),
            metrics,
            plugins,
            targets: Mutex::default(),
            clients: Mutex::default(),
        }
    }

    /// Compiles `config` into a snapshot, reusing target state and pools of unchanged upstreams.
    pub async fn build(&self, config: Arc<Config>) -> Result<Snapshot, BuildError> {
        let mut chains = match &self.plugins {
            Some(host) => host.build_all(&config).await?,
            None if config.routes.iter().any(|r| !r.plugins.is_empty()) => {
                return Err(BuildError(
                    "plugins are bound but no plugin runtime runs".into(),
                ));
            }
            None => HashMap::new(),
        };
        let mut upstreams = HashMap::new();
        for u in &config.upstreams {
            upstreams.insert(u.name.clone(), Arc::new(self.upstream(u)?));
        }
        self.prune(&config);
        self.resilience.configure(&config)?;
        let mut routes = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let mut route = self.route(r, &upstreams)?;
            route.2.plugins = chains.remove(&r.name);
            routes.push(route);
        }
        Ok(Snapshot {
            router: Router::new(routes),
            upstreams,
            max_header_size: usize::try_from(config.server.max_header_size.0).unwrap_or(usize::MAX),
            access_log: config.log.access_log,
            no_route_name: Arc::from("no_route"),
            no_route_duration: self.metrics.route_duration("no_route"),
            no_route_requests: Arc::new(RouteRequests::new(
                self.metrics.http_requests.clone(),
                Arc::from("no_route"),
            )),
            config,
        })
    }

    fn upstream(&self, u: &config::Upstream) -> Result<Upstream, BuildError> {
        let mut targets = Vec::with_capacity(u.targets.len());
        {
            let mut known = self.targets.lock();
            for t in &u.targets {
                let key = (u.name.clone(), t.addr.clone());
                let state = match known.get(&key) {
                    Some(s) => s.clone(),
                    None => {
                        let authority: Authority = t.addr.parse().map_err(|e| {
                            BuildError(format!("upstream {:?}: target {:?}: {e}", u.name, t.addr))
                        })?;
                        let outcomes = Outcome::ALL.map(|o| {
                            self.metrics.upstream_requests.with_label_values(&[
                                &u.name,
                                &t.addr,
                                o.as_str(),
                            ])
                        });
                        let s = Arc::new(TargetState::new(&t.addr, authority, outcomes));
                        known.insert(key, s.clone());
                        s
                    }
                };
                targets.push(state);
            }
        }
        let settings = ClientSettings::of(u);
        let client = {
            let mut clients = self.clients.lock();
            match clients.get(&u.name) {
                Some((s, c)) if *s == settings => c.clone(),
                _ => {
                    let c = settings.build();
                    clients.insert(u.name.clone(), (settings, c.clone()));
                    c
                }
            }
        };
        let duration = self.metrics.upstream_duration.with_label_values(&[&u.name]);
        let resilience = self.resilience.upstream(u, &targets);
        Ok(Upstream::new(u, targets, client, duration).with_resilience(resilience))
    }

    /// Forgets targets and pools of upstreams no longer configured.
    fn prune(&self, config: &Config) {
        let mut targets = self.targets.lock();
        targets.retain(|(up, addr), _| {
            config
                .upstreams
                .iter()
                .any(|u| &u.name == up && u.targets.iter().any(|t| &t.addr == addr))
        });
        self.clients
            .lock()
            .retain(|name, _| config.upstreams.iter().any(|u| &u.name == name));
    }

    fn route(
        &self,
        r: &config::Route,
        upstreams: &HashMap<String, Arc<Upstream>>,
    ) -> Result<(HostMatch, Matcher, Route), BuildError> {
        let err = |what: String| BuildError(format!("route {:?}: {what}", r.name));
        let m = &r.matcher;
        let host = match m.host.as_deref() {
            None => HostMatch::Any,
            Some(h) => match h.strip_prefix('*') {
                Some(suffix) => HostMatch::Suffix(suffix.to_ascii_lowercase()),
                None => HostMatch::Exact(h.to_ascii_lowercase()),
            },
        };
        let path = match (&m.path, &m.path_prefix) {
            (Some(p), _) => PathMatch::Exact(p.as_str().into()),
            (None, Some(p)) => PathMatch::Prefix(p.as_str().into()),
            (None, None) => PathMatch::Any,
        };
        let methods = m
            .methods
            .iter()
            .map(|s| {
                Method::from_bytes(s.to_ascii_uppercase().as_bytes())
                    .map_err(|e| err(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let headers = m
            .headers
            .iter()
            .map(|(n, v)| {
                let name = HeaderName::from_bytes(n.as_bytes()).map_err(|e| err(e.to_string()))?;
                let value = HeaderValue::from_str(v).map_err(|e| err(e.to_string()))?;
                Ok((name, value))
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        let action = match (&r.upstream, &r.respond) {
            (Some(name), _) => RouteAction::Proxy(
                upstreams
                    .get(name)
                    .cloned()
                    .ok_or_else(|| err(format!("unknown upstream {name:?}")))?,
            ),
            (None, Some(resp)) => {
                let mut headers = HeaderMap::new();
                for (n, v) in &resp.headers {
                    headers.insert(
                        HeaderName::from_bytes(n.as_bytes()).map_err(|e| err(e.to_string()))?,
                        HeaderValue::from_str(v).map_err(|e| err(e.to_string()))?,
                    );
                }
                RouteAction::Respond {
                    status: StatusCode::from_u16(resp.status).map_err(|e| err(e.to_string()))?,
                    headers,
                    body: Bytes::from(resp.body.clone()),
                }
            }
            (None, None) => return Err(err("neither upstream nor respond".into())),
        };
        let route = Route {
            name: Arc::from(r.name.as_str()),
            action,
            strip_prefix: if r.strip_prefix {
                m.path_prefix.as_deref().map(Into::into)
            } else {
                None
            },
            preserve_host: r.preserve_host,
            max_body: r.max_body.map(|b| b.0),
            duration: self.metrics.route_duration(&r.name),
            requests: Arc::new(RouteRequests::new(
                self.metrics.http_requests.clone(),
                Arc::from(r.name.as_str()),
            )),
            plugins: None,
            rate_limit: self.resilience.route_limit(r)?,
        };
        Ok((
            host,
            Matcher {
                path,
                methods,
                headers,
            },
            route,
        ))
    }
}
