//! Fixes, devices and the events the pipeline stores: plain values, no I/O.
//!
//! Units are fixed here once so that every source converts on the way in:
//! degrees WGS84 for `lat`/`lon`, metres above mean sea level for `alt`,
//! metres per second for `speed`, degrees true for `course`.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Identifier of a device (a receiver or tracker), as configured or derived from a topic.
///
/// Cheap to clone: the pipeline attaches it to every fix.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(Arc<str>);

/// Longest device id accepted, in bytes.
pub const DEVICE_ID_MAX: usize = 64;

/// Why a string is not a valid device id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    /// The id is empty.
    #[error("device id is empty")]
    Empty,
    /// The id is longer than [`DEVICE_ID_MAX`] bytes.
    #[error("device id is longer than {DEVICE_ID_MAX} bytes")]
    TooLong,
    /// The id holds a character outside `A-Z a-z 0-9 . _ : -`.
    #[error("device id may only hold letters, digits and . _ : - (found {0:?})")]
    BadChar(char),
}

impl DeviceId {
    /// Checks and wraps a device id: 1 to 64 bytes of `A-Z a-z 0-9 . _ : -`.
    ///
    /// The character set keeps ids safe in URLs, MQTT topics, metric labels
    /// and log lines without escaping.
    pub fn new(id: &str) -> Result<Self, DeviceIdError> {
        if id.is_empty() {
            return Err(DeviceIdError::Empty);
        }
        if id.len() > DEVICE_ID_MAX {
            return Err(DeviceIdError::TooLong);
        }
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
        {
            return Err(DeviceIdError::BadChar(c));
        }
        Ok(Self(Arc::from(id)))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeviceId {
    type Error = DeviceIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<DeviceId> for String {
    fn from(d: DeviceId) -> Self {
        d.0.to_string()
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// Dimension of a position fix, as receivers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum FixMode {
    /// Latitude and longitude only.
    TwoD,
    /// Latitude, longitude and altitude.
    ThreeD,
}

impl TryFrom<u8> for FixMode {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, Self::Error> {
        match v {
            2 => Ok(Self::TwoD),
            3 => Ok(Self::ThreeD),
            _ => Err(format!("fix mode must be 2 or 3, not {v}")),
        }
    }
}

impl From<FixMode> for u8 {
    fn from(m: FixMode) -> Self {
        match m {
            FixMode::TwoD => 2,
            FixMode::ThreeD => 3,
        }
    }
}

/// One position fix of one receiver epoch. Absent values are `None`, never zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    /// When the receiver took the fix (UTC, millisecond resolution).
    #[serde(with = "time_ms")]
    pub time: DateTime<Utc>,
    /// Latitude in degrees, WGS84, north positive.
    pub lat: f64,
    /// Longitude in degrees, WGS84, east positive.
    pub lon: f64,
    /// Altitude in metres above mean sea level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt: Option<f64>,
    /// Speed over ground in metres per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    /// Course over ground in degrees true, `[0, 360)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub course: Option<f64>,
    /// Horizontal dilution of precision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hdop: Option<f64>,
    /// Satellites used in the fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sats: Option<u8>,
    /// 2D or 3D fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FixMode>,
    /// Horizontal accuracy in metres, as trackers and phones report it
    /// (OwnTracks `acc`, OsmAnd `accuracy`); receivers give `hdop` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
}

/// Why a fix cannot be accepted at all (the coarse check every source shares).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidFix {
    /// Latitude is not a finite number in `[-90, 90]`.
    #[error("latitude {0} outside [-90, 90]")]
    Latitude(f64),
    /// Longitude is not a finite number in `[-180, 180]`.
    #[error("longitude {0} outside [-180, 180]")]
    Longitude(f64),
    /// An optional value is NaN or infinite, or negative where that is meaningless.
    #[error("{0} is not a valid value")]
    Field(&'static str),
}

impl InvalidFix {
    /// A short stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Latitude(_) => "latitude",
            Self::Longitude(_) => "longitude",
            Self::Field(_) => "field",
        }
    }
}

impl Fix {
    /// A fix of a time and a position only; every optional value absent.
    pub fn new(time: DateTime<Utc>, lat: f64, lon: f64) -> Self {
        Self {
            time,
            lat,
            lon,
            alt: None,
            speed: None,
            course: None,
            hdop: None,
            sats: None,
            mode: None,
            accuracy: None,
        }
    }

    /// Checks that the numbers are physically meaningful; says which one is not.
    pub fn validate(&self) -> Result<(), InvalidFix> {
        if !(self.lat.is_finite() && (-90.0..=90.0).contains(&self.lat)) {
            return Err(InvalidFix::Latitude(self.lat));
        }
        if !(self.lon.is_finite() && (-180.0..=180.0).contains(&self.lon)) {
            return Err(InvalidFix::Longitude(self.lon));
        }
        let finite = |v: Option<f64>| v.is_none_or(f64::is_finite);
        let non_negative = |v: Option<f64>| v.is_none_or(|v| v.is_finite() && v >= 0.0);
        if !finite(self.alt) {
            return Err(InvalidFix::Field("alt"));
        }
        if !non_negative(self.speed) {
            return Err(InvalidFix::Field("speed"));
        }
        if !self
            .course
            .is_none_or(|c| c.is_finite() && (0.0..=360.0).contains(&c))
        {
            return Err(InvalidFix::Field("course"));
        }
        if !non_negative(self.hdop) {
            return Err(InvalidFix::Field("hdop"));
        }
        if !non_negative(self.accuracy) {
            return Err(InvalidFix::Field("accuracy"));
        }
        Ok(())
    }
}

/// A fix of one device: what the feed calls a `position` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// The device that reported the fix.
    pub device: DeviceId,
    /// The fix itself, flattened into the same JSON object.
    #[serde(flatten)]
    pub fix: Fix,
    /// True for a fix older than the device's live position when it arrived
    /// (a tracker publishing what it buffered offline): kept in the history,
    /// never shown as where the device is now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub historic: bool,
}

