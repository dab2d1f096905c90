//! One checksummed sentence in, one [`Report`] (what it says about the fix) out.
//!
//! [`classify`] first tries the fast path ([`super::fast`]), which reads the
//! common sentences straight from their bytes when it is sure to read them
//! as the reference reading below does; everything else takes [`reference`].
//!
//! The `nmea` crate (0.7) reads RMC, GGA, GLL, VTG, GSA and ZDA. Where it
//! refuses valid real-world input (leap second `...60`, GLL without time, GGA
//! with an empty quality field, lines over its 102-byte limit, a GSA with more
//! than 18 satellite fields, which would panic inside it) our own field reader
//! below takes over; it follows gpsd's reading of each field. GNS always goes
//! through our reader: the crate keeps at most two of the per-constellation
//! mode characters and hides them behind private fields.
//!
//! Every number is checked here (finite, in range), so an epoch can only be
//! built from values that pass [`crate::fix::Fix::validate`].

use chrono::{Datelike, NaiveDate, NaiveTime, Timelike};
use nmea::sentences as crate_nmea;
use nmea::{NmeaSentence, SentenceType};

use crate::fix::{FixMode, limits};

/// Knots to metres per second (1852 m per nautical mile).
const KNOTS_TO_MPS: f64 = 1852.0 / 3600.0;

/// Milliseconds in a day; a time of day at or past it is inside a leap second.
pub const DAY_MS: u32 = 86_400_000;

/// The sentence types that feed an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Recommended minimum: time, date, position, speed, course, status.
    Rmc,
    /// Fix data: time, position, quality, satellites, HDOP, altitude.
    Gga,
    /// Multi-constellation fix data, like GGA with per-system modes.
    Gns,
    /// Position and time with a status.
    Gll,
    /// Course and speed over ground (no time).
    Vtg,
    /// Fix mode, satellites used and DOPs (no time).
    Gsa,
    /// Time and full date.
    Zda,
}

impl Kind {
    /// How many kinds there are, for per-kind counters.
    pub const COUNT: usize = 7;

    /// A dense index for per-kind counters.
    pub fn index(self) -> usize {
        self as usize
    }

    fn from_type(t: &str) -> Option<Self> {
        Some(match t {
            "RMC" => Self::Rmc,
            "GGA" => Self::Gga,
            "GNS" => Self::Gns,
            "GLL" => Self::Gll,
            "VTG" => Self::Vtg,
            "GSA" => Self::Gsa,
            "ZDA" => Self::Zda,
            _ => return None,
        })
    }
}

/// What a sentence says about whether the receiver has a fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The sentence does not say (VTG).
    Silent,
    /// The receiver reports a fix.
    Fix,
    /// The receiver reports no fix (RMC V, GGA quality 0, GSA mode 1, GLL V, GNS all N).
    NoFix,
}

/// What one fix-relevant sentence says, already in our units and range-checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Which sentence type said it.
    pub kind: Kind,
    /// UTC time of day in milliseconds (`DAY_MS..` during a leap second).
    pub time: Option<u32>,
    /// UTC date (RMC, ZDA).
    pub date: Option<NaiveDate>,
    /// Fix or no fix.
    pub status: Status,
    /// Latitude and longitude in degrees.
    pub position: Option<(f64, f64)>,
    /// Altitude above mean sea level in metres.
    pub alt: Option<f64>,
    /// Speed over ground in m/s.
    pub speed: Option<f64>,
    /// Course over ground in degrees true.
    pub course: Option<f64>,
    /// Horizontal dilution of precision.
    pub hdop: Option<f64>,
    /// Satellites used (GGA/GNS count, or the PRNs listed in a GSA).
    pub sats: Option<u8>,
    /// 2D/3D as GSA states it.
    pub mode: Option<FixMode>,
}

impl Report {
    pub(super) fn new(kind: Kind) -> Self {
        Self {
            kind,
            time: None,
            date: None,
            status: Status::Silent,
            position: None,
            alt: None,
            speed: None,
            course: None,
            hdop: None,
            sats: None,
            mode: None,
        }
    }
}

/// Why a valid sentence is of no use for a fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A standard sentence type we do not use.
    Unused,
    /// A proprietary `$P...` sentence.
    Proprietary,
    /// An encapsulated `!...` sentence (AIS).
    Encapsulated,
    /// An address field we do not recognise.
    Unknown,
}

/// The outcome for one checksummed sentence.
#[derive(Debug, Clone, PartialEq)]
pub enum Classified {
    /// A fix-relevant sentence; `crate_refused` when our own reader had to step in.
    Report {
        /// What it says.
        report: Report,
        /// The `nmea` crate refused it and our field reader read it.
        crate_refused: bool,
    },
    /// Valid, but of no use here.
    Skipped(Skip),
    /// A fix-relevant type whose fields cannot be read.
    Malformed,
}

