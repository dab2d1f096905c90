//! An in-memory summary of every value in the log: how many events it holds,
//! its bytes and its oldest event time, by first sequence number.
//!
//! Built from the read that [`super::Store::open`] does anyway (from the
//! [`super::checkpoint`] for values that have not changed since it was
//! written), then kept up to date by the writer (appends, compactions) and
//! the disk budget (rewrites, deletions), so that the budget plans and the
//! uplink reports its backlog without reading sled. It costs about 64 bytes
//! per value: 125 KiB for a million fixes in segments of 512 (plus the raw
//! tail's few values, one per append).
//!
//! It also notes which values changed, for the background check, which
//! decodes those (and only those) to keep the checkpoint current.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::Acked;
use crate::fix::Event;

/// What one log value holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Sequence numbers it spans, gone slots included.
    pub slots: u32,
    /// Events it still holds.
    pub present: u32,
    /// How many of those are positions.
    pub positions: u32,
    /// Key and value bytes.
    pub bytes: u32,
    /// Earliest time of the events it holds (ms since the epoch); `i64::MAX` when none.
    pub oldest_ms: i64,
    /// Its layout.
    pub kind: Kind,
}

/// The layout of a log value, as far as the budget cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Raw events in the writer's tail (one append's): the budget never touches them.
    Raw,
    /// A compacted segment.
    Segment,
    /// A segment the budget has thinned already.
    Thinned,
}

impl Entry {
    /// The summary of a value holding `slots` (gone ones as `None`).
    pub fn of<'a>(
        slots: impl IntoIterator<Item = Option<&'a Event>>,
        bytes: usize,
        kind: Kind,
    ) -> Self {
        let mut entry = Entry {
            slots: 0,
            present: 0,
            positions: 0,
            bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
            oldest_ms: i64::MAX,
            kind,
        };
        for slot in slots {
            entry.slots += 1;
            let Some(event) = slot else { continue };
            entry.present += 1;
            if matches!(event, Event::Position(_)) {
                entry.positions += 1;
            }
            entry.oldest_ms = entry.oldest_ms.min(event.time().timestamp_millis());
        }
        entry
    }

    /// One past the last sequence number it spans.
    fn end(&self, first: u64) -> u64 {
        first + u64::from(self.slots)
    }
}

/// Totals over a set of stored events.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Events held.
    pub records: u64,
    /// Key and value bytes of the values holding them (before sled's own overhead).
    pub bytes: u64,
    /// Time of the oldest of them, when there are any.
    pub oldest: Option<DateTime<Utc>>,
}

impl Usage {
    /// How old the oldest event is at `now` (zero for one from the future).
    pub fn oldest_age(&self, now: DateTime<Utc>) -> Option<std::time::Duration> {
        self.oldest
            .map(|t| (now - t).to_std().unwrap_or(std::time::Duration::ZERO))
    }
}

/// Every log value's [`Entry`], by first sequence number.
#[derive(Debug, Default)]
pub struct Ledger {
    entries: BTreeMap<u64, Entry>,
    records: u64,
    bytes: u64,
    changed: Changed,
}

/// The first sequence numbers of values put or removed since the last
/// [`Ledger::take_changed`]. Appends and compactions touch consecutive
/// numbers at the head, so one open run takes them at the cost of two
/// comparisons each; only a jump elsewhere (the budget rewriting an old
/// segment) goes into the range set.
#[derive(Debug, Default)]
struct Changed {
    run: Option<(u64, u64)>,
    earlier: Acked,
}

impl Changed {
    fn note(&mut self, first: u64) {
        match &mut self.run {
            Some((lo, hi)) if (*lo..=hi.saturating_add(1)).contains(&first) => {
                *hi = (*hi).max(first);
            }
            Some((lo, _)) if first.checked_add(1) == Some(*lo) => *lo = first,
            run => {
                if let Some((lo, hi)) = run.replace((first, first)) {
                    self.earlier.insert(lo..=hi);
                }
            }
        }
    }

    fn take(&mut self) -> Acked {
        let mut all = std::mem::take(&mut self.earlier);
        if let Some((lo, hi)) = self.run.take() {
            all.insert(lo..=hi);
        }
        all
    }
}

impl Ledger {
    /// Records (or replaces) the value at `first`.
    pub fn put(&mut self, first: u64, entry: Entry) {
        self.remove(first);
        self.records += u64::from(entry.present);
        self.bytes += u64::from(entry.bytes);
        self.entries.insert(first, entry);
    }

    /// Forgets the value at `first`.
    pub fn remove(&mut self, first: u64) {
        self.changed.note(first);
        if let Some(old) = self.entries.remove(&first) {
            self.records -= u64::from(old.present);
            self.bytes -= u64::from(old.bytes);
        }
    }

    /// The first sequence numbers of every value put or removed since the
    /// last call (as ranges that may also cover unchanged ones), and forgets them.
    pub fn take_changed(&mut self) -> Acked {
        self.changed.take()
    }

    /// Gives back ranges [`Ledger::take_changed`] handed out and that were
    /// not dealt with, so that the next call hands them out again.
    pub fn restore_changed(&mut self, ranges: &Acked) {
        for range in ranges.iter() {
            self.changed.earlier.insert(range.clone());
        }
    }

    /// The value at `first`.
    pub fn get(&self, first: u64) -> Option<Entry> {
        self.entries.get(&first).copied()
    }

