//! NMEA 0183: sentence framing, checksums and epoch assembly into fixes.
//!
//! Bytes go through three pure stages, none of which does I/O:
//!
//! 1. [`framing`]: arbitrary chunks to checksummed sentences, bounded memory;
//! 2. [`sentence`]: one sentence to a [`sentence::Report`] (a fast path of
//!    our own for the common sentences, which must agree with the reference
//!    reading: the `nmea` crate, with our own field reader where the crate
//!    refuses real-world input);
//! 3. [`epoch`]: reports to one merged epoch per receiver cycle, closed as
//!    soon as the cycle is complete.
//!
//! The [`Decoder`] then dates each epoch and turns it into a [`Fix`].
//!
//! Dating: NMEA times are times of day. The date comes from an RMC or ZDA of
//! the same epoch; failing that, the last known date is carried forward (and
//! advanced when the time of day wraps past midnight); failing that, from a
//! trusted system clock if the caller set one and it agrees with the
//! receiver's time of day to within [`DecoderOptions::max_clock_skew`]. An
//! epoch that cannot be dated is counted in `epochs_undated`, never guessed.

pub mod epoch;
mod fast;
pub mod framing;
mod marks;
pub mod sentence;
pub mod stats;

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeDelta, Utc};

use crate::fix::Fix;
use crate::sources::timing::TimeMark;
use epoch::{Assembler, Epoch};
use framing::{Framed, Framer};
use marks::Marks;
use sentence::{Classified, DAY_MS, Skip};
pub use stats::DecodeStats;

/// Settings of a [`Decoder`].
#[derive(Debug, Clone)]
pub struct DecoderOptions {
    /// Longest line accepted, start character to checksum, in bytes. NMEA
    /// allows 82; real receivers send up to ~120 (GSA with 24 PRNs, long
    /// GNS); anything much longer is two lines run together.
    pub max_line: usize,
    /// How far a trusted clock may be from the receiver's time of day and
    /// still date an epoch that carries no date of its own.
    pub max_clock_skew: Duration,
}

impl Default for DecoderOptions {
    fn default() -> Self {
        Self {
            max_line: 256,
            max_clock_skew: Duration::from_secs(10 * 60),
        }
    }
}

/// What the decoder made of one closed epoch.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A dated fix that passed [`Fix::validate`].
    Fix(Fix),
    /// The receiver had a fix but no date was known: counted, not emitted.
    Undated {
        /// UTC time of day in milliseconds.
        time_of_day: u32,
        /// Latitude and longitude in degrees.
        position: (f64, f64),
    },
    /// The receiver reported no fix (or no usable position) for this epoch.
    NoFix {
        /// UTC time of day in milliseconds.
        time_of_day: u32,
    },
}

/// Turns a byte stream from one NMEA receiver into fixes, one per epoch.
#[derive(Debug)]
pub struct Decoder {
    options: DecoderOptions,
    framer: Framer,
    assembler: Assembler,
    stats: DecodeStats,
    /// The last date known and the time of day it belonged to.
    last_date: Option<(NaiveDate, u32)>,
    clock: Option<DateTime<Utc>>,
    marks: Marks,
}

impl Decoder {
    /// A decoder for one receiver.
    pub fn new(options: DecoderOptions) -> Self {
        Self {
            framer: Framer::new(options.max_line),
            options,
            assembler: Assembler::new(),
            stats: DecodeStats::default(),
            last_date: None,
            clock: None,
            marks: Marks::default(),
        }
    }

