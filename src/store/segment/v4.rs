//! Body V4: the columns of V3 with each number replaced by its error
//! against a guess the decoder can make, laid out in byte planes.
//!
//! Why: in V2 a segment's latitude and longitude took about 2 B/fix each
//! after deflate, since a moving vehicle's delta changes with its speed, and
//! a varint mixes a noisy low byte with near-constant high bits. Here:
//!
//! * **Guesses**, per column, per device, from that device's earlier values
//!   in the same value. Each column says its order (one byte): `0` the value
//!   itself (no guess; a field that jumps about in a narrow range, where a
//!   difference is wider than the value), `1` the device's last value, `2`
//!   its last value plus its last step (a steady rate or velocity is
//!   guessed exactly). The decoder takes any order for any field; the
//!   encoder tries 1 and 2 for time, latitude and longitude and 0 and 1 for
//!   the others, on the column's first 128 values, and keeps the one whose
//!   errors have the least entropy in their low byte plus bits above it, a
//!   cheap stand-in for what deflate makes of them. Course differences are
//!   taken the short way round the circle.
//! * **First values apart**: under orders 1 and 2 a device's first value of a
//!   field in the value is guessed as the latest value of that field there
//!   (any device; a fleet shares a clock and a region), and its error goes
//!   to a column of its own, so that these few large errors do not widen
//!   the rest.
//! * **Byte planes**: errors are zigzagged (0, −1, 1, −2 … → 0, 1, 2, 3 …;
//!   order 0 stores values as they are) and a column is written as its
//!   shape byte, then its whole byte planes — every entry's low byte, then
//!   every entry's second byte, … — then its packed top: the bits above the
//!   whole planes, when there are 4 or fewer, 2, 4 or 8 entries to a byte.
//!   Deflate codes whole bytes (a bit each at best) with one code table for
//!   the segment, so noisy low bytes are best kept apart from the few bits
//!   above them, and those few bits best packed.
//!
//! All arithmetic is wrapping in `i64`, so any stored value (the extremes of
//! `fix::limits` included) comes back exactly; a decoded value that does not
//! fit its field is damage, as are a column of the wrong length, an
//! unknown order or shape, and bytes after the last column.
//!
//! Layout (all of it deflated, behind the layout byte and version 4):
//! postcard `Head` (`devices`, `device`, `present`, `others`, as in V3, gone
//! slots included), then per field in [`Field`] order: the order byte, the
//! column of first values' errors (empty under order 0), the column of the
//! other errors. Lengths are implied: time, lat and lon have one entry per
//! position, the others one per position whose `present` bit says so; the
//! first-value column one per device that has the field in the value. A
//! shape byte holds the number of whole planes (0–8) in its low nibble and
//! the packed top's bits per entry (0, 1, 2 or 4) in its high nibble.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{I32, Other, SegmentError, U16, U32, as_other, decode_other, fit, has, millis};
use crate::fix::{DeviceId, Event, Fix, FixMode, Position};

/// The numeric fields, in the order of their columns.
#[derive(Debug, Clone, Copy)]
enum Field {
    /// ms since the epoch.
    Time,
    /// 1e-7°.
    Lat,
    /// 1e-7°.
    Lon,
    /// 0.1 m.
    Alt,
    /// 0.01 m/s.
    Speed,
    /// 0.1°, 0–3599; errors taken around the circle.
    Course,
    /// 0.01.
    Hdop,
    /// Count.
    Sats,
    /// 0.1 m.
    Accuracy,
}

const FIELDS: usize = 9;

/// Tenths of a degree in a turn.
const TURN: i64 = 3600;

/// How many of a column's values the encoder tries the orders on: the
/// start of a segment tells its fleet's kind of data well enough, and
/// trying all of them cost more than deflating the segment.
const SAMPLE: usize = 128;

