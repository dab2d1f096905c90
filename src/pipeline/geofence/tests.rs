//! Scenarios of the state machine: plain values in, events out.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use geo::{MultiPolygon, Polygon, polygon};

use super::*;
use crate::fix::{Crossing, DeviceId, FenceId, Fix, Geofence, Position};

/// Metres per degree of latitude (as the shapes use).
const M: f64 = 6_371_008.8 * std::f64::consts::PI / 180.0;
const LAT: f64 = 52.0;
const LON: f64 = 5.0;

/// A point `north` and `east` metres from (LAT, LON).
fn at(north: f64, east: f64) -> (f64, f64) {
    (LAT + north / M, LON + east / (M * LAT.to_radians().cos()))
}

/// A square ring of `half` metres either side of (LAT, LON) + offset.
fn square(half: f64) -> Polygon<f64> {
    let (s, w) = at(-half, -half);
    let (n, e) = at(half, half);
    polygon![(x: w, y: s), (x: e, y: s), (x: e, y: n), (x: w, y: n), (x: w, y: s)]
}

fn fence(id: &str, outline: Outline) -> Fence {
    Fence {
        id: FenceId::new(id).unwrap(),
        name: None,
        shape: Shape::new(outline).unwrap(),
        speed_limit: None,
        dwell: None,
        properties: Default::default(),
    }
}

/// The "yard": a 200 m square around (LAT, LON).
fn yard() -> Fence {
    fence(
        "yard",
        Outline::Area(MultiPolygon::new(vec![square(100.0)])),
    )
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap()
}

/// A fix `secs` after t0 at a point given in metres; HDOP 1 (5 m error).
fn fix(secs: i64, north: f64, east: f64) -> Fix {
    let (lat, lon) = at(north, east);
    let mut f = Fix::new(t0() + chrono::Duration::seconds(secs), lat, lon);
    f.hdop = Some(1.0);
    f
}

/// The fences under the default options.
fn rules(fences: Vec<Fence>) -> Rules {
    Rules {
        fences: FenceSet::new(fences).unwrap(),
        options: Options::default(),
    }
}

struct Run {
    rules: Rules,
    machine: Machine,
    device: DeviceId,
    scratch: Vec<usize>,
}

impl Run {
    fn new(fences: Vec<Fence>) -> Self {
        Self {
            rules: rules(fences),
            machine: Machine::default(),
            device: DeviceId::new("bus-1").unwrap(),
            scratch: Vec::new(),
        }
    }

    /// The position of this run's device at `fix`.
    fn position(&self, fix: &Fix, historic: bool) -> Position {
        let mut p = Position::new(self.device.clone(), fix.clone());
        p.historic = historic;
        p
    }

    /// Judges a fix; its events, and whether the live state changed.
    fn judge(&mut self, fix: &Fix, historic: bool) -> (Vec<Geofence>, bool) {
        let mut out = Vec::new();
        let position = self.position(fix, historic);
        let changed = self
            .machine
            .observe(&position, &self.rules, &mut self.scratch, &mut out);
        (out, changed)
    }

    fn live(&mut self, fix: &Fix) -> Vec<Geofence> {
        self.judge(fix, false).0
    }

    fn historic(&mut self, fix: &Fix) -> Vec<Geofence> {
        let (out, changed) = self.judge(fix, true);
        assert!(!changed, "a late fix changed the live state");
        out
    }

    /// Every fix in turn; the events as (seconds after t0, fence, crossing).
    fn all(&mut self, fixes: &[Fix]) -> Vec<(i64, String, Crossing)> {
        fixes
            .iter()
            .flat_map(|f| self.live(f))
            .map(|e| {
                (
                    (e.time - t0()).num_seconds(),
                    e.fence.to_string(),
                    e.crossing,
                )
            })
            .collect()
    }
}

/// A drive along the east-west axis from `from` to `to` metres east, one
/// fix per second at 10 m/s.
fn drive(start: i64, from: f64, to: f64) -> Vec<Fix> {
    let steps = ((to - from).abs() / 10.0) as i64;
    let dir = (to - from).signum();
    (0..=steps)
        .map(|i| fix(start + i, 0.0, from + dir * 10.0 * i as f64))
        .collect()
}

