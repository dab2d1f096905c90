//! What the uplink core and a transport task say to each other.
//!
//! A transport owns one connection at a time. Each connection has a
//! *generation*; the core tags what it sends with the generation it was
//! told about, and a transport discards anything of an older one, so that a
//! batch queued just before a connection died is not sent twice over the
//! next (the core re-sends everything unacknowledged itself).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::util::backoff::Backoff;

/// A transport task's ends of the channels to the core, and the daemon's
/// shutdown.
#[derive(Debug)]
pub struct Side {
    /// What the core asks for.
    pub rx: mpsc::Receiver<ToTransport>,
    /// What the transport tells the core.
    pub tx: mpsc::Sender<FromTransport>,
    /// Ends the task.
    pub shutdown: CancellationToken,
}

/// From the core to the transport.
#[derive(Debug)]
pub enum ToTransport {
    /// Send one encoded batch.
    Send {
        /// The connection it is meant for.
        generation: u64,
        /// Names the batch in the transport's acknowledgement.
        token: u64,
        /// The encoded batch.
        bytes: Arc<Vec<u8>>,
    },
    /// Acknowledgements stopped coming: drop the connection and make a new one.
    Reconnect {
        /// The connection to drop (an older one is gone already).
        generation: u64,
    },
}

/// From the transport to the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromTransport {
    /// A connection is up; send (or re-send) on it.
    Connected {
        /// Its generation.
        generation: u64,
    },
    /// The batch named `token` was acknowledged (PubAck, or a 2xx).
    Acked {
        /// The batch.
        token: u64,
    },
    /// The connection is gone; whatever was unacknowledged must be re-sent.
    Lost {
        /// The connection that was lost.
        generation: u64,
        /// Why, for the log.
        reason: String,
    },
}

/// Reports the loss of connection `generation`, then waits out the next
/// back-off. `false` when the daemon is stopping (or the core is gone).
pub async fn lost(
    tx: &mpsc::Sender<FromTransport>,
    generation: u64,
    reason: String,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> bool {
    if tx
        .send(FromTransport::Lost { generation, reason })
        .await
        .is_err()
    {
        return false;
    }
    let wait = backoff.next_wait();
    tracing::debug!(retry_in = ?wait, "uplink: trying again");
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}
