//! The gateway's live state: the current snapshot behind an atomic pointer, and the state shared by
//! all snapshots. Readers never lock; a reload is one pointer swap.

use std::sync::Arc;

use arc_swap::ArcSwap;
use flexgate_config::Config;
use flexgate_telemetry::CoreMetrics;

use crate::snapshot::{BuildError, SharedState, Snapshot};

/// One per process (tests build several).
pub struct Gateway {
    current: ArcSwap<Snapshot>,
    pub shared: SharedState,
}

impl Gateway {
    pub fn new(config: Config, metrics: CoreMetrics) -> Result<Arc<Self>, BuildError> {
        let shared = SharedState::new(metrics);
        let first = shared.build(Arc::new(config))?;
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(first),
            shared,
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
    pub fn reload(&self, config: Config) -> Result<(), BuildError> {
        let next = self.shared.build(Arc::new(config))?;
        self.current.store(Arc::new(next));
        Ok(())
    }
}