#[test]
fn driving_through_enters_once_and_exits_once() {
    let mut run = Run::new(vec![yard()]);
    let events = run.all(&drive(0, -300.0, 300.0));
    // Enter at the first fix whose 5 m error circle is inside: 110 m after
    // the -100 m edge is t=21 (east = -90); exit once 15 m beyond the east
    // edge (t=42, east = 120).
    assert_eq!(
        events,
        vec![
            (21, "yard".into(), Crossing::Enter),
            (42, "yard".into(), Crossing::Exit)
        ]
    );
}

#[test]
fn exit_reports_when_the_visit_began() {
    let mut run = Run::new(vec![yard()]);
    let events: Vec<Geofence> = drive(0, -300.0, 300.0)
        .iter()
        .flat_map(|f| run.live(f))
        .collect();
    assert_eq!(events[1].crossing, Crossing::Exit);
    assert_eq!(events[1].since, Some(events[0].time));
    assert!(!events[1].historic);
}

#[test]
fn a_receiver_parked_on_a_boundary_does_not_flap() {
    let mut run = Run::new(vec![yard()]);
    let mut rng = fastrand::Rng::with_seed(7);
    // Parked on the east edge for two hours, jittering ±8 m (the margin is
    // 10 m and the error radius 5 m), HDOP 1.
    let fixes: Vec<Fix> = (0..7200)
        .map(|s| fix(s, rng.f64() * 16.0 - 8.0, 100.0 + rng.f64() * 16.0 - 8.0))
        .collect();
    let events = run.all(&fixes);
    // Three fixes in a row inside happen soon enough: one enter, no exit.
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].2, Crossing::Enter);
    // Then it drives away: one exit.
    let away = run.all(&drive(7200, 100.0, 400.0));
    assert_eq!(
        away.iter().map(|e| e.2).collect::<Vec<_>>(),
        vec![Crossing::Exit]
    );
}

#[test]
fn a_receiver_parked_just_outside_jittering_across_the_edge_enters_at_most_once() {
    let mut run = Run::new(vec![yard()]);
    let mut rng = fastrand::Rng::with_seed(3);
    // 4 m outside the east edge, jittering ±8 m east-west: a quarter of the
    // fixes fall inside, never by the 5 m error radius, never 10 m outside.
    let fixes: Vec<Fix> = (0..7200)
        .map(|s| fix(s, 0.0, 104.0 + rng.f64() * 16.0 - 8.0))
        .collect();
    let events = run.all(&fixes);
    assert!(events.len() <= 1, "{events:?}");
    assert!(events.iter().all(|e| e.2 == Crossing::Enter));
}

#[test]
fn a_poor_fix_enters_only_after_enough_fixes_inside() {
    let mut run = Run::new(vec![yard()]);
    // Accuracy 500 m: the error circle is never inside a 200 m yard.
    let poor = |s: i64, east: f64| {
        let mut f = fix(s, 0.0, east);
        f.accuracy = Some(500.0);
        f
    };
    assert_eq!(run.all(&[poor(0, 0.0), poor(1, 0.0)]), vec![]);
    assert_eq!(
        run.all(&[poor(2, 0.0)]),
        vec![(2, "yard".into(), Crossing::Enter)]
    );
    // Leaving needs the whole 500 m circle 10 m beyond the edge.
    assert_eq!(
        run.all(&[poor(3, 500.0), poor(4, 500.0), poor(5, 500.0)]),
        vec![]
    );
    assert_eq!(
        run.all(&[poor(6, 700.0)]),
        vec![(6, "yard".into(), Crossing::Exit)]
    );
}

