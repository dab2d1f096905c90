//! Time marks: which epochs may tell a clock the time, and when the first
//! sentence carrying their time arrived (see [`crate::sources::timing`]).
//!
//! An epoch qualifies when the receiver reported a valid fix and dated the
//! epoch itself (an RMC or ZDA of the same epoch): a date carried forward
//! or taken from the system clock would make the system clock its own
//! reference. A leap second (23:59:60) gives no mark. The arrival is that of
//! the epoch's *first* time-bearing sentence: later ones of the same cycle
//! only add transmission time.

use std::time::SystemTime;

use chrono::{DateTime, Utc};

use super::sentence::DAY_MS;
use crate::sources::timing::TimeMark;

/// A time of day (ms) and when the first sentence stamped with it arrived.
type Seen = (u32, SystemTime);

/// The decoder's bookkeeping for time marks; idle until arrivals are given.
#[derive(Debug, Default)]
pub(super) struct Marks {
    /// When the bytes being decoded were read; `None` wants no marks.
    arrival: Option<SystemTime>,
    /// The newest time of day seen, and the one before it: an epoch closes
    /// when the next one's first sentence has already arrived.
    current: Option<Seen>,
    previous: Option<Seen>,
    /// The newest qualifying epoch completed and not yet taken.
    ready: Option<TimeMark>,
}

impl Marks {
    /// Bytes decoded from now on arrived at `at`.
    pub(super) fn set_arrival(&mut self, at: Option<SystemTime>) {
        self.arrival = at;
    }

    /// Whether arrivals are given, or something is left to clear.
    pub(super) fn wanted(&self) -> bool {
        self.arrival.is_some() || self.ready.is_some() || self.current.is_some()
    }

    /// A sentence stamped `time_of_day` was decoded.
    pub(super) fn sentence(&mut self, time_of_day: u32) {
        let Some(at) = self.arrival else { return };
        if self.current.is_none_or(|(t, _)| t != time_of_day) {
            self.previous = self.current.replace((time_of_day, at));
        }
    }

    /// An epoch of `time_of_day` became the fix of `utc`; `own_date` when
    /// the epoch's own RMC or ZDA dated it.
    pub(super) fn fix(&mut self, time_of_day: u32, own_date: bool, utc: DateTime<Utc>) {
        if !own_date || time_of_day >= DAY_MS || self.arrival.is_none() {
            return;
        }
        let arrived = [self.current, self.previous]
            .into_iter()
            .flatten()
            .find(|(t, _)| *t == time_of_day)
            .map(|(_, at)| at);
        if let Some(arrived) = arrived {
            // A newer epoch replaces an older one not taken yet: when one read
            // completes two epochs, the older waited in a buffer and its
            // arrival says more about the reader than about the receiver.
            self.ready = Some(TimeMark { utc, arrived });
        }
    }

    /// Takes the newest qualifying epoch completed since the last call.
    pub(super) fn take(&mut self) -> Option<TimeMark> {
        self.ready.take()
    }

    /// End of input: what was pending belongs to a connection that is gone.
    pub(super) fn clear(&mut self) {
        *self = Self {
            arrival: self.arrival,
            ..Self::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use chrono::TimeZone;

    use super::super::{Decoder, DecoderOptions};
    use super::*;

    fn line(body: &str) -> String {
        let sum = body.bytes().skip(1).fold(0u8, |a, b| a ^ b);
        format!("{body}*{sum:02X}\r\n")
    }

    fn gga(hms: &str, quality: u8) -> String {
        line(&format!(
            "$GPGGA,{hms},5205.4400,N,00507.2800,E,{quality},08,0.9,10.0,M,46.0,M,,"
        ))
    }

    fn rmc(hms: &str, status: char, date: &str) -> String {
        line(&format!(
            "$GPRMC,{hms},{status},5205.4400,N,00507.2800,E,0.0,0.0,{date},,,A"
        ))
    }

    /// 2025-12-05 at `s` seconds past 12:00:00 (a Friday).
    fn noon_plus(s: u64, ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_764_936_000 + s) + Duration::from_millis(ms)
    }

    fn utc(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_764_936_000 + s, 0)
            .single()
            .expect("utc")
    }

