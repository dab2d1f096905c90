//! Group commit: one task makes the store durable every `flush_interval`.
//!
//! The writer never waits for the disk; this task calls sled's blocking
//! `flush()` on the blocking pool, one call at a time, and only when
//! something was appended since the last one (an idle gateway's SD card is
//! left alone).

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Store;

/// How often the durable head is recorded beside the log (see
/// [`Store::mark_durable`]): a rollback of sled's log to before the last
/// mark is taken for damage at the next start.
const MARK_INTERVAL: Duration = Duration::from_secs(10);

/// Records `seq` as durable, on the blocking pool; a failure only weakens
/// the check at the next start.
pub async fn mark(store: &Store, seq: u64) {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.mark_durable(seq)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!("cannot record the durable head: {err}"),
        Err(join) => tracing::debug!("durable head task failed: {join}"),
    }
}

/// Flushes whenever the head moved, at most once per `interval`, until `shutdown`,
/// and publishes the last sequence number known durable on `durable`.
/// The final flush after the writer has stopped is the caller's.
pub async fn run(
    store: Store,
    interval: Duration,
    head: watch::Receiver<u64>,
    durable: watch::Sender<u64>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flushed = *head.borrow();
    let mut marked = Instant::now();
    // A store that refuses writes fails every flush: log once per streak.
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let target = *head.borrow();
        if target == flushed {
            continue;
        }
        let flushing = store.clone();
        let started = Instant::now();
        match tokio::task::spawn_blocking(move || flushing.flush()).await {
            Ok(Ok(_)) => {
                if std::mem::replace(&mut failing, false) {
                    tracing::info!("store flushes succeed again");
                }
                flushed = target;
                durable.send_replace(target);
                if marked.elapsed() >= MARK_INTERVAL {
                    marked = Instant::now();
                    mark(&store, target).await;
                }
                metrics::histogram!("fixgate_store_flush_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::gauge!("fixgate_store_durable_seq").set(target as f64);
            }
            Ok(Err(err)) => {
                metrics::counter!("fixgate_store_errors_total", "op" => "flush").increment(1);
                if !std::mem::replace(&mut failing, true) {
                    tracing::error!("store flush failed (logged once until one succeeds): {err}");
                }
            }
            Err(join) => tracing::error!("store flush task failed: {join}"),
        }
    }
}
