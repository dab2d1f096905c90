//! One client connection: its CONNECT within the timeout, the login and the
//! caps, then packets one at a time until the client leaves, breaks a rule,
//! goes silent or the daemon stops.
//!
//! A PUBLISH is first routed to its device and checked against the login's
//! scope; one outside it is counted and acknowledged, and goes no further.
//! Otherwise it is acknowledged (PUBACK, or PUBREC for QoS 2) only once it
//! is in the intake's queue; when that queue is full the connection waits
//! and reads nothing more, so TCP pushes back on the device instead of
//! memory filling up. Then it is passed on to the subscribers of its topic.
//! Acks for everything already read, and the messages passed on to this
//! connection's own subscriptions, are written before the connection waits
//! for more bytes.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Publish, SubAck,
    Subscribe, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{self, Error as CodecError, PacketType, Protocol, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Intake;
use super::limits::Full;
use super::login::shown;
use super::protocol::{self, Fault, PayloadSize, Version};
use super::report::Refusal;
use super::router::{self, Queued, Subscriber};
use super::server::{Admitted, READ_BUFFER, Shared, SocketSlot};
use crate::fix::{DeviceId, SourceKind};
use crate::sources::mqtt::scope::{Grant, Scope};
use crate::sources::mqtt::{Route, payload_is_for};
use crate::telemetry;

/// The write buffer's usual size: acks are 2 to 4 bytes each.
const WRITE_BUFFER: usize = 256;

/// Acks queued beyond this are written at once rather than after the
/// packets already read (a client pipelining thousands of messages).
const FLUSH_AT: usize = 4 * 1024;

/// Messages passed on to this connection's subscriptions that are taken
/// from its queue at once, before they are written out.
const PASS_BATCH: usize = 16;

/// How long a client may leave what it is sent unread before it is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// At shutdown: how long the last acks may take to go out.
const STOP_WRITE: Duration = Duration::from_secs(1);

/// After the last write: how long what the client still sends is read and
/// dropped before the socket closes (see [`Conn::close`]).
const LINGER: Duration = Duration::from_millis(500);

/// A packet larger than [`READ_BUFFER`] holds part of the shared budget
/// while it arrives; it must arrive whole within this.
const LARGE_PACKET_TIME: Duration = Duration::from_secs(60);

/// Why a connection ends.
#[derive(Debug)]
enum End {
    /// DISCONNECT, or the client closed its socket.
    Left,
    /// The daemon is stopping.
    Stopped,
    /// The intake stopped taking messages (past its shutdown grace, or the
    /// pipeline is gone): nothing more can be acknowledged.
    IntakeGone,
    /// The login or a cap refused the client; counted already.
    Refused,
    /// The server closes the connection for this.
    Fault(Fault, String),
}

/// A deadline and the fault its passing means.
type Deadline = Option<(Instant, Fault)>;

/// Serves one accepted connection to its end. `slot` holds the socket's
/// place under the connection cap until then.
#[expect(
    clippy::too_many_arguments,
    reason = "a connection task takes what it owns (socket, peer, shared state, queue, shutdown, slot) by value"
)]
pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Intake>,
    shutdown: CancellationToken,
    slot: SocketSlot,
) {
    // INFO, so that a warning about this connection carries who it was;
    // the span itself prints nothing.
    let span = tracing::info_span!(
        "mqtt",
        %peer,
        client = tracing::field::Empty,
        user = tracing::field::Empty
    );
    async move {
        tracing::debug!("connection accepted");
        let mut conn = Conn {
            stream,
            rbuf: BytesMut::with_capacity(READ_BUFFER),
            wbuf: BytesMut::with_capacity(WRITE_BUFFER),
            large: None,
            large_deadline: None,
            shared: shared.clone(),
            tx,
            shutdown,
            scope: None,
            subscriber: None,
        };
        let end = conn.serve(&slot).await;
        let broken = matches!(end, End::Fault(Fault::Io, _));
        match end {
            End::Left => tracing::debug!("connection closed by the client"),
            End::Stopped => tracing::debug!("connection closed: the daemon is stopping"),
            End::IntakeGone => tracing::debug!("connection closed: the intake has stopped"),
            End::Refused => tracing::debug!("connection refused"),
            End::Fault(fault, detail) => shared.report.fault(fault, &detail),
        }
        if !broken {
            conn.close().await;
        }
        drop(slot);
    }
    .instrument(span)
    .await;
}

