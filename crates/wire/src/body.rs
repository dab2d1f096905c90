//! The body of a batch: its records as columns of small integers.
//!
//! One column per field rather than one row per record, because the
//! compressor (deflate in version 1, LZMA in version 2) does best on long
//! runs of similar bytes: a column of near-zero residuals is mostly one
//! repeated byte. Each column is a postcard sequence (a varint
//! count, then the values), in the order of [`Columns`]; the decoder checks
//! every count against what the earlier columns imply before reading it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::predict::{Field, Predictor};
use super::quantise::{self, WireFix};
use super::units::{self, Unit};
use crate::fix::{
    Crossing, DeviceId, Event, FenceId, FixMode, Geofence, Position, Presence, Record, Status,
};

/// The bits of a record's `flags`: which optional values it has, or that
/// it is not a position at all.
pub mod flag {
    /// Has an altitude.
    pub const ALT: u16 = 1;
    /// Has a speed.
    pub const SPEED: u16 = 2;
    /// Has a course.
    pub const COURSE: u16 = 4;
    /// Has an HDOP.
    pub const HDOP: u16 = 8;
    /// Has a satellite count.
    pub const SATS: u16 = 16;
    /// A 3D fix (common, so it keeps the usual flags within one varint byte).
    pub const MODE_3D: u16 = 32;
    /// A 2D fix.
    pub const MODE_2D: u16 = 64;
    /// Has an accuracy.
    pub const ACCURACY: u16 = 128;
    /// A historic position.
    pub const HISTORIC: u16 = 256;
    /// Not a position: the record is the next entry of `others`, alone.
    pub const OTHER: u16 = 512;
    /// Every bit this version defines.
    pub const KNOWN: u16 = 1023;
}

/// The optional fields, their flag and column, in column order.
const OPTIONAL: [(u16, Field); 6] = [
    (flag::ALT, Field::Alt),
    (flag::SPEED, Field::Speed),
    (flag::COURSE, Field::Course),
    (flag::HDOP, Field::Hdop),
    (flag::SATS, Field::Sats),
    (flag::ACCURACY, Field::Accuracy),
];

/// Number of predicted value columns (one per [`Field`]).
const FIELDS: usize = 9;

/// Events that are not positions: rare, so each goes whole, in one column.
/// New variants go at the end, so the numbers of the old ones never change.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Other {
    /// A [`Status`] change, time in milliseconds since the epoch.
    Status { online: bool, time: i64 },
    /// A [`Geofence`] event.
    Geofence(WireGeofence),
}

/// A geofence event in the units of positions, whole (not predicted: such
/// events are rare): times in ms since the epoch, degrees in 1e-7°, speeds
/// in 0.01 m/s, the crossing as its [`Crossing::code`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireGeofence {
    fence: String,
    crossing: u8,
    time: i64,
    lat: i64,
    lon: i64,
    speed: Option<u32>,
    limit: Option<u32>,
    since: Option<i64>,
    historic: bool,
}

impl WireGeofence {
    /// The event as wire integers (of an event [`check_geofence`] takes).
    fn new(g: &Geofence) -> Self {
        Self {
            fence: g.fence.as_str().to_owned(),
            crossing: g.crossing.code(),
            time: g.time.timestamp_millis(),
            lat: quantise::lat(g.lat),
            lon: quantise::lon(g.lon),
            speed: g.speed.map(quantise::speed),
            limit: g.limit.map(quantise::speed),
            since: g.since.map(|t| t.timestamp_millis()),
            historic: g.historic,
        }
    }

    /// The event these integers stand for; names what is out of range or
    /// undefined.
    fn to_geofence(&self, device: DeviceId) -> Result<Geofence, String> {
        let speed = |v: u32| f64::from(v) / quantise::SPEED_PER_MPS;
        let time = |ms: i64| quantise::time(ms).ok_or("geofence time out of range");
        let g = Geofence {
            device,
            fence: FenceId::new(&self.fence).map_err(|e| format!("fence {:?}: {e}", self.fence))?,
            crossing: Crossing::from_code(self.crossing)
                .ok_or_else(|| format!("crossing code {} undefined", self.crossing))?,
            time: time(self.time)?,
            lat: quantise::degrees(self.lat, quantise::LAT_MAX)
                .ok_or("geofence lat out of range")?,
            lon: quantise::degrees(self.lon, quantise::LON_MAX)
                .ok_or("geofence lon out of range")?,
            speed: self.speed.map(speed),
            limit: self.limit.map(speed),
            since: self.since.map(time).transpose()?,
            historic: self.historic,
        };
        // Every value is within the wire's range by now. Plausibility is
        // not checked: that is the gateway's intake's business, and a
        // receiver must not refuse a whole batch over a value an older
        // gateway let through.
        Ok(g)
    }
}

