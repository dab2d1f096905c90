//! Payload formats of trackers and phones: fixgate JSON, OwnTracks JSON,
//! NMEA text (recognised here, decoded by the caller's per-device
//! [`crate::sources::nmea::Decoder`]) and the OsmAnd query string of Traccar
//! Client and OsmAnd. Pure functions: bytes in, fixes or a precise error out.
//!
//! Values are converted to the units of [`Fix`] and must be plausible
//! ([`Fix::validate`], [`crate::fix::limits`]): a value out of range (an
//! altitude of 1e308 m, a speed of 1e12 m/s, a latitude of 123°) is an
//! `invalid_value` naming the payload's own field, and the whole payload is
//! refused, never stored as another value. NMEA text is range-checked by its
//! decoder.
//!
//! ## fixgate JSON
//!
//! One JSON object, or an array of objects (at most `max_fixes`, 1000 by
//! default), each one fix:
//!
//! | field      | type                 | meaning                                          |
//! |------------|----------------------|--------------------------------------------------|
//! | `lat`      | number, required     | latitude, degrees WGS84, north positive          |
//! | `lon`      | number, required     | longitude, degrees WGS84, east positive          |
//! | `time`     | string or number     | when the fix was taken, see below; absent: the time fixgate received it |
//! | `alt`      | number               | altitude, metres above mean sea level            |
//! | `speed`    | number               | speed over ground, metres per second             |
//! | `course`   | number               | course over ground, degrees true                 |
//! | `hdop`     | number               | horizontal dilution of precision                 |
//! | `sats`     | integer 0–255        | satellites used                                  |
//! | `mode`     | 2 or 3               | 2D or 3D fix                                     |
//! | `accuracy` | number               | horizontal accuracy, metres                      |
//! | `device`   | string               | device id, where the transport does not give one |
//!
//! `time` is an RFC 3339 string with any offset (`2026-11-23T10:00:00Z`,
//! `2026-11-23T11:00:00.250+01:00`), or a number of seconds since the Unix
//! epoch (fractions allowed), or of milliseconds: numbers of absolute value
//! 100 000 000 000 (1e11) or more are milliseconds, smaller ones seconds.
//! Times are kept to the millisecond.
//!
//! Other fields are ignored, so trackers may add their own (`battery`, …).
//! A field set to `null` counts as absent. A field of the wrong type is an
//! error naming the field; nothing is guessed (`"lat": "52.1"` is rejected).
//!
//! ```json
//! {"device": "van-7", "lat": 52.5163, "lon": 13.3777, "time": 1795428000.5,
//!  "speed": 12.5, "course": 271, "alt": 41, "accuracy": 4, "battery": 88}
//! ```
//!
//! ## Detection
//!
//! With [`Format::Auto`], after leading ASCII whitespace: `$` or `!` is NMEA;
//! `{` or `[` is JSON, and an object with a `_type` field is OwnTracks, any
//! other object or array fixgate JSON; anything else is `unknown_format`.
//! With an explicit format a payload of another shape is `malformed`. An
//! empty payload (how MQTT clears a retained message) is ignored in every
//! format.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

use crate::fix::{DeviceClass, Fix, FixMode};

/// Epoch numbers at least this large in absolute value are milliseconds:
/// 1e11 s is the year 5138, 1e11 ms is March 1973.
const MILLIS_FROM: f64 = 1e11;
/// Longest excerpt of an offending value quoted in an error, in characters:
/// errors go to a log line, which must stay readable.
const EXCERPT: usize = 40;

/// Which payload format a source expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// Recognise NMEA, OwnTracks and fixgate JSON by their first bytes.
    #[default]
    Auto,
    /// fixgate JSON only.
    Json,
    /// OwnTracks JSON only.
    OwnTracks,
    /// NMEA 0183 text only.
    Nmea,
}

impl Format {
    /// The name used in configuration and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Json => "json",
            Self::OwnTracks => "owntracks",
            Self::Nmea => "nmea",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is not one of `auto`, `json`, `owntracks`, `nmea`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown payload format {0:?}: expected auto, json, owntracks or nmea")]
pub struct FormatNameError(pub String);

impl FromStr for Format {
    type Err = FormatNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "json" => Ok(Self::Json),
            "owntracks" => Ok(Self::OwnTracks),
            "nmea" => Ok(Self::Nmea),
            _ => Err(FormatNameError(s.to_owned())),
        }
    }
}

