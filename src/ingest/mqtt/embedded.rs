//! The embedded broker (rumqttd): devices connect to the gateway itself, so a
//! depot needs nothing else. The pipeline subscribes through an in-process
//! link, not a loopback TCP client.
//!
//! rumqttd's `start()` blocks forever and has no shutdown, so it gets its own
//! OS thread and ends with the process. Its router keeps messages in memory
//! segments per filter; they are kept small for a Pi.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use std::time::Duration;

use rumqttd::{
    Broker, Config, ConnectionSettings, Notification, RouterConfig, SegmentConfig, ServerSettings,
};
use tokio_util::sync::CancellationToken;

use super::Messages;
use crate::config::Embedded;
use crate::fix::SourceKind;
use crate::ingest::intake::{Rejects, same_secret};

/// Bytes per router segment and segments kept per filter that a device
/// subscribes to (fixgate itself needs none): small, for a Pi.
const SEGMENT_BYTES: usize = 1024 * 1024;
const SEGMENTS: usize = 2;
/// The pipeline's own filters get a larger log: messages the broker has
/// acknowledged wait there while the pipeline is behind (a burst, a slow
/// disk), and rumqttd overwrites the oldest once it is full. 16 MiB is about
/// 80,000 JSON fixes.
const PIPELINE_SEGMENT_BYTES: usize = 4 * 1024 * 1024;
const PIPELINE_SEGMENTS: usize = 4;
/// How long the link must stay quiet at shutdown before intake stops:
/// messages the broker acknowledged just before are still taken in.
const DRAIN_IDLE: Duration = Duration::from_millis(100);

/// Why the broker could not start.
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
    /// rumqttd refused the local link.
    #[error("the MQTT broker refused the pipeline's link: {0}")]
    Link(String),
    /// The broker thread could not be created.
    #[error("cannot start the MQTT broker thread: {0}")]
    Thread(std::io::Error),
}

/// Starts the broker and subscribes the pipeline; returns the task that
/// feeds messages into it until `shutdown`.
///
/// `failed` is cancelled if the broker or the link dies: the daemon then
/// exits with an error, so that systemd restarts it, instead of running on
/// with a broker that acknowledges messages nobody stores.
pub fn start(
    config: &Embedded,
    max_payload: usize,
    mut messages: Messages,
    shutdown: CancellationToken,
    failed: CancellationToken,
) -> Result<impl std::future::Future<Output = ()> + Send + use<>, BrokerError> {
    // rumqttd binds on its own thread and only logs a failure there; a busy
    // port must stop the daemon at start-up instead, so it is tried here first.
    TcpListener::bind(config.listen).map_err(|source| BrokerError::Bind {
        addr: config.listen,
        source,
    })?;
    let filters = messages.filters();
    let mut broker = Broker::new(broker_config(
        config,
        max_payload,
        &filters,
        messages.rejects(),
    ));
    let (mut link_tx, mut link_rx) = broker
        .link("fixgate-pipeline")
        .map_err(|e| BrokerError::Link(e.to_string()))?;
    for filter in filters {
        link_tx
            .subscribe(filter)
            .map_err(|e| BrokerError::Link(e.to_string()))?;
    }
    let broker_failed = failed.clone();
    std::thread::Builder::new()
        .name("fixgate-broker".into())
        .spawn(move || {
            // `start` only returns on failure.
            match broker.start() {
                Ok(()) => tracing::error!("MQTT broker stopped"),
                Err(err) => tracing::error!("MQTT broker stopped: {err}"),
            }
            broker_failed.cancel();
        })
        .map_err(BrokerError::Thread)?;
    tracing::info!(listen = %config.listen, users = config.users.len(), "MQTT broker running");
    Ok(async move {
        // The link's sender must live as long as the link: dropping it
        // disconnects the pipeline from the router.
        let _link_tx = link_tx;
        let mut draining = false;
        loop {
            let notification = if draining {
                match tokio::time::timeout(DRAIN_IDLE, link_rx.next()).await {
                    Ok(n) => n,
                    Err(_idle) => return,
                }
            } else {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        draining = true;
                        continue;
                    }
                    n = link_rx.next() => n,
                }
            };
            let step = match notification {
                Ok(Some(Notification::Forward(forward))) => {
                    let topic = String::from_utf8_lossy(&forward.publish.topic);
                    messages
                        .handle(&topic, &forward.publish.payload)
                        .await
                        .map_err(|closed| closed.to_string())
                }
                // The router parks a link whose buffer filled while we were
                // busy; it forwards nothing more until the link asks again.
                Ok(Some(Notification::Unschedule)) => {
                    link_rx.wake().await.map_err(|e| e.to_string())
                }
                Ok(_) => Ok(()),
                Err(err) => Err(err.to_string()),
            };
            if let Err(err) = step {
                if !shutdown.is_cancelled() {
                    tracing::error!("MQTT broker link failed, stopping the daemon: {err}");
                    metrics::counter!("fixgate_mqtt_link_errors_total").increment(1);
                    failed.cancel();
                }
                return;
            }
        }
    })
}

