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
use wasmtime::component::{Resource, ResourceTable};

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
pub struct CallCtx {
    /// What every hook sees (`stash` is always `None` here; `on_response` adds its own).
    info: CallInfo,
    state: Mutex<CtxState>,
}

impl std::fmt::Debug for CallCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallCtx")
            .field("route", &self.info.route)
            .field("request_id", &self.info.request_id)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct CtxState {
    /// Per binding index: what the plugin stashed in `on_request` (sized on first use).
    stash: Vec<Option<String>>,
    /// How many bindings' `on_request` ran (those get `on_response`).
    entered: Option<usize>,
    /// Per binding index: the first failure of that binding in this request (even fail-open ones),
    /// so the caller can attribute errors and traps to plugin versions.
    failures: Vec<Option<FailureKind>>,
    /// Per binding index: the fresh instance of a `per_request` binding, kept from its
    /// `on_request` for its `on_response` (one instance per request, dropped with the context).
    parked: Vec<Option<Instance>>,
}

fn slot<T>(v: &mut Vec<Option<T>>, index: usize) -> &mut Option<T> {
    if v.len() <= index {
        v.resize_with(index + 1, || None);
    }
    &mut v[index]
}

/// `ip:port` (`[v6]:port`), without the formatting machinery for the common IPv4 case.
fn addr_string(addr: SocketAddr) -> String {
    fn push_num(out: &mut String, mut n: u32) {
        let mut buf = [0u8; 10];
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &b in &buf[i..] {
            out.push(char::from(b));
        }
    }
    match addr {
        SocketAddr::V4(v4) => {
            let mut out = String::with_capacity(21);
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_num(&mut out, u32::from(octet));
            }
            out.push(':');
            push_num(&mut out, u32::from(v4.port()));
            out
        }
        SocketAddr::V6(_) => addr.to_string(),
    }
}

impl CallCtx {
    /// Context for one request.
    pub fn new(client_addr: SocketAddr, route: &str, request_id: &str) -> Self {
        CallCtx {
            info: CallInfo {
                client_addr: addr_string(client_addr),
                route: route.to_string(),
                request_id: request_id.to_string(),
                stash: None,
            },
            state: Mutex::new(CtxState::default()),
        }
    }

    /// The request id given to plugins.
    pub fn request_id(&self) -> &str {
        &self.info.request_id
    }

    /// The first failure of the binding at `index` during this request, if any.
    pub fn failure(&self, index: usize) -> Option<FailureKind> {
        self.with_state(|s| s.failures.get(index).copied().flatten())
    }

    fn note_failure(&self, index: usize, kind: FailureKind) {
        self.with_state(|s| {
            slot(&mut s.failures, index).get_or_insert(kind);
        });
    }

    /// Keep `inst` for this request's `on_response`; returns an instance parked earlier in the
    /// same slot (a context reused without `on_response`), for the caller to retire.
    fn park(&self, index: usize, inst: Instance) -> Option<Instance> {
        self.with_state(|s| slot(&mut s.parked, index).replace(inst))
    }

    fn unpark(&self, index: usize) -> Option<Instance> {
        self.with_state(|s| s.parked.get_mut(index).and_then(Option::take))
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
    /// `init` refused this binding's config: every call fails at once with this reason.
    init_failure: Option<String>,
}

impl std::fmt::Debug for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Binding")
            .field("plugin", &self.plugin.name())
            .field("route", &self.route)
            .field("on_error", &self.on_error)
            .field("body", &self.body)
            .field("init_failure", &self.init_failure)
            .finish_non_exhaustive()
    }
}

/// Which hook a call is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    Request,
    Response,
}

