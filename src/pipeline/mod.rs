//! The single writer: takes fixes from the one bounded channel in arrival
//! order, runs them through the filters, notes who is online, judges them
//! against the geofences, and appends positions, status changes and geofence
//! events (with the devices' new geofence state, in the same batch) to the
//! store, then wakes readers.
//!
//! It runs on its own OS thread because sled calls block; one writer means one
//! order and one sequence-number space, with no locks. Its checks are plain
//! values tested without a runtime: [`filter`], [`presence`], [`geofence`].

pub mod filter;
pub mod geofence;
pub mod presence;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::fix::{DeviceId, Event, GroupId, Observed, Presence, SourceKind, Status};
use crate::groups::Groups;
use crate::pipeline::filter::{FilterOptions, Filters, Verdict as FilterVerdict};
use crate::pipeline::geofence::{Rules, Tracker, Zones};
use crate::pipeline::presence::Presences;
use crate::sources::clock::{ClockTrust, TrustedClock};
use crate::store::{DeviceState, Reader, Writer};
use crate::telemetry::{self, Value};
use crate::util::labels::{DeviceLabel, DeviceSeries};
use crate::util::log_limit::{Flood, FloodLimit, LINES_PER_REASON};
use crate::wire::quantise;

/// What a reason's last log line of the minute adds.
fn more(last: bool) -> &'static str {
    if last {
        " (further drops for this reason are held back for a minute)"
    } else {
        ""
    }
}

/// Most events appended in one store batch: bursts are batched, but a
/// batch never delays the wake-up of readers by much.
const MAX_BATCH: usize = 256;

/// What the writer shares with health checks (the feed's `/healthz` and the
/// systemd watchdog).
#[derive(Debug, Default)]
pub struct WriterHealth {
    /// Milliseconds since `born` when the writer last went round its loop
    /// (at least every [`TICK`], input or not; also while retrying a
    /// failing store). A writer stuck anywhere stops moving it.
    heartbeat_ms: AtomicU64,
    /// When the writer's health was made.
    born: std::sync::OnceLock<Instant>,
    /// True while appends are failing (full disk, I/O errors).
    pub store_failing: AtomicBool,
    /// True once appends failed on a full disk. sled refuses every write
    /// after an I/O error, even once space is free again, so the store must
    /// be reopened: the daemon restarts when space returns (see `daemon`).
    pub disk_full: AtomicBool,
    /// Fixes accepted and stored since start (the status line's rate).
    pub accepted: AtomicU64,
    /// Devices tracked.
    pub devices: AtomicU64,
    /// Devices online now.
    pub online: AtomicU64,
}

impl WriterHealth {
    fn epoch(&self) -> Instant {
        *self.born.get_or_init(Instant::now)
    }

    /// Notes that the writer is alive now.
    pub fn beat(&self) {
        let ms = self.epoch().elapsed().as_millis() as u64;
        self.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    /// How long ago the writer last went round its loop.
    pub fn since_beat(&self) -> Duration {
        let now = self.epoch().elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.heartbeat_ms.load(Ordering::Relaxed)))
    }
}

/// The configured limits the checks apply (from `[filter]`, `[devices]`
/// and `gateway.clock`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The fix filters' options.
    pub filters: FilterOptions,
    /// Silence after which a device is reported offline.
    pub offline_after: Duration,
    /// Most devices tracked at once.
    pub max_devices: usize,
    /// Whether the system clock may judge fix times.
    pub trust: ClockTrust,
}

/// What the writer checks fixes against, besides validity.
pub struct Checks {
    /// The fix filters, seeded with each device's live fix.
    pub filters: Filters,
    /// Who is online; seeded from the store.
    pub presence: Presences,
    /// Most devices tracked; fixes of further new devices are dropped.
    pub max_devices: usize,
    /// Whether the system clock may judge fix times (future / too old).
    pub clock: TrustedClock,
    /// Device labels of the drop metric, from the process's budget of
    /// device-labelled series, since ids come from outside.
    series: Arc<DeviceSeries>,
    /// Where forgotten devices' live fixes are looked up again.
    reader: Reader,
    /// Devices of configured sources (serial, replay, demo): fixes under
    /// their names from the network are refused, so that no one on the LAN
    /// can move a vehicle's position by publishing for its receiver.
    owned: HashMap<DeviceId, SourceKind>,
    /// Every device's geofence state machine.
    geofences: Tracker,
    /// The geofence rules in force, replaced on reload.
    rules: watch::Receiver<Option<Arc<Rules>>>,
    /// Devices whose geofence state changed in this batch, with its new
    /// stored form: written in the same store batch as the events.
    zones: Vec<(DeviceId, Vec<u8>)>,
    /// Devices' groups, whose changes the intake learns and the writer stores.
    groups: Arc<Groups>,
}

