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
    /// Earth, speed and limit finite and not negative.
    pub fn validate(&self) -> Result<(), InvalidFix> {
        let fix = Fix {
            speed: self.speed,
            ..Fix::new(self.time, self.lat, self.lon)
        };
        fix.validate()?;
        if !self.limit.is_none_or(|l| l.is_finite() && l >= 0.0) {
            return Err(InvalidFix::Field("limit"));
        }
        Ok(())
    }

    /// A `speeding` event of `device` in fence `depot` with every optional
    /// value set, for the tests of the modules that store and send events.
    #[cfg(test)]
    pub(crate) fn example(device: &str, time: DateTime<Utc>) -> Self {
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

/// What kind of device sent a fix, told by the protocol it speaks; a
/// metrics label, so that a fleet's trackers and the depot's receivers can
/// be told apart whichever transport carried them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceClass {
    /// A GNSS receiver speaking NMEA (serial, replayed, or over MQTT).
    NmeaReceiver,
    /// A tracker posting or publishing fixgate JSON.
    JsonTracker,
    /// The OwnTracks app (MQTT).
    OwnTracks,
    /// An OsmAnd-protocol client such as Traccar Client (HTTP).
    OsmAnd,
}

impl DeviceClass {
    /// The lower-case label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NmeaReceiver => "nmea_receiver",
            Self::JsonTracker => "json_tracker",
            Self::OwnTracks => "owntracks",
            Self::OsmAnd => "osmand",
        }
    }
}

/// A fix on its way from a source to the pipeline.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The kind of source that decoded it.
    pub source: SourceKind,
    /// The kind of device that sent it.
    pub class: DeviceClass,
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
            bad(|g| g.speed = Some(-0.1)),
            Err(InvalidFix::Field("speed"))
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
        assert_eq!(f.validate(), Err(InvalidFix::Field("speed")));
    }
}
