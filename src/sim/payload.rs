//! What simulated trackers put on the wire: pure encoders from a [`Fix`] to
//! the payloads real devices send (fixgate JSON, OwnTracks, NMEA, OsmAnd), and
//! the deliberately bad payloads a gateway must survive.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::fix::{DeviceId, Fix, Position};

/// Knots per metre per second, as OsmAnd (Traccar Client) reports speed.
const KNOTS_PER_MPS: f64 = 1.943_844_5;

/// Size of an oversized payload: far beyond any real fix, under MQTT limits.
pub const OVERSIZED_BYTES: usize = 200 * 1024;

/// Battery level every simulated OwnTracks phone reports; the field is
/// required by some consumers, its value means nothing here.
const OWNTRACKS_BATTERY: u8 = 87;

/// The payload encoding of the simulated trackers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// fixgate JSON, one fix per MQTT message.
    Json,
    /// OwnTracks `_type: location`, one per MQTT message.
    OwnTracks,
    /// One NMEA 0183 epoch (several CRLF sentences) per MQTT message.
    Nmea,
    /// OsmAnd / Traccar Client: an HTTP POST with the fix in the query string.
    OsmAnd,
    /// A JSON array of fixgate positions (with `device`) in one HTTP POST.
    HttpJson,
}

/// One message for the transport: a body and, for OsmAnd, a query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Query string without the leading `?` (OsmAnd only; empty otherwise).
    pub query: String,
    /// The MQTT payload or HTTP body.
    pub body: Vec<u8>,
}

impl Message {
    fn body(body: Vec<u8>) -> Self {
        Self {
            query: String::new(),
            body,
        }
    }

    fn query(query: String) -> Self {
        Self {
            query,
            body: Vec::new(),
        }
    }
}

/// fixgate JSON: the serde form of [`Fix`], absent fields omitted.
pub fn fixgate_json(fix: &Fix) -> Vec<u8> {
    to_json(fix)
}

/// A JSON array of positions (`device` plus the fix fields), as the HTTP API takes them.
pub fn http_json(device: &DeviceId, fixes: &[Fix]) -> Vec<u8> {
    let positions: Vec<Position> = fixes
        .iter()
        .map(|f| Position::new(device.clone(), f.clone()))
        .collect();
    to_json(&positions)
}

/// OwnTracks location as the phone apps publish it: integer metres, km/h and
/// degrees, epoch seconds, the last two characters of the device as `tid`.
pub fn owntracks(device: &DeviceId, fix: &Fix) -> Vec<u8> {
    to_json(&Value::Object(owntracks_object(device, fix)))
}

fn owntracks_object(device: &DeviceId, fix: &Fix) -> Map<String, Value> {
    let id = device.as_str();
    let tid = &id[id.len().saturating_sub(2)..];
    let mut o = Map::new();
    o.insert("_type".into(), "location".into());
    o.insert("tid".into(), tid.into());
    o.insert("lat".into(), fix.lat.into());
    o.insert("lon".into(), fix.lon.into());
    o.insert("tst".into(), fix.time.timestamp().into());
    let whole = |v: f64| Value::from(v.round() as i64);
    if let Some(acc) = fix.accuracy {
        o.insert("acc".into(), whole(acc));
    }
    if let Some(alt) = fix.alt {
        o.insert("alt".into(), whole(alt));
    }
    if let Some(speed) = fix.speed {
        o.insert("vel".into(), whole(speed * 3.6));
    }
    if let Some(course) = fix.course {
        o.insert("cog".into(), Value::from(course.round() as i64 % 360));
    }
    o.insert("batt".into(), OWNTRACKS_BATTERY.into());
    o.insert("conn".into(), "m".into());
    o.insert("t".into(), "u".into());
    o
}

/// One NMEA epoch, as [`super::nmea::write_epoch`] writes it.
pub fn nmea(fix: &Fix) -> Vec<u8> {
    let mut text = String::with_capacity(400);
    super::nmea::write_epoch(fix, &mut text);
    text.into_bytes()
}

