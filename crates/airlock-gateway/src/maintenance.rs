//! Background upkeep of the store: last-use times written in batches, and eviction by
//! retention and size with pinned images held.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use airlock_store::evict::{self, Policy};

use crate::AppState;

/// How often touches are flushed and the size limit is checked.
const TICK: Duration = Duration::from_secs(60);
/// Retention (`unused_for`) is applied every this many ticks.
const RETENTION_EVERY: u32 = 10;
/// Anything used this recently is never evicted: a pull reads its manifest, then blobs.
const GRACE: Duration = Duration::from_secs(600);

/// Runs until the task is dropped.
pub(crate) async fn run(state: Arc<AppState>) {
    let mut ticks = 0u32;
    let mut interval = tokio::time::interval(TICK);
    interval.tick().await;
    loop {
        interval.tick().await;
        ticks = ticks.wrapping_add(1);
        if let Err(error) = tick(&state, ticks % RETENTION_EVERY == 0).await {
            tracing::warn!(target: "airlock::evict", %error, "store upkeep failed; will retry");
        }
    }
}

/// One round: flush touches; evict when over size, or when retention is due.
pub(crate) async fn tick(
    state: &AppState,
    retention_due: bool,
) -> Result<(), airlock_store::StoreError> {
    let registry = &state.registry;
    registry.index().flush_touches().await?;
    let cache = &state.config.cache;
    let over_size = cache
        .max_size
        .is_some_and(|max| registry.index().total_size() > max.0);
    let retention = retention_due && cache.unused_for.is_some();
    if !(over_size || retention) {
        return Ok(());
    }
    let mut pinned = HashSet::new();
    // Pins were resolved at startup; one that names nothing cached yet holds nothing.
    for pin in registry.pins() {
        if let Ok(Some(digest)) = registry.pinned_digest(pin).await {
            pinned.insert(digest);
        }
    }
    let policy = Policy {
        max_size: cache.max_size.map(|s| s.0),
        unused_for: cache.unused_for.map(|d| d.0),
        grace: GRACE,
    };
    let report = evict::evict(
        registry.store().as_ref(),
        registry.index(),
        &policy,
        &pinned,
    )
    .await?;
    state
        .metrics
        .evicted_blobs
        .fetch_add(report.blobs_removed as u64, Ordering::Relaxed);
    state
        .metrics
        .evicted_bytes
        .fetch_add(report.bytes_freed, Ordering::Relaxed);
    Ok(())
}