impl Field {
    /// The orders the encoder tries: time and position move (a step
    /// guesses them, and a value is never narrower than its difference
    /// from the last); the others are levels, which either stay or jump
    /// about in a narrow range.
    fn candidates(self) -> [Order; 2] {
        match self {
            Self::Time | Self::Lat | Self::Lon => [Order::First, Order::Second],
            _ => [Order::Zero, Order::First],
        }
    }

    /// The field's `present` bit; time, lat and lon are in every position.
    fn bit(self) -> u16 {
        match self {
            Self::Time | Self::Lat | Self::Lon => 0,
            Self::Alt => has::ALT,
            Self::Speed => has::SPEED,
            Self::Course => has::COURSE,
            Self::Hdop => has::HDOP,
            Self::Sats => has::SATS,
            Self::Accuracy => has::ACCURACY,
        }
    }
}

/// What the value holds besides its numbers.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Head {
    devices: Vec<String>,
    device: Vec<u32>,
    present: Vec<u16>,
    others: Vec<Other>,
}

/// One device's history of one field in the value.
#[derive(Debug, Clone, Copy, Default)]
struct Track {
    /// How many values it has seen, up to 2.
    seen: u8,
    last: i64,
    step: i64,
}

/// How a column's values are guessed; the encoder picks per column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Not guessed: the value itself (a field that jumps about within a
    /// narrow range, where a difference is wider than the value).
    Zero = 0,
    /// The device's last value.
    First = 1,
    /// The device's last value plus its last step.
    Second = 2,
}

const ORDERS: [Order; 3] = [Order::Zero, Order::First, Order::Second];

/// The guesses of one column, the same on both sides.
#[derive(Debug)]
struct Guesser {
    order: Order,
    circle: bool,
    tracks: Vec<Track>,
    latest: i64,
}

impl Guesser {
    fn new(order: Order, field: Field, devices: usize) -> Self {
        Self {
            order,
            circle: matches!(field, Field::Course),
            tracks: vec![Track::default(); devices],
            latest: 0,
        }
    }

    fn guess(&self, device: usize) -> i64 {
        let track = self.tracks[device];
        match (self.order, track.seen) {
            (Order::Zero, _) => 0,
            (_, 0) => self.latest,
            (Order::Second, 2) => track.last.wrapping_add(track.step),
            _ => track.last,
        }
    }

    fn saw(&mut self, device: usize, value: i64) {
        let track = &mut self.tracks[device];
        track.step = value.wrapping_sub(track.last);
        track.last = value;
        track.seen = track.seen.saturating_add(1).min(2);
        self.latest = value;
    }

    /// Whether `device`'s next value is its first of the column, guessed
    /// from another device's: such errors are large, and go to a column
    /// of their own so that they do not widen the others.
    fn first(&self, device: usize) -> bool {
        self.order != Order::Zero && self.tracks[device].seen == 0
    }

    /// The error to store for `value` (encoder side).
    fn error(&mut self, device: usize, value: i64) -> u64 {
        let guess = self.guess(device);
        self.saw(device, value);
        match self.order {
            // Unsigned: an unguessed column's values are mostly positive,
            // and zigzag would double them.
            Order::Zero => value as u64,
            // The shorter way round: −1800..1799.
            _ if self.circle => zigzag(
                value
                    .wrapping_sub(guess)
                    .wrapping_add(TURN / 2)
                    .rem_euclid(TURN)
                    - TURN / 2,
            ),
            _ => zigzag(value.wrapping_sub(guess)),
        }
    }