/// The name of the first value of a geofence event the wire cannot carry.
pub(super) fn check_geofence(g: &Geofence) -> Result<(), &'static str> {
    quantise::WireFix::try_from_fix(&crate::fix::Fix::new(g.time, g.lat, g.lon))?;
    let speed = |v: Option<f64>, name| match v {
        Some(v) if quantise::try_speed(v).is_none() => Err(name),
        _ => Ok(()),
    };
    speed(g.speed, "speed")?;
    speed(g.limit, "limit")
}

impl Other {
    /// The event of a record flagged [`flag::OTHER`], of `device`.
    fn to_event(&self, device: DeviceId) -> Result<Event, String> {
        Ok(match self {
            Self::Status { online, time } => Event::Status(Status {
                device,
                status: if *online {
                    Presence::Online
                } else {
                    Presence::Offline
                },
                time: quantise::time(*time).ok_or("status time out of range")?,
            }),
            Self::Geofence(g) => Event::Geofence(g.to_geofence(device)?),
        })
    }
}

/// The body as written, field by field in wire order.
#[derive(Debug, Default)]
struct Columns<'a> {
    /// Device ids in order of first appearance; records refer to them by index.
    devices: Vec<&'a str>,
    /// Per record: index into `devices`.
    device: Vec<u32>,
    /// Per record: its seq minus the previous record's (the first: minus `first_seq`).
    seq: Vec<u64>,
    /// Per record: [`flag`] bits.
    flags: Vec<u16>,
    /// Version 2: per predicted field, in [`Field`] order, the grid its
    /// values travel in.
    units: [Unit; FIELDS],
    /// Per predicted field, in [`Field`] order: residuals of the records
    /// that have the field (version 2: in grid steps).
    values: [Vec<i64>; FIELDS],
    /// Version 2: the values a grid does not give exactly, as (field,
    /// index in its column, what to add), in increasing (field, index).
    fixes: Vec<(u8, u64, i64)>,
    /// Per record flagged [`flag::OTHER`]: the event.
    others: Vec<Other>,
}

impl Columns<'_> {
    /// The columns in wire order, as postcard writes them.
    fn serialise(&self, version: u8) -> Vec<u8> {
        let head = (&self.devices, &self.device, &self.seq, &self.flags);
        // Vectors of integers and strings always serialise.
        let result = if version == 1 {
            postcard::to_stdvec(&(head, &self.values, &self.others))
        } else {
            postcard::to_stdvec(&(
                head,
                &self.units[..],
                &self.values,
                &self.fixes,
                &self.others,
            ))
        };
        result.unwrap_or_default()
    }
}

