//! A fence's outline and the one question the state machine asks of it: how
//! far inside (or outside) is this point, in metres.
//!
//! Areas follow GeoJSON (RFC 7946): edges are straight lines in the
//! longitude/latitude plane, so "inside" is decided there, with `geo`. Each
//! area gets its own plane at load, with longitudes unwrapped around its
//! first vertex, so that a fence across the antimeridian (drawn either way:
//! one ring reaching past ±180°, or split in two at it) is one shape. Its
//! coordinates are scaled to metres at the fence's middle latitude, which
//! keeps containment exact (the scaling is affine) and makes boundary
//! distances cheap. East-west distances away from that latitude are off by
//! the ratio of the cosines, so depths are scaled down by it where it is
//! below one: the error only ever makes the hysteresis ask for a little more.
//!
//! Near the poles a longitude/latitude plane stops meaning anything, so area
//! vertices are limited to |lat| ≤ [`MAX_AREA_LAT`] and an area to less than
//! [`MAX_LON_SPAN`] of longitude; both are checked at load. Circles are
//! measured on the sphere (haversine) and work anywhere, poles included.
//!
//! # Which way round
//!
//! Longitudes written in [-180, 180] can be read two ways: as written (the
//! edges straight in the plane, RFC 7946), or across the antimeridian (each
//! vertex unwrapped around the first, so no edge is longer than 180°). An
//! area narrower than [`MAX_LON_SPAN`] as written is read as written. A
//! wider one is read across the antimeridian, but only when that reading is
//! narrower than [`MAX_LON_SPAN`] *and less than half as wide* as the
//! written one. So one ring from 170° to −170° is the 20° across ±180° that
//! was meant, not 340° around the globe; a ring from −100° to 100° could be
//! 200° through Greenwich or 160° across ±180°, and is refused rather than
//! guessed (it would be read inside out). Split at ±180° as RFC 7946 asks,
//! an area is always unambiguous: a part touching ±180° makes the written
//! reading 360° wide, so any area narrower than 180° across it loads.

use geo::{
    Area, Contains, Distance, Euclidean, Haversine, LineString, MultiPolygon, Point, Polygon,
    Validation,
};

/// Metres per degree of latitude on geo's mean Earth radius.
const METRES_PER_DEGREE: f64 = 6_371_008.8 * std::f64::consts::PI / 180.0;
/// The mean Earth radius geo's haversine uses, in metres.
const EARTH_RADIUS: f64 = 6_371_008.8;

/// Highest |latitude| of an area's vertex: beyond it a degree of longitude
/// is under 9 km and the plane's distances are no longer worth trusting.
pub const MAX_AREA_LAT: f64 = 85.0;
/// An area must span less than this many degrees of longitude: beyond half
/// the globe "the inside" is ambiguous.
pub const MAX_LON_SPAN: f64 = 180.0;
/// Largest circle radius, in metres.
pub const MAX_RADIUS_M: f64 = 1_000_000.0;

/// A fence's outline as it was given, in degrees (x = longitude, y = latitude).
#[derive(Debug, Clone, PartialEq)]
pub enum Outline {
    /// Polygons, each an exterior ring and holes.
    Area(MultiPolygon<f64>),
    /// A circle on the sphere.
    Circle {
        /// Centre latitude, degrees.
        lat: f64,
        /// Centre longitude, degrees.
        lon: f64,
        /// Radius in metres.
        radius_m: f64,
    },
}

