//! At most one log line per key per interval: bad input is logged with its
//! reason, but a device that sends garbage all day does not flood the journal.
//! [`FloodLimit`] bounds the lines of a reason across all keys too, so that
//! invented names, each a new key, cannot flood it either; [`outside`] keeps
//! what a client sent from making a line long (or many lines).

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Characters of an outside string (a device id, topic, username, payload
/// excerpt) a log line quotes.
pub const OUTSIDE_CHARS: usize = 64;

/// Characters of a message about outside input (which may quote several
/// such strings) a log line carries.
pub const DETAIL_CHARS: usize = 400;

/// At most `max` characters of `s`, with `…` where it was cut, and control
/// characters escaped: a client's string can neither make a log line long
/// nor start a line of its own.
pub fn outside(s: &str, max: usize) -> Cow<'_, str> {
    let cut = s.char_indices().nth(max).map(|(at, _)| at);
    let kept = &s[..cut.unwrap_or(s.len())];
    if cut.is_none() && !kept.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(kept.len() + 3);
    for c in kept.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if cut.is_some() {
        out.push('…');
    }
    Cow::Owned(out)
}

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

/// Lines of one reason allowed per interval, across all keys.
pub const LINES_PER_REASON: usize = 5;

/// [`LogLimit`] per key and reason, and at most `per_reason` lines per
/// reason and interval across all keys: a thousand devices failing for one
/// reason (or one attacker inventing a thousand names) give a few lines a
/// minute, and the next line of that reason says how many were held back.
#[derive(Debug)]
pub struct FloodLimit<K, R> {
    keys: LogLimit<(K, R)>,
    reasons: HashMap<R, Window>,
    per_reason: usize,
    interval: Duration,
}

/// One reason's current interval.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    lines: usize,
    held: u64,
}

/// Whether to log now; what was held back before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// Log this one.
    Log {
        /// Occurrences of this key and reason not logged since its last line.
        suppressed: u64,
        /// Lines of this reason (other keys included) held back since its
        /// last line because the reason had its lines for the interval.
        held: u64,
        /// This is the reason's last line for the interval: say that more
        /// are held back.
        last: bool,
    },
    /// Stay quiet (it is counted in metrics anyway).
    Quiet,
}

impl<K: Hash + Eq + Clone, R: Hash + Eq + Copy> FloodLimit<K, R> {
    /// One line per key and reason per `interval`, at most `per_reason`
    /// per reason; at most `capacity` keys remembered.
    pub fn new(interval: Duration, per_reason: usize, capacity: usize) -> Self {
        Self {
            keys: LogLimit::new(interval, capacity),
            reasons: HashMap::new(),
            per_reason: per_reason.max(1),
            interval,
        }
    }

    /// Records an occurrence of `reason` for `key` at `now` and says whether to log it.
    pub fn check(&mut self, key: &K, reason: R, now: Instant) -> Flood {
        let window = self.reasons.entry(reason).or_insert(Window {
            start: now,
            lines: 0,
            held: 0,
        });
        if now.duration_since(window.start) >= self.interval {
            window.start = now;
            window.lines = 0;
        }
        if window.lines >= self.per_reason {
            window.held += 1;
            return Flood::Quiet;
        }
        match self.keys.check(&(key.clone(), reason), now) {
            Verdict::Quiet => Flood::Quiet,
            Verdict::Log { suppressed } => {
                window.lines += 1;
                Flood::Log {
                    suppressed,
                    held: std::mem::take(&mut window.held),
                    last: window.lines == self.per_reason,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_keys_gives_a_few_lines_per_reason_and_then_says_what_it_held() {
        let mut limit = FloodLimit::new(Duration::from_secs(60), 3, 100);
        let t0 = Instant::now();
        let mut lines = Vec::new();
        for i in 0..1000 {
            for reason in ["a", "b"] {
                if let Flood::Log { held, last, .. } = limit.check(&i, reason, t0) {
                    lines.push((reason, i, held, last));
                }
            }
        }
        assert_eq!(
            lines,
            [
                ("a", 0, 0, false),
                ("b", 0, 0, false),
                ("a", 1, 0, false),
                ("b", 1, 0, false),
                ("a", 2, 0, true),
                ("b", 2, 0, true)
            ]
        );
        // A minute later the reason's next line reports what it held back.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            limit.check(&5000, "a", later),
            Flood::Log {
                suppressed: 0,
                held: 997,
                last: false
            }
        );
        // A key logged lately stays quiet however quiet its reason is.
        assert_eq!(limit.check(&5000, "a", later), Flood::Quiet);
    }

    #[test]
    fn outside_strings_are_cut_and_cannot_start_a_line() {
        assert_eq!(outside("bus-1", 64), "bus-1");
        let long = "x".repeat(10_000);
        let cut = outside(&long, 64);
        assert_eq!(cut.chars().count(), 65);
        assert!(cut.ends_with("x…"));
        assert_eq!(outside("a\nWARN forged\r", 64), "a\\nWARN forged\\r");
        assert_eq!(outside("ééé", 2), "éé…");
    }

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