/// The OsmAnd query string Traccar Client sends: epoch seconds, speed in knots.
pub fn osmand_query(device: &DeviceId, fix: &Fix) -> String {
    let mut q = format!(
        "id={device}&lat={}&lon={}&timestamp={}",
        fix.lat,
        fix.lon,
        fix.time.timestamp()
    );
    push_osmand_extras(&mut q, fix);
    q
}

fn push_osmand_extras(q: &mut String, fix: &Fix) {
    let fields = [
        (
            "speed",
            fix.speed.map(|s| round_to(s * KNOTS_PER_MPS, 100.0)),
        ),
        ("bearing", fix.course),
        ("altitude", fix.alt),
        ("accuracy", fix.accuracy),
        ("hdop", fix.hdop),
    ];
    for (name, value) in fields {
        if let Some(v) = value {
            q.push_str(&format!("&{name}={v}"));
        }
    }
}

/// Encodes one fix as the message of `wire` (HTTP JSON: an array of one;
/// use [`http_json`] to batch).
pub fn encode(wire: Wire, device: &DeviceId, fix: &Fix) -> Message {
    match wire {
        Wire::Json => Message::body(fixgate_json(fix)),
        Wire::OwnTracks => Message::body(owntracks(device, fix)),
        Wire::Nmea => Message::body(nmea(fix)),
        Wire::OsmAnd => Message::query(osmand_query(device, fix)),
        Wire::HttpJson => Message::body(http_json(device, std::slice::from_ref(fix))),
    }
}

/// The classes of bad payload the simulator sends, in the order it cycles through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BadKind {
    /// Syntactically broken: truncated JSON, NMEA with wrong checksums, an unparsable number.
    Malformed,
    /// Plain text in no known format.
    UnknownFormat,
    /// Well-formed but [`OVERSIZED_BYTES`] long.
    Oversized,
    /// Latitude 123°.
    LatitudeOutOfRange,
    /// No latitude at all.
    MissingLatitude,
}

impl BadKind {
    /// Every class, in cycling order.
    pub const ALL: [BadKind; 5] = [
        Self::Malformed,
        Self::UnknownFormat,
        Self::Oversized,
        Self::LatitudeOutOfRange,
        Self::MissingLatitude,
    ];

    /// The `n`th class of the cycle (0-based).
    pub fn nth(n: u64) -> Self {
        Self::ALL[(n % Self::ALL.len() as u64) as usize]
    }

    /// A short label for logs and summaries.
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownFormat => "unknown-format",
            Self::Oversized => "oversized",
            Self::LatitudeOutOfRange => "latitude-out-of-range",
            Self::MissingLatitude => "missing-latitude",
        }
    }
}

/// Text no decoder knows.
const PLAIN_TEXT: &[u8] = b"hello from a confused tracker: battery low, position unknown\n";

/// A bad payload of class `kind` in the shape of `wire`, built around a real fix
/// so that only the one defect differs from a good message.
pub fn bad(kind: BadKind, wire: Wire, device: &DeviceId, fix: &Fix) -> Message {
    match (kind, wire) {
        (BadKind::UnknownFormat, _) => Message::body(PLAIN_TEXT.to_vec()),
        (BadKind::LatitudeOutOfRange, _) => {
            let far = Fix {
                lat: 123.0,
                ..fix.clone()
            };
            encode(wire, device, &far)
        }
        (_, Wire::Nmea) => Message::body(bad_nmea(kind, fix)),
        (_, Wire::OsmAnd) => bad_osmand(kind, device, fix),
        (BadKind::Malformed, _) => {
            let mut body = encode(wire, device, fix).body;
            body.truncate(body.len() / 2);
            Message::body(body)
        }
        (BadKind::Oversized, _) => Message::body(oversized_json(wire, device, fix)),
        (BadKind::MissingLatitude, _) => Message::body(json_without_lat(wire, device, fix)),
    }
}

