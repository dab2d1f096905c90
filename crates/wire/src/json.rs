//! Records as JSON Lines, for the tools (`fixgate decode` prints them,
//! `fixgate encode` reads them back): the event's own JSON, as the feed sends
//! it, with `gateway`, `seq` and `event` in front.

use serde_json::{Map, Value};

use crate::fix::{
    DeviceId, DeviceIdError, Event, Geofence, InvalidFix, Position, Record, Status, limits,
};

/// One record as one line of JSON (no newline), e.g.
/// `{"gateway":"gw-1","seq":7,"event":"position","device":"bus-1","time":…}`.
pub fn record_json(gateway: &str, record: &Record) -> String {
    // Plain structs of strings and numbers: serialising cannot fail.
    let gateway = serde_json::to_string(gateway).unwrap_or_default();
    let event = record.event.to_json().unwrap_or_default();
    let fields = event.strip_prefix('{').unwrap_or("}");
    let comma = if fields.starts_with('}') { "" } else { "," };
    format!(
        r#"{{"gateway":{gateway},"seq":{},"event":"{}"{comma}{fields}"#,
        record.seq,
        record.event.name()
    )
}

/// A line read back: the event, and the gateway and seq if the line had them.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonRecord {
    /// `gateway`, if present.
    pub gateway: Option<DeviceId>,
    /// `seq`, if present.
    pub seq: Option<u64>,
    /// The event.
    pub event: Event,
}

