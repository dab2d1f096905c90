//! The probe against the exact test: every answer must be the one
//! `Shape::depth` gives, above all at points on or a rounding error away
//! from an edge and at thresholds a rounding error away from the depth.

use geo::{Coord, LineString, MultiPolygon, Polygon};

use super::*;
use crate::pipeline::geofence::shape::{Outline, Shape};

/// Metres per degree of latitude (as the shapes use).
const M: f64 = 6_371_008.8 * std::f64::consts::PI / 180.0;

/// The next float up or down (`f64::next_up` is newer than Rust 1.85).
fn next(x: f64, up: bool) -> f64 {
    if x.is_nan() || x.is_infinite() {
        return x;
    }
    if x == 0.0 {
        let tiny = f64::from_bits(1);
        return if up { tiny } else { -tiny };
    }
    let bits = x.to_bits();
    let away = (x > 0.0) == up;
    f64::from_bits(if away { bits + 1 } else { bits - 1 })
}

/// A star of `n` vertices, `radius` metres at most, about (lat, lon);
/// longitudes written in [-180, 180] as GeoJSON would.
fn star(rng: &mut fastrand::Rng, lat: f64, lon: f64, radius: f64, n: usize) -> LineString<f64> {
    let kx = M * lat.to_radians().cos();
    let mut ring: Vec<Coord<f64>> = (0..n)
        .map(|v| {
            let angle = std::f64::consts::TAU * v as f64 / n as f64;
            let r = radius * (0.5 + 0.5 * rng.f64());
            let x = lon + r * angle.sin() / kx;
            let x = if x > 180.0 { x - 360.0 } else { x };
            let x = if x < -180.0 { x + 360.0 } else { x };
            Coord {
                x,
                y: lat + r * angle.cos() / M,
            }
        })
        .collect();
    ring.push(ring[0]);
    LineString::new(ring)
}

/// A random area: a star, perhaps with a hole, perhaps with a second part,
/// anywhere from 1 m to 50 km across, now and then across the antimeridian.
fn area(rng: &mut fastrand::Rng) -> Shape {
    let lat = rng.f64() * 160.0 - 80.0;
    let radius = 10f64.powf(rng.f64() * 4.7);
    let lon = if rng.u8(..4) == 0 {
        180.0 - radius * (rng.f64() - 0.5) / (M * lat.to_radians().cos())
    } else {
        rng.f64() * 358.0 - 179.0
    };
    let n = rng.usize(3..60);
    // A hole within a quarter of the radius, inside any star of 8 or more
    // vertices (whose edges keep 0.46 of it from the middle).
    let holes = if n >= 8 && rng.bool() {
        let sides = rng.usize(3..12);
        vec![star(rng, lat, lon, radius * 0.25, sides)]
    } else {
        vec![]
    };
    let mut parts = vec![Polygon::new(star(rng, lat, lon, radius, n), holes)];
    if rng.u8(..4) == 0 {
        let lat2 = lat + 3.0 * radius / M;
        parts.push(Polygon::new(star(rng, lat2, lon, radius, n), vec![]));
    }
    Shape::new(Outline::Area(MultiPolygon::new(parts))).unwrap()
}

/// A point near the shape's boundary: on a vertex, on an edge, or off an
/// edge by anything from a rounding error to the shape's size.
fn near(rng: &mut fastrand::Rng, shape: &Shape) -> (f64, f64) {
    let Outline::Area(parts) = shape.outline() else {
        unreachable!()
    };
    let part = &parts.0[rng.usize(..parts.0.len())];
    let ring = &part.exterior().0;
    let i = rng.usize(..ring.len() - 1);
    let (a, b) = (ring[i], ring[i + 1]);
    // Across the antimeridian an edge's longitudes may be 360° apart.
    let mut bx = b.x;
    if bx - a.x > 180.0 {
        bx -= 360.0;
    } else if a.x - bx > 180.0 {
        bx += 360.0;
    }
    let t = match rng.u8(..4) {
        0 => 0.0,
        1 => 0.5,
        _ => rng.f64(),
    };
    let (lon, lat) = (a.x + t * (bx - a.x), a.y + t * (b.y - a.y));
    let off = |rng: &mut fastrand::Rng| {
        if rng.u8(..5) == 0 {
            0.0
        } else {
            (rng.f64() - 0.5) * 10f64.powf(-(rng.f64() * 13.0) - 1.0)
        }
    };
    let lon = lon + off(rng);
    let lon = if lon > 180.0 { lon - 360.0 } else { lon };
    let lon = if lon < -180.0 { lon + 360.0 } else { lon };
    (lat + off(rng), lon)
}

