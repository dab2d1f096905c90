//! What to send next, as plain functions over sequence-number sets: no I/O,
//! tested without a runtime.
//!
//! The uplink reads the store in two streams. The *live* stream sends each
//! record once it is durable, in order, from `live_next`. Everything below
//! `live_next` that is neither acknowledged nor in flight is *backlog*,
//! drained oldest-first at a limited rate. After an outage the live stream
//! jumps to the head, so that current positions go up first and what piled
//! up becomes backlog.

use std::ops::RangeInclusive;

use crate::fix::{Event, Record};
use crate::store::Acked;
use crate::wire::{Batch, BatchKind};

/// The first run of sequence numbers in `low..=high` that is in neither set.
pub fn first_unsent(
    acked: &Acked,
    in_flight: &Acked,
    low: u64,
    high: u64,
) -> Option<RangeInclusive<u64>> {
    if low > high {
        return None;
    }
    let outer = low..=high;
    acked
        .gaps(&outer)
        .find_map(|gap| in_flight.gaps(&gap).next())
}

/// How many sequence numbers in `low..=high` are not acknowledged.
pub fn unacked(acked: &Acked, low: u64, high: u64) -> u64 {
    if low > high {
        return 0;
    }
    acked
        .gaps(&(low..=high))
        .map(|g| g.end() - g.start() + 1)
        .sum()
}

/// Where the live stream starts when the uplink starts or reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// The first sequence number the live stream sends.
    pub live_next: u64,
    /// Whether to send each device's latest position first (an outage left
    /// more than a batch behind).
    pub snapshot: bool,
}

/// Decides where the live stream resumes: where it was if it is less than
/// `threshold` records behind the durable head, else at the head, with a
/// snapshot first and the rest left to the backlog.
pub fn resume(acked: &Acked, live_next: u64, durable: u64, threshold: u64) -> Start {
    // Skip what is acknowledged already (a restart resumes from the store).
    let live_next = acked
        .gaps(&(live_next..=durable.max(live_next)))
        .next()
        .map_or(durable.max(live_next - 1) + 1, |g| *g.start());
    if unacked(acked, live_next, durable) > threshold {
        Start {
            live_next: durable + 1,
            snapshot: true,
        }
    } else {
        Start {
            live_next,
            snapshot: false,
        }
    }
}

/// A batch of `kind` covering `covers`, from records read out of the store.
/// Backlog positions are marked historic: the receiver has newer ones.
pub fn batch(
    kind: BatchKind,
    gateway: &str,
    id: u64,
    covers: RangeInclusive<u64>,
    mut records: Vec<Record>,
) -> Batch {
    if kind == BatchKind::Backlog {
        for r in &mut records {
            if let Event::Position(p) = &mut r.event {
                p.historic = true;
            }
        }
    }
    Batch {
        gateway: gateway.to_owned(),
        id,
        kind,
        first_seq: *covers.start(),
        last_seq: *covers.end(),
        records,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ranges: &[RangeInclusive<u64>]) -> Acked {
        ranges.iter().cloned().collect()
    }

    #[test]
    fn first_unsent_skips_acknowledged_and_in_flight_runs() {
        let acked = set(&[1..=10, 15..=15]);
        let flying = set(&[11..=12]);
        assert_eq!(first_unsent(&acked, &flying, 1, 100), Some(13..=14));
        assert_eq!(first_unsent(&acked, &flying, 15, 100), Some(16..=100));
        assert_eq!(first_unsent(&acked, &flying, 1, 12), None);
        assert_eq!(first_unsent(&acked, &flying, 5, 4), None);
    }

    #[test]
    fn unacked_counts_the_holes() {
        let acked = set(&[1..=10, 15..=15]);
        assert_eq!(unacked(&acked, 1, 20), 4 + 5);
        assert_eq!(unacked(&acked, 1, 10), 0);
        assert_eq!(unacked(&Acked::new(), 7, 6), 0);
    }

    #[test]
    fn a_short_gap_resumes_where_the_live_stream_was() {
        let acked = set(&[1..=100]);
        let s = resume(&acked, 101, 150, 1000);
        assert_eq!(
            s,
            Start {
                live_next: 101,
                snapshot: false
            }
        );
        // Nothing new at all.
        assert_eq!(resume(&acked, 101, 100, 1000).live_next, 101);
    }

    #[test]
    fn a_long_outage_jumps_to_the_head_with_a_snapshot() {
        let acked = set(&[1..=100]);
        let s = resume(&acked, 101, 5000, 1000);
        assert_eq!(
            s,
            Start {
                live_next: 5001,
                snapshot: true
            }
        );
    }

    #[test]
    fn a_restart_skips_what_was_acknowledged_above_the_live_point() {
        // Snapshot records and a later live run were acknowledged before the
        // restart; the live stream starts at the first hole.
        let acked = set(&[1..=100, 150..=150, 300..=400]);
        let s = resume(&acked, 1, 400, 1000);
        assert_eq!(s.live_next, 101);
        assert!(!s.snapshot);
        let acked = set(&[1..=400]);
        assert_eq!(resume(&acked, 1, 400, 1000).live_next, 401);
    }

    #[test]
    fn backlog_batches_mark_positions_historic() {
        use crate::fix::{DeviceId, Fix, Position};
        use chrono::{TimeZone, Utc};
        let fix = Fix::new(
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            52.0,
            5.0,
        );
        let r = Record {
            seq: 7,
            event: Event::Position(Position::new(DeviceId::new("a").unwrap(), fix)),
        };
        let b = batch(BatchKind::Backlog, "gw", 1, 5..=9, vec![r.clone()]);
        assert!(matches!(&b.records[0].event, Event::Position(p) if p.historic));
        assert_eq!((b.first_seq, b.last_seq), (5, 9));
        let b = batch(BatchKind::Live, "gw", 2, 7..=7, vec![r]);
        assert!(matches!(&b.records[0].event, Event::Position(p) if !p.historic));
    }

    #[test]
    fn backlog_batches_leave_geofence_events_as_they_are() {
        use crate::fix::Geofence;
        use chrono::{TimeZone, Utc};
        // Its own `historic` says whether its fix was late; a backlog only
        // means the uplink was, which changes nothing about the crossing.
        let time = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let r = Record {
            seq: 8,
            event: Event::Geofence(Geofence::example("a", time)),
        };
        let b = batch(BatchKind::Backlog, "gw", 1, 5..=9, vec![r.clone()]);
        assert_eq!(b.records, vec![r]);
    }
}
