//! The single writer in process, against a temporary store, with paused
//! time: fixes in, records out; presence by the clock; the filters' drops
//! and their reasons; geofence events in the batch of their fix; and the
//! bounded channel holding sources back.
//!
//! The writer runs as the daemon runs it, on a thread of its own with a
//! handle of the runtime (here the blocking pool's, so that its clock is the
//! test's paused one). While it runs the runtime cannot see what it does, so
//! the clock never jumps by itself: the tests move it with
//! `tokio::time::advance`, and wait for the writer's answer (the head it
//! publishes, or the store) under a bound in real time.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::filter::FilterOptions;
use super::geofence::{FenceSet, Options as FenceOptions, Rules, Zones, parse_geojson};
use super::{Checks, Settings, TICK, WriterHealth};
use crate::fix::{DeviceClass, Event, Fix, Observed, Position, Presence, SourceKind};
use crate::sources::clock::ClockTrust;
use crate::store::Writer;
use crate::testing::{TempStore, fix_at, id, metric, metrics, now_s, real_timeout, within};

/// Longest the tests wait in real time for the writer thread to answer.
const ANSWER: Duration = Duration::from_secs(20);

/// How the writer under test is set up.
struct Setup {
    offline_after: Duration,
    filters: FilterOptions,
    max_devices: usize,
    queue: usize,
    rules: Option<Rules>,
    /// Devices reserved for a configured source.
    owned: Vec<(&'static str, SourceKind)>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            offline_after: Duration::from_secs(30),
            filters: FilterOptions::default(),
            max_devices: 100,
            queue: 64,
            rules: None,
            owned: Vec::new(),
        }
    }
}

/// The writer, its channel and its store.
struct Harness {
    store: TempStore,
    tx: Option<mpsc::Sender<Observed>>,
    /// The writer's parts until it is started.
    parts: Option<(mpsc::Receiver<Observed>, Checks, Writer, watch::Sender<u64>)>,
    head: watch::Receiver<u64>,
    health: Arc<WriterHealth>,
    thread: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    /// A writer over a new store, not started yet.
    fn new(setup: Setup) -> Self {
        Self::over(TempStore::new(), setup)
    }

    /// A writer over `store`, seeded from it as the daemon seeds it.
    fn over(store: TempStore, setup: Setup) -> Self {
        // Before the writer records anything: counts recorded earlier would
        // go to the no-op recorder and be lost to `metric`.
        metrics();
        let rules = watch::channel(setup.rules.map(Arc::new)).1;
        let settings = Settings {
            filters: setup.filters,
            offline_after: setup.offline_after,
            max_devices: setup.max_devices,
            trust: ClockTrust::Always,
        };
        let mut checks =
            Checks::seeded(settings, store.store.reader(), &store.report.devices, rules);
        for (device, source) in setup.owned {
            checks.own(id(device), source);
        }
        let writer = store.store.writer().expect("the writer");
        let (head_tx, head_rx) = watch::channel(writer.head());
        let (tx, rx) = mpsc::channel(setup.queue);
        Self {
            store,
            tx: Some(tx),
            parts: Some((rx, checks, writer, head_tx)),
            head: head_rx,
            health: Arc::new(WriterHealth::default()),
            thread: None,
        }
    }

    /// Starts the writer: on the blocking pool, as the daemon's thread, with
    /// this runtime's handle.
    fn start(&mut self) {
        let (rx, checks, writer, head_tx) = self.parts.take().expect("started once");
        let health = self.health.clone();
        let runtime = tokio::runtime::Handle::current();
        self.thread = Some(tokio::task::spawn_blocking(move || {
            let reports = super::Reports {
                head: head_tx,
                health,
            };
            let control = super::Control {
                shutdown: CancellationToken::new(),
                runtime,
            };
            super::run(rx, writer, checks, reports, control);
        }));
    }

    fn sender(&self) -> mpsc::Sender<Observed> {
        self.tx.clone().expect("the channel is open")
    }

    /// Sends a fix of `device` as an MQTT tracker's.
    async fn send(&self, device: &str, fix: Fix) {
        self.send_as(SourceKind::Mqtt, device, fix).await;
    }

    async fn send_as(&self, source: SourceKind, device: &str, fix: Fix) {
        self.sender()
            .send(observed(source, device, fix))
            .await
            .expect("the writer takes fixes");
    }