/// A fix as a payload reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    /// The device id as written in the payload, not yet validated; `None`
    /// when the payload names no device (the transport must).
    pub device: Option<String>,
    /// The fix, in [`Fix`] units, not yet validated.
    pub fix: Fix,
}

/// What a payload holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed<'a> {
    /// One or more fixes (fixgate JSON, OwnTracks) and the kind of device
    /// that sends that format.
    Fixes(DeviceClass, Vec<Reported>),
    /// NMEA text, from its first sentence on: the caller feeds it through
    /// the device's NMEA decoder, which keeps state across messages.
    Nmea(&'a [u8]),
    /// A well-formed message that is not a position, labelled for metrics
    /// (`empty`, `owntracks_lwt`, `owntracks_transition`, …).
    Ignored(&'static str),
}

/// Bounds on one payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Larger payloads are rejected unread.
    pub max_bytes: usize,
    /// Most fixes in one JSON array.
    pub max_fixes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024,
            max_fixes: 1000,
        }
    }
}

/// Why a payload gave no fixes; the message says exactly what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The payload is larger than [`Limits::max_bytes`].
    #[error("payload of {size} bytes is over the limit of {max} bytes")]
    Oversized {
        /// Payload size in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not valid JSON, not UTF-8, or not the shape the configured format needs.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// A required field is absent.
    #[error("{}missing required field `{field}`", Element(*index))]
    MissingField {
        /// The field name.
        field: &'static str,
        /// Position in a JSON array, if the payload is one.
        index: Option<usize>,
    },
    /// A field has the wrong type or an unusable value.
    #[error("{}invalid `{field}`: {problem}", Element(*index))]
    InvalidValue {
        /// The field name.
        field: &'static str,
        /// Position in a JSON array, if the payload is one.
        index: Option<usize>,
        /// What was expected and what was found.
        problem: String,
    },
    /// [`Format::Auto`] recognised neither NMEA nor JSON.
    #[error("unrecognised payload: {0}; expected NMEA (`$` or `!`) or JSON (`{{` or `[`)")]
    UnknownFormat(String),
    /// An OwnTracks message encrypted with the app's secret key.
    #[error(
        "OwnTracks payload is encrypted (_type \"encrypted\"); fixgate cannot decrypt it, \
         turn encryption off in the app"
    )]
    Encrypted,
    /// A JSON array with more than [`Limits::max_fixes`] elements.
    #[error("array of {count} fixes is over the limit of {max}")]
    TooMany {
        /// Elements in the array.
        count: usize,
        /// The limit.
        max: usize,
    },
}

impl PayloadError {
    /// A short stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Oversized { .. } => "oversized",
            Self::Malformed(_) => "malformed",
            Self::MissingField { .. } => "missing_field",
            Self::InvalidValue { .. } => "invalid_value",
            Self::UnknownFormat(_) => "unknown_format",
            Self::Encrypted => "encrypted",
            Self::TooMany { .. } => "too_many",
        }
    }
}

/// Error-message prefix naming the array element, if any.
struct Element(Option<usize>);

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(i) => write!(f, "array element {i}: "),
            None => Ok(()),
        }
    }
}