/// The state of one connection.
struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet taken as packets.
    rbuf: BytesMut,
    /// Acks and answers not yet written.
    wbuf: BytesMut,
    /// The share of the large-packet budget held while a packet larger than
    /// [`READ_BUFFER`] arrives.
    large: Option<OwnedSemaphorePermit>,
    large_deadline: Option<Instant>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Intake>,
    shutdown: CancellationToken,
    /// What the login may do; set once it is let in.
    scope: Option<Arc<Scope>>,
    /// This connection's subscriptions and the queue of what is passed on
    /// to them; made by the first granted subscription, freed with the
    /// connection.
    subscriber: Option<Subscriber>,
}

impl Conn {
    async fn serve(&mut self, slot: &SocketSlot) -> End {
        let (keep_alive, _admitted, scope) = match self.handshake(slot).await {
            Ok(login) => login,
            Err(end) => return end,
        };
        self.scope = Some(scope);
        // 0 turns keep-alive off (MQTT 3.1.1, 3.1.2-10).
        let idle = (keep_alive > 0).then(|| Duration::from_secs(u64::from(keep_alive)) * 3 / 2);
        let mut awaiting_rel = Vec::new();
        loop {
            let deadline = idle.map(|d| (Instant::now() + d, Fault::KeepAlive));
            let packet = match self.next_packet(deadline, false).await {
                Ok(packet) => packet,
                Err(end) => return end,
            };
            let step = self.handle(packet, &mut awaiting_rel).await;
            self.after_packet();
            match step {
                Ok(true) => {}
                Ok(false) => return End::Left,
                Err(end) => return end,
            }
            // The packet in hand is done and acknowledged (the ack goes out
            // in `close`); nothing more is read.
            if self.shutdown.is_cancelled() {
                return End::Stopped;
            }
            if self.wbuf.len() >= FLUSH_AT {
                if let Err(end) = self.flush().await {
                    return end;
                }
            }
        }
    }

    /// CONNECT within the timeout, then the login and the caps; the
    /// client's keep-alive, its place under the caps and its scope.
    async fn handshake(&mut self, slot: &SocketSlot) -> Result<(u16, Admitted, Arc<Scope>), End> {
        let timeout = self.shared.settings.connection_timeout;
        let deadline = Some((Instant::now() + timeout, Fault::ConnectTimeout));
        let connect = match self.next_packet(deadline, true).await? {
            Packet::Connect(connect) => connect,
            other => {
                return Err(End::Fault(
                    Fault::UnexpectedPacket,
                    format!("the first packet was {}, not CONNECT", name(&other)),
                ));
            }
        };
        let span = tracing::Span::current();
        span.record("client", shown(&connect.client_id).as_ref());
        if let Some(l) = &connect.login {
            span.record("user", shown(&l.username).as_ref());
        }
        if connect.protocol != Protocol::V4 {
            // The version check before reading should have caught it.
            self.connack(ConnectReturnCode::RefusedProtocolVersion);
            return Err(End::Fault(
                Fault::ProtocolVersion,
                "a CONNECT for MQTT 5".into(),
            ));
        }
        if !protocol::client_id_ok(&connect) {
            self.connack(ConnectReturnCode::BadClientId);
            return Err(End::Fault(
                Fault::ClientId,
                "an empty client id without a clean session".into(),
            ));
        }
        let accounts = &self.shared.settings.accounts;
        let (bucket, scope) = match accounts.decide(connect.login.as_ref()) {
            Ok(decided) => decided,
            Err(refused) => {
                let label = accounts.label(connect.login.as_ref());
                let why = LoginRefused {
                    connect: &connect,
                    reason: refused.reason,
                };
                self.shared
                    .rejects
                    .reject(SourceKind::Mqtt, Some(label), refused.reason, &why);
                self.connack(refused.code);
                return Err(End::Refused);
            }
        };
        match slot.admit(bucket) {
            Ok(admitted) => {
                // No session is ever kept, so none is ever present.
                self.connack(ConnectReturnCode::Success);
                Ok((connect.keep_alive, admitted, scope))
            }
            Err(full) => {
                let (refusal, key) = match full {
                    Full::Total => (Refusal::MaxConnections, "mqtt.max_connections"),
                    Full::PerUser => (
                        Refusal::MaxConnectionsPerUser,
                        "mqtt.max_connections_per_user",
                    ),
                };
                let detail = format!(
                    "client {:?} refused (CONNACK 3): {key} reached",
                    shown(&connect.client_id)
                );
                self.shared.report.refused(refusal, 1, Some(&detail));
                self.connack(ConnectReturnCode::ServiceUnavailable);
                Err(End::Refused)
            }
        }
    }

