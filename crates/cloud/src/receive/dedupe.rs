//! What a receiver must remember about each gateway to print every record
//! once and to notice what is missing: the sequence numbers it has seen or
//! that a batch said are complete. Pure: no I/O, no runtime.
//!
//! One set per gateway serves both jobs. A record whose number is in the set
//! is a duplicate (a re-sent batch, or a snapshot's record again in the
//! backlog). A number in no batch but inside a live or backlog batch's range
//! was thinned by the gateway and will never come, so it is covered too: only
//! numbers no batch has accounted for yet are holes.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use rangemap::RangeInclusiveSet;
use serde::Serialize;

use crate::fix::Record;
use crate::wire::{Batch, BatchKind};

/// Most holes the summary lists one by one (it always counts them all).
const SUMMARY_GAPS: usize = 100;

/// A batch whose own fields contradict each other: it decoded, but what it
/// claims to cover cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Inconsistent {
    /// The range ends before it starts.
    #[error("first_seq {first} is above last_seq {last}")]
    Reversed {
        /// The batch's `first_seq`.
        first: u64,
        /// The batch's `last_seq`.
        last: u64,
    },
    /// A record lies outside `first_seq..=last_seq`.
    #[error("record seq {0} outside the batch's range")]
    OutOfRange(u64),
    /// Records are not in strictly increasing order (or one repeats).
    #[error("record seq {0} not above the one before it")]
    Unordered(u64),
}

/// A run of sequence numbers of one gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// The gateway.
    pub gateway: String,
    /// The first number of the run.
    pub from: u64,
    /// The last number of the run.
    pub to: u64,
}

/// What one batch brought.
#[derive(Debug, PartialEq)]
pub struct Accepted<'b> {
    /// Records not seen before, in the batch's order: the ones to print.
    pub new: Vec<&'b Record>,
    /// Records seen before, dropped.
    pub duplicates: usize,
    /// Holes this batch opened: numbers below the highest covered one that
    /// no batch has accounted for.
    pub opened: Vec<RangeInclusive<u64>>,
    /// Parts of earlier holes this batch filled.
    pub filled: Vec<RangeInclusive<u64>>,
}

/// The totals so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Gateways heard from.
    pub gateways: usize,
    /// Batches accepted (malformed ones not included).
    pub batches: u64,
    /// New records, each printed once.
    pub records: u64,
    /// Records dropped as seen before.
    pub duplicates: u64,
    /// Batches refused: undecodable, oversized or inconsistent.
    pub malformed: u64,
    /// Holes still open, all gateways together.
    pub open_gaps: usize,
    /// Sequence numbers in those holes.
    pub missing: u64,
    /// The first holes, by gateway then number.
    pub gaps: Vec<Gap>,
}

/// Everything remembered about the gateways, and the totals.
#[derive(Debug, Default)]
pub struct Dedupe {
    /// Per gateway: the sequence numbers seen or covered.
    covered: BTreeMap<String, RangeInclusiveSet<u64>>,
    batches: u64,
    records: u64,
    duplicates: u64,
    malformed: u64,
}