/// A field problem before it is known whether the payload was an array.
#[derive(Debug)]
enum FieldError {
    Missing(&'static str),
    Invalid(&'static str, String),
}

impl FieldError {
    fn at(self, index: Option<usize>) -> PayloadError {
        match self {
            Self::Missing(field) => PayloadError::MissingField { field, index },
            Self::Invalid(field, problem) => PayloadError::InvalidValue {
                field,
                index,
                problem,
            },
        }
    }
}

/// Parses one message (an MQTT payload or an HTTP body) in `format`; `now`
/// dates fixes that carry no time of their own.
pub fn parse<'a>(
    payload: &'a [u8],
    format: Format,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<Parsed<'a>, PayloadError> {
    if payload.len() > limits.max_bytes {
        return Err(PayloadError::Oversized {
            size: payload.len(),
            max: limits.max_bytes,
        });
    }
    let body = payload.trim_ascii_start();
    let Some(&first) = body.first() else {
        return Ok(Parsed::Ignored("empty"));
    };
    match (format, first) {
        (Format::Auto | Format::Nmea, b'$' | b'!') => Ok(Parsed::Nmea(body)),
        (Format::Auto, b'{' | b'[') => json(body, Want::Any, limits, now),
        (Format::Json, _) => json(body, Want::Json, limits, now),
        (Format::OwnTracks, _) => json(body, Want::OwnTracks, limits, now),
        (Format::Auto, _) => Err(PayloadError::UnknownFormat(starts_with(body))),
        (Format::Nmea, _) => Err(PayloadError::Malformed(format!(
            "expected NMEA sentences starting with `$` or `!`, {}",
            starts_with(body)
        ))),
    }
}

/// `starts with "…"`, for messages about a payload's shape.
fn starts_with(body: &[u8]) -> String {
    let head = body.get(..16).unwrap_or(body);
    format!("payload starts with {:?}", String::from_utf8_lossy(head))
}

/// Which JSON dialect the configuration allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Any,
    Json,
    OwnTracks,
}

/// The fields of both JSON dialects: one pass over the payload, unknown
/// fields skipped unread, `null` read as absent.
#[derive(Deserialize)]
#[serde(expecting = "a JSON object")]
struct Obj {
    #[serde(rename = "_type")]
    kind: Option<Value>,
    lat: Option<Value>,
    lon: Option<Value>,
    time: Option<Value>,
    alt: Option<Value>,
    speed: Option<Value>,
    course: Option<Value>,
    hdop: Option<Value>,
    sats: Option<Value>,
    mode: Option<Value>,
    accuracy: Option<Value>,
    device: Option<Value>,
    tst: Option<Value>,
    acc: Option<Value>,
    vel: Option<Value>,
    cog: Option<Value>,
}

/// A JSON object or array (whitespace already trimmed from the start).
fn json<'a>(
    body: &[u8],
    want: Want,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<Parsed<'a>, PayloadError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| PayloadError::Malformed(format!("JSON payload is not UTF-8: {e}")))?;
    match (body.first(), want) {
        (Some(b'{'), _) => {
            let obj = serde_json::from_str(text).map_err(bad_json)?;
            object(obj, want, now)
        }
        (Some(b'['), Want::OwnTracks) => Err(PayloadError::Malformed(
            "an OwnTracks message is one JSON object, not an array".to_owned(),
        )),
        (Some(b'['), _) => array(text, limits.max_fixes, now),
        _ => Err(PayloadError::Malformed(format!(
            "expected a JSON object or array, {}",
            starts_with(body)
        ))),
    }
}

fn bad_json(e: serde_json::Error) -> PayloadError {
    PayloadError::Malformed(format!("invalid JSON: {e}"))
}

/// One JSON object: OwnTracks if it says so (or must be), else fixgate JSON.
fn object(obj: Obj, want: Want, now: DateTime<Utc>) -> Result<Parsed<'static>, PayloadError> {
    let owntracks = match want {
        Want::Any => obj.kind.is_some(),
        Want::Json => false,
        Want::OwnTracks => true,
    };
    if owntracks {
        return owntracks_message(&obj);
    }
    let fix = fixgate_fix(obj, now).map_err(|e| e.at(None))?;
    Ok(Parsed::Fixes(DeviceClass::JsonTracker, vec![fix]))
}

/// A fixgate JSON array, refused whole if longer than `max`.
fn array(text: &str, max: usize, now: DateTime<Utc>) -> Result<Parsed<'static>, PayloadError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let (objs, count) = Bounded(max).deserialize(&mut de).map_err(bad_json)?;
    de.end().map_err(bad_json)?;
    if count > max {
        return Err(PayloadError::TooMany { count, max });
    }
    objs.into_iter()
        .enumerate()
        .map(|(i, obj)| fixgate_fix(obj, now).map_err(|e| e.at(Some(i))))
        .collect::<Result<_, _>>()
        .map(|fixes| Parsed::Fixes(DeviceClass::JsonTracker, fixes))
}