    /// The next whole packet, reading as needed until `deadline`. `first`:
    /// the CONNECT, whose protocol version is checked before it is read.
    async fn next_packet(&mut self, deadline: Deadline, first: bool) -> Result<Packet, End> {
        let max_packet = self.shared.settings.max_packet;
        loop {
            if first {
                self.check_version()?;
            }
            let want = match Packet::read(&mut self.rbuf, max_packet) {
                Ok(packet) => return Ok(packet),
                Err(CodecError::InsufficientBytes(more)) => self.rbuf.len().saturating_add(more),
                Err(CodecError::PayloadSizeLimitExceeded(len)) => {
                    return Err(End::Fault(
                        Fault::TooLarge,
                        format!("a packet of {len} bytes, over the {max_packet} read"),
                    ));
                }
                Err(err) => return Err(End::Fault(Fault::Malformed, err.to_string())),
            };
            // Nothing whole is left to act on: the acks, and what is queued
            // for this connection's subscriptions, go out before the
            // connection waits for anything.
            self.take_passed();
            self.flush().await?;
            if want > READ_BUFFER {
                self.hold_large(want, deadline).await?;
            }
            self.rbuf
                .reserve(want.max(READ_BUFFER).saturating_sub(self.rbuf.len()));
            let deadline = earliest(deadline, self.large_deadline());
            tokio::select! {
                _ = self.shutdown.cancelled() => return Err(End::Stopped),
                fault = expiry(deadline) => return Err(timed_out(fault, &self.shared)),
                read = self.stream.read_buf(&mut self.rbuf) => match read {
                    Ok(0) => return Err(End::Left),
                    Ok(_) => {}
                    Err(err) => return Err(End::Fault(Fault::Io, err.to_string())),
                },
                queued = next_passed(&mut self.subscriber) => write_passed(&mut self.wbuf, &queued),
            }
        }
    }

    /// Takes what is queued for this connection's subscriptions into the
    /// write buffer: up to [`PASS_BATCH`] messages, or until it is full
    /// enough to be written.
    fn take_passed(&mut self) {
        let Some(subscriber) = self.subscriber.as_mut() else {
            return;
        };
        for _ in 0..PASS_BATCH {
            if self.wbuf.len() >= FLUSH_AT {
                break;
            }
            let Some(queued) = subscriber.try_recv() else {
                break;
            };
            write_passed(&mut self.wbuf, &queued);
        }
    }

    /// Looks at a whole CONNECT's protocol before the codec reads it: the
    /// codec knows only 3.1.1, so a 3.1 CONNECT is rewritten as one, and any
    /// other version gets CONNACK 1.
    fn check_version(&mut self) -> Result<(), End> {
        let max_packet = self.shared.settings.max_packet;
        // Not whole yet, or broken: the codec's read says which.
        let Ok(header) = mqttbytes::check(self.rbuf.iter(), max_packet) else {
            return Ok(());
        };
        if !matches!(header.packet_type(), Ok(PacketType::Connect)) {
            return Ok(());
        }
        let Some(frame) = self.rbuf.get(..header.frame_length()) else {
            return Ok(());
        };
        match protocol::version(frame) {
            Some(Version::V311) => Ok(()),
            Some(Version::V31) => {
                if let Some(mut fixed) = protocol::v31_as_v311(frame) {
                    fixed.extend_from_slice(&self.rbuf[header.frame_length()..]);
                    self.rbuf = fixed;
                }
                Ok(())
            }
            Some(Version::Unsupported) => {
                self.connack(ConnectReturnCode::RefusedProtocolVersion);
                Err(End::Fault(
                    Fault::ProtocolVersion,
                    "a CONNECT for a protocol other than MQTT 3.1.1 or 3.1 (answered CONNACK 1)"
                        .into(),
                ))
            }
            None => Err(End::Fault(
                Fault::Malformed,
                "a CONNECT too short for its protocol name".into(),
            )),
        }
    }

