//! Diagnostics: `tracing` to stderr (journald picks it up under systemd),
//! with the embedded broker's own logging tamed.
//!
//! rumqttd logs every accepted connection at INFO and every refused or broken
//! one at ERROR, so a fleet of flaky trackers, or one client retrying a
//! wrong password, would flood the journal. Its events are therefore not
//! printed as they come: they are counted by kind and reported at most once
//! a minute per kind under fixgate's own target. Naming `rumqttd` in the
//! log level (`info,rumqttd=debug`) prints them all again, for debugging.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::log_limit::{LogLimit, Verdict};

/// The target of the embedded broker's events.
const BROKER: &str = "rumqttd";

/// Installs the global subscriber. `level` is an `EnvFilter` directive list;
/// `RUST_LOG` overrides it.
pub fn init(level: &str) -> Result<(), tracing_subscriber::filter::ParseError> {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_owned());
    let broker_verbatim = directives.contains(BROKER);
    let mut filter = EnvFilter::try_new(&directives)?;
    if !broker_verbatim {
        filter = filter.add_directive(format!("{BROKER}=off").parse()?);
    }
    // Colour only for a person at a terminal; journald and log files get plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // stdout is for data (`fixgate nmea`); diagnostics go to stderr, as journald expects.
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let broker = (!broker_verbatim).then(|| {
        BrokerEvents::default().with_filter(Targets::new().with_target(BROKER, Level::WARN))
    });
    tracing_subscriber::registry().with(fmt).with(broker).init();
    Ok(())
}

/// Counts the broker's warnings and errors and reports each kind at most once a minute.
#[derive(Debug)]
struct BrokerEvents {
    log: Mutex<LogLimit<String>>,
}

impl Default for BrokerEvents {
    fn default() -> Self {
        Self {
            log: Mutex::new(LogLimit::new(Duration::from_secs(60), 256)),
        }
    }
}

impl<S: Subscriber> Layer<S> for BrokerEvents {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.message.contains("jumping to head") {
            // The pipeline fell so far behind that rumqttd overwrote
            // messages it had already acknowledged to devices.
            metrics::counter!("fixgate_mqtt_overflows_total").increment(1);
            tracing::error!(
                target: "fixgate::mqtt::broker",
                "MQTT messages LOST: a subscriber of the embedded broker (normally fixgate's pipeline) fell behind its buffer ({})",
                fields.message
            );
            return;
        }
        let kind = kind_of(&fields.error);
        metrics::counter!("fixgate_mqtt_broker_errors_total", "kind" => kind.clone()).increment(1);
        let verdict = match self.log.lock() {
            Ok(mut log) => log.check(&kind, Instant::now()),
            Err(_) => return,
        };
        if let Verdict::Log { suppressed } = verdict {
            tracing::warn!(
                target: "fixgate::mqtt::broker",
                kind,
                suppressed,
                "MQTT broker: {} {}",
                fields.message,
                fields.error
            );
        }
    }
}

/// The message and `error` field of one broker event.
#[derive(Default)]
struct Fields {
    message: String,
    error: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let out = match field.name() {
            "message" => &mut self.message,
            "error" => &mut self.error,
            _ => return,
        };
        let _ = write!(out, "{value:?}");
    }
}

/// Error kinds that get their own label; anything else is `other`. A fixed
/// list, because the error's text can hold bytes a client sent before it
/// logged in, and labels made from it would let anyone grow the metrics.
const KINDS: &[&str] = &[
    "InvalidAuth",
    "PayloadSizeLimitExceeded",
    "NotConnectPacket",
    "InvalidProtocol",
    "InvalidProtocolLevel",
    "IncorrectPacketFormat",
    "MalformedPacket",
    "ConnectionAborted",
    "ConnectionReset",
    "BrokenPipe",
    "UnexpectedEof",
    "TimedOut",
    "Elapsed",
    "Disconnected",
];

/// The label of a broker error: the last known kind named in its debug text.
fn kind_of(error: &str) -> String {
    error
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .rfind(|w| KINDS.contains(w))
        .unwrap_or("other")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_error_kinds_are_short_variant_names() {
        assert_eq!(kind_of("InvalidAuth"), "InvalidAuth");
        assert_eq!(
            kind_of("Network(Protocol(PayloadSizeLimitExceeded(6026)))"),
            "PayloadSizeLimitExceeded"
        );
        assert_eq!(
            kind_of("Custom { kind: ConnectionAborted, error: \"Closed By Peer\" }"),
            "ConnectionAborted"
        );
        assert_eq!(kind_of(""), "other");
        assert_eq!(kind_of("SomethingNew(\"InjectedKind\")"), "other");
    }
}