fn bad_nmea(kind: BadKind, fix: &Fix) -> Vec<u8> {
    let good = String::from_utf8_lossy(&nmea(fix)).into_owned();
    let text = match kind {
        BadKind::Malformed => rewrite_nmea(&good, |_| {}, true),
        BadKind::Oversized => good.repeat(OVERSIZED_BYTES / good.len().max(1) + 1),
        _ => rewrite_nmea(&good, blank_latitude, false),
    };
    text.into_bytes()
}

/// Rewrites each sentence of `text` with `edit` applied to its fields; the
/// checksum is recomputed, or deliberately wrong when `corrupt`.
fn rewrite_nmea(text: &str, mut edit: impl FnMut(&mut [&str]), corrupt: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_terminator("\r\n") {
        let body = line
            .trim_start_matches('$')
            .split('*')
            .next()
            .unwrap_or_default();
        let mut fields: Vec<&str> = body.split(',').collect();
        edit(&mut fields);
        let body = fields.join(",");
        if corrupt {
            let wrong = body.bytes().fold(0xFFu8, |acc, b| acc ^ b);
            out.push_str(&format!("${body}*{wrong:02X}\r\n"));
        } else {
            super::nmea::sentence(&mut out, &body);
        }
    }
    out
}

/// Empties the latitude and its hemisphere in RMC, GGA and GLL.
fn blank_latitude(fields: &mut [&str]) {
    let at = match fields.first().and_then(|t| t.get(2..)) {
        Some("RMC") => 3,
        Some("GGA") => 2,
        Some("GLL") => 1,
        _ => return,
    };
    for f in fields.iter_mut().skip(at).take(2) {
        *f = "";
    }
}

fn bad_osmand(kind: BadKind, device: &DeviceId, fix: &Fix) -> Message {
    let good = osmand_query(device, fix);
    match kind {
        BadKind::Malformed => Message::query(good.replacen("&lat=", "&lat=5x.1.", 1)),
        BadKind::Oversized => Message {
            query: good,
            body: vec![b'x'; OVERSIZED_BYTES],
        },
        _ => {
            let mut q = format!(
                "id={device}&lon={}&timestamp={}",
                fix.lon,
                fix.time.timestamp()
            );
            push_osmand_extras(&mut q, fix);
            Message::query(q)
        }
    }
}

/// The good JSON object padded with a long string field to [`OVERSIZED_BYTES`].
fn oversized_json(wire: Wire, device: &DeviceId, fix: &Fix) -> Vec<u8> {
    let pad = Value::from("x".repeat(OVERSIZED_BYTES));
    map_json_objects(wire, device, fix, |o| {
        o.insert("padding".into(), pad.clone());
    })
}

fn json_without_lat(wire: Wire, device: &DeviceId, fix: &Fix) -> Vec<u8> {
    map_json_objects(wire, device, fix, |o| {
        o.remove("lat");
    })
}

/// The good JSON payload of `wire` with `edit` applied to its object(s).
fn map_json_objects(
    wire: Wire,
    device: &DeviceId,
    fix: &Fix,
    mut edit: impl FnMut(&mut Map<String, Value>),
) -> Vec<u8> {
    let mut value = match wire {
        Wire::OwnTracks => Value::Object(owntracks_object(device, fix)),
        Wire::HttpJson => {
            serde_json::to_value([Position::new(device.clone(), fix.clone())]).unwrap_or_default()
        }
        _ => serde_json::to_value(fix).unwrap_or_default(),
    };
    match &mut value {
        Value::Object(o) => edit(o),
        Value::Array(items) => items
            .iter_mut()
            .filter_map(Value::as_object_mut)
            .for_each(&mut edit),
        _ => {}
    }
    to_json(&value)
}

