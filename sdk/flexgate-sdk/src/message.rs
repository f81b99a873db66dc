//! `Request` and `Response`: one API over two backings.
//!
//! Inside Wasm, the hook's request/response is a *host resource*: every accessor is a call into
//! the host and only what the plugin asks for is copied into guest memory. Built with
//! `Request::new`/`Response::new` (replies, and native unit tests) they are plain Rust values.

use crate::Headers;
use crate::prelude::*;
use core::marker::PhantomData;

#[cfg(target_arch = "wasm32")]
use crate::bindings::flexgate::plugin::types as wit;

/// Plain-Rust request, used natively and for tests.
#[derive(Debug, Clone, Default)]
struct OwnedRequest {
    method: String,
    path: String,
    query: Option<String>,
    headers: Headers,
    body: Option<Vec<u8>>,
    stash: Option<String>,
}

enum ReqInner<'a> {
    Owned(Box<OwnedRequest>, PhantomData<&'a ()>),
    #[cfg(target_arch = "wasm32")]
    Host(&'a wit::Request),
}

/// The client request a plugin sees in `on_request` (method, path, query, headers, body).
///
/// Setters take effect on the request sent upstream. The host ignores changes to hop-by-hop
/// headers and `content-length`, and fixes `content-length` itself when the body changes.
pub struct Request<'a> {
    inner: ReqInner<'a>,
}

impl core::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method())
            .field("path", &self.path())
            .field("query", &self.query())
            .finish_non_exhaustive()
    }
}

macro_rules! dispatch {
    ($self:ident, $owned:ident => $o:expr, $host:ident => $h:expr) => {
        match &$self.inner {
            ReqInner::Owned($owned, _) => $o,
            #[cfg(target_arch = "wasm32")]
            ReqInner::Host($host) => $h,
        }
    };
}
macro_rules! dispatch_mut {
    ($self:ident, $owned:ident => $o:expr, $host:ident => $h:expr) => {
        match &mut $self.inner {
            ReqInner::Owned($owned, _) => $o,
            #[cfg(target_arch = "wasm32")]
            ReqInner::Host($host) => $h,
        }
    };
}

impl Request<'static> {
    /// A plain request (for unit tests): `Request::new("GET", "/users/1")`.
    pub fn new(method: &str, path: &str) -> Self {
        let owned = OwnedRequest {
            method: method.to_string(),
            path: path.to_string(),
            ..OwnedRequest::default()
        };
        Request {
            inner: ReqInner::Owned(Box::new(owned), PhantomData),
        }
    }

    /// Builder: set the query string (without `?`).
    pub fn with_query(mut self, query: &str) -> Self {
        self.set_query(Some(query));
        self
    }

    /// Builder: append a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.append_header(name, value);
        self
    }

    /// Builder: set a buffered body (as the host does with `body: buffer`).
    #[allow(irrefutable_let_patterns)]
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        if let ReqInner::Owned(o, _) = &mut self.inner {
            o.body = Some(body.into());
        }
        self
    }
}

impl<'a> Request<'a> {
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn from_host(r: &'a wit::Request) -> Self {
        Request {
            inner: ReqInner::Host(r),
        }
    }

    /// HTTP method, e.g. `GET`.
    pub fn method(&self) -> String {
        dispatch!(self, o => o.method.clone(), h => h.method())
    }
    /// Change the method sent upstream.
    pub fn set_method(&mut self, method: &str) {
        dispatch_mut!(self, o => o.method = method.to_string(), h => h.set_method(method))
    }
    /// Path without the query.
    pub fn path(&self) -> String {
        dispatch!(self, o => o.path.clone(), h => h.path())
    }
    /// Change the path sent upstream.
    pub fn set_path(&mut self, path: &str) {
        dispatch_mut!(self, o => o.path = path.to_string(), h => h.set_path(path))
    }
    /// Raw query string without `?`.
    pub fn query(&self) -> Option<String> {
        dispatch!(self, o => o.query.clone(), h => h.query())
    }
    /// Replace (or with `None`, drop) the query string.
    pub fn set_query(&mut self, query: Option<&str>) {
        dispatch_mut!(self, o => o.query = query.map(str::to_string), h => h.set_query(query))
    }
    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<String> {
        dispatch!(self, o => o.headers.get(name).map(str::to_string), h => h.header(name))
    }
    /// All values of a header.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        dispatch!(self,
            o => o.headers.get_all(name).into_iter().map(str::to_string).collect(),
            h => h.header_all(name))
    }
    /// A copy of every header. Prefer `header()` when only a few are needed.
    pub fn headers(&self) -> Headers {
        dispatch!(self, o => o.headers.clone(), h => Headers::from(h.headers()))
    }
    /// Replace every value of a header.
    pub fn set_header(&mut self, name: &str, value: &str) {
        dispatch_mut!(self, o => o.headers.set(name, value), h => h.set_header(name, value))
    }
    /// Add a header value.
    pub fn append_header(&mut self, name: &str, value: &str) {
        dispatch_mut!(self, o => o.headers.append(name, value), h => h.append_header(name, value))
    }
    /// Remove a header.
    pub fn remove_header(&mut self, name: &str) {
        dispatch_mut!(self, o => o.headers.remove(name), h => h.remove_header(name))
    }
    /// The buffered body; `None` unless the binding uses `body: buffer`.
    pub fn body(&self) -> Option<Vec<u8>> {
        dispatch!(self, o => o.body.clone(), h => h.body())
    }
    /// Replace the body (only with `body: buffer`).
    pub fn set_body(&mut self, body: impl Into<Vec<u8>>) {
        let body = body.into();
        dispatch_mut!(self, o => { if o.body.is_some() { o.body = Some(body) } }, h => h.set_body(&body))
    }
    /// Keep a small value for this plugin's `on_response` of the same request (`Ctx::stash`).
    pub fn stash(&mut self, value: &str) {
        dispatch_mut!(self, o => o.stash = Some(value.to_string()), h => h.stash(value))
    }
    /// Natively: what `stash` stored (to feed `Ctx::with_stash` in tests).
    pub fn stashed(&self) -> Option<String> {
        dispatch!(self, o => o.stash.clone(), _h => None)
    }
}