/// Reads an array of objects, keeping at most `.0` but counting all, so that
/// a long array costs no more memory than the limit allows yet the error
/// can say how long it was.
struct Bounded(usize);

impl<'de> DeserializeSeed<'de> for Bounded {
    type Value = (Vec<Obj>, usize);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Bounded {
    type Value = (Vec<Obj>, usize);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of JSON objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut objs = Vec::new();
        while objs.len() < self.0 {
            match seq.next_element::<ObjOnly>()? {
                Some(ObjOnly(obj)) => objs.push(obj),
                None => {
                    let count = objs.len();
                    return Ok((objs, count));
                }
            }
        }
        let mut count = objs.len();
        while seq.next_element::<IgnoredAny>()?.is_some() {
            count += 1;
        }
        Ok((objs, count))
    }
}

/// An [`Obj`] that must be written as a JSON object: derived struct
/// deserializers also take arrays, field by position, which would turn
/// `[null, 1, 2]` into a fix.
struct ObjOnly(Obj);

impl<'de> Deserialize<'de> for ObjOnly {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjOnlyVisitor)
    }
}

struct ObjOnlyVisitor;

impl<'de> Visitor<'de> for ObjOnlyVisitor {
    type Value = ObjOnly;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Obj::deserialize(MapAccessDeserializer::new(map)).map(ObjOnly)
    }
}

/// One fixgate JSON object.
fn fixgate_fix(obj: Obj, now: DateTime<Utc>) -> Result<Reported, FieldError> {
    let fix = Fix {
        lat: required("lat", obj.lat.as_ref())?,
        lon: required("lon", obj.lon.as_ref())?,
        time: match &obj.time {
            Some(v) => time("time", v)?,
            None => now.trunc_subsecs(3),
        },
        alt: number("alt", obj.alt.as_ref())?,
        speed: number("speed", obj.speed.as_ref())?,
        course: number("course", obj.course.as_ref())?,
        hdop: number("hdop", obj.hdop.as_ref())?,
        sats: sats(obj.sats.as_ref())?,
        mode: mode(obj.mode.as_ref())?,
        accuracy: number("accuracy", obj.accuracy.as_ref())?,
    };
    let fix = plausible(fix, |field| field)?;
    let device = match obj.device {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(v) => return Err(invalid("device", "a string", &v)),
    };
    Ok(Reported { device, fix })
}

/// An OwnTracks message: a location, an ignored type, or encrypted.
fn owntracks_message(obj: &Obj) -> Result<Parsed<'static>, PayloadError> {
    let kind = match &obj.kind {
        None => return Err(FieldError::Missing("_type").at(None)),
        Some(Value::String(s)) => s.as_str(),
        Some(v) => return Err(invalid("_type", "a string", v).at(None)),
    };
    match kind {
        "location" => {
            let fix = owntracks_location(obj).map_err(|e| e.at(None))?;
            Ok(Parsed::Fixes(DeviceClass::OwnTracks, vec![fix]))
        }
        "encrypted" => Err(PayloadError::Encrypted),
        other => Ok(Parsed::Ignored(owntracks_label(other))),
    }
}

/// An OwnTracks `_type: location`. The device comes from the MQTT topic
/// (or the HTTP `X-Limit-U`/`X-Limit-D` headers), never from `tid`, which
/// is only two display initials.
fn owntracks_location(obj: &Obj) -> Result<Reported, FieldError> {
    let lat = required("lat", obj.lat.as_ref())?;
    let lon = required("lon", obj.lon.as_ref())?;
    let tst = obj.tst.as_ref().ok_or(FieldError::Missing("tst"))?;
    let time = match tst {
        Value::Number(n) => seconds(n).ok_or_else(|| unrepresentable("tst", n))?,
        v => return Err(invalid("tst", "a number of epoch seconds", v)),
    };
    let fix = Fix {
        time,
        lat,
        lon,
        alt: number("alt", obj.alt.as_ref())?,
        // The apps send -1 when the platform does not know speed or course.
        speed: known("vel", obj.vel.as_ref())?.map(kmh_to_mps),
        course: known("cog", obj.cog.as_ref())?,
        hdop: None,
        sats: None,
        mode: None,
        accuracy: number("acc", obj.acc.as_ref())?,
    };
    let fix = plausible(fix, |field| match field {
        "time" => "tst",
        "speed" => "vel",
        "course" => "cog",
        "accuracy" => "acc",
        other => other,
    })?;
    Ok(Reported { device: None, fix })
}

