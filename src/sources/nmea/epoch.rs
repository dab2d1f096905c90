//! Epoch assembly: per-sentence [`Report`]s in, one merged [`Epoch`] per receiver cycle out.
//!
//! A receiver sends a burst of sentences per fix (its cycle or epoch), all
//! stamped with the same UTC time, except VTG and GSA which carry none. The
//! assembler merges one burst and closes it **as soon as it is complete**, so
//! a 1 Hz receiver adds no second of latency:
//!
//! * Like gpsd (`driver_nmea0183.c`), it learns the receiver's *cycle ender*:
//!   whenever a time-bearing sentence arrives with a new time, the last
//!   time-bearing sentence of the previous cycle is taken to end cycles. From
//!   then on the epoch closes right after that sentence. We remember which
//!   occurrence of the type it was (a receiver sending `$GPGGA` and `$GNGGA`
//!   per cycle ends on the second), and we keep a single ender that is
//!   re-learned at every time change, so a receiver whose output changes
//!   (or whose ender stops appearing) is followed after one cycle. As in
//!   gpsd, nothing is learned from a change that a GLL brings (gpsd flags
//!   GLL as a cycle continuer) or from a step of 10 ms or less.
//! * Until an ender is known, or when it does not appear, the epoch closes
//!   when a sentence with a different time arrives (one cycle of latency).
//! * Sentences without time attach to the open epoch; after an epoch was
//!   closed they wait for the next one (gpsd does the same), unless a late
//!   sentence of the closed epoch shows that they still belong to it.
//!
//! The state is a fixed set of small values: nothing grows with the input.

use chrono::NaiveDate;

use super::sentence::{Kind, Report, Status};
use crate::fix::FixMode;

/// The fields of one epoch, merged from all its sentences.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merged {
    /// Latitude and longitude in degrees, from the last position sentence.
    pub position: Option<(f64, f64)>,
    /// Altitude above MSL in metres (GGA, GNS).
    pub alt: Option<f64>,
    /// Speed in m/s: RMC's, else VTG's.
    pub speed: Option<f64>,
    /// Course in degrees true: RMC's, else VTG's.
    pub course: Option<f64>,
    /// HDOP: GGA/GNS's, else GSA's.
    pub hdop: Option<f64>,
    /// Satellites used: GGA/GNS's, else the count of PRNs in GSA.
    pub sats: Option<u8>,
    /// 2D/3D from GSA.
    pub mode: Option<FixMode>,
    /// Some sentence of this epoch reported a fix.
    pub says_fix: bool,
    /// Some sentence of this epoch reported no fix; that wins.
    pub says_no_fix: bool,
    /// A GGA/GNS claimed a fix from zero satellites.
    zero_sats: bool,
    // Lower-priority values, used only when the preferred source is absent.
    vtg_speed: Option<f64>,
    vtg_course: Option<f64>,
    gsa_hdop: Option<f64>,
    gsa_sats: Option<u8>,
}

impl Merged {
    fn add(&mut self, r: &Report) {
        // A GGA/GNS "fix" from zero satellites is doubtful: Hemisphere sends
        // quality 1 with 00 during acquisition (no fix), Furuno sends 00 with
        // a real fix that its GSA confirms. As in gpsd, only a GSA 2D/3D in
        // the same epoch makes it a fix.
        if matches!(r.kind, Kind::Gga | Kind::Gns) && r.status == Status::Fix && r.sats == Some(0) {
            self.zero_sats = true;
        }
        match r.status {
            Status::Fix => self.says_fix = true,
            Status::NoFix => self.says_no_fix = true,
            Status::Silent => {}
        }
        // Later sentences win, as in gpsd: a receiver that repeats the
        // position (RMC, then GGA, then GLL) refines it through the cycle,
        // and an untimed sentence left over from the previous cycle comes
        // first and is overridden.
        self.position = r.position.or(self.position);
        match r.kind {
            Kind::Vtg => {
                self.vtg_speed = r.speed.or(self.vtg_speed);
                self.vtg_course = r.course.or(self.vtg_course);
            }
            Kind::Gsa => {
                // Several GSAs (one per constellation) add up their satellites.
                self.gsa_sats = match (self.gsa_sats, r.sats) {
                    (Some(a), Some(b)) => Some(a.saturating_add(b)),
                    (a, b) => a.or(b),
                };
                self.gsa_hdop = r.hdop.or(self.gsa_hdop);
                self.mode = r.mode.or(self.mode);
            }
            _ => {
                self.speed = r.speed.or(self.speed);
                self.course = r.course.or(self.course);
                self.alt = r.alt.or(self.alt);
                self.hdop = r.hdop.or(self.hdop);
                self.sats = r.sats.or(self.sats);
            }
        }
    }