    /// The value a stored error stands for (decoder side).
    fn value(&mut self, device: usize, error: u64) -> i64 {
        let mut value = if self.order == Order::Zero {
            error as i64
        } else {
            self.guess(device).wrapping_add(unzigzag(error))
        };
        if self.circle && self.order != Order::Zero {
            value = value.rem_euclid(TURN);
        }
        self.saw(device, value);
        value
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends the V4 body of `slots` (`None`: a gone slot) to `out`.
pub(super) fn append_body<'a>(
    slots: impl IntoIterator<Item = Option<&'a Event>>,
    out: &mut Vec<u8>,
) {
    let (head, columns) = split(slots);
    // Serialising plain vectors of integers and strings cannot fail.
    if let Ok(bytes) = postcard::to_extend(&head, std::mem::take(out)) {
        *out = bytes;
    }
    let n = head.device.len();
    let (mut firsts, mut errors) = (Vec::with_capacity(n), Vec::with_capacity(n));
    out.reserve(n * 12);
    for (field, column) in FIELD_ORDER.iter().zip(&columns) {
        let order = cheapest_order(
            *field,
            column,
            head.devices.len(),
            (&mut firsts, &mut errors),
        );
        out.push(order as u8);
        put_planes(&firsts, out);
        put_planes(&errors, out);
    }
}

/// The devices of a value by their index in it: a short list searched in
/// turn while a value names few (hashing an id costs more than comparing a
/// few), a map beyond.
#[derive(Default)]
struct DeviceIndex<'a> {
    few: Vec<&'a DeviceId>,
    many: HashMap<&'a DeviceId, u32>,
}

impl<'a> DeviceIndex<'a> {
    const FEW: usize = 16;

    /// `device`'s index, adding it (to `names` too) if it is new.
    fn of(&mut self, device: &'a DeviceId, names: &mut Vec<String>) -> u32 {
        let found = if names.len() <= Self::FEW {
            self.few.iter().position(|d| *d == device).map(|i| i as u32)
        } else {
            self.many.get(device).copied()
        };
        if let Some(i) = found {
            return i;
        }
        let i = names.len() as u32;
        names.push(device.as_str().to_owned());
        if names.len() <= Self::FEW {
            self.few.push(device);
        } else {
            if self.many.is_empty() {
                self.many
                    .extend(self.few.iter().zip(0..).map(|(d, i)| (*d, i)));
            }
            self.many.insert(device, i);
        }
        i
    }
}

/// Each field's values in the value, with their device's index.
type Values = Vec<(u32, i64)>;

/// The head and the quantised values of `slots`.
fn split<'a>(slots: impl IntoIterator<Item = Option<&'a Event>>) -> (Head, [Values; FIELDS]) {
    let slots = slots.into_iter();
    let n = slots.size_hint().0;
    let mut head = Head {
        device: Vec::with_capacity(n),
        present: Vec::with_capacity(n),
        ..Head::default()
    };
    let mut columns: [Values; FIELDS] = std::array::from_fn(|_| Vec::with_capacity(n));
    let mut index = DeviceIndex::default();
    for slot in slots {
        let Some(event) = slot else {
            head.device.push(0);
            head.present.push(has::GONE);
            continue;
        };
        let dev = index.of(event.device(), &mut head.devices);
        head.device.push(dev);
        let present = match event {
            Event::Position(p) => position(p, &mut |field, value| {
                columns[field as usize].push((dev, value));
            }),
            other => {
                head.others.extend(as_other(other));
                has::OTHER
            }
        };
        head.present.push(present);
    }
    (head, columns)
}

/// Fills `errors` (and `firsts`, the errors of each device's first value)
/// with the column's errors under the field's candidate order that makes
/// its first [`SAMPLE`] errors cheapest to store, and returns that order.
/// Cost: the entropy of the errors' low bytes plus the bits above them, a
/// cheap stand-in for what deflate will make of them.
fn cheapest_order(
    field: Field,
    column: &Values,
    devices: usize,
    (firsts, errors): (&mut Vec<u64>, &mut Vec<u64>),
) -> Order {
    let mut best = (f64::INFINITY, Order::First);
    // Cleared bin by bin after each order, so that a short column costs
    // little (a raw value may hold one event).
    let mut histogram = [0u32; 256];
    let mut touched = Vec::with_capacity(column.len().min(256));
    for order in field.candidates() {
        let mut guesser = Guesser::new(order, field, devices);
        let mut high_bits = 0u64;
        for &(dev, value) in column.iter().take(SAMPLE) {
            let first = guesser.first(dev as usize);
            let e = guesser.error(dev as usize, value);
            if first {
                high_bits += u64::from(u64::BITS - e.leading_zeros());
            } else {
                let bin = &mut histogram[(e & 0xff) as usize];
                if *bin == 0 {
                    touched.push((e & 0xff) as usize);
                }
                *bin += 1;
                high_bits += u64::from(u64::BITS - (e >> 8).leading_zeros());
            }
        }
        let n: f64 = touched.iter().map(|&b| f64::from(histogram[b])).sum();
        let mut low = 0.0;
        for b in touched.drain(..) {
            let c = f64::from(std::mem::take(&mut histogram[b]));
            low += c * (n / c).log2();
        }
        let cost = low + high_bits as f64;
        if cost < best.0 {
            best = (cost, order);
        }
    }
    let mut guesser = Guesser::new(best.1, field, devices);
    firsts.clear();
    errors.clear();
    for &(dev, value) in column {
        let first = guesser.first(dev as usize);
        let e = guesser.error(dev as usize, value);
        if first {
            firsts.push(e)
        } else {
            errors.push(e)
        }
    }
    best.1
}