    /// Feeds `reads` (arrival, bytes) and collects the marks taken after each.
    fn marks(reads: &[(SystemTime, String)]) -> Vec<TimeMark> {
        let mut d = Decoder::new(DecoderOptions::default());
        let mut fixes = Vec::new();
        let mut out = Vec::new();
        for (at, bytes) in reads {
            d.set_arrival(Some(*at));
            d.push(bytes.as_bytes(), &mut fixes);
            out.extend(d.take_time_mark());
        }
        out
    }

    #[test]
    fn the_first_sentence_of_a_dated_valid_epoch_sets_its_arrival() {
        // GGA first, then the RMC that dates the epoch, in two reads; the
        // next second's GGA closes the epoch before the ender is learned.
        let reads = [
            (noon_plus(0, 120), gga("120000.00", 1)),
            (noon_plus(0, 190), rmc("120000.00", 'A', "051225")),
            (noon_plus(1, 130), gga("120001.00", 1)),
            (noon_plus(1, 200), rmc("120001.00", 'A', "051225")),
            (noon_plus(2, 110), gga("120002.00", 1)),
        ];
        let got = marks(&reads);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            got[0],
            TimeMark {
                utc: utc(0),
                arrived: noon_plus(0, 120)
            }
        );
        assert_eq!(
            got[1],
            TimeMark {
                utc: utc(1),
                arrived: noon_plus(1, 130)
            }
        );
        assert!((got[1].offset() + 0.130).abs() < 1e-9);
    }

    #[test]
    fn an_epoch_the_receiver_did_not_date_or_fix_gives_no_mark() {
        let reads = [
            // Dated by the RMC, but the receiver has no fix.
            (
                noon_plus(0, 100),
                rmc("120000.00", 'V', "051225") + &gga("120000.00", 0),
            ),
            // A fix, dated: this one counts.
            (
                noon_plus(1, 100),
                rmc("120001.00", 'A', "051225") + &gga("120001.00", 1),
            ),
            // GGA only: the date is carried forward, not the receiver's word.
            (noon_plus(2, 100), gga("120002.00", 1)),
            (noon_plus(3, 100), gga("120003.00", 1)),
            (noon_plus(4, 100), rmc("120004.00", 'A', "051225")),
        ];
        let got = marks(&reads);
        assert_eq!(
            got.iter().map(|m| m.utc).collect::<Vec<_>>(),
            [utc(1)],
            "{got:?}"
        );
    }

    #[test]
    fn an_epoch_dated_by_the_system_clock_gives_no_mark() {
        let mut d = Decoder::new(DecoderOptions::default());
        d.set_trusted_clock(Some(utc(0)));
        d.set_arrival(Some(noon_plus(0, 100)));
        let mut fixes = Vec::new();
        d.push(
            (gga("120000.00", 1) + &gga("120001.00", 1) + &gga("120002.00", 1)).as_bytes(),
            &mut fixes,
        );
        assert!(!fixes.is_empty(), "the clock dates the fixes");
        assert_eq!(d.take_time_mark(), None);
    }

    #[test]
    fn without_arrivals_nothing_is_kept_and_one_read_gives_the_newest_epoch() {
        let text: String = (0..3)
            .map(|s| {
                let hms = format!("12000{s}.00");
                rmc(&hms, 'A', "051225") + &gga(&hms, 1)
            })
            .collect();
        let mut d = Decoder::new(DecoderOptions::default());
        let mut fixes = Vec::new();
        d.push(text.as_bytes(), &mut fixes);
        assert_eq!(fixes.len(), 3, "the GGA ends the cycle once learned");
        assert_eq!(d.take_time_mark(), None, "no arrivals, no marks");
        // Three seconds read at once (a reader that was held up): only
        // the newest epoch closed by that read is offered.
        let got = marks(&[(noon_plus(2, 150), text.clone())]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].utc, utc(2));
    }

    #[test]
    fn a_leap_second_and_the_end_of_input_give_no_mark() {
        let reads = [(
            noon_plus(0, 100),
            rmc("235960.00", 'A', "311216") + &gga("235960.00", 1) + &gga("000000.00", 1),
        )];
        assert_eq!(marks(&reads), []);
        let mut d = Decoder::new(DecoderOptions::default());
        let mut fixes = Vec::new();
        d.set_arrival(Some(noon_plus(0, 100)));
        d.push(rmc("120000.00", 'A', "051225").as_bytes(), &mut fixes);
        d.finish(&mut fixes);
        assert_eq!(fixes.len(), 1);
        assert_eq!(d.take_time_mark(), None);
    }
}
