//! The on-disk layout of stored events: pure encoding, no sled.
//!
//! Every value in the log tree starts with a layout byte:
//!
//! * `RAW` — one event, written by the writer as it arrives, so that a flush
//!   makes it durable without waiting for a segment to fill;
//! * `SEGMENT` — up to [`SEGMENT_RECORDS`] consecutive events, compacted by the
//!   writer once that many raw ones have accumulated, keyed by the first
//!   sequence number they hold.
//!
//! Both carry the same body: events in columns (one vector per field),
//! quantised to the precision the uplink will use (1e-7°, ms, 0.1 m, 0.01 m/s,
//! 0.1°, 0.01 hdop), each device's time and position delta-encoded against
//! its previous event in the same value, serialised with postcard (varints).
//! A segment is then deflated: columns of small, similar varints compress far
//! better than rows of mixed fields. Sequence numbers are implicit: the key
//! gives the first, the rest follow one by one.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fix::{DeviceId, Event, Fix, FixMode, Position};

/// Events per compacted segment: large enough to compress well, small enough
/// that a reader decodes little it does not need.
pub const SEGMENT_RECORDS: usize = 256;

/// Layout byte of a value holding one uncompressed event.
const RAW: u8 = 0;
/// Layout byte of a value holding a deflated segment.
const SEGMENT: u8 = 1;
/// Body format version, so a later layout can be read beside this one.
const BODY_V1: u8 = 1;

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

/// Which optional fields an event carries (bit per field).
mod has {
    pub const ALT: u8 = 1;
    pub const SPEED: u8 = 2;
    pub const COURSE: u8 = 4;
    pub const HDOP: u8 = 8;
    pub const SATS: u8 = 16;
    pub const MODE_2D: u8 = 32;
    pub const MODE_3D: u8 = 64;
}

/// The columns of one value. Optional columns hold entries only for the
/// events whose `present` bits say so.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Columns {
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

/// A fix reduced to the integers that are stored.
#[derive(Debug, Clone, Copy, Default)]
struct Quantised {
    time: i64,
    lat: i32,
    lon: i32,
    alt: i32,
}

fn scale(v: f64, factor: f64) -> f64 {
    (v * factor).round()
}

/// Encodes one event for immediate storage.
pub fn encode_raw(event: &Event) -> Vec<u8> {
    let mut out = vec![RAW, BODY_V1];
    append_body([event], &mut out);
    out
}

/// Whether a value holds one raw event (not yet compacted).
pub fn is_raw(value: &[u8]) -> bool {
    value.first() == Some(&RAW)
}

/// Encodes consecutive events as one deflated segment.
pub fn encode_segment<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<u8> {
    let mut body = Vec::new();
    append_body(events, &mut body);
    let mut out = vec![SEGMENT, BODY_V1];
    out.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(&body, 6));
    out
}

/// Decodes a value into its events, in sequence order.
pub fn decode(value: &[u8]) -> Result<Vec<Event>, SegmentError> {
    match value {
        [RAW, BODY_V1, body @ ..] => decode_body(body),
        [SEGMENT, BODY_V1, deflated @ ..] => {
            // The limit bounds what a damaged value can make us allocate.
            let body = miniz_oxide::inflate::decompress_to_vec_with_limit(
                deflated,
                SEGMENT_RECORDS * 256 + 64 * 1024,
            )
            .map_err(|e| SegmentError::Inflate(format!("{:?}", e.status)))?;
            decode_body(&body)
        }
        [layout, ..] => Err(SegmentError::Layout(*layout)),
        [] => Err(SegmentError::Layout(0xff)),
    }
}