/// Why a line is not a record.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// Not a JSON object, or a field of the wrong type.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// `gateway` is not a valid id.
    #[error("gateway: {0}")]
    Gateway(DeviceIdError),
    /// A field of the wrong type.
    #[error("`{0}` has the wrong type")]
    Type(&'static str),
    /// `event` names no event this build knows.
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
    /// No `device`, and no default was given.
    #[error("no device (give one for lines without)")]
    NoDevice,
    /// The place of a position or a geofence event is not on Earth.
    #[error("{0}")]
    Fix(#[from] InvalidFix),
    /// Another value of a position or a geofence event is not a number
    /// within the wire's range (`quantise`).
    #[error("`{0}` is not a number within the wire's range")]
    Range(&'static str),
}

/// The kinds of event a line can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Position,
    Status,
    Geofence,
}

impl Kind {
    /// The kind an `event` field names.
    fn named(event: String) -> Result<Self, JsonError> {
        match event.as_str() {
            "position" => Ok(Self::Position),
            "status" => Ok(Self::Status),
            "geofence" => Ok(Self::Geofence),
            _ => Err(JsonError::UnknownEvent(event)),
        }
    }

    /// The kind of a line without `event`, told by the keys only one kind
    /// has: `status` for a status, `fence` for a geofence event.
    fn of(object: &Map<String, Value>) -> Self {
        if object.contains_key("status") {
            Self::Status
        } else if object.contains_key("fence") {
            Self::Geofence
        } else {
            Self::Position
        }
    }
}

/// Parses a line of [`record_json`], of the feed's event JSON, or a bare fix
/// as `fixgate nmea` prints it (then `default_device` names the device).
/// Without an `event` field, a line with `status` is a status, one with
/// `fence` a geofence event, else a position.
pub fn parse_record_json(
    line: &str,
    default_device: Option<&DeviceId>,
) -> Result<JsonRecord, JsonError> {
    let mut object: Map<String, Value> = serde_json::from_str(line)?;
    let gateway = match object.remove("gateway") {
        None => None,
        Some(Value::String(g)) => Some(DeviceId::new(&g).map_err(JsonError::Gateway)?),
        Some(_) => return Err(JsonError::Type("gateway")),
    };
    let seq = match object.remove("seq") {
        None => None,
        Some(v) => Some(v.as_u64().ok_or(JsonError::Type("seq"))?),
    };
    let kind = match object.remove("event") {
        None => Kind::of(&object),
        Some(Value::String(e)) => Kind::named(e)?,
        Some(_) => return Err(JsonError::Type("event")),
    };
    if !object.contains_key("device") {
        let device = default_device.ok_or(JsonError::NoDevice)?;
        object.insert("device".into(), device.as_str().into());
    }
    let object = Value::Object(object);
    let event = match kind {
        Kind::Status => Event::Status(serde_json::from_value::<Status>(object)?),
        Kind::Position => {
            let position = serde_json::from_value::<Position>(object)?;
            on_earth(position.fix.lat, position.fix.lon)?;
            // What a batch can carry, no more: `decode | encode` must
            // reproduce any batch, an older gateway's included.
            super::quantise::WireFix::try_from_fix(&position.fix).map_err(JsonError::Range)?;
            Event::Position(position)
        }
        Kind::Geofence => {
            let geofence = serde_json::from_value::<Geofence>(object)?;
            on_earth(geofence.lat, geofence.lon)?;
            super::body::check_geofence(&geofence).map_err(JsonError::Range)?;
            Event::Geofence(geofence)
        }
    };
    Ok(JsonRecord {
        gateway,
        seq,
        event,
    })
}

/// A latitude and longitude on Earth, or the error naming the one that is not.
fn on_earth(lat: f64, lon: f64) -> Result<(), InvalidFix> {
    if !limits::LAT.contains(lat) {
        return Err(InvalidFix::Latitude(lat));
    }
    if !limits::LON.contains(lon) {
        return Err(InvalidFix::Longitude(lon));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fix::{Crossing, Fix, FixMode, Presence};
    use chrono::{TimeZone, Utc};

    fn position() -> Event {
        let mut fix = Fix::new(
            Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap(),
            52.0907123,
            5.1214,
        );
        fix.mode = Some(FixMode::ThreeD);
        fix.speed = Some(8.25);
        Event::Position(Position {
            device: DeviceId::new("bus-1").unwrap(),
            fix,
            historic: true,
        })
    }

    #[test]
    fn a_record_line_is_the_event_json_with_gateway_seq_and_kind_in_front() {
        let line = record_json(
            "gw-1",
            &Record {
                seq: 7,
                event: position(),
            },
        );
        assert_eq!(
            line,
            r#"{"gateway":"gw-1","seq":7,"event":"position","device":"bus-1","time":"2026-11-23T12:00:00.000Z","lat":52.0907123,"lon":5.1214,"speed":8.25,"mode":3,"historic":true}"#
        );
        let back = parse_record_json(&line, None).unwrap();
        assert_eq!(back.gateway.unwrap().as_str(), "gw-1");
        assert_eq!(back.seq, Some(7));
        assert_eq!(back.event, position());
    }

    #[test]
    fn statuses_bare_fixes_and_bad_lines() {
        let status = Event::Status(Status {
            device: DeviceId::new("bus-2").unwrap(),
            status: Presence::Offline,
            time: Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap(),
        });
        let line = record_json(
            "gw",
            &Record {
                seq: 1,
                event: status.clone(),
            },
        );
        assert_eq!(parse_record_json(&line, None).unwrap().event, status);
        let feed_line = status.to_json().unwrap();
        assert_eq!(parse_record_json(&feed_line, None).unwrap().event, status);

        let bare = r#"{"time":"2026-11-23T12:00:00.000Z","lat":1.5,"lon":2.5}"#;
        assert!(matches!(
            parse_record_json(bare, None),
            Err(JsonError::NoDevice)
        ));
        let dev = DeviceId::new("gps0").unwrap();
        let parsed = parse_record_json(bare, Some(&dev)).unwrap();
        assert_eq!(parsed.event.device(), &dev);
        assert_eq!((parsed.gateway, parsed.seq), (None, None));

        for bad in [
            "[1]",
            "{",
            r#"{"event":"geofence","device":"a"}"#,
            r#"{"event":"fence","device":"a","time":"2026-11-23T12:00:00Z","lat":1,"lon":2}"#,
            r#"{"fence":"f","type":"enter","device":"a","time":"2026-11-23T12:00:00Z","lat":1,"lon":200}"#,
            r#"{"fence":"f","type":"leave","device":"a","time":"2026-11-23T12:00:00Z","lat":1,"lon":2}"#,
            r#"{"fence":"f g","type":"exit","device":"a","time":"2026-11-23T12:00:00Z","lat":1,"lon":2}"#,
            r#"{"event":"geofence","fence":"f","type":"speeding","limit":-1,"device":"a","time":"2026-11-23T12:00:00Z","lat":1,"lon":2}"#,
            r#"{"seq":-1,"device":"a","time":"2026-11-23T12:00:00Z","lat":1,"lon":2}"#,
            r#"{"gateway":"a b","device":"a","time":"2026-11-23T12:00:00Z","lat":1,"lon":2}"#,
            r#"{"device":"a","time":"2026-11-23T12:00:00Z","lat":91,"lon":2}"#,
            r#"{"device":"a/b","time":"2026-11-23T12:00:00Z","lat":1,"lon":2}"#,
        ] {
            assert!(parse_record_json(bad, Some(&dev)).is_err(), "{bad}");
        }
    }

    #[test]
    fn geofence_events_are_told_by_their_event_name_or_their_fence() {
        let time = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
        let geofence = Event::Geofence(crate::fix::Geofence::example("bus-1", time));
        let line = record_json(
            "gw",
            &Record {
                seq: 3,
                event: geofence.clone(),
            },
        );
        assert_eq!(
            line,
            r#"{"gateway":"gw","seq":3,"event":"geofence","device":"bus-1","fence":"depot","type":"speeding","time":"2026-11-23T12:00:00.000Z","lat":52.0907123,"lon":5.1214456,"speed":14.37,"limit":8.33,"since":"2026-11-23T11:58:25.000Z"}"#
        );
        assert_eq!(parse_record_json(&line, None).unwrap().event, geofence);
        let feed_line = geofence.to_json().unwrap();
        assert_eq!(parse_record_json(&feed_line, None).unwrap().event, geofence);
        // Without `event` or `device`: the fence tells it, the default names the device.
        let bare = r#"{"fence":"gate-2","type":"enter","time":"2026-11-23T12:00:00Z","lat":1.5,"lon":2.5}"#;
        let dev = DeviceId::new("gps0").unwrap();
        let Event::Geofence(g) = parse_record_json(bare, Some(&dev)).unwrap().event else {
            panic!("not a geofence event")
        };
        assert_eq!(
            (g.device, g.crossing, g.historic),
            (dev, Crossing::Enter, false)
        );
    }
}
