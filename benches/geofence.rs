//! Geofence benchmark: the cost per fix of judging it against 10, 1,000 and
//! 10,000 fences of 50 vertices, with the R-tree, beside a linear scan of
//! every fence (the same exact test, no index) measured in the same run.
//!
//! `cargo bench --bench geofence`. The fences are star-shaped polygons, 20 to
//! 80 m in radius, scattered over the 8 × 8 km around the simulator's depot;
//! the fixes are the simulator's fleet of 100 vehicles driving there at 1 Hz
//! (fixgate's own `sim`), so a fix is near a fence about as often as a bus in
//! a city full of them would be. Each fix goes through `Tracker::observe`,
//! exactly as the writer calls it. Run as a test (`cargo test --benches`) it
//! takes few fixes and skips the slow linear scan of 10,000 fences.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use fixgate::fix::{Event, FenceId, Position};
use fixgate::geofence::{Fence, FenceSet, Options, Outline, Rules, Shape, Tracker};
use geo::{LineString, MultiPolygon, Polygon};

/// Vertices per fence.
const VERTICES: usize = 50;
/// The simulator's depot.
const CENTRE: (f64, f64) = (52.0907, 5.1214);
/// Half the side of the square the fences are scattered over, in metres.
const HALF_SIDE: f64 = 4000.0;
const METRES_PER_DEGREE: f64 = 111_195.0;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    println!("machine: {}", common::machine());
    let fixes: Vec<Position> = common::fleet_events(100, if full { 200_000 } else { 5_000 })
        .into_iter()
        .filter_map(|e| match e {
            Event::Position(p) => Some(p),
            _ => None,
        })
        .collect();
    println!(
        "{} fixes of 100 simulated vehicles; fences of {VERTICES} vertices, 20-80 m radius, over {} x {} km",
        fixes.len(),
        2.0 * HALF_SIDE / 1000.0,
        2.0 * HALF_SIDE / 1000.0
    );
    println!();
    println!(
        "| fences | candidates/fix | indexed ns/fix | indexed fixes/s | linear scan ns/fix | index speed-up | events |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for count in [10, 1_000, 10_000] {
        let fences = scatter(count, 7);
        let set = FenceSet::new(fences.clone()).expect("unique ids");
        let candidates = mean_candidates(&set, &fixes);
        let (indexed, events) = indexed(set, &fixes);
        let scan_fixes = if full { 2_000 } else { 500 };
        let linear = (full || count < 10_000).then(|| linear(&fences, &fixes[..scan_fixes]));
        println!(
            "| {count} | {candidates:.2} | {:.0} | {:.0} | {} | {} | {events} |",
            indexed,
            1e9 / indexed,
            linear.map_or("-".into(), |l| format!("{l:.0}")),
            linear.map_or("-".into(), |l| format!("{:.0}x", l / indexed)),
        );
    }
}

/// `count` star-shaped fences scattered over the square around the depot.
fn scatter(count: usize, seed: u64) -> Vec<Fence> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let kx = METRES_PER_DEGREE * CENTRE.0.to_radians().cos();
    (0..count)
        .map(|i| {
            let (north, east) = (
                (rng.f64() * 2.0 - 1.0) * HALF_SIDE,
                (rng.f64() * 2.0 - 1.0) * HALF_SIDE,
            );
            let radius = 20.0 + 60.0 * rng.f64();
            let mut ring: Vec<(f64, f64)> = (0..VERTICES)
                .map(|v| {
                    let angle = std::f64::consts::TAU * v as f64 / VERTICES as f64;
                    let r = radius * (0.7 + 0.3 * rng.f64());
                    (
                        CENTRE.1 + (east + r * angle.sin()) / kx,
                        CENTRE.0 + (north + r * angle.cos()) / METRES_PER_DEGREE,
                    )
                })
                .collect();
            ring.push(ring[0]);
            let polygon = Polygon::new(LineString::from(ring), vec![]);
            Fence {
                id: FenceId::new(&format!("fence-{i}")).expect("id"),
                name: None,
                shape: Shape::new(Outline::Area(MultiPolygon::new(vec![polygon])))
                    .expect("valid shape"),
                speed_limit: Some(8.0),
                dwell: Some(std::time::Duration::from_secs(60)),
                properties: Default::default(),
            }
        })
        .collect()
}

/// Fences whose box comes within reach of a fix (5 m error, 10 m margin).
fn mean_candidates(set: &FenceSet, fixes: &[Position]) -> f64 {
    let mut out = Vec::new();
    let total: usize = fixes
        .iter()
        .map(|p| {
            set.near(p.fix.lat, p.fix.lon, 15.0, &mut out);
            out.len()
        })
        .sum();
    total as f64 / fixes.len() as f64
}

/// ns per fix through the tracker, and the events it produced.
fn indexed(set: FenceSet, fixes: &[Position]) -> (f64, usize) {
    let mut tracker = Tracker::new(Some(Arc::new(Rules {
        fences: set,
        options: Options::default(),
    })));
    let started = Instant::now();
    let mut events = 0;
    for p in fixes {
        let (caused, _) = tracker.observe(p);
        events += caused.count();
    }
    (
        started.elapsed().as_nanos() as f64 / fixes.len() as f64,
        events,
    )
}

/// ns per fix of the exact test against every fence in turn.
fn linear(fences: &[Fence], fixes: &[Position]) -> f64 {
    let started = Instant::now();
    let mut inside = 0usize;
    for p in fixes {
        for f in fences {
            if f.shape.depth(p.fix.lat, p.fix.lon) > 0.0 {
                inside += 1;
            }
        }
    }
    std::hint::black_box(inside);
    started.elapsed().as_nanos() as f64 / fixes.len() as f64
}
