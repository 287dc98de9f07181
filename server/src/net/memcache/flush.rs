//! `flush_all <delay>`: a flush scheduled for later, where the newest `flush_all` wins (as in
//! memcached, a later `flush_all`, delayed or not, replaces a pending one).
//!
//! Each `flush_all` takes the next generation number. A delayed flush is a timer task that
//! flushes only if no newer `flush_all` came in the meantime.

use crate::store::Store;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Pending delayed flushes of one node. Cheap to clone; clones share state.
#[derive(Debug, Clone, Default)]
pub struct DelayedFlush {
    generation: Arc<AtomicU64>,
}

/// Why a delayed flush could not be scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRuntime;

impl DelayedFlush {
    /// Flushes `store` now (`delay` 0) or after `delay`, cancelling any flush still pending.
    ///
    /// # Errors
    /// [`NoRuntime`] when a delayed flush is asked for outside a tokio runtime (nothing is
    /// scheduled; a pending flush is cancelled all the same).
    pub fn schedule(&self, store: &Store, delay: Duration) -> Result<(), NoRuntime> {
        let mine = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        if delay.is_zero() {
            store.flush_all();
            return Ok(());
        }
        let handle = tokio::runtime::Handle::try_current().map_err(|_| NoRuntime)?;
        let generation = self.generation.clone();
        let store = store.clone();
        handle.spawn(async move {
            tokio::time::sleep(delay).await;
            if generation.load(Ordering::Acquire) == mine {
                store.flush_all();
            }
        });
        Ok(())
    }
}
