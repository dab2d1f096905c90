//! MQTT transport: QoS 1 publishes to the upstream broker (rumqttc).
//!
//! rumqttc drops QoS 1 messages in flight when it reconnects to a broker
//! that kept no session for it, so this transport trusts nothing it holds:
//! every connection is a fresh client and event loop (clean session), and
//! after each CONNACK the core re-sends every batch not yet acknowledged.
//! rumqttc does not return packet ids from `publish`; acknowledgements are
//! paired with batches by the order of its `Outgoing::Publish(pkid)`
//! events, which follow the order of our publishes on one event loop.

use std::collections::{HashMap, VecDeque};

use rumqttc::{AsyncClient, ConnectReturnCode, Event, Incoming, MqttOptions, Outgoing, QoS};
use tokio::sync::mpsc;

use super::transport::{self, FromTransport, Side, ToTransport};
use crate::config::UplinkMqtt;
use crate::tls::TlsError;
use crate::util::backoff::Backoff;

/// Builds the client options once; TLS files are read now, so that a bad
/// path fails at start-up rather than on every reconnect.
pub fn options(
    config: &UplinkMqtt,
    gateway: &str,
    max_in_flight: usize,
) -> Result<MqttOptions, TlsError> {
    let mut options = crate::util::mqtt_client::options(
        &config.broker,
        format!("fixgate-{gateway}-up"),
        config.client_cert.as_ref(),
    )?;
    options
        // A publisher has nothing for a broker session to keep: the core
        // re-sends what is unacknowledged on every new connection.
        .set_clean_session(true)
        .set_inflight(u16::try_from(max_in_flight).unwrap_or(u16::MAX))
        .set_max_packet_size(64 * 1024, crate::wire::MAX_BATCH_BYTES + 1024);
    Ok(options)
}

/// Where the batches go: the broker and the topic, with the publishes one
/// connection may have unacknowledged.
pub struct Target {
    /// The broker and the client's options.
    pub options: MqttOptions,
    /// The topic, the gateway's id filled in.
    pub topic: String,
    /// Publishes in flight at once.
    pub max_in_flight: usize,
}

/// Runs connections one after another until the side's shutdown.
pub async fn run(target: Target, mut backoff: Backoff, side: Side) {
    let Side {
        mut rx,
        tx,
        shutdown,
    } = side;
    let peer = format!(
        "{}:{}",
        target.options.broker_address().0,
        target.options.broker_address().1
    );
    let mut generation = 0u64;
    loop {
        generation += 1;
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = connection(&target, generation, &mut rx, &tx) => outcome,
        };
        let reason = match outcome {
            Ended::Shutdown => return,
            Ended::Lost { reason, was_up } => {
                if was_up {
                    backoff.reset();
                }
                reason
            }
        };
        tracing::debug!(%peer, "uplink: connection {generation} lost: {reason}");
        if !transport::lost(&tx, generation, reason, &mut backoff, &shutdown).await {
            return;
        }
    }
}

enum Ended {
    Shutdown,
    Lost { reason: String, was_up: bool },
}

/// One connection, from CONNECT until it fails or the core asks for a new one.
async fn connection(
    target: &Target,
    generation: u64,
    rx: &mut mpsc::Receiver<ToTransport>,
    tx: &mpsc::Sender<FromTransport>,
) -> Ended {
    let Target {
        options,
        topic,
        max_in_flight,
    } = target;
    let max_in_flight = *max_in_flight;
    // The request channel is never the bottleneck: at most `max_in_flight`
    // publishes wait in it, so `try_publish` below cannot find it full.
    let (client, mut eventloop) = AsyncClient::new(options.clone(), max_in_flight + 4);
    let mut up = false;
    // Tokens published, waiting for their packet id; then by packet id.
    let mut unpaired: VecDeque<u64> = VecDeque::new();
    let mut by_pkid: HashMap<u16, u64> = HashMap::new();
    loop {
        tokio::select! {
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                    if ack.code != ConnectReturnCode::Success {
                        return Ended::Lost { reason: format!("broker refused: {:?}", ack.code), was_up: false };
                    }
                    up = true;
                    if tx.send(FromTransport::Connected { generation }).await.is_err() {
                        return Ended::Shutdown;
                    }
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    if let Some(token) = unpaired.pop_front() {
                        by_pkid.insert(pkid, token);
                    }
                }
                Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                    if let Some(token) = by_pkid.remove(&ack.pkid) {
                        if tx.send(FromTransport::Acked { token }).await.is_err() {
                            return Ended::Shutdown;
                        }
                    }
                }
                Ok(_) => {}
                Err(err) => return Ended::Lost { reason: err.to_string(), was_up: up },
            },
            // The core keeps at most `max_in_flight` unacknowledged, and
            // sends for a generation only after its `Connected`.
            message = rx.recv() => match message {
                None => return Ended::Shutdown,
                Some(ToTransport::Send { generation: g, token, bytes }) if g == generation => {
                    // `try_publish` never waits, so this task keeps polling.
                    match client.try_publish(topic, QoS::AtLeastOnce, false, bytes.as_ref().clone()) {
                        Ok(()) => unpaired.push_back(token),
                        Err(err) => return Ended::Lost { reason: format!("publish: {err}"), was_up: up },
                    }
                }
                Some(ToTransport::Reconnect { generation: g }) if g == generation => {
                    return Ended::Lost { reason: "no acknowledgement in time".into(), was_up: up };
                }
                // For a connection that is gone: the core re-sends it.
                Some(_) => {}
            },
        }
    }
}
