//! The disk budget: keeps the store under its configured size.
//!
//! Each pass measures the store (the ledger's logical bytes, sled's files,
//! the file system's free space), asks the planner ([`plan`]) how much to
//! free, and frees it in this order, oldest segments first, until enough is
//! free:
//!
//! 1. records acknowledged upstream — or every record, when the policy says
//!    no uplink waits for them ([`Policy::keep_unacked`] false): history;
//! 2. thinning of positions nobody has acknowledged ([`thin`]), each segment
//!    once;
//! 3. dropping positions;
//! 4. dropping the other events (status changes, geofence events) last.
//!
//! It only ever rewrites or deletes compacted segments, which the writer
//! never touches again; the writer's raw tail is left alone. Every change is
//! one sled batch, so a crash sees a segment before or after, never half.
//! Removed events leave gone slots or key gaps that readers skip. The last
//! value of the log is never deleted (emptied instead), because the writer
//! numbers on from it after a restart.

mod plan;
mod thin;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use plan::{INITIAL_RATIO, Limits, Measure, Plan, Planner, SLED_BASE_BYTES};
pub use thin::Thin;

use super::ledger::{Entry, Kind};
use super::{Acked, Store, StoreError, lock, log_key, segment};
use crate::fix::Event;
use crate::telemetry;

/// How the budget behaves; from `[store]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// The size limits.
    pub limits: Limits,
    /// How positions are thinned before any is dropped.
    pub thin: Thin,
    /// Whether records not yet acknowledged upstream wait for an uplink:
    /// then they are only thinned, and dropped after every acknowledged one
    /// is gone. When false (no uplink is configured), every record is
    /// history, deleted oldest first like acknowledged ones.
    pub keep_unacked: bool,
}

/// What the budget is doing, for the logs (one line per change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Within the budget, or freeing space from history only.
    Normal,
    /// Thinning positions that are not acknowledged.
    Thinning,
    /// Dropping records that are not acknowledged.
    Dropping,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// The plan it followed.
    pub plan: Option<Plan>,
    /// Acknowledged (or history) records deleted.
    pub deleted_acked: u64,
    /// Positions removed by thinning.
    pub thinned: u64,
    /// Positions dropped.
    pub dropped_positions: u64,
    /// Other events dropped.
    pub dropped_events: u64,
    /// Logical bytes freed.
    pub freed: u64,
}

/// The four ways to free space, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    History,
    Thin,
    DropPositions,
    DropEvents,
}

/// How long passes must stay better than the state reported before a
/// better one is: one line per real change, not per pass.
const SETTLE: Duration = Duration::from_secs(60);

/// Least time between two passes brought forward by growth.
const MIN_SPACING: Duration = Duration::from_millis(250);

/// Segments rewritten or deleted per sled batch.
const BATCH_VALUES: usize = 32;

/// The budget of one store: its planner and what it last reported.
pub struct Budget {
    store: Store,
    policy: Policy,
    planner: Planner,
    state: State,
    /// Where free space is measured: the store's directory.
    path: PathBuf,
    /// The logical bytes at the last pass, to tell growth worth a pass.
    last_logical: u64,
    /// The target of the last pass.
    last_target: u64,
    /// When a pass last was as bad as [`Budget::state`].
    held_since: std::time::Instant,
}

impl Budget {
    /// The budget of `store`.
    pub fn new(store: Store, policy: Policy) -> Self {
        let path = store.path().to_owned();
        Self {
            store,
            policy,
            planner: Planner::new(policy.limits),
            state: State::Normal,
            path,
            last_logical: 0,
            last_target: u64::MAX,
            held_since: std::time::Instant::now(),
        }
    }

    /// What it is doing now.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the store grew enough since the last pass to warrant one now
    /// (a sixteenth of the target): cheap, for the writer's every wake-up.
    pub fn due(&self) -> bool {
        let logical = self.store.usage().bytes;
        logical > self.last_target
            || logical.saturating_sub(self.last_logical) > self.last_target / 16
    }