/// Reads a sentence as framed: from `$`/`!` up to, not including, `*hh`.
pub fn classify(sentence: &str) -> Classified {
    classify_bytes(sentence.as_bytes())
}

/// [`classify`] for the framer's bytes, which only the reference reading
/// needs as text.
pub fn classify_bytes(sentence: &[u8]) -> Classified {
    match super::fast::read(sentence) {
        Some(report) => Classified::Report {
            report,
            crate_refused: false,
        },
        None => match std::str::from_utf8(sentence) {
            Ok(s) => reference(s),
            // The framer passes only printable ASCII.
            Err(_) => Classified::Malformed,
        },
    }
}

/// The reference reading, which the fast path must agree with: the `nmea`
/// crate, and our own field reader where the crate refuses.
pub fn reference(sentence: &str) -> Classified {
    if sentence.starts_with('!') {
        return Classified::Skipped(Skip::Encapsulated);
    }
    let rest = sentence.get(1..).unwrap_or("");
    let (address, data) = rest.split_once(',').unwrap_or((rest, ""));
    if address.starts_with('P') {
        return Classified::Skipped(Skip::Proprietary);
    }
    let (Some(talker), Some(ty)) = (address.get(..2), address.get(2..)) else {
        return Classified::Skipped(Skip::Unknown);
    };
    if ty.len() != 3 || !address.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Classified::Skipped(Skip::Unknown);
    }
    let Some(kind) = Kind::from_type(ty) else {
        return Classified::Skipped(Skip::Unused);
    };
    let from_crate = if kind == Kind::Gns {
        None
    } else {
        via_crate(kind, talker, data)
    };
    let (mut report, crate_refused) = match from_crate {
        Some(report) => (report, false),
        None => match own(kind, data) {
            Some(report) => (report, kind != Kind::Gns),
            None => return Classified::Malformed,
        },
    };
    if let Some(by_position) = gsa_hdop_by_position(kind, data) {
        report.hdop = hdop(by_position);
    }
    Classified::Report {
        report,
        crate_refused,
    }
}

// ---------------------------------------------------------------------------
// The nmea crate's reading.

/// Lets the crate read the sentence; `None` if it refuses.
#[expect(
    clippy::too_many_lines,
    reason = "one arm per sentence type, each guarding a known panic or gap of the nmea crate"
)]
fn via_crate(kind: Kind, talker: &str, data: &str) -> Option<Report> {
    let message_id = match kind {
        Kind::Rmc => SentenceType::RMC,
        Kind::Gga => SentenceType::GGA,
        Kind::Gll => SentenceType::GLL,
        Kind::Vtg => SentenceType::VTG,
        Kind::Gsa => {
            // The crate collects satellite fields into an 18-slot array and
            // panics on the 19th (CH-4701 sends 24).
            if data.split(',').count() > 21 {
                return None;
            }
            SentenceType::GSA
        }
        Kind::Zda => SentenceType::ZDA,
        Kind::Gns => SentenceType::GNS,
    };
    // The framer has already verified the checksum; the per-type parsers do
    // not look at this field.
    let s = NmeaSentence {
        talker_id: talker,
        message_id,
        data,
        checksum: 0,
    };
    let mut r = Report::new(kind);
    // Positions are read by `lat_lon`, not by the crate: the crate takes the
    // first two digits as degrees whatever the field's length, so a
    // latitude of `12300.0,N` (123°) came out as 17° and was accepted.
    let f = Fields::new(data);
    match kind {
        Kind::Rmc => {
            let d = crate_nmea::parse_rmc(s).ok()?;
            r.time = d.fix_time.map(time_of_day);
            r.date = d.fix_date.and_then(two_digit_year_window);
            let not_valid = matches!(d.faa_mode, Some(crate_nmea::FaaMode::DataNotValid));
            r.status = match d.status_of_fix {
                crate_nmea::rmc::RmcStatusOfFix::Invalid => Status::NoFix,
                _ if not_valid => Status::NoFix,
                _ => Status::Fix,
            };
            r.position = lat_lon(f.get(3), f.get(4), f.get(5), f.get(6));
            r.speed = speed_knots(d.speed_over_ground.map(widen));
            r.course = course(d.true_course.map(widen));
        }
        Kind::Gga => {
            let d = crate_nmea::parse_gga(s).ok()?;
            r.time = d.fix_time.map(time_of_day);
            r.status = match d.fix_type {
                Some(crate_nmea::FixType::Invalid) | None => Status::NoFix,
                Some(_) => Status::Fix,
            };
            r.position = lat_lon(f.get(2), f.get(3), f.get(4), f.get(5));
            r.sats = d.fix_satellites.and_then(|n| u8::try_from(n).ok());
            r.hdop = hdop(d.hdop.map(widen));
            r.alt = altitude(d.altitude.map(widen));
        }
        Kind::Gll => {
            let d = crate_nmea::parse_gll(s).ok()?;
            r.time = Some(time_of_day(d.fix_time));
            let not_valid = matches!(d.faa_mode, Some(crate_nmea::FaaMode::DataNotValid));
            r.status = if d.valid && !not_valid {
                Status::Fix
            } else {
                Status::NoFix
            };
            r.position = lat_lon(f.get(1), f.get(2), f.get(3), f.get(4));
        }
        Kind::Vtg => {
            let d = crate_nmea::parse_vtg(s).ok()?;
            // The crate drops the mode indicator (field 9) that says whether
            // the values mean anything.
            if vtg_mode_invalid(data) {
                return Some(r);
            }
            r.course = course(d.true_course.map(widen));
            r.speed = speed_knots(d.speed_over_ground.map(widen));
        }
        Kind::Gsa => {
            let d = crate_nmea::parse_gsa(s).ok()?;
            (r.status, r.mode) = match d.mode2 {
                crate_nmea::gsa::GsaMode2::NoFix => (Status::NoFix, None),
                crate_nmea::gsa::GsaMode2::Fix2D => (Status::Fix, Some(FixMode::TwoD)),
                crate_nmea::gsa::GsaMode2::Fix3D => (Status::Fix, Some(FixMode::ThreeD)),
            };
            r.sats = u8::try_from(d.fix_sats_prn.len()).ok().filter(|&n| n > 0);
            r.hdop = hdop(d.hdop.map(widen));
        }
        Kind::Zda => {
            let d = crate_nmea::parse_zda(s).ok()?;
            // A ZDA with blank fields (no lock yet) says nothing.
            let (Some(t), Some(date)) = (d.utc_time, d.utc_date()) else {
                return None;
            };
            r.time = Some(time_of_day(t));
            r.date = plausible_year(date);
        }
        Kind::Gns => return None,
    }
    Some(r)
}

