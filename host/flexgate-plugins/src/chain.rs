//! Route plugin chains: bindings (plugin + route config), the request/response hooks, pools.

use crate::bindings::{Action, CallInfo, Reply};
use crate::error::{ChainError, FailureKind, PluginError};
use crate::headers;
use crate::metrics::BindingMetrics;
use crate::plugin::{Failure, Instance, Isolation, LoadedPlugin, init_error};
use crate::state::{ReqState, RespState};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wasmtime::component::Resource;

/// Failure policy of a binding (mirrors the config's `on_error`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnError {
    /// The chain fails: the gateway answers 500 with the request id.
    #[default]
    FailClosed,
    /// Skip this plugin for this request (its partial edits are undone).
    FailOpen,
}

/// Whether the plugin sees bodies (mirrors the config's `body`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BodyMode {
    /// Headers only; bodies stream through.
    #[default]
    None,
    /// The gateway buffers bodies (up to `max_body`) and the plugin may read/replace them.
    Buffer,
}

/// What the request hooks decided.
#[derive(Debug)]
pub enum RequestOutcome {
    /// Forward (the possibly modified) request upstream.
    Continue,
    /// A plugin answered; send this to the client. `on_response` may still be called with it:
    /// then only the plugins before the responder see it.
    Respond(http::Response<Bytes>),
}

/// Per-request context shared by `on_request` and `on_response`.
#[derive(Debug)]
pub struct CallCtx {
    client_addr: String,
    route: String,
    request_id: String,
    state: Mutex<CtxState>,
}

#[derive(Debug, Default)]
struct CtxState {
    /// Per binding index: what the plugin stashed in `on_request`.
    stash: Vec<Option<String>>,
    /// How many bindings' `on_request` ran (those get `on_response`).
    entered: Option<usize>,
    /// Per binding index: the first failure of that binding in this request (even fail-open ones),
    /// so the caller can attribute errors and traps to plugin versions.
    failures: Vec<Option<FailureKind>>,
}

impl CallCtx {
    /// Context for one request.
    pub fn new(client_addr: SocketAddr, route: &str, request_id: &str) -> Self {
        CallCtx {
            client_addr: client_addr.to_string(),
            route: route.to_string(),
            request_id: request_id.to_string(),
            state: Mutex::new(CtxState::default()),
        }
    }