#[test]
fn a_hole_is_left_and_entered_like_a_boundary() {
    let outer = square(200.0);
    let hole = square(50.0);
    let ring = Polygon::new(outer.exterior().clone(), vec![hole.exterior().clone()]);
    let mut run = Run::new(vec![fence(
        "ring",
        Outline::Area(MultiPolygon::new(vec![ring])),
    )]);
    let events = run.all(&drive(0, -150.0, 150.0));
    let kinds: Vec<(i64, Crossing)> = events.iter().map(|e| (e.0, e.2)).collect();
    // In at -150 (50 m inside); out 15 m into the hole (east -35, so the
    // fix at -30); in again 5 m past its far edge (55, so the fix at 60).
    assert_eq!(
        kinds,
        vec![
            (0, Crossing::Enter),
            (12, Crossing::Exit),
            (21, Crossing::Enter)
        ]
    );
}

#[test]
fn crossing_from_one_fence_into_a_touching_one_exits_before_entering() {
    let west = {
        let (s, w) = at(-100.0, -200.0);
        let (n, e) = at(100.0, 0.0);
        polygon![(x: w, y: s), (x: e, y: s), (x: e, y: n), (x: w, y: n), (x: w, y: s)]
    };
    let east = {
        let (s, w) = at(-100.0, 0.0);
        let (n, e) = at(100.0, 200.0);
        polygon![(x: w, y: s), (x: e, y: s), (x: e, y: n), (x: w, y: n), (x: w, y: s)]
    };
    let mut run = Run::new(vec![
        fence("west", Outline::Area(MultiPolygon::new(vec![west]))),
        fence("east", Outline::Area(MultiPolygon::new(vec![east]))),
    ]);
    // A 15 m error circle jumping 20 m across the shared edge.
    let f = |s: i64, e: f64| {
        let mut f = fix(s, 0.0, e);
        f.accuracy = Some(5.0);
        f
    };
    assert_eq!(
        run.all(&[f(0, -100.0)]),
        vec![(0, "west".into(), Crossing::Enter)]
    );
    assert_eq!(
        run.all(&[f(1, 100.0)]),
        vec![
            (1, "west".into(), Crossing::Exit),
            (1, "east".into(), Crossing::Enter)
        ]
    );
}

#[test]
fn dwell_fires_once_per_visit_after_the_dwell_time() {
    let mut yard = yard();
    yard.dwell = Some(Duration::from_secs(60));
    let mut run = Run::new(vec![yard]);
    let mut fixes: Vec<Fix> = (0..300).map(|s| fix(s, 0.0, 0.0)).collect();
    fixes.extend(drive(300, 0.0, 300.0));
    fixes.extend(drive(400, 300.0, 0.0));
    fixes.extend((431..600).map(|s| fix(s, 0.0, 0.0)));
    let events = run.all(&fixes);
    let kinds: Vec<(i64, Crossing)> = events.iter().map(|e| (e.0, e.2)).collect();
    assert_eq!(
        kinds,
        vec![
            (0, Crossing::Enter),
            (60, Crossing::Dwell),
            (312, Crossing::Exit),
            (421, Crossing::Enter),
            (481, Crossing::Dwell),
        ]
    );
}

#[test]
fn speeding_fires_once_per_stretch_above_the_limit_inside_only() {
    let mut yard = yard();
    yard.speed_limit = Some(5.0);
    let mut run = Run::new(vec![yard]);
    let speed = |s: i64, east: f64, v: f64| {
        let mut f = fix(s, 0.0, east);
        f.speed = Some(v);
        f
    };
    let fixes = [
        speed(0, -500.0, 20.0), // outside: nothing
        speed(1, 0.0, 6.0),     // enter, and over the limit
        speed(2, 5.0, 5.2),     // still over: no repeat
        speed(3, 10.0, 4.8),    // under the limit, above 90% of it: still one stretch
        speed(4, 12.0, 6.0),    // no repeat
        speed(5, 13.0, 3.0),    // clearly under: the stretch ends
        speed(6, 14.0, 7.0),    // a new stretch
    ];
    let events: Vec<Geofence> = fixes.iter().flat_map(|f| run.live(f)).collect();
    let kinds: Vec<(i64, Crossing)> = events
        .iter()
        .map(|e| ((e.time - t0()).num_seconds(), e.crossing))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (1, Crossing::Enter),
            (1, Crossing::Speeding),
            (6, Crossing::Speeding)
        ]
    );
    assert_eq!((events[1].speed, events[1].limit), (Some(6.0), Some(5.0)));
}

