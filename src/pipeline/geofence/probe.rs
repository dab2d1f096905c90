//! The state machine's questions about a fix's depth in a fence ("is it
//! above 0?", "at least the error radius?", "at most minus the exit
//! margin?"), answered with as little work as the answer needs.
//!
//! The state machine never needs the depth itself, only which side of a
//! threshold it is on, and most fixes near a fence are far from every
//! threshold. So a [`Probe`] keeps bounds on the depth that
//! [`Shape::depth`] would return, and narrows them only while they do not
//! decide the question, in up to three stages:
//!
//! 1. the area's two circles about its origin (no edge looked at): a point
//!    beyond the outer one is outside, by at least its distance to it; one
//!    within the inner one is on the origin's side, by at least its distance
//!    to that; one between them is at most so far from the boundary;
//! 2. one tight pass over the edges: a crossing count and the squared
//!    distance to the nearest edge, without geo's per-edge `hypot`s or its
//!    exact containment test;
//! 3. [`Shape::depth`] itself.
//!
//! Stages 1 and 2 round differently from stage 3, so their bounds are
//! widened by [`slack`]: a billionth of the distances involved (and a
//! nanometre), about a million times any rounding error of these few
//! operations on metre coordinates. A question is answered from them only
//! when the threshold lies outside the widened bounds; otherwise the next
//! stage runs, and stage 3 is the exact test. So every answer is the one
//! the exact test gives, bit for bit; stage 2 also hands over to stage 3
//! when the point is within the slack of an edge, where a crossing count
//! in floating point could be wrong.

use super::shape::{Geometry, Planar, Shape};

/// Relative widening of the cheap stages' bounds (see the module doc).
const SLACK: f64 = 1e-9;
/// Absolute widening, metres.
const FLOOR: f64 = 1e-9;

/// How far the cheap stages' depths may be from the exact one, for a point
/// `distance` metres from the origin of an area whose vertices lie within
/// `reach` metres of it.
pub(super) fn slack(distance: f64, reach: f64) -> f64 {
    SLACK * (distance + reach) + FLOOR
}

/// A fix's position, with what every fence's test of it shares.
#[derive(Debug, Clone, Copy)]
pub struct Spot {
    lat: f64,
    lon: f64,
    cos_lat: f64,
}

impl Spot {
    /// A position in degrees.
    pub fn new(lat: f64, lon: f64) -> Self {
        Self {
            lat,
            lon,
            // The same expression as `Shape::depth`'s correction.
            cos_lat: lat.to_radians().cos(),
        }
    }
}

/// What is left to narrow the bounds with.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    Circles,
    Edges,
    Exact,
    /// The bounds are the exact depth.
    Done,
}

/// Bounds on a point's depth in a shape, narrowed on demand.
#[derive(Debug)]
pub struct Probe<'a> {
    shape: Option<&'a Shape>,
    spot: Spot,
    lo: f64,
    hi: f64,
    stage: Stage,
}

impl<'a> Probe<'a> {
    /// A probe of `shape` at `spot`; nothing is computed yet.
    pub fn new(shape: &'a Shape, spot: Spot) -> Self {
        let stage = match shape.geometry() {
            Geometry::Area(_) => Stage::Circles,
            Geometry::Circle { .. } => Stage::Exact,
        };
        Self {
            shape: Some(shape),
            spot,
            lo: f64::NEG_INFINITY,
            hi: f64::INFINITY,
            stage: if forced_exact() { Stage::Exact } else { stage },
        }
    }

    /// A depth already known.
    pub fn known(depth: f64) -> Self {
        Self {
            shape: None,
            spot: Spot::new(0.0, 0.0),
            lo: depth,
            hi: depth,
            stage: Stage::Done,
        }
    }

    /// `depth > x`.
    pub fn above(&mut self, x: f64) -> bool {
        loop {
            if self.stage == Stage::Done {
                return self.lo > x;
            }
            if self.lo > x {
                return true;
            }
            if self.hi <= x {
                return false;
            }
            self.narrow();
        }
    }

    /// `depth >= x`.
    pub fn at_least(&mut self, x: f64) -> bool {
        loop {
            if self.stage == Stage::Done {
                return self.lo >= x;
            }
            if self.lo >= x {
                return true;
            }
            if self.hi < x {
                return false;
            }
            self.narrow();
        }
    }

    /// `depth <= x`.
    pub fn at_most(&mut self, x: f64) -> bool {
        loop {
            if self.stage == Stage::Done {
                return self.lo <= x;
            }
            if self.hi <= x {
                return true;
            }
            if self.lo > x {
                return false;
            }
            self.narrow();
        }
    }

