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

/// Checks an identifier (of a device or a fence): 1 to 64 bytes of
/// `A-Z a-z 0-9 . _ : -`.
fn check_id(id: &str) -> Result<(), DeviceIdError> {
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
    Ok(())
}

impl DeviceId {
    /// Checks and wraps a device id: 1 to 64 bytes of `A-Z a-z 0-9 . _ : -`.
    ///
    /// The character set keeps ids safe in URLs, MQTT topics, metric labels
    /// and log lines without escaping.
    pub fn new(id: &str) -> Result<Self, DeviceIdError> {
        check_id(id)?;
        Ok(Self(Arc::from(id)))
    }
}

/// What an identifier newtype over `Arc<str>` with a checking `new` shares:
/// the string view, serde's conversions, and printing as the bare string.
macro_rules! id_type {
    ($name:ident) => {
        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = DeviceIdError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> Self {
                id.0.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }
    };
}

id_type!(DeviceId);

/// Identifier of a geofence, under the same rules as a [`DeviceId`] (they
/// go into the same URLs, topics, labels and logs).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FenceId(Arc<str>);

impl FenceId {
    /// Checks and wraps a fence id: 1 to 64 bytes of `A-Z a-z 0-9 . _ : -`.
    pub fn new(id: &str) -> Result<Self, DeviceIdError> {
        check_id(id)?;
        Ok(Self(Arc::from(id)))
    }
}

id_type!(FenceId);

/// Name of a device group (a fleet, a depot's buses), under the same rules
/// as a [`DeviceId`]: feeds and access tokens are scoped by it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GroupId(Arc<str>);

impl GroupId {
    /// Checks and wraps a group name: 1 to 64 bytes of `A-Z a-z 0-9 . _ : -`.
    pub fn new(id: &str) -> Result<Self, DeviceIdError> {
        check_id(id)?;
        Ok(Self(Arc::from(id)))
    }
}

id_type!(GroupId);

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

/// The range of one value of a fix: what the gateway takes in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    /// The field's name in [`Fix`] (and in fixgate JSON).
    pub field: &'static str,
    /// The least value taken.
    pub min: f64,
    /// The greatest value taken.
    pub max: f64,
    /// The unit, for messages (empty for a plain number).
    pub unit: &'static str,
}

impl Range {
    /// Whether `v` is a finite number within the range, ends included.
    pub fn contains(&self, v: f64) -> bool {
        v.is_finite() && (self.min..=self.max).contains(&v)
    }
}

/// What a fix may hold: physically plausible values, each well within what
/// the store (`store::segment`) and the upstream wire format (`wire`) can
/// represent at their precision, so that any value [`Fix::validate`] passes
/// is stored and sent exactly (to 1e-7°, 1 ms, 0.1 m, 0.01 m/s, 0.1°, 0.01
/// HDOP, 0.1 m accuracy) and never clamped. The store and the wire codec
/// check at compile time that these ranges fit their integer types.
pub mod limits {
    use super::Range;

    /// Latitude, degrees.
    pub const LAT: Range = Range {
        field: "lat",
        min: -90.0,
        max: 90.0,
        unit: "°",
    };
    /// Longitude, degrees.
    pub const LON: Range = Range {
        field: "lon",
        min: -180.0,
        max: 180.0,
        unit: "°",
    };
    /// Altitude above mean sea level, metres: the Dead Sea shore is at
    /// −430 m, and 100 km is the edge of space (civilian receivers stop
    /// reporting at 18 km).
    pub const ALT: Range = Range {
        field: "alt",
        min: -1_000.0,
        max: 100_000.0,
        unit: "m",
    };
    /// Speed over ground, m/s: above any aircraft that carries a tracker
    /// (civilian receivers stop reporting at 515 m/s).
    pub const SPEED: Range = Range {
        field: "speed",
        min: 0.0,
        max: 3_000.0,
        unit: "m/s",
    };
    /// Course over ground, degrees true; 360 is north, stored as 0.
    pub const COURSE: Range = Range {
        field: "course",
        min: 0.0,
        max: 360.0,
        unit: "°",
    };
    /// Horizontal dilution of precision: NMEA gives it with two integer
    /// digits, and receivers report 99.99 for "unknown".
    pub const HDOP: Range = Range {
        field: "hdop",
        min: 0.0,
        max: 100.0,
        unit: "",
    };
    /// Horizontal accuracy, metres: no error on Earth is larger than half
    /// its circumference (phones on cell or IP location report kilometres).
    pub const ACCURACY: Range = Range {
        field: "accuracy",
        min: 0.0,
        max: 20_000_000.0,
        unit: "m",
    };
    /// Earliest fix time, ms since the Unix epoch: 1980-01-06T00:00:00Z,
    /// the GPS epoch; no satellite fix is older.
    pub const TIME_MIN_MS: i64 = 315_964_800_000;
    /// Latest fix time, ms since the Unix epoch: 9999-12-31T23:59:59.999Z,
    /// the last time RFC 3339 (four-digit years), and so the feed's JSON,
    /// can write. Times ahead of the gateway clock are the `future` filter's.
    pub const TIME_MAX_MS: i64 = 253_402_300_799_999;
}