impl Checks {
    /// Seeds the filters of a device that is not tracked (new, or forgotten
    /// to make room) with its stored live fix, so that an old fix can never
    /// replace that live position nor a duplicate of it be taken again.
    fn recall(&mut self, device: &DeviceId) {
        match self.reader.device(device) {
            Ok(Some(state)) => {
                if let Some(fix) = &state.fix {
                    self.filters.seed(device, fix);
                }
                seed_zones(&mut self.geofences, &state);
            }
            Ok(None) => {}
            // Once per fix of an unknown device: counted, not logged at
            // warn, so that a failing store cannot flood the journal here
            // (the writer's own append errors are logged).
            Err(err) => {
                telemetry::STORE_ERRORS.with(["device"]).increment(1);
                tracing::debug!(%device, "cannot read the device's stored state: {err}");
            }
        }
    }

    /// The device label of `device`'s series of the drop metric.
    fn label(&self, source: &'static str, reason: &'static str, device: &DeviceId) -> DeviceLabel {
        self.series.label(
            telemetry::FIXES_DROPPED.name(),
            source,
            reason,
            device.as_str(),
        )
    }
}

impl Checks {
    /// Checks seeded from the store's device states, so that a restart
    /// neither re-accepts a duplicate, nor reports devices online again, nor
    /// has them enter the fences they were in.
    pub fn seeded(
        settings: Settings,
        reader: Reader,
        devices: &[DeviceState],
        rules: watch::Receiver<Option<Arc<Rules>>>,
    ) -> Self {
        let Settings {
            filters: options,
            offline_after,
            max_devices,
            trust,
        } = settings;
        let mut filters = Filters::new(options);
        let mut presence = Presences::new(offline_after);
        let mut geofences = Tracker::new(rules.borrow().clone());
        let now = presence_now();
        for state in devices {
            seed_zones(&mut geofences, state);
            if let Some(fix) = &state.fix {
                filters.seed(&state.device, fix);
            }
            if let Some(status) = state.status {
                presence.seed(state.device.clone(), status, now);
            }
        }
        Self {
            filters,
            presence,
            max_devices,
            clock: TrustedClock::new(trust),
            series: DeviceSeries::shared(max_devices),
            reader,
            owned: HashMap::new(),
            geofences,
            rules,
            zones: Vec::new(),
            groups: Arc::new(Groups::default()),
        }
    }

    /// Stores the groups learned in `groups` with the batches it writes.
    pub fn with_groups(mut self, groups: Arc<Groups>) -> Self {
        self.groups = groups;
        self
    }

    /// Reserves `device` for fixes from `source` only.
    pub fn own(&mut self, device: DeviceId, source: SourceKind) {
        self.owned.insert(device, source);
    }
}

/// Resumes a device's geofence state from the store. A value that cannot be
/// read is counted and dropped: the device's zones start empty (at worst one
/// enter again), which beats refusing its fixes.
fn seed_zones(tracker: &mut Tracker, state: &DeviceState) {
    let Some(bytes) = &state.zones else {
        return;
    };
    match Zones::decode(bytes) {
        Ok(zones) => tracker.seed(state.device.clone(), zones),
        Err(err) => {
            telemetry::STORE_ERRORS.with(["zones"]).increment(1);
            tracing::warn!(device = %state.device, "stored geofence state dropped: {err}");
        }
    }
}

/// How often the writer wakes without input to report silent devices offline.
pub const TICK: Duration = Duration::from_secs(1);