    /// Feeds bytes in any chunking; appends the fixes these bytes completed.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Fix>) {
        self.push_outcomes(bytes, &mut |o| {
            if let Outcome::Fix(f) = o {
                out.push(f);
            }
        });
    }

    /// End of input: flushes the pending epoch.
    pub fn finish(&mut self, out: &mut Vec<Fix>) {
        self.finish_outcomes(&mut |o| {
            if let Outcome::Fix(f) = o {
                out.push(f);
            }
        });
    }

    /// Like [`Decoder::push`], but reports every closed epoch, including
    /// those without a fix or without a date (for diagnostics and tests).
    pub fn push_outcomes(&mut self, bytes: &[u8], on: &mut impl FnMut(Outcome)) {
        self.stats.bytes += bytes.len() as u64;
        let (framer, assembler, mut dater) = self.parts();
        framer.push(bytes, &mut |framed| match framed {
            Framed::Rejected(r) => dater.stats.rejected.count(r),
            Framed::Sentence(s) => {
                dater.stats.sentences += 1;
                match sentence::classify_bytes(s) {
                    Classified::Report {
                        report,
                        crate_refused,
                    } => {
                        dater.stats.used += 1;
                        dater.stats.crate_refused += u64::from(crate_refused);
                        if let (Some(marks), Some(t)) = (&mut dater.marks, report.time) {
                            marks.sentence(t);
                        }
                        assembler.push(&report, &mut |e| on(dater.finish_epoch(e)));
                    }
                    Classified::Skipped(skip) => {
                        let s = &mut dater.stats.skipped;
                        *match skip {
                            Skip::Unused => &mut s.unused,
                            Skip::Proprietary => &mut s.proprietary,
                            Skip::Encapsulated => &mut s.encapsulated,
                            Skip::Unknown => &mut s.unknown,
                        } += 1;
                    }
                    Classified::Malformed => dater.stats.rejected.malformed += 1,
                }
            }
        });
    }

    /// Like [`Decoder::finish`], reporting every closed epoch.
    pub fn finish_outcomes(&mut self, on: &mut impl FnMut(Outcome)) {
        let (framer, assembler, mut dater) = self.parts();
        framer.finish(&mut |framed| {
            if let Framed::Rejected(r) = framed {
                dater.stats.rejected.count(r);
            }
        });
        assembler.finish(&mut |e| on(dater.finish_epoch(e)));
        // What the end closed was not read as it came: no time mark.
        if let Some(marks) = dater.marks {
            marks.clear();
        }
    }

    /// The framer, the assembler and the dater, borrowed apart so that the
    /// framer's callback can feed the other two.
    fn parts(&mut self) -> (&mut Framer, &mut Assembler, Dater<'_>) {
        let Self {
            framer,
            assembler,
            stats,
            last_date,
            clock,
            options,
            marks,
        } = self;
        let dater = Dater {
            stats,
            last_date,
            clock: *clock,
            skew: options.max_clock_skew,
            // Out of the way of every sentence unless time marks are wanted.
            marks: marks.wanted().then_some(marks),
        };
        (framer, assembler, dater)
    }

    /// Counters since the decoder was created.
    pub fn stats(&self) -> &DecodeStats {
        &self.stats
    }

    /// The current system time, if the caller trusts it to date epochs from
    /// receivers that send no date (GGA-only); `None` (the default) never
    /// uses the system clock. Call it again as time passes.
    pub fn set_trusted_clock(&mut self, now: Option<DateTime<Utc>>) {
        self.clock = now;
    }

    /// When the bytes of the next pushes were read, for time marks;
    /// `None` (the default) keeps none.
    pub fn set_arrival(&mut self, at: Option<SystemTime>) {
        self.marks.set_arrival(at);
    }

    /// The newest epoch completed since the last call that can tell a
    /// clock the time: a valid fix dated by the receiver, with the arrival
    /// of its first sentence (see [`crate::sources::timing`]). Only while
    /// arrivals are given.
    pub fn take_time_mark(&mut self) -> Option<TimeMark> {
        self.marks.take()
    }
}

/// The dating and fix-building step, borrowing the decoder's parts.
struct Dater<'a> {
    stats: &'a mut DecodeStats,
    last_date: &'a mut Option<(NaiveDate, u32)>,
    clock: Option<DateTime<Utc>>,
    skew: Duration,
    marks: Option<&'a mut Marks>,
}