    /// Measures, plans and frees what the plan asks. Blocks on sled.
    pub fn pass(&mut self) -> Result<Pass, StoreError> {
        let usage = self.store.usage();
        let on_disk = self.store.size_on_disk()?;
        let plan = self.planner.plan(&Measure {
            logical: usage.bytes,
            on_disk,
            free: free_bytes(&self.path),
        });
        self.last_target = plan.target;
        let mut pass = Pass {
            plan: Some(plan),
            ..Pass::default()
        };
        if plan.to_free > 0 {
            self.free(plan.to_free, &mut pass)?;
        }
        self.report(&pass, &plan);
        let usage = self.store.usage();
        self.last_logical = usage.bytes;
        telemetry::STORE_BUFFERED_RECORDS.set(usage.records as f64);
        telemetry::STORE_BUFFERED_BYTES.set(usage.bytes as f64);
        let age = usage
            .oldest_age(chrono::Utc::now())
            .map_or(0.0, |a| a.as_secs_f64());
        telemetry::STORE_OLDEST_BUFFERED_SECONDS.set(age);
        telemetry::STORE_SIZE_BYTES.set(on_disk as f64);
        telemetry::STORE_BUDGET_BYTES.set(plan.cap as f64);
        Ok(pass)
    }

    /// Runs the phases in order until `goal` logical bytes are free.
    fn free(&mut self, goal: u64, pass: &mut Pass) -> Result<(), StoreError> {
        let acked = if self.policy.keep_unacked {
            self.store.uplink_acked()?
        } else {
            Acked::new()
        };
        let protected: HashSet<u64> = self
            .store
            .reader()
            .devices()?
            .iter()
            .filter_map(|d| d.seq)
            .collect();
        let mut phases = vec![Phase::History];
        if self.policy.keep_unacked {
            if self.policy.thin != Thin::Off {
                phases.push(Phase::Thin);
            }
            phases.extend([Phase::DropPositions, Phase::DropEvents]);
        }
        for phase in phases {
            if pass.freed >= goal {
                break;
            }
            self.sweep(phase, goal, &acked, &protected, pass)?;
        }
        Ok(())
    }