fn broker_config(
    config: &Embedded,
    max_payload: usize,
    pipeline_filters: &[String],
    rejects: Arc<Rejects>,
) -> Config {
    let mut connections = ConnectionSettings {
        connection_timeout_ms: u16::try_from(config.connection_timeout.as_millis())
            .unwrap_or(u16::MAX),
        // Up to 4× the limit is read and rejected by fixgate as `oversized`
        // (counted per device); beyond that rumqttd drops the connection.
        max_payload_size: max_payload.saturating_mul(4),
        max_inflight_count: config.max_inflight,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    if !config.users.is_empty() {
        let users = Arc::new(config.users.clone());
        connections.set_auth_handler(move |client_id, user, pass| {
            let refused = check_login(&users, &user, &pass);
            if let Some(reason) = refused {
                // Only configured users get a label of their own; a name is
                // whatever a client sent (up to 64 KiB), so logs get a prefix.
                let label = if users.contains_key(&user) {
                    user.as_str()
                } else {
                    "unknown"
                };
                let shown: String = user.chars().take(64).collect();
                let client: String = client_id.chars().take(64).collect();
                let why =
                    format!("MQTT login of user {shown:?} (client {client:?}) refused: {reason}");
                rejects.reject(SourceKind::Mqtt, Some(label), reason, &why);
            }
            std::future::ready(refused.is_none())
        });
    }
    let server = ServerSettings {
        name: "mqtt".into(),
        listen: config.listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: config.max_connections,
            max_outgoing_packet_count: 200,
            max_segment_size: SEGMENT_BYTES,
            max_segment_count: SEGMENTS,
            custom_segment: Some(
                pipeline_filters
                    .iter()
                    .map(|f| {
                        let segment = SegmentConfig {
                            max_segment_size: PIPELINE_SEGMENT_BYTES,
                            max_segment_count: PIPELINE_SEGMENTS,
                        };
                        (f.clone(), segment)
                    })
                    .collect(),
            ),
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("mqtt".to_owned(), server)])),
        ..Config::default()
    }
}

/// Why a login is refused, or `None` for a good one. (rumqttd itself
/// refuses, without asking, a client that sends no credentials at all.)
fn check_login(users: &BTreeMap<String, String>, user: &str, pass: &str) -> Option<&'static str> {
    match users.get(user) {
        None => Some("unknown_user"),
        Some(expected) if same_secret(expected.as_bytes(), pass.as_bytes()) => None,
        Some(_) => Some("bad_password"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_need_the_users_own_password() {
        let users = BTreeMap::from([("bus-1".to_owned(), "s3cret".to_owned())]);
        assert_eq!(check_login(&users, "bus-1", "s3cret"), None);
        assert_eq!(check_login(&users, "bus-1", "s3creT"), Some("bad_password"));
        assert_eq!(check_login(&users, "bus-2", "s3cret"), Some("unknown_user"));
        assert_eq!(check_login(&users, "bus-1", ""), Some("bad_password"));
    }
}