fn time_of_day(t: NaiveTime) -> u32 {
    // chrono keeps a leap second as nanoseconds >= 1e9 within second 59.
    t.num_seconds_from_midnight() * 1000 + t.nanosecond() / 1_000_000
}

/// The crate holds altitude, speed, course and DOPs as `f32`. Widening through
/// the shortest decimal that round-trips gives back the receiver's own digits
/// (1147.2, not 1147.199951171875), which is what it sent and what JSON shows.
pub(super) fn widen(x: f32) -> f64 {
    use std::fmt::Write;
    let mut buf = StackStr::default();
    if write!(buf, "{x}").is_ok() {
        if let Ok(v) = buf.as_str().parse() {
            return v;
        }
    }
    f64::from(x)
}

/// A tiny fixed buffer so that widening does not allocate.
struct StackStr {
    buf: [u8; 64],
    len: usize,
}

impl Default for StackStr {
    fn default() -> Self {
        Self {
            buf: [0; 64],
            len: 0,
        }
    }
}

impl StackStr {
    fn as_str(&self) -> &str {
        self.buf
            .get(..self.len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

impl std::fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Our own field reader: the fields gpsd reads, as gpsd reads them.

/// The comma-separated fields after the address; missing fields read as empty.
struct Fields<'a> {
    items: [&'a str; MAX_FIELDS],
    len: usize,
}

/// More fields than any fix-relevant sentence has (GSA with 24 PRNs has 30).
const MAX_FIELDS: usize = 40;

impl<'a> Fields<'a> {
    fn new(data: &'a str) -> Self {
        let mut items = [""; MAX_FIELDS];
        let mut len = 0;
        for (slot, f) in items.iter_mut().zip(data.split(',')) {
            *slot = f;
            len += 1;
        }
        Self { items, len }
    }

    /// Field `n`, counting as gpsd does: 1 is the first after the address.
    fn get(&self, n: usize) -> &'a str {
        n.checked_sub(1)
            .and_then(|i| self.items.get(i))
            .copied()
            .unwrap_or("")
    }

    fn first_char(&self, n: usize) -> Option<u8> {
        self.get(n).bytes().next()
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one arm per sentence type, field by field as NMEA 0183 lists them"
)]
fn own(kind: Kind, data: &str) -> Option<Report> {
    let f = Fields::new(data);
    let mut r = Report::new(kind);
    match kind {
        Kind::Rmc => {
            r.time = opt_time(f.get(1))?;
            r.status = match f.first_char(2) {
                Some(b'A' | b'D') if f.first_char(12) != Some(b'N') => Status::Fix,
                _ => Status::NoFix,
            };
            r.position = lat_lon(f.get(3), f.get(4), f.get(5), f.get(6));
            r.speed = speed_knots(parse_f64(f.get(7)));
            r.course = course(parse_f64(f.get(8)));
            r.date = parse_ddmmyy(f.get(9));
        }
        Kind::Gga => {
            r.time = opt_time(f.get(1))?;
            r.position = lat_lon(f.get(2), f.get(3), f.get(4), f.get(5));
            // An empty quality field says nothing good: treat as no fix.
            r.status = match f.get(6).parse::<u8>() {
                Ok(q) if q > 0 => Status::Fix,
                _ => Status::NoFix,
            };
            r.sats = f.get(7).parse().ok();
            r.hdop = hdop(parse_f64(f.get(8)));
            r.alt = altitude(parse_f64(f.get(9)));
        }
        Kind::Gns => {
            r.time = opt_time(f.get(1))?;
            r.position = lat_lon(f.get(2), f.get(3), f.get(4), f.get(5));
            // One mode character per constellation (GPS, GLONASS, Galileo,
            // BeiDou, QZSS, NavIC): a fix if any constellation contributes.
            // `NDD` is a valid GLONASS+Galileo fix, where gpsd, reading only
            // the first character, reports none.
            let modes = f.get(6);
            let any_valid = modes.bytes().any(|m| !matches!(m, b'N' | b'V'));
            // The navigational status (field 13, NMEA 4.1) is not used: Telit
            // and Quectel modules send `V` with every good fix, and gpsd
            // ignores it too.
            r.status = if any_valid {
                Status::Fix
            } else {
                Status::NoFix
            };
            r.sats = f.get(7).parse().ok();
            r.hdop = hdop(parse_f64(f.get(8)));
            r.alt = altitude(parse_f64(f.get(9)));
        }
        Kind::Gll => {
            r.position = lat_lon(f.get(1), f.get(2), f.get(3), f.get(4));
            r.time = opt_time(f.get(5))?;
            r.status = match (f.first_char(6), f.first_char(7)) {
                (Some(b'A'), m) if m != Some(b'N') => Status::Fix,
                _ => Status::NoFix,
            };
        }
        Kind::Vtg => {
            if vtg_mode_invalid(data) {
                return Some(r);
            }
            r.course = course(parse_f64(f.get(1)));
            r.speed = match parse_f64(f.get(5)) {
                Some(knots) => speed_knots(Some(knots)),
                None => speed_mps(parse_f64(f.get(7)).map(|kph| kph / 3.6)),
            };
        }
        Kind::Gsa => {
            (r.status, r.mode) = match f.get(2) {
                "1" => (Status::NoFix, None),
                "2" => (Status::Fix, Some(FixMode::TwoD)),
                "3" => (Status::Fix, Some(FixMode::ThreeD)),
                // Antaris sends E for dead reckoning; gpsd ignores the mode.
                _ => (Status::Silent, None),
            };
            // PRN fields run from 3 until the first field with a decimal
            // point (PDOP); the last three numeric fields before an optional
            // system id are PDOP, HDOP, VDOP.
            let mut used = 0u8;
            let mut n = 3;
            while n <= f.len && !f.get(n).contains('.') {
                if f.get(n).parse::<u16>().is_ok_and(|p| p > 0) {
                    used = used.saturating_add(1);
                }
                n += 1;
            }
            r.sats = Some(used).filter(|&u| u > 0);
            r.hdop = hdop(parse_f64(f.get(n + 1)));
        }
        Kind::Zda => {
            // Blank fields (no lock yet, u-blox ANTARIS) say nothing.
            if (1..=4).any(|n| f.get(n).is_empty()) {
                return Some(r);
            }
            r.time = Some(parse_time(f.get(1))?);
            let day = f.get(2).parse().ok()?;
            let month = f.get(3).parse().ok()?;
            let year = f.get(4).parse().ok()?;
            r.date = plausible_year(NaiveDate::from_ymd_opt(year, month, day)?);
        }
    }
    Some(r)
}

/// VTG field 9 (NMEA 2.3+): `N` not valid, `E` estimated; gpsd drops both.
fn vtg_mode_invalid(data: &str) -> bool {
    matches!(
        data.split(',').nth(8).and_then(|m| m.bytes().next()),
        Some(b'N' | b'E')
    )
}

/// An empty time field is absent; anything else must be a valid time.
fn opt_time(s: &str) -> Option<Option<u32>> {
    if s.is_empty() {
        Some(None)
    } else {
        parse_time(s).map(Some)
    }
}

/// `hhmmss[.sss]`; seconds up to 60 for a leap second; fractions truncated to ms.
pub fn parse_time(s: &str) -> Option<u32> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = whole.as_bytes();
    if digits.len() != 6 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let two = |i: usize| -> Option<u32> {
        let hi = u32::from(*digits.get(i)? - b'0');
        let lo = u32::from(*digits.get(i + 1)? - b'0');
        Some(hi * 10 + lo)
    };
    let (h, m, sec) = (two(0)?, two(2)?, two(4)?);
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut ms = 0;
    for (i, b) in frac.bytes().take(3).enumerate() {
        ms += u32::from(b - b'0') * [100, 10, 1].get(i).copied().unwrap_or(0);
    }
    let t = (h * 3600 + m * 60 + sec) * 1000 + ms;
    // Second 60 exists only at the very end of a day.
    if sec == 60 && (h, m) != (23, 59) {
        return None;
    }
    Some(t)
}

/// `ddmmyy`: years 83-99 are 19xx, 00-68 are 20xx, 69-82 are refused.
fn parse_ddmmyy(s: &str) -> Option<NaiveDate> {
    if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let day = s.get(0..2)?.parse().ok()?;
    let month = s.get(2..4)?.parse().ok()?;
    let yy: i32 = s.get(4..6)?.parse().ok()?;
    let year = if yy < 69 { 2000 + yy } else { 1900 + yy };
    two_digit_year_window(NaiveDate::from_ymd_opt(year, month, day)?)
}

/// A two-digit year is read as 1983-2068: the crate puts 69-82 in 20xx and
/// gpsd puts them in 19xx; neither is a date a working receiver sends (NMEA
/// 0183 dates from 1983), so both readers refuse them and agree on the rest.
pub(super) fn two_digit_year_window(d: NaiveDate) -> Option<NaiveDate> {
    (1983..=2068).contains(&d.year()).then_some(d)
}

/// Dates outside 1980-2200 are corrupt, not history: GPS began in 1980.
fn plausible_year(d: NaiveDate) -> Option<NaiveDate> {
    (1980..=2200).contains(&d.year()).then_some(d)
}

/// `ddmm.mmmm,N,dddmm.mmmm,E` as gpsd decodes it: degrees are the integer part
/// divided by 100, so any number of degree digits works.
fn lat_lon(lat: &str, ns: &str, lon: &str, ew: &str) -> Option<(f64, f64)> {
    let lat = match ns {
        "N" => ddmm(lat)?,
        "S" => -ddmm(lat)?,
        _ => return None,
    };
    let lon = match ew {
        "E" => ddmm(lon)?,
        "W" => -ddmm(lon)?,
        _ => return None,
    };
    position(Some(lat), Some(lon))
}

fn ddmm(s: &str) -> Option<f64> {
    let (int, frac) = s.split_once('.')?;
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: u32 = int.parse().ok()?;
    let minutes = f64::from(whole % 100) + format_frac(frac)?;
    if minutes >= 60.0 {
        return None;
    }
    Some(f64::from(whole / 100) + minutes / 60.0)
}

/// `"1234"` after a decimal point as the fraction 0.1234.
fn format_frac(frac: &str) -> Option<f64> {
    if frac.is_empty() {
        return Some(0.0);
    }
    let mut buf = StackStr::default();
    std::fmt::Write::write_fmt(&mut buf, format_args!("0.{frac}")).ok()?;
    buf.as_str().parse().ok()
}

fn parse_f64(s: &str) -> Option<f64> {
    if s.is_empty() {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

// ---------------------------------------------------------------------------
// Range checks shared by both readers.

pub(super) fn position(lat: Option<f64>, lon: Option<f64>) -> Option<(f64, f64)> {
    let (lat, lon) = (lat?, lon?);
    let ok = lat.is_finite()
        && lon.is_finite()
        && (-90.0..=90.0).contains(&lat)
        && (-180.0..=180.0).contains(&lon);
    ok.then_some((lat, lon))
}

/// An altitude within [`limits::ALT`]: a receiver's garbage altitude is
/// left out of the fix, which keeps its position (as gpsd does).
pub(super) fn altitude(v: Option<f64>) -> Option<f64> {
    v.filter(|v| limits::ALT.contains(*v))
}

pub(super) fn speed_knots(knots: Option<f64>) -> Option<f64> {
    speed_mps(knots.map(|k| k * KNOTS_TO_MPS))
}

fn speed_mps(v: Option<f64>) -> Option<f64> {
    v.filter(|v| limits::SPEED.contains(*v))
}

pub(super) fn course(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite() && (0.0..=360.0).contains(v))
}

/// gpsd's sanity window: 99.99 (BT-451), 99.0 (Jackson Labs) and 0.00
/// (Skytraq) all mean "unknown".
/// The position of a GSA's PDOP field (1-based, after the address) in a
/// sentence of `n` fields whose last is `last`: the DOPs are the last three
/// fields, or the three before NMEA 4.10's system id (a last field without a
/// decimal point, from the 18th on). `None` for fewer than 17 fields, where
/// the position says nothing (gpsd refuses those).
pub(super) fn gsa_pdop_at(n: usize, last: &[u8]) -> Option<usize> {
    if n < 17 {
        return None;
    }
    let system_id = n >= 18 && !last.is_empty() && !last.contains(&b'.');
    Some(if system_id { n - 3 } else { n - 2 })
}

/// A GSA's HDOP read by position, where reading by shape gets it wrong.
///
/// Both the crate and our reader take the PRN list to run up to the first
/// field with a decimal point and read PDOP, HDOP and VDOP from there; an
/// empty PDOP (`...,,1.5,2.5`) then makes the HDOP the PDOP and the VDOP the
/// HDOP. gpsd reads the DOPs by position (fields 15-17), and so do we, from
/// the end of the sentence (the CH-4701 sends 24 PRN fields). `None` where
/// the two readings agree, the sentence is short, or no field has a decimal
/// point (no DOPs at all).
fn gsa_hdop_by_position(kind: Kind, data: &str) -> Option<Option<f64>> {
    if kind != Kind::Gsa {
        return None;
    }
    let n = data.split(',').count();
    let last = data.rsplit(',').next().unwrap_or_default();
    let pdop_at = gsa_pdop_at(n, last.as_bytes())?;
    let by_shape = data
        .split(',')
        .skip(2)
        .position(|f| f.contains('.'))
        .map(|i| i + 3)?;
    if by_shape == pdop_at {
        return None;
    }
    // Field `pdop_at + 1` (1-based) is the HDOP: index `pdop_at` from 0.
    let field = data.split(',').nth(pdop_at).unwrap_or_default();
    Some(field.parse::<f64>().ok())
}

pub(super) fn hdop(v: Option<f64>) -> Option<f64> {
    v.filter(|v| (0.01..=89.99).contains(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(s: &str) -> (Report, bool) {
        match classify(s) {
            Classified::Report {
                report,
                crate_refused,
            } => (report, crate_refused),
            other => panic!("{s}: {other:?}"),
        }
    }

    fn body(s: &str) -> &str {
        s.split('*').next().unwrap()
    }

    #[test]
    fn rmc_via_the_crate() {
        let (r, refused) =
            report("$GNRMC,171926.00,A,4404.14063,N,12118.85478,W,0.117,,180315,,,A");
        assert!(!refused);
        assert_eq!(r.kind, Kind::Rmc);
        assert_eq!(r.time, Some((17 * 3600 + 19 * 60 + 26) * 1000));
        assert_eq!(r.date, NaiveDate::from_ymd_opt(2015, 3, 18));
        assert_eq!(r.status, Status::Fix);
        let (lat, lon) = r.position.unwrap();
        assert!((lat - 44.069010500).abs() < 1e-9);
        assert!((lon + 121.314246333).abs() < 1e-9);
        assert!((r.speed.unwrap() - 0.117 * KNOTS_TO_MPS).abs() < 1e-12);
        assert_eq!(r.course, None);
    }

    #[test]
    fn a_latitude_with_three_degree_digits_is_no_position() {
        // The crate alone read this as 12° + 300′ = 17°.
        for s in [
            "$GPRMC,120000.00,A,12300.00000,N,00507.28400,E,0.0,0.0,231126,,,A",
            "$GPGGA,120000.00,12300.00000,N,00507.28400,E,1,09,0.9,3.0,M,47.0,M,,",
            "$GPGLL,12300.00000,N,00507.28400,E,120000.00,A,A",
            "$GPGGA,120000.00,5265.00000,N,00507.61,E,1,09,0.9,3.0,M,47.0,M,,",
        ] {
            let (r, _) = report(s);
            assert_eq!(r.position, None, "{s}");
        }
    }

    #[test]
    fn gga_altitude_keeps_the_receivers_digits() {
        let (r, _) =
            report("$GNGGA,171926.00,4404.14063,N,12118.85478,W,1,12,0.91,1147.2,M,-21.3,M,,");
        assert_eq!(r.alt, Some(1147.2));
        assert_eq!(r.hdop, Some(0.91));
        assert_eq!(r.sats, Some(12));
        assert_eq!(r.status, Status::Fix);
    }

    /// Both readers must agree wherever the crate reads a sentence at all.
    #[test]
    fn our_reader_agrees_with_the_crate() {
        let lines = [
            "$GNRMC,171926.00,A,4404.14063,N,12118.85478,W,0.117,,180315,,,A*76",
            "$GPRMC,225446.33,A,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E,A*00",
            "$GPRMC,092751.000,V,5321.6802,N,00630.3371,W,0.06,31.66,280511,,,A*00",
            "$GNGGA,171926.00,4404.14063,N,12118.85478,W,1,12,0.91,1147.2,M,-21.3,M,,*44",
            "$GPGGA,193221.00,2037.72792,N,08704.08478,W,1,04,1.7,-30.40,M,-13.9,M,,*7D",
            "$GPGGA,000000.000,,,,,0,00,99.99,,M,,M,,*00",
            "$GNGLL,4404.14066,N,12118.85481,W,171925.00,A,A*66",
            "$GNGLL,,,,,181604.00,V,N*5E",
            "$GPVTG,054.7,T,034.4,M,005.5,N,010.2,K*48",
            "$GNVTG,,T,,M,0.117,N,0.216,K,A*3F",
            "$GPVTG,,T,,M,,N,,K,N*2C",
            "$GNGSA,A,3,01,11,31,14,22,32,04,25,03,,,,1.56,0.91,1.27*15",
            "$GPGSA,A,1,,,,,,,,,,,,,,,*1E",
            "$GPZDA,160012.71,11,03,2004,-1,00*7D",
        ];
        for line in lines {
            let b = body(line);
            let rest = &b[1..];
            let (address, data) = rest.split_once(',').unwrap();
            let kind = Kind::from_type(&address[2..]).unwrap();
            let ours = own(kind, data);
            let theirs = via_crate(kind, &address[..2], data);
            assert!(theirs.is_some(), "crate refused {line}");
            assert_eq!(ours, theirs, "{line}");
        }
    }

    #[test]
    fn crate_refusals_fall_back_to_our_reader() {
        // Leap second.
        let (r, refused) = report("$GPRMC,235960.00,A,4404.14063,N,12118.85478,W,0.1,,311216,,,A");
        assert!(refused);
        assert_eq!(r.time, Some(DAY_MS));
        // GLL without time (Garmin 65).
        let (r, refused) = report("$GPGLL,4916.45,N,12311.12,W,,A");
        assert!(refused);
        assert_eq!(r.time, None);
        assert_eq!(r.status, Status::Fix);
        // GGA with an empty quality field.
        let (r, refused) = report("$GPGGA,123519,4807.038,N,01131.324,E,,08,0.9,545.4,M,46.9,M,,");
        assert!(refused);
        assert_eq!(r.status, Status::NoFix);
        // CH-4701: 24 PRN fields would panic inside the crate.
        let (r, refused) = report("$GPGSA,A,3,27,23,13,07,25,,,,,,,,,,,,,,,,,,,,07.9,06.0,05.2");
        assert!(refused);
        assert_eq!(r.sats, Some(5));
        assert_eq!(r.hdop, Some(6.0));
        assert_eq!(r.mode, Some(FixMode::ThreeD));
        let (r, _) = report("$GPGSA,A,3,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,");
        assert_eq!(r.sats, None);
    }

    #[test]
    fn gns_reads_every_constellation_mode() {
        let (r, refused) =
            report("$GNGNS,120213.000,5957.0062,N,01100.6429,E,NDD,11,1.3,168.9,39.5,,,V");
        assert!(!refused);
        assert_eq!(
            r.status,
            Status::Fix,
            "nav status V is ignored (Telit, Quectel)"
        );
        let (r, _) = report("$GNGNS,120213.000,5957.0062,N,01100.6429,E,NDD,11,1.3,168.9,39.5,,,S");
        assert_eq!(r.status, Status::Fix);
        assert_eq!(r.alt, Some(168.9));
        assert_eq!(r.sats, Some(11));
        let (r, _) = report("$GNGNS,120213.000,5957.0062,N,01100.6429,E,AAAAN,11,1.3,168.9,39.5,,");
        assert_eq!(r.status, Status::Fix);
        let (r, _) = report("$GNGNS,120213.000,,,,,NNNN,00,,,,,");
        assert_eq!(r.status, Status::NoFix);
        assert_eq!(r.position, None);
    }

    #[test]
    fn no_fix_indications() {
        for s in [
            "$GPRMC,092751.000,V,5321.6802,N,00630.3371,W,0.06,31.66,280511,,,A",
            "$GPGGA,092750.000,5321.6802,N,00630.3372,W,0,8,1.03,61.7,M,55.2,M,,",
            "$GPGSA,A,1,,,,,,,,,,,,,,,",
            "$GPGLL,4916.45,N,12311.12,W,225444,V,N",
            "$GNGNS,224749.00,3333.4268304,N,11153.3538273,W,N,19,0.6,406.110,-26.294,6.0,0138,S,",
        ] {
            assert_eq!(report(s).0.status, Status::NoFix, "{s}");
        }
        // VTG with mode N says nothing at all.
        let (r, _) = report("$GPVTG,054.7,T,034.4,M,005.5,N,010.2,K,N");
        assert_eq!((r.speed, r.course, r.status), (None, None, Status::Silent));
    }

    #[test]
    fn classification_of_other_sentences() {
        assert_eq!(
            classify("$GPGSV,3,1,10,66,37,078,27"),
            Classified::Skipped(Skip::Unused)
        );
        assert_eq!(classify("$GNGSV,1,1,00"), Classified::Skipped(Skip::Unused));
        assert_eq!(
            classify("$PGRME,15.0,M,45.0,M,25.0,M"),
            Classified::Skipped(Skip::Proprietary)
        );
        assert_eq!(
            classify("$PUBX,00,1"),
            Classified::Skipped(Skip::Proprietary)
        );
        assert_eq!(
            classify("!AIVDM,1,1,,A,15MgK45P3@G?fl0E`JbR0OwT0@MS,0"),
            Classified::Skipped(Skip::Encapsulated)
        );
        assert_eq!(classify("$STI,1,2"), Classified::Skipped(Skip::Unknown));
        assert_eq!(
            classify("$GPACCURACY,961.2"),
            Classified::Skipped(Skip::Unknown)
        );
        assert_eq!(classify("$"), Classified::Skipped(Skip::Unknown));
        assert_eq!(
            classify("$GPRMC,12x000,A,,,,,,,010120,,,A"),
            Classified::Malformed
        );
        assert_eq!(
            classify("$GPZDA,120000,32,01,2020,,"),
            Classified::Malformed
        );
        // Blank ZDA and a GSA with a dead-reckoning mode say nothing.
        let (r, _) = report("$GPZDA,,,,,,");
        assert_eq!((r.time, r.date, r.status), (None, None, Status::Silent));
        let (r, _) = report("$GPGSA,A,E,01,02,,,,,,,,,,,2.0,1.0,1.7");
        assert_eq!((r.status, r.mode, r.sats), (Status::Silent, None, Some(2)));
        // Any talker: BeiDou, Galileo, QZSS, NavIC.
        for t in ["GN", "GL", "GA", "GB", "BD", "GQ", "GI"] {
            let s = format!("${t}RMC,171926.00,A,4404.14063,N,12118.85478,W,0.117,,180315,,,A");
            assert!(matches!(classify(&s), Classified::Report { .. }), "{t}");
        }
    }

    #[test]
    fn time_parsing() {
        assert_eq!(parse_time("000000"), Some(0));
        assert_eq!(parse_time("235959.999"), Some(DAY_MS - 1));
        assert_eq!(parse_time("235960.5"), Some(DAY_MS + 500));
        assert_eq!(parse_time("120060"), None);
        assert_eq!(parse_time("120000.12345"), Some(43_200_123));
        for bad in [
            "", "12000", "1200000", "240000", "126000", "12000a", "120000.x", "-12000",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn values_out_of_range_are_dropped() {
        let (r, _) = report("$GPRMC,120000,A,9100.00,N,00000.00,E,-1.0,400.0,010120,,,A");
        assert_eq!((r.position, r.speed, r.course), (None, None, None));
        let (r, _) = report("$GPRMC,120000,A,4500.00,N,18100.00,E,nan,inf,010120,,,A");
        assert_eq!((r.position, r.speed, r.course), (None, None, None));
        let (r, _) = report("$GPGGA,120000,4500.00,N,00100.00,E,1,05,99.99,inf,M,,M,,");
        assert_eq!((r.hdop, r.alt), (None, None));
        // Beyond plausibility (fix::limits): an altitude of 200 km, a
        // speed of 10,000 knots; the position stays.
        let (r, _) = report("$GPGGA,120000,4500.00,N,00100.00,E,1,05,1.0,200000.0,M,,M,,");
        assert_eq!((r.position.is_some(), r.alt), (true, None));
        let (r, _) = report("$GPRMC,120000,A,4500.00,N,00100.00,E,10000.0,90.0,010120,,,A");
        assert_eq!((r.position.is_some(), r.speed), (true, None));
    }

    #[test]
    fn widening_keeps_decimal_digits() {
        assert_eq!(widen(1147.2), 1147.2);
        assert_eq!(widen(-30.4), -30.4);
        assert_eq!(widen(0.91), 0.91);
        assert_eq!(
            widen(f32::MAX),
            3.4028235e38,
            "shortest decimal, as for any value"
        );
        assert!(widen(f32::NAN).is_nan());
    }

    #[test]
    fn gsa_dops_are_read_by_position_as_gpsd_reads_them() {
        for (s, hdop, sats) in [
            ("$GPGSA,A,3,01,02,03,04,,,,,,,,,3.0,1.5,2.5", Some(1.5), 4),
            // An empty PDOP: reading from the first decimal point took the
            // VDOP for the HDOP.
            ("$GPGSA,A,3,01,02,03,04,,,,,,,,,,1.5,2.5", Some(1.5), 4),
            ("$GNGSA,A,3,01,02,03,04,,,,,,,,,,1.5,2.5,1", Some(1.5), 4),
            ("$GNGSA,A,3,01,02,03,04,,,,,,,,,3.0,1.5,2.5,1", Some(1.5), 4),
            ("$GPGSA,A,3,01,02,03,04,,,,,,,,,3.0,,2.5", None, 4),
            ("$GPGSA,A,3,01,02,03,04,,,,,,,,,,,2.5", None, 4),
            (
                "$GPGSA,A,3,02,04,06,08,10,12,14,16,18,,,,,0.90,",
                Some(0.9),
                9,
            ),
            // The CH-4701's 24 PRN fields: the DOPs are the last three.
            (
                "$GPGSA,A,3,27,23,13,07,25,,,,,,,,,,,,,,,,,,,,,06.0,05.2",
                Some(6.0),
                5,
            ),
        ] {
            let (r, _) = report(s);
            assert_eq!((r.hdop, r.sats), (hdop, Some(sats)), "{s}");
        }
        assert_eq!(gsa_pdop_at(16, b"1.0"), None, "short: gpsd refuses it");
        assert_eq!(gsa_pdop_at(17, b"2.5"), Some(15));
        assert_eq!(gsa_pdop_at(18, b"1"), Some(15), "NMEA 4.10 system id");
        assert_eq!(gsa_pdop_at(18, b""), Some(16));
    }
}
