//! The shutdown phase, in the order of the durability contract: the sources
//! stop taking input and end; the writer drains the channel and stops; the
//! flusher and the uplink finish; the store is flushed and its mark
//! tightened; then the background tasks and the HTTP server end. Each wait
//! has a deadline well inside systemd's `TimeoutStopSec` (30 s).

use std::time::Duration;

use anyhow::Context as _;

use super::{Running, Stages};

/// How long the sources get to end (the MQTT intake bounds its own drain
/// at 2 s).
const INTAKE: Duration = Duration::from_secs(10);
/// How long background tasks and the HTTP server get, once the store is
/// flushed (nothing is lost by cutting them off then).
const BACKGROUND: Duration = Duration::from_secs(5);

/// Stops everything `running` holds; `Ok` once everything accepted is
/// durable.
pub async fn stop(running: Running, stages: Stages) -> anyhow::Result<()> {
    tracing::info!("shutting down: stopping intake");
    super::systemd::stopping();
    if !stages.intake.wait(INTAKE).await {
        tracing::warn!(
            still_running = stages.intake.len(),
            "sources did not end within {} s; stopping anyway",
            INTAKE.as_secs()
        );
    }
    let Running {
        tx,
        writer,
        flusher,
        uplink,
        store,
        head,
        server,
        reopen: _,
    } = running;
    // The writer ends once the last sender is gone and the channel drained.
    drop(tx);
    tokio::task::spawn_blocking(move || writer.thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
    let _ = flusher.await;
    if let Some(uplink) = uplink {
        // It records what was acknowledged before the last flush.
        let _ = uplink.task.await;
    }
    let head = *head.borrow();
    tokio::task::spawn_blocking(move || store.close(head))
        .await?
        .context("final store flush failed")?;
    tracing::info!(head, "store flushed");
    if !stages.background.wait(BACKGROUND).await {
        tracing::warn!(
            still_running = stages.background.len(),
            "background tasks did not end within {} s",
            BACKGROUND.as_secs()
        );
    }
    match tokio::time::timeout(BACKGROUND, server).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!("feed server task: {err}"),
        Err(_) => tracing::warn!("feed server did not stop within {} s", BACKGROUND.as_secs()),
    }
    tracing::info!("stopped");
    Ok(())
}

/// After a start that failed half way: let what started end.
pub async fn abandon(stages: &Stages) {
    stages.intake.wait(INTAKE).await;
    stages.background.wait(BACKGROUND).await;
}
