//! Every metric the daemon exports, in one place: its name, kind, labels
//! and help text. Code elsewhere counts through these constants, never
//! through `metrics::counter!` and friends (a test below keeps it so), and
//! [`describe`] hands the help texts to the recorder for `/metrics`.
//!
//! Labels are bounded by construction: a label value is a [`Value`], made
//! only from a `&'static str` (a reason, kind or source the code chose), a
//! [`DeviceLabel`] (a device name that passed the process's budget of
//! device-labelled series, a configured device, or a placeholder), or
//! [`Value::configured`] (another name from the operator's configuration,
//! such as a token's). A string from outside cannot become a label without
//! going through the budget in [`crate::util::labels`].

use metrics::{Label, SharedString};

use crate::util::labels::DeviceLabel;

/// The value of one label: bounded by how it can be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value(SharedString);

impl Value {
    /// A name from the operator's configuration (a token's name): as many
    /// as the configuration holds. Device names go through [`DeviceLabel`].
    pub fn configured(name: &str) -> Self {
        Self(SharedString::from(name.to_owned()))
    }
}

impl From<&'static str> for Value {
    fn from(value: &'static str) -> Self {
        Self(SharedString::const_str(value))
    }
}

impl From<DeviceLabel> for Value {
    fn from(label: DeviceLabel) -> Self {
        Self(SharedString::from(label.into_string()))
    }
}

/// What kind of metric a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// Set to the current value.
    Gauge,
    /// A distribution of observations.
    Histogram,
}

/// One metric as `/metrics` shows it: for [`describe`] and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// The series name, `fixgate_…`.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Its label names, in order.
    pub labels: &'static [&'static str],
    /// The `# HELP` text.
    pub help: &'static str,
}