/// The fix if every value is plausible ([`Fix::validate`]); else the error
/// names the payload's own field, which `name` gives for a [`Fix`] field.
fn plausible(fix: Fix, name: fn(&'static str) -> &'static str) -> Result<Fix, FieldError> {
    match fix.validate() {
        Ok(()) => Ok(fix),
        Err(e) => Err(FieldError::Invalid(name(e.field()), e.problem())),
    }
}

/// Metric label of an OwnTracks message type that carries no position.
fn owntracks_label(kind: &str) -> &'static str {
    match kind {
        "lwt" => "owntracks_lwt",
        "transition" => "owntracks_transition",
        "card" => "owntracks_card",
        "status" => "owntracks_status",
        "waypoint" => "owntracks_waypoint",
        "waypoints" => "owntracks_waypoints",
        "cmd" => "owntracks_cmd",
        "configuration" => "owntracks_configuration",
        "beacon" => "owntracks_beacon",
        "steps" => "owntracks_steps",
        "request" => "owntracks_request",
        _ => "owntracks_other",
    }
}

/// A number that must be present.
fn required(field: &'static str, v: Option<&Value>) -> Result<f64, FieldError> {
    number(field, v)?.ok_or(FieldError::Missing(field))
}

/// An optional finite number.
fn number(field: &'static str, v: Option<&Value>) -> Result<Option<f64>, FieldError> {
    let Some(v) = v else { return Ok(None) };
    match v.as_f64() {
        Some(x) if x.is_finite() => Ok(Some(x)),
        _ => Err(invalid(field, "a number", v)),
    }
}

/// An optional number where negative means unknown.
fn known(field: &'static str, v: Option<&Value>) -> Result<Option<f64>, FieldError> {
    Ok(number(field, v)?.filter(|x| *x >= 0.0))
}

fn sats(v: Option<&Value>) -> Result<Option<u8>, FieldError> {
    let Some(v) = v else { return Ok(None) };
    match v.as_u64().and_then(|n| u8::try_from(n).ok()) {
        Some(n) => Ok(Some(n)),
        None => Err(invalid("sats", "an integer from 0 to 255", v)),
    }
}

fn mode(v: Option<&Value>) -> Result<Option<FixMode>, FieldError> {
    let Some(v) = v else { return Ok(None) };
    match v.as_u64() {
        Some(2) => Ok(Some(FixMode::TwoD)),
        Some(3) => Ok(Some(FixMode::ThreeD)),
        _ => Err(invalid("mode", "2 or 3", v)),
    }
}

/// A fixgate JSON time: RFC 3339 string, or epoch seconds or milliseconds.
fn time(field: &'static str, v: &Value) -> Result<DateTime<Utc>, FieldError> {
    match v {
        Value::Number(n) => epoch(n).ok_or_else(|| unrepresentable(field, n)),
        Value::String(s) => rfc3339(s).map_err(|e| {
            FieldError::Invalid(
                field,
                format!(
                    "expected an RFC 3339 time such as 2026-11-23T10:00:00Z, found {} ({e})",
                    excerpt(v)
                ),
            )
        }),
        _ => Err(invalid(
            field,
            "an RFC 3339 string or a number of epoch seconds or milliseconds",
            v,
        )),
    }
}

fn rfc3339(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc).trunc_subsecs(3))
}

/// Epoch seconds or, from [`MILLIS_FROM`] on, milliseconds.
fn epoch(n: &Number) -> Option<DateTime<Utc>> {
    if n.as_f64()?.abs() >= MILLIS_FROM {
        match n.as_i64() {
            Some(ms) => DateTime::from_timestamp_millis(ms),
            None => from_millis(n.as_f64()?),
        }
    } else {
        seconds(n)
    }
}

/// Epoch seconds, fractions rounded to the millisecond.
fn seconds(n: &Number) -> Option<DateTime<Utc>> {
    match n.as_i64() {
        Some(s) => DateTime::from_timestamp(s, 0),
        None => from_millis(n.as_f64()? * 1000.0),
    }
}

