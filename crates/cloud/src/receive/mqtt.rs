//! Batches from an MQTT broker (rumqttc), at least once.
//!
//! The session is persistent (`clean_session = false`, a stable client id),
//! so the broker keeps QoS 1 batches published while the receiver is down.
//! Acknowledgements are manual and sent only once the sink has flushed the
//! batch's lines: a receiver killed halfway gets the batch again.
//!
//! One task does nothing but poll the event loop and forward its events;
//! the receiving loop never awaits the client (rumqttc freezes when the
//! polling side waits on its own request queue): acks go out with
//! `try_ack`, retried on the next turn when the queue is full.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, MqttOptions, Outgoing, Publish, QoS,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::output::Origin;
use super::report;
use super::sink::{Sink, Verdict};
use crate::tls::{self, ClientCert};
use crate::wire::MAX_BATCH_BYTES;

/// Largest MQTT packet read: well above the largest batch, so that an
/// oversized one is read and refused (and acknowledged). A packet over the
/// client's limit drops the connection instead, and the broker would send it
/// again forever.
const MAX_PACKET: usize = 4 * MAX_BATCH_BYTES;

/// First wait after a failed connection; doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(250);

/// Longest wait between connection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// How long a stopping receiver keeps polling to send the acks of batches
/// already written, so that they are not delivered again next time.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Where and how to subscribe.
#[derive(Debug, Clone)]
pub struct MqttSource {
    /// The broker's host.
    pub host: String,
    /// The broker's port.
    pub port: u16,
    /// The subscription filter (`fixgate/+/batches`).
    pub topic: String,
    /// The client id: the broker keeps the session under it.
    pub client_id: String,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// TLS settings; `None` for plain TCP.
    pub tls: Option<TlsSource>,
}

/// TLS towards the broker.
#[derive(Debug, Clone)]
pub struct TlsSource {
    /// The CA bundle to trust; the system's roots when `None`.
    pub ca_file: Option<PathBuf>,
    /// A client certificate to present.
    pub client: Option<ClientCert>,
}

/// A batch handed to the sink, waiting for its answer.
struct Pending {
    publish: Publish,
    /// The connection it came on: an ack is only valid there.
    connection: u64,
    answer: oneshot::Receiver<Verdict>,
}

/// Subscribes and feeds batches to `sink` until `shutdown`.
pub async fn run(
    source: &MqttSource,
    sink: &Sink,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (client, eventloop) = AsyncClient::new(options(source)?, 64);
    let (tx, mut events) = mpsc::channel(16);
    let poller = tokio::spawn(poll(eventloop, tx));
    let mut session = Session {
        source,
        broker: format!("{}:{}", source.host, source.port),
        client,
        connection: 0,
        pending: VecDeque::new(),
        acks: VecDeque::new(),
    };
    let result = loop {
        session.send_acks();
        let turn = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            Some(answer) = next_answer(&mut session.pending), if !session.pending.is_empty() => {
                session.answered(answer)
            }
            event = events.recv() => match event {
                Some(event) => session.event(event, sink).await,
                None => Err(anyhow::anyhow!("the MQTT event loop stopped")),
            }
        };
        if let Err(err) = turn {
            break Err(err);
        }
    };
    if result.is_ok() {
        session.stop(&mut events).await;
    }
    poller.abort();
    result
}

/// The receiving side of one client: batches with the sink, acks to send.
struct Session<'a> {
    source: &'a MqttSource,
    broker: String,
    client: AsyncClient,
    /// Counts connections: a batch can only be acknowledged on its own.
    connection: u64,
    /// Batches handed to the sink, in arrival order (which it answers in).
    pending: VecDeque<Pending>,
    /// Acks the client's request queue had no room for yet.
    acks: VecDeque<Publish>,
}