/// Why an outline cannot be a fence.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ShapeError {
    /// No polygon at all.
    #[error("the area has no polygon")]
    Empty,
    /// A ring with too few positions.
    #[error(
        "polygon {polygon}, ring {ring}: a ring needs at least 3 distinct positions, found {found}"
    )]
    ShortRing {
        /// Index of the polygon (from 0).
        polygon: usize,
        /// Index of the ring: 0 the exterior, then the holes.
        ring: usize,
        /// Distinct positions found.
        found: usize,
    },
    /// A coordinate that is not a number in range.
    #[error(
        "polygon {polygon}: position [{lon}, {lat}] is not a longitude in [-180, 180] and a latitude in [-90, 90]"
    )]
    Coordinate {
        /// Index of the polygon.
        polygon: usize,
        /// The longitude as given.
        lon: f64,
        /// The latitude as given.
        lat: f64,
    },
    /// An area vertex too near a pole.
    #[error(
        "polygon {polygon}: latitude {lat} is beyond ±{MAX_AREA_LAT}°; near the poles use a circle"
    )]
    Polar {
        /// Index of the polygon.
        polygon: usize,
        /// The latitude.
        lat: f64,
    },
    /// A polygon that crosses itself, has a hole outside it, or has no area.
    #[error("polygon {polygon} is not a valid area: {reason}")]
    Invalid {
        /// Index of the polygon.
        polygon: usize,
        /// What is wrong, as geo's validation says.
        reason: String,
    },
    /// An area spanning too much longitude.
    #[error(
        "the area spans {span:.1}° of longitude; fences must span less than {MAX_LON_SPAN}° (split a wider one)"
    )]
    TooWide {
        /// The span in degrees.
        span: f64,
    },
    /// An area too wide as written, and not clearly narrower read across
    /// the antimeridian (see the module's "Which way round").
    #[error(
        "the area spans {written:.1}° of longitude as written, or {across:.1}° read across the antimeridian (±180°): \
         fences must span less than {MAX_LON_SPAN}°, and one is read across ±180° only when that makes it less than half as wide; \
         split a fence that crosses ±180° there, as RFC 7946 asks"
    )]
    Ambiguous {
        /// The span as written, degrees.
        written: f64,
        /// The span read across the antimeridian, degrees.
        across: f64,
    },
    /// A circle whose centre or radius is out of range.
    #[error(
        "circle: centre [{lon}, {lat}] must be a longitude in [-180, 180] and a latitude in [-90, 90], radius {radius_m} m in (0, {MAX_RADIUS_M}]"
    )]
    Circle {
        /// Centre latitude.
        lat: f64,
        /// Centre longitude.
        lon: f64,
        /// Radius in metres.
        radius_m: f64,
    },
}

/// A checked outline, ready to answer [`Shape::depth`].
#[derive(Debug, Clone)]
pub struct Shape {
    outline: Outline,
    geometry: Geometry,
    envelope: Envelope,
}

/// The outline in the form `depth` works on.
#[derive(Debug, Clone)]
pub(super) enum Geometry {
    /// An area in its own plane, in metres.
    Area(Planar),
    /// A circle on the sphere.
    Circle { centre: Point<f64>, radius_m: f64 },
}

/// An area in its own plane, in metres, whose origin is the middle of its
/// box; with two circles about the origin that answer most questions about
/// a point without looking at an edge (see [`super::probe`]).
#[derive(Debug, Clone)]
pub(super) struct Planar {
    /// Latitude of the plane's origin.
    pub(super) lat0: f64,
    /// Longitude of the plane's origin (may lie beyond ±180).
    pub(super) lon0: f64,
    /// Metres per degree of longitude at `lat0`.
    pub(super) kx: f64,
    /// `cos(lat0)`, for the distance correction.
    pub(super) cos0: f64,
    /// The polygons in the plane.
    pub(super) plane: MultiPolygon<f64>,
    /// Every ring of `plane`, for boundary distances.
    pub(super) rings: Vec<LineString<f64>>,
    /// For each edge of `rings` in turn, its unit direction and length
    /// (`[1, 0]` and 0 for two equal vertices in a row), so that the
    /// probe's distance to it needs no division nor square root.
    pub(super) directions: Vec<[f64; 3]>,
    /// Every vertex lies within this many metres of the origin: beyond it
    /// a point is outside.
    pub(super) reach: f64,
    /// No edge comes within this many metres of the origin (less a slack
    /// for rounding; 0 when the origin is on or near the boundary)...
    pub(super) clear: f64,
    /// ... so every point that close is inside when the origin is.
    pub(super) origin_inside: bool,
}

impl Planar {
    /// A point in the plane: where [`Shape::depth`] puts it.
    pub(super) fn to_plane(&self, lat: f64, lon: f64) -> Point<f64> {
        Point::new(
            wrap(lon - self.lon0) * self.kx,
            (lat - self.lat0) * METRES_PER_DEGREE,
        )
    }
}

/// A bounding box in degrees. `lon_min..lon_max` may reach beyond ±180 for a
/// shape across the antimeridian (never by more than 360 in all).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Envelope {
    /// Southern edge.
    pub lat_min: f64,
    /// Northern edge.
    pub lat_max: f64,
    /// Western edge (may be below -180).
    pub lon_min: f64,
    /// Eastern edge (may be above 180).
    pub lon_max: f64,
}

