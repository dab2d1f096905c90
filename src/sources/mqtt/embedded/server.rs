//! The accept loop and what every connection shares: the settings, the
//! connection accounting, the budget for large packets, the reports.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::Intake;
use super::limits::Limits;
use super::login::{Accounts, Bucket};
use super::protocol::{self, Fault};
use super::report::{Refusal, Report};
use super::router::Router;
use super::session;
use crate::config::Embedded;
use crate::sources::intake::Rejects;
use crate::sources::mqtt::Routes;
use crate::sources::payload;
use crate::telemetry;

/// Read buffer every connection starts with, and returns to after a large
/// packet: a JSON fix, an OwnTracks message or an NMEA epoch fits.
pub const READ_BUFFER: usize = 2 * 1024;

/// Bytes that packets larger than [`READ_BUFFER`] may hold at once, all
/// connections together (or the largest packet twice, if that is more):
/// a thousand clients each sending one large packet cannot take more.
const LARGE_PACKET_BUDGET: usize = 16 * 1024 * 1024;

/// Pause after a failed `accept` (out of file descriptors, typically), so
/// that the loop does not spin on an error that persists.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The configured limits a connection applies.
#[derive(Debug)]
pub struct Settings {
    /// The logins and their scopes; none: anonymous access.
    pub accounts: Accounts,
    /// Time to send CONNECT.
    pub connection_timeout: Duration,
    /// `mqtt.max_payload`.
    pub max_payload: usize,
    /// The largest remaining length read, from [`protocol::max_packet`].
    pub max_packet: usize,
    /// QoS 2 messages awaiting PUBREL per connection.
    pub max_inflight: usize,
}

/// What every connection of one server shares.
#[derive(Debug)]
pub struct Shared {
    /// The limits.
    pub settings: Settings,
    limits: Mutex<Limits>,
    /// Bytes for packets larger than [`READ_BUFFER`], one permit a byte.
    pub budget: Arc<Semaphore>,
    /// Counts and logs of faults and refusals.
    pub report: Report,
    /// Refused logins and publishes, counted like any rejected input.
    pub rejects: Arc<Rejects>,
    /// Topic → device, for the publish scope.
    pub routes: Arc<Routes>,
    /// What payloads are read within (to check one before passing it on).
    pub payload_limits: payload::Limits,
    /// The subscriptions, and messages passed on to them.
    pub router: Arc<Router>,
}

impl Shared {
    /// The shared state for `config`, with the intake's counters, topic
    /// patterns and payload limits.
    pub fn new(
        config: &Embedded,
        max_payload: usize,
        rejects: Arc<Rejects>,
        routes: Arc<Routes>,
        payload_limits: payload::Limits,
    ) -> Self {
        let max_packet = protocol::max_packet(max_payload);
        // Whole packets, fixed header (at most 5 bytes) included.
        let largest = max_packet.saturating_add(5);
        let budget = LARGE_PACKET_BUDGET
            .max(largest.saturating_mul(2))
            .min(Semaphore::MAX_PERMITS);
        Self {
            settings: Settings {
                accounts: Accounts::new(config),
                connection_timeout: config.connection_timeout,
                max_payload,
                max_packet,
                max_inflight: config.max_inflight,
            },
            limits: Mutex::new(Limits::new(
                config.max_connections,
                config.max_connections_per_user,
            )),
            budget: Arc::new(Semaphore::new(budget)),
            report: Report::default(),
            rejects,
            routes,
            payload_limits,
            router: Arc::new(Router::new(
                config.max_subscriptions,
                config.max_subscriptions_per_connection,
                max_payload,
            )),
        }
    }

    /// The accounting; a poisoned lock (a panic while counting) keeps
    /// counting: the counts are plain integers, never half-updated.
    fn limits(&self) -> MutexGuard<'_, Limits> {
        self.limits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A socket's place under `max_connections` plus the handshake room; given
/// back when dropped.
#[derive(Debug)]
pub struct SocketSlot(Arc<Shared>);

impl SocketSlot {
    fn open(shared: &Arc<Shared>) -> Option<Self> {
        shared.limits().open_socket().then(|| Self(shared.clone()))
    }

    /// Lets the logged-in client of this socket in, or says which cap it hit.
    pub fn admit(&self, bucket: Bucket) -> Result<Admitted, super::limits::Full> {
        self.0.limits().admit(&bucket)?;
        telemetry::MQTT_BROKER_CONNECTS.increment(1);
        telemetry::MQTT_BROKER_CONNECTIONS.get().increment(1.0);
        Ok(Admitted {
            shared: self.0.clone(),
            bucket,
        })
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.0.limits().close_socket();
    }
}

/// A connected client's place under the caps; given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    shared: Arc<Shared>,
    bucket: Bucket,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.shared.limits().leave(&self.bucket);
        telemetry::MQTT_BROKER_CONNECTIONS.get().decrement(1.0);
    }
}

/// Accepts connections until `shutdown`, a task each; then drops the
/// listener (new connections are refused by the kernel) and its sender.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Intake>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                shared.report.fault(Fault::Accept, &err);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_PAUSE) => continue,
                }
            }
        };
        let Some(slot) = SocketSlot::open(&shared) else {
            // Not even room to say why: the socket is closed unanswered.
            refuse_at_once(&shared, peer);
            continue;
        };
        // Acks are small writes; Nagle would hold each back for the
        // previous one's ACK.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, "cannot set TCP_NODELAY: {err}");
        }
        tokio::spawn(session::run(
            stream,
            peer,
            shared.clone(),
            tx.clone(),
            shutdown.clone(),
            slot,
        ));
    }
    tracing::debug!("MQTT intake server stopped accepting connections");
}

fn refuse_at_once(shared: &Shared, peer: SocketAddr) {
    shared.report.refused(
        Refusal::MaxConnections,
        1,
        Some(&format_args!(
            "connection from {peer} closed unanswered: mqtt.max_connections reached and {} more are logging in",
            super::limits::HANDSHAKE_ROOM
        )),
    );
}
