//! The embedded MQTT server: devices connect to the gateway itself, so a
//! depot needs nothing else. It is an *intake* first: MQTT 3.1.1 (and 3.1)
//! clients log in and publish, each login within its scope (for which
//! devices it may publish, see [`crate::sources::mqtt::scope`]). Clients
//! whose scope allows it may subscribe, and get what others publish to
//! those topics at QoS 0, as it happens; no topic, retained message or
//! session is kept. Memory is the connections' buffers, one bounded intake
//! queue and the subscribers' bounded queues.
//!
//! * [`server`]: the listener (bound at start: a busy port stops the daemon
//!   there) and the accept loop, a task per connection ([`session`]).
//! * [`login`], [`limits`], [`protocol`]: the decisions, as plain functions
//!   and bookkeeping: who may log in with what scope, how many connections
//!   each, what size and topic a PUBLISH may have, which protocol versions
//!   are spoken.
//! * [`router`]: the subscriptions, and what is passed on to them.
//! * The intake task below owns [`Messages`]: every accepted PUBLISH goes
//!   through one bounded queue to it, and a connection acknowledges a
//!   message only once the message is in that queue. The connection routes
//!   the topic to its device first (the same [`super::Routes`] the intake uses),
//!   to check the login's scope; a PUBLISH outside it is acknowledged and
//!   dropped there (MQTT 3.1.1 has no negative acknowledgement, and a
//!   refused message must not come back for ever).
//!
//! Packets are read and written with `rumqttc`'s MQTT 3.1.1 codec.
//!
//! At shutdown the listener closes, every connection finishes the packet in
//! hand (and writes its ack) and stops reading, and the intake drains the
//! queue until every connection has let go of it: what was acknowledged
//! reaches the pipeline. Connections blocked on a full queue are released
//! by that draining; if any still hold on after [`DRAIN_LIMIT`], the queue
//! is closed (their messages were never acknowledged) and drained.

mod limits;
mod login;
mod protocol;
mod report;
mod router;
mod server;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::telemetry;
use crate::util::tasks::Tasks;

use super::{Messages, Route};
use crate::config::Embedded;

/// Messages read and acknowledged but not yet handled: a burst of this many
/// is taken at full speed, beyond it the devices' connections wait. (At most
/// `max_payload` bytes each, a few hundred in practice.)
const INTAKE_QUEUE: usize = 256;

/// How long after SIGTERM connections may still hand messages over before
/// the queue is closed to them. Each needs only to finish one packet.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// What a connection hands the intake task.
#[derive(Debug)]
enum Intake {
    /// A PUBLISH to handle (acknowledged once queued).
    Message {
        /// The topic, which names the device.
        topic: String,
        /// Where the connection found the topic leads (see [`super::Routes`]).
        route: Route,
        /// The payload.
        payload: Bytes,
    },
    /// A PUBLISH refused for its size, to be counted for its device.
    Oversized {
        /// The topic.
        topic: String,
        /// The payload's size in bytes.
        size: usize,
    },
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listen address is taken or not ours.
    #[error("the MQTT broker cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Binds the listener and starts accepting devices; returns the intake task,
/// which feeds their messages into the pipeline and ends after `shutdown`
/// once every acknowledged message is handled. Must be called within the
/// runtime.
pub fn start(
    config: &Embedded,
    max_payload: usize,
    messages: Messages,
    tasks: &Tasks,
) -> Result<impl std::future::Future<Output = ()> + Send + use<>, BrokerError> {
    let shutdown = tasks.shutdown().clone();
    let bind_error = |source| BrokerError::Bind {
        addr: config.listen,
        source,
    };
    let listener = std::net::TcpListener::bind(config.listen).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(bind_error)?;
    let shared = Arc::new(server::Shared::new(
        config,
        max_payload,
        messages.rejects(),
        messages.routes(),
        messages.payload_limits(),
    ));
    // Present from the start, so that a dashboard sees 0 rather than nothing.
    telemetry::MQTT_BROKER_CONNECTIONS.set(0.0);
    telemetry::MQTT_SUBSCRIPTIONS.set(0.0);
    let (tx, rx) = mpsc::channel(INTAKE_QUEUE);
    tasks.spawn(server::accept_loop(listener, shared, tx, shutdown.clone()));
    tracing::info!(
        listen = %config.listen,
        logins = config.logins.len(),
        max_subscriptions = config.max_subscriptions,
        max_connections = config.max_connections,
        "MQTT intake server running"
    );
    Ok(intake(rx, messages, shutdown))
}

/// Hands queued messages to [`Messages`] until every sender is gone (the
/// accept loop and every connection, after `shutdown`).
async fn intake(
    mut rx: mpsc::Receiver<Intake>,
    mut messages: Messages,
    shutdown: CancellationToken,
) {
    let mut deadline: Option<Instant> = None;
    let mut closed = false;
    loop {
        let item = tokio::select! {
            // The grace comes first: under a flood `recv` is always ready.
            biased;
            _ = until(deadline), if !closed => {
                closed = true;
                rx.close();
                tracing::warn!(
                    "MQTT connections still busy {} s after shutdown began; their unacknowledged messages are refused",
                    DRAIN_LIMIT.as_secs()
                );
                continue;
            }
            _ = shutdown.cancelled(), if deadline.is_none() => {
                deadline = Some(Instant::now() + DRAIN_LIMIT);
                continue;
            }
            item = rx.recv() => item,
        };
        let Some(item) = item else {
            break;
        };
        let step = match item {
            Intake::Message {
                topic,
                route,
                payload,
            } => messages.handle_routed(&topic, route, &payload).await,
            Intake::Oversized { topic, size } => {
                messages.refuse_oversized(&topic, size);
                Ok(())
            }
        };
        if step.is_err() {
            // Dropping the queue stops every acknowledgement: a message
            // nobody will store must not be acknowledged.
            tracing::error!("the pipeline is gone: the MQTT intake stops");
            break;
        }
    }
    tracing::debug!("MQTT intake drained");
}

/// Waits until `deadline`; for ever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
