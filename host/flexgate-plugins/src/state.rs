//! Per-instance store data and the host side of the WIT imports.

use crate::bindings::flexgate::plugin::{host, types};
use crate::capture::Capture;
use crate::headers;
use crate::plugin::PluginShared;
use crate::ticker::CallSlot;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Largest value `request.stash` keeps.
const MAX_STASH: usize = 4096;

/// Everything a `Store` holds for one plugin instance.
pub(crate) struct StoreState {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemLimiter,
    pub(crate) capture: Capture,
    pub(crate) shared: Arc<PluginShared>,
    /// Route and request id of the call in progress, for log lines.
    pub(crate) route: Arc<str>,
    pub(crate) request_id: String,
    /// When the call in progress runs out of time (wall clock; see `LoadedPlugin::arm`).
    pub(crate) deadline: Option<Instant>,
    /// The same deadline, where the epoch ticker sees it.
    pub(crate) slot: Arc<CallSlot>,
}

impl StoreState {
    /// Deny-by-default WASI: no preopens, env, args or sockets; stdout/stderr captured.
    pub(crate) fn new(shared: Arc<PluginShared>, memory_limit: usize, slot: Arc<CallSlot>) -> Self {
        let capture = Capture::new();
        let wasi = WasiCtxBuilder::new()
            .stdout(capture.clone())
            .stderr(capture.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        StoreState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemLimiter::new(memory_limit),
            capture,
            shared,
            route: Arc::from(""),
            request_id: String::new(),
            deadline: None,
            slot,
        }
    }
}