#[test]
fn restored_zones_cause_no_spurious_enter_or_exit() {
    let mut yard = yard();
    yard.dwell = Some(Duration::from_secs(600));
    let mut run = Run::new(vec![yard]);
    assert_eq!(run.all(&[fix(0, 0.0, 0.0)]).len(), 1);
    let bytes = run.machine.zones().encode();
    // A restart: a fresh machine from the stored bytes.
    run.machine = Machine::new(Zones::decode(&bytes).unwrap());
    assert_eq!(run.all(&[fix(10, 0.0, 0.0), fix(11, 1.0, 0.0)]), vec![]);
    // The visit's start survived: dwell counts from the first enter.
    assert_eq!(
        run.all(&[fix(599, 0.0, 0.0), fix(600, 0.0, 0.0)]),
        vec![(600, "yard".into(), Crossing::Dwell)]
    );
    let inside: Vec<_> = run.machine.zones().inside().collect();
    assert_eq!(inside.len(), 1);
    assert_eq!(inside[0].1, Some(t0()));
}

#[test]
fn stored_zones_of_another_version_or_garbage_are_errors() {
    assert!(matches!(Zones::decode(&[]), Err(ZonesError::Version(None))));
    assert!(matches!(
        Zones::decode(&[9, 0]),
        Err(ZonesError::Version(Some(9)))
    ));
    assert!(matches!(Zones::decode(&[1, 200]), Err(ZonesError::Body(_))));
}

#[test]
fn only_changes_of_side_dwell_or_speeding_ask_to_be_persisted() {
    let mut run = Run::new(vec![yard()]);
    let persist = |run: &mut Run, f: &Fix| run.judge(f, false).1;
    assert!(!persist(&mut run, &fix(0, 0.0, -500.0)));
    assert!(persist(&mut run, &fix(1, 0.0, 0.0)));
    assert!(!persist(&mut run, &fix(2, 0.0, 1.0)));
    assert!(!persist(&mut run, &fix(3, 0.0, 2.0)));
    assert!(persist(&mut run, &fix(4, 0.0, 500.0)));
}

#[test]
fn late_fixes_are_evaluated_in_their_place_marked_historic_and_leave_the_live_state_alone() {
    let mut run = Run::new(vec![yard()]);
    // Live: inside from t=100 on.
    assert_eq!(run.all(&[fix(100, 0.0, 0.0)]).len(), 1);
    // Late fixes from before: outside at t=10..20, then driving in at t=30.
    let mut late: Vec<Geofence> = Vec::new();
    for s in 10..20 {
        late.extend(run.historic(&fix(s, 0.0, -500.0)));
    }
    late.extend(run.historic(&fix(30, 0.0, 0.0)));
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0].crossing, Crossing::Enter);
    assert!(late[0].historic);
    assert_eq!(late[0].time, t0() + chrono::Duration::seconds(30));
    // A late fix from inside the live visit (t=150, after the live enter)
    // adds nothing: the journal says the device was already in.
    assert_eq!(run.historic(&fix(150, 0.0, 0.0)), vec![]);
    // The live state is untouched: still in, since t=100, and a live fix
    // far away is the one exit.
    let zones: Vec<_> = run.machine.zones().inside().collect();
    assert_eq!(zones[0].1, Some(t0() + chrono::Duration::seconds(100)));
    let exit = run.all(&[fix(200, 0.0, 900.0)]);
    assert_eq!(exit, vec![(200, "yard".into(), Crossing::Exit)]);
}

#[test]
fn a_late_fix_outside_during_a_live_visit_is_a_historic_exit() {
    let mut run = Run::new(vec![yard()]);
    run.all(&[fix(100, 0.0, 0.0)]);
    run.all(&[fix(500, 0.0, 0.0)]);
    // The device was seen far away at t=300 after all.
    let late = run.historic(&fix(300, 0.0, 900.0));
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].crossing, Crossing::Exit);
    assert!(late[0].historic);
    assert_eq!(late[0].since, Some(t0() + chrono::Duration::seconds(100)));
    assert_eq!(run.machine.zones().inside().count(), 1);
}