    /// Applies one phase to the segments it concerns, oldest first.
    #[expect(
        clippy::too_many_arguments,
        reason = "one phase of the budget pass over its own bookkeeping (goal, acknowledged ranges, protected segments, pass counters)"
    )]
    fn sweep(
        &mut self,
        phase: Phase,
        goal: u64,
        acked: &Acked,
        protected: &HashSet<u64>,
        pass: &mut Pass,
    ) -> Result<(), StoreError> {
        let (candidates, last) = {
            let ledger = lock(&self.store.ledger);
            let last = ledger.iter().next_back().map(|(k, _)| k);
            let candidates: Vec<(u64, Entry)> = ledger
                .iter()
                .take_while(|(_, e)| e.kind != Kind::Raw)
                .filter(|(first, e)| self.concerns(phase, *first, e, acked))
                .collect();
            (candidates, last)
        };
        let mut batch = Batch::default();
        for (first, entry) in candidates {
            if pass.freed + batch.freed >= goal {
                break;
            }
            let Some(value) = self.store.db.get(log_key(first))? else {
                continue;
            };
            // Only segments: a raw value belongs to the writer.
            if !segment::is_segment(&value) {
                continue;
            }
            let Ok(slots) = segment::decode(&value) else {
                // Damaged: readers skip it; the budget leaves it for diagnosis.
                continue;
            };
            let keep = self.keep(phase, &slots, first, acked, protected);
            batch.add(phase, first, entry, &slots, &keep, Some(first) == last);
            if batch.len() >= BATCH_VALUES {
                self.apply(std::mem::take(&mut batch), pass)?;
            }
        }
        self.apply(batch, pass)
    }

    /// Whether `phase` has anything to do with the value at `first`.
    fn concerns(&self, phase: Phase, first: u64, e: &Entry, acked: &Acked) -> bool {
        match phase {
            Phase::History if self.policy.keep_unacked => {
                e.present > 0 && acked.overlaps(&(first..=first + u64::from(e.slots) - 1))
            }
            Phase::History | Phase::DropEvents => e.present > 0,
            // Fewer than three positions cannot lose one (run ends are kept).
            Phase::Thin => e.kind == Kind::Segment && e.positions > 2,
            Phase::DropPositions => e.positions > 0,
        }
    }

    /// Which slots of a segment `phase` keeps.
    #[expect(
        clippy::too_many_arguments,
        reason = "a pure decision over one segment, with every fact it depends on passed in"
    )]
    fn keep(
        &self,
        phase: Phase,
        slots: &[Option<Event>],
        first: u64,
        acked: &Acked,
        protected: &HashSet<u64>,
    ) -> Vec<bool> {
        let present = slots.iter().map(Option::is_some);
        match phase {
            Phase::History => present
                .enumerate()
                .map(|(i, p)| p && self.policy.keep_unacked && !acked.contains(&(first + i as u64)))
                .collect(),
            Phase::Thin => thin::keep(slots, first, protected, self.policy.thin),
            Phase::DropPositions => slots
                .iter()
                .map(|s| matches!(s, Some(Event::Status(_) | Event::Geofence(_))))
                .collect(),
            Phase::DropEvents => vec![false; slots.len()],
        }
    }

    /// Writes one batch of rewrites and deletions; then updates the ledger
    /// and counts.
    fn apply(&mut self, batch: Batch, pass: &mut Pass) -> Result<(), StoreError> {
        if batch.changes.is_empty() {
            return Ok(());
        }
        self.store.db.apply_batch(batch.sled)?;
        let mut ledger = lock(&self.store.ledger);
        for (first, entry) in batch.changes {
            match entry {
                Some(entry) => ledger.put(first, entry),
                None => ledger.remove(first),
            }
        }
        drop(ledger);
        let c = batch.counts;
        pass.deleted_acked += c.deleted_acked;
        pass.thinned += c.thinned;
        pass.dropped_positions += c.dropped_positions;
        pass.dropped_events += c.dropped_events;
        pass.freed += batch.freed;
        telemetry::STORE_DELETED_ACKED.increment(c.deleted_acked);
        telemetry::STORE_THINNED.increment(c.thinned);
        telemetry::STORE_DROPPED
            .with(["position"])
            .increment(c.dropped_positions);
        telemetry::STORE_DROPPED
            .with(["event"])
            .increment(c.dropped_events);
        Ok(())
    }

    /// Logs a change of state, once. A worse state is reported at once; a
    /// better one only after [`SETTLE`] without a pass as bad as the last:
    /// at the cap, passes that thin and passes that drop alternate.
    fn report(&mut self, pass: &Pass, plan: &Plan) {
        let state = if pass.dropped_positions + pass.dropped_events > 0 {
            State::Dropping
        } else if pass.thinned > 0 {
            State::Thinning
        } else {
            State::Normal
        };
        if pass.freed > 0 {
            tracing::debug!(?pass, ratio = self.planner.ratio(), "store budget pass");
        }
        let now = std::time::Instant::now();
        if state >= self.state {
            self.held_since = now;
        }
        let settled = now.duration_since(self.held_since) >= SETTLE;
        if state == self.state || (state < self.state && !settled) {
            return;
        }
        self.state = state;
        let (cap, target) = (plan.cap, plan.target);
        match state {
            State::Normal => tracing::info!(
                cap,
                target,
                "store budget: back to deleting only acknowledged or history records"
            ),
            State::Thinning => tracing::warn!(
                cap,
                target,
                thin = ?self.policy.thin,
                "store budget: the store is near its size limit; thinning old positions that were not acknowledged"
            ),
            State::Dropping => tracing::warn!(
                cap,
                target,
                "store budget: the store is at its size limit; DROPPING the oldest records that were not acknowledged (counted in fixgate_store_dropped_total)"
            ),
        }
    }
}