impl Position {
    /// A live (not historic) position.
    pub fn new(device: DeviceId, fix: Fix) -> Self {
        Self {
            device,
            fix,
            historic: false,
        }
    }
}

/// Whether a device is reporting, as the gateway sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// Heard from within the configured silence.
    Online,
    /// Silent for longer than the configured silence.
    Offline,
}

/// A device came online (heard after silence) or went offline (silent too long).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The device.
    pub device: DeviceId,
    /// Its new presence.
    pub status: Presence,
    /// When the gateway noticed (its own clock): the arrival that brought it
    /// online, or the moment the silence ran out.
    #[serde(with = "time_ms")]
    pub time: DateTime<Utc>,
}

/// Something that happened to a device, as stored and as delivered on the feed.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A new fix.
    Position(Position),
    /// A change of presence.
    Status(Status),
}

impl Event {
    /// The SSE event name (`event:` line) and the label in metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Position(_) => "position",
            Self::Status(_) => "status",
        }
    }

    /// The device the event is about.
    pub fn device(&self) -> &DeviceId {
        match self {
            Self::Position(p) => &p.device,
            Self::Status(s) => &s.device,
        }
    }

    /// When it happened: the fix time of a position, the gateway's time of a status change.
    pub fn time(&self) -> DateTime<Utc> {
        match self {
            Self::Position(p) => p.fix.time,
            Self::Status(s) => s.time,
        }
    }

    /// The event as one line of JSON, the `data:` of SSE and the unit of JSON Lines.
    pub fn to_json(&self) -> serde_json::Result<String> {
        match self {
            Self::Position(p) => serde_json::to_string(p),
            Self::Status(s) => serde_json::to_string(s),
        }
    }
}

/// An event with the sequence number the store gave it: the unit readers consume.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Monotonic store sequence number; the SSE `id:` and the uplink cursor.
    pub seq: u64,
    /// What happened.
    pub event: Event,
}

/// Which kind of source produced a fix; a label for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// A receiver on a serial port.
    Serial,
    /// An NMEA log replayed from a file.
    Replay,
    /// The built-in demo fleet.
    Demo,
    /// A device publishing over MQTT (embedded or external broker).
    Mqtt,
    /// A device posting over HTTP (fixgate JSON or OsmAnd).
    Http,
}

impl SourceKind {
    /// The lower-case label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Serial => "serial",
            Self::Replay => "replay",
            Self::Demo => "demo",
            Self::Mqtt => "mqtt",
            Self::Http => "http",
        }
    }
}

/// A fix on its way from a source to the pipeline.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The kind of source that decoded it.
    pub source: SourceKind,
    /// The device and its fix.
    pub position: Position,
}

/// RFC 3339 UTC with milliseconds (`2015-03-18T17:19:26.000Z`), the one time format on the outside.
pub mod time_ms {
    use super::*;
    use serde::{Deserializer, Serializer};

    /// Formats a time as RFC 3339 UTC with exactly three fractional digits.
    pub fn format(t: &DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// Serde serializer for [`format`].
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    /// Serde serializer for an optional time (pair it with `skip_serializing_if`).
    pub fn serialize_opt<S: Serializer>(
        t: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => serialize(t, s),
            None => s.serialize_none(),
        }
    }

    /// Serde deserializer accepting any RFC 3339 time, converted to UTC.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn fix() -> Fix {
        Fix {
            time: Utc.with_ymd_and_hms(2015, 3, 18, 17, 19, 26).unwrap(),
            lat: 44.0690105,
            lon: -121.3142463,
            alt: Some(1147.2),
            speed: None,
            course: None,
            hdop: Some(0.91),
            sats: Some(12),
            mode: Some(FixMode::ThreeD),
            accuracy: None,
        }
    }

    #[test]
    fn device_id_rejects_unsafe_characters() {
        assert!(DeviceId::new("bus-12.gps:0_a").is_ok());
        assert_eq!(DeviceId::new(""), Err(DeviceIdError::Empty));
        assert_eq!(DeviceId::new("a/b"), Err(DeviceIdError::BadChar('/')));
        assert_eq!(DeviceId::new(&"x".repeat(65)), Err(DeviceIdError::TooLong));
    }

    #[test]
    fn position_json_is_flat_with_millisecond_time_and_no_absent_fields() {
        let p = Position::new(DeviceId::new("bus-1").unwrap(), fix());
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"{"device":"bus-1","time":"2015-03-18T17:19:26.000Z","lat":44.0690105,"lon":-121.3142463,"alt":1147.2,"hdop":0.91,"sats":12,"mode":3}"#
        );
        let back: Position = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn validate_names_the_bad_value() {
        assert_eq!(fix().validate(), Ok(()));
        let mut f = fix();
        f.lat = 91.0;
        assert_eq!(f.validate(), Err(InvalidFix::Latitude(91.0)));
        let mut f = fix();
        f.lon = f64::NAN;
        assert!(matches!(f.validate(), Err(InvalidFix::Longitude(_))));
        let mut f = fix();
        f.speed = Some(-1.0);
        assert_eq!(f.validate(), Err(InvalidFix::Field("speed")));
    }
}
