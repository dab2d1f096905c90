//! Stopping on SIGTERM (systemd, `kill`) or SIGINT (Ctrl-C), for the daemon
//! and `fixgate simulate` alike.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` on the first SIGTERM or SIGINT. If the handlers cannot
/// be installed, logs that with `otherwise` (how the process can still be
/// stopped) and returns.
pub async fn cancel_on_signal(shutdown: CancellationToken, otherwise: &str) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; {otherwise}");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}