    /// The request id given to plugins.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    fn info(&self, stash: Option<String>) -> CallInfo {
        CallInfo {
            client_addr: self.client_addr.clone(),
            route: self.route.clone(),
            request_id: self.request_id.clone(),
            stash,
        }
    }

    /// The first failure of the binding at `index` during this request, if any.
    pub fn failure(&self, index: usize) -> Option<FailureKind> {
        self.with_state(|s| s.failures.get(index).copied().flatten())
    }

    fn note_failure(&self, index: usize, kind: FailureKind) {
        self.with_state(|s| {
            if s.failures.len() <= index {
                s.failures.resize(index + 1, None);
            }
            s.failures[index].get_or_insert(kind);
        });
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut CtxState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One plugin bound to a route with its config; holds the warm instance pool.
pub struct Binding {
    plugin: Arc<LoadedPlugin>,
    route: Arc<str>,
    config: String,
    on_error: OnError,
    body: BodyMode,
    pool: Mutex<Vec<Instance>>,
    metrics: BindingMetrics,
}

impl std::fmt::Debug for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Binding")
            .field("plugin", &self.plugin.name())
            .field("route", &self.route)
            .field("on_error", &self.on_error)
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

impl Binding {
    /// Bind `plugin` to `route` with `config_json`. Runs `init` once in a fresh instance, so a
    /// config the plugin refuses is a load-time error (pooled plugins keep that instance warm).
    pub async fn new(
        plugin: Arc<LoadedPlugin>,
        route: &str,
        config_json: String,
        on_error: OnError,
        body: BodyMode,
    ) -> Result<Binding, PluginError> {
        let inst = plugin
            .instantiate(&config_json)
            .await
            .map_err(|f| init_error(plugin.name(), f))?;
        let metrics = BindingMetrics::new(
            &plugin.shared.metrics,
            plugin.name(),
            plugin.version(),
            route,
        );
        let pool = match plugin.isolation {
            Isolation::Pooled => vec![inst],
            Isolation::PerRequest => Vec::new(),
        };
        Ok(Binding {
            plugin,
            route: Arc::from(route),
            config: config_json,
            on_error,
            body,
            pool: Mutex::new(pool),
            metrics,
        })
    }

    /// The bound plugin.
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }

    async fn acquire(&self) -> Result<Instance, Failure> {
        if self.plugin.isolation == Isolation::Pooled {
            let warm = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            if let Some(inst) = warm {
                return Ok(inst);
            }
        }
        self.plugin.instantiate(&self.config).await
    }

    fn release(&self, mut inst: Instance) {
        inst.uses += 1;
        if self.plugin.isolation == Isolation::PerRequest || inst.uses >= self.plugin.recycle_after
        {
            return;
        }
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < self.plugin.max_idle {
            pool.push(inst);
        }
    }

    fn prepare(&self, inst: &mut Instance, ctx: &CallCtx) {
        let data = inst.store.data_mut();
        data.route = self.route.clone();
        data.request_id.clear();
        data.request_id.push_str(&ctx.request_id);
        self.plugin.arm(&mut inst.store);
    }

    async fn call_request(
        &self,
        ctx: &CallCtx,
        parts: &mut http::request::Parts,
        body: Option<&mut Bytes>,
    ) -> Result<(Action, Option<String>), Failure> {
        let mut inst = self.acquire().await?;
        self.prepare(&mut inst, ctx);
        let state = ReqState {
            parts: std::mem::replace(parts, empty_request_parts()),
            body: body.as_ref().map(|b| (*b).clone()),
            body_changed: false,
            stash: None,
            undo: None,
            keep_undo: self.on_error == OnError::FailOpen,
        };
        let res = match inst.store.data_mut().table.push(state) {
            Ok(r) => r,
            Err(e) => return Err(Failure::new(FailureKind::Host, e.to_string())),
        };
        let borrow = Resource::<ReqState>::new_borrow(res.rep());
        let start = Instant::now();
        let out = inst
            .bindings
            .flexgate_plugin_handler()
            .call_on_request(&mut inst.store, &ctx.info(None), borrow)
            .await;
        self.plugin
            .shared
            .m
            .dur_request
            .observe(start.elapsed().as_secs_f64());
        self.plugin.after_call(&mut inst.store);
        let mut state = match inst.store.data_mut().table.delete(res) {
            Ok(s) => s,
            Err(e) => return Err(Failure::new(FailureKind::Host, e.to_string())),
        };
        let failed = !matches!(out, Ok(Ok(_)));
        if failed && let Some(undo) = state.undo.take() {
            let (m, u, h) = *undo;
            (state.parts.method, state.parts.uri, state.parts.headers) = (m, u, h);
            state.body_changed = false;
        }
        *parts = state.parts;
        if state.body_changed
            && let (Some(dst), Some(new)) = (body, state.body)
        {
            headers::fix_length(&mut parts.headers, new.len());
            *dst = new;
        }
        match out {
            Ok(Ok(action)) => {
                self.release(inst);
                Ok((action, state.stash))
            }
            Ok(Err(msg)) => {
                self.release(inst);
                Err(Failure::new(FailureKind::Error, msg))
            }
            // The instance is poisoned after a trap: drop it.
            Err(e) => Err(self.plugin.fail(&mut inst.store, e, false)),
        }
    }

    async fn call_response(
        &self,
        ctx: &CallCtx,
        stash: Option<String>,
        parts: &mut http::response::Parts,
        body: Option<&mut Bytes>,
    ) -> Result<(), Failure> {
        let mut inst = self.acquire().await?;
        self.prepare(&mut inst, ctx);
        let original =
            (self.on_error == OnError::FailOpen).then(|| (parts.status, parts.headers.clone()));
        let state = RespState {
            parts: std::mem::replace(parts, empty_response_parts()),
            body: body.as_ref().map(|b| (*b).clone()),
            body_changed: false,
        };
        let res = match inst.store.data_mut().table.push(state) {
            Ok(r) => r,
            Err(e) => return Err(Failure::new(FailureKind::Host, e.to_string())),
        };
        let borrow = Resource::<RespState>::new_borrow(res.rep());
        let start = Instant::now();
        let out = inst
            .bindings
            .flexgate_plugin_handler()
            .call_on_response(&mut inst.store, &ctx.info(stash), borrow)
            .await;
        self.plugin
            .shared
            .m
            .dur_response
            .observe(start.elapsed().as_secs_f64());
        self.plugin.after_call(&mut inst.store);
        let mut state = match inst.store.data_mut().table.delete(res) {
            Ok(s) => s,
            Err(e) => return Err(Failure::new(FailureKind::Host, e.to_string())),
        };
        let ok = matches!(out, Ok(Ok(())));
        if !ok && let Some((status, hdrs)) = original {
            state.parts.status = status;
            state.parts.headers = hdrs;
            state.body_changed = false;
        }
        *parts = state.parts;
        if state.body_changed
            && let (Some(dst), Some(new)) = (body, state.body)
        {
            headers::fix_length(&mut parts.headers, new.len());
            *dst = new;
        }
        match out {
            Ok(Ok(())) => {
                self.release(inst);
                Ok(())
            }
            Ok(Err(msg)) => {
                self.release(inst);
                Err(Failure::new(FailureKind::Error, msg))
            }
            Err(e) => Err(self.plugin.fail(&mut inst.store, e, false)),
        }
    }
}

fn empty_request_parts() -> http::request::Parts {
    http::Request::new(()).into_parts().0
}

fn empty_response_parts() -> http::response::Parts {
    http::Response::new(()).into_parts().0
}

