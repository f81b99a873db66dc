//! Every error the gateway itself answers with, mapped to HTTP in one place. Like Pingora's errors, each
//! carries where it came from and whether another attempt could help.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::ProxyBody;

/// Who caused the failure: useful in logs and for deciding retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    Client,
    Upstream,
    Internal,
}

/// What went wrong, one variant per distinct answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    NoRoute,
    BodyTooLarge,
    HeadersTooLarge,
    AmbiguousFraming(&'static str),
    BadRequest(&'static str),
    /// The upstream could not be connected to (refused, unreachable, connect timeout).
    ConnectFailure,
    /// The upstream broke the exchange (closed mid-response, protocol error).
    UpstreamBroken,
    /// No response headers within `timeouts.request`.
    UpstreamTimeout,
    /// Every target is open (circuit breaker) or the upstream is at `max_in_flight`.
    Unavailable {
        retry_after_secs: u64,
        reason: &'static str,
    },
    RateLimited {
        retry_after_secs: u64,
    },
    /// A `fail_closed` plugin trapped, timed out, ran out of memory or returned an error.
    PluginFailed {
        plugin: String,
        kind: &'static str,
    },
    /// The upstream response is larger than a body-buffering plugin may hold.
    ResponseTooLarge,
    Internal(&'static str),
}

/// An error answered by the gateway with a JSON body.
#[derive(Debug, Clone)]
pub struct ProxyError {
    pub kind: ErrorKind,
    pub source: ErrorSource,
    /// Whether another attempt (on another target) may succeed.
    pub retryable: bool,
}

impl ProxyError {
    pub fn client(kind: ErrorKind) -> Self {
        Self {
            kind,
            source: ErrorSource::Client,
            retryable: false,
        }
    }

    pub fn upstream(kind: ErrorKind, retryable: bool) -> Self {
        Self {
            kind,
            source: ErrorSource::Upstream,
            retryable,
        }
    }

    pub fn internal(what: &'static str) -> Self {
        Self {
            kind: ErrorKind::Internal(what),
            source: ErrorSource::Internal,
            retryable: false,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::NoRoute => StatusCode::NOT_FOUND,
            ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::AmbiguousFraming(_) | ErrorKind::BadRequest(_) => StatusCode::BAD_REQUEST,
            ErrorKind::ConnectFailure | ErrorKind::UpstreamBroken | ErrorKind::ResponseTooLarge => {
                StatusCode::BAD_GATEWAY
            }
            ErrorKind::PluginFailed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The human message in the JSON body.
    pub fn message(&self) -> String {
        match &self.kind {
            ErrorKind::NoRoute => "no route matches this request".into(),
            ErrorKind::BodyTooLarge => "request body exceeds the route's max_body".into(),
            ErrorKind::HeadersTooLarge => "request headers exceed server.max_header_size".into(),
            ErrorKind::AmbiguousFraming(why) => format!("ambiguous request framing: {why}"),
            ErrorKind::BadRequest(why) => format!("bad request: {why}"),
            ErrorKind::ConnectFailure => "upstream unreachable".into(),
            ErrorKind::UpstreamBroken => "upstream closed or broke the connection".into(),
            ErrorKind::UpstreamTimeout => "upstream timed out".into(),
            ErrorKind::Unavailable { reason, .. } => format!("upstream unavailable: {reason}"),
            ErrorKind::RateLimited { .. } => "rate limit exceeded".into(),
            ErrorKind::PluginFailed { plugin, kind } => format!("plugin {plugin} failed ({kind})"),
            ErrorKind::ResponseTooLarge => {
                "upstream response exceeds the buffer of the route's body plugins".into()
            }
            ErrorKind::Internal(what) => format!("internal error: {what}"),
        }
    }

    /// The response sent to the client: `{"error": ..., "request_id": ...}`.
    pub fn into_response(self, request_id: &str) -> Response<ProxyBody> {
        let body = serde_json::json!({ "error": self.message(), "request_id": request_id });
        let mut resp = Response::new(ProxyBody::full(Bytes::from(body.to_string())));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let retry_after = match self.kind {
            ErrorKind::Unavailable {
                retry_after_secs, ..
            } => Some(retry_after_secs),
            ErrorKind::RateLimited { retry_after_secs } => Some(retry_after_secs),
            _ => None,
        };
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if matches!(
            self.kind,
            ErrorKind::AmbiguousFraming(_) | ErrorKind::HeadersTooLarge
        ) {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