/// Events removed by one batch, by how.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    deleted_acked: u64,
    thinned: u64,
    dropped_positions: u64,
    dropped_events: u64,
}

/// One sled batch of segment rewrites and deletions, with what it will do
/// to the ledger and the counters once applied.
#[derive(Default)]
struct Batch {
    sled: sled::Batch,
    changes: Vec<(u64, Option<Entry>)>,
    counts: Counts,
    freed: u64,
}

impl Batch {
    fn len(&self) -> usize {
        self.changes.len()
    }

    /// Adds the segment at `first` with only the `keep` slots left.
    #[expect(
        clippy::too_many_arguments,
        reason = "records one segment's outcome; the arguments are the facts of that outcome"
    )]
    fn add(
        &mut self,
        phase: Phase,
        first: u64,
        old: Entry,
        slots: &[Option<Event>],
        keep: &[bool],
        is_last: bool,
    ) {
        let kept: Vec<Option<&Event>> = slots
            .iter()
            .zip(keep)
            .map(|(s, &k)| s.as_ref().filter(|_| k))
            .collect();
        let mut removed = Counts::default();
        for (slot, &k) in slots.iter().zip(keep) {
            match slot {
                Some(_) if k => {}
                None => {}
                Some(event) => {
                    let n = match (phase, event) {
                        (Phase::History, _) => &mut removed.deleted_acked,
                        (Phase::Thin, _) => &mut removed.thinned,
                        (_, Event::Position(_)) => &mut removed.dropped_positions,
                        (_, Event::Status(_) | Event::Geofence(_)) => &mut removed.dropped_events,
                    };
                    *n += 1;
                }
            }
        }
        let none_removed = removed.deleted_acked
            + removed.thinned
            + removed.dropped_positions
            + removed.dropped_events
            == 0;
        // A segment that thinning leaves whole is still marked thinned, so
        // that it is not decoded again on every pass.
        if none_removed && phase != Phase::Thin {
            return;
        }
        let thinned = phase == Phase::Thin || old.kind == Kind::Thinned;
        let key = log_key(first);
        let entry = if kept.iter().all(Option::is_none) && !is_last {
            self.sled.remove(&key[..]);
            None
        } else {
            let value = segment::encode_rewritten(kept.iter().copied(), thinned);
            let kind = if thinned {
                Kind::Thinned
            } else {
                Kind::Segment
            };
            let entry = Entry::of(kept.iter().copied(), key.len() + value.len(), kind);
            self.sled.insert(&key[..], value);
            Some(entry)
        };
        self.freed += u64::from(old.bytes).saturating_sub(entry.map_or(0, |e| u64::from(e.bytes)));
        self.changes.push((first, entry));
        let c = &mut self.counts;
        c.deleted_acked += removed.deleted_acked;
        c.thinned += removed.thinned;
        c.dropped_positions += removed.dropped_positions;
        c.dropped_events += removed.dropped_events;
    }
}

/// Free bytes of the file system holding `path`, as an unprivileged writer
/// sees them; `None` when it cannot be asked.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and
    // `stat` points to writable memory of the struct's size; statvfs only
    // writes that struct, and it is read only after statvfs reported success.
    let stat = unsafe {
        if libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    #[allow(clippy::useless_conversion)] // the field widths differ between targets
    let (avail, frsize) = (u64::from(stat.f_bavail), u64::from(stat.f_frsize));
    Some(avail.saturating_mul(frsize))
}

