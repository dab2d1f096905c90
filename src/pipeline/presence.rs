//! Which devices are reporting: online from the first arrival after silence,
//! offline once silent for the configured time. Pure state over arrival
//! instants; the writer turns its answers into stored `status` events.
//!
//! Presence follows arrivals, not stored fixes: a parked tracker whose fixes
//! are thinned away by a filter is still online.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::fix::{DeviceId, Presence};

/// The presence of every device heard from.
#[derive(Debug)]
pub struct Presences {
    offline_after: Duration,
    /// Last arrival and the presence last reported, per device.
    devices: HashMap<DeviceId, (Instant, Presence)>,
    /// How many of them are online.
    online: usize,
}

impl Presences {
    /// Devices go offline after `offline_after` of silence.
    pub fn new(offline_after: Duration) -> Self {
        Self {
            offline_after,
            devices: HashMap::new(),
            online: 0,
        }
    }

    /// Devices online now.
    pub fn online(&self) -> usize {
        self.online
    }

    /// Devices tracked.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// True when no device is tracked.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Whether `device` is tracked.
    pub fn knows(&self, device: &DeviceId) -> bool {
        self.devices.contains_key(device)
    }

    /// Restores a device's last stored presence at start-up, as if heard
    /// now: an online device that keeps reporting causes no new event, one
    /// that stays silent goes offline after the usual silence.
    pub fn seed(&mut self, device: DeviceId, presence: Presence, now: Instant) {
        if presence == Presence::Online {
            self.online += 1;
        }
        if let Some((_, Presence::Online)) = self.devices.insert(device, (now, presence)) {
            self.online -= 1;
        }
    }

    /// Forgets the offline device heard from longest ago, to make room for a
    /// new one; `None` when every tracked device is online.
    pub fn evict_offline(&mut self) -> Option<DeviceId> {
        let oldest = self
            .devices
            .iter()
            .filter(|(_, (_, p))| *p == Presence::Offline)
            .min_by_key(|(_, (last, _))| *last)
            .map(|(device, _)| device.clone())?;
        self.devices.remove(&oldest);
        Some(oldest)
    }

    /// Records an arrival; `Some(Online)` when that is news.
    pub fn heard(&mut self, device: &DeviceId, now: Instant) -> Option<Presence> {
        match self.devices.get_mut(device) {
            Some((last, presence)) => {
                *last = now;
                if *presence == Presence::Online {
                    return None;
                }
                *presence = Presence::Online;
            }
            None => {
                self.devices.insert(device.clone(), (now, Presence::Online));
            }
        }
        self.online += 1;
        Some(Presence::Online)
    }

    /// Devices whose silence ran out since the last call, now offline.
    pub fn expire(&mut self, now: Instant) -> Vec<DeviceId> {
        let mut gone: Vec<DeviceId> = self
            .devices
            .iter_mut()
            .filter(|(_, (last, p))| {
                *p == Presence::Online && now.saturating_duration_since(*last) >= self.offline_after
            })
            .map(|(device, (_, p))| {
                *p = Presence::Offline;
                device.clone()
            })
            .collect();
        self.online -= gone.len();
        gone.sort();
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap()
    }

    #[test]
    fn online_on_first_arrival_offline_after_silence_online_again_on_return() {
        let t0 = Instant::now();
        let mut p = Presences::new(Duration::from_secs(60));
        assert_eq!(p.heard(&id("a"), t0), Some(Presence::Online));
        assert_eq!(p.heard(&id("a"), t0 + Duration::from_secs(30)), None);
        assert!(p.expire(t0 + Duration::from_secs(89)).is_empty());
        assert_eq!(p.expire(t0 + Duration::from_secs(90)), vec![id("a")]);
        assert!(
            p.expire(t0 + Duration::from_secs(200)).is_empty(),
            "reported once"
        );
        assert_eq!(
            p.heard(&id("a"), t0 + Duration::from_secs(201)),
            Some(Presence::Online)
        );
    }

    #[test]
    fn eviction_takes_the_longest_silent_offline_device_only() {
        let t0 = Instant::now();
        let mut p = Presences::new(Duration::from_secs(10));
        p.heard(&id("a"), t0);
        p.heard(&id("b"), t0 + Duration::from_secs(5));
        assert_eq!(p.evict_offline(), None, "online devices stay");
        p.expire(t0 + Duration::from_secs(20));
        assert_eq!(p.online(), 0);
        assert_eq!(p.evict_offline(), Some(id("a")));
        assert!(!p.knows(&id("a")) && p.knows(&id("b")));
        assert_eq!(
            p.heard(&id("b"), t0 + Duration::from_secs(21)),
            Some(Presence::Online)
        );
        assert_eq!((p.len(), p.online()), (1, 1));
    }

    #[test]
    fn a_seeded_online_device_that_keeps_reporting_causes_no_event() {
        let t0 = Instant::now();
        let mut p = Presences::new(Duration::from_secs(10));
        p.seed(id("a"), Presence::Online, t0);
        p.seed(id("b"), Presence::Online, t0);
        p.seed(id("c"), Presence::Offline, t0);
        assert_eq!(p.online(), 2);
        assert_eq!(p.heard(&id("a"), t0 + Duration::from_secs(5)), None);
        assert_eq!(p.expire(t0 + Duration::from_secs(12)), vec![id("b")]);
        assert_eq!(p.online(), 1);
        assert_eq!(
            p.heard(&id("c"), t0 + Duration::from_secs(13)),
            Some(Presence::Online)
        );
    }
}
