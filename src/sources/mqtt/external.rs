//! Subscribing to an existing broker (rumqttc): a depot's own broker, or a
//! shared one that several gateways split with `$share/<group>/…`.
//!
//! One task owns the event loop and does nothing but poll it and hand
//! messages on (rumqttc stalls when the polling task also awaits requests).
//! The session is persistent (`clean_session = false`, stable client id), so
//! QoS 1 messages published while the gateway was away are delivered when
//! it comes back.

use std::collections::VecDeque;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, QoS};
use tokio_util::sync::CancellationToken;

use super::Messages;
use crate::config::External;
use crate::telemetry;
use crate::tls::TlsError;
use crate::util::backoff::Backoff;

/// Largest MQTT packet read. Far above any accepted payload on purpose: a
/// packet over rumqttc's limit drops the connection, and the broker would
/// then redeliver the same message forever; below this the payload is
/// read and rejected as `oversized` instead.
const MAX_PACKET: usize = 16 * 1024 * 1024;

/// The subscription filter for `filter` under an optional shared group.
pub fn shared(filter: &str, group: Option<&str>) -> String {
    match group {
        Some(g) => format!("$share/{g}/{filter}"),
        None => filter.to_owned(),
    }
}

/// Connects to the broker and feeds its messages into `messages` until `shutdown`.
#[expect(
    clippy::too_many_lines,
    reason = "the client's event loop with its connect, subscribe and error arms, which share its state"
)]
pub fn start(
    config: &External,
    gateway: &str,
    mut messages: Messages,
    shutdown: CancellationToken,
) -> Result<impl std::future::Future<Output = ()> + Send + use<>, TlsError> {
    let mut options =
        crate::util::mqtt_client::options(&config.broker, format!("fixgate-{gateway}"), None)?;
    let client_id = options.client_id();
    options
        .set_clean_session(false)
        // A message is acknowledged only once its fixes are in the
        // pipeline's queue: one that arrived just before a shutdown or a
        // crash is delivered again by the broker, not lost.
        .set_manual_acks(true)
        .set_max_packet_size(MAX_PACKET, 64 * 1024);
    let filters: Vec<String> = messages
        .filters()
        .iter()
        .map(|f| shared(f, config.share_group.as_deref()))
        .collect();
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let host = format!("{}:{}", config.broker.host, config.broker.port);
    Ok(async move {
        let mut back_off = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut connected = false;
        // The first failure of a run of them is a warning, the rest debug:
        // a broker that stays away must not flood the journal.
        let mut warned = false;
        let mut unacked: VecDeque<rumqttc::Publish> = VecDeque::new();
        loop {
            // An ack that does not fit the request queue now is tried again
            // on the next turn: one left out for good would hold a slot of
            // the broker's in-flight window until the next reconnect, and a
            // full window stops delivery. (Awaiting here could deadlock: only
            // this task drains the queue.)
            while let Some(publish) = unacked.front() {
                if client.try_ack(publish).is_err() {
                    break;
                }
                unacked.pop_front();
            }
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                e = eventloop.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                    connected = true;
                    warned = false;
                    back_off.reset();
                    telemetry::MQTT_CONNECTED.set(1.0);
                    tracing::info!(broker = %host, client_id, session_present = ack.session_present, "connected to the MQTT broker");
                    // Subscribing again on a kept session is harmless, and
                    // covers a broker that lost it.
                    for filter in &filters {
                        if let Err(err) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                            tracing::error!(filter, "cannot subscribe: {err}");
                        }
                    }
                }
                Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                    telemetry::MQTT_SUBSCRIBED.set(1.0);
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                    {
                        tracing::error!(broker = %host, "the broker refused a subscription: {filters:?}");
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(publish))) => {
                    if messages
                        .handle(&publish.topic, &publish.payload)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    unacked.push_back(publish);
                }
                Ok(_) => {}
                Err(err) => {
                    // Acks do not survive the connection; the broker sends
                    // those messages again in the resumed session.
                    unacked.clear();
                    telemetry::MQTT_CONNECTED.set(0.0);
                    telemetry::MQTT_SUBSCRIBED.set(0.0);
                    telemetry::MQTT_CONNECTION_ERRORS.increment(1);
                    if connected {
                        tracing::warn!(broker = %host, "MQTT connection lost, reconnecting: {err}");
                    } else if !warned {
                        tracing::warn!(broker = %host, "cannot connect to the MQTT broker, retrying: {err}");
                    } else {
                        tracing::debug!(broker = %host, "MQTT connection failed: {err}");
                    }
                    warned = true;
                    connected = false;
                    // The next poll reconnects; the pause keeps a dead broker
                    // from being hammered.
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(back_off.next_wait()) => {}
                    }
                }
            }
        }
        let _ = client.try_disconnect();
    })
}
