//! The receiver's lines: one JSON object per record on stdout, and one per
//! event (a gap, a refused batch, the summary) on stderr. Pure formatting.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use serde::Serialize;
use serde_json::json;

use super::dedupe::Summary;
use crate::fix::{Event, Geofence, Position, Record, Status};
use crate::wire::Batch;

/// The event's own fields, then where it came from.
#[derive(Serialize)]
struct RecordLine<'a> {
    #[serde(flatten)]
    body: Body<'a>,
    event: &'static str,
    seq: u64,
    gateway: &'a str,
    batch: u64,
    kind: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Body<'a> {
    Position(&'a Position),
    Status(&'a Status),
    Geofence(&'a Geofence),
}

/// One record of `batch` as a line of JSON (no newline): the event as the
/// feed shows it (`device`, `time`, `lat`, …, `historic` when true) plus
/// `event`, `seq`, `gateway`, `batch` and `kind`.
pub fn record_line(batch: &Batch, record: &Record) -> serde_json::Result<String> {
    let event = &record.event;
    let body = match event {
        Event::Position(p) => Body::Position(p),
        Event::Status(s) => Body::Status(s),
        Event::Geofence(g) => Body::Geofence(g),
    };
    serde_json::to_string(&RecordLine {
        body,
        event: event.name(),
        seq: record.seq,
        gateway: &batch.gateway,
        batch: batch.id,
        kind: batch.kind.name(),
    })
}

/// `{"gap":{"gateway":…,"from":…,"to":…,"batch":…}}`: numbers of
/// `gateway` no batch has accounted for, below one that has come (`batch`
/// is the batch that showed it).
pub fn gap_line(gateway: &str, batch: u64, hole: &RangeInclusive<u64>) -> String {
    named("gap", &RangeEvent::new(gateway, batch, hole))
}

/// `{"gap_filled":{…}}`: part of an earlier gap that `batch` accounted for.
pub fn filled_line(gateway: &str, batch: u64, part: &RangeInclusive<u64>) -> String {
    named("gap_filled", &RangeEvent::new(gateway, batch, part))
}

#[derive(Serialize)]
struct RangeEvent<'a> {
    gateway: &'a str,
    from: u64,
    to: u64,
    batch: u64,
}

impl<'a> RangeEvent<'a> {
    fn new(gateway: &'a str, batch: u64, range: &RangeInclusive<u64>) -> Self {
        Self {
            gateway,
            from: *range.start(),
            to: *range.end(),
            batch,
        }
    }
}

/// `{name: value}`, the value's fields in their declared order (a
/// `serde_json::Value` would sort them).
fn named<T: Serialize>(name: &str, value: &T) -> String {
    // Structs of strings and integers: serialising them cannot fail.
    serde_json::to_string(&BTreeMap::from([(name, value)])).unwrap_or_default()
}

/// Where a batch came from, for the line that refuses it.
#[derive(Debug, Clone)]
pub enum Origin {
    /// An MQTT message on this topic.
    Topic(String),
    /// An HTTP request from this peer.
    Peer(std::net::SocketAddr),
}

/// `{"error":…,"topic":…}` (or `"peer"`): a batch that was refused.
pub fn error_line(origin: &Origin, why: &str) -> String {
    match origin {
        Origin::Topic(topic) => json!({ "error": why, "topic": topic }),
        Origin::Peer(peer) => json!({ "error": why, "peer": peer.to_string() }),
    }
    .to_string()
}

/// `{"summary":{…}}`.
pub fn summary_line(summary: &Summary) -> String {
    named("summary", summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fix::{DeviceId, Fix, Presence};
    use crate::receive::dedupe::Gap;
    use crate::wire::BatchKind;
    use chrono::{TimeZone, Utc};

    fn batch(kind: BatchKind) -> Batch {
        Batch {
            gateway: "gw-1".into(),
            id: 7,
            kind,
            first_seq: 40,
            last_seq: 42,
            records: Vec::new(),
        }
    }

    #[test]
    fn a_position_line_is_the_feed_json_plus_its_origin() {
        let time = Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap();
        let mut p = Position::new(DeviceId::new("bus-1").unwrap(), Fix::new(time, 52.5, 5.25));
        p.fix.speed = Some(3.5);
        p.historic = true;
        let r = Record {
            seq: 41,
            event: Event::Position(p),
        };
        assert_eq!(
            record_line(&batch(BatchKind::Backlog), &r).unwrap(),
            r#"{"device":"bus-1","time":"2026-05-01T12:00:00.000Z","lat":52.5,"lon":5.25,"speed":3.5,"historic":true,"event":"position","seq":41,"gateway":"gw-1","batch":7,"kind":"backlog"}"#
        );
    }

    #[test]
    fn a_status_line_names_its_event() {
        let status = Status {
            device: DeviceId::new("bus-2").unwrap(),
            status: Presence::Offline,
            time: Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap(),
        };
        assert_eq!(
            record_line(
                &batch(BatchKind::Live),
                &Record {
                    seq: 40,
                    event: Event::Status(status)
                }
            )
            .unwrap(),
            r#"{"device":"bus-2","status":"offline","time":"2026-05-01T12:00:00.000Z","event":"status","seq":40,"gateway":"gw-1","batch":7,"kind":"live"}"#
        );
    }

    #[test]
    fn a_geofence_line_names_its_event_after_its_crossing_type() {
        let time = Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap();
        let mut g = Geofence::example("bus-3", time);
        (g.speed, g.limit, g.since) = (None, None, None);
        g.crossing = crate::fix::Crossing::Enter;
        let line = record_line(
            &batch(BatchKind::Live),
            &Record {
                seq: 42,
                event: Event::Geofence(g),
            },
        )
        .unwrap();
        assert_eq!(
            line,
            r#"{"device":"bus-3","fence":"depot","type":"enter","time":"2026-05-01T12:00:00.000Z","lat":52.0907123,"lon":5.1214456,"event":"geofence","seq":42,"gateway":"gw-1","batch":7,"kind":"live"}"#
        );
    }

    #[test]
    fn gap_summary_and_error_lines() {
        assert_eq!(
            gap_line("gw-1", 3, &(11..=20)),
            r#"{"gap":{"gateway":"gw-1","from":11,"to":20,"batch":3}}"#
        );
        assert_eq!(
            filled_line("gw-1", 4, &(11..=20)),
            r#"{"gap_filled":{"gateway":"gw-1","from":11,"to":20,"batch":4}}"#
        );
        let summary = Summary {
            gateways: 1,
            batches: 2,
            records: 3,
            duplicates: 4,
            malformed: 5,
            open_gaps: 1,
            missing: 10,
            gaps: vec![Gap {
                gateway: "gw-1".into(),
                from: 11,
                to: 20,
            }],
        };
        assert_eq!(
            summary_line(&summary),
            r#"{"summary":{"gateways":1,"batches":2,"records":3,"duplicates":4,"malformed":5,"open_gaps":1,"missing":10,"gaps":[{"gateway":"gw-1","from":11,"to":20}]}}"#
        );
        let origin = Origin::Topic("fixgate/gw-1/batches".into());
        assert_eq!(
            error_line(&origin, "malformed batch: empty"),
            r#"{"error":"malformed batch: empty","topic":"fixgate/gw-1/batches"}"#
        );
    }
}
