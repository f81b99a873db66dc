//! Active health checking: a background task per upstream probes each target's health path.

use std::sync::Arc;

use flexgate_config::HealthCheck;
use http::{Method, Request, Uri};
use http_body_util::BodyExt;
use tokio::task::JoinHandle;

use super::{HttpClient, TargetState};
use crate::body::ProxyBody;

/// Probes every target each `interval`; `unhealthy` failures in a row mark it down, `healthy`
/// successes in a row bring it back. The task ends when its upstream is dropped (aborted).
pub fn spawn(
    upstream: String,
    hc: HealthCheck,
    targets: Vec<Arc<TargetState>>,
    client: HttpClient,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut streaks = vec![0i64; targets.len()];
        let mut ticker = tokio::time::interval(hc.interval.0);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            for (i, target) in targets.iter().enumerate() {
                let ok = probe(&client, target, &hc).await;
                let s = &mut streaks[i];
                *s = match (ok, *s) {
                    (true, s) if s > 0 => s + 1,
                    (true, _) => 1,
                    (false, s) if s < 0 => s - 1,
                    (false, _) => -1,
                };
                if ok && *s >= i64::from(hc.healthy) && !target.is_healthy() {
                    target.set_healthy(true);
                } else if !ok && -*s >= i64::from(hc.unhealthy) && target.is_healthy() {
                    tracing::warn!(%upstream, target = %target.addr, "target failed active health checks");
                    target.set_healthy(false);
                }
            }
        }
    })
}

async fn probe(client: &HttpClient, target: &TargetState, hc: &HealthCheck) -> bool {
    let Ok(uri) = Uri::try_from(hc.path.as_str()) else {
        return false;
    };
    let Ok(req) = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header(http::header::HOST, target.authority.as_str())
        .header("user-agent", "flexgate-health-check")
        .body(ProxyBody::empty())
    else {
        return false;
    };
    let probe = async {
        let resp = client.request(target, req, false).await.ok()?;
        let ok = resp.status().is_success() || resp.status().is_redirection();
        drain(resp.into_body()).await;
        Some(ok)
    };
    matches!(
        tokio::time::timeout(hc.timeout.0, probe).await,
        Ok(Some(true))
    )
}

/// Reads a short probe answer to its end, so that its connection goes back to the pool (one
/// kept-alive connection per target serves every probe); a body over 64 KiB is not worth it.
async fn drain(mut body: ProxyBody) {
    let mut left = 64 * 1024;
    while let Some(Ok(frame)) = body.frame().await {
        let len = frame.data_ref().map_or(0, |d| d.len());
        if len > left {
            return;
        }
        left -= len;
    }
}
