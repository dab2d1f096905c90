//! Group commit: one task makes the store durable every `flush_interval`.
//!
//! The writer never waits for the disk; this task calls sled's blocking
//! `flush()` on the blocking pool, one call at a time, and only when
//! something was appended since the last one (an idle gateway's SD card is
//! left alone).

use crate::telemetry;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Store, StoreError};

/// One group commit: sled's flush, then the durable mark (and the
/// reservation ahead of `head`), both on the blocking pool.
fn commit(store: &Store, durable: u64, head: u64) -> Result<(), StoreError> {
    store.flush()?;
    store.record_durable(durable, head)
}

/// Flushes whenever the head moved, at most once per `interval`, until `shutdown`,
/// and publishes the last sequence number known durable on `durable`.
/// The final flush after the writer has stopped is the caller's ([`Store::close`]).
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
        // The head read now is at least `target`: the reservation runs ahead
        // of whatever the writer did meanwhile.
        let ahead = head.clone();
        match tokio::task::spawn_blocking(move || commit(&flushing, target, *ahead.borrow())).await
        {
            Ok(Ok(())) => {
                if std::mem::replace(&mut failing, false) {
                    tracing::info!("store flushes succeed again");
                }
                flushed = target;
                durable.send_replace(target);
                telemetry::STORE_FLUSH_SECONDS.record(started.elapsed().as_secs_f64());
                telemetry::STORE_DURABLE_SEQ.set(target as f64);
            }
            Ok(Err(err)) => {
                telemetry::STORE_ERRORS.with(["flush"]).increment(1);
                if !std::mem::replace(&mut failing, true) {
                    tracing::error!("store flush failed (logged once until one succeeds): {err}");
                }
            }
            Err(join) => tracing::error!("store flush task failed: {join}"),
        }
    }
}