impl Binding {
    /// Bind `plugin` to `route` with `config_json`. Runs `init` once in a fresh instance, so a
    /// config the plugin refuses is reported here ([`PluginError::Init`]; pooled plugins keep
    /// that instance warm). A gateway turns that error into [`Binding::failed`].
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
        let mut b = Self::build(plugin, route, config_json, on_error, body, None);
        if b.plugin.isolation == Isolation::Pooled {
            b.pool
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .push(inst);
        }
        Ok(b)
    }

    /// A binding whose `init` refused its config (`reason`): every hook call fails at once with
    /// [`FailureKind::Init`] (counted in `flexgate_plugin_traps_total{reason="init"}`), so a
    /// `fail_closed` route answers 500 and a `fail_open` route skips the plugin; nothing else is
    /// affected.
    pub fn failed(
        plugin: Arc<LoadedPlugin>,
        route: &str,
        reason: String,
        on_error: OnError,
        body: BodyMode,
    ) -> Binding {
        Self::build(plugin, route, String::new(), on_error, body, Some(reason))
    }

    fn build(
        plugin: Arc<LoadedPlugin>,
        route: &str,
        config: String,
        on_error: OnError,
        body: BodyMode,
        init_failure: Option<String>,
    ) -> Binding {
        let metrics = BindingMetrics::new(
            &plugin.shared.metrics,
            plugin.name(),
            plugin.version(),
            route,
        );
        Binding {
            plugin,
            route: Arc::from(route),
            config,
            on_error,
            body,
            pool: Mutex::new(Vec::new()),
            metrics,
            init_failure,
        }
    }

    /// The bound plugin.
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }

    /// Why `init` refused this binding's config, for a [`failed`](Self::failed) binding.
    pub fn init_failure(&self) -> Option<&str> {
        self.init_failure.as_deref()
    }

    /// The instance for a call: the one this request's `on_request` used (`per_request`), a warm
    /// one (`pooled`), or a fresh one.
    async fn acquire(&self, index: usize, ctx: &CallCtx, hook: Hook) -> Result<Instance, Failure> {
        if let Some(reason) = &self.init_failure {
            self.plugin.shared.m.traps[3].inc();
            return Err(Failure::new(FailureKind::Init, reason.clone()));
        }
        match self.plugin.isolation {
            Isolation::Pooled => {
                let warm = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
                if let Some(inst) = warm {
                    return Ok(inst);
                }
            }
            Isolation::PerRequest if hook == Hook::Response => {
                if let Some(inst) = ctx.unpark(index) {
                    return Ok(inst);
                }
            }
            Isolation::PerRequest => {}
        }
        self.plugin.instantiate(&self.config).await
    }

    /// After a call that did not trap: keep the instance for this request's `on_response`
    /// (`per_request`) or return it to the pool (`pooled`, unless it is due for recycling).
    fn release(&self, index: usize, ctx: &CallCtx, hook: Hook, mut inst: Instance) {
        match self.plugin.isolation {
            Isolation::PerRequest => match hook {
                Hook::Request => {
                    if let Some(old) = ctx.park(index, inst) {
                        self.plugin.retire(old);
                    }
                }
                Hook::Response => self.plugin.retire(inst),
            },
            Isolation::Pooled => {
                inst.uses += 1;
                if inst.uses < self.plugin.recycle_after {
                    let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
                    if pool.len() < self.plugin.max_idle {
                        pool.push(inst);
                        return;
                    }
                }
                self.plugin.retire(inst);
            }
        }
    }

    /// Per-call store setup: identity for log lines and the deadline. Returns the call's start.
    fn prepare(&self, inst: &mut Instance, ctx: &CallCtx) -> Instant {
        let data = inst.store.data_mut();
        if !Arc::ptr_eq(&data.route, &self.route) {
            data.route = self.route.clone();
        }
        data.request_id.clear();
        data.request_id.push_str(&ctx.info.request_id);
        self.plugin.arm(&mut inst.store)
    }

    async fn call_request(
        &self,
        index: usize,
        ctx: &CallCtx,
        parts: &mut http::request::Parts,
        body: Option<&mut Bytes>,
    ) -> Result<(Action, Option<String>), Failure> {
        let mut inst = self.acquire(index, ctx, Hook::Request).await?;
        let start = self.prepare(&mut inst, ctx);
        let res = Resource::<ReqState>::new_own(inst.req);
        let state = table_get(&mut inst.store.data_mut().table, &res)?;
        state.parts = std::mem::replace(parts, empty_request_parts());
        state.body = body.as_ref().map(|b| (*b).clone());
        state.body_changed = false;
        state.stash = None;
        state.undo = None;
        state.keep_undo = self.on_error == OnError::FailOpen;
        let borrow = Resource::<ReqState>::new_borrow(inst.req);
        let out = inst
            .on_request(self.plugin.is_sync(), &ctx.info, borrow)
            .await;
        self.plugin
            .shared
            .m
            .dur_request
            .observe(start.elapsed().as_secs_f64());
        self.plugin.after_call(&mut inst.store);
        let state = table_get(&mut inst.store.data_mut().table, &res)?;
        let failed = !matches!(out, Ok(Ok(_)));
        if failed && let Some(undo) = state.undo.take() {
            let (m, u, h) = *undo;
            (state.parts.method, state.parts.uri, state.parts.headers) = (m, u, h);
            state.body_changed = false;
        }
        *parts = std::mem::replace(&mut state.parts, empty_request_parts());
        let new_body = state.body.take().filter(|_| state.body_changed);
        let stash = state.stash.take();
        if let (Some(dst), Some(new)) = (body, new_body) {
            headers::fix_length(&mut parts.headers, new.len());
            *dst = new;
        }
        match out {
            Ok(Ok(action)) => {
                self.release(index, ctx, Hook::Request, inst);
                Ok((action, stash))
            }
            Ok(Err(msg)) => {
                self.release(index, ctx, Hook::Request, inst);
                Err(Failure::new(FailureKind::Error, msg))
            }
            // The instance is poisoned after a trap: drop it.
            Err(e) => Err(self.plugin.fail(&mut inst.store, e, false)),
        }
    }

    async fn call_response(
        &self,
        index: usize,
        ctx: &CallCtx,
        stash: Option<String>,
        parts: &mut http::response::Parts,
        body: Option<&mut Bytes>,
    ) -> Result<(), Failure> {
        let mut inst = self.acquire(index, ctx, Hook::Response).await?;
        let start = self.prepare(&mut inst, ctx);
        let original =
            (self.on_error == OnError::FailOpen).then(|| (parts.status, parts.headers.clone()));
        let res = Resource::<RespState>::new_own(inst.resp);
        let state = table_get(&mut inst.store.data_mut().table, &res)?;
        state.parts = std::mem::replace(parts, empty_response_parts());
        state.body = body.as_ref().map(|b| (*b).clone());
        state.body_changed = false;
        let borrow = Resource::<RespState>::new_borrow(inst.resp);
        let with_stash;
        let info = match stash {
            None => &ctx.info,
            Some(stash) => {
                with_stash = CallInfo {
                    stash: Some(stash),
                    ..ctx.info.clone()
                };
                &with_stash
            }
        };
        let out = inst.on_response(self.plugin.is_sync(), info, borrow).await;
        self.plugin
            .shared
            .m
            .dur_response
            .observe(start.elapsed().as_secs_f64());
        self.plugin.after_call(&mut inst.store);
        let state = table_get(&mut inst.store.data_mut().table, &res)?;
        let ok = matches!(out, Ok(Ok(())));
        if !ok && let Some((status, hdrs)) = original {
            state.parts.status = status;
            state.parts.headers = hdrs;
            state.body_changed = false;
        }
        *parts = std::mem::replace(&mut state.parts, empty_response_parts());
        let new_body = state.body.take().filter(|_| state.body_changed);
        if let (Some(dst), Some(new)) = (body, new_body) {
            headers::fix_length(&mut parts.headers, new.len());
            *dst = new;
        }
        match out {
            Ok(Ok(())) => {
                self.release(index, ctx, Hook::Response, inst);
                Ok(())
            }
            Ok(Err(msg)) => {
                self.release(index, ctx, Hook::Response, inst);
                Err(Failure::new(FailureKind::Error, msg))
            }
            Err(e) => Err(self.plugin.fail(&mut inst.store, e, false)),
        }
    }
}

