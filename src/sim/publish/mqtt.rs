//! The MQTT transport: one `rumqttc` connection per device (or one shared),
//! each driven by its own poll task.
//!
//! Publishing only queues a request; nothing reaches the broker unless a task
//! keeps calling `EventLoop::poll`. Publishing from that same task can freeze
//! it (rumqttc #1025, #263), so the poll tasks only poll and count, and the
//! ticker queues with `try_publish`, which never waits: a full queue (a
//! device whose connection is down) costs that message, not the whole fleet.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, Transport};
use tokio::task::JoinSet;

use super::{ACK_GRACE, Connections as Sharing, Counters, MqttTarget, bump, get};
use crate::fix::DeviceId;

/// First wait after a failed connection attempt; doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(250);

/// Longest wait between connection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Largest message the client will send: room for the oversized bad payloads.
const MAX_OUTGOING: usize = 1024 * 1024;

/// Largest message accepted from the broker (acks only; nothing is subscribed).
const MAX_INCOMING: usize = 10 * 1024;

/// Keep-alive of each connection.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// How long the poll tasks get to write their DISCONNECT.
const DISCONNECT_GRACE: Duration = Duration::from_secs(1);

/// The fleet's MQTT clients and their poll tasks.
pub(super) struct Connections {
    clients: Vec<AsyncClient>,
    /// The topic of each device.
    topics: Vec<String>,
    qos: QoS,
    polls: JoinSet<()>,
    counters: Arc<Counters>,
}

impl Connections {
    /// Creates the clients and starts their poll tasks; the connections are
    /// made (and remade) by those tasks, so this does not wait for the broker.
    pub(super) async fn start(
        target: &MqttTarget,
        devices: &[DeviceId],
        capacity: usize,
        counters: Arc<Counters>,
    ) -> anyhow::Result<Self> {
        let transport = match &target.tls_ca {
            Some(path) => Some(tls_transport(path).await?),
            None => None,
        };
        let labels: Vec<&str> = match target.connections {
            Sharing::PerDevice => devices.iter().map(DeviceId::as_str).collect(),
            Sharing::Shared => vec!["shared"],
        };
        crate::util::fd_limit::raise(
            labels.len() as u64 + 64,
            "one connection per device (or use --connections shared)",
        );
        let mut clients = Vec::with_capacity(labels.len());
        let mut polls = JoinSet::new();
        for label in labels {
            let options = client_options(target, label, transport.clone());
            let (client, eventloop) = AsyncClient::new(options, capacity);
            polls.spawn(poll(eventloop, label.to_owned(), counters.clone()));
            clients.push(client);
        }
        let topics = devices
            .iter()
            .map(|d| target.topic.replace("{device}", d.as_str()))
            .collect();
        let qos = if target.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        Ok(Self {
            clients,
            topics,
            qos,
            polls,
            counters,
        })
    }

    /// Queues one message of device `index`; false if its queue is full.
    pub(super) fn send(&self, index: usize, body: Vec<u8>) -> bool {
        let client = match self.clients.as_slice() {
            [shared] => Some(shared),
            all => all.get(index),
        };
        let (Some(client), Some(topic)) = (client, self.topics.get(index)) else {
            return false;
        };
        client
            .try_publish(topic.as_str(), self.qos, false, body)
            .is_ok()
    }

    /// Waits up to [`ACK_GRACE`] until every queued message is confirmed
    /// (acked at QoS 1, written at QoS 0), then disconnects every client.
    pub(super) async fn close(mut self) {
        let confirmed = if self.qos == QoS::AtMostOnce {
            &self.counters.published
        } else {
            &self.counters.acked
        };
        let deadline = tokio::time::Instant::now() + ACK_GRACE;
        while get(confirmed) < get(&self.counters.sent)
            && get(&self.counters.connected) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for client in &self.clients {
            // A full queue means a dead connection; its task is aborted below.
            let _ = client.try_disconnect();
        }
        let polls = &mut self.polls;
        let joined = get(&self.counters.connected) == 0
            || tokio::time::timeout(DISCONNECT_GRACE, async {
                while polls.join_next().await.is_some() {}
            })
            .await
            .is_ok();
        if !joined {
            tracing::debug!(
                left = self.polls.len(),
                "connections still down at shutdown; dropping them"
            );
        }
        self.polls.abort_all();
    }
}

fn client_options(target: &MqttTarget, label: &str, transport: Option<Transport>) -> MqttOptions {
    let id = format!("{}{label}", target.client_id_prefix);
    let mut options = MqttOptions::new(id, target.host.clone(), target.port);
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_max_packet_size(MAX_INCOMING, MAX_OUTGOING);
    if let Some(user) = &target.username {
        options.set_credentials(user.clone(), target.password.clone().unwrap_or_default());
    }
    if let Some(transport) = transport {
        options.set_transport(transport);
    }
    options
}

/// TLS verified against the CA in the PEM file at `path`.
async fn tls_transport(path: &std::path::Path) -> anyhow::Result<Transport> {
    let ca = tokio::fs::read(path)
        .await
        .with_context(|| format!("cannot read --tls-ca {}", path.display()))?;
    // rumqttc is built without a crypto provider of its own; an error only
    // means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(Transport::tls(ca, None, None))
}

/// Drives one connection until its DISCONNECT is written, counting what
/// goes out and the acks that come back; reconnects with back-off.
async fn poll(mut eventloop: EventLoop, label: String, counters: Arc<Counters>) {
    let mut backoff = BACKOFF_MIN;
    let mut failing = false;
    let mut up = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if failing {
                    tracing::info!(connection = %label, "MQTT connection restored");
                }
                failing = false;
                up = true;
                bump(&counters.connected);
                backoff = BACKOFF_MIN;
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => bump(&counters.acked),
            Ok(Event::Outgoing(Outgoing::Publish(_))) => bump(&counters.published),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(error) => {
                if std::mem::take(&mut up) {
                    drop_one(&counters.connected);
                }
                // Once per outage, not once per attempt: a thousand devices
                // retrying a dead broker would drown the log.
                if !failing {
                    tracing::warn!(connection = %label, %error, "MQTT connection failed; retrying");
                    failing = true;
                }
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    if up {
        drop_one(&counters.connected);
    }
}

fn drop_one(counter: &std::sync::atomic::AtomicU64) {
    counter.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// `d` scaled by a random factor in [0.5, 1.5), so devices that lost the
/// broker together do not all come back in the same instant.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_to_one_and_a_half() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(2));
            assert!(
                d >= Duration::from_secs(1) && d < Duration::from_secs(3),
                "{d:?}"
            );
        }
    }

    #[test]
    fn client_ids_carry_the_prefix_and_credentials_need_a_user() {
        let target = MqttTarget {
            username: Some("u".into()),
            password: Some("p".into()),
            ..MqttTarget::default()
        };
        let o = client_options(&target, "sim-7", None);
        assert_eq!(o.client_id(), "fixgate-sim-7");
        assert_eq!(o.broker_address(), ("127.0.0.1".to_owned(), 1883));
        assert!(o.credentials().is_some());
        let anonymous = client_options(&MqttTarget::default(), "shared", None);
        assert!(anonymous.credentials().is_none());
    }
}
