//! Which positions of a segment survive thinning: pure functions over
//! decoded slots.
//!
//! Each device's positions in a segment form runs, one for its live and one
//! for its historic (backfilled) positions, which interleave in arrival
//! order but are separate tracks. A run keeps its first and last fix, so
//! that consecutive segments still join up, and the device's live position
//! is never removed.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use geo::{Coord, LineString, SimplifyIdx};

use crate::fix::{DeviceId, Event, Position};

/// How old positions are thinned when space runs short.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Thin {
    /// No thinning: when acknowledged records are not enough, drop.
    Off,
    /// Douglas–Peucker: keep the fixes that hold the track within this many
    /// metres of the original.
    DouglasPeucker {
        /// Largest distance (m) of a removed fix from the kept track.
        tolerance_m: f64,
    },
    /// Keep a fix only once it is this many metres from the last one kept.
    Distance {
        /// Least distance (m) between kept fixes.
        min_m: f64,
    },
    /// Keep one fix per interval and device.
    Time {
        /// Least time between kept fixes.
        interval: Duration,
    },
}

/// Mean Earth radius (m): local projections over a few km err far less
/// than any sensible tolerance.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Which slots to keep: `false` for positions thinned away and for slots
/// already gone; `true` for everything else. `first_seq` numbers the first
/// slot; positions numbered in `protected` (live positions) are kept.
pub fn keep(
    slots: &[Option<Event>],
    first_seq: u64,
    protected: &HashSet<u64>,
    thin: Thin,
) -> Vec<bool> {
    let mut keep: Vec<bool> = slots.iter().map(Option::is_some).collect();
    if thin == Thin::Off {
        return keep;
    }
    let mut runs: HashMap<(&DeviceId, bool), Vec<usize>> = HashMap::new();
    for (i, slot) in slots.iter().enumerate() {
        if let Some(Event::Position(p)) = slot {
            runs.entry((&p.device, p.historic)).or_default().push(i);
        }
    }
    for run in runs.values() {
        let positions: Vec<&Position> = run
            .iter()
            .filter_map(|&i| match &slots[i] {
                Some(Event::Position(p)) => Some(p),
                _ => None,
            })
            .collect();
        for (&i, kept) in run.iter().zip(keep_run(&positions, thin)) {
            keep[i] = kept || protected.contains(&(first_seq + i as u64));
        }
    }
    keep
}

/// Which fixes of one run to keep; the first and last always are.
fn keep_run(run: &[&Position], thin: Thin) -> Vec<bool> {
    let n = run.len();
    if n <= 2 {
        return vec![true; n];
    }
    let mut keep = vec![false; n];
    match thin {
        Thin::Off => keep.fill(true),
        Thin::DouglasPeucker { tolerance_m } => {
            let line = LineString::from(local_metres(run));
            for i in line.simplify_idx(tolerance_m) {
                keep[i] = true;
            }
        }
        Thin::Distance { min_m } => {
            let xy = local_metres(run);
            let mut last = xy[0];
            for (i, &c) in xy.iter().enumerate() {
                if (c.x - last.x).hypot(c.y - last.y) >= min_m {
                    keep[i] = true;
                    last = c;
                }
            }
        }
        Thin::Time { interval } => {
            let mut last = run[0].fix.time;
            for (i, p) in run.iter().enumerate() {
                if (p.fix.time - last).to_std().is_ok_and(|d| d >= interval) {
                    keep[i] = true;
                    last = p.fix.time;
                }
            }
        }
    }
    keep[0] = true;
    keep[n - 1] = true;
    keep
}