/// The instance's request/response resource (a host bug if it is missing).
fn table_get<'a, T: 'static>(
    table: &'a mut ResourceTable,
    res: &Resource<T>,
) -> Result<&'a mut T, Failure> {
    table
        .get_mut(res)
        .map_err(|e| Failure::new(FailureKind::Host, e.to_string()))
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
        ctx.with_state(|s| s.stash.clear());
        for (i, b) in self.bindings.iter().enumerate() {
            ctx.with_state(|s| s.entered = Some(i + 1));
            let body_for = match b.body {
                BodyMode::Buffer => body.as_deref_mut(),
                BodyMode::None => None,
            };
            let result = b.call_request(i, ctx, parts, body_for).await;
            let m = &b.metrics.calls[0];
            match result {
                Ok((Action::Continue, stash)) => {
                    m[0].inc();
                    if stash.is_some() {
                        ctx.with_state(|s| *slot(&mut s.stash, i) = stash);
                    }
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
            request_id = ctx.request_id(), hook, kind = f.kind.as_str(), reason = %f.reason,
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
            // A binding whose `init` failed already failed this request in `on_request`.
            if b.init_failure.is_some() && ctx.failure(i).is_some() {
                continue;
            }
            let stash = ctx.with_state(|s| s.stash.get_mut(i).and_then(Option::take));
            let body_for = match b.body {
                BodyMode::Buffer => body.as_deref_mut(),
                BodyMode::None => None,
            };
            let m = &b.metrics.calls[1];
            match b.call_response(i, ctx, stash, parts, body_for).await {
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

#[cfg(test)]
mod tests {
    use super::addr_string;
    use std::net::SocketAddr;

    #[test]
    fn client_addr_is_formatted_like_display() {
        for a in [
            "192.0.2.7:40000",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.1.20.255:8",
            "[2001:db8::1]:443",
            "[::ffff:192.0.2.1]:80",
        ] {
            let addr: SocketAddr = a.parse().expect("addr");
            assert_eq!(addr_string(addr), addr.to_string());
        }
    }
}