/// Why a fix cannot be accepted at all (the check every source shares).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidFix {
    /// Latitude is not a finite number in `[-90, 90]`.
    #[error("latitude {} outside [-90, 90]", Num(*.0))]
    Latitude(f64),
    /// Longitude is not a finite number in `[-180, 180]`.
    #[error("longitude {} outside [-180, 180]", Num(*.0))]
    Longitude(f64),
    /// An optional value is NaN or infinite.
    #[error("{0} is not a valid value")]
    Field(&'static str),
    /// A value outside its [`limits`].
    #[error("{} {} is outside {}", range.field, Num(*value), Shown(range))]
    OutOfRange {
        /// The range it missed.
        range: Range,
        /// The value.
        value: f64,
    },
    /// The fix time is outside `limits::TIME_MIN_MS..=limits::TIME_MAX_MS`.
    #[error(
        "time {} is outside 1980-01-06T00:00:00Z (the GPS epoch) … 9999-12-31T23:59:59.999Z",
        time_ms::format(.0)
    )]
    Time(DateTime<Utc>),
}

/// A number as messages show it: plainly, or in exponent form when that
/// is shorter (Rust writes 1e308 with all its 309 digits).
struct Num(f64);

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v != 0.0 && !(1e-4..1e15).contains(&v.abs()) {
            write!(f, "{v:e}")
        } else {
            write!(f, "{v}")
        }
    }
}

/// A range as messages show it: `-1000…100000 m`.
struct Shown<'a>(&'a Range);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        write!(f, "{}…{}", r.min, r.max)?;
        if !r.unit.is_empty() {
            write!(f, " {}", r.unit)?;
        }
        Ok(())
    }
}

impl InvalidFix {
    /// A short stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Latitude(_) => "latitude",
            Self::Longitude(_) => "longitude",
            Self::Field(_) | Self::OutOfRange { .. } | Self::Time(_) => "field",
        }
    }

    /// What is wrong with the value, without naming the field: for a
    /// message that names it its own way (a payload's `vel` for `speed`).
    pub fn problem(&self) -> String {
        match self {
            Self::Latitude(v) => format!("{} is outside {}", Num(*v), Shown(&limits::LAT)),
            Self::Longitude(v) => format!("{} is outside {}", Num(*v), Shown(&limits::LON)),
            Self::Field(_) => "not a finite number".to_owned(),
            Self::OutOfRange { range, value } => {
                format!("{} is outside {}", Num(*value), Shown(range))
            }
            Self::Time(t) => format!(
                "{} is outside 1980-01-06T00:00:00Z (the GPS epoch) … 9999-12-31T23:59:59.999Z",
                time_ms::format(t)
            ),
        }
    }

    /// The [`Fix`] field at fault (`lat`, `alt`, `time`, …).
    pub fn field(&self) -> &'static str {
        match self {
            Self::Latitude(_) => "lat",
            Self::Longitude(_) => "lon",
            Self::Field(field) => field,
            Self::OutOfRange { range, .. } => range.field,
            Self::Time(_) => "time",
        }
    }
}

/// Checks an optional value against its range.
fn within(v: Option<f64>, range: Range) -> Result<(), InvalidFix> {
    match v {
        None => Ok(()),
        Some(v) if !v.is_finite() => Err(InvalidFix::Field(range.field)),
        Some(v) if range.contains(v) => Ok(()),
        Some(value) => Err(InvalidFix::OutOfRange { range, value }),
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

    /// Checks that every value is physically plausible, within [`limits`]
    /// (and so storable and sendable without loss); says which one is not.
    pub fn validate(&self) -> Result<(), InvalidFix> {
        if !limits::LAT.contains(self.lat) {
            return Err(InvalidFix::Latitude(self.lat));
        }
        if !limits::LON.contains(self.lon) {
            return Err(InvalidFix::Longitude(self.lon));
        }
        let ms = self.time.timestamp_millis();
        if !(limits::TIME_MIN_MS..=limits::TIME_MAX_MS).contains(&ms) {
            return Err(InvalidFix::Time(self.time));
        }
        within(self.alt, limits::ALT)?;
        within(self.speed, limits::SPEED)?;
        within(self.course, limits::COURSE)?;
        within(self.hdop, limits::HDOP)?;
        within(self.accuracy, limits::ACCURACY)?;
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

/// What a device did with respect to a fence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Crossing {
    /// It came inside.
    Enter,
    /// It left.
    Exit,
    /// It has been inside for the fence's dwell time (once per visit).
    Dwell,
    /// It went faster than the fence's speed limit inside it (once per
    /// stretch above the limit).
    Speeding,
}

impl Crossing {
    /// The lower-case name, as in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enter => "enter",
            Self::Exit => "exit",
            Self::Dwell => "dwell",
            Self::Speeding => "speeding",
        }
    }

    /// The number the store and the wire format keep (stable: never reuse one).
    pub fn code(self) -> u8 {
        match self {
            Self::Enter => 0,
            Self::Exit => 1,
            Self::Dwell => 2,
            Self::Speeding => 3,
        }
    }

    /// The crossing of a stored or received code.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Enter,
            1 => Self::Exit,
            2 => Self::Dwell,
            3 => Self::Speeding,
            _ => return None,
        })
    }
}