/// The instant presence is judged at. Tokio's clock is the system's
/// monotonic clock, except in tests that pause it
/// (`pipeline/tests.rs` runs the writer on the paused runtime's blocking
/// pool): there a device goes offline when the test advances the clock,
/// without waiting `offline_after` out.
fn presence_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Where the writer reports what it did: the head of the store (the feed
/// and the uplink follow it) and its health (the watchdog, `/healthz`).
pub struct Reports {
    /// The last sequence number stored.
    pub head: watch::Sender<u64>,
    /// Heartbeat, failures and counts.
    pub health: Arc<WriterHealth>,
}

/// What the writer waits with and stops on.
pub struct Control {
    /// Fires at shutdown; the writer gives up a batch the store refuses
    /// only once it has.
    pub shutdown: CancellationToken,
    /// Only to wait on the channel with a timeout: the writer itself stays
    /// on its own thread.
    pub runtime: tokio::runtime::Handle,
}

/// Runs the writer until every sender is gone and the channel is drained, or
/// until `control.shutdown` fires while the store refuses writes.
///
pub fn run(
    mut rx: mpsc::Receiver<Observed>,
    mut writer: Writer,
    mut checks: Checks,
    reports: Reports,
    control: Control,
) {
    let Reports { head, health } = reports;
    let Control { shutdown, runtime } = control;
    let mut dropped_log = FloodLimit::new(Duration::from_secs(60), LINES_PER_REASON, 4096);
    let mut batch: Vec<Observed> = Vec::with_capacity(MAX_BATCH);
    let mut events: Vec<Event> = Vec::with_capacity(MAX_BATCH);
    loop {
        health.beat();
        if !gather(&mut rx, &mut batch, &runtime) {
            break;
        }
        if checks.rules.has_changed().unwrap_or(false) {
            let rules = checks.rules.borrow_and_update().clone();
            checks.geofences.set_rules(rules);
        }
        let clocks = Clocks {
            arrived: presence_now(),
            wall: Utc::now(),
            now: checks.clock.now(),
        };
        for observed in batch.drain(..) {
            check(
                observed,
                &mut checks,
                &clocks,
                &mut events,
                &mut dropped_log,
            );
        }
        expire(&mut checks, &clocks, &mut events, &health);
        let groups = checks.groups.take_unsaved();
        if events.is_empty() && checks.zones.is_empty() && groups.is_empty() {
            continue;
        }
        let state = State {
            zones: &checks.zones,
            groups: &groups,
        };
        match append_with_retry(&mut writer, &events, state, &health, &shutdown) {
            Appended::Stored(seq) => {
                let fixes = events
                    .iter()
                    .filter(|e| matches!(e, Event::Position(_)))
                    .count();
                health.accepted.fetch_add(fixes as u64, Ordering::Relaxed);
                telemetry::STORE_HEAD_SEQ.set(seq as f64);
                head.send_replace(seq);
            }
            Appended::DiskFull => {
                checks.groups.restore_unsaved(groups);
                shed(&events, &mut checks);
                latest_zones_only(&mut checks.zones);
                events.clear();
                continue;
            }
            Appended::Stopping => {
                tracing::error!(
                    lost = events.len(),
                    "shutting down while the store refuses writes: these events are lost"
                );
                telemetry::FIXES_LOST
                    .with(["store"])
                    .increment(events.len() as u64);
            }
            Appended::GaveUp => {
                telemetry::FIXES_LOST
                    .with(["store"])
                    .increment(events.len() as u64);
                tracing::error!(
                    lost = events.len(),
                    "the store has refused writes for {}s: stopping the writer so that the daemon restarts and reopens it",
                    GIVE_UP.as_secs()
                );
                return;
            }
        }
        events.clear();
        checks.zones.clear();
    }
}

/// The zones a full disk could not take: the tracker has moved on, so its
/// devices' zones are written with the next batch the store takes, one (the
/// latest) per device, so that this stays bounded by the devices.
fn latest_zones_only(zones: &mut Vec<(DeviceId, Vec<u8>)>) {
    let mut seen = std::collections::HashSet::new();
    zones.reverse();
    zones.retain(|(device, _)| seen.insert(device.clone()));
    zones.reverse();
}

/// Waits up to a [`TICK`] for the first arrival, then takes what else is
/// queued, up to a batch; false once every sender is gone.
fn gather(
    rx: &mut mpsc::Receiver<Observed>,
    batch: &mut Vec<Observed>,
    runtime: &tokio::runtime::Handle,
) -> bool {
    // The timer must be created inside the runtime's context.
    match runtime.block_on(async { tokio::time::timeout(TICK, rx.recv()).await }) {
        Ok(Some(first)) => batch.push(first),
        Ok(None) => return false,
        Err(_elapsed) => {}
    }
    while !batch.is_empty() && batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    true
}

/// Reports the devices silent for `offline_after` offline, and the counts.
fn expire(checks: &mut Checks, clocks: &Clocks, events: &mut Vec<Event>, health: &WriterHealth) {
    for device in checks.presence.expire(clocks.arrived) {
        telemetry::DEVICE_STATUS.with(["offline"]).increment(1);
        events.push(Event::Status(Status {
            device,
            status: Presence::Offline,
            time: clocks.wall,
        }));
    }
    telemetry::DEVICES_TRACKED.set(checks.presence.len() as f64);
    health
        .devices
        .store(checks.presence.len() as u64, Ordering::Relaxed);
    health
        .online
        .store(checks.presence.online() as u64, Ordering::Relaxed);
}

/// Counts the events of a batch the full disk could not take: the feed and
/// the intake keep running, and the fixes are dropped by policy, not queued.
fn shed(events: &[Event], checks: &mut Checks) {
    for event in events {
        match event {
            Event::Position(p) => {
                let device = checks.label("any", "store_full", &p.device);
                telemetry::FIXES_DROPPED
                    .with::<Value>(["any".into(), "store_full".into(), device.into()])
                    .increment(1);
            }
            Event::Status(_) => {
                telemetry::STORE_ERRORS
                    .with(["status_dropped"])
                    .increment(1);
            }
            Event::Geofence(_) => {
                telemetry::STORE_ERRORS
                    .with(["geofence_dropped"])
                    .increment(1);
            }
        }
    }
}

/// Forgets the longest-silent offline device; false when all are online.
fn make_room(checks: &mut Checks) -> bool {
    match checks.presence.evict_offline() {
        Some(device) => {
            checks.filters.forget(&device);
            checks.geofences.forget(&device);
            true
        }
        None => false,
    }
}

/// The instants one batch of arrivals is judged at.
#[derive(Debug, Clone, Copy)]
struct Clocks {
    /// Monotonic: presence.
    arrived: Instant,
    /// The system clock: status events' times.
    wall: DateTime<Utc>,
    /// The system clock if it may judge fix times.
    now: Option<DateTime<Utc>>,
}

/// Checks one arrival and adds what it causes to `events`: a status change
/// (online) and the position, unless a filter drops it.
#[expect(
    clippy::too_many_lines,
    reason = "the writer's checks of one arrival in the order they apply (ownership, room, filters, presence, geofences); each step uses what the one before decided"
)]
fn check(
    observed: Observed,
    checks: &mut Checks,
    clocks: &Clocks,
    events: &mut Vec<Event>,
    dropped_log: &mut FloodLimit<DeviceId, (&'static str, &'static str)>,
) {
    let Clocks { arrived, wall, now } = *clocks;
    let source = observed.source.as_str();
    let class = observed.class.as_str();
    let mut position = observed.position;
    let device = position.device.clone();
    if checks
        .owned
        .get(&device)
        .is_some_and(|owner| *owner != observed.source)
    {
        // A configured name: bounded by the configuration, so it keeps its label.
        telemetry::FIXES_DROPPED
            .with::<Value>([
                source.into(),
                "reserved_device".into(),
                DeviceLabel::configured(&device).into(),
            ])
            .increment(1);
        if let Flood::Log {
            suppressed,
            held,
            last,
        } = dropped_log.check(&device, (source, "reserved_device"), Instant::now())
        {
            tracing::warn!(%device, source, suppressed, held, "fix refused: the device belongs to a configured source{}", more(last));
        }
        return;
    }
    let known = checks.presence.knows(&device);
    if !known {
        checks.recall(&device);
    }
    let mut verdict = match checks.filters.check(&device, &position.fix, now) {
        FilterVerdict::Live => Ok(false),
        FilterVerdict::Historic => Ok(true),
        FilterVerdict::Drop(reason) => Err(reason.as_str()),
    };
    // Room for a new device is made only for a fix that passed the filters:
    // a flood of bad fixes under new names must not evict real devices.
    if !known
        && verdict.is_ok()
        && checks.presence.len() >= checks.max_devices
        && !make_room(checks)
    {
        checks.filters.forget(&device);
        checks.geofences.forget(&device);
        verdict = Err("too_many_devices");
    }
    // An arrival means the device is reporting, whatever becomes of the fix.
    if known || verdict.is_ok() {
        if let Some(presence) = checks.presence.heard(&device, arrived) {
            telemetry::DEVICE_STATUS.with(["online"]).increment(1);
            events.push(Event::Status(Status {
                device: device.clone(),
                status: presence,
                time: wall,
            }));
        }
    }
    match verdict {
        Ok(historic) => {
            position.historic = historic;
            let kind = if historic { "historic" } else { "live" };
            telemetry::FIXES_ACCEPTED
                .with([source, class, kind])
                .increment(1);
            // Judged where the store will say it was: within 8 mm of a
            // boundary the stored position must not contradict its event.
            position.fix.lat = stored(quantise::lat(position.fix.lat), quantise::LAT_MAX);
            position.fix.lon = stored(quantise::lon(position.fix.lon), quantise::LON_MAX);
            let (caused, zones) = checks.geofences.observe(&position);
            // The fix first: the events it caused follow it in the log.
            events.push(Event::Position(position));
            for event in caused {
                telemetry::GEOFENCE_EVENTS
                    .with([event.crossing.as_str(), kind])
                    .increment(1);
                events.push(Event::Geofence(event));
            }
            if let Some(zones) = zones {
                checks.zones.push((device, zones));
            }
        }
        Err(reason) => {
            telemetry::FIXES_DROPPED
                .with::<Value>([
                    source.into(),
                    reason.into(),
                    checks.label(source, reason, &device).into(),
                ])
                .increment(1);
            if let Flood::Log {
                suppressed,
                held,
                last,
            } = dropped_log.check(&device, (source, reason), Instant::now())
            {
                tracing::info!(%device, source, reason, suppressed, held, time = %crate::fix::time_ms::format(&position.fix.time), "fix dropped by filter{}", more(last));
            }
        }
    }
}

