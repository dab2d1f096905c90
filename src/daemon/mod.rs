//! Wiring, in three named phases: [`start`] opens the store and starts
//! everything in order, the daemon then runs until SIGTERM/SIGINT or a part
//! that cannot go on, and [`stop`] shuts it down in the order the
//! durability contract needs — stop intake (the sources end and drop their
//! senders), let the writer drain the channel, flush, then let the readers
//! and the HTTP server finish. Every background task runs on one of two
//! trackers ([`Stages`]) that shutdown waits for with a deadline, so nothing
//! is left detached. Nothing accepted is lost.
//!
//! The operations around the pipeline sit here too: [`systemd`] (notify and
//! the watchdog), [`health`], [`status`], [`reload`], [`logging`] and the
//! geofence [`fence_watch`].

mod disk;
pub mod fence_watch;
pub mod health;
pub mod logging;
pub mod reload;
mod sources;
pub mod start;
pub mod status;
mod stop;
pub mod systemd;
mod warn;

use std::sync::Arc;

use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::fix::Observed;
use crate::pipeline::{self, Checks, WriterHealth};
use crate::store::{Store, Writer};
use crate::util::tasks::Tasks;

/// The two trackers shutdown waits for, in order: `intake` (the sources,
/// which must end before the writer can drain) and `background` (the
/// store's budget, the feed's fan-out, the uplink's transport, watchdog,
/// status line, reload watches: they end on the shutdown token).
pub struct Stages {
    /// The sources.
    pub intake: Tasks,
    /// Everything else that runs in the background.
    pub background: Tasks,
}

impl Stages {
    fn new(shutdown: &CancellationToken) -> Self {
        Self {
            intake: Tasks::new(shutdown.clone()),
            background: Tasks::new(shutdown.clone()),
        }
    }

    /// The token every stage watches.
    pub fn shutdown(&self) -> &CancellationToken {
        self.background.shutdown()
    }
}

/// The single writer's OS thread (sled blocks), and how to know it ended.
pub struct WriterThread {
    thread: std::thread::JoinHandle<()>,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl WriterThread {
    /// Starts the writer on `rx` with what `run` takes.
    fn start(
        rx: mpsc::Receiver<Observed>,
        writer: Writer,
        checks: Checks,
        head: watch::Sender<u64>,
        (health, shutdown): (Arc<WriterHealth>, CancellationToken),
    ) -> anyhow::Result<Self> {
        let (done_tx, done) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Handle::current();
        let thread = std::thread::Builder::new()
            .name("fixgate-writer".into())
            .spawn(move || {
                // Dropped when the thread ends, panic or not.
                let _done = done_tx;
                let reports = pipeline::Reports { head, health };
                let control = pipeline::Control { shutdown, runtime };
                pipeline::run(rx, writer, checks, reports, control)
            })
            .context("cannot start the writer thread")?;
        Ok(Self { thread, done })
    }
}

/// What runs, for the shutdown phase to stop in order.
pub struct Running {
    /// Held until the sources have ended, so that the writer outlives them.
    tx: mpsc::Sender<Observed>,
    writer: WriterThread,
    flusher: tokio::task::JoinHandle<()>,
    uplink: Option<crate::readers::uplink::Running>,
    store: Store,
    /// The writer's head: read after it has stopped, the last number it
    /// handed out.
    head: watch::Receiver<u64>,
    server: tokio::task::JoinHandle<()>,
    /// Cancelled once a full disk has room again: sled must be reopened.
    reopen: CancellationToken,
}

/// Runs the daemon until SIGTERM or SIGINT; returns once everything accepted
/// is durable. `config_path` is re-read on SIGHUP (the geofences, the
/// access tokens and TLS keys).
pub async fn run(
    config: crate::config::Config,
    config_path: Option<std::path::PathBuf>,
    metrics: Option<PrometheusHandle>,
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let stages = Stages::new(&shutdown);
    stages.background.spawn(stop_on_signal(shutdown.clone()));
    let inputs = start::Inputs {
        config,
        config_path,
        metrics,
    };
    let mut running = match start::start(inputs, &stages).await {
        Ok(running) => running,
        Err(err) => {
            shutdown.cancel();
            stop::abandon(&stages).await;
            return Err(err);
        }
    };
    let fatal = tokio::select! {
        _ = shutdown.cancelled() => None,
        _ = &mut running.writer.done => Some("the writer stopped unexpectedly"),
        _ = running.reopen.cancelled() => Some("the store failed on a full disk and must be reopened now that there is room"),
    };
    if let Some(why) = fatal {
        // Exit with an error so that the service manager restarts the daemon.
        tracing::error!("{why}; shutting down");
        shutdown.cancel();
    }
    stop::stop(running, stages).await?;
    match fatal {
        Some(why) => Err(anyhow::anyhow!("{why}")),
        None => Ok(()),
    }
}

/// Cancels `shutdown` at SIGTERM or SIGINT; ends with it otherwise.
async fn stop_on_signal(shutdown: CancellationToken) {
    tokio::select! {
        _ = crate::signal::cancel_on_signal(shutdown.clone(), "stop the daemon with SIGKILL") => {}
        _ = shutdown.cancelled() => {}
    }
}