#[test]
fn a_removed_fence_drops_its_state_without_events() {
    let mut run = Run::new(vec![yard()]);
    run.all(&[fix(0, 0.0, 0.0)]);
    run.rules = rules(vec![]);
    assert_eq!(run.all(&[fix(1, 0.0, 0.0)]), vec![]);
    assert_eq!(run.machine.zones().inside().count(), 0);
    assert!(run.machine.zones().is_empty());
}

#[test]
fn circles_enter_and_exit_by_distance_from_the_centre() {
    let (lat, lon) = at(0.0, 0.0);
    let mut run = Run::new(vec![fence(
        "gate",
        Outline::Circle {
            lat,
            lon,
            radius_m: 50.0,
        },
    )]);
    let events = run.all(&drive(0, -200.0, 200.0));
    // In once 5 m inside (east = -40 at t=16); out at 65 m (t=27, east 70).
    assert_eq!(
        events,
        vec![
            (16, "gate".into(), Crossing::Enter),
            (27, "gate".into(), Crossing::Exit)
        ]
    );
}

#[test]
fn the_tracker_keeps_a_pending_enter_and_persists_only_live_changes() {
    let mut tracker = Tracker::new(Some(Arc::new(rules(vec![yard()]))));
    let device = DeviceId::new("bus-1").unwrap();
    // Poor fixes inside: the enter needs three of them in a row.
    let poor = |s: i64| {
        let mut f = fix(s, 0.0, 0.0);
        f.accuracy = Some(500.0);
        Position::new(device.clone(), f)
    };
    for s in 0..2 {
        let (events, persist) = tracker.observe(&poor(s));
        assert_eq!(events.count(), 0);
        assert!(persist.is_none());
    }
    let (events, persist) = tracker.observe(&poor(2));
    assert_eq!(
        events.map(|e| e.crossing).collect::<Vec<_>>(),
        vec![Crossing::Enter]
    );
    let stored = Zones::decode(&persist.unwrap()).unwrap();
    assert_eq!(stored.inside().count(), 1);
    // A late fix far away, from before the enter: nothing happens (the
    // device was outside then) and nothing is persisted.
    let mut late = poor(1);
    late.fix.lat += 0.1;
    late.historic = true;
    let (events, persist) = tracker.observe(&late);
    let events: Vec<Geofence> = events.collect();
    assert!(persist.is_none());
    assert_eq!(
        events.len(),
        0,
        "before the live enter the device was outside: {events:?}"
    );
    assert_eq!(tracker.zones(&device).unwrap().inside().count(), 1);
}

#[test]
fn a_late_fix_far_from_every_fence_leaves_no_machine_behind() {
    let mut tracker = Tracker::new(Some(Arc::new(rules(vec![yard()]))));
    for i in 0..100 {
        let device = DeviceId::new(&format!("far-{i}")).unwrap();
        let mut late = Position::new(device.clone(), fix(i, 0.0, 5000.0));
        late.historic = true;
        assert_eq!(tracker.observe(&late).0.count(), 0);
        assert!(tracker.zones(&device).is_none(), "{device} kept a machine");
    }
}

#[test]
fn a_late_fix_inside_a_live_speeding_stretch_does_not_report_it_again() {
    let mut yard = yard();
    yard.speed_limit = Some(5.0);
    let mut run = Run::new(vec![yard]);
    let mut fast = fix(100, 0.0, 0.0);
    fast.speed = Some(9.0);
    let live: Vec<Crossing> = run.live(&fast).iter().map(|e| e.crossing).collect();
    assert_eq!(live, vec![Crossing::Enter, Crossing::Speeding]);
    let mut late = fix(150, 0.0, 1.0);
    late.speed = Some(9.0);
    run.live(&fix(200, 0.0, 2.0));
    assert_eq!(run.historic(&late), vec![]);
}

