//! When each simulated device sends: the stagger that spreads a fleet over
//! the period, the periodic outages, and the backlog a tracker keeps while
//! it is offline. Pure logic, no clocks: callers pass the elapsed time.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::Duration;

use crate::fix::Fix;

/// The finest step of the dispatch ticker: finer only costs wake-ups.
pub const MIN_SLOT: Duration = Duration::from_millis(10);

/// How many dispatch slots one period is cut into: one per device at most,
/// none shorter than [`MIN_SLOT`], at least one.
pub fn slots_per_period(period: Duration, devices: usize) -> usize {
    let by_time = (period.as_nanos() / MIN_SLOT.as_nanos()).max(1);
    usize::try_from(by_time)
        .unwrap_or(usize::MAX)
        .min(devices)
        .max(1)
}

/// The devices that send in `slot` of `slots`: consecutive ranges that
/// partition `0..devices` as evenly as integers allow.
pub fn slot_devices(slot: usize, slots: usize, devices: usize) -> Range<usize> {
    let slots = slots.max(1);
    let at = |s: usize| (s as u128 * devices as u128 / slots as u128) as usize;
    at(slot)..at(slot + 1).min(devices)
}

/// Periodic loss of connectivity: every `every`, a device is offline for `length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    /// Time from the start of one outage to the start of the next.
    pub every: Duration,
    /// How long each outage lasts; shorter than `every`.
    pub length: Duration,
}

impl Outage {
    /// Whether device `index` of `devices` is offline `elapsed` after the start.
    ///
    /// Device `i` first goes offline at `every * (i + 1) / (devices + 1)`, so
    /// the fleet is never offline all at once and every device has had an
    /// outage by the end of the first period.
    pub fn is_offline(&self, index: usize, devices: usize, elapsed: Duration) -> bool {
        let every = self.every.as_nanos();
        if every == 0 {
            return false;
        }
        let first = every * (index as u128 + 1) / (devices as u128 + 1);
        let t = elapsed.as_nanos();
        t >= first && (t - first) % every < self.length.as_nanos()
    }
}

/// Fixes a tracker recorded while offline, oldest first, bounded as a real
/// tracker's memory is: when full, the oldest is dropped.
#[derive(Debug, Clone)]
pub struct Backlog {
    fixes: VecDeque<Fix>,
    capacity: usize,
    dropped: u64,
}

impl Backlog {
    /// An empty backlog holding at most `capacity` fixes (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            fixes: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    /// Takes the fix recorded now and says which fixes to send now, oldest
    /// first: nothing while offline (the fix is kept), otherwise everything
    /// kept so far and then the live one.
    pub fn due(&mut self, fix: Fix, offline: bool, out: &mut Vec<Fix>) {
        if offline {
            if self.fixes.len() == self.capacity {
                self.fixes.pop_front();
                self.dropped += 1;
            }
            self.fixes.push_back(fix);
            return;
        }
        out.extend(self.fixes.drain(..));
        out.push(fix);
    }

    /// Fixes waiting to be sent.
    pub fn len(&self) -> usize {
        self.fixes.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.fixes.is_empty()
    }

    /// Fixes lost because the backlog was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn fix(second: i64) -> Fix {
        let time = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
            + chrono::Duration::seconds(second);
        Fix::new(time, 52.0, 5.0)
    }

    fn seconds(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn slots_spread_a_thousand_devices_over_the_second() {
        let slots = slots_per_period(Duration::from_secs(1), 1000);
        assert_eq!(slots, 100);
        let sizes: Vec<usize> = (0..slots)
            .map(|s| slot_devices(s, slots, 1000).len())
            .collect();
        assert!(sizes.iter().all(|&n| n == 10), "{sizes:?}");
    }

    #[test]
    fn slot_ranges_partition_the_fleet() {
        for (devices, slots) in [(7, 3), (1, 1), (10, 10), (1000, 99), (0, 1)] {
            let mut next = 0;
            for s in 0..slots {
                let r = slot_devices(s, slots, devices);
                assert_eq!(r.start, next);
                next = r.end;
            }
            assert_eq!(next, devices, "{devices} devices in {slots} slots");
        }
    }

    #[test]
    fn few_devices_or_fast_rates_need_few_slots() {
        assert_eq!(slots_per_period(Duration::from_secs(1), 3), 3);
        assert_eq!(slots_per_period(Duration::from_millis(5), 1000), 1);
        assert_eq!(slots_per_period(Duration::from_secs(1), 0), 1);
    }

    #[test]
    fn outages_are_periodic_and_staggered() {
        let o = Outage {
            every: seconds(60.0),
            length: seconds(10.0),
        };
        // Device 0 of 2 first goes offline at 20 s, device 1 at 40 s.
        let offline = |i, t| o.is_offline(i, 2, seconds(t));
        assert!(!offline(0, 0.0) && !offline(0, 19.9));
        assert!(offline(0, 20.0) && offline(0, 29.9));
        assert!(!offline(0, 30.0) && !offline(0, 79.9));
        assert!(offline(0, 80.0));
        assert!(!offline(1, 20.0) && offline(1, 40.0) && !offline(1, 50.0));
    }

    #[test]
    fn no_outage_when_the_period_is_zero() {
        let o = Outage {
            every: Duration::ZERO,
            length: seconds(1.0),
        };
        assert!(!o.is_offline(0, 1, seconds(5.0)));
    }

    #[test]
    fn a_device_back_online_sends_its_backlog_oldest_first_then_live() {
        let mut b = Backlog::new(100);
        let mut out = Vec::new();
        b.due(fix(0), false, &mut out);
        assert_eq!(out, [fix(0)]);
        out.clear();
        for s in 1..=3 {
            b.due(fix(s), true, &mut out);
        }
        assert!(out.is_empty());
        assert_eq!(b.len(), 3);
        b.due(fix(4), false, &mut out);
        assert_eq!(out, [fix(1), fix(2), fix(3), fix(4)]);
        assert!(b.is_empty());
    }

    #[test]
    fn a_full_backlog_drops_the_oldest() {
        let mut b = Backlog::new(2);
        let mut out = Vec::new();
        for s in 0..5 {
            b.due(fix(s), true, &mut out);
        }
        assert_eq!(b.dropped(), 3);
        b.due(fix(5), false, &mut out);
        assert_eq!(out, [fix(3), fix(4), fix(5)]);
    }
}