    /// Every value, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, Entry)> + '_ {
        self.entries.iter().map(|(k, e)| (*k, *e))
    }

    /// Events held and their bytes; the oldest time is the first value's
    /// (values are in sequence order, which is nearly time order).
    pub fn usage(&self) -> Usage {
        Usage {
            records: self.records,
            bytes: self.bytes,
            oldest: self
                .entries
                .values()
                .find(|e| e.present > 0)
                .and_then(oldest),
        }
    }

    /// What the upstream has not acknowledged yet. Values partly acknowledged
    /// are counted in proportion to their unacknowledged slots (exact for the
    /// usual case of one acknowledged prefix ending on a value boundary).
    /// Costs a walk over the values in the unacknowledged ranges only.
    pub fn backlog(&self, acked: &Acked) -> Usage {
        let (Some(&first), Some((&last_first, last))) =
            (self.entries.keys().next(), self.entries.iter().next_back())
        else {
            return Usage::default();
        };
        let span = first..=last.end(last_first).saturating_sub(1);
        let mut usage = Usage::default();
        for gap in acked.gaps(&span) {
            // The value holding the gap's start may begin before it.
            let from = self
                .entries
                .range(..=*gap.start())
                .next_back()
                .map_or(*gap.start(), |(k, _)| *k);
            for (&at, entry) in self.entries.range(from..=*gap.end()) {
                let lo = at.max(*gap.start());
                let hi = entry.end(at).min(gap.end() + 1);
                if hi <= lo || entry.present == 0 {
                    continue;
                }
                let share = (hi - lo) as f64 / f64::from(entry.slots);
                usage.records += (f64::from(entry.present) * share).round() as u64;
                usage.bytes += (f64::from(entry.bytes) * share).round() as u64;
                if usage.oldest.is_none() {
                    usage.oldest = oldest(entry);
                }
            }
        }
        usage
    }
}

/// A ledger of values just read and checked: none is noted as changed.
impl FromIterator<(u64, Entry)> for Ledger {
    fn from_iter<I: IntoIterator<Item = (u64, Entry)>>(entries: I) -> Self {
        let entries: BTreeMap<u64, Entry> = entries.into_iter().collect();
        let (records, bytes) = entries.values().fold((0, 0), |(r, b), e| {
            (r + u64::from(e.present), b + u64::from(e.bytes))
        });
        Ledger {
            entries,
            records,
            bytes,
            changed: Changed::default(),
        }
    }
}

fn oldest(entry: &Entry) -> Option<DateTime<Utc>> {
    (entry.oldest_ms != i64::MAX)
        .then(|| DateTime::from_timestamp_millis(entry.oldest_ms))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(slots: u32, present: u32, bytes: u32, oldest_ms: i64) -> Entry {
        Entry {
            slots,
            present,
            positions: present,
            bytes,
            oldest_ms,
            kind: Kind::Segment,
        }
    }

    #[test]
    fn totals_follow_puts_and_removals() {
        let mut ledger = Ledger::default();
        ledger.put(100, entry(256, 256, 2000, 5_000));
        ledger.put(356, entry(256, 200, 1500, 9_000));
        ledger.put(100, entry(256, 10, 300, 6_000));
        let usage = ledger.usage();
        assert_eq!((usage.records, usage.bytes), (210, 1800));
        assert_eq!(usage.oldest.map(|t| t.timestamp_millis()), Some(6_000));
        ledger.remove(100);
        ledger.remove(100);
        assert_eq!(ledger.usage().records, 200);
    }

    #[test]
    fn changes_are_noted_as_ranges_until_taken() {
        let mut ledger = Ledger::default();
        // Appends at the head, then their compaction into one segment.
        for seq in 100..110 {
            ledger.put(seq, entry(1, 1, 40, 1_000));
        }
        for seq in 101..110 {
            ledger.remove(seq);
        }
        ledger.put(100, entry(10, 10, 200, 1_000));
        // The budget rewrites an old value, then appends go on.
        ledger.put(20, entry(256, 100, 900, 500));
        ledger.put(110, entry(1, 1, 40, 2_000));
        ledger.put(99, entry(1, 1, 40, 2_000));
        let taken: Vec<_> = ledger.take_changed().into_iter().collect();
        assert_eq!(taken, vec![20..=20, 99..=110]);
        assert!(ledger.take_changed().is_empty());
        let mut back = Acked::new();
        back.insert(5..=7);
        ledger.restore_changed(&back);
        ledger.remove(300);
        let taken: Vec<_> = ledger.take_changed().into_iter().collect();
        assert_eq!(taken, vec![5..=7, 300..=300]);
        // Built from values just read: nothing changed, the same totals.
        let mut read: Ledger = [(1, entry(256, 200, 1500, 9_000)), (257, entry(2, 2, 80, 1))]
            .into_iter()
            .collect();
        assert!(read.take_changed().is_empty());
        assert_eq!((read.usage().records, read.usage().bytes), (202, 1580));
    }

    #[test]
    fn the_backlog_leaves_out_what_was_acknowledged() {
        let mut ledger = Ledger::default();
        ledger.put(100, entry(256, 256, 2560, 1_000));
        ledger.put(356, entry(256, 256, 2560, 2_000));
        // A gap: the budget deleted 612..868.
        ledger.put(868, entry(1, 1, 40, 3_000));
        let mut acked = Acked::new();
        assert_eq!(ledger.backlog(&acked).records, 513);
        acked.insert(100..=355);
        let backlog = ledger.backlog(&acked);
        assert_eq!((backlog.records, backlog.bytes), (257, 2600));
        assert_eq!(backlog.oldest.map(|t| t.timestamp_millis()), Some(2_000));
        // Half of a segment acknowledged: counted in proportion.
        acked.insert(356..=483);
        assert_eq!(ledger.backlog(&acked).records, 129);
        acked.insert(0..=10_000);
        assert_eq!(ledger.backlog(&acked), Usage::default());
    }
}
