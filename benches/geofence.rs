//! Geofence benchmark: the cost per fix of judging it against 10, 1,000 and
//! 10,000 fences of 50 vertices, with the R-tree, beside a linear scan of
//! every fence (the same exact test, no index) measured in the same run.
//!
//! `cargo bench --bench geofence`. The fences are star-shaped polygons, 20 to
//! 80 m in radius, scattered over the 8 × 8 km around the simulator's depot;
//! the fixes are the simulator's fleet of 100 vehicles driving there at 1 Hz
//! (fixgate's own `sim`), so a fix is near a fence about as often as a bus in
//! a city full of them would be. Each fix goes through `Tracker::observe`,
//! exactly as the writer calls it.
//!
//! Then the whole pipeline on the real binary: the same fixes posted to the
//! daemon's HTTP intake in arrays of 1,000 (one client, one request at a
//! time), with no fences and with 1,000 fences loaded from a GeoJSON file,
//! timed from the first request to the moment the daemon has accepted every
//! fix (`fixgate_fixes_accepted_total`). Run as a test (`cargo test
//! --benches`) it takes few fixes and skips the slow linear scan of 10,000
//! fences.
//!
//! `cargo bench --bench geofence -- 10000` measures that count of fences
//! alone (and `-- pipeline` the whole pipeline alone), for profiling.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fixgate::fix::{Event, FenceId, Position};
use fixgate::pipeline::geofence::{Fence, FenceSet, Options, Outline, Rules, Shape, Tracker};
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
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let counts: Vec<usize> = match parts
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect::<Vec<_>>()
    {
        some if !some.is_empty() => some,
        _ if parts.is_empty() => vec![10, 1_000, 10_000],
        _ => vec![],
    };
    let pipeline_too = parts.is_empty() || parts.iter().any(|a| a == "pipeline");
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
    for count in counts {
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

    if !pipeline_too {
        return;
    }
    let n = if full { 100_000 } else { 5_000 };
    println!();
    println!("whole pipeline, {n} fixes posted over HTTP in arrays of 1,000:");
    println!();
    println!("| fences | fixes/s | geofence events | relative |");
    println!("|---:|---:|---:|---:|");
    let mut baseline = None;
    for count in [0, 1_000] {
        let (rate, events) = pipeline(count, &fixes[..n.min(fixes.len())]);
        let base = *baseline.get_or_insert(rate);
        println!("| {count} | {rate:.0} | {events} | {:.2} |", rate / base);
    }
}

/// Fixes per second through the real daemon with `count` fences loaded, and
/// the geofence events it stored.
fn pipeline(count: usize, fixes: &[Position]) -> (f64, u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("fences.geojson");
    let set = FenceSet::new(scatter(count, 7)).expect("unique ids");
    let geojson = fixgate::pipeline::geofence::geojson_out::feature_collection(&set);
    std::fs::write(&file, geojson.to_string()).expect("write fences");
    let daemon = common::Daemon::start(
        dir.path(),
        &format!(
            "[geofence]\nfiles = [\"{}\"]\n[http]\nmax_body = 4194304\n",
            file.display()
        ),
    );
    // Re-dated to end a minute ago, so that no fix is from the future.
    let last = fixes.last().map_or(chrono::Utc::now(), |p| p.fix.time);
    let shift = chrono::Utc::now() - chrono::Duration::seconds(60) - last;
    let bodies: Vec<String> = fixes
        .chunks(1000)
        .map(|chunk| {
            let array: Vec<serde_json::Value> = chunk
                .iter()
                .map(|p| {
                    let mut p = p.clone();
                    p.fix.time += shift;
                    serde_json::to_value(&p).expect("json")
                })
                .collect();
            serde_json::to_string(&array).expect("json")
        })
        .collect();
    let agent = common::http_agent(Duration::from_secs(60));
    let url = format!("http://127.0.0.1:{}/api/fixes", daemon.port);
    let started = Instant::now();
    for body in &bodies {
        let response = agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body.as_str())
            .expect("post");
        assert_eq!(
            response.status().as_u16(),
            200,
            "the intake refused a batch"
        );
    }
    let want = fixes.len() as f64;
    let deadline = Instant::now() + Duration::from_secs(300);
    while daemon.metric("fixgate_fixes_accepted_total").unwrap_or(0.0) < want {
        assert!(
            Instant::now() < deadline,
            "the daemon never accepted every fix"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let events = daemon
        .metric("fixgate_geofence_events_total")
        .unwrap_or(0.0) as u64;
    (want / elapsed, events)
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