#[test]
fn the_replay_ends_once_live_fixes_move_well_past_the_late_ones() {
    let mut run = Run::new(vec![yard()]);
    run.all(&[fix(100, 0.0, 0.0)]);
    run.historic(&fix(50, 0.0, 0.0));
    assert!(!run.machine.is_idle());
    // Out, and much later: the live machine alone remains, with its journal.
    run.all(&drive(2000, 0.0, 300.0));
    run.all(&[fix(4000, 0.0, 5000.0)]);
    assert_eq!(run.machine.zones().inside().count(), 0);
    let replay_gone = run.historic(&fix(3990, 0.0, 0.0));
    // A fresh replay, seeded from the journal: outside at 3990 (the exit
    // was at ~2012), so the late fix inside is a historic enter.
    assert_eq!(replay_gone.len(), 1);
    assert!(replay_gone[0].historic);
}

#[test]
fn a_device_keeps_the_journals_of_only_the_fences_it_left_most_recently() {
    // 100 circles of 30 m, 200 m apart along the road east.
    let fences: Vec<Fence> = (0..100)
        .map(|i| {
            let (lat, lon) = at(0.0, 200.0 * f64::from(i));
            fence(
                &format!("stop-{i}"),
                Outline::Circle {
                    lat,
                    lon,
                    radius_m: 30.0,
                },
            )
        })
        .collect();
    let mut run = Run::new(fences);
    let events = run.all(&drive(0, -100.0, 20_000.0));
    let enters = events.iter().filter(|e| e.2 == Crossing::Enter).count();
    let exits = events.iter().filter(|e| e.2 == Crossing::Exit).count();
    assert_eq!((enters, exits), (100, 100));
    assert_eq!(run.machine.zones().tracked(), 64);
    // A late fix at the first stop, whose journal is gone: judged as if the
    // device had been outside then, a historic enter.
    let late = run.historic(&fix(10, 0.0, 0.0));
    assert_eq!(late.len(), 1);
    assert!(late[0].historic);
}

#[test]
fn a_live_fix_well_after_the_late_ones_ends_the_replay_and_frees_the_machine() {
    let mut tracker = Tracker::new(Some(Arc::new(rules(vec![yard()]))));
    let device = DeviceId::new("trk-5").unwrap();
    // Live far away, then a late fix inside: a historic enter, held in a replay.
    assert_eq!(
        tracker
            .observe(&Position::new(device.clone(), fix(100, 0.0, 5000.0)))
            .0
            .count(),
        0
    );
    let mut late = Position::new(device.clone(), fix(50, 0.0, 0.0));
    late.historic = true;
    assert_eq!(tracker.observe(&late).0.count(), 1);
    assert!(
        tracker.zones(&device).is_some(),
        "the replay keeps the machine"
    );
    // A live fix far away 20 min later: the replay is over, nothing is left.
    tracker.observe(&Position::new(device.clone(), fix(1300, 0.0, 5000.0)));
    assert!(tracker.zones(&device).is_none());
}

/// Star-shaped fences of 50 vertices and circles, 20 to 80 m across,
/// scattered over a square of `half` metres either side of (LAT, LON).
fn scattered(rng: &mut fastrand::Rng, count: usize, half: f64) -> Vec<Fence> {
    (0..count)
        .map(|i| {
            let (north, east) = (
                (rng.f64() * 2.0 - 1.0) * half,
                (rng.f64() * 2.0 - 1.0) * half,
            );
            let radius = 20.0 + 60.0 * rng.f64();
            let outline = if i % 5 == 0 {
                let (lat, lon) = at(north, east);
                Outline::Circle {
                    lat,
                    lon,
                    radius_m: radius,
                }
            } else {
                let ring: Vec<(f64, f64)> = (0..=50)
                    .map(|v| {
                        let angle = std::f64::consts::TAU * f64::from(v % 50) / 50.0;
                        let r = radius * (0.7 + 0.3 * rng.f64());
                        let (lat, lon) = at(north + r * angle.cos(), east + r * angle.sin());
                        (lon, lat)
                    })
                    .collect();
                Outline::Area(MultiPolygon::new(vec![Polygon::new(ring.into(), vec![])]))
            };
            let mut f = fence(&format!("f{i}"), outline);
            f.dwell = Some(Duration::from_secs(20));
            f.speed_limit = Some(8.0);
            f
        })
        .collect()
}