/// Hands a position's quantised fields to `push` in column order; returns
/// its `present` bits.
fn position(position: &Position, push: &mut impl FnMut(Field, i64)) -> u16 {
    let fix = &position.fix;
    push(Field::Time, fix.time.timestamp_millis());
    push(Field::Lat, fit(fix.lat, 1e7, "lat", I32).into());
    push(Field::Lon, fit(fix.lon, 1e7, "lon", I32).into());
    let mut present = 0u16;
    let mut optional = |field: Field, value: Option<i64>| {
        if let Some(v) = value {
            present |= field.bit();
            push(field, v);
        }
    };
    optional(Field::Alt, fix.alt.map(|a| fit(a, 10.0, "alt", I32).into()));
    optional(
        Field::Speed,
        fix.speed.map(|s| fit(s, 100.0, "speed", U32).into()),
    );
    // 360° and 359.95° and up are north: 0.
    optional(
        Field::Course,
        fix.course
            .map(|c| i64::from(fit(c, 10.0, "course", U16) % 3600)),
    );
    optional(
        Field::Hdop,
        fix.hdop.map(|h| fit(h, 100.0, "hdop", U16).into()),
    );
    optional(Field::Sats, fix.sats.map(i64::from));
    optional(
        Field::Accuracy,
        fix.accuracy.map(|a| fit(a, 10.0, "accuracy", U32).into()),
    );
    match fix.mode {
        Some(FixMode::TwoD) => present |= has::MODE_2D,
        Some(FixMode::ThreeD) => present |= has::MODE_3D,
        None => {}
    }
    if position.historic {
        present |= has::HISTORIC;
    }
    present
}

/// A column as its shape byte, its byte planes (every entry's low byte,
/// then every entry's second byte, …) and its packed top: the bits above
/// the whole planes, when they are 4 or fewer, packed 2, 4 or 8 entries to
/// a byte, so that deflate sees fewer, richer bytes (it codes whole bytes,
/// a bit each at best, and finds false matches among few symbols). The
/// shape byte holds the number of planes (0–8) in its low nibble and the
/// bits of the packed top (0, 1, 2 or 4) in its high nibble.
fn put_planes(column: &[u64], out: &mut Vec<u8>) {
    let widest = column.iter().fold(0, |acc, &v| acc | v);
    let bits = u64::BITS - widest.leading_zeros();
    let (planes, top) = match bits % 8 {
        0 => (bits / 8, 0),
        r @ 1..=4 => (bits / 8, r.next_power_of_two()),
        _ => (bits.div_ceil(8), 0),
    };
    out.push((top << 4 | planes) as u8);
    out.reserve(planes as usize * column.len());
    for plane in 0..planes {
        out.extend(column.iter().map(|&v| (v >> (8 * plane)) as u8));
    }
    if let Some(per) = 8u32.checked_div(top) {
        out.extend(column.chunks(per as usize).map(|chunk| {
            chunk.iter().enumerate().fold(0u8, |b, (i, &v)| {
                b | ((v >> (8 * planes)) as u8) << (i as u32 * top)
            })
        }));
    }
}