/// Runs passes every `interval`, and sooner when the writer's appends grew
/// the store by a sixteenth of its target, until `shutdown`.
pub async fn run(
    budget: Budget,
    interval: Duration,
    head: watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut budget = Some(budget);
    // `None` once the writer is gone: the ticker still serves until shutdown.
    let mut head = Some(head);
    let mut last_pass = tokio::time::Instant::now();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
            alive = async {
                match head.as_mut() {
                    Some(h) => h.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            } => {
                if !alive {
                    head = None;
                    continue;
                }
                // Growth brings a pass forward, at most every MIN_SPACING.
                if last_pass.elapsed() < MIN_SPACING || !budget.as_ref().is_some_and(Budget::due) {
                    continue;
                }
            }
        }
        last_pass = tokio::time::Instant::now();
        let Some(mut b) = budget.take() else { return };
        let done = tokio::task::spawn_blocking(move || {
            let result = b.pass();
            (b, result)
        })
        .await;
        match done {
            Ok((b, result)) => {
                match result {
                    Ok(_) => failing = false,
                    Err(err) => {
                        telemetry::STORE_ERRORS.with(["budget"]).increment(1);
                        // Once per streak: a store that refuses writes fails every pass.
                        if !std::mem::replace(&mut failing, true) {
                            tracing::error!("store budget pass failed: {err}");
                        }
                    }
                }
                budget = Some(b);
            }
            Err(join) => {
                tracing::error!(
                    "store budget task failed: {join}; the store is no longer kept within its size"
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fix::{DeviceId, Fix, Geofence, Position, Presence, Status};
    use crate::store::StoreOptions;
    use chrono::{TimeZone, Utc};
    use std::sync::Arc;

    const SEG: u64 = segment::SEGMENT_RECORDS as u64;

    fn open(dir: &Path) -> Store {
        Store::open_in_test(&StoreOptions {
            path: dir.join("store"),
            cache_bytes: 1 << 20,
            flush_interval: Duration::from_millis(100),
        })
        .0
    }

    /// `n` events: two devices driving east at 10 m/s, 1 Hz, with up to 5 m
    /// of noise across the road, interleaved, and a status change every 100
    /// events.
    fn events(from: u64, n: u64) -> Vec<Event> {
        (from..from + n)
            .map(|i| {
                let device = DeviceId::new(if i % 2 == 0 { "a" } else { "b" }).unwrap();
                let time = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
                    + chrono::Duration::seconds(i as i64 / 2);
                if i % 100 == 99 {
                    return Event::Status(Status {
                        device,
                        status: Presence::Online,
                        time,
                    });
                }
                let lon = 5.0 + (i / 2) as f64 * 10.0 / 68_500.0;
                let noise = (i * 7919 % 61) as f64 / 61.0 * 5.0 / 111_000.0;
                Event::Position(Position::new(device, Fix::new(time, 52.0 + noise, lon)))
            })
            .collect()
    }

    fn policy(keep_unacked: bool) -> Policy {
        Policy {
            limits: Limits {
                max_bytes: 1 << 40,
                high_water: 0.8,
                min_free_bytes: 0,
            },
            thin: Thin::DouglasPeucker { tolerance_m: 10.0 },
            keep_unacked,
        }
    }

    fn all(store: &Store) -> Vec<u64> {
        store
            .reader()
            .read_after(0, usize::MAX)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect()
    }

    #[test]
    fn acknowledged_records_go_first_then_positions_are_thinned_then_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut writer = store.writer().unwrap();
        let base = writer.head();
        let n = 20 * SEG + 30;
        writer.append(&events(0, n)).unwrap();
        let mut acked = Acked::new();
        acked.insert(base + 1..=base + 4 * SEG);
        store.set_uplink_acked(&acked).unwrap();
        let mut budget = Budget::new(store.clone(), policy(true));
        let segment_bytes = u64::from(lock(&store.ledger).get(base + 1).unwrap().bytes);

        // A little space: acknowledged records only, oldest first.
        let mut pass = Pass::default();
        budget.free(2 * segment_bytes, &mut pass).unwrap();
        assert_eq!(pass.deleted_acked, 2 * SEG);
        assert_eq!((pass.thinned, pass.dropped_positions), (0, 0));
        assert_eq!(all(&store).first(), Some(&(base + 2 * SEG + 1)));

        // More: the rest of the acknowledged ones, then thinning, which
        // leaves straight tracks with their ends only.
        let live: Vec<u64> = store
            .reader()
            .devices()
            .unwrap()
            .iter()
            .filter_map(|d| d.seq)
            .collect();
        // The two acknowledged segments left, and a third of the others.
        let sizes: Vec<(u64, u64)> = lock(&store.ledger)
            .iter()
            .filter(|(_, e)| e.kind == Kind::Segment)
            .map(|(k, e)| (k, u64::from(e.bytes)))
            .collect();
        let acked_bytes: u64 = sizes
            .iter()
            .filter(|(k, _)| acked.contains(k))
            .map(|(_, b)| b)
            .sum();
        let other_bytes: u64 = sizes
            .iter()
            .filter(|(k, _)| !acked.contains(k))
            .map(|(_, b)| b)
            .sum();
        let mut pass = Pass::default();
        budget
            .free(acked_bytes + other_bytes / 3, &mut pass)
            .unwrap();
        assert_eq!(pass.deleted_acked, 2 * SEG);
        assert!(pass.thinned > SEG, "{pass:?}");
        assert_eq!(pass.dropped_positions + pass.dropped_events, 0);
        let left = all(&store);
        assert!(
            live.iter().all(|s| left.contains(s)),
            "live positions are never thinned"
        );
        assert!(left.windows(2).all(|w| w[0] < w[1]));

        // Everything: positions are dropped, then statuses; the raw tail stays.
        let mut pass = Pass::default();
        budget.free(u64::MAX, &mut pass).unwrap();
        assert!(
            pass.dropped_positions > 0 && pass.dropped_events > 0,
            "{pass:?}"
        );
        let left = all(&store);
        assert_eq!(left.len() as u64, n % SEG, "only the raw tail is left");
        assert_eq!(left.first(), Some(&(base + n - n % SEG + 1)));

        // The ledger kept in memory is the one a restart reads.
        let usage = store.usage();
        store.close(writer.head()).unwrap();
        drop((budget, writer, store));
        let store = open(dir.path());
        assert_eq!(store.usage(), usage);
        assert_eq!(
            store.writer().unwrap().head(),
            base + n,
            "numbers are never reused"
        );
    }

    #[test]
    fn dropping_positions_leaves_statuses_and_geofence_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut writer = store.writer().unwrap();
        // Every status change followed by a geofence event.
        let mut events = events(0, 4 * SEG);
        for i in (100..events.len()).step_by(100) {
            let time = events[i].time();
            events[i] = Event::Geofence(Geofence::example("a", time));
        }
        writer.append(&events).unwrap();
        let mut budget = Budget::new(store.clone(), policy(true));
        let mut pass = Pass::default();
        budget
            .sweep(
                Phase::DropPositions,
                u64::MAX,
                &Acked::new(),
                &HashSet::new(),
                &mut pass,
            )
            .unwrap();
        let is_position = |e: &Event| matches!(e, Event::Position(_));
        let positions = events.iter().filter(|e| is_position(e)).count();
        assert_eq!(pass.dropped_positions, positions as u64);
        assert_eq!(pass.dropped_events, 0);
        let left: Vec<Event> = store
            .reader()
            .read_after(0, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|r| r.event)
            .collect();
        let others: Vec<Event> = events.into_iter().filter(|e| !is_position(e)).collect();
        assert!(others.iter().any(|e| matches!(e, Event::Geofence(_))));
        assert_eq!(left, others);
    }

    #[test]
    fn without_an_uplink_every_record_is_history_deleted_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut writer = store.writer().unwrap();
        let base = writer.head();
        writer.append(&events(0, 8 * SEG)).unwrap();
        let mut budget = Budget::new(store.clone(), policy(false));
        let mut pass = Pass::default();
        budget.free(store.usage().bytes / 2, &mut pass).unwrap();
        let deleted = pass.deleted_acked;
        assert!(
            deleted % SEG == 0 && (3 * SEG..=5 * SEG).contains(&deleted),
            "{pass:?}"
        );
        assert_eq!(
            pass.thinned + pass.dropped_positions + pass.dropped_events,
            0
        );
        assert_eq!(all(&store).first(), Some(&(base + deleted + 1)));
        // The newest segment is emptied, not deleted: the writer numbers on from it.
        let mut pass = Pass::default();
        budget.free(u64::MAX, &mut pass).unwrap();
        assert!(all(&store).is_empty());
        assert_eq!(store.reader().oldest().unwrap(), None);
        drop(writer);
        assert_eq!(store.writer().unwrap().head(), base + 8 * SEG);
    }

    #[test]
    fn a_pass_plans_from_its_measurements_and_reports_its_state_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut writer = store.writer().unwrap();
        writer.append(&events(0, 30 * SEG)).unwrap();
        let mut tight = policy(true);
        // A cap whose target is three quarters of what is stored.
        let target = store.usage().bytes as f64 * 0.75;
        tight.limits.max_bytes =
            ((target * INITIAL_RATIO + SLED_BASE_BYTES as f64) / tight.limits.high_water) as u64;
        let mut budget = Budget::new(store.clone(), tight);
        let pass = budget.pass().unwrap();
        let plan = pass.plan.unwrap();
        assert!(plan.to_free > 0 && pass.freed >= plan.to_free, "{pass:?}");
        assert!(
            store.usage().bytes <= plan.target,
            "{pass:?} {:?}",
            store.usage()
        );
        assert_eq!(budget.state(), State::Thinning);
        assert!(!budget.due());
    }

    #[test]
    fn a_worse_state_is_reported_at_once_a_better_one_once_it_settles() {
        let dir = tempfile::tempdir().unwrap();
        let mut budget = Budget::new(open(dir.path()), policy(true));
        let plan = Plan {
            cap: 1,
            target: 1,
            to_free: 1,
        };
        let dropping = Pass {
            dropped_positions: 1,
            ..Pass::default()
        };
        let thinning = Pass {
            thinned: 1,
            ..Pass::default()
        };
        budget.report(&dropping, &plan);
        assert_eq!(budget.state(), State::Dropping);
        budget.report(&thinning, &plan);
        budget.report(&Pass::default(), &plan);
        assert_eq!(budget.state(), State::Dropping, "not after one better pass");
        budget.held_since -= SETTLE;
        budget.report(&thinning, &plan);
        assert_eq!(budget.state(), State::Thinning);
        budget.report(&dropping, &plan);
        assert_eq!(budget.state(), State::Dropping);
    }

    #[test]
    fn a_reader_sees_no_repeats_and_no_stall_while_the_budget_and_the_writer_work() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut writer = store.writer().unwrap();
        let base = writer.head();
        let total = 120 * SEG;
        let appender = std::thread::spawn(move || {
            for i in 0..total / 8 {
                writer.append(&events(i * 8, 8)).unwrap();
            }
        });
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let trimmer = {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || {
                let mut budget = Budget::new(store, policy(true));
                let mut freed = Pass::default();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    budget.free(3000, &mut freed).unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                }
                freed
            })
        };
        let reader = store.reader();
        let mut after = base;
        let mut read = 0;
        // A stall is no progress for a minute, however long the whole run
        // takes (minutes under qemu-user for the ARM unit tests).
        let mut progressed = std::time::Instant::now();
        while after < base + total {
            assert!(
                progressed.elapsed() < Duration::from_secs(60),
                "reader stuck at {after}"
            );
            for record in reader.read_after(after, 500).unwrap() {
                assert!(
                    record.seq > after,
                    "no repeat: {} after {after}",
                    record.seq
                );
                after = record.seq;
                read += 1;
                progressed = std::time::Instant::now();
            }
        }
        appender.join().unwrap();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let freed = trimmer.join().unwrap();
        assert!(freed.thinned + freed.dropped_positions > 0, "{freed:?}");
        assert!(read > 0);
    }
}