    /// Runs the next stage.
    fn narrow(&mut self) {
        let Some(shape) = self.shape else {
            self.stage = Stage::Done;
            return;
        };
        let area = match shape.geometry() {
            Geometry::Area(area) => Some(area),
            Geometry::Circle { .. } => None,
        };
        let bounds = match (self.stage, area) {
            (Stage::Circles, Some(area)) => {
                self.stage = Stage::Edges;
                Some(circles(area, &self.spot))
            }
            (Stage::Edges, Some(area)) => {
                self.stage = Stage::Exact;
                edges(area, &self.spot)
            }
            _ => {
                self.stage = Stage::Done;
                let depth = shape.depth(self.spot.lat, self.spot.lon);
                Some((depth, depth))
            }
        };
        if let Some((lo, hi)) = bounds {
            self.lo = lo;
            self.hi = hi;
        }
    }
}

/// East-west metres at the fix are this share of the plane's, at most 1:
/// as `Shape::depth` computes it.
fn correction(area: &Planar, spot: &Spot) -> f64 {
    (spot.cos_lat / area.cos0).min(1.0)
}

/// Stage 1: bounds from the distance to the origin alone. Beyond the outer
/// circle a point is outside; within the inner one it is on the origin's
/// side. Between the two its side is unknown, but a path to the other side
/// is short: straight out past the outer circle from inside, and straight
/// to the origin when that is on the other side (the boundary it crosses
/// lies beyond the inner circle). That alone tells a device inside a fence
/// that it has not left it by the exit margin, most of the time.
fn circles(area: &Planar, spot: &Spot) -> (f64, f64) {
    let p = area.to_plane(spot.lat, spot.lon);
    let d = (p.x() * p.x() + p.y() * p.y()).sqrt();
    let slack = slack(d, area.reach);
    let k = correction(area, spot);
    let (reach, clear) = (area.reach, area.clear);
    // Every edge lies within `reach` of the origin: from beyond it the
    // nearest is at least d - reach away, and a vertex at most d + reach.
    let far = (d + reach) * k;
    if d > reach + slack {
        return (-far - slack, -((d - reach) * k) + slack);
    }
    // The way out from inside, straight away from the origin.
    let out = (reach - d).max(0.0) * k;
    if clear == 0.0 {
        // The origin is on or near the boundary: its side tells nothing.
        return (-far - slack, out + slack);
    }
    if d + slack < clear {
        // No edge within `clear` of the origin: at least clear - d away.
        let near = (clear - d) * k;
        return if area.origin_inside {
            (near - slack, out + slack)
        } else {
            (-far - slack, -near + slack)
        };
    }
    // Between the circles: from the side the origin is not on, the way to
    // the origin crosses the boundary within d - clear.
    let across = (d - clear).max(0.0) * k;
    if area.origin_inside {
        (-across - slack, out + slack)
    } else {
        (-far - slack, across.min(out) + slack)
    }
}

/// Stage 2: one pass over the edges for the crossing count and the squared
/// distance to the nearest; `None` within the slack of an edge.
fn edges(area: &Planar, spot: &Spot) -> Option<(f64, f64)> {
    let p = area.to_plane(spot.lat, spot.lon);
    let (px, py) = (p.x(), p.y());
    let mut inside = false;
    let mut nearest = f64::INFINITY;
    let mut directions = area.directions.iter();
    for ring in &area.rings {
        for (pair, &[ux, uy, length]) in ring.0.windows(2).zip(&mut directions) {
            // The edge's ends relative to the point.
            let (ax, ay) = (pair[0].x - px, pair[0].y - py);
            let by = pair[1].y - py;
            // Crossing the ray from the point eastwards (half-open in y, so
            // that a vertex on the ray counts once: hence the vertices'
            // own y, not one computed from the direction).
            if (ay > 0.0) != (by > 0.0) {
                let bx = pair[1].x - px;
                if ax - ay * (bx - ax) / (by - ay) > 0.0 {
                    inside = !inside;
                }
            }
            // Along the edge and across it, from its start to the point.
            let along = -(ux * ax + uy * ay);
            let across = uy * ax - ux * ay;
            let beyond = along - along.max(0.0).min(length);
            nearest = nearest.min(across * across + beyond * beyond);
        }
    }
    let distance = nearest.sqrt();
    let slack = slack((px * px + py * py).sqrt(), area.reach);
    // Nearer than this, rounding could have miscounted a crossing (NaN
    // coordinates end here too).
    if distance.partial_cmp(&(2.0 * slack)) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    let depth = distance * correction(area, spot);
    let depth = if inside { depth } else { -depth };
    Some((depth - slack, depth + slack))
}

#[cfg(test)]
thread_local! {
    static EXACT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Tests can make every probe go straight to the exact test, to compare.
#[cfg(test)]
pub(super) fn force_exact(on: bool) {
    EXACT.with(|e| e.set(on));
}

#[cfg(test)]
fn forced_exact() -> bool {
    EXACT.with(std::cell::Cell::get)
}

#[cfg(not(test))]
fn forced_exact() -> bool {
    false
}

#[cfg(test)]
mod tests;