impl Dedupe {
    /// Nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one batch: sorts its records into new and duplicate and
    /// updates the coverage. An inconsistent batch changes nothing but the
    /// malformed count.
    pub fn accept<'b>(&mut self, batch: &'b Batch) -> Result<Accepted<'b>, Inconsistent> {
        if let Err(why) = check(batch) {
            self.malformed += 1;
            return Err(why);
        }
        let set = self.covered.entry(batch.gateway.clone()).or_default();
        // Judged against what came before this batch: its own range must not
        // make its own records look like duplicates.
        let (new, dups): (Vec<&Record>, Vec<&Record>) =
            batch.records.iter().partition(|r| !set.contains(&r.seq));
        let bounds = bounds(set);
        let fresh: Vec<RangeInclusive<u64>> = match batch.kind {
            BatchKind::Live | BatchKind::Backlog => {
                set.gaps(&(batch.first_seq..=batch.last_seq)).collect()
            }
            BatchKind::Snapshot => new.iter().map(|r| r.seq..=r.seq).collect(),
        };
        for range in &fresh {
            set.insert(range.clone());
        }
        let (filled, opened) = match bounds {
            // Uncovered numbers between the lowest and the highest covered
            // ones were holes; outside those bounds nothing was expected yet.
            Some((low, high)) => (
                fresh
                    .iter()
                    .filter_map(|r| intersect(r, &(low..=high)))
                    .collect(),
                opened_beyond(set, low, high),
            ),
            None => (Vec::new(), holes(set)),
        };
        self.batches += 1;
        self.records += new.len() as u64;
        self.duplicates += dups.len() as u64;
        Ok(Accepted {
            new,
            duplicates: dups.len(),
            opened,
            filled,
        })
    }

    /// Counts a batch refused before it could be read (undecodable, oversized).
    pub fn refused(&mut self) {
        self.malformed += 1;
    }

    /// The holes still open in `gateway`'s numbers.
    pub fn open_gaps(&self, gateway: &str) -> Vec<RangeInclusive<u64>> {
        self.covered.get(gateway).map(holes).unwrap_or_default()
    }

    /// The totals so far, with the open holes.
    pub fn summary(&self) -> Summary {
        let mut gaps = Vec::new();
        let mut open_gaps = 0;
        let mut missing: u64 = 0;
        for (gateway, set) in &self.covered {
            for hole in holes(set) {
                open_gaps += 1;
                missing = missing.saturating_add(hole.end() - hole.start() + 1);
                if gaps.len() < SUMMARY_GAPS {
                    gaps.push(Gap {
                        gateway: gateway.clone(),
                        from: *hole.start(),
                        to: *hole.end(),
                    });
                }
            }
        }
        Summary {
            gateways: self.covered.len(),
            batches: self.batches,
            records: self.records,
            duplicates: self.duplicates,
            malformed: self.malformed,
            open_gaps,
            missing,
            gaps,
        }
    }
}

/// What the decoder promises but a damaged or buggy sender might break; a
/// range the receiver trusted wrongly would hide records as thinned.
pub fn check(batch: &Batch) -> Result<(), Inconsistent> {
    let (first, last) = (batch.first_seq, batch.last_seq);
    if first > last {
        return Err(Inconsistent::Reversed { first, last });
    }
    let mut previous: Option<u64> = None;
    for r in &batch.records {
        if !(first..=last).contains(&r.seq) {
            return Err(Inconsistent::OutOfRange(r.seq));
        }
        if previous.is_some_and(|p| r.seq <= p) {
            return Err(Inconsistent::Unordered(r.seq));
        }
        previous = Some(r.seq);
    }
    Ok(())
}

/// The sequence numbers a consistent batch accounts for, in increasing
/// order: a live or backlog batch its whole range (numbers missing from it
/// were thinned), a snapshot only its records' numbers (runs merged).
pub fn covered(batch: &Batch) -> Vec<RangeInclusive<u64>> {
    match batch.kind {
        BatchKind::Live | BatchKind::Backlog => vec![batch.first_seq..=batch.last_seq],
        BatchKind::Snapshot => {
            let mut runs: Vec<RangeInclusive<u64>> = Vec::new();
            for seq in batch.records.iter().map(|r| r.seq) {
                match runs.last_mut() {
                    Some(run) if run.end().checked_add(1) == Some(seq) => {
                        *run = *run.start()..=seq;
                    }
                    _ => runs.push(seq..=seq),
                }
            }
            runs
        }
    }
}

/// The lowest and highest covered numbers.
fn bounds(set: &RangeInclusiveSet<u64>) -> Option<(u64, u64)> {
    Some((*set.first()?.start(), *set.last()?.end()))
}

/// Every hole between the lowest and the highest covered number.
fn holes(set: &RangeInclusiveSet<u64>) -> Vec<RangeInclusive<u64>> {
    match bounds(set) {
        Some((low, high)) => set.gaps(&(low..=high)).collect(),
        None => Vec::new(),
    }
}

/// Holes outside the old bounds `low..=high`: only there can a batch open
/// one, since inside them every number was already covered or a hole.
fn opened_beyond(set: &RangeInclusiveSet<u64>, low: u64, high: u64) -> Vec<RangeInclusive<u64>> {
    let Some((new_low, new_high)) = bounds(set) else {
        return Vec::new();
    };
    let mut opened = Vec::new();
    if new_low < low {
        opened.extend(set.gaps(&(new_low..=low - 1)));
    }
    if new_high > high {
        opened.extend(set.gaps(&(high + 1..=new_high)));
    }
    opened
}