/// Degrees back from the units the store and the wire keep (a validated
/// fix is always within range).
fn stored(units: i64, max: i64) -> f64 {
    quantise::degrees(units, max).unwrap_or(units as f64 / quantise::PER_DEGREE)
}

/// How long the writer retries a store that fails for another reason than
/// a full disk before it gives up so that the daemon restarts (sled keeps
/// refusing writes after an I/O error until it is reopened).
const GIVE_UP: Duration = Duration::from_secs(60);

/// What became of one append.
enum Appended {
    /// Stored; the last sequence number.
    Stored(u64),
    /// Refused for a full disk: the events are dropped and counted.
    DiskFull,
    /// Refused, and the daemon is shutting down.
    Stopping,
    /// Refused for [`GIVE_UP`]: the writer stops.
    GaveUp,
}

/// Appends, retrying with back-off while the store fails for a reason that
/// may pass: the channel fills and holds the sources back, so nothing
/// accepted is dropped. A full disk is not retried: the writer drops and
/// counts what it cannot store and keeps draining the channel, so that the
/// feed and the intake stay up, until the daemon restarts to reopen the store.
/// Device state written with a batch of events.
#[derive(Clone, Copy)]
struct State<'a> {
    zones: &'a [(DeviceId, Vec<u8>)],
    groups: &'a [(DeviceId, GroupId)],
}