/// Serialises records (in increasing seq, from `first_seq` on) as a body of
/// format `version` (1 or 2).
pub fn write(records: &[Record], first_seq: u64, version: u8) -> Vec<u8> {
    let mut cols = Columns::default();
    let fixes: Vec<Option<WireFix>> = records
        .iter()
        .map(|r| match &r.event {
            Event::Position(p) => Some(WireFix::from_fix(&p.fix)),
            _ => None,
        })
        .collect();
    if version >= 2 {
        cols.units = choose_units(fixes.iter().flatten());
    }
    let mut index: HashMap<&str, u32> = HashMap::new();
    let mut predictor = Predictor::default();
    let mut counts = [0u64; FIELDS];
    let mut previous = first_seq;
    for (record, q) in records.iter().zip(&fixes) {
        let id = record.event.device().as_str();
        let next = index.len() as u32;
        let device = *index.entry(id).or_insert_with(|| {
            cols.devices.push(id);
            next
        });
        cols.device.push(device);
        cols.seq.push(record.seq.wrapping_sub(previous));
        previous = record.seq;
        let flags = match (&record.event, q) {
            (Event::Position(p), Some(q)) => {
                let mut push = |field: Field, value: i64| {
                    let f = field as usize;
                    let (steps, fix) = cols.units[f].steps(value);
                    if fix != 0 {
                        cols.fixes.push((f as u8, counts[f], fix));
                    }
                    counts[f] += 1;
                    let residual = predictor.residual(device as usize, field, steps);
                    cols.values[f].push(residual);
                };
                position_flags(q, p.historic, &mut push)
            }
            (Event::Status(s), _) => {
                cols.others.push(Other::Status {
                    online: s.status == Presence::Online,
                    time: s.time.timestamp_millis(),
                });
                flag::OTHER
            }
            (Event::Geofence(g), _) => {
                cols.others.push(Other::Geofence(WireGeofence::new(g)));
                flag::OTHER
            }
            (Event::Position(_), None) => unreachable!("every position was quantised"),
        };
        cols.flags.push(flags);
    }
    // Fixes were pushed in record order; the wire lists them by field.
    cols.fixes.sort_unstable();
    cols.serialise(version)
}

/// Each field's unit for a batch of these fixes.
fn choose_units<'a>(fixes: impl Iterator<Item = &'a WireFix> + Clone) -> [Unit; FIELDS] {
    let mut chosen = [units::NATIVE; FIELDS];
    for (f, field) in ALL_FIELDS.into_iter().enumerate() {
        let values: Vec<i64> = fixes.clone().filter_map(|q| value_of(q, field)).collect();
        chosen[f] = units::choose(field, &values);
    }
    chosen
}

/// Feeds a position's values to `push`, field by field in column order;
/// returns its flags.
fn position_flags(q: &WireFix, historic: bool, push: &mut impl FnMut(Field, i64)) -> u16 {
    let mut flags = match q.mode {
        Some(FixMode::ThreeD) => flag::MODE_3D,
        Some(FixMode::TwoD) => flag::MODE_2D,
        None => 0,
    };
    if historic {
        flags |= flag::HISTORIC;
    }
    push(Field::Time, q.time);
    push(Field::Lat, q.lat);
    push(Field::Lon, q.lon);
    for (bit, field) in OPTIONAL {
        if let Some(value) = optional(q, field) {
            flags |= bit;
            push(field, value);
        }
    }
    flags
}

/// Every predicted field, in column order.
const ALL_FIELDS: [Field; FIELDS] = [
    Field::Time,
    Field::Lat,
    Field::Lon,
    Field::Alt,
    Field::Speed,
    Field::Course,
    Field::Hdop,
    Field::Sats,
    Field::Accuracy,
];

/// A fix's value of `field`, if it has one.
fn value_of(q: &WireFix, field: Field) -> Option<i64> {
    match field {
        Field::Time => Some(q.time),
        Field::Lat => Some(q.lat),
        Field::Lon => Some(q.lon),
        _ => optional(q, field),
    }
}

fn optional(q: &WireFix, field: Field) -> Option<i64> {
    match field {
        Field::Alt => q.alt,
        Field::Speed => q.speed,
        Field::Course => q.course,
        Field::Hdop => q.hdop,
        Field::Sats => q.sats,
        Field::Accuracy => q.accuracy,
        Field::Time | Field::Lat | Field::Lon => None,
    }
}

fn optional_mut(q: &mut WireFix, field: Field) -> Option<&mut Option<i64>> {
    match field {
        Field::Alt => Some(&mut q.alt),
        Field::Speed => Some(&mut q.speed),
        Field::Course => Some(&mut q.course),
        Field::Hdop => Some(&mut q.hdop),
        Field::Sats => Some(&mut q.sats),
        Field::Accuracy => Some(&mut q.accuracy),
        Field::Time | Field::Lat | Field::Lon => None,
    }
}

/// The names of the value columns, for errors.
const FIELD_NAMES: [&str; FIELDS] = [
    "time", "lat", "lon", "alt", "speed", "course", "hdop", "sats", "accuracy",
];