    /// The values with the fallbacks applied; `None` if the epoch has no fix.
    pub fn resolved(&self) -> Option<Merged> {
        if !self.says_fix || self.says_no_fix || (self.zero_sats && self.mode.is_none()) {
            return None;
        }
        self.position?;
        let mut m = self.clone();
        m.speed = m.speed.or(m.vtg_speed);
        m.course = m.course.or(m.vtg_course);
        m.hdop = m.hdop.or(m.gsa_hdop);
        m.sats = m.sats.or(m.gsa_sats);
        Some(m)
    }
}

/// One closed receiver cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct Epoch {
    /// UTC time of day in milliseconds (`DAY_MS..` inside a leap second).
    pub time: u32,
    /// The date an RMC or ZDA of this epoch stated.
    pub date: Option<NaiveDate>,
    /// Everything the epoch's sentences said.
    pub merged: Merged,
}

/// Whether two times of day (ms) are one cycle's for gpsd, which learns its
/// cycle ender only when the time moves by more than 10 ms.
fn same_time(a: u32, b: u32) -> bool {
    a.abs_diff(b) <= 10
}

/// A sentence type and which occurrence of it in the cycle (0 = first).
type Tag = (Kind, u8);

/// Merges reports into epochs and learns where a receiver's cycle ends.
#[derive(Debug, Default)]
pub struct Assembler {
    /// The epoch being filled; `time` is `None` while only untimed sentences arrived.
    open: Option<(Option<u32>, Option<NaiveDate>, Merged)>,
    /// Time of the epoch closed last, so late sentences of it are recognised.
    closed: Option<u32>,
    /// The learned cycle ender.
    ender: Option<Tag>,
    /// The last time-bearing sentence of the current cycle.
    last_timed: Option<Tag>,
    /// Occurrences of each kind in the current cycle.
    seen: [u8; Kind::COUNT],
}

impl Assembler {
    /// A fresh assembler that knows nothing about the receiver yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The learned cycle ender, if any (for tests and diagnostics).
    pub fn ender(&self) -> Option<Kind> {
        self.ender.map(|(k, _)| k)
    }

    /// Feeds one report; calls `emit` for an epoch it completes.
    pub fn push(&mut self, r: &Report, emit: &mut impl FnMut(Epoch)) {
        let Some(t) = r.time else {
            // No time: belongs to whatever epoch is open, or the next one.
            let open = self.open.get_or_insert_with(Default::default);
            if open.0.is_none() && r.status == Status::NoFix {
                // Between cycles we cannot tell whether a GSA "no fix" is the
                // tail of the last cycle or the head of the next: it must not
                // veto a fix the next cycle's own sentences report (the first
                // fix after acquisition, u-blox and Garmin).
                let mut weak = r.clone();
                weak.status = Status::Silent;
                open.2.add(&weak);
            } else {
                open.2.add(r);
            }
            return;
        };
        let open_time = self.open.as_ref().and_then(|o| o.0);
        let current = open_time.or(self.closed);
        if let Some(c) = current.filter(|&c| c != t) {
            // A new cycle: what came last in the previous one ends cycles.
            // Not, as in gpsd, when a GLL starts it: gpsd marks GLL as a
            // cycle *continuer* (it expects GLL to trail a cycle) and learns
            // no ender from a time change a GLL brings. A receiver or
            // multiplexer that stamps its GLL a second ahead of the RMC/GGA
            // it repeats thus keeps GLL as its ender, and its later RMC/GGA
            // of that second come after the fix was reported. Nor when the
            // time moved by 10 ms or less, which gpsd does not count as a
            // new cycle (Magellan: GLL `120824.758`, GGA `120824.76`).
            if r.kind != Kind::Gll && !same_time(c, t) {
                if let Some(tag) = self.last_timed {
                    self.ender = Some(tag);
                }
            }
            if open_time.is_some() {
                self.close(emit);
            }
            self.closed = None;
            self.last_timed = None;
            self.seen = [0; Kind::COUNT];
        } else if open_time.is_none() && self.closed == Some(t) {
            // A late sentence of an epoch already closed (the ender was
            // learned wrong or the receiver repeats a type): the fix is out,
            // but it tells us the cycle goes on past the ender. Untimed
            // sentences gathered so far came within that cycle too: they must
            // not pass as the next one's (a VTG after a late RMC).
            self.last_timed = Some(self.tag(r.kind));
            self.open = None;
            return;
        }
        let tag = self.tag(r.kind);
        self.last_timed = Some(tag);
        let open = self.open.get_or_insert_with(Default::default);
        open.0 = Some(t);
        if r.date.is_some() {
            open.1 = r.date;
        }
        open.2.add(r);
        if self.ender == Some(tag) {
            self.close(emit);
        }
    }

