//! Diagnostics: `tracing` to journald when systemd started us with stderr
//! connected to the journal (native protocol: priorities, the target and
//! the event's fields as journal fields), else plain text on stderr; with
//! the embedded broker's own logging tamed.
//!
//! rumqttd logs every accepted connection at INFO and every refused or broken
//! one at ERROR, so a fleet of flaky trackers, or one client retrying a
//! wrong password, would flood the journal. Its events are therefore not
//! printed as they come: they are counted by kind and reported at most once
//! a minute per kind under fixgate's own target. Naming `rumqttd` in the
//! log level (`info,rumqttd=debug`) prints them all again, for debugging.

use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::log_limit::{LogLimit, Verdict};

/// The target of the embedded broker's events.
const BROKER: &str = "rumqttd";

/// Where diagnostics go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// systemd's journal, over its native socket.
    Journald,
    /// Plain text on stderr (colour only at a terminal).
    Stderr,
}

/// Changes the filter in force, for a SIGHUP that brings a new `log.level`.
static RELOAD: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// The filter for a configured level: `RUST_LOG` when set wins, and the
/// broker's own events are off unless the directives name it.
fn filter(level: &str) -> Result<(EnvFilter, bool), tracing_subscriber::filter::ParseError> {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_owned());
    let broker_verbatim = directives.contains(BROKER);
    let mut filter = EnvFilter::try_new(&directives)?;
    if !broker_verbatim {
        filter = filter.add_directive(format!("{BROKER}=off").parse()?);
    }
    Ok((filter, broker_verbatim))
}

/// Whether systemd connected our stderr to the journal: it says so in
/// `JOURNAL_STREAM` (`device:inode` of that stream), and the check that the
/// stream is still our stderr keeps a child that inherited the variable
/// with other output from logging to the journal by mistake.
pub fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(stderr).metadata() else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// The journal's priorities for tracing's levels: syslog's meaning of
/// "notice" is unusual-but-fine, which INFO is not, so INFO is
/// informational (6) and DEBUG and TRACE are debug (7).
fn priorities() -> PriorityMappings {
    PriorityMappings {
        error: Priority::Error,
        warn: Priority::Warning,
        info: Priority::Informational,
        debug: Priority::Debug,
        trace: Priority::Debug,
    }
}

/// Installs the global subscriber and says where it writes. `level` is an
/// `EnvFilter` directive list; `RUST_LOG` overrides it.
pub fn init(level: &str) -> Result<Output, tracing_subscriber::filter::ParseError> {
    let (filter, broker_verbatim) = filter(level)?;
    let (filter, handle) = reload::Layer::new(filter);
    let mut journal_error = None;
    let journald = if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(layer) => Some(
                layer
                    .with_syslog_identifier("fixgate".to_owned())
                    .with_priority_mappings(priorities()),
            ),
            Err(err) => {
                journal_error = Some(err);
                None
            }
        }
    } else {
        None
    };
    // The filter applies to the output only: the broker's events reach
    // BrokerEvents whatever the level says.
    let (output, layer): (Output, Box<dyn Layer<Registry> + Send + Sync>) = match journald {
        Some(journald) => (Output::Journald, Box::new(journald)),
        None => (
            Output::Stderr,
            Box::new(
                tracing_subscriber::fmt::layer()
                    // Colour only for a person at a terminal; files get plain text.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    // stdout is for data (`fixgate nmea`); diagnostics go to stderr.
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    // Events only: rumqttd opens INFO spans per packet on its router's hot
    // path (`puback`, `outgoing_publish`), which no layer here needs, and a
    // target filter would enable them all. The hint keeps the global level
    // cap at INFO for this layer: without one, every `debug!` and `trace!`
    // in the process (sled's `log` records too) would be built and offered
    // to the layers before being filtered out.
    let broker = BrokerEvents::new(!broker_verbatim).with_filter(
        filter_fn(|meta| {
            meta.is_event() && meta.target().starts_with(BROKER) && *meta.level() <= Level::INFO
        })
        .with_max_level_hint(Level::INFO),
    );
    tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .with(broker)
        .init();
    let _ = RELOAD.set(handle);
    if let Some(err) = journal_error {
        tracing::warn!(
            "JOURNAL_STREAM is set but the journal's socket cannot be used ({err}): logging plain text to stderr"
        );
    }
    Ok(output)
}

/// Puts a new `log.level` in force (on SIGHUP). `RUST_LOG`, when set, still
/// wins, as at start.
pub fn set_level(level: &str) -> Result<(), String> {
    let (filter, _) = filter(level).map_err(|e| e.to_string())?;
    match RELOAD.get() {
        Some(handle) => handle.reload(filter).map_err(|e| e.to_string()),
        None => Err("logging is not initialised".to_owned()),
    }
}

/// Counts the broker's connections, and its warnings and errors, which it
/// reports each kind at most once a minute (unless `rumqttd`'s own events
/// are printed verbatim).
#[derive(Debug)]
struct BrokerEvents {
    log: Mutex<LogLimit<String>>,
    report: bool,
}

/// What rumqttd's router logs (at INFO) when a connection joins and leaves:
/// the only word it gives of either. The broker test reads the gauge made
/// of them, so an upgrade that rewords them fails there.
const JOINED: &str = "Client connection registered";
const LEFT: &str = "Disconnecting connection";

impl BrokerEvents {
    fn new(report: bool) -> Self {
        Self {
            log: Mutex::new(LogLimit::new(Duration::from_secs(60), 256)),
            report,
        }
    }
}

impl<S: Subscriber> Layer<S> for BrokerEvents {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if *event.metadata().level() > Level::WARN {
            // Connections, the gateway's own in-process link included.
            if fields.message == JOINED {
                metrics::counter!("fixgate_mqtt_broker_connects_total").increment(1);
                metrics::gauge!("fixgate_mqtt_broker_connections").increment(1.0);
            } else if fields.message == LEFT {
                metrics::gauge!("fixgate_mqtt_broker_connections").decrement(1.0);
            }
            return;
        }
        if !self.report {
            return;
        }
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