/// A column being read back: its planes, and the next entry.
struct Planes<'a> {
    planes: Vec<&'a [u8]>,
    /// The packed top, and its bits per entry (0: none).
    top: (&'a [u8], u32),
    at: usize,
}

impl<'a> Planes<'a> {
    /// Splits a column of `len` entries off the front of `body`.
    fn split(body: &mut &'a [u8], len: usize) -> Result<Self, SegmentError> {
        let (&shape, rest) = body
            .split_first()
            .ok_or(SegmentError::Inconsistent("column missing"))?;
        let (planes, top) = (usize::from(shape & 0xf), u32::from(shape >> 4));
        if planes > 8 || !matches!(top, 0 | 1 | 2 | 4) || (planes == 8 && top > 0) {
            return Err(SegmentError::Inconsistent("unknown column shape"));
        }
        let top_bytes = if top == 0 {
            0
        } else {
            len.div_ceil(8 / top as usize)
        };
        let bytes = (planes * len)
            .checked_add(top_bytes)
            .filter(|&n| n <= rest.len())
            .ok_or(SegmentError::Inconsistent("column too short"))?;
        let (column, rest) = rest.split_at(bytes);
        *body = rest;
        let (whole, packed) = column.split_at(planes * len);
        Ok(Self {
            planes: whole.chunks(len.max(1)).collect(),
            top: (packed, top),
            at: 0,
        })
    }

    /// The next entry; called at most `len` times.
    fn next(&mut self) -> u64 {
        let i = self.at;
        self.at += 1;
        let mut v = self
            .planes
            .iter()
            .enumerate()
            .fold(0, |v, (p, plane)| v | u64::from(plane[i]) << (8 * p));
        if let (packed, bits @ 1..) = self.top {
            let per = (8 / bits) as usize;
            let entry = u64::from(packed[i / per] >> ((i % per) as u32 * bits)) & ((1 << bits) - 1);
            v |= entry << (8 * self.planes.len());
        }
        v
    }
}

/// A column being read back: its guesses and its two sets of errors.
struct Column<'a> {
    guesser: Guesser,
    firsts: Planes<'a>,
    errors: Planes<'a>,
}

impl Column<'_> {
    fn value(&mut self, device: usize) -> i64 {
        let error = if self.guesser.first(device) {
            self.firsts.next()
        } else {
            self.errors.next()
        };
        self.guesser.value(device, error)
    }
}

/// Splits the columns off `body`, each checked to hold as many entries as
/// `head` gives it.
fn columns<'a>(head: &Head, mut body: &'a [u8]) -> Result<Vec<Column<'a>>, SegmentError> {
    let devices = head.devices.len();
    // Per field: entries, and devices with at least one.
    let mut counts = [(0usize, 0usize); FIELDS];
    let mut seen = vec![[false; FIELDS]; devices];
    let mut others = 0;
    for (&dev, &present) in head.device.iter().zip(&head.present) {
        if present & has::GONE != 0 {
            continue;
        }
        if present & has::OTHER != 0 {
            others += 1;
            continue;
        }
        let seen = seen
            .get_mut(dev as usize)
            .ok_or(SegmentError::Inconsistent("device index out of range"))?;
        for (field, (count, firsts)) in FIELD_ORDER.iter().zip(&mut counts) {
            let bit = field.bit();
            if bit == 0 || present & bit != 0 {
                *count += 1;
                *firsts += usize::from(!std::mem::replace(&mut seen[*field as usize], true));
            }
        }
    }
    if others != head.others.len() {
        return Err(SegmentError::Inconsistent("column lengths differ"));
    }
    let mut columns = Vec::with_capacity(FIELDS);
    for (&field, &(count, firsts)) in FIELD_ORDER.iter().zip(&counts) {
        let (&order, rest) = body
            .split_first()
            .ok_or(SegmentError::Inconsistent("column missing"))?;
        let order = *ORDERS
            .get(usize::from(order))
            .ok_or(SegmentError::Inconsistent("unknown guess order"))?;
        let firsts = if order == Order::Zero { 0 } else { firsts };
        body = rest;
        columns.push(Column {
            guesser: Guesser::new(order, field, devices),
            firsts: Planes::split(&mut body, firsts)?,
            errors: Planes::split(&mut body, count - firsts)?,
        });
    }
    if !body.is_empty() {
        return Err(SegmentError::Inconsistent("bytes after the last column"));
    }
    Ok(columns)
}

