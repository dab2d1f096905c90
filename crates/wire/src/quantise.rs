//! The units of the wire: each fix value as a scaled integer, and back.
//!
//! One place for the scales and ranges, so the encoder, the decoder and
//! `docs/wire-format.md` agree. A value outside a range is never clamped:
//! [`WireFix::try_from_fix`] names it, so that [`crate::Batch::check`]
//! refuses the batch before it is sent, and the decoder refuses it on the way
//! out (only a damaged batch holds one). The gateway never gets that far:
//! what [`crate::fix::Fix::validate`] takes in lies well within these
//! ranges (checked below at compile time), and so does whatever its store
//! can hold.

use chrono::{DateTime, Utc};

use crate::fix::{Fix, FixMode};

/// Units of latitude and longitude per degree (1e-7°, about 1 cm).
pub const PER_DEGREE: f64 = 1e7;
/// Units of altitude per metre (0.1 m).
pub const ALT_PER_METRE: f64 = 10.0;
/// Units of speed per metre per second (0.01 m/s).
pub const SPEED_PER_MPS: f64 = 100.0;
/// Units of course per degree (0.1°).
pub const COURSE_PER_DEGREE: f64 = 10.0;
/// Units of HDOP per unit of HDOP (0.01).
pub const HDOP_SCALE: f64 = 100.0;
/// Units of accuracy per metre (0.1 m).
pub const ACCURACY_PER_METRE: f64 = 10.0;

/// A full turn of course in wire units: courses are kept in `0..COURSE_TURN`.
pub const COURSE_TURN: i64 = 3600;
/// Largest latitude in wire units (90°).
pub const LAT_MAX: i64 = 900_000_000;
/// Largest longitude in wire units (180°).
pub const LON_MAX: i64 = 1_800_000_000;
/// Altitude range in wire units (an `i32` of decimetres, ±214,748 km).
pub const ALT_RANGE: (i64, i64) = (i32::MIN as i64, i32::MAX as i64);
/// Range of speed, HDOP and accuracy in wire units (a `u32`).
pub const UNSIGNED_RANGE: (i64, i64) = (0, u32::MAX as i64);

/// A position's fix as wire integers; `None` is an absent value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireFix {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    pub time: i64,
    /// Latitude, 1e-7°.
    pub lat: i64,
    /// Longitude, 1e-7°.
    pub lon: i64,
    /// Altitude, 0.1 m.
    pub alt: Option<i64>,
    /// Speed over ground, 0.01 m/s.
    pub speed: Option<i64>,
    /// Course over ground, 0.1°, in `0..3600`.
    pub course: Option<i64>,
    /// HDOP, 0.01.
    pub hdop: Option<i64>,
    /// Satellites used.
    pub sats: Option<i64>,
    /// Horizontal accuracy, 0.1 m.
    pub accuracy: Option<i64>,
    /// 2D or 3D, if the source said.
    pub mode: Option<FixMode>,
}

// What the gateway takes in fits the wire: the ranges of `fix::limits`,
// scaled, lie within the wire's (checked when this compiles).
const _: () = {
    use crate::fix::limits;
    assert!(limits::ALT.min * ALT_PER_METRE >= ALT_RANGE.0 as f64);
    assert!(limits::ALT.max * ALT_PER_METRE <= ALT_RANGE.1 as f64);
    assert!(limits::SPEED.min >= 0.0);
    assert!(limits::SPEED.max * SPEED_PER_MPS <= UNSIGNED_RANGE.1 as f64);
    assert!(limits::COURSE.min >= 0.0 && limits::COURSE.max <= 360.0);
    assert!(limits::HDOP.min >= 0.0);
    assert!(limits::HDOP.max * HDOP_SCALE <= UNSIGNED_RANGE.1 as f64);
    assert!(limits::ACCURACY.min >= 0.0);
    assert!(limits::ACCURACY.max * ACCURACY_PER_METRE <= UNSIGNED_RANGE.1 as f64);
    assert!(limits::LAT.max * PER_DEGREE <= LAT_MAX as f64);
    assert!(limits::LON.max * PER_DEGREE <= LON_MAX as f64);
};

/// Rounds to the nearest unit; `None` for a value that is not a number or
/// lies outside `range` once rounded.
fn units(v: f64, per_unit: f64, (min, max): (i64, i64)) -> Option<i64> {
    let u = (v * per_unit).round();
    // Every bound is an integer an f64 holds exactly, so the cast is exact.
    (u.is_finite() && u >= min as f64 && u <= max as f64).then_some(u as i64)
}

/// [`units`] for a value already known to fit. One that does not is a bug
/// of the caller ([`crate::Batch::check`] refuses it): a debug build
/// stops there; a release build clamps, as the wire cannot carry it.
fn scaled(v: f64, per_unit: f64, (min, max): (i64, i64), name: &str) -> i64 {
    units(v, per_unit, (min, max)).unwrap_or_else(|| {
        if cfg!(debug_assertions) {
            panic!("{name} {v} is beyond the wire's range: Batch::check refuses such a batch");
        }
        // `as` saturates at the i64 bounds (NaN becomes 0), so the clamp sees every value.
        ((v * per_unit).round() as i64).clamp(min, max)
    })
}

