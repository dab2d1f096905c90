//! The fast path: RMC, GGA, GLL, VTG, GSA and GNS read straight from the
//! sentence's bytes, without the `nmea` crate's parser combinators, without
//! splitting into a field array and without allocating.
//!
//! [`read`] takes a sentence only when it is sure how the reference reading
//! ([`super::sentence::reference`]: the crate, or our own field reader where
//! the crate refuses) reads it, and then gives exactly the same [`Report`].
//! Anything else (another layout, an odd number format, a leap second, more
//! digits than it can convert exactly) it leaves to the reference, which stays
//! the authority. A differential test runs gpsd's regression logs through both.
//!
//! What "sure" means, field by field:
//!
//! * Numbers must be plain decimals, `-?d+(.d*)?` with at most 15 digits. Such
//!   a number `m / 10^k` converts exactly as `str::parse::<f64>` does: `m` and
//!   `10^k` are exact doubles and one division rounds correctly.
//! * The crate holds altitude, speed, course and DOPs as `f32` and the
//!   reference widens them through their shortest decimal. For a decimal of
//!   at most 6 significant digits that gives back the same digits (`f32`
//!   keeps 6 decimal digits), hence the same `f64`; with more digits the
//!   fast path steps aside.
//! * A sentence must have the fields the crate's grammar requires, and each
//!   field the shape the crate accepts; where the crate would refuse and our
//!   own reader take over, the fast path reads what our reader reads (only
//!   for the GSA with empty DOP fields that u-blox style receivers send) or
//!   steps aside.

use chrono::NaiveDate;

use super::sentence::{self, Kind, Report, Status};
use crate::fix::FixMode;

/// Reads a sentence as framed (from `$` up to, not including, `*hh`) if it is
/// a common fix sentence in a shape the fast path is sure of; `None` leaves it
/// to the reference reading.
pub fn read(sentence: &[u8]) -> Option<Report> {
    let (kind, data) = address(sentence)?;
    let mut f = Fields { rest: Some(data) };
    match kind {
        Kind::Rmc => rmc(&mut f),
        Kind::Gga => gga(&mut f),
        Kind::Gll => gll(&mut f),
        Kind::Vtg => vtg(&mut f),
        Kind::Gsa => gsa(&mut f),
        Kind::Gns => gns(&mut f),
        Kind::Zda => None,
    }
}

/// `$ttTTT,` with a two-character talker and one of the fast path's types.
fn address(s: &[u8]) -> Option<(Kind, &[u8])> {
    let [b'$', t1, t2, a, b, c, b',', data @ ..] = s else {
        return None;
    };
    // `$P...` is proprietary, whatever follows.
    if *t1 == b'P' || !t1.is_ascii_alphanumeric() || !t2.is_ascii_alphanumeric() {
        return None;
    }
    let kind = match [*a, *b, *c] {
        [b'R', b'M', b'C'] => Kind::Rmc,
        [b'G', b'G', b'A'] => Kind::Gga,
        [b'G', b'L', b'L'] => Kind::Gll,
        [b'V', b'T', b'G'] => Kind::Vtg,
        [b'G', b'S', b'A'] => Kind::Gsa,
        [b'G', b'N', b'S'] => Kind::Gns,
        _ => return None,
    };
    Some((kind, data))
}

/// The comma-separated fields of the data, one at a time.
struct Fields<'a> {
    /// What follows the last comma taken; `None` once the last field is out.
    rest: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    /// The next field; `None` past the last one.
    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match rest.iter().position(|&b| b == b',') {
            Some(i) => {
                let (field, tail) = rest.split_at(i);
                self.rest = tail.get(1..);
                Some(field)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }

    /// The next field, empty past the last one (as our own reader reads).
    fn next_or_empty(&mut self) -> &'a [u8] {
        self.next().unwrap_or_default()
    }

    /// Whether another field follows.
    fn more(&self) -> bool {
        self.rest.is_some()
    }
}

// ---------------------------------------------------------------------------
// Sentences.

fn rmc(f: &mut Fields<'_>) -> Option<Report> {
    let mut r = Report::new(Kind::Rmc);
    r.time = crate_time(f.next()?)?;
    let valid = match f.next()? {
        b"A" | b"D" => true,
        b"V" => false,
        _ => return None,
    };
    r.position = crate_lat_lon(f)?;
    r.speed = sentence::speed_knots(narrow(f.next()?)?);
    r.course = sentence::course(narrow(f.next()?)?);
    r.date = rmc_date(f.next()?)?;
    // Magnetic variation: both empty, or a number and its direction.
    match (f.next()?, f.next()?) {
        (b"", b"") => {}
        (var, b"E" | b"W") if !var.is_empty() => {
            decimal(var)?;
        }
        _ => return None,
    }
    // The crate reads one character of the FAA mode and ignores the rest.
    let not_valid = f.next().and_then(|m| m.first()) == Some(&b'N');
    r.status = if valid && !not_valid {
        Status::Fix
    } else {
        Status::NoFix
    };
    Some(r)
}