    /// Takes `want` bytes of the large-packet budget for the packet coming
    /// in, waiting (and reading nothing) while other connections hold it.
    async fn hold_large(&mut self, want: usize, deadline: Deadline) -> Result<(), End> {
        if self
            .large
            .as_ref()
            .is_some_and(|held| held.num_permits() >= want)
        {
            return Ok(());
        }
        // Never hold a share while waiting for more: two connections doing
        // that could wait for each other for ever.
        self.large = None;
        let Ok(permits) = u32::try_from(want) else {
            return Err(End::Fault(
                Fault::TooLarge,
                format!("a packet of {want} bytes"),
            ));
        };
        let budget = self.shared.budget.clone();
        let permit = tokio::select! {
            _ = self.shutdown.cancelled() => return Err(End::Stopped),
            fault = expiry(deadline) => return Err(timed_out(fault, &self.shared)),
            permit = budget.acquire_many_owned(permits) => permit.map_err(|_| End::Stopped)?,
        };
        self.large = Some(permit);
        self.large_deadline = Some(Instant::now() + LARGE_PACKET_TIME);
        Ok(())
    }

    fn large_deadline(&self) -> Deadline {
        self.large_deadline.map(|at| (at, Fault::PacketTimeout))
    }

    /// After a packet: a read buffer grown for a large one goes back to its
    /// usual size, with its share of the budget, unless the next large one
    /// is already arriving in it.
    fn after_packet(&mut self) {
        if self.large.is_none() {
            return;
        }
        if self.rbuf.len() <= READ_BUFFER {
            // A fresh buffer: the grown one is freed whole (a `BytesMut`
            // keeps its allocation however little of it is in view).
            let mut fresh = BytesMut::with_capacity(READ_BUFFER);
            fresh.extend_from_slice(&self.rbuf);
            self.rbuf = fresh;
            self.large = None;
            self.large_deadline = None;
        } else {
            self.large_deadline = Some(Instant::now() + LARGE_PACKET_TIME);
        }
    }