    /// Waits until the writer has stored a position of `device` at `time`,
    /// and so judged everything sent before it.
    async fn wait_stored(&mut self, device: &str, time: DateTime<Utc>) {
        let device = id(device);
        let deadline = std::time::Instant::now() + ANSWER;
        loop {
            let stored = self.store.records().iter().any(|r| {
                matches!(&r.event, Event::Position(p) if p.device == device && p.fix.time == time)
            });
            if stored {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{device}'s fix of {time} never stored"
            );
            let _ = real_timeout(Duration::from_millis(50), self.head.changed()).await;
        }
    }

    /// Moves the clock on by `by` at once, then gives the writer a moment
    /// of real time: true when it published a new head meanwhile.
    async fn advance(&mut self, by: Duration) -> bool {
        self.head.borrow_and_update();
        tokio::time::advance(by).await;
        real_timeout(Duration::from_millis(100), self.head.changed())
            .await
            .is_some()
    }

    /// Moves the clock on a writer tick at a time (the writer wakes every
    /// [`TICK`] without input) until `done` holds; how much paused time that
    /// took. After each tick the writer gets a moment of real time to answer,
    /// since a tick it was not yet waiting on wakes nothing.
    async fn tick_until(
        &mut self,
        limit: Duration,
        what: &str,
        done: impl Fn(&Self) -> bool,
    ) -> Duration {
        let start = tokio::time::Instant::now();
        while !done(self) {
            assert!(
                start.elapsed() < limit,
                "{what}: not within {limit:?} of paused time"
            );
            self.head.borrow_and_update();
            tokio::time::advance(TICK).await;
            let _ = real_timeout(Duration::from_millis(500), self.head.changed()).await;
        }
        start.elapsed()
    }

    /// The events of `device` the store holds, in order.
    fn events_of(&self, device: &str) -> Vec<Event> {
        let device = id(device);
        self.store
            .records()
            .into_iter()
            .map(|r| r.event)
            .filter(|e| *e.device() == device)
            .collect()
    }

    /// Closes the channel and waits for the writer to drain it and stop;
    /// the store, to look at or open again.
    async fn finish(mut self) -> TempStore {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            within(ANSWER, "the writer stopping", thread)
                .await
                .expect("the writer did not panic");
        }
        // A clean stop, as the daemon's: the next open numbers on without a hole.
        let head = *self.head.borrow();
        self.store.store.close(head).expect("close the store");
        self.store
    }
}

fn observed(source: SourceKind, device: &str, fix: Fix) -> Observed {
    Observed {
        source,
        class: DeviceClass::JsonTracker,
        position: Position::new(id(device), fix),
    }
}

/// Presence changes of `events`, in order.
fn statuses(events: &[Event]) -> Vec<Presence> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Status(s) => Some(s.status),
            _ => None,
        })
        .collect()
}