fn gga(f: &mut Fields<'_>) -> Option<Report> {
    let mut r = Report::new(Kind::Gga);
    r.time = crate_time(f.next()?)?;
    r.position = crate_lat_lon(f)?;
    r.status = match f.next()? {
        b"0" => Status::NoFix,
        [b'1'..=b'8'] => Status::Fix,
        _ => return None,
    };
    r.sats = match f.next()? {
        b"" => None,
        n => u8::try_from(digits(n, 9)?).ok(),
    };
    r.hdop = sentence::hdop(narrow(f.next()?)?);
    r.alt = sentence::altitude(narrow(f.next()?)?);
    if !matches!(f.next()?, b"" | b"M") {
        return None;
    }
    // The geoid separation must read as a number, and a field must follow.
    optional_decimal(f.next()?)?;
    f.more().then_some(r)
}

fn gll(f: &mut Fields<'_>) -> Option<Report> {
    let mut r = Report::new(Kind::Gll);
    r.position = crate_lat_lon(f)?;
    // The crate requires the time (our own reader does not).
    r.time = Some(crate_time(f.next()?)??);
    let valid = match f.next()? {
        b"A" => true,
        b"V" => false,
        _ => return None,
    };
    let not_valid = match f.next()? {
        // The crate reads the character after the comma: an empty mode must be last.
        b"" if !f.more() => false,
        [m, ..] if is_faa_mode(*m) => *m == b'N',
        _ => return None,
    };
    r.status = if valid && !not_valid {
        Status::Fix
    } else {
        Status::NoFix
    };
    Some(r)
}

fn vtg(f: &mut Fields<'_>) -> Option<Report> {
    let mut r = Report::new(Kind::Vtg);
    let course = narrow(f.next()?)?;
    if !matches!(f.next()?, b"" | b"T") {
        return None;
    }
    optional_decimal(f.next()?)?;
    if !matches!(f.next()?, b"" | b"M") {
        return None;
    }
    let knots = narrow(f.next()?)?;
    if !matches!(f.next()?, b"" | b"N") {
        return None;
    }
    let kph = f.next()?;
    // Where knots are missing the crate and our reader differ on km/h.
    if knots.is_none() && !kph.is_empty() {
        return None;
    }
    f.next();
    // Mode (NMEA 2.3+): N not valid, E estimated; the values mean nothing.
    if matches!(f.next().and_then(|m| m.first()), Some(b'N' | b'E')) {
        return Some(r);
    }
    r.course = sentence::course(course);
    r.speed = sentence::speed_knots(knots);
    Some(r)
}

fn gsa(f: &mut Fields<'_>) -> Option<Report> {
    let mut r = Report::new(Kind::Gsa);
    if !matches!(f.next()?, b"A" | b"M") {
        return None;
    }
    (r.status, r.mode) = match f.next()? {
        b"1" => (Status::NoFix, None),
        b"2" => (Status::Fix, Some(FixMode::TwoD)),
        b"3" => (Status::Fix, Some(FixMode::ThreeD)),
        _ => return None,
    };
    // PRN fields up to the first field with a decimal point (PDOP), as both
    // readers find them; a PRN 0 counts for the crate and not for our reader.
    let (mut fields, mut used) = (2, 0u8);
    let pdop = loop {
        let Some(field) = f.next() else { break None };
        fields += 1;
        if field.contains(&b'.') {
            break Some(field);
        }
        if !field.is_empty() {
            if digits(field, 3)? == 0 {
                return None;
            }
            used += 1;
        }
    };
    r.sats = Some(used).filter(|&u| u > 0);
    let Some(pdop) = pdop else {
        // No DOPs: the crate reads an all-empty tail and refuses the rest; our
        // reader counts the PRNs; both give no HDOP.
        return (fields <= 21).then_some(r);
    };
    decimal(pdop)?;
    let (hdop, vdop) = (f.next(), f.next());
    // The crate panics past 18 PRN fields and so is not asked beyond 21 fields.
    let total = fields
        + usize::from(hdop.is_some())
        + usize::from(vdop.is_some())
        + f.rest.map_or(0, |rest| 1 + count(rest, b','));
    if total > 21 {
        return None;
    }
    // The DOPs by position (see `sentence::gsa_pdop_at`), as the reference
    // reads them where the first decimal point put them elsewhere.
    let last = match f.rest {
        Some(rest) => rest.rsplit(|&b| b == b',').next().unwrap_or(rest),
        None => vdop.or(hdop).unwrap_or(pdop),
    };
    match sentence::gsa_pdop_at(total, last) {
        // An empty PDOP (the simulator's, and SiRF style receivers' GSA):
        // the first decimal point is the HDOP's.
        Some(at) if at + 1 == fields => {
            r.hdop = sentence::hdop(Some(decimal(pdop)?.value));
            return Some(r);
        }
        Some(at) if at != fields => return None,
        _ => {}
    }
    let (hdop, vdop) = (hdop.unwrap_or_default(), vdop.unwrap_or_default());
    optional_decimal(vdop)?;
    r.hdop = sentence::hdop(if hdop.is_empty() || vdop.is_empty() {
        // The crate refuses a missing DOP; our reader reads the field after
        // the PDOP as a double.
        optional_decimal(hdop)?.map(|d| d.value)
    } else {
        narrow(hdop)?
    });
    Some(r)
}