    /// Acts on one packet; `Ok(false)` when the client said DISCONNECT.
    async fn handle(&mut self, packet: Packet, awaiting_rel: &mut Vec<u16>) -> Result<bool, End> {
        match packet {
            Packet::Publish(publish) => self.publish(publish, awaiting_rel).await?,
            Packet::PubRel(rel) => {
                awaiting_rel.retain(|&id| id != rel.pkid);
                self.send(Packet::PubComp(PubComp::new(rel.pkid)));
            }
            Packet::Subscribe(subscribe) => self.subscribe(subscribe),
            Packet::Unsubscribe(unsubscribe) => {
                for filter in &unsubscribe.topics {
                    self.shared
                        .router
                        .unsubscribe(self.subscriber.as_ref(), filter);
                }
                self.send(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)));
            }
            Packet::PingReq => self.send(Packet::PingResp),
            Packet::Disconnect => return Ok(false),
            other => {
                return Err(End::Fault(
                    Fault::UnexpectedPacket,
                    format!("{} from a client", name(&other)),
                ));
            }
        }
        Ok(true)
    }

    /// Grants each filter within the login's scope and the caps (QoS 0:
    /// what is passed on is never acknowledged or sent again), refuses the
    /// rest with 0x80; refusals are counted, and logged once a minute per
    /// reason with the first filter of the packet refused for it.
    fn subscribe(&mut self, subscribe: Subscribe) {
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut refused: Vec<(Refusal, &str, usize)> = Vec::new();
        for filter in &subscribe.filters {
            let grant = match self.scope.as_deref() {
                Some(scope) => scope.grant(&filter.path),
                None => Grant::OutOfScope,
            };
            let refusal = match grant {
                Grant::Granted => {
                    match self
                        .shared
                        .router
                        .subscribe(&mut self.subscriber, &filter.path)
                    {
                        Ok(()) => None,
                        Err(router::Full::PerConnection) => {
                            Some(Refusal::MaxSubscriptionsPerConnection)
                        }
                        Err(router::Full::Total) => Some(Refusal::MaxSubscriptions),
                    }
                }
                Grant::OutOfScope => Some(Refusal::SubscribeScope),
                Grant::BadFilter => Some(Refusal::BadFilter),
            };
            codes.push(match refusal {
                None => SubscribeReasonCode::Success(QoS::AtMostOnce),
                Some(refusal) => {
                    match refused.iter_mut().find(|(r, _, _)| *r == refusal) {
                        Some((_, _, n)) => *n += 1,
                        None => refused.push((refusal, &filter.path, 1)),
                    }
                    SubscribeReasonCode::Failure
                }
            });
        }
        for (refusal, first, n) in refused {
            let why = match refusal {
                Refusal::SubscribeScope => "outside this login's subscribe scope",
                Refusal::BadFilter => "not a valid topic filter",
                Refusal::MaxSubscriptionsPerConnection => {
                    "mqtt.max_subscriptions_per_connection reached"
                }
                _ => "mqtt.max_subscriptions reached",
            };
            let detail = format!(
                "SUBSCRIBE to {:?}{} answered with failure (0x80): {why}",
                shown(first),
                match n {
                    1 => String::new(),
                    n => format!(" and {} more filters", n - 1),
                }
            );
            self.shared.report.refused(refusal, n, Some(&detail));
        }
        self.send(Packet::SubAck(SubAck::new(subscribe.pkid, codes)));
    }

    /// Whether this connection's login may publish to a topic that routes
    /// to `device` (`None`: to no device). Nothing before the login.
    fn may_publish(&self, device: Option<&DeviceId>) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|scope| scope.may_publish(device))
    }

    /// Counts a PUBLISH refused for the login's scope; the first of a
    /// minute is logged.
    fn refuse_publish(&self, topic: &str, route: &Route) {
        let device = route.device();
        let detail = match device {
            Some(device) => format!(
                "PUBLISH to {:?} for device {device} refused: outside this login's publish scope; acknowledged and dropped",
                shown(topic)
            ),
            None => format!(
                "PUBLISH to {:?} refused: the topic names no device, and this login may publish only for its devices; acknowledged and dropped",
                shown(topic)
            ),
        };
        self.shared
            .report
            .refused(Refusal::PublishScope, 1, Some(&detail));
        self.shared.rejects.count(
            SourceKind::Mqtt,
            device.map(DeviceId::as_str),
            "not_allowed",
        );
    }

    /// What to pass on to subscribers once the message is accepted: only
    /// while anyone subscribes, and only a payload that names no device
    /// but its topic's (see [`payload_is_for`]).
    fn to_pass_on(&self, topic: &str, route: &Route, payload: &Bytes) -> Option<(String, Bytes)> {
        if !self.shared.router.active() {
            return None;
        }
        if let Route::Device(device, format) = route {
            if !payload_is_for(device, *format, payload, &self.shared.payload_limits) {
                return None;
            }
        }
        Some((topic.to_owned(), payload.clone()))
    }

    /// Queues an accepted message for the subscribers of its topic; those
    /// whose queue is full miss it (counted).
    fn pass_on(&self, topic: &str, payload: &Bytes) {
        let passed = self.shared.router.pass_on(topic, payload);
        if passed.queued > 0 {
            telemetry::MQTT_PASSED_ON.increment(passed.queued as u64);
        }
        if passed.dropped > 0 {
            self.shared
                .report
                .dropped_for_slow_subscribers(passed.dropped, topic);
        }
    }

    #[expect(
        clippy::too_many_lines,
        reason = "MQTT's PUBLISH rules (scope, size, retain, QoS 0/1/2) apply in order to one packet"
    )]
    async fn publish(&mut self, publish: Publish, awaiting_rel: &mut Vec<u16>) -> Result<(), End> {
        let Publish {
            qos,
            retain,
            topic,
            pkid,
            payload,
            ..
        } = publish;
        if !protocol::topic_ok(&topic) {
            return Err(End::Fault(
                Fault::BadTopic,
                format!("a PUBLISH to {:?}", shown(&topic)),
            ));
        }
        if qos == QoS::ExactlyOnce && awaiting_rel.contains(&pkid) {
            // Sent again before its PUBREL: it was delivered already.
            self.send(Packet::PubRec(PubRec::new(pkid)));
            return Ok(());
        }
        let max_inflight = self.shared.settings.max_inflight;
        if qos == QoS::ExactlyOnce && awaiting_rel.len() >= max_inflight {
            return Err(End::Fault(
                Fault::Inflight,
                format!(
                    "more than mqtt.max_inflight = {max_inflight} QoS 2 messages awaiting PUBREL"
                ),
            ));
        }
        let len = payload.len();
        let size = protocol::payload_size(len, self.shared.settings.max_payload);
        let route = self.shared.routes.route(&topic);
        if !self.may_publish(route.device()) {
            // Refused, but acknowledged as usual below: MQTT 3.1.1 has no
            // negative ack, and a message left unacknowledged would be sent
            // again for ever.
            drop(payload);
            self.refuse_publish(&topic, &route);
        } else {
            if retain {
                // Handled as a normal message: nothing is ever kept for
                // later subscribers. An empty one (MQTT's "clear the
                // retained message") has nothing to handle and is only
                // counted.
                let detail = format!(
                    "retained message to {:?} handled as a normal one; nothing is kept",
                    shown(&topic)
                );
                let detail: Option<&dyn fmt::Display> = (len > 0).then_some(&detail);
                self.shared.report.refused(Refusal::Retain, 1, detail);
            }
            let item = match size {
                _ if retain && len == 0 => None,
                PayloadSize::Within => {
                    // Copied out: a view would keep the whole read buffer
                    // alive in the queue.
                    let payload = Bytes::copy_from_slice(&payload);
                    let pass_on = self.to_pass_on(&topic, &route, &payload);
                    let item = Intake::Message {
                        topic,
                        route,
                        payload,
                    };
                    Some((item, pass_on))
                }
                // Counted for the device by the intake, which knows the
                // topics; never passed on.
                PayloadSize::Oversized | PayloadSize::TooLarge => {
                    Some((Intake::Oversized { topic, size: len }, None))
                }
            };
            drop(payload);
            if let Some((item, pass_on)) = item {
                self.deliver(item).await?;
                if let Some((topic, payload)) = pass_on {
                    self.pass_on(&topic, &payload);
                }
            }
        }
        if size == PayloadSize::TooLarge {
            return Err(End::Fault(
                Fault::TooLarge,
                format!(
                    "a payload of {len} bytes, over four times mqtt.max_payload = {}",
                    self.shared.settings.max_payload
                ),
            ));
        }
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(Packet::PubAck(PubAck::new(pkid))),
            QoS::ExactlyOnce => {
                awaiting_rel.push(pkid);
                self.send(Packet::PubRec(PubRec::new(pkid)));
            }
        }
        Ok(())
    }

    /// Puts a message into the intake's queue, waiting while it is full.
    async fn deliver(&mut self, item: Intake) -> Result<(), End> {
        match self.tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(item)) => {
                // The acks so far go out; then this connection waits, reading
                // nothing, until the intake has room. No shutdown check: the
                // intake drains at shutdown, and past its grace it closes the
                // queue, which ends this wait.
                self.flush().await?;
                self.tx.send(item).await.map_err(|_| End::IntakeGone)
            }
            Err(TrySendError::Closed(_)) => Err(End::IntakeGone),
        }
    }

    /// Queues a packet for the client.
    fn send(&mut self, packet: Packet) {
        // Acks and CONNACKs always encode; the size limit is not ours to hit.
        if let Err(err) = packet.write(&mut self.wbuf, usize::MAX) {
            tracing::debug!("cannot encode an answer: {err}");
        }
    }

    fn connack(&mut self, code: ConnectReturnCode) {
        self.send(Packet::ConnAck(ConnAck::new(code, false)));
    }

    /// Writes what is queued; a client that does not take it within
    /// [`WRITE_TIMEOUT`] ([`STOP_WRITE`] once the daemon is stopping) is
    /// dropped.
    async fn flush(&mut self) -> Result<(), End> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let mut stopping = self.shutdown.is_cancelled();
        let mut deadline = Instant::now() + if stopping { STOP_WRITE } else { WRITE_TIMEOUT };
        while !self.wbuf.is_empty() {
            tokio::select! {
                written = self.stream.write_buf(&mut self.wbuf) => match written {
                    Ok(0) => return Err(End::Fault(Fault::Io, "the socket closed under the acks".into())),
                    Ok(_) => {}
                    Err(err) => return Err(End::Fault(Fault::Io, err.to_string())),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(End::Fault(Fault::Io, "the client does not read what it is sent".into()));
                }
                _ = self.shutdown.cancelled(), if !stopping => {
                    stopping = true;
                    deadline = deadline.min(Instant::now() + STOP_WRITE);
                }
            }
        }
        if self.wbuf.capacity() > FLUSH_AT {
            self.wbuf = BytesMut::with_capacity(WRITE_BUFFER);
        }
        Ok(())
    }

    /// Writes the last answers (a CONNACK that refuses, the acks of the
    /// packet in hand), then closes: a FIN, and whatever the client still
    /// sends is read and dropped for up to [`LINGER`]. Closing a socket with
    /// unread data sends a reset, which can destroy those answers before the
    /// client reads them.
    async fn close(mut self) {
        if self.flush().await.is_err() {
            return;
        }
        let stream = &mut self.stream;
        let _ = tokio::time::timeout(LINGER, async {
            if stream.shutdown().await.is_err() {
                return;
            }
            let mut sink = [0u8; 256];
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    return;
                }
            }
        })
        .await;
    }
}