/// Turn a plugin reply into an HTTP response; protected/invalid headers are dropped.
fn reply_to_response(reply: Reply) -> Result<http::Response<Bytes>, Failure> {
    let status = http::StatusCode::from_u16(reply.status).map_err(|_| {
        Failure::new(
            FailureKind::Error,
            format!("invalid reply status {}", reply.status),
        )
    })?;
    let mut resp = http::Response::new(Bytes::from(reply.body));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers::from_pairs(&reply.headers);
    let len = resp.body().len();
    headers::fix_length(resp.headers_mut(), len);
    Ok(resp)
}

/// The plugins of one route, in order. Immutable; build once per config snapshot and share.
#[derive(Debug, Default)]
pub struct Chain {
    bindings: Vec<Arc<Binding>>,
    buffer_request: bool,
    buffer_response: bool,
}

impl Chain {
    /// A chain running `bindings` in order for requests and in reverse for responses.
    pub fn new(bindings: Vec<Arc<Binding>>) -> Self {
        let buffer = bindings.iter().any(|b| b.body == BodyMode::Buffer);
        Chain {
            bindings,
            buffer_request: buffer,
            buffer_response: buffer,
        }
    }

    /// No plugins: the proxy can skip the hooks entirely.
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// Whether the proxy must buffer the request body (some binding uses `body: buffer`).
    pub fn buffers_request_body(&self) -> bool {
        self.buffer_request
    }

    /// Whether the proxy must buffer the response body.
    pub fn buffers_response_body(&self) -> bool {
        self.buffer_response
    }

    /// The bindings, in order.
    pub fn bindings(&self) -> &[Arc<Binding>] {
        &self.bindings
    }

    fn chain_error(b: &Binding, f: Failure) -> ChainError {
        ChainError {
            plugin: b.plugin.name().to_string(),
            kind: f.kind,
            reason: f.reason,
        }
    }

    /// Run every plugin's `on_request` in order. `body` is the buffered request body when
    /// [`buffers_request_body`](Self::buffers_request_body); only `body: buffer` bindings see it.
    pub async fn on_request(
        &self,
        ctx: &CallCtx,
        parts: &mut http::request::Parts,
        mut body: Option<&mut Bytes>,
    ) -> Result<RequestOutcome, ChainError> {
        ctx.with_state(|s| s.stash = vec![None; self.bindings.len()]);
        for (i, b) in self.bindings.iter().enumerate() {
            ctx.with_state(|s| s.entered = Some(i + 1));
            let body_for = match b.body {
                BodyMode::Buffer => body.as_deref_mut(),
                BodyMode::None => None,
            };
            let result = b.call_request(ctx, parts, body_for).await;
            let m = &b.metrics.calls[0];
            match result {
                Ok((Action::Continue, stash)) => {
                    m[0].inc();
                    ctx.with_state(|s| s.stash[i] = stash);
                }
                Ok((Action::Respond(reply), _)) => match reply_to_response(reply) {
                    Ok(resp) => {
                        m[1].inc();
                        ctx.with_state(|s| s.entered = Some(i));
                        return Ok(RequestOutcome::Respond(resp));
                    }
                    Err(f) => {
                        m[2].inc();
                        self.failed(i, b, ctx, f, "on_request")?;
                    }
                },
                Err(f) => {
                    m[2].inc();
                    self.failed(i, b, ctx, f, "on_request")?;
                }
            }
        }
        Ok(RequestOutcome::Continue)
    }

    fn failed(
        &self,
        i: usize,
        b: &Binding,
        ctx: &CallCtx,
        f: Failure,
        hook: &str,
    ) -> Result<(), ChainError> {
        ctx.note_failure(i, f.kind);
        tracing::warn!(plugin = b.plugin.name(), version = b.plugin.version(), route = %b.route,
            request_id = ctx.request_id, hook, kind = f.kind.as_str(), reason = %f.reason,
            fail_open = b.on_error == OnError::FailOpen, "plugin failed");
        match b.on_error {
            OnError::FailOpen => Ok(()),
            OnError::FailClosed => Err(Self::chain_error(b, f)),
        }
    }

    /// Run `on_response` in reverse order over the plugins whose `on_request` ran (all of them
    /// when `on_request` was not called).
    pub async fn on_response(
        &self,
        ctx: &CallCtx,
        parts: &mut http::response::Parts,
        mut body: Option<&mut Bytes>,
    ) -> Result<(), ChainError> {
        let entered = ctx.with_state(|s| s.entered).unwrap_or(self.bindings.len());
        for i in (0..entered.min(self.bindings.len())).rev() {
            let b = &self.bindings[i];
            let stash = ctx.with_state(|s| s.stash.get_mut(i).and_then(Option::take));
            let body_for = match b.body {
                BodyMode::Buffer => body.as_deref_mut(),
                BodyMode::None => None,
            };
            let m = &b.metrics.calls[1];
            match b.call_response(ctx, stash, parts, body_for).await {
                Ok(()) => m[0].inc(),
                Err(f) => {
                    m[2].inc();
                    self.failed(i, b, ctx, f, "on_response")?;
                }
            }
        }
        Ok(())
    }
}