/// Decodes a V4 body into its slots.
pub(super) fn decode_body(body: &[u8]) -> Result<Vec<Option<Event>>, SegmentError> {
    let (head, rest) = postcard::take_from_bytes::<Head>(body)?;
    if head.present.len() != head.device.len() {
        return Err(SegmentError::Inconsistent("column lengths differ"));
    }
    let mut columns = columns(&head, rest)?;
    let devices = head
        .devices
        .iter()
        .map(|d| DeviceId::new(d).map_err(|_| SegmentError::Inconsistent("bad device id")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut next_other = head.others.iter();
    let mut events = Vec::with_capacity(head.device.len());
    for (&dev, &present) in head.device.iter().zip(&head.present) {
        if present & has::GONE != 0 {
            events.push(None);
            continue;
        }
        let dev = dev as usize;
        let device = devices
            .get(dev)
            .ok_or(SegmentError::Inconsistent("device index out of range"))?
            .clone();
        let event = if present & has::OTHER != 0 {
            let other = next_other
                .next()
                .ok_or(SegmentError::Inconsistent("others column too short"))?;
            decode_other(device, other)?
        } else {
            let fix = decode_fix(present, &mut |field| columns[field as usize].value(dev))?;
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

const FIELD_ORDER: [Field; FIELDS] = [
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

/// The next position, its fields read through `take` in column order.
fn decode_fix(present: u16, take: &mut impl FnMut(Field) -> i64) -> Result<Fix, SegmentError> {
    let bad = |what| move |_| SegmentError::Inconsistent(what);
    let time = millis(take(Field::Time))?;
    let lat = i32::try_from(take(Field::Lat)).map_err(bad("lat out of range"))?;
    let lon = i32::try_from(take(Field::Lon)).map_err(bad("lon out of range"))?;
    let mut optional = |field: Field| (present & field.bit() != 0).then(|| take(field));
    let alt = optional(Field::Alt)
        .map(|v| i32::try_from(v).map(|v| f64::from(v) / 10.0))
        .transpose()
        .map_err(bad("alt out of range"))?;
    let speed = optional(Field::Speed)
        .map(|v| u32::try_from(v).map(|v| f64::from(v) / 100.0))
        .transpose()
        .map_err(bad("speed out of range"))?;
    let course = optional(Field::Course)
        .map(|v| u16::try_from(v).map(|v| f64::from(v) / 10.0))
        .transpose()
        .map_err(bad("course out of range"))?;
    let hdop = optional(Field::Hdop)
        .map(|v| u16::try_from(v).map(|v| f64::from(v) / 100.0))
        .transpose()
        .map_err(bad("hdop out of range"))?;
    let sats = optional(Field::Sats)
        .map(u8::try_from)
        .transpose()
        .map_err(bad("sats out of range"))?;
    let accuracy = optional(Field::Accuracy)
        .map(|v| u32::try_from(v).map(|v| f64::from(v) / 10.0))
        .transpose()
        .map_err(bad("accuracy out of range"))?;
    Ok(Fix {
        time,
        lat: f64::from(lat) / 1e7,
        lon: f64::from(lon) / 1e7,
        alt,
        speed,
        course,
        hdop,
        sats,
        mode: if present & has::MODE_3D != 0 {
            Some(FixMode::ThreeD)
        } else if present & has::MODE_2D != 0 {
            Some(FixMode::TwoD)
        } else {
            None
        },
        accuracy,
    })
}