fn labels<const N: usize>(names: &[&'static str; N], values: [Value; N]) -> Vec<Label> {
    names
        .iter()
        .zip(values)
        .map(|(name, value)| Label::new(*name, value.0))
        .collect()
}

macro_rules! handle {
    ($(#[$doc:meta])* $kind:ident, $handle:ident, $register:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $kind<const N: usize> {
            name: &'static str,
            labels: [&'static str; N],
        }

        impl<const N: usize> $kind<N> {
            /// The metric's name (also the key of its device-label budget).
            pub const fn name(&self) -> &'static str {
                self.name
            }

            /// The series of these label values, in the order declared.
            pub fn with<V: Into<Value>>(&self, values: [V; N]) -> metrics::$handle {
                metrics::$register!(self.name, labels(&self.labels, values.map(Into::into)))
            }
        }

        impl $kind<0> {
            /// The metric's only series.
            pub fn get(&self) -> metrics::$handle {
                metrics::$register!(self.name)
            }
        }
    };
}

handle!(
    /// A counter with `N` labels.
    Counter,
    Counter,
    counter
);
handle!(
    /// A gauge with `N` labels.
    Gauge,
    Gauge,
    gauge
);
handle!(
    /// A histogram with `N` labels.
    Histogram,
    Histogram,
    histogram
);

impl Counter<0> {
    /// Adds `n` to the metric's only series.
    pub fn increment(&self, n: u64) {
        self.get().increment(n);
    }
}

impl Gauge<0> {
    /// Sets the metric's only series.
    pub fn set(&self, value: f64) {
        self.get().set(value);
    }
}

impl Histogram<0> {
    /// Records one value in the metric's only series.
    pub fn record(&self, value: f64) {
        self.get().record(value);
    }
}

/// Declares each metric as a constant and lists them all in [`ALL`].
macro_rules! catalogue {
    ($($kind:ident $const:ident $name:literal [$($label:literal),*] $help:literal;)*) => {
        $(
            #[doc = $help]
            pub const $const: $kind<{ <[&str]>::len(&[$($label),*]) }> = $kind {
                name: $name,
                labels: [$($label),*],
            };
        )*

        /// Every metric, in the order declared.
        pub const ALL: &[Metric] = &[$(Metric {
            name: $name,
            kind: Kind::$kind,
            labels: &[$($label),*],
            help: $help,
        }),*];
    };
}

catalogue! {
    // Intake and the pipeline.
    Counter FIXES_ACCEPTED "fixgate_fixes_accepted_total" ["source", "class", "kind"]
        "Fixes stored, by source, device class and live or historic.";
    Counter FIXES_DROPPED "fixgate_fixes_dropped_total" ["source", "reason", "device"]
        "Fixes refused by the filters, a reserved device name, the device limit or a full store, by source, reason and device (device names share one budget of series).";
    Counter FIXES_LOST "fixgate_fixes_lost_total" ["reason"]
        "Fixes lost after they were accepted, because the store failed.";
    Counter INGEST_REJECTED "fixgate_ingest_rejected_total" ["source", "reason", "device"]
        "Bad MQTT or HTTP input, by source, reason and device (device names share one budget of series; (none) when no device is named).";
    Counter INGEST_IGNORED "fixgate_ingest_ignored_total" ["source", "kind"]
        "Well-formed input that holds no fix (OwnTracks events, empty messages), by source and kind.";
    Counter NMEA_SKIPPED "fixgate_nmea_skipped_total" ["source", "device", "reason"]
        "NMEA sentences skipped as normal receiver output, by source, device and reason.";
    Counter NMEA_REJECTED "fixgate_nmea_rejected_total" ["source", "device", "reason"]
        "NMEA input rejected (bad checksums, malformed sentences), by source, device and reason.";
    Counter NMEA_UNDATED "fixgate_nmea_undated_total" ["source", "device", "reason"]
        "NMEA fixes held back because neither the receiver nor a trusted system clock dates them.";
    Counter DEVICE_STATUS "fixgate_device_status_total" ["status"]
        "Devices going online or offline.";
    Gauge DEVICES_TRACKED "fixgate_devices_tracked" []
        "Devices tracked by the pipeline.";
    Counter WATCHDOG_WITHHELD "fixgate_watchdog_withheld_total" []
        "Times the systemd watchdog was starved because a part of the daemon was stuck.";
    Counter SYSTEMD_NOTIFY_ERRORS "fixgate_systemd_notify_errors_total" []
        "Notifications to systemd that failed.";

    // Geofences.
    Counter GEOFENCE_EVENTS "fixgate_geofence_events_total" ["type", "kind"]
        "Geofence events (enter, exit, dwell, speeding), by type and live or historic.";
    Gauge GEOFENCE_FENCES "fixgate_geofence_fences" []
        "Geofences in force.";
    Counter GEOFENCE_RELOADS "fixgate_geofence_reloads_total" ["result"]
        "Geofence loads and reloads, ok or error.";

    // Sources.
    Gauge SERIAL_CONNECTED "fixgate_serial_connected" ["device"]
        "Whether each configured serial receiver's port is open.";
    Counter SERIAL_OPEN_FAILURES "fixgate_serial_open_failures_total" ["device"]
        "Failed attempts to open a serial receiver's port.";
    Counter SERIAL_DISCONNECTS "fixgate_serial_disconnects_total" ["device", "reason"]
        "Serial receivers lost, by device and reason.";
    Gauge SERIAL_LINE_SPEED "fixgate_serial_line_speed_bps" ["device"]
        "The line speed each serial receiver is read at, in bits per second; 0 while its port is closed or its speed is hunted for.";
    Counter SERIAL_BAUD_HUNTS "fixgate_serial_baud_hunts_total" ["device", "result"]
        "Hunts for the line speed of serial receivers with baud = \"auto\", by result: locked or not_found (a whole round of rates without one good sentence).";
    Counter SERIAL_BAUD_PROBES "fixgate_serial_baud_probes_total" ["device"]
        "Line speeds tried while hunting, one per rate listened to.";
    Counter CHRONY_SAMPLES "fixgate_chrony_samples_total" ["device"]
        "Time samples a serial receiver sent to chrony's SOCK refclock.";
    Counter CHRONY_SEND_FAILURES "fixgate_chrony_send_failures_total" ["device", "reason"]
        "Time samples that could not be sent to chrony, by reason: not_running (no socket, or nobody bound to it), busy (chronyd's queue full), permission, time_range, error.";
    Gauge CHRONY_OFFSET "fixgate_chrony_offset_seconds" ["device"]
        "The last sample's offset sent to chrony: the receiver's time minus the system time its first sentence arrived at.";
    Counter REPLAY_ERRORS "fixgate_replay_errors_total" ["device"]
        "Replayed NMEA logs that could not be read.";
    Gauge MQTT_CONNECTED "fixgate_mqtt_connected" []
        "Whether the external MQTT broker is connected.";
    Gauge MQTT_SUBSCRIBED "fixgate_mqtt_subscribed" []
        "Whether the external MQTT broker acknowledged the subscriptions.";
    Counter MQTT_CONNECTION_ERRORS "fixgate_mqtt_connection_errors_total" []
        "Errors of the connection to the external MQTT broker.";
    Gauge MQTT_BROKER_CONNECTIONS "fixgate_mqtt_broker_connections" []
        "Clients connected to the embedded MQTT server.";
    Counter MQTT_BROKER_CONNECTS "fixgate_mqtt_broker_connects_total" []
        "Logins the embedded MQTT server let in.";
    Counter MQTT_BROKER_ERRORS "fixgate_mqtt_broker_errors_total" ["kind"]
        "Connections the embedded MQTT server closed, by kind.";
    Counter MQTT_REFUSED "fixgate_mqtt_refused_total" ["reason"]
        "What the embedded MQTT server refused (publishes, subscriptions, connections), by reason.";
    Gauge MQTT_SUBSCRIPTIONS "fixgate_mqtt_subscriptions" []
        "Subscriptions held by the embedded MQTT server.";
    Counter MQTT_PASSED_ON "fixgate_mqtt_passed_on_total" []
        "Messages the embedded MQTT server queued for subscribers.";
    Counter MQTT_DROPPED "fixgate_mqtt_dropped_total" ["reason"]
        "Messages the embedded MQTT server dropped for subscribers whose queue was full.";

    // The store.
    Counter STORE_ERRORS "fixgate_store_errors_total" ["op"]
        "Store operations that failed, by operation.";
    Gauge STORE_HEAD_SEQ "fixgate_store_head_seq" []
        "Sequence number of the last record written.";
    Gauge STORE_DURABLE_SEQ "fixgate_store_durable_seq" []
        "Sequence number of the last record flushed to disk.";
    Histogram STORE_FLUSH_SECONDS "fixgate_store_flush_seconds" []
        "Time a store flush takes, in seconds.";
    Counter STORE_QUARANTINED "fixgate_store_quarantined_total" []
        "Damaged stores moved aside at start.";
    Counter STORE_MARK_DAMAGED "fixgate_store_mark_damaged_total" []
        "Starts that found the store's sequence mark damaged.";
    Counter STORE_DAMAGE_FOUND "fixgate_store_damage_found_total" []
        "Damaged log values the background check found in the running store (moved aside at the next start).";
    Gauge STORE_BUFFERED_RECORDS "fixgate_store_buffered_records" []
        "Records the store holds.";
    Gauge STORE_BUFFERED_BYTES "fixgate_store_buffered_bytes" []
        "Logical bytes the store holds.";
    Gauge STORE_OLDEST_BUFFERED_SECONDS "fixgate_store_oldest_buffered_seconds" []
        "Age of the oldest record the store holds, in seconds.";
    Gauge STORE_SIZE_BYTES "fixgate_store_size_bytes" []
        "Size of the store's files on disk.";
    Gauge STORE_BUDGET_BYTES "fixgate_store_budget_bytes" []
        "The store's size cap in force.";
    Counter STORE_DELETED_ACKED "fixgate_store_deleted_acked_total" []
        "Records acknowledged upstream deleted to keep the store within its budget.";
    Counter STORE_THINNED "fixgate_store_thinned_total" []
        "Positions thinned out to keep the store within its budget.";
    Counter STORE_DROPPED "fixgate_store_dropped_total" ["kind"]
        "Records dropped to keep the store within its budget, by kind (position or event).";

    // The feed and HTTP.
    Gauge HTTP_CONNECTIONS "fixgate_http_connections" []
        "HTTP connections open.";
    Counter HTTP_ACCEPT_ERRORS "fixgate_http_accept_errors_total" []
        "HTTP connections that could not be accepted.";
    Counter HTTP_REFUSED "fixgate_http_refused_total" ["reason"]
        "HTTP requests or connections refused before a handler, by reason.";
    Counter HTTP_CLOSED "fixgate_http_closed_total" ["reason"]
        "HTTP connections closed by the server, by reason.";
    Counter ACCESS_DENIED "fixgate_access_denied_total" ["scope", "reason"]
        "HTTP requests refused by access, by scope and reason.";
    Counter ACCESS_GRANTED "fixgate_access_granted_total" ["scope", "token"]
        "HTTP requests let in, by scope and configured token name ((anonymous) without one).";
    Counter ACCESS_RELOADS "fixgate_access_reloads_total" ["result"]
        "SIGHUP reloads of the access tokens, ok or error.";
    Counter TLS_RELOADS "fixgate_tls_reloads_total" ["result"]
        "SIGHUP reloads of the TLS certificate and key, ok or error.";
    Gauge SSE_CLIENTS "fixgate_sse_clients" []
        "Feed clients connected.";
    Counter SSE_EVICTED "fixgate_sse_evicted_total" ["reason"]
        "Feed clients let go to make room for a new one, by reason.";
    Counter SSE_STALLED "fixgate_sse_stalled_total" []
        "Feed clients closed because they stopped reading.";
    Counter SSE_REJECTED "fixgate_sse_rejected_total" ["reason"]
        "Feed requests refused for a bad parameter, by reason.";
    Counter SSE_RESETS "fixgate_sse_resets_total" ["reason"]
        "Feed clients sent a fresh snapshot instead of what they asked for, by reason.";
    Counter SSE_EVENTS_SENT "fixgate_sse_events_sent_total" []
        "Events delivered to feed clients.";
    Counter SSE_FRAMES_ENCODED "fixgate_sse_frames_encoded_total" []
        "Events encoded for the feed (once each, whatever the number of clients).";
    Gauge SSE_RING_FRAMES "fixgate_sse_ring_frames" []
        "Encoded events the feed's ring holds.";
    Counter HISTORY_REFUSED "fixgate_history_refused_total" ["reason"]
        "History requests refused, by reason.";
    Counter HISTORY_FIXES "fixgate_history_fixes_total" []
        "Fixes served by history requests.";

    // The gpsd protocol server.
    Gauge GPSD_CLIENTS "fixgate_gpsd_clients" []
        "gpsd-protocol clients connected.";
    Counter GPSD_LINES_SENT "fixgate_gpsd_lines_sent_total" []
        "JSON lines (reports and replies) sent to gpsd-protocol clients.";
    Counter GPSD_REPORTS_ENCODED "fixgate_gpsd_reports_encoded_total" []
        "Positions encoded as TPV (and SKY) lines for gpsd-protocol clients (once each, whatever the number of clients).";
    Counter GPSD_SKIPPED "fixgate_gpsd_skipped_total" []
        "Reports gpsd-protocol clients skipped because they fell behind the shared queue.";
    Counter GPSD_DROPPED "fixgate_gpsd_dropped_total" ["reason"]
        "gpsd-protocol clients closed or refused by the server, by reason (stalled, full, not_allowed).";
    Counter GPSD_BAD_COMMANDS "fixgate_gpsd_bad_commands_total" ["reason"]
        "gpsd-protocol requests answered with an ERROR object, by reason.";

    // The uplink.
    Gauge UPLINK_CONNECTED "fixgate_uplink_connected" []
        "Whether the uplink is connected.";
    Counter UPLINK_DISCONNECTS "fixgate_uplink_disconnects_total" []
        "Uplink connections lost.";
    Counter UPLINK_ERRORS "fixgate_uplink_errors_total" ["reason"]
        "Uplink errors, by reason.";
    Counter UPLINK_BATCHES "fixgate_uplink_batches_total" ["kind"]
        "Batches sent upstream (resent ones included), by kind.";
    Counter UPLINK_RECORDS "fixgate_uplink_records_total" ["kind"]
        "Records put in batches for upstream, by kind.";
    Counter UPLINK_BYTES "fixgate_uplink_bytes_total" []
        "Bytes of batches sent upstream.";
    Counter UPLINK_RESENT "fixgate_uplink_resent_total" []
        "Batches sent upstream again.";
    Counter UPLINK_ACKED_RECORDS "fixgate_uplink_acked_records_total" ["kind"]
        "Records acknowledged upstream, by kind.";
    Histogram UPLINK_ACK_SECONDS "fixgate_uplink_ack_seconds" []
        "Time from sending a batch upstream to its acknowledgement, in seconds.";
    Gauge UPLINK_ACKED_SEQ "fixgate_uplink_acked_seq" []
        "End of the first range of sequence numbers acknowledged upstream.";
    Gauge UPLINK_BACKLOG_RECORDS "fixgate_uplink_backlog_records" []
        "Records not yet acknowledged upstream.";
    Gauge UPLINK_BACKLOG_OLDEST_SECONDS "fixgate_uplink_backlog_oldest_seconds" []
        "Age of the oldest record not yet acknowledged upstream, in seconds.";
}

/// Gives the recorder every metric's help text, so that `/metrics` shows
/// `# HELP` for each. Call once, after the recorder is installed.
pub fn describe() {
    for metric in ALL {
        match metric.kind {
            Kind::Counter => metrics::describe_counter!(metric.name, metric.help),
            Kind::Gauge => metrics::describe_gauge!(metric.name, metric.help),
            Kind::Histogram => metrics::describe_histogram!(metric.name, metric.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::Path;

    use super::*;

    fn snake_case(s: &str) -> bool {
        !s.is_empty()
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !s.ends_with('_')
            && !s.contains("__")
    }

    #[test]
    fn names_are_unique_prefixed_and_snake_case() {
        let mut seen = HashSet::new();
        for metric in ALL {
            assert!(seen.insert(metric.name), "{} twice", metric.name);
            assert!(metric.name.starts_with("fixgate_"), "{}", metric.name);
            assert!(snake_case(metric.name), "{}", metric.name);
            let counter = metric.kind == Kind::Counter;
            assert_eq!(
                counter,
                metric.name.ends_with("_total"),
                "{}: counters, and only they, end in _total",
                metric.name
            );
        }
    }

    #[test]
    fn every_metric_has_help_and_snake_case_labels() {
        for metric in ALL {
            assert!(
                !metric.help.trim().is_empty(),
                "{} has no help",
                metric.name
            );
            assert!(!metric.help.contains('\n'), "{}", metric.name);
            let mut labels = HashSet::new();
            for label in metric.labels {
                assert!(snake_case(label), "{}: label {label}", metric.name);
                assert!(labels.insert(label), "{}: label {label} twice", metric.name);
            }
        }
    }

    #[test]
    fn the_constants_are_the_catalogue() {
        assert_eq!(FIXES_DROPPED.name(), "fixgate_fixes_dropped_total");
        let listed = ALL.iter().find(|m| m.name == FIXES_DROPPED.name()).unwrap();
        assert_eq!(listed.labels, &FIXES_DROPPED.labels);
        assert_eq!(listed.kind, Kind::Counter);
    }

    #[test]
    fn label_values_keep_their_text() {
        assert_eq!(Value::from("store").0.as_ref(), "store");
        assert_eq!(Value::configured("http.token").0.as_ref(), "http.token");
        let labels = labels(&["a", "b"], [Value::from("x"), Value::from("y")]);
        assert_eq!(labels[0], Label::new("a", "x"));
        assert_eq!(labels[1], Label::new("b", "y"));
    }

    #[test]
    fn metrics_show_their_help_type_and_labels() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            FIXES_DROPPED
                .with::<Value>(["mqtt".into(), "stale".into(), DeviceLabel::none().into()])
                .increment(2);
            UPLINK_CONNECTED.set(1.0);
        });
        let text = handle.render();
        assert!(
            text.contains("# HELP fixgate_fixes_dropped_total Fixes refused"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE fixgate_fixes_dropped_total counter"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"fixgate_fixes_dropped_total{source="mqtt",reason="stale",device="(none)"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE fixgate_uplink_connected gauge"),
            "{text}"
        );
        assert!(text.contains("fixgate_uplink_connected 1"), "{text}");
    }

    /// Walks `dir`, giving each `.rs` file's path and text.
    fn sources(dir: &Path, found: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                found.push((path.display().to_string(), text));
            }
        }
    }

    #[test]
    fn no_other_module_registers_metrics() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        assert!(files.len() > 20, "src/ not found at {}", src.display());
        let here = src.join("telemetry.rs").display().to_string();
        let forbidden = [
            "metrics::counter!",
            "metrics::gauge!",
            "metrics::histogram!",
            "metrics::describe_",
            "use metrics::",
            "use metrics;",
        ];
        let mut offenders = Vec::new();
        for (path, text) in &files {
            if *path == here {
                continue;
            }
            for (n, line) in text.lines().enumerate() {
                if forbidden.iter().any(|f| line.contains(f)) {
                    offenders.push(format!("{path}:{}: {}", n + 1, line.trim()));
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "metrics are registered through crate::telemetry only:\n{}",
            offenders.join("\n")
        );
    }
}