impl WireFix {
    /// The fix in wire units, or the name of the first value the wire
    /// cannot carry (not a number, or beyond its range once rounded). Time
    /// is truncated to the millisecond, a course of 359.95° or more wraps
    /// to 0.
    pub fn try_from_fix(fix: &Fix) -> Result<Self, &'static str> {
        let optional = |v: Option<f64>, per_unit, range, name| {
            v.map(|v| units(v, per_unit, range).ok_or(name)).transpose()
        };
        Ok(Self {
            time: fix.time.timestamp_millis(),
            lat: units(fix.lat, PER_DEGREE, (-LAT_MAX, LAT_MAX)).ok_or("lat")?,
            lon: units(fix.lon, PER_DEGREE, (-LON_MAX, LON_MAX)).ok_or("lon")?,
            alt: optional(fix.alt, ALT_PER_METRE, ALT_RANGE, "alt")?,
            speed: optional(fix.speed, SPEED_PER_MPS, UNSIGNED_RANGE, "speed")?,
            course: optional(fix.course, COURSE_PER_DEGREE, (0, COURSE_TURN), "course")?
                .map(|c| c % COURSE_TURN),
            hdop: optional(fix.hdop, HDOP_SCALE, UNSIGNED_RANGE, "hdop")?,
            sats: fix.sats.map(i64::from),
            accuracy: optional(fix.accuracy, ACCURACY_PER_METRE, UNSIGNED_RANGE, "accuracy")?,
            mode: fix.mode,
        })
    }

    /// The fix in wire units, for a fix [`Self::try_from_fix`] takes (every
    /// fix of a batch that passed [`crate::Batch::check`]); see
    /// [`scaled`] for one it would not.
    pub fn from_fix(fix: &Fix) -> Self {
        match Self::try_from_fix(fix) {
            Ok(q) => q,
            Err(name) => Self {
                time: fix.time.timestamp_millis(),
                lat: lat(fix.lat),
                lon: lon(fix.lon),
                alt: fix.alt.map(|v| scaled(v, ALT_PER_METRE, ALT_RANGE, name)),
                speed: fix.speed.map(speed).map(i64::from),
                course: fix
                    .course
                    .map(|v| scaled(v, COURSE_PER_DEGREE, (0, COURSE_TURN), name) % COURSE_TURN),
                hdop: fix
                    .hdop
                    .map(|v| scaled(v, HDOP_SCALE, UNSIGNED_RANGE, name)),
                sats: fix.sats.map(i64::from),
                accuracy: fix
                    .accuracy
                    .map(|v| scaled(v, ACCURACY_PER_METRE, UNSIGNED_RANGE, name)),
                mode: fix.mode,
            },
        }
    }

    /// The fix these integers stand for; names the first value out of range.
    pub fn to_fix(self) -> Result<Fix, &'static str> {
        let within = |v: i64, (min, max): (i64, i64), name| {
            if (min..=max).contains(&v) {
                Ok(v)
            } else {
                Err(name)
            }
        };
        let optional = |v: Option<i64>, range, per_unit: f64, name| {
            v.map(|v| within(v, range, name).map(|v| v as f64 / per_unit))
                .transpose()
        };
        Ok(Fix {
            time: time(self.time).ok_or("time")?,
            lat: within(self.lat, (-LAT_MAX, LAT_MAX), "lat")? as f64 / PER_DEGREE,
            lon: within(self.lon, (-LON_MAX, LON_MAX), "lon")? as f64 / PER_DEGREE,
            alt: optional(self.alt, ALT_RANGE, ALT_PER_METRE, "alt")?,
            speed: optional(self.speed, UNSIGNED_RANGE, SPEED_PER_MPS, "speed")?,
            course: optional(
                self.course,
                (0, COURSE_TURN - 1),
                COURSE_PER_DEGREE,
                "course",
            )?,
            hdop: optional(self.hdop, UNSIGNED_RANGE, HDOP_SCALE, "hdop")?,
            sats: self
                .sats
                .map(|v| u8::try_from(v).map_err(|_| "sats"))
                .transpose()?,
            mode: self.mode,
            accuracy: optional(
                self.accuracy,
                UNSIGNED_RANGE,
                ACCURACY_PER_METRE,
                "accuracy",
            )?,
        })
    }
}

/// A latitude in wire units, of a valid fix (see [`scaled`] for others).
pub fn lat(v: f64) -> i64 {
    scaled(v, PER_DEGREE, (-LAT_MAX, LAT_MAX), "lat")
}

/// A longitude in wire units, of a valid fix (see [`scaled`] for others).
pub fn lon(v: f64) -> i64 {
    scaled(v, PER_DEGREE, (-LON_MAX, LON_MAX), "lon")
}

/// Degrees from wire units, if within ±`max` units ([`LAT_MAX`] or [`LON_MAX`]).
pub fn degrees(v: i64, max: i64) -> Option<f64> {
    (-max..=max).contains(&v).then(|| v as f64 / PER_DEGREE)
}

/// A speed in wire units (0.01 m/s), if a `u32` holds it.
pub fn try_speed(v: f64) -> Option<u32> {
    units(v, SPEED_PER_MPS, UNSIGNED_RANGE).and_then(|u| u32::try_from(u).ok())
}

/// A speed in wire units (0.01 m/s), of a valid fix or geofence event (see
/// [`scaled`] for others).
pub fn speed(v: f64) -> u32 {
    u32::try_from(scaled(v, SPEED_PER_MPS, UNSIGNED_RANGE, "speed")).unwrap_or(u32::MAX)
}

/// A time from milliseconds since the epoch, if chrono can represent it.
pub fn time(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(ms)
}
