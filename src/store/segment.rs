//! The on-disk layout of stored events: pure encoding, no sled.
//!
//! Every value in the log tree starts with a layout byte:
//!
//! * `RAW` — the events of one append (one event in stores written before
//!   appends were kept whole; both read alike, and binaries from before read
//!   either), written by the writer as they arrive, so that a flush makes
//!   them durable without waiting for a segment to fill;
//! * `SEGMENT` — up to [`SEGMENT_RECORDS`] consecutive events, compacted by the
//!   writer once that many raw ones have accumulated, keyed by the first
//!   sequence number they hold;
//! * `THINNED` — a segment the disk budget has thinned (so it is not thinned
//!   again), laid out like `SEGMENT`.
//!
//! The disk budget removes events from segments without renumbering the rest:
//! a removed event keeps its slot, marked gone (`has::GONE` and no other
//! data, body V3 and V4), so sequence numbers stay implicit; a segment whose
//! events are all gone is deleted, leaving a gap in the keys.
//!
//! The second byte is the body's version. Every body holds events in columns
//! (one per field), quantised to the precision the uplink will use (1e-7°,
//! ms, 0.1 m, 0.01 m/s, 0.1°, 0.01 hdop, 0.1 m accuracy). Sequence numbers are
//! implicit: the key gives the first, the rest follow one by one. Rare events
//! that are not positions (status changes, geofence events) are stored whole
//! in one `others` column.
//!
//! * V1, V2 (raw values and segments written before body V4; raw values
//!   still): each device's time and position delta-encoded against its
//!   previous event in the same value, the other fields as they are,
//!   serialised with postcard (varints). V1 has positions only.
//! * V3: V2 plus gone slots; written by the disk budget before V4.
//! * V4 ([`v4`]): what compacted and rewritten segments are written in since
//!   (with [`SEGMENT_RECORDS`] = 512; 256 before): every number replaced by
//!   its error against a guess of order 0, 1 or 2 chosen per column, each
//!   device's first values apart, in byte planes. About 6.1 B/fix of a
//!   fleet against 8.4 (V2, segments of 256); see BENCHMARKS.md "Store".
//!
//! Segments are deflated (miniz_oxide, level 6); raw values are not, as they
//! are compacted soon. This build reads every version; a binary from before
//! V4 finds a V4 segment undecodable and so treats the store as damaged
//! (moves it aside): going back a version loses the store's backlog.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fix::{
    Crossing, DeviceId, Event, FenceId, Fix, FixMode, Geofence, Position, Presence, Status,
};

/// Events per compacted segment: large enough to compress well (a
/// segment's deflate tables and each device's first values are paid once
/// per segment), small enough that a reader decodes little it does not
/// need, and that sled keeps a leaf of them inline (a leaf of up to 17
/// values over 128 KiB would go to sled's `blobs/`, which sled 0.34 does not
/// fsync): 512 fleet fixes take about 3 KB. Segments written with 256 (before
/// body V4) read alike.
pub const SEGMENT_RECORDS: usize = 512;

/// Layout byte of a value holding one uncompressed event.
const RAW: u8 = 0;
/// Layout byte of a value holding a deflated segment.
const SEGMENT: u8 = 1;
/// Layout byte of a deflated segment the disk budget has thinned.
const THINNED: u8 = 2;
/// First body format: positions only, seven optional fields.
const BODY_V1: u8 = 1;
/// Current body format: adds accuracy, the historic mark and non-position events.
const BODY_V2: u8 = 2;
/// V2 plus gone slots: written only when the disk budget rewrites a
/// segment, so that a binary that predates it refuses the value (as
/// damaged) rather than misreading a gone slot as a position.
const BODY_V3: u8 = 3;
/// Guessed values in byte planes ([`v4`]); gone slots as in V3. What
/// compacted and rewritten segments are written in.
const BODY_V4: u8 = 4;

mod v4;

/// A value in the log tree that cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The value is empty or has an unknown layout byte or version.
    #[error("unknown value layout {0}")]
    Layout(u8),
    /// The deflated body does not inflate.
    #[error("segment does not inflate: {0}")]
    Inflate(String),
    /// The body does not deserialise.
    #[error("segment body is malformed: {0}")]
    Body(#[from] postcard::Error),
    /// The body deserialises but its columns disagree or hold impossible values.
    #[error("segment body is inconsistent: {0}")]
    Inconsistent(&'static str),
}

/// What an event carries (bit per optional field, plus its kind).
mod has {
    pub const ALT: u16 = 1;
    pub const SPEED: u16 = 2;
    pub const COURSE: u16 = 4;
    pub const HDOP: u16 = 8;
    pub const SATS: u16 = 16;
    pub const MODE_2D: u16 = 32;
    pub const MODE_3D: u16 = 64;
    pub const ACCURACY: u16 = 128;
    /// A position kept as history, not the device's live one.
    pub const HISTORIC: u16 = 256;
    /// Not a position: the event is the next entry of `others`.
    pub const OTHER: u16 = 512;
    /// Removed by the disk budget: the slot holds nothing (body V3 only).
    pub const GONE: u16 = 1024;
}

/// The columns of one value. `device` and `present` have an entry per
/// event (a gone slot's `device` entry is 0 and means nothing); the position
/// columns one per position; optional columns one per position whose
/// `present` bits say so; `others` one per other event.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Columns {
    devices: Vec<String>,
    device: Vec<u32>,
    present: Vec<u16>,
    time: Vec<i64>,
    lat: Vec<i32>,
    lon: Vec<i32>,
    alt: Vec<i32>,
    speed: Vec<u32>,
    course: Vec<u16>,
    hdop: Vec<u16>,
    sats: Vec<u8>,
    accuracy: Vec<u32>,
    others: Vec<Other>,
}

/// Rare events, stored whole: they are too few to gain from columns. New
/// variants go at the end, so older values keep decoding (postcard numbers
/// variants by position; a binary that predates a variant refuses a value
/// holding it as damaged rather than misreading it).
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Other {
    /// A [`Status`] change; time in ms since the epoch.
    Status { online: bool, time: i64 },
    /// A [`Geofence`] event.
    Geofence(StoredGeofence),
}