fn append_body<'a>(events: impl IntoIterator<Item = &'a Event>, out: &mut Vec<u8>) {
    let mut cols = Columns::default();
    let mut index: HashMap<&DeviceId, u32> = HashMap::new();
    let mut last: Vec<Quantised> = Vec::new();
    for event in events {
        let Event::Position(Position { device, fix, .. }) = event;
        let next = index.len() as u32;
        let dev = *index.entry(device).or_insert_with(|| {
            cols.devices.push(device.as_str().to_owned());
            last.push(Quantised::default());
            next
        });
        let prev = &mut last[dev as usize];
        let q = Quantised {
            time: fix.time.timestamp_millis(),
            lat: scale(fix.lat, 1e7) as i32,
            lon: scale(fix.lon, 1e7) as i32,
            alt: fix.alt.map_or(prev.alt, |a| scale(a, 10.0) as i32),
        };
        let mut present = 0u8;
        cols.device.push(dev);
        cols.time.push(q.time.wrapping_sub(prev.time));
        cols.lat.push(q.lat.wrapping_sub(prev.lat));
        cols.lon.push(q.lon.wrapping_sub(prev.lon));
        if fix.alt.is_some() {
            present |= has::ALT;
            cols.alt.push(q.alt.wrapping_sub(prev.alt));
        }
        if let Some(s) = fix.speed {
            present |= has::SPEED;
            cols.speed.push(scale(s, 100.0) as u32);
        }
        if let Some(c) = fix.course {
            present |= has::COURSE;
            cols.course.push(scale(c, 10.0) as u16 % 3600);
        }
        if let Some(h) = fix.hdop {
            present |= has::HDOP;
            cols.hdop
                .push(scale(h, 100.0).min(f64::from(u16::MAX)) as u16);
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
        cols.present.push(present);
        *prev = q;
    }
    // Serialising plain vectors of integers into a Vec cannot fail.
    if let Ok(bytes) = postcard::to_extend(&cols, std::mem::take(out)) {
        *out = bytes;
    }
}

fn decode_body(body: &[u8]) -> Result<Vec<Event>, SegmentError> {
    let cols: Columns = postcard::from_bytes(body)?;
    let n = cols.device.len();
    if [
        cols.present.len(),
        cols.time.len(),
        cols.lat.len(),
        cols.lon.len(),
    ]
    .iter()
    .any(|&len| len != n)
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
        let dev = cols.device[i] as usize;
        let device = devices
            .get(dev)
            .ok_or(SegmentError::Inconsistent("device index out of range"))?;
        let prev = &mut last[dev];
        let present = cols.present[i];
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
        let time = DateTime::<Utc>::from_timestamp_millis(prev.time)
            .ok_or(SegmentError::Inconsistent("time out of range"))?;
        let fix = Fix {
            time,
            lat: f64::from(prev.lat) / 1e7,
            lon: f64::from(prev.lon) / 1e7,
            alt,
            speed: take(present, has::SPEED, &cols.speed, &mut at.speed)?
                .map(|v| f64::from(v) / 100.0),
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
            accuracy: None,
        };
        events.push(Event::Position(Position {
            device: device.clone(),
            fix,
            historic: false,
        }));
    }
    Ok(events)
}

/// Cursors into the optional columns, advanced as events claim entries.
#[derive(Default)]
struct Cursors {
    alt: usize,
    speed: usize,
    course: usize,
    hdop: usize,
    sats: usize,
}

/// The next entry of an optional column if the event has the field.
fn take<T: Copy>(
    present: u8,
    bit: u8,
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
        let raw = decode(&encode_raw(&events[5])).unwrap();
        assert_eq!(raw.len(), 1);
        assert_close(&raw[0], &events[5]);
        let seg = decode(&encode_segment(&events)).unwrap();
        assert_eq!(seg.len(), events.len());
        for (got, want) in seg.iter().zip(&events) {
            assert_close(got, want);
        }
    }

    /// Equal at the stored precision: 1e-7°, 0.1 m, ms; the rest exact here.
    fn assert_close(got: &Event, want: &Event) {
        {
            let (Event::Position(g), Event::Position(w)) = (got, want);
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
