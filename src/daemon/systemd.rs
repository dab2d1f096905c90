//! Telling systemd how the daemon is doing (`sd_notify`): `READY=1` once the
//! store is open and the listeners are bound, `STATUS=` lines, `STOPPING=1`
//! when shutdown begins, and `WATCHDOG=1` while the writer turns and no
//! source is stuck. Outside systemd (no `NOTIFY_SOCKET`) every call does
//! nothing.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::daemon::health::Pulses;
use crate::pipeline::WriterHealth;
use crate::telemetry;

/// A writer that has not gone round its loop for this long is stuck: its
/// loop turns at least every [`crate::pipeline::TICK`], and sleeps at most
/// 5 s between retries of a failing store.
pub const STALLED: Duration = Duration::from_secs(10);

/// Whether the watchdog may be fed: the writer went round its loop lately.
pub fn alive(since_beat: Duration) -> bool {
    since_beat < STALLED
}

/// What stops the watchdog's pings, if anything: a writer that has not
/// turned for [`STALLED`], or a source busy with one message that long.
pub fn stuck(health: &WriterHealth, sources: &Pulses) -> Option<(String, Duration)> {
    let since = health.since_beat();
    if !alive(since) {
        return Some(("the writer".to_owned(), since));
    }
    sources.stalled(STALLED)
}

/// Feeds systemd's watchdog (when `WatchdogSec=` set one) at half its
/// period, but only while the pipeline moves: a stuck writer or source stops
/// the pings and systemd restarts the daemon. A bare timer would keep a hung
/// pipeline running for ever.
pub async fn watchdog(
    health: Arc<WriterHealth>,
    sources: Arc<Pulses>,
    shutdown: CancellationToken,
) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    tracing::info!(
        period_ms = period.as_millis() as u64,
        "systemd watchdog enabled"
    );
    let mut tick = tokio::time::interval(period / 2);
    let mut withheld = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match stuck(&health, &sources) {
            None => {
                if withheld {
                    tracing::info!("the pipeline moves again: feeding the watchdog");
                    withheld = false;
                }
                send(&[NotifyState::Watchdog]);
            }
            Some((what, since)) if !withheld => {
                withheld = true;
                telemetry::WATCHDOG_WITHHELD.increment(1);
                tracing::error!(
                    stalled_s = since.as_secs(),
                    "{what} IS STUCK: withholding watchdog pings so that systemd restarts the daemon"
                );
            }
            Some(_) => {}
        }
    }
}

/// The daemon is up: `READY=1` with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A new status line (`systemctl status` shows the latest).
pub fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

/// Shutdown has begun: `STOPPING=1`, so that systemd waits for the flush
/// instead of counting the time against a restart.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: flushing the store"),
    ]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(states) {
        // systemd then restarts the service when its start times out, so
        // the log is where the reason has to be.
        telemetry::SYSTEMD_NOTIFY_ERRORS.increment(1);
        tracing::warn!("cannot notify systemd: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_fed_only_while_the_writer_turns() {
        let health = WriterHealth::default();
        health.beat();
        assert!(alive(health.since_beat()));
        assert!(alive(STALLED - Duration::from_millis(1)));
        assert!(!alive(STALLED));
        assert!(!alive(Duration::from_secs(3600)));
        let sources = Pulses::default();
        assert_eq!(stuck(&health, &sources), None);
        let serial = sources.register("serial bus-7");
        let _busy = serial.busy();
        assert_eq!(stuck(&health, &sources), None, "busy, not yet stuck");
    }
}
