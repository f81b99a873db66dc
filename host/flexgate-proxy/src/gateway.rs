//! The gateway's live state: the current snapshot behind an atomic pointer, and the state shared by
//! all snapshots. Readers never lock; a reload is one pointer swap.

use std::sync::Arc;

use arc_swap::ArcSwap;
use flexgate_config::Config;
use flexgate_telemetry::CoreMetrics;

use crate::plugins::PluginHost;
use crate::snapshot::{BuildError, SharedState, Snapshot};

/// One per process (tests build several).
pub struct Gateway {
    current: ArcSwap<Snapshot>,
    pub shared: SharedState,
    /// Serialises builds so a slow reload cannot overwrite a newer one.
    rebuilding: tokio::sync::Mutex<()>,
}

impl Gateway {
    /// Builds the first snapshot. `plugins` is needed as soon as a route binds a plugin.
    pub async fn new(
        config: Config,
        metrics: CoreMetrics,
        plugins: Option<PluginHost>,
    ) -> Result<Arc<Self>, BuildError> {
        let shared = SharedState::new(metrics, plugins);
        let first = shared.build(Arc::new(config)).await?;
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(first),
            shared,
            rebuilding: tokio::sync::Mutex::new(()),
        }))
    }

    /// The snapshot a new request should use; it stays valid for that request even across reloads.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn config(&self) -> Arc<Config> {
        self.current.load().config.clone()
    }

    /// Compiles `config` and swaps it in. On error the current snapshot keeps serving.
    pub async fn reload(&self, config: Config) -> Result<(), BuildError> {
        let _one = self.rebuilding.lock().await;
        let next = self.shared.build(Arc::new(config)).await?;
        self.current.store(Arc::new(next));
        Ok(())
    }

    /// Rebuilds the current config (the plugin registry changed: new rollouts, versions).
    pub async fn rebuild(&self) -> Result<(), BuildError> {
        let _one = self.rebuilding.lock().await;
        let next = self.shared.build(self.config()).await?;
        self.current.store(Arc::new(next));
        Ok(())
    }
}
