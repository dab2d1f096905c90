//! The single writer: takes fixes from the one bounded channel in arrival
//! order, validates them and appends them to the store, then wakes readers.
//!
//! It runs on its own OS thread because sled calls block; one writer means one
//! order and one sequence-number space, with no locks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::fix::{Event, Observed};
use crate::log_limit::{LogLimit, Verdict};
use crate::store::Writer;

/// Most events appended in one store batch: bursts are batched, but a
/// batch never delays the wake-up of readers by much.
const MAX_BATCH: usize = 256;

/// What the writer shares with health checks (the feed's `/healthz`, later the
/// systemd watchdog).
#[derive(Debug, Default)]
pub struct WriterHealth {
    /// True while appends are failing (full disk, I/O errors).
    pub store_failing: AtomicBool,
}

/// Runs the writer until every sender is gone and the channel is drained, or
/// until `shutdown` fires while the store refuses writes.
pub fn run(
    mut rx: mpsc::Receiver<Observed>,
    mut writer: Writer,
    head: watch::Sender<u64>,
    health: Arc<WriterHealth>,
    shutdown: CancellationToken,
) {
    let mut rejected_log = LogLimit::new(Duration::from_secs(60), 4096);
    let mut batch: Vec<Observed> = Vec::with_capacity(MAX_BATCH);
    let mut events: Vec<Event> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        for observed in batch.drain(..) {
            let source = observed.source.as_str();
            match observed.position.fix.validate() {
                Ok(()) => {
                    metrics::counter!("fixgate_fixes_accepted_total", "source" => source)
                        .increment(1);
                    events.push(Event::Position(observed.position));
                }
                Err(invalid) => {
                    metrics::counter!(
                        "fixgate_fixes_rejected_total",
                        "source" => source,
                        "reason" => invalid.reason()
                    )
                    .increment(1);
                    let device = observed.position.device;
                    if let Verdict::Log { suppressed } =
                        rejected_log.check(&(device.clone(), invalid.reason()), Instant::now())
                    {
                        tracing::warn!(%device, source, suppressed, "fix rejected: {invalid}");
                    }
                }
            }
        }
        if events.is_empty() {
            continue;
        }
        match append_with_retry(&mut writer, &events, &health, &shutdown) {
            Some(seq) => {
                metrics::gauge!("fixgate_store_head_seq").set(seq as f64);
                head.send_replace(seq);
            }
            None => {
                tracing::error!(
                    lost = events.len(),
                    "shutting down while the store refuses writes: these fixes are lost"
                );
                metrics::counter!("fixgate_fixes_lost_total", "reason" => "store")
                    .increment(events.len() as u64);
            }
        }
        events.clear();
    }
}

/// Appends, retrying with back-off while the store fails: the channel fills
/// and holds the sources back, so nothing accepted is dropped by the writer.
/// Gives up only when shutting down.
fn append_with_retry(
    writer: &mut Writer,
    events: &[Event],
    health: &WriterHealth,
    shutdown: &CancellationToken,
) -> Option<u64> {
    let mut delay = Duration::from_millis(50);
    loop {
        match writer.append(events) {
            Ok(seq) => {
                if health.store_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("store accepts writes again");
                }
                return Some(seq);
            }
            Err(err) => {
                metrics::counter!("fixgate_store_errors_total", "op" => "append").increment(1);
                if !health.store_failing.swap(true, Ordering::Relaxed) {
                    tracing::error!("store append failed, retrying: {err}");
                }
                if shutdown.is_cancelled() {
                    return None;
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