/// Why a login was refused, for the log: names from outside are cut short.
struct LoginRefused<'a> {
    connect: &'a Connect,
    reason: &'static str,
}

impl fmt::Display for LoginRefused<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let client = shown(&self.connect.client_id);
        match &self.connect.login {
            Some(l) => write!(
                f,
                "MQTT login of user {:?} (client {client:?}) refused: {}",
                shown(&l.username),
                self.reason
            ),
            None => write!(
                f,
                "MQTT client {client:?} sent no credentials: refused ({})",
                self.reason
            ),
        }
    }
}

/// The next message queued for the connection's subscriptions; for ever
/// without any (the queue cannot close while its [`Subscriber`] lives, but
/// a closed one must not make the caller spin).
async fn next_passed(subscriber: &mut Option<Subscriber>) -> Queued {
    if let Some(subscriber) = subscriber {
        if let Some(queued) = subscriber.recv().await {
            return queued;
        }
    }
    std::future::pending().await
}

/// Writes a message passed on to this connection: a QoS 0 PUBLISH, never
/// retained. Its share of the queue's byte budgets is given back as it is
/// copied into the write buffer.
fn write_passed(wbuf: &mut BytesMut, queued: &Queued) {
    let publish = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: queued.message.topic.clone(),
        pkid: 0,
        payload: queued.message.payload.clone(),
    };
    if let Err(err) = Packet::Publish(publish).write(wbuf, usize::MAX) {
        tracing::debug!("cannot encode a message passed on: {err}");
    }
}

/// The earlier of two deadlines.
fn earliest(a: Deadline, b: Deadline) -> Deadline {
    match (a, b) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Waits for `deadline` and says which fault it was; for ever without one.
async fn expiry(deadline: Deadline) -> Fault {
    match deadline {
        Some((at, fault)) => {
            tokio::time::sleep_until(at).await;
            fault
        }
        None => std::future::pending().await,
    }
}

fn timed_out(fault: Fault, shared: &Shared) -> End {
    let detail = match fault {
        Fault::ConnectTimeout => format!(
            "no CONNECT within mqtt.connection_timeout = {:?}",
            shared.settings.connection_timeout
        ),
        Fault::KeepAlive => "nothing received for 1.5 times the keep-alive".to_owned(),
        Fault::PacketTimeout => format!(
            "a large packet not received whole within {} s",
            LARGE_PACKET_TIME.as_secs()
        ),
        other => other.as_str().to_owned(),
    };
    End::Fault(fault, detail)
}

/// A packet's name, for messages.
fn name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}
