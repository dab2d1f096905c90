//! Keeps the geofence rules current: loaded at start, again on SIGHUP (the
//! configuration file's `[geofence]` section and every fence file, with the
//! rest of the file handed to [`crate::daemon::reload`]) and when a fence file
//! changes. A set that does not load is refused whole, with the
//! reason logged, and the rules in force stay.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::telemetry;
use crate::util::tasks::Tasks;

use crate::config;
use crate::pipeline::geofence::{Rules, load};

/// The rules as the writer and the feed see them: `None` until a set has
/// loaded (the writer then leaves every device's zones as they are).
pub type Current = watch::Receiver<Option<Arc<Rules>>>;

/// Loads the rules of `section`; on failure logs why and counts it.
fn try_load(section: &config::Geofence, why: &str) -> Option<Arc<Rules>> {
    match load::load_all(section) {
        Ok(fences) => {
            let n = fences.len();
            telemetry::GEOFENCE_RELOADS.with(["ok"]).increment(1);
            telemetry::GEOFENCE_FENCES.set(n as f64);
            tracing::info!(
                fences = n,
                files = section.files.len(),
                "geofences loaded ({why})"
            );
            Some(Arc::new(Rules {
                fences,
                options: section.options.clone(),
            }))
        }
        Err(err) => {
            telemetry::GEOFENCE_RELOADS.with(["error"]).increment(1);
            tracing::error!("geofences NOT loaded ({why}); the fences in force stay: {err}");
            None
        }
    }
}

/// Loads the rules of the starting configuration and returns the channel
/// that carries them, with the task that keeps them current. Must run in
/// the runtime: it takes over SIGHUP at once (whose default action would
/// otherwise end the daemon).
pub fn start(config_path: Option<PathBuf>, running: config::Config, tasks: &Tasks) -> Current {
    let hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(err) => {
            tracing::error!(
                "cannot handle SIGHUP, fences reload only when their files change: {err}"
            );
            None
        }
    };
    let rules = try_load(&running.geofence, "start");
    let (tx, rx) = watch::channel(rules);
    tasks.spawn(watch_task(
        config_path,
        running,
        hangup,
        tx,
        tasks.shutdown().clone(),
    ));
    rx
}

/// What a fence file looked like when last read: changes of either mean it
/// was written again (editors that replace files change both).
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn stamps(section: &config::Geofence) -> Vec<Stamp> {
    section.files.iter().map(|f| stamp(f)).collect()
}

async fn watch_task(
    config_path: Option<PathBuf>,
    mut running: config::Config,
    mut hangup: Option<tokio::signal::unix::Signal>,
    tx: watch::Sender<Option<Arc<Rules>>>,
    shutdown: CancellationToken,
) {
    let mut section = running.geofence.clone();
    let mut seen = stamps(&section);
    let mut every = section.watch_interval;
    let mut tick = ticker(every);
    loop {
        let reread_config = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = async {
                match hangup.as_mut() {
                    Some(h) => { h.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => true,
            _ = tick.tick() => false,
        };
        if reread_config {
            tracing::info!("SIGHUP received: reloading the configuration and the geofences");
            if let Some(path) = config_path.clone() {
                match blocking(move || config::load(&path)).await {
                    Some(Ok(config)) => {
                        crate::daemon::reload::apply(&mut running, &config);
                        section = config.geofence;
                        if section.watch_interval != every {
                            every = section.watch_interval;
                            tick = ticker(every);
                        }
                    }
                    None => continue,
                    Some(Err(err)) => {
                        telemetry::GEOFENCE_RELOADS.with(["error"]).increment(1);
                        tracing::error!(
                            "configuration NOT reloaded; the fences in force stay:\n{err}"
                        );
                        continue;
                    }
                }
            }
        } else {
            if every.is_zero() {
                continue;
            }
            let now = stamps(&section);
            if now == seen {
                continue;
            }
            // Wait for a writer to finish: a file still changing is read
            // on the next tick.
            tokio::time::sleep(Duration::from_millis(200)).await;
            if stamps(&section) != now {
                continue;
            }
        }
        seen = stamps(&section);
        let why = if reread_config {
            "SIGHUP"
        } else {
            "a fence file changed"
        };
        let load = section.clone();
        if let Some(Some(rules)) = blocking(move || try_load(&load, why)).await {
            tx.send_replace(Some(rules));
        }
    }
}

/// Polling, not inotify: it sees files replaced by rename, on any file
/// system, and a stat per file every few seconds costs nothing. A zero
/// interval (no watching) still ticks, rarely, and the ticks are ignored.
fn ticker(every: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(if every.is_zero() {
        Duration::from_secs(3600)
    } else {
        every
    });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Runs file reads and geometry off the async workers. A panic there is
/// logged and counted, and the watch goes on with the fences in force.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => Some(value),
        Err(err) => {
            telemetry::GEOFENCE_RELOADS.with(["error"]).increment(1);
            tracing::error!("geofence reload failed, the fences in force stay: {err}");
            None
        }
    }
}