/// Half a day: a time of day that falls back by more than this crossed midnight.
const HALF_DAY_MS: u32 = DAY_MS / 2;

impl Dater<'_> {
    fn finish_epoch(&mut self, e: Epoch) -> Outcome {
        let date = self.date_for(&e);
        let Some(m) = e.merged.resolved() else {
            self.stats.epochs_without_fix += 1;
            return Outcome::NoFix {
                time_of_day: e.time,
            };
        };
        let Some(position) = m.position else {
            self.stats.epochs_without_fix += 1;
            return Outcome::NoFix {
                time_of_day: e.time,
            };
        };
        let Some(time) = date.and_then(|d| at(d, e.time)) else {
            self.stats.epochs_undated += 1;
            return Outcome::Undated {
                time_of_day: e.time,
                position,
            };
        };
        let fix = Fix {
            time,
            lat: position.0,
            lon: position.1,
            alt: m.alt,
            speed: m.speed,
            course: m.course,
            hdop: m.hdop,
            sats: m.sats,
            mode: m.mode,
            accuracy: None,
        };
        if fix.validate().is_err() {
            // Unreachable with the range checks in `sentence`; kept so that a
            // bad fix can never leave the decoder.
            self.stats.epochs_without_fix += 1;
            return Outcome::NoFix {
                time_of_day: e.time,
            };
        }
        self.stats.fixes += 1;
        if let Some(marks) = &mut self.marks {
            marks.fix(e.time, e.date.is_some(), fix.time);
        }
        Outcome::Fix(fix)
    }

    /// The epoch's own date, else the last one carried forward, else the clock.
    fn date_for(&mut self, e: &Epoch) -> Option<NaiveDate> {
        let date = match (e.date, *self.last_date) {
            (Some(d), _) => Some(d),
            (None, Some((d, last))) => {
                // The time of day fell back by more than half a day: midnight.
                if e.time + HALF_DAY_MS < last {
                    d.checked_add_days(Days::new(1))
                } else {
                    Some(d)
                }
            }
            (None, None) => self.date_from_clock(e.time),
        };
        if let Some(d) = date {
            *self.last_date = Some((d, e.time));
        }
        date
    }

    /// The date on which `time_of_day` is nearest the trusted clock, if near enough.
    fn date_from_clock(&self, time_of_day: u32) -> Option<NaiveDate> {
        let now = self.clock?;
        let skew = TimeDelta::from_std(self.skew).ok()?;
        let today = now.date_naive();
        [today.pred_opt(), Some(today), today.succ_opt()]
            .into_iter()
            .flatten()
            .filter_map(|d| at(d, time_of_day).map(|t| (d, (t - now).abs())))
            .filter(|(_, off)| *off <= skew)
            .min_by_key(|(_, off)| *off)
            .map(|(d, _)| d)
    }
}

/// `date` at `ms` past midnight UTC; a leap second (`ms >= DAY_MS`) is kept
/// as chrono's second 60 of 23:59.
fn at(date: NaiveDate, ms: u32) -> Option<DateTime<Utc>> {
    let time = if ms >= DAY_MS {
        NaiveTime::from_hms_milli_opt(23, 59, 59, 1000 + (ms - DAY_MS))?
    } else {
        NaiveTime::from_num_seconds_from_midnight_opt(ms / 1000, (ms % 1000) * 1_000_000)?
    };
    Some(date.and_time(time).and_utc())
}

/// Decodes an NMEA stream into JSON Lines, one line per fix (for `fixgate nmea`).
///
/// No trusted clock is used: a log may be replayed long after it was
/// recorded, so the system date says nothing about it. Epochs without an
/// RMC/ZDA date before them are counted in `epochs_undated` and not written.
pub fn nmea_to_json_lines(
    mut input: impl std::io::Read,
    out: &mut impl std::io::Write,
) -> std::io::Result<DecodeStats> {
    let mut decoder = Decoder::new(DecoderOptions::default());
    let mut buf = vec![0u8; 64 * 1024];
    let mut fixes = Vec::new();
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        decoder.push(buf.get(..n).unwrap_or(&[]), &mut fixes);
        write_fixes(&mut fixes, out)?;
    }
    decoder.finish(&mut fixes);
    write_fixes(&mut fixes, out)?;
    out.flush()?;
    Ok(*decoder.stats())
}

