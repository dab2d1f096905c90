//! The store's disk: the budget's policy from the configuration, and the
//! watch that restarts the daemon once a full disk has room again.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::pipeline::WriterHealth;
use crate::store::budget::{self, Limits, Policy};

/// How often the disk budget measures the store when the writer is quiet.
pub const BUDGET_INTERVAL: Duration = Duration::from_secs(5);

/// The disk budget's policy from `[store]`.
pub fn budget_policy(store: &crate::config::Store, uplink: &crate::config::Uplink) -> Policy {
    const MIB: u64 = 1024 * 1024;
    Policy {
        limits: Limits {
            max_bytes: store.max_size_mb * MIB,
            high_water: store.high_water,
            min_free_bytes: store.min_free_mb * MIB,
        },
        thin: store.thin,
        // Without an uplink nothing waits for an acknowledgement: every
        // record is history, the oldest deleted first.
        keep_unacked: !matches!(uplink.transport, crate::config::UplinkTransport::Off),
    }
}

/// Watches a store that failed on a full disk, and cancels `reopen` once its
/// file system has room again (at least `min_free` and 1 MiB): sled refuses
/// every write after an I/O error until it is reopened, so the daemon exits
/// with an error and the service manager starts it again on what is on disk.
/// Until then the writer drops and counts fixes and the feed serves reads.
pub async fn reopen_when_room(
    path: std::path::PathBuf,
    min_free: u64,
    health: Arc<WriterHealth>,
    reopen: CancellationToken,
    shutdown: CancellationToken,
) {
    let want = min_free.max(1024 * 1024);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !health.disk_full.load(std::sync::atomic::Ordering::Relaxed) {
            continue;
        }
        if budget::free_bytes(&path).is_some_and(|free| free >= want) {
            tracing::warn!(
                "the store's file system has room again: restarting to reopen the store"
            );
            reopen.cancel();
            return;
        }
    }
}