/// Devices wandering among the fences, some parked and jittering, with
/// error radii from 0 to 30 m, now and then a late fix.
fn wander(rng: &mut fastrand::Rng, devices: usize, steps: i64, half: f64) -> Vec<Position> {
    let mut state: Vec<(f64, f64, f64)> = (0..devices)
        .map(|_| {
            (
                (rng.f64() * 2.0 - 1.0) * half,
                (rng.f64() * 2.0 - 1.0) * half,
                0.0,
            )
        })
        .collect();
    let mut out = Vec::new();
    for t in 0..steps {
        for (d, (north, east, heading)) in state.iter_mut().enumerate() {
            let speed = if d % 4 == 0 { 0.0 } else { 15.0 * rng.f64() };
            *heading += (rng.f64() - 0.5) * 0.8;
            *north = (*north + speed * heading.cos()).clamp(-half, half);
            *east = (*east + speed * heading.sin()).clamp(-half, half);
            let jitter = |rng: &mut fastrand::Rng| (rng.f64() - 0.5) * 6.0;
            let mut f = fix(t, *north + jitter(rng), *east + jitter(rng));
            f.speed = Some(speed);
            match rng.u8(..4) {
                0 => f.hdop = None,
                1 => f.accuracy = Some(0.0),
                2 => f.hdop = Some(rng.f64() * 6.0),
                _ => {}
            }
            let late = t > 30 && rng.u8(..50) == 0;
            if late {
                f.time -= chrono::Duration::seconds(rng.i64(1..30));
            }
            let mut p = Position::new(DeviceId::new(&format!("d{d}")).unwrap(), f);
            p.historic = late;
            out.push(p);
        }
    }
    out
}

/// Every event of a tracker over the positions, every probe exact or not.
fn events_of(rules: &Arc<Rules>, positions: &[Position], exact: bool) -> Vec<Geofence> {
    super::probe::force_exact(exact);
    let mut tracker = Tracker::new(Some(Arc::clone(rules)));
    let events = positions
        .iter()
        .flat_map(|p| tracker.observe(p).0.collect::<Vec<_>>())
        .collect();
    super::probe::force_exact(false);
    events
}

#[test]
fn the_probes_shortcuts_change_no_event() {
    let mut rng = fastrand::Rng::with_seed(5);
    let raw = Options {
        enter_fixes: 1,
        exit_margin_m: 0.0,
        hdop_error_m: 0.0,
        default_error_m: 0.0,
    };
    for options in [Options::default(), raw] {
        let half = 600.0;
        let rules = Arc::new(Rules {
            fences: FenceSet::new(scattered(&mut rng, 150, half)).unwrap(),
            options,
        });
        let positions = wander(&mut rng, 12, 400, half);
        let exact = events_of(&rules, &positions, true);
        let fast = events_of(&rules, &positions, false);
        assert!(exact.len() > 300, "{}", exact.len());
        assert_eq!(fast, exact);
    }
}

#[test]
fn zones_encode_as_a_copy_holding_only_the_changed_tracks_would() {
    // Through two fences, then a poor fix inside a third: an enter under
    // way, a track with no journal.
    let small = fence(
        "small",
        Outline::Area(MultiPolygon::new(vec![square(30.0)])),
    );
    let (lat, lon) = at(500.0, 0.0);
    let lot = fence(
        "lot",
        Outline::Circle {
            lat,
            lon,
            radius_m: 50.0,
        },
    );
    let mut run = Run::new(vec![yard(), small, lot]);
    run.all(&drive(0, -300.0, 300.0));
    let mut f = fix(100, 500.0, 0.0);
    f.hdop = Some(20.0);
    run.live(&f);
    let zones = run.machine.zones();
    let want = zones.encode_by_copy();
    assert_eq!(zones.encode(), want);
    let decoded = Zones::decode(&want).unwrap();
    assert_eq!(decoded.tracked(), 2);
    assert_eq!(
        zones.tracked(),
        3,
        "the track without a journal is left out"
    );
}
