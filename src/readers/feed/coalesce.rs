//! `?max_rate=2s`: each device's positions at most once per interval, the
//! latest winning, for screens on weak links and clients that fell behind.
//! Status and geofence events are never held or dropped.
//!
//! A position that comes sooner than the interval after the device's last
//! one sent is held (replacing any held before); it goes out when the
//! interval has passed, unless a newer position has replaced it by then.
//! Sent late, it carries the client's cursor as its id rather than its own,
//! so that the ids a client sees only ever grow and a reconnect resumes
//! where it was.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::ring::Frame;
use crate::fix::DeviceId;

/// One client's coalescing state; memory is bounded by the devices it sees.
#[derive(Debug)]
pub struct Coalescer {
    interval: Duration,
    last_sent: HashMap<DeviceId, Instant>,
    held: HashMap<DeviceId, Arc<Frame>>,
}

impl Coalescer {
    /// At most one position per device per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_sent: HashMap::new(),
            held: HashMap::new(),
        }
    }

    /// Whether to send a position now (else it is held).
    pub fn offer(&mut self, frame: &Arc<Frame>, now: Instant) -> bool {
        let due = self
            .last_sent
            .get(&frame.device)
            .is_none_or(|at| now.duration_since(*at) >= self.interval);
        if due {
            self.last_sent.insert(frame.device.clone(), now);
            self.held.remove(&frame.device);
        } else {
            self.held.insert(frame.device.clone(), frame.clone());
        }
        due
    }

    /// Held positions whose interval has passed, to send now.
    pub fn due(&mut self, now: Instant) -> Vec<Arc<Frame>> {
        let interval = self.interval;
        let last_sent = &self.last_sent;
        let ready: Vec<DeviceId> = self
            .held
            .keys()
            .filter(|d| {
                last_sent
                    .get(*d)
                    .is_none_or(|at| now.duration_since(*at) >= interval)
            })
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(ready.len());
        for device in ready {
            if let Some(frame) = self.held.remove(&device) {
                self.last_sent.insert(device, now);
                out.push(frame);
            }
        }
        out.sort_by_key(|f| f.seq);
        out
    }

    /// When the next held position falls due.
    pub fn next_due(&self) -> Option<Instant> {
        self.held
            .keys()
            .filter_map(|d| self.last_sent.get(d))
            .map(|at| *at + self.interval)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fix::{Event, Fix, Position, Record};
    use crate::groups::Groups;
    use chrono::{TimeZone, Utc};

    fn frame(device: &str, seq: u64) -> Arc<Frame> {
        let record = Record {
            seq,
            event: Event::Position(Position::new(
                DeviceId::new(device).unwrap(),
                Fix::new(
                    Utc.with_ymd_and_hms(2026, 12, 4, 8, 0, 0).unwrap(),
                    52.0,
                    5.0,
                ),
            )),
        };
        Arc::new(Frame::encode(&record, &Groups::default()).unwrap())
    }

    #[test]
    fn the_latest_position_per_interval_goes_out_and_the_rest_are_dropped() {
        let mut c = Coalescer::new(Duration::from_secs(2));
        let t0 = Instant::now();
        assert!(c.offer(&frame("a", 1), t0));
        assert!(c.offer(&frame("b", 2), t0));
        // Sooner than 2 s: held, the later replacing the earlier.
        assert!(!c.offer(&frame("a", 3), t0 + Duration::from_millis(500)));
        assert!(!c.offer(&frame("a", 4), t0 + Duration::from_secs(1)));
        assert_eq!(c.next_due(), Some(t0 + Duration::from_secs(2)));
        assert!(c.due(t0 + Duration::from_millis(1900)).is_empty());
        let due = c.due(t0 + Duration::from_secs(2));
        assert_eq!(due.iter().map(|f| f.seq).collect::<Vec<_>>(), vec![4]);
        assert_eq!(c.next_due(), None);
        // A newer one after the interval goes at once and nothing is held.
        assert!(!c.offer(&frame("a", 5), t0 + Duration::from_secs(3)));
        assert!(c.offer(&frame("a", 6), t0 + Duration::from_secs(4)));
        assert!(c.due(t0 + Duration::from_secs(10)).is_empty());
    }
}