impl Shape {
    /// Checks an outline and prepares it.
    pub fn new(outline: Outline) -> Result<Self, ShapeError> {
        let (geometry, envelope) = match &outline {
            Outline::Area(polygons) => area(polygons)?,
            Outline::Circle { lat, lon, radius_m } => circle(*lat, *lon, *radius_m)?,
        };
        Ok(Self {
            outline,
            geometry,
            envelope,
        })
    }

    /// The outline as given.
    pub fn outline(&self) -> &Outline {
        &self.outline
    }

    /// Where the shape lies, in degrees.
    pub fn envelope(&self) -> Envelope {
        self.envelope
    }

    /// How far inside the shape a point is, in metres: positive inside,
    /// negative outside, its magnitude the distance to the nearest boundary
    /// (never more than the true distance). A point on the boundary is 0.
    pub fn depth(&self, lat: f64, lon: f64) -> f64 {
        match &self.geometry {
            Geometry::Circle { centre, radius_m } => {
                radius_m - Haversine.distance(*centre, Point::new(lon, lat))
            }
            Geometry::Area(area) => {
                let p = area.to_plane(lat, lon);
                // Segment by segment: geo's point-to-ring distance first
                // tests whether the point lies on the ring, a second pass.
                let distance = area
                    .rings
                    .iter()
                    .flat_map(LineString::lines)
                    .map(|edge| Euclidean.distance(&p, &edge))
                    .fold(f64::INFINITY, f64::min);
                // East-west metres here are cos(lat)/cos(lat0) of the plane's.
                let correction = (lat.to_radians().cos() / area.cos0).min(1.0);
                let distance = distance * correction;
                if area.plane.contains(&p) {
                    distance
                } else {
                    -distance
                }
            }
        }
    }

    /// The geometry, for [`super::probe`].
    pub(super) fn geometry(&self) -> &Geometry {
        &self.geometry
    }
}

/// Longitude difference folded into `[-180, 180)`.
fn wrap(delta: f64) -> f64 {
    let shifted = delta + 180.0;
    // `rem_euclid` returns a value already in [0, 360) unchanged: the
    // same result without the cost of an `fmod` for nearly every point.
    let folded = if (0.0..360.0).contains(&shifted) {
        shifted
    } else {
        shifted.rem_euclid(360.0)
    };
    folded - 180.0
}