fn intersect(a: &RangeInclusive<u64>, b: &RangeInclusive<u64>) -> Option<RangeInclusive<u64>> {
    let start = *a.start().max(b.start());
    let end = *a.end().min(b.end());
    (start <= end).then_some(start..=end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fix::{DeviceId, Event, Fix, Position};
    use chrono::{TimeZone, Utc};

    fn record(seq: u64) -> Record {
        let time = Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap()
            + chrono::Duration::seconds(seq as i64);
        let device = DeviceId::new("bus-1").unwrap();
        Record {
            seq,
            event: Event::Position(Position::new(device, Fix::new(time, 52.0, 5.0))),
        }
    }

    /// A batch of `gateway` covering `range`, holding `seqs`.
    fn batch(gateway: &str, kind: BatchKind, range: RangeInclusive<u64>, seqs: &[u64]) -> Batch {
        Batch {
            gateway: gateway.into(),
            id: *range.start(),
            kind,
            first_seq: *range.start(),
            last_seq: *range.end(),
            records: seqs.iter().copied().map(record).collect(),
        }
    }

    fn live(range: RangeInclusive<u64>) -> Batch {
        let seqs: Vec<u64> = range.clone().collect();
        batch("gw-1", BatchKind::Live, range, &seqs)
    }

    fn backlog(range: RangeInclusive<u64>) -> Batch {
        let seqs: Vec<u64> = range.clone().collect();
        batch("gw-1", BatchKind::Backlog, range, &seqs)
    }

    /// What `accept` said, owned: the new records' numbers instead of them.
    #[derive(Debug)]
    struct Took {
        new: Vec<u64>,
        duplicates: usize,
        opened: Vec<RangeInclusive<u64>>,
        filled: Vec<RangeInclusive<u64>>,
    }

    fn take(d: &mut Dedupe, batch: Batch) -> Took {
        let a = d.accept(&batch).expect("a consistent batch");
        Took {
            new: a.new.iter().map(|r| r.seq).collect(),
            duplicates: a.duplicates,
            opened: a.opened,
            filled: a.filled,
        }
    }

    #[test]
    fn a_resent_batch_is_all_duplicates() {
        let mut d = Dedupe::new();
        let first = live(1..=5);
        assert_eq!(take(&mut d, first.clone()).new, [1, 2, 3, 4, 5]);
        let again = take(&mut d, first);
        assert!(again.new.is_empty());
        assert_eq!(again.duplicates, 5);
        assert!(again.opened.is_empty() && again.filled.is_empty());
        let s = d.summary();
        assert_eq!((s.batches, s.records, s.duplicates), (2, 5, 5));
    }

    #[test]
    fn overlapping_ranges_print_only_the_new_part() {
        let mut d = Dedupe::new();
        take(&mut d, live(1..=10));
        let a = take(&mut d, live(6..=15));
        assert_eq!(a.new, [11, 12, 13, 14, 15]);
        assert_eq!(a.duplicates, 5);
        // A wider batch around what is known: only its two ends are new.
        let b = take(&mut d, backlog(14..=18));
        assert_eq!(b.new, [16, 17, 18]);
        assert!(d.open_gaps("gw-1").is_empty());
    }

    #[test]
    fn numbers_missing_inside_a_live_range_were_thinned_not_lost() {
        let mut d = Dedupe::new();
        let a = take(&mut d, batch("gw-1", BatchKind::Live, 1..=6, &[1, 2, 5, 6]));
        assert_eq!(a.new, [1, 2, 5, 6]);
        assert!(a.opened.is_empty());
        assert!(d.open_gaps("gw-1").is_empty());
        // The thinned numbers are accounted for: never printed later.
        let late = take(&mut d, batch("gw-1", BatchKind::Backlog, 3..=4, &[3, 4]));
        assert!(late.new.is_empty());
    }

    #[test]
    fn a_gap_is_opened_then_closed() {
        let mut d = Dedupe::new();
        take(&mut d, live(1..=10));
        let ahead = take(&mut d, live(21..=30));
        assert_eq!(ahead.opened, [11..=20]);
        assert_eq!(d.open_gaps("gw-1"), [11..=20]);
        let part = take(&mut d, backlog(11..=14));
        assert_eq!(part.filled, [11..=14]);
        assert!(part.opened.is_empty());
        assert_eq!(d.open_gaps("gw-1"), [15..=20]);
        let rest = take(&mut d, backlog(15..=20));
        assert_eq!(rest.filled, [15..=20]);
        assert_eq!(rest.new, [15, 16, 17, 18, 19, 20]);
        assert!(d.open_gaps("gw-1").is_empty());
        assert_eq!(d.summary().open_gaps, 0);
    }

    #[test]
    fn an_empty_live_batch_closes_a_gap_of_thinned_numbers() {
        let mut d = Dedupe::new();
        take(&mut d, live(1..=3));
        take(&mut d, live(8..=9));
        let thinned = take(&mut d, batch("gw-1", BatchKind::Live, 4..=7, &[]));
        assert!(thinned.new.is_empty());
        assert_eq!(thinned.filled, [4..=7]);
        assert!(d.open_gaps("gw-1").is_empty());
    }

    #[test]
    fn a_batch_below_everything_known_opens_the_hole_above_it() {
        let mut d = Dedupe::new();
        take(&mut d, live(50..=60));
        let older = take(&mut d, backlog(10..=20));
        assert_eq!(older.opened, [21..=49]);
        assert!(older.filled.is_empty());
        // Adjacent below: extends the bounds without a hole.
        let adjacent = take(&mut d, backlog(5..=9));
        assert!(adjacent.opened.is_empty());
    }

    #[test]
    fn snapshot_then_backlog_prints_each_record_once() {
        let mut d = Dedupe::new();
        take(&mut d, live(1..=10));
        // After an outage: the latest position of three devices first.
        let snapshot = batch("gw-1", BatchKind::Snapshot, 17..=30, &[17, 25, 30]);
        let s = take(&mut d, snapshot);
        assert_eq!(s.new, [17, 25, 30]);
        // A snapshot covers only what it holds: the numbers between are holes.
        assert_eq!(s.opened, [11..=16, 18..=24, 26..=29]);
        let b = take(&mut d, backlog(11..=30));
        assert_eq!(b.new.len(), 17);
        assert!(b.new.iter().all(|seq| ![17, 25, 30].contains(seq)));
        assert_eq!(b.duplicates, 3);
        assert_eq!(b.filled, [11..=16, 18..=24, 26..=29]);
        assert!(d.open_gaps("gw-1").is_empty());
    }

    #[test]
    fn a_first_batch_that_is_a_snapshot_opens_holes_between_its_records() {
        let mut d = Dedupe::new();
        let s = take(&mut d, batch("gw-1", BatchKind::Snapshot, 5..=9, &[5, 9]));
        assert_eq!(s.opened, [6..=8]);
        assert!(s.filled.is_empty());
    }

    #[test]
    fn gateways_are_counted_apart() {
        let mut d = Dedupe::new();
        take(&mut d, live(1..=5));
        let other = batch("gw-2", BatchKind::Live, 1..=5, &[1, 2, 3, 4, 5]);
        assert_eq!(take(&mut d, other).new.len(), 5);
        let ahead = batch("gw-2", BatchKind::Live, 9..=9, &[9]);
        assert_eq!(take(&mut d, ahead).opened, [6..=8]);
        assert!(d.open_gaps("gw-1").is_empty());
        let s = d.summary();
        assert_eq!((s.gateways, s.records, s.duplicates), (2, 11, 0));
        assert_eq!((s.open_gaps, s.missing), (1, 3));
        assert_eq!(
            s.gaps,
            [Gap {
                gateway: "gw-2".into(),
                from: 6,
                to: 8
            }]
        );
    }

    #[test]
    fn inconsistent_batches_are_refused_and_change_nothing() {
        let mut d = Dedupe::new();
        let reversed = batch("gw-1", BatchKind::Live, 1..=5, &[]);
        let reversed = Batch {
            first_seq: 9,
            ..reversed
        };
        assert_eq!(
            d.accept(&reversed),
            Err(Inconsistent::Reversed { first: 9, last: 5 })
        );
        let outside = batch("gw-1", BatchKind::Live, 1..=5, &[4, 6]);
        assert_eq!(d.accept(&outside), Err(Inconsistent::OutOfRange(6)));
        let repeated = batch("gw-1", BatchKind::Live, 1..=5, &[2, 2]);
        assert_eq!(d.accept(&repeated), Err(Inconsistent::Unordered(2)));
        let s = d.summary();
        assert_eq!((s.gateways, s.batches, s.malformed), (0, 0, 3));
    }

    #[test]
    fn the_ends_of_the_number_space_do_not_overflow() {
        let mut d = Dedupe::new();
        let top = batch(
            "gw-1",
            BatchKind::Live,
            u64::MAX - 1..=u64::MAX,
            &[u64::MAX],
        );
        take(&mut d, top);
        let bottom = batch("gw-1", BatchKind::Live, 0..=0, &[0]);
        let a = take(&mut d, bottom);
        assert_eq!(a.opened, [1..=u64::MAX - 2]);
        assert_eq!(d.summary().missing, u64::MAX - 2);
    }
}
