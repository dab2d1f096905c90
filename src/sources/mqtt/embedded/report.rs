//! Counting and logging what the server refuses or closes: every occurrence
//! is counted, and each kind is logged at most once a minute, so that a
//! misbehaving fleet cannot flood the journal.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::protocol::Fault;
use crate::telemetry;
use crate::util::log_limit::{LogLimit, Verdict};

/// One log line per kind per this.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// What the server refuses without closing the connection (or before a
/// login): the `reason` label of `fixgate_mqtt_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// A retained PUBLISH: handled as a normal message, never stored as
    /// retained (an empty one, MQTT's "clear retained", is only counted).
    Retain,
    /// A PUBLISH for a device (or a topic that names none) outside the
    /// login's `publish` scope: acknowledged, never handled or passed on.
    PublishScope,
    /// A SUBSCRIBE filter outside the login's `subscribe` scope: 0x80.
    SubscribeScope,
    /// A SUBSCRIBE filter that is no valid MQTT filter: 0x80.
    BadFilter,
    /// A subscription past `mqtt.max_subscriptions_per_connection`: 0x80.
    MaxSubscriptionsPerConnection,
    /// A subscription past `mqtt.max_subscriptions`: 0x80.
    MaxSubscriptions,
    /// A client past `mqtt.max_connections` (CONNACK 3, or closed at once
    /// past the handshake room).
    MaxConnections,
    /// A login past `mqtt.max_connections_per_user` (CONNACK 3).
    MaxConnectionsPerUser,
}

impl Refusal {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retain => "retain",
            Self::PublishScope => "publish_scope",
            Self::SubscribeScope => "subscribe_scope",
            Self::BadFilter => "bad_filter",
            Self::MaxSubscriptionsPerConnection => "max_subscriptions_per_connection",
            Self::MaxSubscriptions => "max_subscriptions",
            Self::MaxConnections => "max_connections",
            Self::MaxConnectionsPerUser => "max_connections_per_user",
        }
    }
}

/// Either kind of thing the server reports, as a log-limit key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Fault(Fault),
    Refusal(Refusal),
    /// Messages not passed on to a subscriber whose queue was full.
    SlowSubscriber,
}

/// Counts and rate-limited logs, shared by every connection.
#[derive(Debug)]
pub struct Report {
    log: Mutex<LogLimit<Key>>,
}

impl Default for Report {
    fn default() -> Self {
        Self {
            log: Mutex::new(LogLimit::new(LOG_EVERY, 64)),
        }
    }
}

impl Report {
    /// Counts a connection the server closed, and logs it unless its kind
    /// was logged within the minute (or is not worth a warning).
    pub fn fault(&self, fault: Fault, detail: &dyn fmt::Display) {
        telemetry::MQTT_BROKER_ERRORS
            .with([fault.as_str()])
            .increment(1);
        if !fault.loud() {
            tracing::debug!(kind = fault.as_str(), "MQTT connection closed: {detail}");
            return;
        }
        if let Some(suppressed) = self.due(Key::Fault(fault)) {
            tracing::warn!(
                kind = fault.as_str(),
                suppressed,
                "MQTT connection closed: {detail}"
            );
        }
    }

    /// Counts `n` refusals; logs the first of a minute with `detail`, if any
    /// (`None`: counted silently).
    pub fn refused(&self, refusal: Refusal, n: usize, detail: Option<&dyn fmt::Display>) {
        telemetry::MQTT_REFUSED
            .with([refusal.as_str()])
            .increment(n as u64);
        let Some(detail) = detail else {
            return;
        };
        if let Some(suppressed) = self.due(Key::Refusal(refusal)) {
            tracing::warn!(
                reason = refusal.as_str(),
                suppressed,
                "MQTT request refused: {detail}"
            );
        }
    }

    /// Counts `n` messages dropped for subscribers whose queue was full;
    /// logs the first of a minute.
    pub fn dropped_for_slow_subscribers(&self, n: usize, topic: &str) {
        telemetry::MQTT_DROPPED
            .with(["slow_subscriber"])
            .increment(n as u64);
        if let Some(suppressed) = self.due(Key::SlowSubscriber) {
            tracing::warn!(
                reason = "slow_subscriber",
                suppressed,
                "a message to {:?} was not passed on to {n} subscriber(s) that do not read fast enough; publishers are not held back",
                super::login::shown(topic)
            );
        }
    }

    /// `Some(held back since the last line)` when a line for `key` is due.
    fn due(&self, key: Key) -> Option<u64> {
        let verdict = self.log.lock().ok()?.check(&key, Instant::now());
        match verdict {
            Verdict::Log { suppressed } => Some(suppressed),
            Verdict::Quiet => None,
        }
    }
}
