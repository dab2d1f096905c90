//! Telling systemd how the daemon is doing (`sd_notify`): `READY=1` once the
//! store is open and the listeners are bound, `STATUS=` lines, `STOPPING=1`
//! when shutdown begins. Outside systemd (no `NOTIFY_SOCKET`) every call
//! does nothing.

use sd_notify::NotifyState;

/// The daemon is up: `READY=1` with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
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
        metrics::counter!("fixgate_systemd_notify_errors_total").increment(1);
        tracing::warn!("cannot notify systemd: {err}");
    }
}