#[expect(
    clippy::too_many_lines,
    reason = "one pass that checks, unwraps and measures every ring; split, the unwrapping anchor would have to be threaded through"
)]
fn area(polygons: &MultiPolygon<f64>) -> Result<(Geometry, Envelope), ShapeError> {
    let first = polygons
        .0
        .first()
        .and_then(|p| p.exterior().0.first())
        .ok_or(ShapeError::Empty)?;
    let anchor = first.x;
    // Check every position and unwrap longitudes around the first vertex.
    let mut unwrapped = Vec::with_capacity(polygons.0.len());
    let mut lat_min = f64::INFINITY;
    let mut lat_max = f64::NEG_INFINITY;
    let mut lon_min = f64::INFINITY;
    let mut lon_max = f64::NEG_INFINITY;
    let mut written_min = f64::INFINITY;
    let mut written_max = f64::NEG_INFINITY;
    for (i, polygon) in polygons.0.iter().enumerate() {
        let mut rings = Vec::with_capacity(1 + polygon.interiors().len());
        for (r, ring) in std::iter::once(polygon.exterior())
            .chain(polygon.interiors())
            .enumerate()
        {
            let mut coords = Vec::with_capacity(ring.0.len());
            for c in &ring.0 {
                let (lon, lat) = (c.x, c.y);
                if !(lon.is_finite()
                    && lat.is_finite()
                    && (-180.0..=180.0).contains(&lon)
                    && (-90.0..=90.0).contains(&lat))
                {
                    return Err(ShapeError::Coordinate {
                        polygon: i,
                        lon,
                        lat,
                    });
                }
                if lat.abs() > MAX_AREA_LAT {
                    return Err(ShapeError::Polar { polygon: i, lat });
                }
                written_min = written_min.min(lon);
                written_max = written_max.max(lon);
                let lon = anchor + wrap(lon - anchor);
                lat_min = lat_min.min(lat);
                lat_max = lat_max.max(lat);
                lon_min = lon_min.min(lon);
                lon_max = lon_max.max(lon);
                coords.push(geo::coord! { x: lon, y: lat });
            }
            let mut distinct = coords.clone();
            distinct.dedup();
            if distinct.len() > 1 && distinct.first() == distinct.last() {
                distinct.pop();
            }
            if distinct.len() < 3 {
                return Err(ShapeError::ShortRing {
                    polygon: i,
                    ring: r,
                    found: distinct.len(),
                });
            }
            rings.push(LineString::new(coords));
        }
        let exterior = rings.remove(0);
        let polygon = Polygon::new(exterior, rings);
        // A fence that can never be entered must not load in silence.
        if let Err(err) = polygon.check_validation() {
            return Err(ShapeError::Invalid {
                polygon: i,
                reason: err.to_string(),
            });
        }
        if polygon.unsigned_area() <= 0.0 {
            return Err(ShapeError::Invalid {
                polygon: i,
                reason: "it has no area".into(),
            });
        }
        unwrapped.push(polygon);
    }
    // Narrower than MAX_LON_SPAN as written, every vertex lies within it of
    // the first, so the unwrapped reading is the written one.
    let written = written_max - written_min;
    let span = lon_max - lon_min;
    if span >= MAX_LON_SPAN {
        return Err(ShapeError::TooWide { span });
    }
    if written >= MAX_LON_SPAN && span * 2.0 >= written {
        return Err(ShapeError::Ambiguous {
            written,
            across: span,
        });
    }
    let lat0 = (lat_min + lat_max) / 2.0;
    let lon0 = (lon_min + lon_max) / 2.0;
    let cos0 = lat0.to_radians().cos();
    let kx = METRES_PER_DEGREE * cos0;
    let to_plane = |c: &geo::Coord<f64>| {
        geo::coord! {
            x: (c.x - lon0) * kx,
            y: (c.y - lat0) * METRES_PER_DEGREE,
        }
    };
    let plane: Vec<Polygon<f64>> = unwrapped
        .iter()
        .map(|p| {
            let ring = |r: &LineString<f64>| LineString::new(r.0.iter().map(to_plane).collect());
            Polygon::new(ring(p.exterior()), p.interiors().iter().map(ring).collect())
        })
        .collect();
    // Parts that touch (an area split at the antimeridian, as RFC 7946
    // asks) become one, so that the seam is not a boundary.
    let plane = if plane.len() > 1 {
        geo::unary_union(&plane).0
    } else {
        plane
    };
    let rings: Vec<LineString<f64>> = plane
        .iter()
        .flat_map(|p| std::iter::once(p.exterior()).chain(p.interiors()))
        .cloned()
        .collect();
    let plane = MultiPolygon::new(plane);
    let (reach, clear, origin_inside) = circles(&plane, &rings);
    let directions = rings
        .iter()
        .flat_map(LineString::lines)
        .map(|edge| {
            let (dx, dy) = (edge.dx(), edge.dy());
            let length = dx.hypot(dy);
            if length > 0.0 {
                [dx / length, dy / length, length]
            } else {
                [1.0, 0.0, 0.0]
            }
        })
        .collect();
    Ok((
        Geometry::Area(Planar {
            lat0,
            lon0,
            kx,
            cos0,
            plane,
            rings,
            directions,
            reach,
            clear,
            origin_inside,
        }),
        Envelope {
            lat_min,
            lat_max,
            lon_min,
            lon_max,
        },
    ))
}

/// The area's two circles about the origin: the radius holding every
/// vertex, and the radius no edge comes within, with the origin's side.
/// Both are widened or narrowed by a slack far beyond rounding, so that
/// they hold for the exact test's own arithmetic.
fn circles(plane: &MultiPolygon<f64>, rings: &[LineString<f64>]) -> (f64, f64, bool) {
    let origin = Point::new(0.0, 0.0);
    let reach = rings
        .iter()
        .flat_map(|r| &r.0)
        .map(|c| c.x.hypot(c.y))
        .fold(0.0, f64::max);
    let nearest = rings
        .iter()
        .flat_map(LineString::lines)
        .map(|edge| Euclidean.distance(&origin, &edge))
        .fold(f64::INFINITY, f64::min);
    let slack = super::probe::slack(reach, reach);
    let clear = (nearest - slack).max(0.0);
    (reach + slack, clear, plane.contains(&origin))
}