impl StoreState {
    /// Ready for a new instance: a fresh resource table, no captured output, limits reset. The
    /// WASI context (no files, env or sockets; output to the capture) is kept.
    pub(crate) fn reset(&mut self) {
        self.table = ResourceTable::new();
        self.limiter.peak = 0;
        self.limiter.hit = false;
        let _ = self.capture.take();
        self.request_id.clear();
        self.deadline = None;
        self.slot.end();
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps linear memory growth and remembers whether the cap was hit (to classify the trap as
/// `memory`) and the high-water mark (for `flexgate_plugin_memory_bytes`).
pub(crate) struct MemLimiter {
    limit: usize,
    pub(crate) peak: usize,
    pub(crate) hit: bool,
}

impl MemLimiter {
    fn new(limit: usize) -> Self {
        MemLimiter {
            limit,
            peak: 0,
            hit: false,
        }
    }
}

impl wasmtime::ResourceLimiter for MemLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// What the plugin may change on the request, plus a copy-on-write snapshot for `fail_open`.
pub struct ReqState {
    pub(crate) parts: http::request::Parts,
    pub(crate) body: Option<Bytes>,
    pub(crate) body_changed: bool,
    pub(crate) stash: Option<String>,
    /// With `fail_open`: the original method/uri/headers, taken before the first change so a
    /// failing plugin's partial edits can be undone.
    pub(crate) undo: Option<Box<(http::Method, http::Uri, http::HeaderMap)>>,
    pub(crate) keep_undo: bool,
}

impl ReqState {
    /// The placeholder an instance keeps between calls.
    pub(crate) fn empty() -> Self {
        ReqState {
            parts: http::Request::new(()).into_parts().0,
            body: None,
            body_changed: false,
            stash: None,
            undo: None,
            keep_undo: false,
        }
    }

    fn before_change(&mut self) {
        if self.keep_undo && self.undo.is_none() {
            let p = &self.parts;
            self.undo = Some(Box::new((
                p.method.clone(),
                p.uri.clone(),
                p.headers.clone(),
            )));
        }
    }

    fn set_uri(&mut self, path: Option<&str>, query: Option<Option<&str>>) {
        let cur = &self.parts.uri;
        let path = path.unwrap_or(cur.path());
        let query = query.unwrap_or(cur.query());
        if path == cur.path() && query == cur.query() {
            // Unchanged (e.g. a rewrite rule that keeps the path): nothing to rebuild.
            return;
        }
        if !path.starts_with('/') {
            tracing::debug!(path, "plugin set a path not starting with '/'; ignored");
            return;
        }
        let pq = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        let mut uri_parts = cur.clone().into_parts();
        match pq.parse::<http::uri::PathAndQuery>() {
            Ok(pq) => uri_parts.path_and_query = Some(pq),
            Err(_) => {
                tracing::debug!("plugin set an invalid path/query; ignored");
                return;
            }
        }
        match http::Uri::from_parts(uri_parts) {
            Ok(uri) => {
                self.before_change();
                self.parts.uri = uri;
            }
            Err(_) => tracing::debug!("plugin set an invalid path/query; ignored"),
        }
    }
}

/// What the plugin may change on the response.
pub struct RespState {
    pub(crate) parts: http::response::Parts,
    pub(crate) body: Option<Bytes>,
    pub(crate) body_changed: bool,
}

impl RespState {
    /// The placeholder an instance keeps between calls.
    pub(crate) fn empty() -> Self {
        RespState {
            parts: http::Response::new(()).into_parts().0,
            body: None,
            body_changed: false,
        }
    }
}

type R<T> = wasmtime::Result<T>;

impl StoreState {
    fn req(&mut self, r: &Resource<ReqState>) -> R<&mut ReqState> {
        Ok(self.table.get_mut(r)?)
    }
    fn resp(&mut self, r: &Resource<RespState>) -> R<&mut RespState> {
        Ok(self.table.get_mut(r)?)
    }
}

impl types::Host for StoreState {}

impl types::HostRequest for StoreState {
    fn method(&mut self, r: Resource<ReqState>) -> R<String> {
        Ok(self.req(&r)?.parts.method.as_str().to_string())
    }
    fn set_method(&mut self, r: Resource<ReqState>, method: String) -> R<()> {
        let s = self.req(&r)?;
        match http::Method::from_bytes(method.as_bytes()) {
            Ok(m) => {
                s.before_change();
                s.parts.method = m;
            }
            Err(_) => tracing::debug!(method, "plugin set an invalid method; ignored"),
        }
        Ok(())
    }
    fn path(&mut self, r: Resource<ReqState>) -> R<String> {
        Ok(self.req(&r)?.parts.uri.path().to_string())
    }
    fn set_path(&mut self, r: Resource<ReqState>, path: String) -> R<()> {
        self.req(&r)?.set_uri(Some(&path), None);
        Ok(())
    }
    fn query(&mut self, r: Resource<ReqState>) -> R<Option<String>> {
        Ok(self.req(&r)?.parts.uri.query().map(str::to_string))
    }
    fn set_query(&mut self, r: Resource<ReqState>, query: Option<String>) -> R<()> {
        self.req(&r)?.set_uri(None, Some(query.as_deref()));
        Ok(())
    }
    fn header(&mut self, r: Resource<ReqState>, name: String) -> R<Option<String>> {
        Ok(headers::get(&self.req(&r)?.parts.headers, &name))
    }
    fn header_all(&mut self, r: Resource<ReqState>, name: String) -> R<Vec<String>> {
        Ok(headers::get_all(&self.req(&r)?.parts.headers, &name))
    }
    fn headers(&mut self, r: Resource<ReqState>) -> R<Vec<(String, String)>> {
        Ok(headers::all(&self.req(&r)?.parts.headers))
    }
    fn set_header(&mut self, r: Resource<ReqState>, name: String, value: String) -> R<()> {
        let s = self.req(&r)?;
        s.before_change();
        headers::set(&mut s.parts.headers, &name, &value);
        Ok(())
    }
    fn append_header(&mut self, r: Resource<ReqState>, name: String, value: String) -> R<()> {
        let s = self.req(&r)?;
        s.before_change();
        headers::append(&mut s.parts.headers, &name, &value);
        Ok(())
    }
    fn remove_header(&mut self, r: Resource<ReqState>, name: String) -> R<()> {
        let s = self.req(&r)?;
        s.before_change();
        headers::remove(&mut s.parts.headers, &name);
        Ok(())
    }
    fn body(&mut self, r: Resource<ReqState>) -> R<Option<Vec<u8>>> {
        Ok(self.req(&r)?.body.as_ref().map(|b| b.to_vec()))
    }
    fn set_body(&mut self, r: Resource<ReqState>, body: Vec<u8>) -> R<()> {
        let s = self.req(&r)?;
        if s.body.is_some() {
            s.body = Some(Bytes::from(body));
            s.body_changed = true;
        }
        Ok(())
    }
    fn stash(&mut self, r: Resource<ReqState>, mut value: String) -> R<()> {
        if value.len() > MAX_STASH {
            let mut cut = MAX_STASH;
            while !value.is_char_boundary(cut) {
                cut -= 1;
            }
            value.truncate(cut);
        }
        self.req(&r)?.stash = Some(value);
        Ok(())
    }
    fn drop(&mut self, r: Resource<ReqState>) -> R<()> {
        // Only borrows are handed to guests; an owned drop means a host bug or a forged handle.
        self.table.delete(r)?;
        Ok(())
    }
}

impl types::HostResponse for StoreState {
    fn status(&mut self, r: Resource<RespState>) -> R<u16> {
        Ok(self.resp(&r)?.parts.status.as_u16())
    }
    fn set_status(&mut self, r: Resource<RespState>, status: u16) -> R<()> {
        match http::StatusCode::from_u16(status) {
            Ok(s) => self.resp(&r)?.parts.status = s,
            Err(_) => tracing::debug!(status, "plugin set an invalid status; ignored"),
        }
        Ok(())
    }
    fn header(&mut self, r: Resource<RespState>, name: String) -> R<Option<String>> {
        Ok(headers::get(&self.resp(&r)?.parts.headers, &name))
    }
    fn header_all(&mut self, r: Resource<RespState>, name: String) -> R<Vec<String>> {
        Ok(headers::get_all(&self.resp(&r)?.parts.headers, &name))
    }
    fn headers(&mut self, r: Resource<RespState>) -> R<Vec<(String, String)>> {
        Ok(headers::all(&self.resp(&r)?.parts.headers))
    }
    fn set_header(&mut self, r: Resource<RespState>, name: String, value: String) -> R<()> {
        headers::set(&mut self.resp(&r)?.parts.headers, &name, &value);
        Ok(())
    }
    fn append_header(&mut self, r: Resource<RespState>, name: String, value: String) -> R<()> {
        headers::append(&mut self.resp(&r)?.parts.headers, &name, &value);
        Ok(())
    }
    fn remove_header(&mut self, r: Resource<RespState>, name: String) -> R<()> {
        headers::remove(&mut self.resp(&r)?.parts.headers, &name);
        Ok(())
    }
    fn body(&mut self, r: Resource<RespState>) -> R<Option<Vec<u8>>> {
        Ok(self.resp(&r)?.body.as_ref().map(|b| b.to_vec()))
    }
    fn set_body(&mut self, r: Resource<RespState>, body: Vec<u8>) -> R<()> {
        let s = self.resp(&r)?;
        if s.body.is_some() {
            s.body = Some(Bytes::from(body));
            s.body_changed = true;
        }
        Ok(())
    }
    fn drop(&mut self, r: Resource<RespState>) -> R<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl host::Host for StoreState {
    fn log(&mut self, level: host::Level, message: String, fields: Vec<(String, String)>) -> R<()> {
        self.shared
            .guest_log(level, &message, &fields, &self.route, &self.request_id);
        Ok(())
    }
    fn counter_add(&mut self, name: String, value: u64) -> R<()> {
        self.shared.custom_counter(&name, value);
        Ok(())
    }
    fn histogram_observe(&mut self, name: String, value: f64) -> R<()> {
        self.shared.custom_observe(&name, value);
        Ok(())
    }
}
