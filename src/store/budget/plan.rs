//! How much to free: arithmetic over what the budget measured, no I/O.
//!
//! sled does not shrink its file when data is deleted (it reuses the space,
//! and only gives back free segments at the file's end), and it holds 2–5×
//! the logical bytes on disk depending on churn. So the budget cannot steer
//! by the file's size alone: it keeps the *logical* bytes (keys and values,
//! counted by the ledger) under `cap × high_water / ratio`, where `ratio` is
//! sled's bytes on disk per logical byte. The ratio starts at what churn
//! reaches here and backs off whenever the file still grows above the high
//! water mark; it never comes down within a run, so the store may hold less
//! than it could, never more.

/// The configured limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Most bytes the store may occupy on disk.
    pub max_bytes: u64,
    /// Fraction of the cap at which the budget starts freeing space.
    pub high_water: f64,
    /// Free space the store leaves on its file system for everything else.
    pub min_free_bytes: u64,
}

/// What one pass measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measure {
    /// Logical bytes of the log (the ledger's count).
    pub logical: u64,
    /// sled's files.
    pub on_disk: u64,
    /// Free space of the file system for unprivileged writers, if known.
    pub free: Option<u64>,
}

/// What one pass should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The cap in force: the configured one, or less when the file system
    /// has less room than that beyond its headroom.
    pub cap: u64,
    /// Logical bytes the store may hold.
    pub target: u64,
    /// Logical bytes to free now (0: nothing to do).
    pub to_free: u64,
}

/// sled's bytes on disk per logical byte under churn, beyond its base, as
/// measured here (BENCHMARKS.md: a log held at a fixed logical size while
/// appending and deleting settles between 1.9× and 2.4×, plus the base).
pub const INITIAL_RATIO: f64 = 2.5;
/// What sled's files take whatever the data: its first segments, snapshot
/// and configuration (an empty store is 1.5 MiB here).
pub const SLED_BASE_BYTES: u64 = 2 << 20;
/// The ratio never backs off beyond this.
const MAX_RATIO: f64 = 32.0;
/// Each growth of the file above the high water mark raises the ratio this much.
const BACK_OFF: f64 = 1.25;
/// A pass that acts frees down to this fraction of the target, so that the
/// next one is not due after a single append.
const LOW_WATER: f64 = 0.9;

/// Decides each pass from its measurements; remembers the file's growth.
#[derive(Debug, Clone)]
pub struct Planner {
    limits: Limits,
    ratio: f64,
    last_on_disk: Option<u64>,
}

impl Planner {
    /// A planner for `limits` with the initial ratio.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ratio: INITIAL_RATIO,
            last_on_disk: None,
        }
    }

    /// The bytes on disk per logical byte assumed now.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// The plan for a pass that measured `m`.
    pub fn plan(&mut self, m: &Measure) -> Plan {
        let room = m.free.map_or(u64::MAX, |free| {
            m.on_disk
                .saturating_add(free.saturating_sub(self.limits.min_free_bytes))
        });
        let cap = self.limits.max_bytes.min(room);
        let high = cap as f64 * self.limits.high_water;
        if self
            .last_on_disk
            .is_some_and(|last| m.on_disk > last && m.on_disk as f64 > high)
        {
            self.ratio = (self.ratio * BACK_OFF).min(MAX_RATIO);
        }
        self.last_on_disk = Some(m.on_disk);
        let target = ((high - SLED_BASE_BYTES as f64).max(0.0) / self.ratio) as u64;
        let to_free = if m.logical > target {
            m.logical - (target as f64 * LOW_WATER) as u64
        } else {
            0
        };
        Plan {
            cap,
            target,
            to_free,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn planner() -> Planner {
        Planner::new(Limits {
            max_bytes: 300 * MIB,
            high_water: 0.8,
            min_free_bytes: 10 * MIB,
        })
    }

    fn measure(logical: u64, on_disk: u64, free: Option<u64>) -> Measure {
        Measure {
            logical,
            on_disk,
            free,
        }
    }

    #[test]
    fn nothing_is_freed_below_the_target_and_a_pass_frees_to_low_water() {
        let mut p = planner();
        let plan = p.plan(&measure(10 * MIB, 30 * MIB, None));
        assert_eq!(plan.cap, 300 * MIB);
        assert_eq!(
            plan.target,
            ((240 - 2) as f64 * MIB as f64 / INITIAL_RATIO) as u64
        );
        assert_eq!(plan.to_free, 0);
        let plan = p.plan(&measure(100 * MIB, 30 * MIB, None));
        assert_eq!(
            plan.to_free,
            100 * MIB - (plan.target as f64 * LOW_WATER) as u64
        );
    }

    #[test]
    fn the_file_system_headroom_lowers_the_cap() {
        let mut p = planner();
        // 40 MiB free, 10 of which are kept for others: the store may grow by 30.
        let plan = p.plan(&measure(10 * MIB, 60 * MIB, Some(40 * MIB)));
        assert_eq!(plan.cap, 90 * MIB);
        assert_eq!(plan.to_free, 0);
        // Less free than the headroom: the store may not grow at all.
        let plan = p.plan(&measure(30 * MIB, 60 * MIB, Some(5 * MIB)));
        assert_eq!(plan.cap, 60 * MIB);
        assert!(plan.to_free > 0);
    }

    #[test]
    fn a_file_still_growing_above_high_water_backs_the_ratio_off() {
        let mut p = planner();
        p.plan(&measure(70 * MIB, 200 * MIB, None));
        assert_eq!(p.ratio(), INITIAL_RATIO);
        // Grew, but below the high water mark (240 MiB): no change.
        p.plan(&measure(70 * MIB, 230 * MIB, None));
        assert_eq!(p.ratio(), INITIAL_RATIO);
        let before = p.plan(&measure(70 * MIB, 250 * MIB, None)).target;
        assert!(p.ratio() > INITIAL_RATIO);
        // Above it but steady: no further change.
        let ratio = p.ratio();
        let after = p.plan(&measure(70 * MIB, 250 * MIB, None)).target;
        assert_eq!(p.ratio(), ratio);
        assert_eq!(before, after);
        for _ in 0..100 {
            let on_disk = p.last_on_disk.unwrap() + MIB;
            p.plan(&measure(MIB, on_disk, None));
        }
        assert_eq!(p.ratio(), MAX_RATIO);
    }
}
