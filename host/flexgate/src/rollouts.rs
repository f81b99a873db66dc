//! Rollouts as code: every registry change (upload, rollout, promote, rollback, from this replica
//! or another) rebuilds the plugin chains without a restart; and the canary guard compares each
//! canary with its stable version over the rollout's window and rolls it back when it breaches a
//! guard, counting `flexgate_plugin_rollbacks_total{plugin,route,reason}` and writing the audit log.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use flexgate_proxy::Gateway;
use flexgate_registry::{AuditEntry, Store, evaluate_guards, now_rfc3339};
use prometheus::{IntCounterVec, Opts, Registry};
use tokio::task::JoinHandle;

/// How often the guard looks at the windows: well under any sensible window, cheap (a few locks).
const GUARD_EVERY: Duration = Duration::from_millis(200);

/// Who the audit log names for automatic rollbacks.
const GUARD: &str = "guard";

/// Starts the registry watcher and the canary guard.
pub fn spawn(
    gateway: Arc<Gateway>,
    store: Arc<dyn Store>,
    registry: &Registry,
) -> anyhow::Result<[JoinHandle<()>; 2]> {
    let rollbacks = IntCounterVec::new(
        Opts::new(
            "flexgate_plugin_rollbacks_total",
            "Canaries rolled back automatically, by the guard that was breached",
        ),
        &["plugin", "route", "reason"],
    )?;
    registry.register(Box::new(rollbacks.clone()))?;
    let watcher = tokio::spawn(watch(gateway.clone(), store.clone()));
    let guard = tokio::spawn(guard(gateway, store, rollbacks));
    Ok([watcher, guard])
}

/// Rebuilds the snapshot whenever the registry publishes a new state.
async fn watch(gateway: Arc<Gateway>, store: Arc<dyn Store>) {
    let mut rx = store.subscribe();
    rx.mark_unchanged();
    while rx.changed().await.is_ok() {
        rx.mark_unchanged();
        match gateway.rebuild().await {
            Ok(()) => tracing::info!("plugin registry changed: chains rebuilt"),
            Err(e) => {
                tracing::error!(error = %e, "plugin registry changed but the chains could not be rebuilt; the previous ones keep serving")
            }
        }
    }
}

async fn guard(gateway: Arc<Gateway>, store: Arc<dyn Store>, rollbacks: IntCounterVec) {
    // (route, plugin, revision) already rolled back: the rebuild that removes the canary may lag.
    let mut done: HashSet<(String, String, u64)> = HashSet::new();
    let mut tick = tokio::time::interval(GUARD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let snap = gateway.snapshot();
        for route in snap.router.routes() {
            let Some(rp) = &route.plugins else { continue };
            for slot in &rp.slots {
                let (Some(rollout), Some(canary)) = (&slot.rollout, &slot.canary) else {
                    continue;
                };
                let (Some(stable_stats), Some(canary_stats)) =
                    (&slot.stable.stats, &canary.variant.stats)
                else {
                    continue;
                };
                let key = (
                    route.name.to_string(),
                    slot.plugin.to_string(),
                    rollout.revision,
                );
                if done.contains(&key) {
                    continue;
                }
                let (s, c) = (stable_stats.snapshot(), canary_stats.snapshot());
                let Some(reason) = evaluate_guards(&rollout.guards, &s, &c) else {
                    continue;
                };
                let text = reason.to_string();
                let result = store
                    .rollback(&route.name, &slot.plugin, &text, GUARD)
                    .await;
                let outcome = match &result {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => format!("error: {e}"),
                };
                tracing::warn!(route = %route.name, plugin = %slot.plugin, canary = %canary.variant.version,
                    reason = %text, result = %outcome, "canary rolled back by its guard");
                if result.is_ok() {
                    rollbacks
                        .with_label_values(&[&slot.plugin, &route.name, reason.label()])
                        .inc();
                }
                let entry = AuditEntry {
                    at: now_rfc3339(),
                    who: GUARD.into(),
                    role: "system".into(),
                    action: "rollout.auto_rollback".into(),
                    target: format!("{}/{}", route.name, slot.plugin),
                    result: if result.is_ok() {
                        format!("ok: {text}")
                    } else {
                        outcome
                    },
                };
                if let Err(e) = store.append_audit(entry).await {
                    tracing::error!(error = %e, "audit log write failed");
                }
                done.insert(key);
                // Bounded by the rollouts that exist; forget old revisions now and then.
                if done.len() > 10_000 {
                    done.clear();
                }
            }
        }
    }
}