fn write_fixes(fixes: &mut Vec<Fix>, out: &mut impl std::io::Write) -> std::io::Result<()> {
    for fix in fixes.drain(..) {
        serde_json::to_writer(&mut *out, &fix)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn line(body: &str) -> String {
        let sum = body.bytes().skip(1).fold(0u8, |a, b| a ^ b);
        format!("{body}*{sum:02X}\r\n")
    }

    fn decode(input: &str, chunk: usize) -> (Vec<Fix>, DecodeStats) {
        decode_with_clock(input, chunk, None)
    }

    fn decode_with_clock(
        input: &str,
        chunk: usize,
        clock: Option<DateTime<Utc>>,
    ) -> (Vec<Fix>, DecodeStats) {
        let mut d = Decoder::new(DecoderOptions::default());
        d.set_trusted_clock(clock);
        let mut out = Vec::new();
        for c in input.as_bytes().chunks(chunk.max(1)) {
            d.push(c, &mut out);
        }
        d.finish(&mut out);
        (out, *d.stats())
    }

    fn cycle(hms: &str, date: &str) -> String {
        [
            format!("$GPGGA,{hms}.00,4807.038,N,01131.324,E,1,08,0.9,545.4,M,46.9,M,,"),
            "$GPGSA,A,3,04,05,09,12,,,,,,,,,2.5,1.3,2.1".to_owned(),
            format!("$GPRMC,{hms}.00,A,4807.038,N,01131.324,E,022.4,084.4,{date},,,A"),
        ]
        .iter()
        .map(|l| line(l))
        .collect()
    }

    #[test]
    fn one_fix_per_epoch_in_any_chunking() {
        let input: String = ["235958", "235959", "000000"]
            .iter()
            .map(|t| cycle(t, "311299"))
            .collect::<String>()
            + &line("$GPGGA,000001.00,4807.038,N,01131.324,E,1,08,0.9,545.4,M,46.9,M,,");
        let (whole, stats) = decode(&input, usize::MAX);
        for chunk in [1, 2, 7, 64] {
            assert_eq!(decode(&input, chunk).0, whole, "chunk {chunk}");
        }
        assert_eq!(whole.len(), 4, "{whole:?}");
        assert_eq!(stats.fixes, 4);
        assert_eq!(
            whole[0].time,
            Utc.with_ymd_and_hms(1999, 12, 31, 23, 59, 58).unwrap()
        );
        assert_eq!(whole[0].alt, Some(545.4));
        assert_eq!(whole[0].sats, Some(8));
        assert!((whole[0].speed.unwrap_or(0.0) - 22.4 * 1852.0 / 3600.0).abs() < 1e-9);
        // The last, GGA-only epoch carries the date forward; the RMC of the
        // third epoch still says 31.12. (the receiver's mistake), kept as is.
        assert_eq!(
            whole[3].time,
            Utc.with_ymd_and_hms(1999, 12, 31, 0, 0, 1).unwrap()
        );
    }

    #[test]
    fn carried_date_rolls_over_midnight() {
        let mut input = cycle("235959", "311299");
        for t in ["000000", "000001"] {
            input += &line(&format!(
                "$GPGGA,{t}.00,4807.038,N,01131.324,E,1,08,0.9,545.4,M,46.9,M,,"
            ));
        }
        let (fixes, _) = decode(&input, 5);
        let times: Vec<String> = fixes
            .iter()
            .map(|f| crate::fix::time_ms::format(&f.time))
            .collect();
        assert_eq!(
            times,
            [
                "1999-12-31T23:59:59.000Z",
                "2000-01-01T00:00:00.000Z",
                "2000-01-01T00:00:01.000Z"
            ]
        );
    }

    #[test]
    fn the_fix_is_out_as_soon_as_its_epoch_is_complete() {
        let mut d = Decoder::new(DecoderOptions::default());
        let mut out = Vec::new();
        d.push(cycle("120000", "010120").as_bytes(), &mut out);
        d.push(cycle("120001", "010120").as_bytes(), &mut out);
        assert_eq!(out.len(), 2, "the second epoch closes at its RMC");
    }

    #[test]
    fn gga_only_needs_a_trusted_clock_that_agrees() {
        let gga = |t: &str| {
            line(&format!(
                "$GPGGA,{t}.00,4807.038,N,01131.324,E,1,08,0.9,545.4,M,46.9,M,,"
            ))
        };
        let input = gga("120000") + &gga("120001") + &gga("120002");
        let (fixes, stats) = decode(&input, 3);
        assert!(fixes.is_empty());
        assert_eq!(stats.epochs_undated, 3);

        let clock = |h, m, s| Utc.with_ymd_and_hms(2024, 5, 6, h, m, s).single();
        let (out, _) = decode_with_clock(&input, 64, clock(12, 0, 3));
        assert_eq!(out.len(), 3);
        assert_eq!(
            out[0].time,
            Utc.with_ymd_and_hms(2024, 5, 6, 12, 0, 0).unwrap()
        );

        // A clock just after midnight dates 23:59:59 to the day before.
        let after_midnight = Utc.with_ymd_and_hms(2024, 5, 7, 0, 0, 2).single();
        let (out, _) = decode_with_clock(&gga("235959"), 64, after_midnight);
        assert_eq!(
            out[0].time,
            Utc.with_ymd_and_hms(2024, 5, 6, 23, 59, 59).unwrap()
        );

        // A clock hours away from the receiver's time is not used.
        let (out, stats) = decode_with_clock(&input, 64, clock(18, 0, 0));
        assert!(out.is_empty());
        assert_eq!(stats.epochs_undated, 3);
    }

    #[test]
    fn no_fix_epochs_emit_nothing() {
        let input = line("$GPRMC,120000.00,V,,,,,,,010120,,,N")
            + &line("$GPGGA,120000.00,,,,,0,00,,,M,,M,,")
            + &line("$GPRMC,120001.00,V,,,,,,,010120,,,N");
        let (fixes, stats) = decode(&input, 4);
        assert!(fixes.is_empty());
        assert_eq!(stats.epochs_without_fix, 2);
    }

    #[test]
    fn garbage_is_counted_and_skipped() {
        let mut input = b"\xb5\x62\x01\x07garbage\r\n$GPGGA,bad*00\r\n$PUBX,00*33\r\n".to_vec();
        input.extend_from_slice(line("$GPRMC,12x000,A,,,,,,,010120,,,A").as_bytes());
        input.extend_from_slice(&[b'A'; 1000]);
        input.extend_from_slice(b"\n");
        input.extend_from_slice(cycle("120000", "010120").as_bytes());
        let mut d = Decoder::new(DecoderOptions::default());
        let mut out = Vec::new();
        d.push(&input, &mut out);
        d.finish(&mut out);
        assert_eq!(out.len(), 1);
        let s = d.stats();
        assert_eq!(s.rejected.noise, 2);
        assert_eq!(s.rejected.bad_checksum, 1);
        assert_eq!(s.rejected.malformed, 1);
        assert_eq!(s.skipped.proprietary + s.rejected.bad_checksum, 2);
        assert!(s.rejections().any(|(l, n)| l == "malformed" && n == 1));
        assert_eq!(s.bytes, input.len() as u64);
    }

    #[test]
    fn json_lines() {
        let input = cycle("120000", "010120");
        let mut out = Vec::new();
        let stats = nmea_to_json_lines(input.as_bytes(), &mut out).unwrap();
        assert_eq!(stats.fixes, 1);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(r#"{"time":"2020-01-01T12:00:00.000Z","lat":48.1173"#),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1);
    }
}