/// A status or geofence event as a segment's `others` column holds it (both
/// body versions); `None` for a position, which goes into the fix columns.
fn as_other(event: &Event) -> Option<Other> {
    match event {
        Event::Position(_) => None,
        Event::Status(s) => Some(Other::Status {
            online: s.status == Presence::Online,
            time: s.time.timestamp_millis(),
        }),
        Event::Geofence(g) => Some(Other::Geofence(StoredGeofence::new(g))),
    }
}

/// A geofence event at the precision of positions: times in ms since the
/// epoch, degrees in 1e-7°, speeds in 0.01 m/s, the crossing as its
/// [`Crossing::code`]. Not delta-coded: such events are rare.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredGeofence {
    fence: String,
    crossing: u8,
    time: i64,
    lat: i32,
    lon: i32,
    speed: Option<u32>,
    limit: Option<u32>,
    since: Option<i64>,
    historic: bool,
}

impl StoredGeofence {
    /// The event reduced to the integers that are stored.
    fn new(g: &Geofence) -> Self {
        let speed = |v: f64| fit(v, 100.0, "speed", U32);
        Self {
            fence: g.fence.as_str().to_owned(),
            crossing: g.crossing.code(),
            time: g.time.timestamp_millis(),
            lat: fit(g.lat, 1e7, "lat", I32),
            lon: fit(g.lon, 1e7, "lon", I32),
            speed: g.speed.map(speed),
            limit: g.limit.map(speed),
            since: g.since.map(|t| t.timestamp_millis()),
            historic: g.historic,
        }
    }

    /// The event back; refuses a fence id or a crossing code this build
    /// would not have written.
    fn decode(&self, device: DeviceId) -> Result<Geofence, SegmentError> {
        let speed = |v: u32| f64::from(v) / 100.0;
        Ok(Geofence {
            device,
            fence: FenceId::new(&self.fence)
                .map_err(|_| SegmentError::Inconsistent("bad fence id"))?,
            crossing: Crossing::from_code(self.crossing)
                .ok_or(SegmentError::Inconsistent("unknown crossing code"))?,
            time: millis(self.time)?,
            lat: f64::from(self.lat) / 1e7,
            lon: f64::from(self.lon) / 1e7,
            speed: self.speed.map(speed),
            limit: self.limit.map(speed),
            since: self.since.map(millis).transpose()?,
            historic: self.historic,
        })
    }
}

/// The V1 body, read so that stores written before V2 stay readable.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ColumnsV1 {
    devices: Vec<String>,
    device: Vec<u32>,
    present: Vec<u8>,
    time: Vec<i64>,
    lat: Vec<i32>,
    lon: Vec<i32>,
    alt: Vec<i32>,
    speed: Vec<u32>,
    course: Vec<u16>,
    hdop: Vec<u16>,
    sats: Vec<u8>,
}

impl From<ColumnsV1> for Columns {
    fn from(v1: ColumnsV1) -> Self {
        Self {
            devices: v1.devices,
            device: v1.device,
            present: v1.present.into_iter().map(u16::from).collect(),
            time: v1.time,
            lat: v1.lat,
            lon: v1.lon,
            alt: v1.alt,
            speed: v1.speed,
            course: v1.course,
            hdop: v1.hdop,
            sats: v1.sats,
            accuracy: Vec::new(),
            others: Vec::new(),
        }
    }
}

/// A fix reduced to the integers that are stored.
#[derive(Debug, Clone, Copy, Default)]
struct Quantised {
    time: i64,
    lat: i32,
    lon: i32,
    alt: i32,
}

// Every value `Fix::validate` passes fits the store's integers at their
// precision (checked when this compiles), so a stored fix reads back
// exactly as the wire will send it and nothing is clamped.
const _: () = {
    use crate::fix::limits;
    assert!(limits::LAT.max * 1e7 <= i32::MAX as f64 && limits::LAT.min * 1e7 >= i32::MIN as f64);
    assert!(limits::LON.max * 1e7 <= i32::MAX as f64 && limits::LON.min * 1e7 >= i32::MIN as f64);
    assert!(limits::ALT.max * 10.0 <= i32::MAX as f64 && limits::ALT.min * 10.0 >= i32::MIN as f64);
    assert!(limits::SPEED.max * 100.0 <= u32::MAX as f64 && limits::SPEED.min >= 0.0);
    assert!(limits::COURSE.max * 10.0 <= u16::MAX as f64 && limits::COURSE.min >= 0.0);
    assert!(limits::HDOP.max * 100.0 <= u16::MAX as f64 && limits::HDOP.min >= 0.0);
    assert!(limits::ACCURACY.max * 10.0 <= u32::MAX as f64 && limits::ACCURACY.min >= 0.0);
};

/// `v × factor`, rounded, in the store's integer type `T`. The writer
/// stores only fixes `Fix::validate` passed (and events made of them), which
/// always fit; a value that does not is a bug: a debug build stops there, a
/// release build saturates (`bounds`), as the store cannot hold it.
fn fit<T: TryFrom<i64> + Copy>(v: f64, factor: f64, field: &str, bounds: (T, T)) -> T {
    let u = (v * factor).round();
    // Within ±2^62 the cast to i64 is exact and cannot saturate.
    let fitted = (u.is_finite() && u.abs() < 4.6e18)
        .then(|| T::try_from(u as i64).ok())
        .flatten();
    fitted.unwrap_or_else(|| {
        if cfg!(debug_assertions) {
            panic!("{field} {v} does not fit the store: only validated fixes may be stored");
        }
        if u > 0.0 { bounds.1 } else { bounds.0 }
    })
}

const I32: (i32, i32) = (i32::MIN, i32::MAX);
const U32: (u32, u32) = (u32::MIN, u32::MAX);
const U16: (u16, u16) = (u16::MIN, u16::MAX);

/// Encodes one event for immediate storage (body V2).
pub fn encode_raw(event: &Event) -> Vec<u8> {
    encode_raw_run(std::iter::once(event))
}

/// Raw runs this long or longer are written in body V4: a long run is
/// written and then removed at compaction, and what sled writes it also
/// has to clean; a short one is cheaper in V2, whose encoder does less.
const RAW_V4_FROM: usize = 32;

/// Encodes the events of one append as one raw value, for immediate
/// storage: not deflated, since they are compacted into a segment soon.
pub fn encode_raw_run<'a, I>(events: I) -> Vec<u8>
where
    I: IntoIterator<Item = &'a Event>,
    I::IntoIter: ExactSizeIterator,
{
    let events = events.into_iter();
    if events.len() < RAW_V4_FROM {
        let mut out = vec![RAW, BODY_V2];
        append_body(events.map(Some), &mut out);
        return out;
    }
    let mut out = vec![RAW, BODY_V4];
    v4::append_body(events.map(Some), &mut out);
    out
}