fn circle(lat: f64, lon: f64, radius_m: f64) -> Result<(Geometry, Envelope), ShapeError> {
    let ok = lat.is_finite()
        && lon.is_finite()
        && (-90.0..=90.0).contains(&lat)
        && (-180.0..=180.0).contains(&lon)
        && radius_m > 0.0
        && radius_m <= MAX_RADIUS_M;
    if !ok {
        return Err(ShapeError::Circle { lat, lon, radius_m });
    }
    let envelope = reach_box(lat, lon, radius_m);
    Ok((
        Geometry::Circle {
            centre: Point::new(lon, lat),
            radius_m,
        },
        envelope,
    ))
}

/// The box in degrees holding every point within `metres` of a point on the
/// sphere (a spherical cap); all longitudes when the cap holds a pole.
pub fn reach_box(lat: f64, lon: f64, metres: f64) -> Envelope {
    let angle = (metres / EARTH_RADIUS).min(std::f64::consts::PI);
    let dlat = angle.to_degrees();
    let lat_min = lat - dlat;
    let lat_max = lat + dlat;
    if lat_max >= 90.0 || lat_min <= -90.0 {
        return Envelope {
            lat_min: lat_min.max(-90.0),
            lat_max: lat_max.min(90.0),
            lon_min: -180.0,
            lon_max: 180.0,
        };
    }
    // The widest longitude offset of a cap of this angle around this latitude.
    let dlon = (angle.sin() / lat.to_radians().cos())
        .clamp(-1.0, 1.0)
        .asin()
        .to_degrees();
    Envelope {
        lat_min,
        lat_max,
        lon_min: lon - dlon,
        lon_max: lon + dlon,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::polygon;

    /// Metres north of a latitude, in degrees.
    fn north(m: f64) -> f64 {
        m / METRES_PER_DEGREE
    }

    /// A square of `side` metres centred on (lat, lon), in degrees.
    fn square(lat: f64, lon: f64, side: f64) -> Polygon<f64> {
        let dy = north(side / 2.0);
        let dx = dy / lat.to_radians().cos();
        polygon![
            (x: lon - dx, y: lat - dy),
            (x: lon + dx, y: lat - dy),
            (x: lon + dx, y: lat + dy),
            (x: lon - dx, y: lat + dy),
            (x: lon - dx, y: lat - dy),
        ]
    }

    fn area_of(p: Vec<Polygon<f64>>) -> Shape {
        Shape::new(Outline::Area(MultiPolygon::new(p))).unwrap()
    }

    #[test]
    fn depth_is_the_distance_to_the_nearest_edge_signed_inside_positive() {
        let s = area_of(vec![square(52.0, 5.0, 200.0)]);
        assert!((s.depth(52.0, 5.0) - 100.0).abs() < 0.5);
        assert!((s.depth(52.0 + north(90.0), 5.0) - 10.0).abs() < 0.5);
        assert!((s.depth(52.0 + north(130.0), 5.0) + 30.0).abs() < 0.5);
    }

    #[test]
    fn a_hole_is_outside_and_its_edge_is_a_boundary() {
        let outer = square(52.0, 5.0, 400.0);
        let hole = square(52.0, 5.0, 100.0);
        let s = area_of(vec![Polygon::new(
            outer.exterior().clone(),
            vec![hole.exterior().clone()],
        )]);
        assert!(
            (s.depth(52.0, 5.0) + 50.0).abs() < 0.5,
            "{}",
            s.depth(52.0, 5.0)
        );
        assert!((s.depth(52.0 + north(100.0), 5.0) - 50.0).abs() < 0.5);
    }

    #[test]
    fn multipolygon_parts_each_count() {
        let s = area_of(vec![square(52.0, 5.0, 100.0), square(52.01, 5.0, 100.0)]);
        assert!(s.depth(52.0, 5.0) > 0.0);
        assert!(s.depth(52.01, 5.0) > 0.0);
        assert!(s.depth(52.005, 5.0) < -400.0);
    }

    #[test]
    fn an_area_across_the_antimeridian_is_one_shape_either_way_it_is_drawn() {
        // One ring from 179.99 to "180.01" written as -179.99.
        let ring = polygon![
            (x: 179.99, y: -17.0), (x: -179.99, y: -17.0),
            (x: -179.99, y: -16.99), (x: 179.99, y: -16.99),
            (x: 179.99, y: -17.0),
        ];
        // The same area split at the antimeridian, as RFC 7946 recommends.
        let split = vec![
            polygon![(x: 179.99, y: -17.0), (x: 180.0, y: -17.0), (x: 180.0, y: -16.99), (x: 179.99, y: -16.99), (x: 179.99, y: -17.0)],
            polygon![(x: -180.0, y: -17.0), (x: -179.99, y: -17.0), (x: -179.99, y: -16.99), (x: -180.0, y: -16.99), (x: -180.0, y: -17.0)],
        ];
        for s in [area_of(vec![ring]), area_of(split)] {
            for lon in [179.995, 180.0, -180.0, -179.995] {
                let d = s.depth(-16.995, lon);
                assert!(d > 400.0, "{lon}: {d}");
            }
            assert!(s.depth(-16.995, 179.98) < -1000.0);
            assert!(s.depth(-16.995, -179.98) < -1000.0);
            assert!(s.depth(-16.995, 0.0) < -1.0e6);
            let e = s.envelope();
            assert!((e.lon_max - e.lon_min - 0.02).abs() < 1e-9, "{e:?}");
        }
    }

    #[test]
    fn an_area_wider_than_half_the_globe_is_refused_not_read_inside_out() {
        let band = |west: f64, east: f64| polygon![(x: west, y: 0.0), (x: east, y: 0.0), (x: east, y: 1.0), (x: west, y: 1.0), (x: west, y: 0.0)];
        // -100 to 100: 200° as written, or 160° across ±180°: refused, in
        // whichever order it is drawn.
        for p in [band(-100.0, 100.0), band(100.0, -100.0)] {
            let err = Shape::new(Outline::Area(MultiPolygon::new(vec![p]))).unwrap_err();
            assert!(
                matches!(err, ShapeError::Ambiguous { written, across } if written == 200.0 && across == 160.0),
                "{err}"
            );
            assert!(
                err.to_string()
                    .contains("split a fence that crosses ±180° there"),
                "{err}"
            );
        }
        // 170 to -170 as one ring: the 20° across ±180° that was meant.
        let s = area_of(vec![band(170.0, -170.0)]);
        assert!(s.depth(0.5, 180.0) > 0.0 && s.depth(0.5, -175.0) > 0.0);
        assert!(s.depth(0.5, 0.0) < 0.0 && s.depth(0.5, 100.0) < 0.0);
        let e = s.envelope();
        assert!((e.lon_max - e.lon_min - 20.0).abs() < 1e-9, "{e:?}");
        // 130 to -130 as one ring: 100° across, 260° as written: clear.
        assert!(area_of(vec![band(130.0, -130.0)]).depth(0.5, 180.0) > 0.0);
        // 120 to -120: 120° one way, 240° the other: not clear enough.
        assert!(matches!(
            Shape::new(Outline::Area(MultiPolygon::new(vec![band(120.0, -120.0)]))),
            Err(ShapeError::Ambiguous { .. })
        ));
        // The same 160° split at the antimeridian, as RFC 7946 asks: clear.
        let split = area_of(vec![band(100.0, 180.0), band(-180.0, -100.0)]);
        assert!(split.depth(0.5, 180.0) > 0.0 && split.depth(0.5, -120.0) > 0.0);
        assert!(split.depth(0.5, 0.0) < 0.0);
        // And 179° wide as written is read as written.
        let wide = area_of(vec![band(-89.5, 89.5)]);
        assert!(wide.depth(0.5, 0.0) > 0.0 && wide.depth(0.5, 180.0) < 0.0);
        // A split area wider than 180° across is too wide.
        assert!(matches!(
            Shape::new(Outline::Area(MultiPolygon::new(vec![
                band(80.0, 180.0),
                band(-180.0, -80.0)
            ]))),
            Err(ShapeError::TooWide { .. })
        ));
    }

    #[test]
    fn areas_near_the_poles_wider_than_half_the_globe_or_without_area_are_refused() {
        let polar = square(86.0, 5.0, 1000.0);
        assert!(matches!(
            Shape::new(Outline::Area(MultiPolygon::new(vec![polar]))),
            Err(ShapeError::Polar { .. })
        ));
        let wide = polygon![(x: -100.0, y: 0.0), (x: 0.0, y: 1.0), (x: 100.0, y: 0.0), (x: -100.0, y: 0.0)];
        assert!(matches!(
            Shape::new(Outline::Area(MultiPolygon::new(vec![wide]))),
            Err(ShapeError::TooWide { .. })
        ));
        let flat = polygon![(x: 0.0, y: 0.0), (x: 1.0, y: 0.0), (x: 2.0, y: 0.0), (x: 0.0, y: 0.0)];
        assert!(matches!(
            Shape::new(Outline::Area(MultiPolygon::new(vec![flat]))),
            Err(ShapeError::Invalid { .. })
        ));
        let bowtie = polygon![(x: 0.0, y: 0.0), (x: 1.0, y: 1.0), (x: 1.0, y: 0.0), (x: 0.0, y: 1.0), (x: 0.0, y: 0.0)];
        let err = Shape::new(Outline::Area(MultiPolygon::new(vec![bowtie]))).unwrap_err();
        assert!(err.to_string().contains("not a valid area"), "{err}");
        let short = polygon![(x: 0.0, y: 0.0), (x: 1.0, y: 0.0), (x: 0.0, y: 0.0)];
        assert!(matches!(
            Shape::new(Outline::Area(MultiPolygon::new(vec![short]))),
            Err(ShapeError::ShortRing { found: 2, .. })
        ));
        assert_eq!(
            Shape::new(Outline::Area(MultiPolygon::new(vec![]))).unwrap_err(),
            ShapeError::Empty
        );
    }

    #[test]
    fn a_circle_on_a_pole_works_and_its_box_holds_every_longitude() {
        let s = Shape::new(Outline::Circle {
            lat: 90.0,
            lon: 0.0,
            radius_m: 1000.0,
        })
        .unwrap();
        for lon in [-180.0, -90.0, 0.0, 45.0, 179.9] {
            assert!((s.depth(90.0 - north(400.0), lon) - 600.0).abs() < 1.0);
            assert!(s.depth(90.0 - north(1100.0), lon) < -99.0);
        }
        let e = s.envelope();
        assert_eq!((e.lon_min, e.lon_max, e.lat_max), (-180.0, 180.0, 90.0));
    }

    #[test]
    fn a_circles_box_holds_the_circle() {
        for (lat, lon) in [(0.0, 0.0), (60.0, 179.999), (-70.0, -179.9), (89.0, 10.0)] {
            let r = 5000.0;
            let s = Shape::new(Outline::Circle {
                lat,
                lon,
                radius_m: r,
            })
            .unwrap();
            let e = s.envelope();
            // Points just inside the circle in eight directions lie in the box.
            for k in 0..8 {
                let bearing = f64::from(k) * 45.0;
                let p = geo::Destination::destination(
                    &Haversine,
                    Point::new(lon, lat),
                    bearing,
                    r * 0.999,
                );
                let (plon, plat) = (p.x(), p.y());
                assert!(s.depth(plat, plon) > 0.0);
                assert!(plat >= e.lat_min && plat <= e.lat_max);
                let inside_lon = [plon, plon + 360.0, plon - 360.0]
                    .iter()
                    .any(|l| *l >= e.lon_min && *l <= e.lon_max);
                assert!(
                    inside_lon,
                    "({lat},{lon}) bearing {bearing}: {plon} not in {e:?}"
                );
            }
        }
    }

    #[test]
    fn far_from_the_planes_latitude_depths_are_never_overstated() {
        // A tall area: 52°N to 54°N.
        let s = area_of(vec![polygon![
            (x: 5.0, y: 52.0), (x: 5.1, y: 52.0), (x: 5.1, y: 54.0), (x: 5.0, y: 54.0), (x: 5.0, y: 52.0)
        ]]);
        // Near the top, 100 m west of the eastern edge (true metres).
        let lat: f64 = 53.9;
        let lon = 5.1 - 100.0 / (METRES_PER_DEGREE * lat.to_radians().cos());
        let d = s.depth(lat, lon);
        assert!(d > 95.0 && d <= 100.0 + 1e-6, "{d}");
    }
}