/// Fix times of the positions in `events`, in order, with whether each is historic.
fn positions(events: &[Event]) -> Vec<(DateTime<Utc>, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Position(p) => Some((p.fix.time, p.historic)),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn fixes_in_become_stored_records_in_order_after_the_device_comes_online() {
    let mut h = Harness::new(Setup::default());
    h.start();
    let t = now_s();
    let first = *h.head.borrow() + 1;
    for i in 0..3 {
        h.send("bus-1", fix_at(t, i, 52.0 + i as f64 * 1e-4, 5.0))
            .await;
    }
    h.wait_stored("bus-1", t + chrono::Duration::seconds(2))
        .await;

    let records = h.store.records();
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (first..first + 4).collect::<Vec<_>>(),
        "one number each, none skipped"
    );
    let events = h.events_of("bus-1");
    assert!(
        matches!(&events[0], Event::Status(s) if s.status == Presence::Online),
        "online before its first position: {events:?}"
    );
    assert_eq!(
        positions(&events),
        (0..3)
            .map(|i| (t + chrono::Duration::seconds(i), false))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        *h.head.borrow(),
        first + 3,
        "the head names the last record"
    );
    let state = h
        .store
        .store
        .reader()
        .device(&id("bus-1"))
        .unwrap()
        .unwrap();
    assert_eq!(
        state.seq,
        Some(first + 3),
        "the live position is the newest"
    );
    assert_eq!(state.status, Some(Presence::Online));
    assert_eq!(h.health.accepted.load(Ordering::Relaxed), 3);
    assert_eq!(h.health.online.load(Ordering::Relaxed), 1);
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_device_goes_offline_after_offline_after_and_online_again_when_heard() {
    let offline_after = Duration::from_secs(30);
    let mut h = Harness::new(Setup {
        offline_after,
        ..Setup::default()
    });
    h.start();
    let t = now_s();
    h.send("van-7", fix_at(t, 0, 52.0, 5.0)).await;
    h.wait_stored("van-7", t).await;
    assert_eq!(statuses(&h.events_of("van-7")), vec![Presence::Online]);

    // Silent for a tick less than the limit: nothing is stored.
    assert!(
        !h.advance(offline_after - TICK).await,
        "the writer stored something while the device was still within offline_after"
    );
    assert_eq!(statuses(&h.events_of("van-7")), vec![Presence::Online]);
    // The writer's own tick finds it silent for offline_after: offline,
    // with no fix arriving to wake it.
    let more = h
        .tick_until(Duration::from_secs(10), "van-7 offline", |h| {
            statuses(&h.events_of("van-7")).len() == 2
        })
        .await;
    assert!(
        more <= 3 * TICK,
        "offline {more:?} after the limit, not at the next tick"
    );
    assert_eq!(
        statuses(&h.events_of("van-7")),
        vec![Presence::Online, Presence::Offline]
    );
    assert_eq!(h.health.online.load(Ordering::Relaxed), 0);
    assert_eq!(h.health.devices.load(Ordering::Relaxed), 1, "still tracked");

    // Heard again: online again, before the position.
    let back = t + chrono::Duration::seconds(40);
    h.send("van-7", fix_at(back, 0, 52.0001, 5.0)).await;
    h.wait_stored("van-7", back).await;
    let events = h.events_of("van-7");
    assert_eq!(
        statuses(&events),
        vec![Presence::Online, Presence::Offline, Presence::Online]
    );
    assert!(matches!(&events[events.len() - 2], Event::Status(s) if s.status == Presence::Online));
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn filters_drop_bad_fixes_with_their_reason_and_keep_late_ones_as_history() {
    let mut h = Harness::new(Setup {
        owned: vec![("rx-serial", SourceKind::Serial)],
        ..Setup::default()
    });
    h.start();
    let dropped = |device: &str, reason: &str| {
        metric(
            "fixgate_fixes_dropped_total",
            &[("device", device), ("reason", reason)],
        )
    };
    let t = now_s();
    let d = "flt-a";
    h.send(d, fix_at(t, 10, 52.0, 5.0)).await; // live
    h.send(d, fix_at(t, 10, 52.0, 5.0)).await; // duplicate
    h.send(d, fix_at(t, 11, 0.0, 0.0)).await; // zero_island
    h.send(d, fix_at(t, 3600, 52.0, 5.0)).await; // future (an hour ahead)
    h.send(d, fix_at(t - chrono::Duration::days(30), 0, 52.0, 5.0))
        .await; // too_old
    let mut poor = fix_at(t, 12, 52.0, 5.0);
    poor.hdop = Some(50.0);
    h.send(d, poor).await; // accuracy
    h.send(d, fix_at(t, 13, 53.0, 5.0)).await; // speed_jump: 111 km in 3 s
    h.send(d, fix_at(t, 14, 95.0, 5.0)).await; // invalid
    h.send(d, fix_at(t, 5, 52.0, 5.0)).await; // late: historic, kept
    // A configured receiver's name, published over MQTT: refused.
    h.send("rx-serial", fix_at(t, 0, 52.0, 5.0)).await;
    // Its own source may use it.
    h.send_as(SourceKind::Serial, "rx-serial", fix_at(t, 1, 52.0, 5.0))
        .await;
    h.wait_stored("rx-serial", t + chrono::Duration::seconds(1))
        .await;

    assert_eq!(
        positions(&h.events_of(d)),
        vec![
            (t + chrono::Duration::seconds(10), false),
            (t + chrono::Duration::seconds(5), true)
        ],
        "the live fix and the late one, nothing else"
    );
    for reason in [
        "duplicate",
        "zero_island",
        "future",
        "too_old",
        "accuracy",
        "speed_jump",
        "invalid",
    ] {
        assert_eq!(dropped(d, reason), Some(1.0), "{reason}");
    }
    assert_eq!(
        metric(
            "fixgate_fixes_dropped_total",
            &[
                ("device", "rx-serial"),
                ("reason", "reserved_device"),
                ("source", "mqtt")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        positions(&h.events_of("rx-serial")),
        vec![(t + chrono::Duration::seconds(1), false)]
    );
    // The late fix did not replace the live position.
    let state = h.store.store.reader().device(&id(d)).unwrap().unwrap();
    assert_eq!(
        state.fix.map(|f| f.time),
        Some(t + chrono::Duration::seconds(10))
    );
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_new_device_beyond_max_devices_is_dropped_until_a_silent_one_can_make_room() {
    let offline_after = Duration::from_secs(20);
    let mut h = Harness::new(Setup {
        offline_after,
        max_devices: 2,
        ..Setup::default()
    });
    h.start();
    let t = now_s();
    h.send("cap-1", fix_at(t, 0, 52.0, 5.0)).await;
    h.send("cap-2", fix_at(t, 0, 52.1, 5.0)).await;
    h.send("cap-3", fix_at(t, 0, 52.2, 5.0)).await;
    h.send("cap-2", fix_at(t, 1, 52.1, 5.0)).await;
    h.wait_stored("cap-2", t + chrono::Duration::seconds(1))
        .await;
    assert!(h.events_of("cap-3").is_empty(), "no room while both report");
    assert_eq!(
        metric(
            "fixgate_fixes_dropped_total",
            &[("device", "cap-3"), ("reason", "too_many_devices")]
        ),
        Some(1.0)
    );
    // cap-2 keeps reporting; cap-1 falls silent and goes offline.
    assert!(!h.advance(offline_after / 2).await);
    h.send("cap-2", fix_at(t, 12, 52.1, 5.0)).await;
    h.wait_stored("cap-2", t + chrono::Duration::seconds(12))
        .await;
    // The writer may see cap-1's silence at once or at its next tick.
    h.advance(offline_after / 2).await;
    h.tick_until(Duration::from_secs(10), "cap-1 offline", |h| {
        statuses(&h.events_of("cap-1")).len() == 2
    })
    .await;
    assert_eq!(
        statuses(&h.events_of("cap-1")),
        vec![Presence::Online, Presence::Offline]
    );
    // Now cap-3 takes the offline device's place.
    let later = t + chrono::Duration::seconds(25);
    h.send("cap-3", fix_at(later, 0, 52.2, 5.0)).await;
    h.wait_stored("cap-3", later).await;
    assert_eq!(statuses(&h.events_of("cap-3")), vec![Presence::Online]);
    assert_eq!(h.health.devices.load(Ordering::Relaxed), 2);
    h.finish().await;
}

/// A circle of 200 m around (52.0, 5.0), as a fence file gives it.
fn yard() -> Rules {
    let fences = parse_geojson(
        r#"{"type":"Feature","id":"yard","properties":{"radius_m":200},
            "geometry":{"type":"Point","coordinates":[5.0,52.0]}}"#,
        "yard.geojson",
    )
    .expect("the fence parses");
    Rules {
        fences: FenceSet::new(fences).expect("one fence"),
        options: FenceOptions::default(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_geofence_event_is_stored_in_the_batch_of_its_fix_with_the_devices_zones() {
    let mut h = Harness::new(Setup {
        rules: Some(yard()),
        ..Setup::default()
    });
    h.start();
    let t = now_s();
    // Well outside (about 1.1 km north), then well inside.
    h.send("gf-1", fix_at(t, 0, 52.01, 5.0)).await;
    h.wait_stored("gf-1", t).await;
    let before = *h.head.borrow_and_update();
    let reader = h.store.store.reader();

    h.send("gf-1", fix_at(t, 60, 52.0, 5.0)).await;
    // The first head the writer publishes after the fix already covers the
    // event it caused: a reader never sees the fix without it.
    let head = within(ANSWER, "the writer's head", async {
        h.head.changed().await.expect("the writer runs");
        *h.head.borrow_and_update()
    })
    .await;
    assert_eq!(head, before + 2, "the fix and its enter, appended together");
    let records = reader.read_after(before, 10).unwrap();
    assert_eq!(records.len(), 2);
    assert!(
        matches!(&records[0].event, Event::Position(p) if p.fix.time == t + chrono::Duration::seconds(60))
    );
    let Event::Geofence(enter) = &records[1].event else {
        panic!("the fix's event follows it: {records:?}");
    };
    assert_eq!(enter.crossing.as_str(), "enter");
    assert_eq!(enter.fence.to_string(), "yard");
    // The device's geofence state went into the store with them.
    let zones = reader.device(&id("gf-1")).unwrap().unwrap().zones;
    let zones = Zones::decode(&zones.expect("zones stored with the event")).unwrap();
    assert_eq!(
        zones
            .inside()
            .map(|(fence, _)| fence.to_string())
            .collect::<Vec<_>>(),
        vec!["yard"]
    );
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_full_channel_holds_the_source_back_and_loses_nothing() {
    let queue = 4;
    let mut h = Harness::new(Setup {
        queue,
        ..Setup::default()
    });
    let tx = h.sender();
    let t = now_s();
    let total = 40;
    // A source sending as every source does: it waits for room.
    let source = tokio::spawn(async move {
        for i in 0..total {
            tx.send(observed(
                SourceKind::Http,
                "bp-1",
                fix_at(t, i, 52.0 + i as f64 * 1e-5, 5.0),
            ))
            .await
            .expect("the writer takes fixes");
        }
    });
    // The writer is busy (not started): a minute later the source is still
    // waiting, with the channel full and nothing dropped.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!source.is_finished(), "the source was not held back");
    assert_eq!(h.sender().capacity(), 0, "the channel is full");
    assert!(h.events_of("bp-1").is_empty());

    h.start();
    within(ANSWER, "the source finishing", source)
        .await
        .expect("the source did not panic");
    h.wait_stored("bp-1", t + chrono::Duration::seconds(total - 1))
        .await;
    let stored = positions(&h.events_of("bp-1"));
    assert_eq!(
        stored,
        (0..total)
            .map(|i| (t + chrono::Duration::seconds(i), false))
            .collect::<Vec<_>>(),
        "every fix, in the order sent"
    );
    assert_eq!(
        metric("fixgate_fixes_dropped_total", &[("device", "bp-1")]),
        None
    );
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_restarted_writer_seeded_from_the_store_takes_no_duplicate_and_reports_no_new_online() {
    let offline_after = Duration::from_secs(30);
    let setup = || Setup {
        offline_after,
        ..Setup::default()
    };
    let mut h = Harness::new(setup());
    h.start();
    let t = now_s();
    h.send("rs-1", fix_at(t, 0, 52.0, 5.0)).await;
    h.wait_stored("rs-1", t).await;
    let store = h.finish().await;

    // A restart: the store opened again, the writer seeded from it.
    let store = store.reopen();
    let mut h = Harness::over(store, setup());
    h.start();
    // The same fix again (a tracker re-sending its buffer), then a new one.
    h.send("rs-1", fix_at(t, 0, 52.0, 5.0)).await;
    h.send("rs-1", fix_at(t, 1, 52.0001, 5.0)).await;
    h.wait_stored("rs-1", t + chrono::Duration::seconds(1))
        .await;
    let events = h.events_of("rs-1");
    assert_eq!(
        positions(&events),
        vec![(t, false), (t + chrono::Duration::seconds(1), false)],
        "the duplicate was not stored again"
    );
    assert_eq!(
        statuses(&events),
        vec![Presence::Online],
        "online across the restart, not again"
    );
    assert_eq!(
        metric(
            "fixgate_fixes_dropped_total",
            &[("device", "rs-1"), ("reason", "duplicate")]
        ),
        Some(1.0)
    );
    // And it still goes offline when silent.
    assert!(!h.advance(offline_after - TICK).await);
    h.tick_until(Duration::from_secs(10), "rs-1 offline", |h| {
        statuses(&h.events_of("rs-1")).len() == 2
    })
    .await;
    assert_eq!(
        statuses(&h.events_of("rs-1")),
        vec![Presence::Online, Presence::Offline]
    );
    h.finish().await;
}