/// Serializes a value that cannot fail to serialize (no maps with non-string
/// keys, no custom serializers that error).
fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Rounds `v` to `1 / scale` (e.g. `scale` 100 gives hundredths).
pub fn round_to(v: f64, scale: f64) -> f64 {
    (v * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fix::FixMode;
    use crate::sources::nmea::{Decoder, DecoderOptions};
    use chrono::{DateTime, TimeZone, Utc};

    fn time() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap() + chrono::Duration::milliseconds(123)
    }

    fn fix() -> Fix {
        Fix {
            time: time(),
            lat: 52.09,
            lon: 5.12,
            alt: Some(3.2),
            speed: Some(8.3),
            course: Some(271.4),
            hdop: Some(0.9),
            sats: Some(11),
            mode: Some(FixMode::ThreeD),
            accuracy: Some(4.0),
        }
    }

    fn device() -> DeviceId {
        DeviceId::new("sim-3").unwrap()
    }

    fn json(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn fixgate_json_is_the_documented_shape_and_round_trips() {
        let bytes = fixgate_json(&fix());
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"time":"2026-11-23T10:00:00.123Z","lat":52.09,"lon":5.12,"alt":3.2,"speed":8.3,"course":271.4,"hdop":0.9,"sats":11,"mode":3,"accuracy":4.0}"#
        );
        let back: Fix = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, fix());
    }

    #[test]
    fn fixgate_json_omits_absent_fields() {
        let full = fix();
        let bare = Fix::new(full.time, full.lat, full.lon);
        let text = String::from_utf8(fixgate_json(&bare)).unwrap();
        assert_eq!(
            text,
            r#"{"time":"2026-11-23T10:00:00.123Z","lat":52.09,"lon":5.12}"#
        );
        let v = json(text.as_bytes());
        assert_eq!(serde_json::from_value::<Fix>(v).unwrap(), bare);
    }

    #[test]
    fn http_json_is_an_array_of_positions_with_the_device() {
        let later = Fix {
            time: time() + chrono::Duration::seconds(1),
            ..fix()
        };
        let bytes = http_json(&device(), &[fix(), later.clone()]);
        let back: Vec<Position> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            back,
            [
                Position::new(device(), fix()),
                Position::new(device(), later)
            ]
        );
        assert_eq!(json(&bytes)[0]["device"], "sim-3");
    }

    #[test]
    fn owntracks_uses_integer_units_and_epoch_seconds() {
        let v = json(&owntracks(&device(), &fix()));
        assert_eq!(v["_type"], "location");
        assert_eq!(v["tid"], "-3");
        assert_eq!(v["lat"], 52.09);
        assert_eq!(v["lon"], 5.12);
        assert_eq!(v["tst"], time().timestamp());
        assert_eq!(v["acc"], 4);
        assert_eq!(v["alt"], 3);
        // 8.3 m/s is 29.88 km/h.
        assert_eq!(v["vel"], 30);
        assert_eq!(v["cog"], 271);
        assert_eq!(v["batt"], 87);
        assert_eq!(v["conn"], "m");
        assert_eq!(v["t"], "u");
        for key in ["tst", "acc", "alt", "vel", "cog"] {
            assert!(v[key].is_i64(), "{key} is not an integer: {}", v[key]);
        }
    }

    #[test]
    fn owntracks_course_near_north_wraps_to_zero_and_absent_fields_are_left_out() {
        let f = Fix {
            course: Some(359.7),
            accuracy: None,
            alt: None,
            speed: None,
            ..fix()
        };
        let v = json(&owntracks(&DeviceId::new("x").unwrap(), &f));
        assert_eq!(v["cog"], 0);
        assert_eq!(v["tid"], "x");
        for key in ["acc", "alt", "vel"] {
            assert!(v.get(key).is_none(), "{key} should be absent");
        }
    }

    #[test]
    fn nmea_decodes_back_through_the_gateway_decoder() {
        let mut decoder = Decoder::new(DecoderOptions::default());
        let mut out = Vec::new();
        decoder.push(&nmea(&fix()), &mut out);
        decoder.finish(&mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        let f = &out[0];
        assert_eq!(f.time, time() - chrono::Duration::milliseconds(3));
        assert!((f.lat - 52.09).abs() < 1e-6 && (f.lon - 5.12).abs() < 1e-6);
        assert!((f.speed.unwrap() - 8.3).abs() < 0.01);
        assert_eq!(f.sats, Some(11));
        assert_eq!(decoder.stats().rejected, Default::default());
    }

    #[test]
    fn osmand_query_has_epoch_seconds_and_knots() {
        assert_eq!(
            osmand_query(&device(), &fix()),
            format!(
                "id=sim-3&lat=52.09&lon=5.12&timestamp={}&speed=16.13&bearing=271.4&altitude=3.2&accuracy=4&hdop=0.9",
                time().timestamp()
            )
        );
    }

    #[test]
    fn encode_picks_the_wire_format() {
        assert_eq!(
            encode(Wire::Json, &device(), &fix()).body,
            fixgate_json(&fix())
        );
        assert_eq!(encode(Wire::Nmea, &device(), &fix()).body, nmea(&fix()));
        let osmand = encode(Wire::OsmAnd, &device(), &fix());
        assert!(osmand.body.is_empty() && osmand.query.starts_with("id=sim-3&"));
        let one = encode(Wire::HttpJson, &device(), &fix()).body;
        assert_eq!(one, http_json(&device(), &[fix()]));
    }

    #[test]
    fn bad_json_payloads_have_exactly_their_defect() {
        for wire in [Wire::Json, Wire::OwnTracks, Wire::HttpJson] {
            let bad = |k| bad(k, wire, &device(), &fix()).body;
            assert!(serde_json::from_slice::<Value>(&bad(BadKind::Malformed)).is_err());
            assert!(serde_json::from_slice::<Value>(&bad(BadKind::UnknownFormat)).is_err());
            let big = bad(BadKind::Oversized);
            assert!(big.len() > OVERSIZED_BYTES);
            json(&big);
            let far = json(&bad(BadKind::LatitudeOutOfRange)).to_string();
            assert!(far.contains("\"lat\":123.0"), "{far}");
            let missing = json(&bad(BadKind::MissingLatitude)).to_string();
            assert!(!missing.contains("\"lat\""), "{missing}");
            assert!(missing.contains("\"lon\""), "{missing}");
        }
    }

    #[test]
    fn bad_nmea_payloads_yield_no_fix() {
        for kind in BadKind::ALL {
            let body = bad(kind, Wire::Nmea, &device(), &fix()).body;
            let mut decoder = Decoder::new(DecoderOptions::default());
            let mut out = Vec::new();
            decoder.push(&body, &mut out);
            decoder.finish(&mut out);
            match kind {
                // Many copies of a valid epoch: big, not broken.
                BadKind::Oversized => assert!(body.len() > OVERSIZED_BYTES),
                // 123° written as NMEA ddmm. (The `nmea` crate path of the
                // gateway decoder reads it as 12° 300' = 17°, so no
                // assertion on the decoded result here.)
                BadKind::LatitudeOutOfRange => {
                    let text = String::from_utf8(body).unwrap();
                    assert!(text.contains(",12300.00000,N,"), "{text}");
                }
                _ => assert!(out.is_empty(), "{kind:?} decoded to {out:?}"),
            }
        }
    }

    #[test]
    fn bad_osmand_queries() {
        let q = |k| bad(k, Wire::OsmAnd, &device(), &fix()).query;
        assert!(q(BadKind::Malformed).contains("&lat=5x.1."));
        assert!(q(BadKind::LatitudeOutOfRange).contains("&lat=123&"));
        assert!(!q(BadKind::MissingLatitude).contains("lat="));
        assert!(q(BadKind::UnknownFormat).is_empty());
        assert!(
            bad(BadKind::Oversized, Wire::OsmAnd, &device(), &fix())
                .body
                .len()
                >= OVERSIZED_BYTES
        );
    }

    #[test]
    fn bad_kinds_cycle() {
        let kinds: Vec<BadKind> = (0..6).map(BadKind::nth).collect();
        assert_eq!(kinds[..5], BadKind::ALL);
        assert_eq!(kinds[5], BadKind::Malformed);
    }
}