/// What the header says the body must hold.
pub struct Expect {
    /// Number of records.
    pub records: usize,
    /// The batch's first sequence number.
    pub first_seq: u64,
    /// The batch's last sequence number.
    pub last_seq: u64,
}

/// A body's columns, read and their counts checked.
struct Parsed {
    devices: Vec<DeviceId>,
    device: Vec<u32>,
    seq: Vec<u64>,
    flags: Vec<u16>,
    units: [Unit; FIELDS],
    values: Vec<std::vec::IntoIter<i64>>,
    /// Per field: (index in its column, what to add), in increasing index.
    fixes: Vec<std::iter::Peekable<std::vec::IntoIter<(u64, i64)>>>,
    others: std::vec::IntoIter<Other>,
}

/// Reads the columns of a body of format `version`, checking each count
/// before reading the column.
fn parse(body: &[u8], n: usize, version: u8) -> Result<Parsed, String> {
    let mut input = body;
    let devices: Vec<String> = column(&mut input, 0..=n, "devices")?;
    let devices = devices
        .iter()
        .map(|d| DeviceId::new(d).map_err(|e| format!("device {d:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let device: Vec<u32> = column(&mut input, n..=n, "device")?;
    let seq: Vec<u64> = column(&mut input, n..=n, "seq")?;
    let flags: Vec<u16> = column(&mut input, n..=n, "flags")?;
    let (counts, others) = counts(&flags)?;
    let mut units = [units::NATIVE; FIELDS];
    if version >= 2 {
        let read: Vec<Unit> = column(&mut input, FIELDS..=FIELDS, "units")?;
        for ((slot, unit), name) in units.iter_mut().zip(read).zip(FIELD_NAMES) {
            let circular = name == "course" && unit != units::NATIVE;
            if !unit.valid() || circular {
                return Err(format!("{name} unit {}/{} invalid", unit.num, unit.den));
            }
            *slot = unit;
        }
    }
    let mut values = Vec::with_capacity(FIELDS);
    for (count, name) in counts.into_iter().zip(FIELD_NAMES) {
        values.push(column::<i64>(&mut input, count..=count, name)?.into_iter());
    }
    let mut fixes = vec![Vec::new(); FIELDS];
    if version >= 2 {
        let total = counts.iter().sum();
        let read: Vec<(u8, u64, i64)> = column(&mut input, 0..=total, "fixes")?;
        let mut previous: Option<(u8, u64)> = None;
        for (field, index, add) in read {
            let count = counts.get(usize::from(field)).copied().unwrap_or(0);
            if previous.is_some_and(|p| p >= (field, index)) || index >= count as u64 {
                return Err(format!("fix of field {field} entry {index} out of order"));
            }
            previous = Some((field, index));
            fixes[usize::from(field)].push((index, add));
        }
    }
    let others: Vec<Other> = column(&mut input, others..=others, "others")?;
    if !input.is_empty() {
        return Err(format!("{} bytes after the last column", input.len()));
    }
    Ok(Parsed {
        devices,
        device,
        seq,
        flags,
        units,
        values,
        fixes: fixes
            .into_iter()
            .map(|f| f.into_iter().peekable())
            .collect(),
        others: others.into_iter(),
    })
}

/// Reads a body of format `version` back into records, checking every
/// count, index, sequence number and value.
pub fn read(body: &[u8], expect: &Expect, version: u8) -> Result<Vec<Record>, String> {
    let mut parsed = parse(body, expect.records, version)?;
    let mut predictor = Predictor::default();
    let mut taken = [0u64; FIELDS];
    let mut previous: Option<u64> = None;
    let mut records = Vec::with_capacity(expect.records);
    for i in 0..expect.records {
        let at = |e: String| format!("record {i}: {e}");
        let (index, delta, flags) = (parsed.device[i], parsed.seq[i], parsed.flags[i]);
        let id = parsed
            .devices
            .get(index as usize)
            .ok_or_else(|| at(format!("device index {index} out of range")))?
            .clone();
        let seq = match previous {
            None => expect.first_seq.checked_add(delta),
            Some(p) if delta > 0 => p.checked_add(delta),
            Some(_) => None,
        }
        .filter(|&s| s <= expect.last_seq)
        .ok_or_else(|| at("seq not increasing within the batch's range".into()))?;
        previous = Some(seq);
        let event = if flags & flag::OTHER != 0 {
            parsed
                .others
                .next()
                .ok_or_else(|| "others column too short".to_owned())
                .and_then(|other| other.to_event(id))
                .map_err(at)?
        } else {
            let mut take = |field: Field| {
                let f = field as usize;
                let name = FIELD_NAMES[f];
                let residual = parsed.values[f]
                    .next()
                    .ok_or_else(|| format!("{name} column too short"))?;
                let steps = predictor
                    .value(index as usize, field, residual)
                    .ok_or_else(|| format!("{name} out of range"))?;
                let add = parsed.fixes[f]
                    .next_if(|&(entry, _)| entry == taken[f])
                    .map_or(0, |(_, add)| add);
                taken[f] += 1;
                parsed.units[f]
                    .value(steps)
                    .and_then(|v| v.checked_add(add))
                    .ok_or_else(|| format!("{name} out of range"))
            };
            Event::Position(position(id, flags, &mut take).map_err(at)?)
        };
        records.push(Record { seq, event });
    }
    Ok(records)
}

/// A position of `device` with these flags, its values from `take`.
fn position(
    device: DeviceId,
    flags: u16,
    take: &mut impl FnMut(Field) -> Result<i64, String>,
) -> Result<Position, String> {
    let mut q = WireFix {
        time: take(Field::Time)?,
        lat: take(Field::Lat)?,
        lon: take(Field::Lon)?,
        alt: None,
        speed: None,
        course: None,
        hdop: None,
        sats: None,
        accuracy: None,
        mode: match flags & (flag::MODE_2D | flag::MODE_3D) {
            flag::MODE_2D => Some(FixMode::TwoD),
            flag::MODE_3D => Some(FixMode::ThreeD),
            _ => None,
        },
    };
    for (bit, field) in OPTIONAL {
        if flags & bit != 0 {
            let value = take(field)?;
            if let Some(slot) = optional_mut(&mut q, field) {
                *slot = Some(value);
            }
        }
    }
    // In range is all a receiver asks (see `WireGeofence::to_geofence`).
    let fix = q.to_fix().map_err(|f| format!("{f} out of range"))?;
    Ok(Position {
        device,
        fix,
        historic: flags & flag::HISTORIC != 0,
    })
}

/// How many entries each value column and `others` must have, from the
/// flags; refuses flags this version does not define.
fn counts(flags: &[u16]) -> Result<([usize; FIELDS], usize), String> {
    let mut counts = [0usize; FIELDS];
    let mut others = 0;
    for (i, &f) in flags.iter().enumerate() {
        if f & !flag::KNOWN != 0
            || f & (flag::MODE_2D | flag::MODE_3D) == flag::MODE_2D | flag::MODE_3D
        {
            return Err(format!("record {i}: flags {f:#x} undefined"));
        }
        if f & flag::OTHER != 0 {
            if f != flag::OTHER {
                return Err(format!("record {i}: flags {f:#x} on a non-position"));
            }
            others += 1;
            continue;
        }
        for field in [Field::Time, Field::Lat, Field::Lon] {
            counts[field as usize] += 1;
        }
        for (bit, field) in OPTIONAL {
            if f & bit != 0 {
                counts[field as usize] += 1;
            }
        }
    }
    Ok((counts, others))
}

/// Reads one column whose count must lie in `expected`, checked before any
/// of it is allocated.
fn column<T: DeserializeOwned>(
    input: &mut &[u8],
    expected: std::ops::RangeInclusive<usize>,
    name: &str,
) -> Result<Vec<T>, String> {
    let (count, _) =
        postcard::take_from_bytes::<u64>(input).map_err(|e| format!("{name} column: {e}"))?;
    if !usize::try_from(count).is_ok_and(|c| expected.contains(&c)) {
        let (min, max) = expected.into_inner();
        let want = if min == max {
            format!("{max}")
        } else {
            format!("{min} to {max}")
        };
        return Err(format!(
            "{name} column has {count} entries, expected {want}"
        ));
    }
    let (values, rest) =
        postcard::take_from_bytes::<Vec<T>>(input).map_err(|e| format!("{name} column: {e}"))?;
    *input = rest;
    Ok(values)
}