/// Plain-Rust response: a plugin's reply, or a response built in a unit test.
#[derive(Debug, Clone, Default)]
struct OwnedResponse {
    status: u16,
    headers: Headers,
    body: Option<Vec<u8>>,
}

enum RespInner<'a> {
    Owned(Box<OwnedResponse>, PhantomData<&'a ()>),
    #[cfg(target_arch = "wasm32")]
    Host(&'a wit::Response),
}

/// A response: the upstream response in `on_response`, or a reply built with `Response::new`
/// and returned as `Action::Respond`.
pub struct Response<'a> {
    inner: RespInner<'a>,
}

impl core::fmt::Debug for Response<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

macro_rules! rdispatch {
    ($self:ident, $owned:ident => $o:expr, $host:ident => $h:expr) => {
        match &$self.inner {
            RespInner::Owned($owned, _) => $o,
            #[cfg(target_arch = "wasm32")]
            RespInner::Host($host) => $h,
        }
    };
}
macro_rules! rdispatch_mut {
    ($self:ident, $owned:ident => $o:expr, $host:ident => $h:expr) => {
        match &mut $self.inner {
            RespInner::Owned($owned, _) => $o,
            #[cfg(target_arch = "wasm32")]
            RespInner::Host($host) => $h,
        }
    };
}

impl Response<'static> {
    /// A reply with this status, no headers and an empty body.
    pub fn new(status: u16) -> Self {
        let owned = OwnedResponse {
            status,
            ..OwnedResponse::default()
        };
        Response {
            inner: RespInner::Owned(Box::new(owned), PhantomData),
        }
    }

    /// A reply with a JSON body and `content-type: application/json`.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self::new(status)
            .with_header("content-type", "application/json")
            .with_body(value.to_string())
    }

    /// Builder: append a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.append_header(name, value);
        self
    }

    /// Builder: set the body.
    #[allow(irrefutable_let_patterns)]
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        if let RespInner::Owned(o, _) = &mut self.inner {
            o.body = Some(body.into());
        }
        self
    }

    /// Split into status, headers and body (empty when unset), e.g. for assertions.
    pub fn into_parts(self) -> (u16, Headers, Vec<u8>) {
        match self.inner {
            RespInner::Owned(o, _) => (o.status, o.headers, o.body.unwrap_or_default()),
            #[cfg(target_arch = "wasm32")]
            RespInner::Host(h) => (
                h.status(),
                Headers::from(h.headers()),
                h.body().unwrap_or_default(),
            ),
        }
    }
}

impl<'a> Response<'a> {
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn from_host(r: &'a wit::Response) -> Self {
        Response {
            inner: RespInner::Host(r),
        }
    }

    /// Status code.
    pub fn status(&self) -> u16 {
        rdispatch!(self, o => o.status, h => h.status())
    }
    /// Change the status code.
    pub fn set_status(&mut self, status: u16) {
        rdispatch_mut!(self, o => o.status = status, h => h.set_status(status))
    }
    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<String> {
        rdispatch!(self, o => o.headers.get(name).map(str::to_string), h => h.header(name))
    }
    /// All values of a header.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        rdispatch!(self,
            o => o.headers.get_all(name).into_iter().map(str::to_string).collect(),
            h => h.header_all(name))
    }
    /// A copy of every header.
    pub fn headers(&self) -> Headers {
        rdispatch!(self, o => o.headers.clone(), h => Headers::from(h.headers()))
    }
    /// Replace every value of a header.
    pub fn set_header(&mut self, name: &str, value: &str) {
        rdispatch_mut!(self, o => o.headers.set(name, value), h => h.set_header(name, value))
    }
    /// Add a header value.
    pub fn append_header(&mut self, name: &str, value: &str) {
        rdispatch_mut!(self, o => o.headers.append(name, value), h => h.append_header(name, value))
    }
    /// Remove a header.
    pub fn remove_header(&mut self, name: &str) {
        rdispatch_mut!(self, o => o.headers.remove(name), h => h.remove_header(name))
    }
    /// The buffered body; `None` unless the binding uses `body: buffer`.
    pub fn body(&self) -> Option<Vec<u8>> {
        rdispatch!(self, o => o.body.clone(), h => h.body())
    }
    /// Replace the body.
    pub fn set_body(&mut self, body: impl Into<Vec<u8>>) {
        let body = body.into();
        rdispatch_mut!(self, o => o.body = Some(body), h => h.set_body(&body))
    }
}
