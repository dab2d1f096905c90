//! At most one log line per key per interval: bad input is logged with its
//! reason, but a device that sends garbage all day does not flood the journal.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Remembers when each key was last logged.
#[derive(Debug)]
pub struct LogLimit<K> {
    interval: Duration,
    last: HashMap<K, (Instant, u64)>,
    capacity: usize,
}

/// Whether to log now, and how many occurrences were held back since the last line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log this one; `suppressed` more happened since the previous line.
    Log {
        /// Occurrences not logged since the last line for this key.
        suppressed: u64,
    },
    /// Stay quiet (it is counted in metrics anyway).
    Quiet,
}

impl<K: Hash + Eq + Clone> LogLimit<K> {
    /// A limiter for `interval`, forgetting keys beyond `capacity` so that a
    /// flood of distinct keys cannot grow memory without bound.
    pub fn new(interval: Duration, capacity: usize) -> Self {
        Self {
            interval,
            last: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records an occurrence of `key` at `now` and says whether to log it.
    pub fn check(&mut self, key: &K, now: Instant) -> Verdict {
        if let Some((at, suppressed)) = self.last.get_mut(key) {
            if now.duration_since(*at) < self.interval {
                *suppressed += 1;
                return Verdict::Quiet;
            }
            let held = *suppressed;
            *at = now;
            *suppressed = 0;
            return Verdict::Log { suppressed: held };
        }
        if self.last.len() >= self.capacity {
            let interval = self.interval;
            self.last
                .retain(|_, (at, _)| now.duration_since(*at) < interval);
            if self.last.len() >= self.capacity {
                self.last.clear();
            }
        }
        self.last.insert(key.clone(), (now, 0));
        Verdict::Log { suppressed: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_once_per_key_per_interval_and_reports_what_it_held_back() {
        let mut limit = LogLimit::new(Duration::from_secs(60), 100);
        let t0 = Instant::now();
        assert_eq!(limit.check(&"a", t0), Verdict::Log { suppressed: 0 });
        assert_eq!(
            limit.check(&"a", t0 + Duration::from_secs(1)),
            Verdict::Quiet
        );
        assert_eq!(
            limit.check(&"a", t0 + Duration::from_secs(2)),
            Verdict::Quiet
        );
        assert_eq!(limit.check(&"b", t0), Verdict::Log { suppressed: 0 });
        assert_eq!(
            limit.check(&"a", t0 + Duration::from_secs(61)),
            Verdict::Log { suppressed: 2 }
        );
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_keys() {
        let mut limit = LogLimit::new(Duration::from_secs(60), 10);
        let t0 = Instant::now();
        for i in 0..1000 {
            limit.check(&i, t0);
        }
        assert!(limit.last.len() <= 10);
    }
}