/// Every kind of question at thresholds around the exact depth, each on a
/// fresh probe and all in turn on one probe; the number of questions a
/// cheap stage answered.
fn check(shape: &Shape, lat: f64, lon: f64, rng: &mut fastrand::Rng) -> usize {
    let exact = shape.depth(lat, lon);
    let radius = [0.0, 5.0, rng.f64() * 50.0][rng.usize(..3)];
    let mut thresholds = vec![0.0, -0.0, radius, -(radius + 10.0), -radius];
    for x in [exact, exact * (1.0 + 1e-12), exact + 1e-9, exact - 1e-9] {
        thresholds.extend([x, next(x, true), next(x, false)]);
    }
    let spot = Spot::new(lat, lon);
    let mut one = Probe::new(shape, spot);
    let mut cheap = 0;
    for x in thresholds {
        let want = [exact > x, exact >= x, exact <= x];
        let mut fresh = [
            Probe::new(shape, spot),
            Probe::new(shape, spot),
            Probe::new(shape, spot),
        ];
        let got = [fresh[0].above(x), fresh[1].at_least(x), fresh[2].at_most(x)];
        assert_eq!(got, want, "at ({lat}, {lon}), depth {exact}, threshold {x}");
        let got = [one.above(x), one.at_least(x), one.at_most(x)];
        assert_eq!(got, want, "in turn at ({lat}, {lon}), depth {exact}, {x}");
        cheap += fresh.iter().filter(|p| p.stage != Stage::Done).count();
    }
    cheap
}

#[test]
fn every_answer_is_the_exact_tests_near_edges_and_thresholds() {
    let mut rng = fastrand::Rng::with_seed(11);
    let mut cheap = 0;
    for _ in 0..400 {
        let shape = area(&mut rng);
        for _ in 0..40 {
            let (lat, lon) = near(&mut rng, &shape);
            cheap += check(&shape, lat, lon, &mut rng);
        }
    }
    // Not all of them went to the exact test.
    assert!(cheap > 10_000, "{cheap}");
}

#[test]
fn every_answer_is_the_exact_tests_anywhere_around_the_shape() {
    let mut rng = fastrand::Rng::with_seed(12);
    for _ in 0..400 {
        let shape = area(&mut rng);
        let e = shape.envelope();
        let (h, w) = (e.lat_max - e.lat_min, e.lon_max - e.lon_min);
        for _ in 0..40 {
            let lat = e.lat_min - h + 3.0 * h * rng.f64();
            let lon = e.lon_min - w + 3.0 * w * rng.f64();
            let lon = if lon > 180.0 { lon - 360.0 } else { lon };
            let lon = if lon < -180.0 { lon + 360.0 } else { lon };
            check(&shape, lat.clamp(-90.0, 90.0), lon, &mut rng);
        }
    }
}

#[test]
fn circles_and_known_depths_answer_exactly() {
    let mut rng = fastrand::Rng::with_seed(13);
    let circle = Shape::new(Outline::Circle {
        lat: 52.0,
        lon: 5.0,
        radius_m: 100.0,
    })
    .unwrap();
    for _ in 0..200 {
        let lat = 52.0 + (rng.f64() - 0.5) * 300.0 / M;
        let lon = 5.0 + (rng.f64() - 0.5) * 500.0 / M;
        check(&circle, lat, lon, &mut rng);
    }
    let mut gone = Probe::known(f64::NEG_INFINITY);
    assert!(gone.at_most(-1e300) && !gone.above(0.0) && !gone.at_least(f64::MIN));
    let mut nan = Probe::known(f64::NAN);
    assert!(!nan.above(0.0) && !nan.at_least(0.0) && !nan.at_most(0.0));
}

/// A 100 m square about (52, 5).
fn square() -> Shape {
    let (dy, dx) = (50.0 / M, 50.0 / (M * 52f64.to_radians().cos()));
    let ring = LineString::from(vec![
        (5.0 - dx, 52.0 - dy),
        (5.0 + dx, 52.0 - dy),
        (5.0 + dx, 52.0 + dy),
        (5.0 - dx, 52.0 + dy),
        (5.0 - dx, 52.0 - dy),
    ]);
    Shape::new(Outline::Area(MultiPolygon::new(vec![Polygon::new(
        ring,
        vec![],
    )])))
    .unwrap()
}

#[test]
fn far_outside_and_deep_inside_need_no_edge() {
    let shape = square();
    // 1 km north: beyond the outer circle.
    let mut far = Probe::new(&shape, Spot::new(52.0 + 1000.0 / M, 5.0));
    assert!(!far.above(0.0) && far.at_most(-15.0));
    assert_eq!(far.stage, Stage::Edges, "decided by the circles");
    // At the middle: within the inner circle, 50 m from every edge.
    let mut middle = Probe::new(&shape, Spot::new(52.0, 5.0));
    assert!(middle.above(0.0) && middle.at_least(5.0) && !middle.at_most(-15.0));
    assert_eq!(middle.stage, Stage::Edges, "decided by the circles");
    // 3 m inside an edge, out of the inner circle: one pass over the edges.
    let mut edge = Probe::new(&shape, Spot::new(52.0 + 47.0 / M, 5.0));
    assert!(edge.above(0.0) && !edge.at_least(5.0));
    assert_eq!(edge.stage, Stage::Exact, "decided by the edge pass");
    // On the edge itself: the exact test.
    let on = 52.0 + 50.0 / M;
    let mut boundary = Probe::new(&shape, Spot::new(on, 5.0));
    assert_eq!(boundary.above(0.0), shape.depth(on, 5.0) > 0.0);
    assert_eq!(boundary.stage, Stage::Done);
}