/// GNS is always our own reader's (the crate drops modes): it allows a leap
/// second and missing fields.
fn gns(f: &mut Fields<'_>) -> Option<Report> {
    let mut r = Report::new(Kind::Gns);
    r.time = match f.next_or_empty() {
        b"" => None,
        t => Some(time_ms(t, true)?),
    };
    r.position = lat_lon(
        f.next_or_empty(),
        f.next_or_empty(),
        f.next_or_empty(),
        f.next_or_empty(),
    )?;
    let any_valid = f.next_or_empty().iter().any(|m| !matches!(m, b'N' | b'V'));
    r.status = if any_valid {
        Status::Fix
    } else {
        Status::NoFix
    };
    r.sats = match f.next_or_empty() {
        b"" => None,
        n => u8::try_from(digits(n, 9)?).ok(),
    };
    r.hdop = sentence::hdop(optional_decimal(f.next_or_empty())?.map(|d| d.value));
    r.alt = sentence::altitude(optional_decimal(f.next_or_empty())?.map(|d| d.value));
    Some(r)
}

// ---------------------------------------------------------------------------
// Fields.

/// A time field as the crate reads it: empty, or `hhmmss[.s]` with at most 9
/// fraction digits (which round-trip exactly through its nanoseconds) and no
/// leap second (which the crate refuses).
fn crate_time(field: &[u8]) -> Option<Option<u32>> {
    if field.is_empty() {
        return Some(None);
    }
    if field.len() > 16 {
        return None;
    }
    time_ms(field, false).map(Some)
}

/// `hhmmss[.s]` to milliseconds, fraction truncated, as `sentence::parse_time`.
fn time_ms(field: &[u8], leap_second: bool) -> Option<u32> {
    let [h1, h2, m1, m2, s1, s2, frac @ ..] = field else {
        return None;
    };
    let two = |a: u8, b: u8| -> Option<u32> {
        (a.is_ascii_digit() && b.is_ascii_digit())
            .then(|| u32::from(a - b'0') * 10 + u32::from(b - b'0'))
    };
    let (h, m, s) = (two(*h1, *h2)?, two(*m1, *m2)?, two(*s1, *s2)?);
    let leap = s == 60 && h == 23 && m == 59;
    if h > 23 || m > 59 || (s > 59 && !(leap && leap_second)) {
        return None;
    }
    let mut ms = 0;
    if let [b'.', digits @ ..] = frac {
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut scale = 100;
        for d in digits.iter().take(3) {
            ms += u32::from(d - b'0') * scale;
            scale /= 10;
        }
    } else if !frac.is_empty() {
        return None;
    }
    Some((h * 3600 + m * 60 + s) * 1000 + ms)
}

/// The RMC date as the crate reads it (`ddmmyy`, 83-99 in the 1900s), within
/// the window both readers keep; a date the crate would refuse is not ours.
fn rmc_date(field: &[u8]) -> Option<Option<NaiveDate>> {
    if field.is_empty() {
        return Some(None);
    }
    if field.len() != 6 {
        return None;
    }
    let n = digits(field, 6)?;
    let (day, month, yy) = (n / 10_000, n / 100 % 100, n % 100);
    let year = if yy >= 83 { 1900 + yy } else { 2000 + yy };
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(year).ok()?,
        u32::try_from(month).ok()?,
        u32::try_from(day).ok()?,
    )?;
    Some(sentence::two_digit_year_window(date))
}