    /// Counts an occurrence of `kind` in this cycle and names it.
    fn tag(&mut self, kind: Kind) -> Tag {
        let n = self.seen.get_mut(kind.index()).map_or(0, |n| {
            let seen = *n;
            *n = n.saturating_add(1);
            seen
        });
        (kind, n)
    }

    fn close(&mut self, emit: &mut impl FnMut(Epoch)) {
        if let Some((Some(time), date, merged)) = self.open.take() {
            self.closed = Some(time);
            emit(Epoch { time, date, merged });
        }
    }

    /// End of input: closes the open epoch, if it has a time.
    pub fn finish(&mut self, emit: &mut impl FnMut(Epoch)) {
        self.close(emit);
        self.open = None;
    }
}

#[cfg(test)]
mod tests {
    use super::super::sentence::{Classified, classify};
    use super::*;

    fn run(lines: &[&str]) -> (Vec<(usize, Epoch)>, Assembler) {
        let mut a = Assembler::new();
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            let Classified::Report { report, .. } = classify(l) else {
                panic!("{l}")
            };
            a.push(&report, &mut |e| out.push((i, e)));
        }
        a.finish(&mut |e| out.push((usize::MAX, e)));
        (out, a)
    }

    const CYCLE: [&str; 4] = [
        "$GPGGA,120000.00,4807.038,N,01131.324,E,1,08,0.9,545.4,M,46.9,M,,",
        "$GPGSA,A,3,04,05,09,12,,,,,,,,,2.5,1.3,2.1",
        "$GPRMC,120000.00,A,4807.038,N,01131.324,E,022.4,084.4,230394,,,A",
        "$GPVTG,084.4,T,,M,022.4,N,041.5,K,A",
    ];

    fn cycles(n: usize) -> Vec<String> {
        (0..n)
            .flat_map(|i| {
                CYCLE
                    .iter()
                    .map(move |l| l.replace("120000", &format!("1200{i:02}")))
            })
            .collect()
    }

    #[test]
    fn learns_the_ender_and_closes_without_waiting() {
        let lines = cycles(4);
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (out, a) = run(&refs);
        assert_eq!(a.ender(), Some(Kind::Rmc));
        let times: Vec<u32> = out.iter().map(|(_, e)| e.time / 1000 % 60).collect();
        assert_eq!(times, vec![0, 1, 2, 3]);
        // First epoch: closed by the GGA of the second cycle (learning).
        assert_eq!(out[0].0, 4);
        // Later epochs: closed by their own RMC, line 2 of each cycle.
        assert_eq!(out[1].0, 6);
        assert_eq!(out[2].0, 10);
        assert_eq!(out[3].0, 14);
        let m = out[1].1.merged.resolved().unwrap();
        assert_eq!(m.alt, Some(545.4));
        assert_eq!(m.sats, Some(8));
        assert_eq!(out[1].1.date, NaiveDate::from_ymd_opt(1994, 3, 23));
    }

    #[test]
    fn relearns_when_the_ender_disappears() {
        let mut lines = cycles(3);
        // From cycle 2 on the receiver stops sending RMC.
        lines.extend(
            cycles(6)
                .into_iter()
                .skip(12)
                .filter(|l| !l.contains("RMC")),
        );
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (out, a) = run(&refs);
        assert_eq!(a.ender(), Some(Kind::Gga));
        let times: Vec<u32> = out.iter().map(|(_, e)| e.time / 1000 % 60).collect();
        assert_eq!(times, vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn second_occurrence_of_a_type_can_end_the_cycle() {
        let mut lines = Vec::new();
        for i in 0..3 {
            lines.push(format!(
                "$GPGGA,1200{i:02}.00,4807.038,N,01131.324,E,1,08,0.9,545.4,M,46.9,M,,"
            ));
            lines.push(format!(
                "$GNGGA,1200{i:02}.00,4807.038,N,01131.324,E,1,12,0.9,545.4,M,46.9,M,,"
            ));
        }
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (out, _) = run(&refs);
        let at: Vec<usize> = out.iter().map(|(i, _)| *i).collect();
        assert_eq!(at, vec![2, 3, 5]);
    }

    /// A multiplexer that stamps its GLL a second ahead of the RMC/GGA it
    /// repeats (B&G Zeus): as for gpsd, the GLL stays the ender, the epoch
    /// is the GLL's and the RMC/GGA/VTG after it are late.
    #[test]
    fn gll_stamped_ahead_stays_the_ender() {
        let mut lines = Vec::new();
        for i in 0..2 {
            lines.push(format!(
                "$GPRMC,1200{i:02},A,4807.{i}00,N,01131.000,E,5.0,90.0,230394,,,A"
            ));
            lines.push(format!(
                "$GPGGA,1200{i:02},4807.{i}01,N,01131.000,E,1,08,0.9,5.0,M,46.9,M,,"
            ));
            lines.push(format!("$GPGLL,4807.{i}00,N,01131.000,E,1200{i:02},A,A"));
        }
        for i in 2..5 {
            lines.push(format!("$GPGLL,4807.{i}00,N,01131.000,E,1200{i:02},A,A"));
            lines.push(format!(
                "$GPRMC,1200{i:02},A,4807.{i}00,N,01131.000,E,5.0,90.0,230394,,,A"
            ));
            lines.push("$GPVTG,90.0,T,,M,5.0,N,9.3,K,A".to_string());
            lines.push(format!(
                "$GPGGA,1200{i:02},4807.{i}01,N,01131.000,E,1,08,0.9,5.0,M,46.9,M,,"
            ));
        }
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (out, a) = run(&refs);
        assert_eq!(a.ender(), Some(Kind::Gll));
        let last = &out.last().unwrap().1;
        assert_eq!(last.time / 1000 % 60, 4);
        let m = last.merged.resolved().unwrap();
        assert_eq!(m.position.map(|p| p.0), Some(48.0 + 7.4 / 60.0));
        assert_eq!((m.speed, m.alt), (None, None));
    }

    /// Magellan: GLL `.758`, GGA/RMC `.76` of the same fix. gpsd learns no
    /// ender from a 2 ms step, so neither do we.
    #[test]
    fn no_ender_from_a_step_of_milliseconds() {
        let (_, a) = run(&[
            "$GPGLL,3908.8199,N,00023.0832,W,120824.758,A",
            "$GPGGA,120824.76,3908.8199,N,00023.0832,W,1,06,2.1,00176,M,,,,",
            "$GPRMC,120824.76,A,3908.8199,N,00023.0832,W,00.0,000.0,130305,01.,W",
        ]);
        assert_eq!(a.ender(), None);
    }

    #[test]
    fn no_fix_wins() {
        let (out, _) = run(&[
            "$GPGGA,120000.00,4807.038,N,01131.324,E,0,00,,,M,,M,,",
            "$GPRMC,120000.00,A,4807.038,N,01131.324,E,022.4,084.4,230394,,,A",
        ]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.merged.resolved(), None);
    }
}