fn from_millis(ms: f64) -> Option<DateTime<Utc>> {
    // `as` saturates; chrono then refuses the out-of-range extreme.
    ms.is_finite()
        .then(|| DateTime::from_timestamp_millis(ms.round() as i64))
        .flatten()
}

fn unrepresentable(field: &'static str, n: &Number) -> FieldError {
    FieldError::Invalid(field, format!("epoch time {n} is out of range"))
}

fn invalid(field: &'static str, expected: &str, found: &Value) -> FieldError {
    FieldError::Invalid(
        field,
        format!("expected {expected}, found {}", excerpt(found)),
    )
}

/// The kind and (clipped) text of a JSON value.
fn excerpt(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(_) => format!("string {}", clip(&v.to_string())),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// At most [`EXCERPT`] characters of `s`, marked if cut.
fn clip(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(EXCERPT) {
        Some((end, _)) => Cow::Owned(format!("{}…", &s[..end])),
        None => Cow::Borrowed(s),
    }
}

/// Parses an OsmAnd request: the query string of a GET (a leading `?` is
/// allowed) or the form body of a POST. `Ok(None)` is a report the tracker
/// itself marks as not a valid location (`valid=false`).
pub fn parse_osmand(query: &str, now: DateTime<Utc>) -> Result<Option<Reported>, PayloadError> {
    let query = query.strip_prefix('?').unwrap_or(query);
    let pairs = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((form_decode(k)?, form_decode(v)?))
        })
        .collect::<Result<Vec<_>, PayloadError>>()?;
    parse_osmand_pairs(pairs, now)
}

/// [`parse_osmand`] on already decoded pairs (e.g. from an HTTP framework's
/// query extractor). Repeated keys: the last one counts.
pub fn parse_osmand_pairs<I, K, V>(
    pairs: I,
    now: DateTime<Utc>,
) -> Result<Option<Reported>, PayloadError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut q = OsmAnd::default();
    for (k, v) in pairs {
        q.set(k.as_ref(), v.as_ref()).map_err(|e| e.at(None))?;
    }
    q.finish(now).map_err(|e| e.at(None))
}

/// The OsmAnd parameters fixgate uses, in the names Traccar's
/// `OsmAndProtocolDecoder` accepts. Others (`batt`, `charge`, …) are ignored.
const OSMAND_KEYS: [&str; 13] = [
    "id",
    "deviceid",
    "valid",
    "timestamp",
    "lat",
    "lon",
    "location",
    "speed",
    "bearing",
    "heading",
    "altitude",
    "accuracy",
    "hdop",
];

/// OsmAnd parameters read so far.
#[derive(Debug, Default)]
struct OsmAnd {
    id: Option<String>,
    invalid: bool,
    time: Option<DateTime<Utc>>,
    lat: Option<f64>,
    lon: Option<f64>,
    speed: Option<f64>,
    course: Option<f64>,
    alt: Option<f64>,
    accuracy: Option<f64>,
    hdop: Option<f64>,
}

impl OsmAnd {
    fn set(&mut self, key: &str, value: &str) -> Result<(), FieldError> {
        // Clients fill a URL template; an unknown value is left empty.
        if value.is_empty() {
            return Ok(());
        }
        let Some(&key) = OSMAND_KEYS.iter().find(|k| **k == key) else {
            return Ok(());
        };
        match key {
            "id" | "deviceid" => self.id = Some(value.to_owned()),
            "valid" => self.invalid = !flag(key, value)?,
            "timestamp" => self.time = Some(query_time(value)?),
            "lat" => self.lat = Some(query_number(key, value)?),
            "lon" => self.lon = Some(query_number(key, value)?),
            "location" => (self.lat, self.lon) = location(value)?,
            "speed" => self.speed = Some(knots_to_mps(query_number(key, value)?)),
            "bearing" | "heading" => self.course = Some(query_number(key, value)?),
            "altitude" => self.alt = Some(query_number(key, value)?),
            "accuracy" => self.accuracy = Some(query_number(key, value)?),
            _ => self.hdop = Some(query_number(key, value)?),
        }
        Ok(())
    }