/// Latitude and longitude as the crate requires them (all four fields empty,
/// or `ddmm.m`, `N`/`S`, `dddmm.m` with up to 255 degrees, `E`/`W`) and as
/// `sentence::lat_lon` reads them.
fn crate_lat_lon(f: &mut Fields<'_>) -> Option<Option<(f64, f64)>> {
    let (lat, ns, lon, ew) = (f.next()?, f.next()?, f.next()?, f.next()?);
    if is_empty(lat, ns, lon, ew) {
        return Some(None);
    }
    // The crate reads the first two (three) characters as the degrees.
    let [a, b, c, ..] = lon else { return None };
    if digits(&[*a, *b, *c], 3)? > 255 || lat.len() < 3 {
        return None;
    }
    lat_lon(lat, ns, lon, ew)
}

/// `sentence::lat_lon` on bytes: `None` when not sure, `Some(None)` for no position.
fn lat_lon(lat: &[u8], ns: &[u8], lon: &[u8], ew: &[u8]) -> Option<Option<(f64, f64)>> {
    if is_empty(lat, ns, lon, ew) {
        return Some(None);
    }
    let lat = match ns {
        b"N" => ddmm(lat, 2)?,
        b"S" => ddmm(lat, 2)?.map(|v| -v),
        _ => return None,
    };
    let lon = match ew {
        b"E" => ddmm(lon, 3)?,
        b"W" => ddmm(lon, 3)?.map(|v| -v),
        _ => return None,
    };
    Some(sentence::position(lat, lon))
}

fn is_empty(lat: &[u8], ns: &[u8], lon: &[u8], ew: &[u8]) -> bool {
    lat.is_empty() && ns.is_empty() && lon.is_empty() && ew.is_empty()
}

/// `(d)ddmm.m` to degrees as `sentence::ddmm` computes them, bit for bit.
/// At least `degree_digits` digits of degrees and one of minutes' fraction.
fn ddmm(field: &[u8], degree_digits: usize) -> Option<Option<f64>> {
    let (whole, int_digits) = accumulate(0, field);
    let [b'.', frac @ ..] = field.get(int_digits..)? else {
        return None;
    };
    let (fraction, frac_digits) = accumulate(0, frac);
    if int_digits < degree_digits + 2
        || int_digits > 9
        || frac_digits == 0
        || frac_digits > 15
        || frac_digits != frac.len()
    {
        return None;
    }
    let whole = u32::try_from(whole).ok()?;
    let minutes = f64::from(whole % 100) + exact(fraction, frac_digits)?;
    if minutes >= 60.0 {
        return Some(None);
    }
    Some(Some(f64::from(whole / 100) + minutes / 60.0))
}

/// A decimal the crate reads as `f32`, widened as the reference widens it:
/// `None` when not sure, `Some(None)` for an empty field.
fn narrow(field: &[u8]) -> Option<Option<f64>> {
    match optional_decimal(field)? {
        // More than 6 significant digits (leading zeros are not).
        Some(d) if d.mantissa >= 1_000_000 => None,
        d => Some(d.map(|d| d.value)),
    }
}

/// A plain decimal, and its digits without the point as an integer.
#[derive(Debug, Clone, Copy)]
struct Decimal {
    value: f64,
    mantissa: u64,
}

/// `Some(None)` for an empty field, `None` for anything but a plain decimal.
fn optional_decimal(field: &[u8]) -> Option<Option<Decimal>> {
    if field.is_empty() {
        Some(None)
    } else {
        decimal(field).map(Some)
    }
}

/// `-?d+(.d*)?` with at most 15 digits, converted exactly as `str::parse::<f64>`.
fn decimal(field: &[u8]) -> Option<Decimal> {
    let (negative, body) = match field {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, field),
    };
    let (int, int_digits) = accumulate(0, body);
    let (mantissa, frac_digits) = match body.get(int_digits..) {
        Some([]) => (int, 0),
        Some([b'.', frac @ ..]) => {
            let (m, n) = accumulate(int, frac);
            if n != frac.len() {
                return None;
            }
            (m, n)
        }
        _ => return None,
    };
    if int_digits == 0 || int_digits + frac_digits > 15 {
        return None;
    }
    let magnitude = exact(mantissa, frac_digits)?;
    Some(Decimal {
        value: if negative { -magnitude } else { magnitude },
        mantissa,
    })
}