/// The run's fixes in metres east and north of its first fix (an
/// equirectangular projection; longitudes wrap at the antimeridian).
fn local_metres(run: &[&Position]) -> Vec<Coord<f64>> {
    let (lat0, lon0) = (run[0].fix.lat, run[0].fix.lon);
    let k = EARTH_RADIUS_M.to_radians();
    let cos = lat0.to_radians().cos();
    run.iter()
        .map(|p| {
            let dlon = (p.fix.lon - lon0 + 540.0).rem_euclid(360.0) - 180.0;
            Coord {
                x: dlon * k * cos,
                y: (p.fix.lat - lat0) * k,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fix::{Fix, Geofence, Presence, Status};
    use chrono::{TimeZone, Utc};

    /// A position `east` metres east and `north` metres north of 52°N 5°E, at second `s`.
    fn at(device: &str, s: i64, east: f64, north: f64) -> Option<Event> {
        let k = EARTH_RADIUS_M.to_radians();
        let fix = Fix::new(
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(s),
            52.0 + north / k,
            5.0 + east / (k * 52f64.to_radians().cos()),
        );
        Some(Event::Position(Position::new(
            DeviceId::new(device).unwrap(),
            fix,
        )))
    }

    fn kept(keep: &[bool]) -> Vec<usize> {
        keep.iter()
            .enumerate()
            .filter(|(_, k)| **k)
            .map(|(i, _)| i)
            .collect()
    }

    const DP10: Thin = Thin::DouglasPeucker { tolerance_m: 10.0 };

    #[test]
    fn douglas_peucker_keeps_the_corner_and_the_ends_of_each_device() {
        // Device a drives 100 m east, turns, drives 100 m north (jitter of 2 m);
        // device b's fixes interleave and are parked.
        let mut slots = Vec::new();
        for i in 0..20 {
            let (e, n) = if i < 10 {
                (i as f64 * 10.0, 2.0 * (i % 2) as f64)
            } else {
                (100.0, (i - 10) as f64 * 10.0)
            };
            slots.push(at("a", i, e, n));
            slots.push(at("b", i, 1.0 * (i % 3) as f64, 0.0));
        }
        let keep = keep(&slots, 0, &HashSet::new(), DP10);
        let a: Vec<usize> = kept(&keep)
            .into_iter()
            .filter(|i| i % 2 == 0)
            .map(|i| i / 2)
            .collect();
        assert_eq!(a, vec![0, 10, 19], "the ends and the corner of a");
        let b: Vec<usize> = kept(&keep)
            .into_iter()
            .filter(|i| i % 2 == 1)
            .map(|i| i / 2)
            .collect();
        assert_eq!(
            b,
            vec![0, 19],
            "a parked device keeps its first and last fix"
        );
    }

    #[test]
    fn a_removed_fix_is_within_the_tolerance_of_the_kept_track() {
        let mut rng = fastrand::Rng::with_seed(3);
        let slots: Vec<Option<Event>> = (0..256)
            .map(|i| {
                at(
                    "a",
                    i,
                    i as f64 * 8.0,
                    (i as f64 / 20.0).sin() * 60.0 + rng.f64() * 4.0,
                )
            })
            .collect();
        let keep = keep(&slots, 0, &HashSet::new(), DP10);
        let kept = kept(&keep);
        assert!(kept.len() < 64, "{} of 256 kept", kept.len());
        let positions: Vec<&Position> = slots
            .iter()
            .map(|s| match s {
                Some(Event::Position(p)) => p,
                _ => unreachable!(),
            })
            .collect();
        let xy = local_metres(&positions);
        for pair in kept.windows(2) {
            let (a, b) = (xy[pair[0]], xy[pair[1]]);
            for c in &xy[pair[0]..pair[1]] {
                let (dx, dy) = (b.x - a.x, b.y - a.y);
                let off = ((c.x - a.x) * dy - (c.y - a.y) * dx).abs() / dx.hypot(dy);
                assert!(
                    off <= 10.0 + 1e-6,
                    "a removed fix is {off} m off the kept track"
                );
            }
        }
    }

    #[test]
    fn live_positions_events_and_gone_slots_are_left_as_they_are() {
        let mut slots: Vec<Option<Event>> = (0..10).map(|i| at("a", i, 0.0, 0.0)).collect();
        slots[3] = None;
        let time = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 4).unwrap();
        slots[4] = Some(Event::Status(Status {
            device: DeviceId::new("a").unwrap(),
            status: Presence::Offline,
            time,
        }));
        slots[7] = Some(Event::Geofence(Geofence::example("a", time)));
        let protected = HashSet::from([1000 + 6]);
        let keep = keep(&slots, 1000, &protected, DP10);
        assert_eq!(kept(&keep), vec![0, 4, 6, 7, 9]);
        assert_eq!(
            super::keep(&slots, 1000, &protected, Thin::Off),
            slots.iter().map(Option::is_some).collect::<Vec<_>>()
        );
    }

    #[test]
    fn historic_fixes_are_a_run_of_their_own() {
        let mut slots: Vec<Option<Event>> = (0..12)
            .map(|i| at("a", 100 + i, i as f64 * 5.0, 0.0))
            .collect();
        for i in [2, 5, 8] {
            if let Some(Event::Position(p)) = &mut slots[i] {
                p.historic = true;
            }
        }
        let keep = keep(&slots, 0, &HashSet::new(), DP10);
        assert_eq!(kept(&keep), vec![0, 2, 8, 11]);
    }

    #[test]
    fn time_and_distance_keep_one_fix_per_step() {
        let slots: Vec<Option<Event>> = (0..61).map(|i| at("a", i, i as f64 * 3.0, 0.0)).collect();
        let by_time = keep(
            &slots,
            0,
            &HashSet::new(),
            Thin::Time {
                interval: Duration::from_secs(10),
            },
        );
        assert_eq!(kept(&by_time), vec![0, 10, 20, 30, 40, 50, 60]);
        let by_distance = keep(&slots, 0, &HashSet::new(), Thin::Distance { min_m: 29.9 });
        assert_eq!(kept(&by_distance), vec![0, 10, 20, 30, 40, 50, 60]);
    }

    #[test]
    fn tracks_across_the_antimeridian_stay_short() {
        let a = Position::new(
            DeviceId::new("a").unwrap(),
            Fix::new(Utc::now(), 0.0, 179.9999),
        );
        let b = Position::new(
            DeviceId::new("a").unwrap(),
            Fix::new(Utc::now(), 0.0, -179.9999),
        );
        let xy = local_metres(&[&a, &b]);
        assert!((xy[1].x - 22.2).abs() < 0.5, "{:?}", xy[1]);
    }
}