    fn finish(self, now: DateTime<Utc>) -> Result<Option<Reported>, FieldError> {
        let device = self.id.ok_or(FieldError::Missing("id"))?;
        if self.invalid {
            return Ok(None);
        }
        let fix = Fix {
            lat: self.lat.ok_or(FieldError::Missing("lat"))?,
            lon: self.lon.ok_or(FieldError::Missing("lon"))?,
            time: self.time.unwrap_or_else(|| now.trunc_subsecs(3)),
            alt: self.alt,
            speed: self.speed,
            course: self.course,
            hdop: self.hdop,
            sats: None,
            mode: None,
            accuracy: self.accuracy,
        };
        let fix = plausible(fix, |field| match field {
            "time" => "timestamp",
            "alt" => "altitude",
            "course" => "bearing",
            other => other,
        })?;
        Ok(Some(Reported {
            device: Some(device),
            fix,
        }))
    }
}

/// Traccar reads OsmAnd `speed` in knots, its internal unit; Traccar Client
/// sends knots accordingly.
fn knots_to_mps(knots: f64) -> f64 {
    knots * 1852.0 / 3600.0
}

/// Multiplying first keeps whole km/h exact where the result is (18 → 5).
fn kmh_to_mps(kmh: f64) -> f64 {
    kmh * 1000.0 / 3600.0
}

fn query_number(field: &'static str, value: &str) -> Result<f64, FieldError> {
    match value.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(FieldError::Invalid(
            field,
            format!("expected a number, found {:?}", clip(value)),
        )),
    }
}

/// `location=lat,lon`, Traccar's one-parameter alternative to `lat` and `lon`.
fn location(value: &str) -> Result<(Option<f64>, Option<f64>), FieldError> {
    let parsed = value.split_once(',').and_then(|(lat, lon)| {
        Some((
            lat.trim().parse::<f64>().ok()?,
            lon.trim().parse::<f64>().ok()?,
        ))
    });
    match parsed {
        Some((lat, lon)) if lat.is_finite() && lon.is_finite() => Ok((Some(lat), Some(lon))),
        _ => Err(FieldError::Invalid(
            "location",
            format!("expected `lat,lon` in degrees, found {:?}", clip(value)),
        )),
    }
}

fn flag(field: &'static str, value: &str) -> Result<bool, FieldError> {
    if value == "1" || value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value == "0" || value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(FieldError::Invalid(
            field,
            format!("expected true, false, 1 or 0, found {:?}", clip(value)),
        ))
    }
}

/// The time forms Traccar accepts: epoch seconds or milliseconds, an
/// ISO 8601 time with offset, or `YYYY-MM-DD HH:MM:SS` (taken as UTC).
fn query_time(value: &str) -> Result<DateTime<Utc>, FieldError> {
    let time = if let Ok(n) = value.parse::<Number>() {
        epoch(&n)
    } else if value.contains('T') {
        rfc3339(value).ok()
    } else {
        NaiveDateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S")
            .ok()
            .map(|t| t.and_utc())
    };
    time.ok_or_else(|| {
        FieldError::Invalid(
            "timestamp",
            format!(
                "expected epoch seconds or milliseconds, an RFC 3339 time such as \
                 2026-11-23T10:00:00Z or YYYY-MM-DD HH:MM:SS (UTC), found {:?}",
                clip(value)
            ),
        )
    })
}

/// Decodes one `application/x-www-form-urlencoded` name or value.
pub(crate) fn form_decode(s: &str) -> Result<Cow<'_, str>, PayloadError> {
    if !s.contains(['%', '+']) {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'+' => b' ',
            b'%' => {
                let hex = [bytes.next(), bytes.next()];
                hex_pair(hex).ok_or_else(|| {
                    PayloadError::Malformed(format!("bad percent-escape in {:?}", clip(s)))
                })?
            }
            b => b,
        });
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| PayloadError::Malformed(format!("percent-decoded {:?} is not UTF-8", clip(s))))
}

fn hex_pair(hex: [Option<u8>; 2]) -> Option<u8> {
    let digit = |b: Option<u8>| char::from(b?).to_digit(16);
    let value = digit(hex[0])? * 16 + digit(hex[1])?;
    u8::try_from(value).ok()
}

#[cfg(test)]
mod tests;