impl Session<'_> {
    async fn event(
        &mut self,
        event: Result<Event, ConnectionError>,
        sink: &Sink,
    ) -> anyhow::Result<()> {
        let topic = &self.source.topic;
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                tracing::info!(
                    broker = self.broker,
                    client_id = self.source.client_id,
                    session_present = ack.session_present,
                    "connected"
                );
                // Again on a resumed session too: harmless, and it covers a
                // broker that lost the session.
                self.client
                    .try_subscribe(topic.clone(), QoS::AtLeastOnce)
                    .with_context(|| format!("cannot subscribe to {topic}"))?;
            }
            Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure));
                if refused {
                    anyhow::bail!("the broker refused the subscription to {topic}");
                }
                let line = json!({ "subscribed": { "broker": self.broker, "topic": topic } });
                report(&line.to_string());
            }
            Ok(Event::Incoming(Incoming::Publish(publish))) => {
                let origin = Origin::Topic(publish.topic.clone());
                let answer = sink.submit(publish.payload.clone(), origin).await?;
                self.pending.push_back(Pending {
                    publish,
                    connection: self.connection,
                    answer,
                });
            }
            Ok(_) => {}
            Err(err) => {
                // Acks do not outlive their connection; the broker sends
                // those batches again on the resumed session.
                self.connection += 1;
                self.acks.clear();
                tracing::warn!(
                    broker = self.broker,
                    "MQTT connection failed, retrying: {err}"
                );
            }
        }
        Ok(())
    }

    /// The sink's answer for the oldest pending batch: its ack is due.
    fn answered(
        &mut self,
        answer: Result<Verdict, oneshot::error::RecvError>,
    ) -> anyhow::Result<()> {
        let Some(done) = self.pending.pop_front() else {
            return Ok(());
        };
        let verdict = answer.context("the output stopped")?;
        // Not landed: no PUBACK, so the broker delivers it again (on the
        // resumed session).
        if matches!(verdict, Verdict::Unavailable { .. }) {
            return Ok(());
        }
        // Refused batches are acknowledged too: they will never decode.
        // After a reconnect the broker sends a batch again under the same
        // packet id, which may by then name another one.
        if done.connection == self.connection {
            self.acks.push_back(done.publish);
        }
        Ok(())
    }

    /// Queues as many acks as the client's request queue takes now.
    fn send_acks(&mut self) {
        while let Some(publish) = self.acks.front() {
            if self.client.try_ack(publish).is_err() {
                break;
            }
            self.acks.pop_front();
        }
    }

    /// Acknowledges the batches the sink finishes within [`STOP_GRACE`],
    /// then disconnects; the rest stay with the broker for the next run.
    async fn stop(mut self, events: &mut mpsc::Receiver<Result<Event, ConnectionError>>) {
        let grace = tokio::time::sleep(STOP_GRACE);
        tokio::pin!(grace);
        let mut disconnecting = false;
        loop {
            self.send_acks();
            if self.pending.is_empty() && self.acks.is_empty() && !disconnecting {
                // Queued behind the acks, so it goes out after them.
                disconnecting = self.client.try_disconnect().is_ok();
            }
            tokio::select! {
                _ = &mut grace => return,
                Some(answer) = next_answer(&mut self.pending), if !self.pending.is_empty() => {
                    if self.answered(answer).is_err() {
                        return;
                    }
                }
                event = events.recv() => match event {
                    // The event comes once the packet is flushed to the socket.
                    None | Some(Ok(Event::Outgoing(Outgoing::Disconnect))) | Some(Err(_)) => return,
                    // Batches arriving now are not taken: unacknowledged,
                    // they stay queued at the broker.
                    Some(Ok(_)) => {}
                }
            }
        }
    }
}

/// Polls the event loop and forwards every event; the only task that
/// touches it, so that no poll is ever cancelled halfway. Pauses after a
/// failure so that a broker that is down is not hammered.
async fn poll(mut eventloop: EventLoop, events: mpsc::Sender<Result<Event, ConnectionError>>) {
    let mut back_off = BACKOFF_MIN;
    loop {
        let event = eventloop.poll().await;
        let failed = event.is_err();
        if matches!(event, Ok(Event::Incoming(Incoming::ConnAck(_)))) {
            back_off = BACKOFF_MIN;
        }
        if events.send(event).await.is_err() {
            return;
        }
        if failed {
            tokio::time::sleep(back_off).await;
            back_off = (back_off * 2).min(BACKOFF_MAX);
        }
    }
}

fn options(source: &MqttSource) -> anyhow::Result<MqttOptions> {
    let mut options = MqttOptions::new(&source.client_id, &source.host, source.port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_PACKET, 64 * 1024);
    if let Some((user, password)) = &source.credentials {
        options.set_credentials(user, password);
    }
    if let Some(tls) = &source.tls {
        let config = tls::client_config(tls.ca_file.as_deref(), tls.client.as_ref())
            .context("TLS settings")?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    }
    Ok(options)
}

/// The answer for the oldest pending batch (the sink answers in order).
async fn next_answer(
    pending: &mut VecDeque<Pending>,
) -> Option<Result<Verdict, oneshot::error::RecvError>> {
    let first = pending.front_mut()?;
    Some((&mut first.answer).await)
}