/// Appends the leading digits of `s` to `acc`; returns it and how many
/// digits there were. Past 19 digits the value wraps: callers limit the count.
fn accumulate(acc: u64, s: &[u8]) -> (u64, usize) {
    let mut acc = acc;
    for (i, &b) in s.iter().enumerate() {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return (acc, i);
        }
        acc = acc.wrapping_mul(10).wrapping_add(u64::from(d));
    }
    (acc, s.len())
}

/// `mantissa / 10^scale`, correctly rounded for a mantissa below 2^53.
fn exact(mantissa: u64, scale: usize) -> Option<f64> {
    const POWERS: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    if mantissa >= 1 << 53 {
        return None;
    }
    // Both operands are exact doubles (the mantissa is below 2^53): one
    // division, rounded once.
    let m = mantissa as f64;
    Some(m / POWERS.get(scale)?)
}

/// An all-digit field of at most `max` (up to 19) digits as a number.
fn digits(field: &[u8], max: usize) -> Option<u64> {
    if field.is_empty() || field.len() > max.min(19) {
        return None;
    }
    field.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

fn count(s: &[u8], of: u8) -> usize {
    s.iter().filter(|&&b| b == of).count()
}

/// The FAA mode letters the crate knows.
fn is_faa_mode(m: u8) -> bool {
    matches!(
        m,
        b'A' | b'C' | b'D' | b'E' | b'F' | b'N' | b'P' | b'R' | b'M' | b'S' | b'U'
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use proptest::prelude::*;

    use super::super::framing::{Framed, Framer};
    use super::super::sentence::{Classified, reference, widen};
    use super::*;

    /// Checks that where the fast path reads `s`, the reference reads the
    /// same, bit for bit (Debug prints every f64 so that it parses back
    /// exactly); `true` if the fast path took it.
    fn agrees(s: &str) -> Result<bool, String> {
        let Some(fast) = read(s.as_bytes()) else {
            return Ok(false);
        };
        match reference(s) {
            Classified::Report { report, .. } if format!("{report:?}") == format!("{fast:?}") => {
                Ok(true)
            }
            other => Err(format!(
                "{s}\n  fast:      {fast:?}\n  reference: {other:?}"
            )),
        }
    }

    fn gpsd_logs() -> Option<Vec<PathBuf>> {
        let dir = match std::env::var_os("FIXGATE_GPSD_TESTDATA") {
            Some(d) => PathBuf::from(d),
            None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/nmea/gpsd"),
        };
        let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        Some(logs)
    }

    /// Every checksummed sentence of every gpsd regression log through both
    /// readers. Without the logs (a fresh clone) it says so and passes.
    #[test]
    fn agrees_with_the_reference_on_every_gpsd_log() {
        let Some(logs) = gpsd_logs() else {
            eprintln!("SKIPPED: gpsd test data not found");
            return;
        };
        // Per sentence type: (seen, read by the fast path).
        let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        let mut failures = Vec::new();
        for log in &logs {
            let bytes = std::fs::read(log).unwrap();
            let mut framer = Framer::new(256);
            framer.push(&bytes, &mut |framed| {
                let Framed::Sentence(s) = framed else { return };
                let s = std::str::from_utf8(s).unwrap();
                let ty = s.get(3..6).unwrap_or("").to_owned();
                let entry = seen.entry(ty).or_default();
                entry.0 += 1;
                match agrees(s) {
                    Ok(took) => entry.1 += usize::from(took),
                    Err(e) => failures.push(format!("{}: {e}", log.display())),
                }
            });
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        // The fast path must carry the common sentences, or it is no fast path.
        for ty in ["RMC", "GGA", "GLL", "VTG", "GSA", "GNS"] {
            let (n, fast) = seen.get(ty).copied().unwrap_or_default();
            eprintln!("{ty}: {fast} of {n} on the fast path");
            assert!(n > 0 && fast * 10 >= n * 8, "{ty}: only {fast} of {n}");
        }
    }

    /// The sentences of the reference's own tests, and the awkward cases.
    #[test]
    fn agrees_on_known_sentences() {
        for s in [
            "$GNRMC,171926.00,A,4404.14063,N,12118.85478,W,0.117,,180315,,,A",
            "$GPRMC,225446.33,A,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E,A",
            "$GPRMC,092751.000,V,5321.6802,N,00630.3371,W,0.06,31.66,280511,,,A",
            "$GPRMC,120000.00,A,4404.14063,N,12118.85478,W,0.1,,311216,,,N",
            "$GPRMC,235960.00,A,4404.14063,N,12118.85478,W,0.1,,311216,,,A",
            "$GPRMC,120000,A,12300.00000,N,00507.28400,E,0.0,0.0,231126,,,A",
            "$GPRMC,120000,A,9100.00,N,00000.00,E,-1.0,400.0,010120,,,A",
            "$GNGGA,171926.00,4404.14063,N,12118.85478,W,1,12,0.91,1147.2,M,-21.3,M,,",
            "$GPGGA,193221.00,2037.72792,N,08704.08478,W,1,04,1.7,-30.40,M,-13.9,M,,",
            "$GPGGA,000000.000,,,,,0,00,99.99,,M,,M,,",
            "$GPGGA,123519,4807.038,N,01131.324,E,,08,0.9,545.4,M,46.9,M,,",
            "$GPGGA,120000,4500.00,N,00100.00,E,1,05,1.0,200000.0,M,,M,,",
            "$GPGGA,120000.00,5265.00000,N,00507.61,E,1,09,0.9,3.0,M,47.0,M,,",
            "$GNGLL,4404.14066,N,12118.85481,W,171925.00,A,A",
            "$GNGLL,,,,,181604.00,V,N",
            "$GPGLL,4916.45,N,12311.12,W,,A",
            "$GPGLL,4916.45,N,12311.12,W,225444,A",
            "$GPVTG,054.7,T,034.4,M,005.5,N,010.2,K",
            "$GNVTG,,T,,M,0.117,N,0.216,K,A",
            "$GPVTG,,T,,M,,N,,K,N",
            "$GPVTG,054.7,T,034.4,M,005.5,N,010.2,K,N",
            "$GPVTG,054.7,T,034.4,M,,N,010.2,K,A",
            "$GNGSA,A,3,01,11,31,14,22,32,04,25,03,,,,1.56,0.91,1.27",
            "$GPGSA,A,1,,,,,,,,,,,,,,,",
            "$GPGSA,A,3,02,04,06,08,10,12,14,,,,,,,1.23,",
            "$GPGSA,A,3,27,23,13,07,25,,,,,,,,,,,,,,,,,,,,07.9,06.0,05.2",
            "$GPGSA,A,3,00,04,,,,,,,,,,,2.0,1.0,1.7",
            "$GPGSA,A,E,01,02,,,,,,,,,,,2.0,1.0,1.7",
            "$GNGSA,A,3,01,11,31,14,22,32,04,25,03,,,,1.56,0.91,1.27,1",
            "$GPGSA,A,3,01,02,03,04,,,,,,,,,,1.5,2.5",
            "$GNGSA,A,3,01,02,03,04,,,,,,,,,,1.5,2.5,1",
            "$GPGSA,A,3,01,02,03,04,,,,,,,,,3.0,,2.5",
            "$GNGNS,120213.000,5957.0062,N,01100.6429,E,NDD,11,1.3,168.9,39.5,,,V",
            "$GNGNS,120213.000,,,,,NNNN,00,,,,,",
            "$GNGNS,235960.000,5957.0062,N,01100.6429,E,AN,11,1.3,168.9,39.5,,,V",
            "$GNGNS,224749.00,3333.4268304,N,11153.3538273,W,N,19,0.6,406.110,-26.294,6.0,0138,S,",
        ] {
            if let Err(e) = agrees(s) {
                panic!("{e}");
            }
        }
        // The simulator's epoch, which the footprint bench replays, is all fast.
        for s in [
            "$GPRMC,060000.00,A,5205.44200,N,00507.28400,E,15.552,123.45,231126,,,A",
            "$GPVTG,123.45,T,,M,15.552,N,28.800,K,A",
            "$GPGGA,060000.00,5205.44200,N,00507.28400,E,1,09,0.90,12.3,M,46.0,M,,",
            "$GPGSA,A,3,02,04,06,08,10,12,14,16,18,,,,,0.90,",
            "$GPGLL,5205.44200,N,00507.28400,E,060000.00,A,A",
        ] {
            assert_eq!(agrees(s), Ok(true), "{s}");
        }
    }

    #[test]
    fn decimals_convert_as_the_standard_library_does() {
        for s in [
            "0",
            "-0",
            "5.",
            "0.117",
            "1147.2",
            "-30.40",
            "99.99",
            "123456789012345",
        ] {
            let d = decimal(s.as_bytes()).unwrap();
            assert_eq!(
                d.value.to_bits(),
                s.parse::<f64>().unwrap().to_bits(),
                "{s}"
            );
        }
        for bad in [
            "",
            "-",
            ".5",
            "1.2.3",
            "+1",
            "1e3",
            "nan",
            "inf",
            " 1",
            "1234567890123456",
        ] {
            assert!(decimal(bad.as_bytes()).is_none(), "{bad}");
        }
        assert_eq!(decimal(b"0.0012").unwrap().mantissa, 12);
        assert_eq!(decimal(b"1147.2").unwrap().mantissa, 11472);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Any plain decimal of at most 15 digits converts exactly.
        #[test]
        fn any_decimal_converts_exactly(m in 0u64..1_000_000_000_000_000, scale in 0usize..16, neg: bool) {
            let digits = format!("{m:0>width$}", width = scale + 1);
            let (int, frac) = digits.split_at(digits.len() - scale);
            let s = format!("{}{int}{}{frac}", if neg { "-" } else { "" }, if scale > 0 { "." } else { "" });
            if let Some(d) = decimal(s.as_bytes()) {
                prop_assert_eq!(d.value.to_bits(), s.parse::<f64>().unwrap().to_bits(), "{}", s);
            } else {
                prop_assert!(int.len() + frac.len() > 15, "{}", s);
            }
        }

        /// The claim the fast path rests on: a decimal of at most 6
        /// significant digits read as f32 and widened is the f64 read directly.
        #[test]
        fn six_digits_survive_f32(m in 0u32..1_000_000, scale in 0usize..12, neg: bool) {
            let digits = format!("{m:0>width$}", width = scale + 1);
            let (int, frac) = digits.split_at(digits.len() - scale);
            let s = format!("{}{int}{}{frac}", if neg { "-" } else { "" }, if scale > 0 { "." } else { "" });
            let narrow: f32 = s.parse().unwrap();
            prop_assert_eq!(widen(narrow).to_bits(), s.parse::<f64>().unwrap().to_bits(), "{}", s);
        }

        /// Sentences built from odd and ordinary field values: wherever the
        /// fast path reads one, the reference reads the same.
        #[test]
        fn agrees_on_generated_sentences(s in sentence()) {
            if let Err(e) = agrees(&s) {
                return Err(TestCaseError::fail(e));
            }
        }
    }

    /// Field values per position: (ordinary values, the shapes that trip readers).
    type Pool = Vec<(&'static [&'static str], &'static [&'static str])>;

    #[expect(
        clippy::too_many_lines,
        reason = "one table of field values per sentence type"
    )]
    fn pool(kind: &str) -> Pool {
        const TIME: &[&str] = &[
            "120000",
            "120000.00",
            "235959.999",
            "000000.5",
            "",
            "120000.123456789",
        ];
        const BAD_TIME: &[&str] = &[
            "235960",
            "235960.5",
            "120060",
            "12000",
            "1200000",
            "120000.",
            "120000.1234567891",
            "246000",
            "12x000",
            "-12000",
            "120000.9999999999",
            "120059.9999999999",
        ];
        const LAT: &[&str] = &["4807.038", "0000.000", "8959.99999", "5205.44200"];
        const BAD_LAT: &[&str] = &[
            "807.038",
            "12300.0",
            "4860.000",
            "",
            "48",
            "4807.",
            "4807.0380000000001",
            "48O7.0",
        ];
        const NS: &[&str] = &["N", "S"];
        const BAD_NS: &[&str] = &["", "X", "NN", "n"];
        const LON: &[&str] = &["01131.324", "17959.9999", "00000.0", "00507.28400"];
        const BAD_LON: &[&str] = &[
            "1131.324", "18000.0", "25600.0", "", "011", "25500.00", "18100.5",
        ];
        const EW: &[&str] = &["E", "W"];
        const BAD_EW: &[&str] = &["", "X", "e"];
        const NUM: &[&str] = &[
            "", "0", "0.9", "1.5", "99.99", "1147.2", "-30.40", "0.117", "15.552",
        ];
        const BAD_NUM: &[&str] = &[
            "-0.0",
            "5.",
            ".5",
            "12.3456789",
            "1e3",
            "nan",
            "inf",
            "+1",
            "200000.0",
            "x",
            "0.000001",
            "1234567",
            "-",
            "1.2.3",
            "100000000",
            "16777217",
            "0.30000001",
        ];
        const INT: &[&str] = &["", "0", "08", "12", "00"];
        const BAD_INT: &[&str] = &["256", "+5", "x", "0012", "1234567890", "-1", "1.0"];
        const MODE: &[&str] = &["", "A", "D", "N"];
        const BAD_MODE: &[&str] = &["E", "X", "AN", "NDD", "NNNN", ","];
        const DATE: &[&str] = &["", "180315", "311299", "290224", "010100"];
        const BAD_DATE: &[&str] = &[
            "010170", "310299", "1803", "000000", "320120", "011383", "01x315",
        ];
        const PRN: &[&str] = &["", "", "", "01", "04", "12", "32", "193"];
        const BAD_PRN: &[&str] = &["00", "0", "1234", "x", "1.5", "2", "-1"];
        const ANY: &[&str] = &["", "A", "1", "x"];
        match kind {
            "RMC" => vec![
                (TIME, BAD_TIME),
                (&["A", "V", "D"], &["", "X", "AA"]),
                (LAT, BAD_LAT),
                (NS, BAD_NS),
                (LON, BAD_LON),
                (EW, BAD_EW),
                (NUM, BAD_NUM),
                (NUM, BAD_NUM),
                (DATE, BAD_DATE),
                (&["", "3.1"], BAD_NUM),
                (&["", "E", "W"], BAD_EW),
                (MODE, BAD_MODE),
                (MODE, BAD_MODE),
            ],
            "GGA" => vec![
                (TIME, BAD_TIME),
                (LAT, BAD_LAT),
                (NS, BAD_NS),
                (LON, BAD_LON),
                (EW, BAD_EW),
                (&["0", "1", "2", "6", "8"], &["9", "", "12", "x"]),
                (INT, BAD_INT),
                (NUM, BAD_NUM),
                (NUM, BAD_NUM),
                (&["M", ""], &["F", "MM"]),
                (NUM, BAD_NUM),
                (&["M", ""], ANY),
                (INT, BAD_INT),
                (INT, BAD_INT),
            ],
            "GLL" => vec![
                (LAT, BAD_LAT),
                (NS, BAD_NS),
                (LON, BAD_LON),
                (EW, BAD_EW),
                (TIME, BAD_TIME),
                (&["A", "V"], &["", "X"]),
                (MODE, BAD_MODE),
                (ANY, ANY),
            ],
            "VTG" => vec![
                (NUM, BAD_NUM),
                (&["T", ""], &["X"]),
                (NUM, BAD_NUM),
                (&["M", ""], &["X"]),
                (NUM, BAD_NUM),
                (&["N", ""], &["N5", "X"]),
                (NUM, BAD_NUM),
                (&["K", ""], ANY),
                (MODE, BAD_MODE),
                (ANY, ANY),
            ],
            "GSA" => {
                let mut p: Pool = vec![
                    (&["A", "M"], &["", "X"]),
                    (&["1", "2", "3"], &["E", "", "4"]),
                ];
                p.extend(std::iter::repeat_n((PRN, BAD_PRN), 12));
                p.extend(std::iter::repeat_n((NUM, BAD_NUM), 3));
                p.extend(std::iter::repeat_n((ANY, PRN), 6));
                p
            }
            _ => vec![
                (TIME, BAD_TIME),
                (LAT, BAD_LAT),
                (NS, BAD_NS),
                (LON, BAD_LON),
                (EW, BAD_EW),
                (&["A", "NDD", "NN", "AAAAN", ""], &["x", "V"]),
                (INT, BAD_INT),
                (NUM, BAD_NUM),
                (NUM, BAD_NUM),
                (NUM, BAD_NUM),
                (NUM, BAD_NUM),
                (INT, BAD_INT),
                (&["S", "V", ""], ANY),
            ],
        }
    }

    /// A sentence of one of the fast path's types, any talker, from the pool,
    /// cut after any field.
    fn sentence() -> impl Strategy<Value = String> {
        let kinds = prop::sample::select(vec!["RMC", "GGA", "GLL", "VTG", "GSA", "GNS"]);
        (kinds, prop::sample::select(vec!["GP", "GN", "BD", "GL"])).prop_flat_map(
            |(kind, talker)| {
                // Mostly ordinary values, so that whole sentences reach the fast
                // path, with one odd value in about every tenth field.
                let fields: Vec<_> = pool(kind)
                .into_iter()
                .map(|(good, odd)| {
                    prop_oneof![9 => prop::sample::select(good), 1 => prop::sample::select(odd)]
                })
                .collect();
                let n = fields.len();
                (fields, 0..=n).prop_map(move |(values, keep)| {
                    let mut s = format!("${talker}{kind}");
                    for v in values.iter().take(keep.max(1)) {
                        s.push(',');
                        s.push_str(v);
                    }
                    s
                })
            },
        )
    }
}