/// A geofence event: what the feed calls a `geofence` event. Caused by one
/// fix, stored with it and carrying its time and place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Geofence {
    /// The device.
    pub device: DeviceId,
    /// The fence.
    pub fence: FenceId,
    /// What happened.
    #[serde(rename = "type")]
    pub crossing: Crossing,
    /// The time of the fix that caused it.
    #[serde(with = "time_ms")]
    pub time: DateTime<Utc>,
    /// Where that fix was (degrees WGS84).
    pub lat: f64,
    /// Where that fix was (degrees WGS84).
    pub lon: f64,
    /// The fix's speed in m/s (`speeding` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    /// The fence's speed limit in m/s (`speeding` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<f64>,
    /// When the visit began (`dwell`, `speeding` and `exit`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "time_ms::serialize_opt",
        deserialize_with = "time_ms::deserialize_opt"
    )]
    pub since: Option<DateTime<Utc>>,
    /// Caused by a historic fix: found late, in its place in the device's
    /// past; it never changed what the gateway holds as the device's zones.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub historic: bool,
}

impl Geofence {
    /// Checks the numbers as [`Fix::validate`] checks a fix's: a place on
    /// Earth and a time within [`limits`], speed and limit within
    /// [`limits::SPEED`].
    pub fn validate(&self) -> Result<(), InvalidFix> {
        let fix = Fix {
            speed: self.speed,
            ..Fix::new(self.time, self.lat, self.lon)
        };
        fix.validate()?;
        let limit = Range {
            field: "limit",
            ..limits::SPEED
        };
        within(self.limit, limit)
    }

    /// A `speeding` event of `device` in fence `depot` with every optional
    /// value set, for the tests of the modules that store and send events.
    #[doc(hidden)]
    pub fn example(device: &str, time: DateTime<Utc>) -> Self {
        Self {
            device: DeviceId::new(device).expect("valid device id"),
            fence: FenceId::new("depot").expect("valid fence id"),
            crossing: Crossing::Speeding,
            time,
            lat: 52.0907123,
            lon: 5.1214456,
            speed: Some(14.37),
            limit: Some(8.33),
            since: Some(time - chrono::Duration::seconds(95)),
            historic: false,
        }
    }
}

/// Something that happened to a device, as stored and as delivered on the feed.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A new fix.
    Position(Position),
    /// A change of presence.
    Status(Status),
    /// A fence entered, left, dwelt in or sped through.
    Geofence(Geofence),
}

