//! The plugin phases of the request path: run a route's chain on the request (buffering the body
//! only for `body: buffer` bindings) and, in reverse, on the response.

use bytes::Bytes;
use flexgate_plugins::{CallCtx, Chain, ChainError, RequestOutcome};
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};

use crate::body::ProxyBody;
use crate::error::{ErrorKind, ProxyError};
use crate::plugins::RoutePlugins;

/// What the request hook decided.
pub enum Next {
    /// Go on to the route's action with this (possibly rewritten) request.
    Forward(Request<ProxyBody>),
    /// A plugin answered; its response still goes through `on_response` of earlier plugins.
    Respond(Response<ProxyBody>),
}

/// Runs `on_request` of every binding, in order. A `fail_closed` failure is a 500 JSON answer.
pub async fn request(
    rp: &RoutePlugins,
    chain: &Chain,
    ctx: &CallCtx,
    req: Request<ProxyBody>,
) -> Result<Next, ProxyError> {
    let (mut parts, body) = req.into_parts();
    let (mut buffered, body) = if rp.buffers_request {
        (Some(collect(body, rp.buffer_limit, true).await?), None)
    } else {
        (None, Some(body))
    };
    let outcome = chain
        .on_request(ctx, &mut parts, buffered.as_mut())
        .await
        .map_err(plugin_error)?;
    match outcome {
        RequestOutcome::Continue => {
            let body = match (body, buffered) {
                (Some(b), _) => b,
                (None, Some(bytes)) => ProxyBody::full(bytes),
                (None, None) => ProxyBody::empty(),
            };
            Ok(Next::Forward(Request::from_parts(parts, body)))
        }
        RequestOutcome::Respond(resp) => Ok(Next::Respond(resp.map(ProxyBody::full))),
    }
}

/// Runs `on_response` of the bindings whose `on_request` ran, in reverse order.
pub async fn response(
    rp: &RoutePlugins,
    chain: &Chain,
    ctx: &CallCtx,
    resp: Response<ProxyBody>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = resp.into_parts();
    if rp.buffers_response {
        let mut bytes = collect(body, rp.buffer_limit, false).await?;
        chain
            .on_response(ctx, &mut parts, Some(&mut bytes))
            .await
            .map_err(plugin_error)?;
        Ok(Response::from_parts(parts, ProxyBody::full(bytes)))
    } else {
        chain
            .on_response(ctx, &mut parts, None)
            .await
            .map_err(plugin_error)?;
        Ok(Response::from_parts(parts, body))
    }
}

/// Reads a whole body, refusing more than `limit` bytes (413 for requests, 502 for responses).
async fn collect(body: ProxyBody, limit: u64, request: bool) -> Result<Bytes, ProxyError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(if request {
            ProxyError::client(ErrorKind::BodyTooLarge)
        } else {
            ProxyError::upstream(ErrorKind::ResponseTooLarge, false)
        }),
        Err(_) if request => Err(ProxyError::client(ErrorKind::BadRequest(
            "request body could not be read",
        ))),
        Err(_) => Err(ProxyError::upstream(ErrorKind::UpstreamBroken, false)),
    }
}

fn plugin_error(e: ChainError) -> ProxyError {
    ProxyError {
        kind: ErrorKind::PluginFailed {
            plugin: e.plugin,
            kind: e.kind.as_str(),
        },
        source: crate::error::ErrorSource::Internal,
        retryable: false,
    }
}