/// Whether a value holds raw events (not yet compacted).
pub fn is_raw(value: &[u8]) -> bool {
    value.first() == Some(&RAW)
}

/// Whether a value is a compacted segment (thinned or not): the writer
/// never touches one again, so the disk budget may rewrite or delete it.
pub fn is_segment(value: &[u8]) -> bool {
    matches!(value.first(), Some(&SEGMENT | &THINNED))
}

/// Whether a value is a segment the disk budget has already thinned.
pub fn is_thinned(value: &[u8]) -> bool {
    value.first() == Some(&THINNED)
}

/// Encodes consecutive events as one deflated segment.
pub fn encode_segment<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<u8> {
    let mut body = Vec::new();
    v4::append_body(events.into_iter().map(Some), &mut body);
    deflated(SEGMENT, BODY_V4, &body)
}

/// Encodes a segment rewritten by the disk budget: `None` marks a gone slot.
/// `thinned` records that it was thinned, so that it is not thinned twice.
pub fn encode_rewritten<'a>(
    slots: impl IntoIterator<Item = Option<&'a Event>>,
    thinned: bool,
) -> Vec<u8> {
    let mut body = Vec::new();
    v4::append_body(slots, &mut body);
    deflated(if thinned { THINNED } else { SEGMENT }, BODY_V4, &body)
}

fn deflated(layout: u8, version: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![layout, version];
    out.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(body, 6));
    out
}

/// Decodes a value into its slots, in sequence order: `None` is an event
/// the disk budget removed (its sequence number stays taken).
pub fn decode(value: &[u8]) -> Result<Vec<Option<Event>>, SegmentError> {
    match value {
        [RAW, BODY_V4, body @ ..] => v4::decode_body(body),
        [RAW, version @ (BODY_V1 | BODY_V2), body @ ..] => decode_body(*version, body),
        [
            SEGMENT,
            version @ (BODY_V1 | BODY_V2 | BODY_V3 | BODY_V4),
            deflated @ ..,
        ]
        | [THINNED, version @ (BODY_V3 | BODY_V4), deflated @ ..] => {
            // The limit bounds what a damaged value can make us allocate.
            let body = miniz_oxide::inflate::decompress_to_vec_with_limit(
                deflated,
                SEGMENT_RECORDS * 256 + 64 * 1024,
            )
            .map_err(|e| SegmentError::Inflate(format!("{:?}", e.status)))?;
            if *version == BODY_V4 {
                return v4::decode_body(&body);
            }
            decode_body(*version, &body)
        }
        [layout, ..] => Err(SegmentError::Layout(*layout)),
        [] => Err(SegmentError::Layout(0xff)),
    }
}

fn append_body<'a>(slots: impl IntoIterator<Item = Option<&'a Event>>, out: &mut Vec<u8>) {
    let mut cols = Columns::default();
    let mut index: HashMap<&DeviceId, u32> = HashMap::new();
    let mut last: Vec<Quantised> = Vec::new();
    for slot in slots {
        let Some(event) = slot else {
            cols.device.push(0);
            cols.present.push(has::GONE);
            continue;
        };
        let device = event.device();
        let next = index.len() as u32;
        let dev = *index.entry(device).or_insert_with(|| {
            cols.devices.push(device.as_str().to_owned());
            last.push(Quantised::default());
            next
        });
        cols.device.push(dev);
        let present = match event {
            Event::Position(p) => append_position(&mut cols, &mut last[dev as usize], p),
            other => {
                cols.others.extend(as_other(other));
                has::OTHER
            }
        };
        cols.present.push(present);
    }
    // Serialising plain vectors of integers into a Vec cannot fail.
    if let Ok(bytes) = postcard::to_extend(&cols, std::mem::take(out)) {
        *out = bytes;
    }
}

/// Adds one position to the columns; returns its `present` bits.
fn append_position(cols: &mut Columns, prev: &mut Quantised, position: &Position) -> u16 {
    let fix = &position.fix;
    let q = Quantised {
        time: fix.time.timestamp_millis(),
        lat: fit(fix.lat, 1e7, "lat", I32),
        lon: fit(fix.lon, 1e7, "lon", I32),
        alt: fix.alt.map_or(prev.alt, |a| fit(a, 10.0, "alt", I32)),
    };
    let mut present = 0u16;
    cols.time.push(q.time.wrapping_sub(prev.time));
    cols.lat.push(q.lat.wrapping_sub(prev.lat));
    cols.lon.push(q.lon.wrapping_sub(prev.lon));
    if fix.alt.is_some() {
        present |= has::ALT;
        cols.alt.push(q.alt.wrapping_sub(prev.alt));
    }
    if let Some(s) = fix.speed {
        present |= has::SPEED;
        cols.speed.push(fit(s, 100.0, "speed", U32));
    }
    if let Some(c) = fix.course {
        present |= has::COURSE;
        // 360° and 359.95° and up are north: 0.
        cols.course.push(fit(c, 10.0, "course", U16) % 3600);
    }
    if let Some(h) = fix.hdop {
        present |= has::HDOP;
        cols.hdop.push(fit(h, 100.0, "hdop", U16));
    }
    if let Some(n) = fix.sats {
        present |= has::SATS;
        cols.sats.push(n);
    }
    match fix.mode {
        Some(FixMode::TwoD) => present |= has::MODE_2D,
        Some(FixMode::ThreeD) => present |= has::MODE_3D,
        None => {}
    }
    if let Some(a) = fix.accuracy {
        present |= has::ACCURACY;
        cols.accuracy.push(fit(a, 10.0, "accuracy", U32));
    }
    if position.historic {
        present |= has::HISTORIC;
    }
    *prev = q;
    present
}