impl Event {
    /// The SSE event name (`event:` line) and the label in metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Position(_) => "position",
            Self::Status(_) => "status",
            Self::Geofence(_) => "geofence",
        }
    }

    /// The device the event is about.
    pub fn device(&self) -> &DeviceId {
        match self {
            Self::Position(p) => &p.device,
            Self::Status(s) => &s.device,
            Self::Geofence(g) => &g.device,
        }
    }

    /// When it happened: the fix time of a position or of the fix that
    /// caused a geofence event, the gateway's time of a status change.
    pub fn time(&self) -> DateTime<Utc> {
        match self {
            Self::Position(p) => p.fix.time,
            Self::Status(s) => s.time,
            Self::Geofence(g) => g.time,
        }
    }

    /// The event as one line of JSON, the `data:` of SSE and the unit of JSON Lines.
    pub fn to_json(&self) -> serde_json::Result<String> {
        match self {
            Self::Position(p) => serde_json::to_string(p),
            Self::Status(s) => serde_json::to_string(s),
            Self::Geofence(g) => serde_json::to_string(g),
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

    /// Serde deserializer of an optional time (pair it with `default`).
    pub fn deserialize_opt<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        deserialize(d).map(Some)
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
    fn geofence_json_names_the_crossing_type_and_omits_what_it_lacks() {
        let g = Geofence {
            device: DeviceId::new("bus-1").unwrap(),
            fence: FenceId::new("depot").unwrap(),
            crossing: Crossing::Exit,
            time: fix().time,
            lat: 44.0,
            lon: -121.5,
            speed: None,
            limit: None,
            since: Some(Utc.with_ymd_and_hms(2015, 3, 18, 17, 0, 0).unwrap()),
            historic: true,
        };
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(
            json,
            r#"{"device":"bus-1","fence":"depot","type":"exit","time":"2015-03-18T17:19:26.000Z","lat":44.0,"lon":-121.5,"since":"2015-03-18T17:00:00.000Z","historic":true}"#
        );
        assert_eq!(serde_json::from_str::<Geofence>(&json).unwrap(), g);
        for c in [
            Crossing::Enter,
            Crossing::Exit,
            Crossing::Dwell,
            Crossing::Speeding,
        ] {
            assert_eq!(Crossing::from_code(c.code()), Some(c));
        }
        assert_eq!(Crossing::from_code(4), None);
    }

    #[test]
    fn geofence_validate_names_the_bad_value() {
        let g = Geofence::example("bus-1", fix().time);
        assert_eq!(g.validate(), Ok(()));
        let bad = |change: fn(&mut Geofence)| {
            let mut g = g.clone();
            change(&mut g);
            g.validate()
        };
        assert_eq!(bad(|g| g.lat = -90.5), Err(InvalidFix::Latitude(-90.5)));
        assert!(matches!(
            bad(|g| g.lon = f64::INFINITY),
            Err(InvalidFix::Longitude(_))
        ));
        assert_eq!(
            bad(|g| g.speed = Some(-0.1)).map_err(|e| e.field()),
            Err("speed")
        );
        assert_eq!(
            bad(|g| g.limit = Some(1e9)).map_err(|e| e.field()),
            Err("limit")
        );
        assert_eq!(
            bad(|g| g.limit = Some(f64::NAN)),
            Err(InvalidFix::Field("limit"))
        );
    }

    #[test]
    fn a_geofence_event_is_named_timed_and_sent_as_its_own_json() {
        let g = Geofence::example("bus-1", fix().time);
        let event = Event::Geofence(g.clone());
        assert_eq!(event.name(), "geofence");
        assert_eq!(event.device().as_str(), "bus-1");
        assert_eq!(event.time(), fix().time);
        assert_eq!(event.to_json().unwrap(), serde_json::to_string(&g).unwrap());
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
        assert_eq!(
            f.validate(),
            Err(InvalidFix::OutOfRange {
                range: limits::SPEED,
                value: -1.0
            })
        );
        let mut f = fix();
        f.alt = Some(f64::INFINITY);
        assert_eq!(f.validate(), Err(InvalidFix::Field("alt")));
    }

    #[test]
    fn values_beyond_plausibility_are_refused_naming_the_field_and_the_range() {
        let check = |change: fn(&mut Fix)| {
            let mut f = fix();
            change(&mut f);
            f.validate().map_err(|e| (e.field(), e.to_string()))
        };
        assert_eq!(
            check(|f| f.alt = Some(1e308)),
            Err(("alt", "alt 1e308 is outside -1000…100000 m".to_owned()))
        );
        assert_eq!(check(|f| f.speed = Some(1e12)).unwrap_err().0, "speed");
        assert_eq!(check(|f| f.course = Some(360.1)).unwrap_err().0, "course");
        assert_eq!(check(|f| f.hdop = Some(100.01)).unwrap_err().0, "hdop");
        assert_eq!(
            check(|f| f.accuracy = Some(2.1e7)).unwrap_err().0,
            "accuracy"
        );
        let (field, message) = check(|f| {
            f.time = DateTime::from_timestamp_millis(limits::TIME_MIN_MS - 1).unwrap();
        })
        .unwrap_err();
        assert_eq!(field, "time");
        assert!(message.contains("1980-01-05T23:59:59.999Z"), "{message}");
        assert!(
            check(|f| f.time = DateTime::from_timestamp_millis(limits::TIME_MAX_MS + 1).unwrap())
                .is_err()
        );
        // The ends themselves are taken.
        let edges = |f: &mut Fix| {
            f.alt = Some(limits::ALT.min);
            f.speed = Some(limits::SPEED.max);
            f.course = Some(360.0);
            f.hdop = Some(limits::HDOP.max);
            f.accuracy = Some(limits::ACCURACY.max);
        };
        assert_eq!(check(edges), Ok(()));
        assert_eq!(check(|f| f.alt = Some(limits::ALT.max)), Ok(()));
        assert_eq!(
            check(|f| f.time = DateTime::from_timestamp_millis(limits::TIME_MAX_MS).unwrap()),
            Ok(())
        );
        // And the latest time still reads back from its JSON.
        let mut f = fix();
        f.time = DateTime::from_timestamp_millis(limits::TIME_MAX_MS).unwrap();
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<Fix>(&json).unwrap(), f);
    }
}
