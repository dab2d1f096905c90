//! Whether the sources' loops are stuck, for systemd's watchdog. A source
//! waiting for input is healthy however long it waits (a parked vehicle's
//! receiver may be unplugged for days); one that has been busy with a
//! message for [`crate::daemon::systemd::STALLED`] is stuck: blocked on a pipeline
//! that no longer takes fixes, or spinning in a decoder.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

/// One loop's state: idle, or busy since some moment.
#[derive(Debug)]
pub struct Pulse {
    name: String,
    epoch: Instant,
    /// Milliseconds after `epoch` when the current piece of work began,
    /// plus one; 0 while the loop waits for input.
    busy_since: AtomicU64,
}

/// Marks its pulse busy until dropped.
#[must_use = "the pulse is idle again when the guard is dropped"]
pub struct Busy<'a>(&'a Pulse);

impl Pulse {
    /// Marks the loop busy with a piece of work until the guard is dropped.
    pub fn busy(&self) -> Busy<'_> {
        let ms = self.epoch.elapsed().as_millis() as u64 + 1;
        self.busy_since.store(ms, Ordering::Relaxed);
        Busy(self)
    }

    /// How long the loop has been busy with its current piece of work.
    pub fn busy_for(&self) -> Option<Duration> {
        match self.busy_since.load(Ordering::Relaxed) {
            0 => None,
            since => {
                let now = self.epoch.elapsed().as_millis() as u64 + 1;
                Some(Duration::from_millis(now.saturating_sub(since)))
            }
        }
    }

    /// The loop's name, as logs name the source.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy_since.store(0, Ordering::Relaxed);
    }
}

/// Every source loop's pulse. Loops that end (a replay played once) drop
/// theirs and are no longer asked about.
#[derive(Debug)]
pub struct Pulses {
    epoch: Instant,
    list: Mutex<Vec<Weak<Pulse>>>,
}

impl Default for Pulses {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            list: Mutex::new(Vec::new()),
        }
    }
}

impl Pulses {
    /// A pulse for the loop called `name`, watched while it is held.
    pub fn register(&self, name: impl Into<String>) -> Arc<Pulse> {
        let pulse = Arc::new(Pulse {
            name: name.into(),
            epoch: self.epoch,
            busy_since: AtomicU64::new(0),
        });
        let mut list = self.list.lock().unwrap_or_else(PoisonError::into_inner);
        list.retain(|p| p.strong_count() > 0);
        list.push(Arc::downgrade(&pulse));
        pulse
    }

    /// The loop busy the longest, if it has been busy for `limit` or more.
    pub fn stalled(&self, limit: Duration) -> Option<(String, Duration)> {
        let list = self.list.lock().unwrap_or_else(PoisonError::into_inner);
        list.iter()
            .filter_map(Weak::upgrade)
            .filter_map(|p| Some((p.name.clone(), p.busy_for()?)))
            .filter(|(_, busy)| *busy >= limit)
            .max_by_key(|(_, busy)| *busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_is_stalled_only_while_busy_past_the_limit() {
        let pulses = Pulses::default();
        let serial = pulses.register("serial bus-7");
        assert!(serial.busy_for().is_none(), "waiting for input is idle");
        assert_eq!(pulses.stalled(Duration::ZERO), None);
        {
            let _busy = serial.busy();
            assert!(serial.busy_for().is_some());
            let (name, _) = pulses.stalled(Duration::ZERO).expect("busy past zero");
            assert_eq!(name, "serial bus-7");
            assert_eq!(pulses.stalled(Duration::from_secs(10)), None);
        }
        assert_eq!(pulses.stalled(Duration::ZERO), None, "idle again");
        let _busy = serial.busy();
        drop(_busy);
        let gone = pulses.register("replay");
        let busy = gone.busy();
        std::mem::forget(busy);
        drop(gone);
        assert_eq!(
            pulses.stalled(Duration::ZERO),
            None,
            "ended loops are not asked"
        );
    }
}