fn append_with_retry(
    writer: &mut Writer,
    events: &[Event],
    state: State<'_>,
    health: &WriterHealth,
    shutdown: &CancellationToken,
) -> Appended {
    let mut delay = Duration::from_millis(50);
    let started = Instant::now();
    loop {
        match writer.append_with_state(events, state.zones, state.groups) {
            Ok(seq) => {
                if health.store_failing.swap(false, Ordering::Relaxed) {
                    health.disk_full.store(false, Ordering::Relaxed);
                    tracing::info!("store accepts writes again");
                }
                return Appended::Stored(seq);
            }
            Err(err) => {
                telemetry::STORE_ERRORS.with(["append"]).increment(1);
                let first = !health.store_failing.swap(true, Ordering::Relaxed);
                if err.is_disk_full() {
                    if !health.disk_full.swap(true, Ordering::Relaxed) {
                        tracing::error!(
                            "THE STORE'S DISK IS FULL: fixes are dropped (fixgate_fixes_dropped_total{{reason=\"store_full\"}}) until space is free, then the daemon restarts to reopen the store: {err}"
                        );
                    }
                    return Appended::DiskFull;
                }
                if first {
                    tracing::error!("store append failed, retrying: {err}");
                }
                if shutdown.is_cancelled() {
                    return Appended::Stopping;
                }
                if started.elapsed() >= GIVE_UP {
                    return Appended::GaveUp;
                }
                // Failing, not stuck: it gives up by itself after GIVE_UP.
                health.beat();
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