fn decode_body(version: u8, body: &[u8]) -> Result<Vec<Option<Event>>, SegmentError> {
    let cols: Columns = if version == BODY_V1 {
        postcard::from_bytes::<ColumnsV1>(body)?.into()
    } else {
        postcard::from_bytes(body)?
    };
    let n = cols.device.len();
    let gone = cols.present.iter().filter(|&&p| p & has::GONE != 0).count();
    if gone > 0 && version != BODY_V3 {
        return Err(SegmentError::Inconsistent("gone slot in a body before V3"));
    }
    let others = cols
        .present
        .iter()
        .filter(|&&p| p & has::GONE == 0 && p & has::OTHER != 0)
        .count();
    let positions = n.saturating_sub(others).saturating_sub(gone);
    if cols.present.len() != n
        || others != cols.others.len()
        || [cols.time.len(), cols.lat.len(), cols.lon.len()]
            .iter()
            .any(|&len| len != positions)
    {
        return Err(SegmentError::Inconsistent("column lengths differ"));
    }
    let devices = cols
        .devices
        .iter()
        .map(|d| DeviceId::new(d).map_err(|_| SegmentError::Inconsistent("bad device id")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut last = vec![Quantised::default(); devices.len()];
    let mut at = Cursors::default();
    let mut events = Vec::with_capacity(n);
    for i in 0..n {
        let present = cols.present[i];
        if present & has::GONE != 0 {
            events.push(None);
            continue;
        }
        let dev = cols.device[i] as usize;
        let device = devices
            .get(dev)
            .ok_or(SegmentError::Inconsistent("device index out of range"))?
            .clone();
        let event = if present & has::OTHER != 0 {
            let other = cols
                .others
                .get(at.others)
                .ok_or(SegmentError::Inconsistent("others column too short"))?;
            at.others += 1;
            decode_other(device, other)?
        } else {
            let fix = decode_fix(&cols, present, &mut last[dev], &mut at)?;
            Event::Position(Position {
                device,
                fix,
                historic: present & has::HISTORIC != 0,
            })
        };
        events.push(Some(event));
    }
    Ok(events)
}

fn decode_other(device: DeviceId, other: &Other) -> Result<Event, SegmentError> {
    match other {
        Other::Status { online, time } => Ok(Event::Status(Status {
            device,
            status: if *online {
                Presence::Online
            } else {
                Presence::Offline
            },
            time: millis(*time)?,
        })),
        Other::Geofence(g) => g.decode(device).map(Event::Geofence),
    }
}

fn millis(ms: i64) -> Result<DateTime<Utc>, SegmentError> {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .ok_or(SegmentError::Inconsistent("time out of range"))
}

/// The next position of the columns, undoing its device's deltas.
fn decode_fix(
    cols: &Columns,
    present: u16,
    prev: &mut Quantised,
    at: &mut Cursors,
) -> Result<Fix, SegmentError> {
    let i = at.position;
    at.position += 1;
    prev.time = prev.time.wrapping_add(cols.time[i]);
    prev.lat = prev.lat.wrapping_add(cols.lat[i]);
    prev.lon = prev.lon.wrapping_add(cols.lon[i]);
    let alt = match take(present, has::ALT, &cols.alt, &mut at.alt)? {
        Some(delta) => {
            prev.alt = prev.alt.wrapping_add(delta);
            Some(f64::from(prev.alt) / 10.0)
        }
        None => None,
    };
    Ok(Fix {
        time: millis(prev.time)?,
        lat: f64::from(prev.lat) / 1e7,
        lon: f64::from(prev.lon) / 1e7,
        alt,
        speed: take(present, has::SPEED, &cols.speed, &mut at.speed)?.map(|v| f64::from(v) / 100.0),
        course: take(present, has::COURSE, &cols.course, &mut at.course)?
            .map(|v| f64::from(v) / 10.0),
        hdop: take(present, has::HDOP, &cols.hdop, &mut at.hdop)?.map(|v| f64::from(v) / 100.0),
        sats: take(present, has::SATS, &cols.sats, &mut at.sats)?,
        mode: if present & has::MODE_3D != 0 {
            Some(FixMode::ThreeD)
        } else if present & has::MODE_2D != 0 {
            Some(FixMode::TwoD)
        } else {
            None
        },
        accuracy: take(present, has::ACCURACY, &cols.accuracy, &mut at.accuracy)?
            .map(|v| f64::from(v) / 10.0),
    })
}

/// Cursors into the columns, advanced as events claim entries.
#[derive(Default)]
struct Cursors {
    position: usize,
    others: usize,
    alt: usize,
    speed: usize,
    course: usize,
    hdop: usize,
    sats: usize,
    accuracy: usize,
}

/// The next entry of an optional column if the event has the field.
fn take<T: Copy>(
    present: u16,
    bit: u16,
    column: &[T],
    at: &mut usize,
) -> Result<Option<T>, SegmentError> {
    if present & bit == 0 {
        return Ok(None);
    }
    let v = column
        .get(*at)
        .copied()
        .ok_or(SegmentError::Inconsistent("optional column too short"))?;
    *at += 1;
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn position(device: &str, i: i64) -> Event {
        Event::Position(Position::new(
            DeviceId::new(device).unwrap(),
            Fix {
                time: Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
                    + chrono::Duration::milliseconds(1000 * i + 123),
                lat: 52.0907123 + i as f64 * 1.3e-5,
                lon: 5.1214456 - i as f64 * 2.1e-5,
                alt: (i % 5 != 0).then_some(12.3 + i as f64 * 0.1),
                speed: Some(8.37),
                course: (i % 3 != 0).then_some(271.4),
                hdop: Some(0.91),
                sats: Some(11),
                mode: Some(if i % 7 == 0 {
                    FixMode::TwoD
                } else {
                    FixMode::ThreeD
                }),
                accuracy: None,
            },
        ))
    }

    #[test]
    fn raw_and_segment_round_trip_at_stored_precision() {
        let events: Vec<Event> = (0..300)
            .map(|i| position(if i % 3 == 0 { "a" } else { "bus-2" }, i))
            .collect();
        let raw = present(&encode_raw(&events[5]));
        assert_eq!(raw.len(), 1);
        assert_close(&raw[0], &events[5]);
        let seg = present(&encode_segment(&events));
        assert_eq!(seg.len(), events.len());
        for (got, want) in seg.iter().zip(&events) {
            assert_close(got, want);
        }
    }

    /// The events of a value that has no gone slots.
    fn present(value: &[u8]) -> Vec<Event> {
        decode(value)
            .unwrap()
            .into_iter()
            .map(|slot| slot.expect("no gone slot"))
            .collect()
    }

    /// Equal at the stored precision: 1e-7°, 0.1 m, ms; the rest exact here.
    fn assert_close(got: &Event, want: &Event) {
        let (Event::Position(g), Event::Position(w)) = (got, want) else {
            assert_eq!(got, want);
            return;
        };
        {
            assert_eq!(g.historic, w.historic);
            assert_eq!(g.fix.accuracy, w.fix.accuracy);
            assert_eq!(g.device, w.device);
            assert_eq!(g.fix.time, w.fix.time);
            assert!((g.fix.lat - w.fix.lat).abs() <= 0.5e-7 + 1e-12);
            assert!((g.fix.lon - w.fix.lon).abs() <= 0.5e-7 + 1e-12);
            assert_eq!(g.fix.alt.is_some(), w.fix.alt.is_some());
            if let (Some(a), Some(b)) = (g.fix.alt, w.fix.alt) {
                assert!((a - b).abs() <= 0.05 + 1e-9);
            }
            assert_eq!(g.fix.course, w.fix.course);
            assert_eq!(g.fix.speed, w.fix.speed);
            assert_eq!(g.fix.hdop, w.fix.hdop);
            assert_eq!(g.fix.sats, w.fix.sats);
            assert_eq!(g.fix.mode, w.fix.mode);
        }
    }

    /// A value of `range`: either end, or anything between.
    fn within(range: crate::fix::Range) -> impl proptest::strategy::Strategy<Value = f64> {
        use proptest::prelude::*;
        prop_oneof![Just(range.min), Just(range.max), range.min..=range.max]
    }

    /// Any fix `Fix::validate` passes, the ends of every range included.
    fn valid_fix() -> impl proptest::strategy::Strategy<Value = Fix> {
        use crate::fix::limits;
        use proptest::prelude::*;
        let time = (
            prop_oneof![
                Just(limits::TIME_MIN_MS),
                Just(limits::TIME_MAX_MS),
                limits::TIME_MIN_MS..=limits::TIME_MAX_MS
            ],
            0i64..1_000_000,
        )
            .prop_map(|(ms, ns)| {
                Utc.timestamp_millis_opt(ms).unwrap() + chrono::Duration::nanoseconds(ns)
            });
        (
            (time, within(limits::LAT), within(limits::LON)),
            (
                proptest::option::of(within(limits::ALT)),
                proptest::option::of(within(limits::SPEED)),
                proptest::option::of(within(limits::COURSE)),
                proptest::option::of(within(limits::HDOP)),
                proptest::option::of(any::<u8>()),
                proptest::option::of(within(limits::ACCURACY)),
            ),
        )
            .prop_map(
                |((time, lat, lon), (alt, speed, course, hdop, sats, accuracy))| Fix {
                    alt,
                    speed,
                    course,
                    hdop,
                    sats,
                    mode: Some(FixMode::ThreeD),
                    accuracy,
                    ..Fix::new(time, lat, lon)
                },
            )
    }

    proptest::proptest! {
        /// Whatever `Fix::validate` passes, the store keeps exactly as the
        /// wire will send it (the two quantisations agree, nothing is
        /// clamped), within half a unit of what came in.
        #[test]
        fn every_valid_fix_is_stored_as_the_wire_sends_it(fix in valid_fix()) {
            use crate::wire::quantise::WireFix;
            proptest::prop_assert!(fix.validate().is_ok(), "{fix:?}");
            let event = Event::Position(Position::new(DeviceId::new("d").unwrap(), fix.clone()));
            let wire = WireFix::try_from_fix(&fix)
                .and_then(WireFix::to_fix)
                .map_err(proptest::test_runner::TestCaseError::fail)?;
            for value in [encode_raw(&event), encode_segment([&event, &event])] {
                for slot in decode(&value).unwrap() {
                    let Some(Event::Position(p)) = slot else {
                        return Err(proptest::test_runner::TestCaseError::fail("not a position"));
                    };
                    proptest::prop_assert_eq!(&p.fix, &wire);
                }
            }
            let near = |a: Option<f64>, b: Option<f64>, unit: f64| match (a, b) {
                (Some(a), Some(b)) => (a - b).abs() <= unit / 2.0 + 1e-9,
                (a, b) => a.is_none() && b.is_none(),
            };
            proptest::prop_assert!(near(wire.alt, fix.alt, 0.1));
            proptest::prop_assert!(near(wire.speed, fix.speed, 0.01));
            proptest::prop_assert!(near(wire.hdop, fix.hdop, 0.01));
            proptest::prop_assert!(near(wire.accuracy, fix.accuracy, 0.1));
            // A course rounding to 360° is north: 0.
            let course = fix.course.map(|c| if c >= 359.95 { c - 360.0 } else { c });
            proptest::prop_assert!(near(wire.course, course, 0.1), "{:?}", fix.course);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(512))]
        /// Any run of valid fixes of a few devices (the ends of every range
        /// included, so the guesses swing from one end to the other), some
        /// slots gone: every kept fix comes back exactly as the wire
        /// quantises it, in its slot.
        #[test]
        fn any_run_of_fixes_comes_back_exact_at_the_quantum(
            run in proptest::collection::vec(
                (0..3usize, valid_fix(), proptest::bool::ANY, 0..4u8),
                1..80,
            )
        ) {
            use crate::wire::quantise::WireFix;
            let names = ["a", "bus-2", "c"];
            let events: Vec<Event> = run
                .iter()
                .map(|(d, fix, historic, _)| {
                    let mut p = Position::new(DeviceId::new(names[*d]).unwrap(), fix.clone());
                    p.historic = *historic;
                    Event::Position(p)
                })
                .collect();
            let kept = |i: usize| run[i].3 != 0;
            let whole = decode(&encode_segment(&events)).unwrap();
            // A raw run: V2 when short, V4 from RAW_V4_FROM on.
            proptest::prop_assert_eq!(&decode(&encode_raw_run(&events)).unwrap(), &whole);
            let rewritten = decode(&encode_rewritten(
                events.iter().enumerate().map(|(i, e)| kept(i).then_some(e)),
                false,
            ))
            .unwrap();
            proptest::prop_assert_eq!(whole.len(), events.len());
            proptest::prop_assert_eq!(rewritten.len(), events.len());
            for (i, (d, fix, historic, _)) in run.iter().enumerate() {
                let wire = WireFix::try_from_fix(fix)
                    .and_then(WireFix::to_fix)
                    .map_err(proptest::test_runner::TestCaseError::fail)?;
                let want = Event::Position(Position {
                    device: DeviceId::new(names[*d]).unwrap(),
                    fix: wire,
                    historic: *historic,
                });
                proptest::prop_assert_eq!(whole[i].as_ref(), Some(&want));
                proptest::prop_assert_eq!(rewritten[i].as_ref(), kept(i).then_some(&want));
            }
        }
    }

    #[test]
    fn the_ends_of_every_range_are_stored_exactly() {
        use crate::fix::limits;
        let event = |fix: Fix| Event::Position(Position::new(DeviceId::new("d").unwrap(), fix));
        let time = Utc.timestamp_millis_opt(limits::TIME_MAX_MS).unwrap();
        for (lat, lon, alt, speed, hdop, accuracy) in [
            (
                90.0,
                180.0,
                limits::ALT.max,
                limits::SPEED.max,
                limits::HDOP.max,
                limits::ACCURACY.max,
            ),
            (-90.0, -180.0, limits::ALT.min, 0.0, 0.0, 0.0),
        ] {
            let fix = Fix {
                alt: Some(alt),
                speed: Some(speed),
                course: Some(359.9),
                hdop: Some(hdop),
                sats: Some(255),
                accuracy: Some(accuracy),
                ..Fix::new(time, lat, lon)
            };
            let back = present(&encode_raw(&event(fix.clone())));
            assert_eq!(back, vec![event(fix)]);
        }
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "does not fit the store")]
    fn a_value_beyond_the_store_is_never_clamped_silently() {
        let mut fix = Fix::new(
            Utc.timestamp_millis_opt(1_790_000_000_000).unwrap(),
            1.0,
            2.0,
        );
        fix.alt = Some(1e308);
        encode_raw(&Event::Position(Position::new(
            DeviceId::new("d").unwrap(),
            fix,
        )));
    }

    #[test]
    fn statuses_historic_marks_and_accuracy_round_trip_between_positions() {
        let status = |device: &str, online: bool, s: i64| {
            Event::Status(Status {
                device: DeviceId::new(device).unwrap(),
                status: if online {
                    Presence::Online
                } else {
                    Presence::Offline
                },
                time: Utc.timestamp_millis_opt(1_790_000_000_000 + s).unwrap(),
            })
        };
        let mut events = vec![status("a", true, 1)];
        for i in 0..40 {
            let mut e = position(if i % 2 == 0 { "a" } else { "b" }, i);
            if let Event::Position(p) = &mut e {
                p.historic = i % 5 == 0;
                p.fix.accuracy = (i % 3 == 0).then_some(4.7 + i as f64);
            }
            events.push(e);
            if i % 9 == 0 {
                events.push(status("b", i % 2 == 0, i));
            }
        }
        assert_round_trips(&events);
    }

    /// Events come back from one segment and from raw values one by one,
    /// at the stored precision.
    fn assert_round_trips(events: &[Event]) {
        for decoded in [
            present(&encode_segment(events)),
            events
                .iter()
                .flat_map(|e| present(&encode_raw(e)))
                .collect(),
        ] {
            assert_eq!(decoded.len(), events.len());
            for (got, want) in decoded.iter().zip(events) {
                assert_close(got, want);
            }
        }
    }

    /// A geofence event of `device` caused by the fix `position(device, i)`
    /// would have; what it carries depends on its crossing.
    fn geofence(device: &str, i: i64, crossing: Crossing) -> Event {
        let Event::Position(p) = position(device, i) else {
            unreachable!("position() makes positions")
        };
        let mut g = Geofence::example(device, p.fix.time);
        // At the stored precision already, so that it must come back equal.
        let stored = |degrees: f64| (degrees * 1e7).round() / 1e7;
        (g.crossing, g.historic) = (crossing, i % 4 == 1);
        (g.lat, g.lon) = (stored(p.fix.lat), stored(p.fix.lon));
        if crossing != Crossing::Speeding {
            (g.speed, g.limit) = (None, None);
        }
        if crossing == Crossing::Enter {
            g.since = None;
        }
        Event::Geofence(g)
    }

    #[test]
    fn geofence_events_round_trip_among_positions_and_statuses() {
        let crossings = [
            Crossing::Enter,
            Crossing::Dwell,
            Crossing::Speeding,
            Crossing::Exit,
        ];
        let mut events = Vec::new();
        for i in 0..80 {
            let device = if i % 3 == 0 { "a" } else { "bus-2" };
            events.push(position(device, i));
            if i % 5 == 2 {
                events.push(geofence(device, i, crossings[(i / 5) as usize % 4]));
            }
            if i % 11 == 0 {
                events.push(Event::Status(Status {
                    device: DeviceId::new(device).unwrap(),
                    status: Presence::Online,
                    time: Utc.timestamp_millis_opt(1_790_000_000_000 + i).unwrap(),
                }));
            }
        }
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Geofence(g) if g.historic))
        );
        assert_round_trips(&events);
        // The budget's rewrite keeps the geofence events it does not remove.
        let keep = |e: &Event| !matches!(e, Event::Position(_));
        let value = encode_rewritten(events.iter().map(|e| keep(e).then_some(e)), false);
        let slots = decode(&value).unwrap();
        let want: Vec<&Event> = events.iter().filter(|e| keep(e)).collect();
        assert_eq!(slots.iter().flatten().collect::<Vec<_>>(), want);
    }

    #[test]
    fn a_geofence_event_with_an_unknown_crossing_or_a_bad_fence_is_damage() {
        let Event::Geofence(g) = geofence("a", 1, Crossing::Exit) else {
            unreachable!("geofence() makes geofence events")
        };
        let forged = |change: fn(&mut StoredGeofence)| {
            let mut stored = StoredGeofence::new(&g);
            change(&mut stored);
            let cols = Columns {
                devices: vec!["a".into()],
                device: vec![0],
                present: vec![has::OTHER],
                others: vec![Other::Geofence(stored)],
                ..Columns::default()
            };
            decode(&deflated(
                SEGMENT,
                BODY_V2,
                &postcard::to_stdvec(&cols).unwrap(),
            ))
        };
        assert!(
            matches!(&forged(|_| {}).unwrap()[..], [Some(Event::Geofence(back))] if *back == g)
        );
        for (what, change) in [
            (
                "unknown crossing code",
                (|s| s.crossing = 4) as fn(&mut StoredGeofence),
            ),
            ("bad fence id", |s| s.fence = "a/b".into()),
            ("bad fence id", |s| s.fence.clear()),
            ("time out of range", |s| s.since = Some(i64::MAX)),
        ] {
            assert!(
                matches!(forged(change), Err(SegmentError::Inconsistent(w)) if w == what),
                "{what}"
            );
        }
    }

    /// A raw status as the binaries before geofence events wrote it: the
    /// status keeps its variant number, so these bytes still decode.
    #[test]
    fn a_status_written_before_geofence_events_still_decodes() {
        let hex = "000201056275732d31010001800400000000000000000001000180b083c59868";
        let value: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let status = Event::Status(Status {
            device: DeviceId::new("bus-1").unwrap(),
            status: Presence::Online,
            time: Utc.timestamp_millis_opt(1_790_000_000_000).unwrap(),
        });
        assert_eq!(present(&value), vec![status.clone()]);
        assert_eq!(encode_raw(&status), value, "statuses are written as before");
    }

    /// Flipped bytes mostly fail to inflate; these reach the column checks.
    #[test]
    fn random_columns_are_errors_or_events_never_panics() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let n = rng.usize(0..6);
            let small = |rng: &mut fastrand::Rng| -> Vec<i32> {
                let len = rng.usize(0..n + 2);
                (0..len)
                    .map(|_| rng.i32(-3..3).wrapping_mul(rng.i32(..)))
                    .collect()
            };
            let cols = Columns {
                devices: (0..rng.usize(0..3)).map(|i| format!("d{i}")).collect(),
                device: (0..n).map(|_| rng.u32(0..4)).collect(),
                present: (0..rng.usize(n.saturating_sub(1)..n + 2))
                    .map(|_| rng.u16(..))
                    .collect(),
                time: (0..rng.usize(0..n + 2)).map(|_| rng.i64(..)).collect(),
                lat: small(&mut rng),
                lon: small(&mut rng),
                alt: small(&mut rng),
                speed: (0..rng.usize(0..n + 2)).map(|_| rng.u32(..)).collect(),
                course: (0..rng.usize(0..n + 2)).map(|_| rng.u16(..)).collect(),
                hdop: (0..rng.usize(0..n + 2)).map(|_| rng.u16(..)).collect(),
                sats: (0..rng.usize(0..n + 2)).map(|_| rng.u8(..)).collect(),
                accuracy: (0..rng.usize(0..n + 2)).map(|_| rng.u32(..)).collect(),
                others: (0..rng.usize(0..3))
                    .map(|_| random_other(&mut rng))
                    .collect(),
            };
            let body = postcard::to_stdvec(&cols).unwrap();
            let mut value = vec![RAW, BODY_V2];
            value.extend_from_slice(&body);
            let _ = decode(&value);
            let _ = decode(&deflated(THINNED, BODY_V3, &body));
        }
    }

    /// A status, or a geofence event with a fence id and crossing code that
    /// may be invalid.
    fn random_other(rng: &mut fastrand::Rng) -> Other {
        if rng.bool() {
            return Other::Status {
                online: rng.bool(),
                time: rng.i64(..),
            };
        }
        let maybe = |rng: &mut fastrand::Rng| rng.bool().then(|| rng.u32(..));
        Other::Geofence(StoredGeofence {
            fence: ["depot", "", "a b"][rng.usize(0..3)].into(),
            crossing: rng.u8(0..6),
            time: rng.i64(..),
            lat: rng.i32(..),
            lon: rng.i32(..),
            speed: maybe(rng),
            limit: maybe(rng),
            since: rng.bool().then(|| rng.i64(..)),
            historic: rng.bool(),
        })
    }

    #[test]
    fn values_written_in_the_v1_layout_still_decode() {
        let v1 = ColumnsV1 {
            devices: vec!["bus-1".into()],
            device: vec![0, 0],
            present: vec![has::SATS as u8, 0],
            time: vec![1_790_000_000_000, 1000],
            lat: vec![520_000_000, 10],
            lon: vec![50_000_000, -10],
            sats: vec![9],
            ..ColumnsV1::default()
        };
        let mut value = vec![SEGMENT, BODY_V1];
        let body = postcard::to_stdvec(&v1).unwrap();
        value.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(&body, 6));
        let events = present(&value);
        let Event::Position(second) = &events[1] else {
            panic!("{events:?}")
        };
        assert_eq!(second.fix.lat, 52.000001);
        assert_eq!(second.fix.time.timestamp_millis(), 1_790_000_001_000);
        assert!(matches!(&events[0], Event::Position(p) if p.fix.sats == Some(9)));
    }

    #[test]
    fn gone_slots_keep_their_place_and_the_rest_decodes_exactly() {
        let events: Vec<Event> = (0..40)
            .map(|i| position(if i % 4 == 0 { "a" } else { "b" }, i))
            .collect();
        let keep = |i: usize| i % 3 != 1 && i != 0;
        for thinned in [false, true] {
            let value = encode_rewritten(
                events.iter().enumerate().map(|(i, e)| keep(i).then_some(e)),
                thinned,
            );
            assert!(is_segment(&value) && !is_raw(&value));
            assert_eq!(is_thinned(&value), thinned);
            let slots = decode(&value).unwrap();
            assert_eq!(slots.len(), events.len(), "gone slots keep their numbers");
            for (i, (slot, want)) in slots.iter().zip(&events).enumerate() {
                match slot {
                    Some(got) => assert_close(got, want),
                    None => assert!(!keep(i), "slot {i} lost"),
                }
            }
            assert_eq!(
                slots.iter().flatten().count(),
                (0..40).filter(|&i| keep(i)).count()
            );
        }
        // Nothing left: every slot gone, no device named.
        let empty = encode_rewritten(events.iter().map(|_| None), false);
        assert!(decode(&empty).unwrap().iter().all(Option::is_none));
    }

    /// `events` with each device's own state, as the V2 encoder (before
    /// body V4) wrote a compacted segment; `gone` slots as its V3 rewrite.
    fn legacy_segment(events: &[Event], gone: impl Fn(usize) -> bool) -> Vec<u8> {
        let mut body = Vec::new();
        let slots = events
            .iter()
            .enumerate()
            .map(|(i, e)| (!gone(i)).then_some(e));
        append_body(slots, &mut body);
        let version = if (0..events.len()).any(&gone) {
            BODY_V3
        } else {
            BODY_V2
        };
        deflated(SEGMENT, version, &body)
    }

    /// A compacted segment as the code before body V4 wrote it (V2,
    /// segments of 256; these bytes were made by it): six positions of two
    /// devices, `position(a|bus-2, 0..6)`.
    #[test]
    fn a_v2_segment_written_before_v4_still_decodes() {
        let hex = "01024dc4bf0a45601c87f1f73de777becb99cdae40c9e856943726bb5c8272031693456ec382946b5052061693a4943fefe2f9d4f3e1cecf0d7ccd00e337984258c2c61a3647e155f1fd54953066c3f29df26b114958fa596fbb59af21d1c6774e84f285124582f584ff136327";
        let value: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let events: Vec<Event> = (0..6)
            .map(|i| position(if i % 2 == 0 { "a" } else { "bus-2" }, i))
            .collect();
        let back = present(&value);
        assert_eq!(back.len(), 6);
        for (got, want) in back.iter().zip(&events) {
            assert_close(got, want);
        }
        assert_ne!(encode_segment(&events), value, "written as V4 now");
    }

    /// V2 segments and V3 rewrites (gone slots, thinned or not) decode to
    /// what the same events decode to from V4, event for event.
    #[test]
    fn every_body_version_decodes_to_the_same_events() {
        let mut events: Vec<Event> = (0..300)
            .map(|i| position(["a", "bus-2", "c"][i as usize % 3], i))
            .collect();
        events.insert(7, geofence("a", 7, Crossing::Speeding));
        let gone = |i: usize| i % 5 == 3;
        let keep = |i: usize| (!gone(i)).then_some(());
        let v4 = decode(&encode_segment(&events)).unwrap();
        assert_eq!(decode(&legacy_segment(&events, |_| false)).unwrap(), v4);
        let v3 = decode(&legacy_segment(&events, gone)).unwrap();
        let rewritten = encode_rewritten(
            events.iter().enumerate().map(|(i, e)| keep(i).map(|()| e)),
            true,
        );
        assert!(is_thinned(&rewritten));
        assert_eq!(decode(&rewritten).unwrap(), v3);
        let want: Vec<Option<Event>> = v4
            .into_iter()
            .enumerate()
            .map(|(i, e)| keep(i).and(e))
            .collect();
        assert_eq!(v3, want);
    }

    /// A V4 body cut or flipped anywhere, inside the deflate (so that the
    /// column checks see it): an error or events, never a panic.
    #[test]
    fn damaged_v4_bodies_are_errors_not_panics() {
        let mut events: Vec<Event> = (0..60)
            .map(|i| position(["a", "bus-2"][i as usize % 2], i))
            .collect();
        events.push(geofence("a", 3, Crossing::Dwell));
        let mut body = Vec::new();
        v4::append_body(events.iter().map(Some), &mut body);
        assert_eq!(v4::decode_body(&body).unwrap().len(), events.len());
        let mut rng = fastrand::Rng::with_seed(11);
        for cut in 0..body.len() {
            assert!(v4::decode_body(&body[..cut]).is_err(), "cut at {cut}");
        }
        for _ in 0..20_000 {
            let mut flipped = body.clone();
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..flipped.len());
                flipped[i] = rng.u8(..);
            }
            let _ = decode(&deflated(THINNED, BODY_V4, &flipped));
        }
    }

    /// More devices than the V4 encoder searches in a list (it hashes
    /// beyond): each event keeps its device.
    #[test]
    fn a_segment_of_many_devices_round_trips() {
        let events: Vec<Event> = (0..SEGMENT_RECORDS as i64)
            .map(|i| position(&format!("dev-{}", (i * 7) % 41), i))
            .collect();
        assert_round_trips(&events);
        assert_eq!(
            present(&encode_raw_run(&events)),
            present(&encode_segment(&events))
        );
    }

    #[test]
    fn long_raw_runs_are_v4_and_short_ones_v2_and_both_read_back() {
        let events: Vec<Event> = (0..100)
            .map(|i| position(["a", "bus-2"][i as usize % 2], i))
            .collect();
        for n in [1, RAW_V4_FROM - 1, RAW_V4_FROM, 100] {
            let value = encode_raw_run(&events[..n]);
            assert!(is_raw(&value) && !is_segment(&value));
            let want = if n < RAW_V4_FROM { BODY_V2 } else { BODY_V4 };
            assert_eq!(value[1], want, "{n} events");
            let back = present(&value);
            assert_eq!(back.len(), n);
            for (got, want) in back.iter().zip(&events) {
                assert_close(got, want);
            }
        }
    }

    #[test]
    fn a_gone_mark_in_an_older_body_is_damage() {
        let cols = Columns {
            device: vec![0],
            present: vec![has::GONE],
            ..Columns::default()
        };
        let body = postcard::to_stdvec(&cols).unwrap();
        assert!(decode(&deflated(SEGMENT, BODY_V2, &body)).is_err());
        assert!(decode(&deflated(SEGMENT, BODY_V3, &body)).is_ok());
        // A thinned segment is always V3.
        assert!(decode(&deflated(THINNED, BODY_V2, &body)).is_err());
    }

    #[test]
    fn a_moving_track_segment_is_compact() {
        let events: Vec<Event> = (0..SEGMENT_RECORDS as i64)
            .map(|i| position("bus-2", i))
            .collect();
        let bytes = encode_segment(&events).len();
        assert!(
            bytes < SEGMENT_RECORDS * 12,
            "{bytes} bytes for {SEGMENT_RECORDS} fixes"
        );
    }

    #[test]
    fn damaged_values_are_errors_not_panics() {
        let good = encode_segment(&[position("a", 1), position("a", 2)]);
        assert!(matches!(decode(&[]), Err(SegmentError::Layout(_))));
        assert!(matches!(decode(&[9, 1, 2]), Err(SegmentError::Layout(9))));
        for cut in 0..good.len() {
            let _ = decode(&good[..cut]);
        }
        let mut flipped = good.clone();
        for i in 2..flipped.len() {
            flipped[i] ^= 0x5a;
            let _ = decode(&flipped);
        }
        let raw = encode_raw(&position("a", 1));
        for cut in 0..raw.len() {
            assert!(decode(&raw[..cut]).is_err() || cut == raw.len());
        }
    }
}
