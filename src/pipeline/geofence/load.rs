//! Fences from GeoJSON files and from the configuration.
//!
//! GeoJSON conventions: a fence is a Feature; its id is the Feature's `id`
//! (a string, or a number taken as its decimal text) or else
//! `properties.id`. `properties.name` is a string, `properties.speed_limit_kmh`
//! a number above 0 and at most 10,800, `properties.dwell` a duration string like `"10m"` or a
//! number of seconds (`properties.dwell_s`, as `/api/geofences` writes it,
//! is seconds too). A Polygon or MultiPolygon (holes allowed) is an area; a
//! Point with `properties.radius_m` is a circle. These keys are taken out of
//! the properties; the rest pass through untouched. A recognised key whose
//! value is `null` counts as absent, since GIS tools export empty attributes
//! that way.
//!
//! Problems name the file and the feature (counted from 0, as the
//! `features` array is indexed, like the polygons and rings of an area), and
//! every problem of a file is reported at once, so that one edit fixes them
//! all.

use std::fmt;
use std::time::Duration;

use geo::{LineString, MultiPolygon, Polygon};
use geojson::{
    Feature, GeoJson, JsonObject, JsonValue, PolygonType, Value as GeometryValue, feature,
};

use crate::fix::FenceId;

use super::fence::Fence;
use super::index::FenceSet;
use super::shape::{Outline, Shape};

/// Kilometres per hour in a metre per second.
pub const KMH_PER_MPS: f64 = 3.6;

/// Longest dwell accepted: a month is already a very long visit, and a
/// bound keeps a mistyped number from overflowing a `Duration`.
pub const MAX_DWELL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Property names with a meaning of their own; they are never free
/// properties (the configuration refuses them in a fence's `properties`).
pub const RESERVED_PROPERTIES: &[&str] = &[
    "id",
    "name",
    "speed_limit_kmh",
    "dwell",
    "dwell_s",
    "radius_m",
];

/// Everything wrong with the fence sources read, one problem a line, each
/// starting with the file (and the feature) it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    problems: Vec<String>,
}

impl LoadError {
    fn new(problems: Vec<String>) -> Self {
        debug_assert!(!problems.is_empty(), "a LoadError needs a problem");
        Self { problems }
    }

    /// Every problem found, in the order found.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

/// Highest speed limit, km/h: the fastest speed a fix may report
/// ([`crate::fix::limits::SPEED`]); the limit is stored and sent with
/// `speeding` events like a speed.
pub const MAX_SPEED_LIMIT_KMH: f64 = crate::fix::limits::SPEED.max * KMH_PER_MPS;

/// A speed limit given in km/h, in m/s; `None` unless above 0 and at most
/// [`MAX_SPEED_LIMIT_KMH`].
pub fn speed_limit_from_kmh(kmh: f64) -> Option<f64> {
    (kmh.is_finite() && kmh > 0.0 && kmh <= MAX_SPEED_LIMIT_KMH).then_some(kmh / KMH_PER_MPS)
}

/// A dwell given in seconds; `None` unless above 0 and at most [`MAX_DWELL`].
pub fn dwell_from_secs(secs: f64) -> Option<Duration> {
    let dwell = Duration::try_from_secs_f64(secs).ok()?;
    (!dwell.is_zero() && dwell <= MAX_DWELL).then_some(dwell)
}

/// An area from polygons of rings of `[lon, lat]` positions; rings are
/// closed when they are not. `Err` names a polygon without any ring.
pub fn area(polygons: Vec<Vec<Vec<[f64; 2]>>>) -> Result<Outline, String> {
    let mut out = Vec::with_capacity(polygons.len());
    for (i, rings) in polygons.into_iter().enumerate() {
        let mut rings = rings.into_iter().map(LineString::from);
        let Some(exterior) = rings.next() else {
            return Err(format!("polygon {i} has no rings"));
        };
        out.push(Polygon::new(exterior, rings.collect()));
    }
    Ok(Outline::Area(MultiPolygon::new(out)))
}

/// Reads the fences of a GeoJSON document: a FeatureCollection or a single
/// Feature. `file` names the document in problems.
pub fn parse_geojson(text: &str, file: &str) -> Result<Vec<Fence>, LoadError> {
    let features = match serde_json::from_str::<GeoJson>(text) {
        Ok(GeoJson::FeatureCollection(collection)) => collection.features,
        Ok(GeoJson::Feature(feature)) => vec![feature],
        Ok(GeoJson::Geometry(geometry)) => {
            return Err(LoadError::new(vec![format!(
                "{file}: expected a FeatureCollection or a Feature, found a bare {} geometry",
                geometry.value.type_name()
            )]));
        }
        Err(err) => return Err(LoadError::new(vec![json_problem(file, &err)])),
    };
    let mut fences = Vec::with_capacity(features.len());
    let mut problems = Vec::new();
    for (i, feature) in features.into_iter().enumerate() {
        let mut reading = FeatureReader::default();
        let fence = reading.fence(feature);
        let label = reading.label(i);
        problems.extend(
            reading
                .problems
                .into_iter()
                .map(|p| format!("{file}: {label}: {p}")),
        );
        fences.extend(fence);
    }
    if problems.is_empty() {
        Ok(fences)
    } else {
        Err(LoadError::new(problems))
    }
}

/// A JSON (or GeoJSON structure) error at its line and column, which
/// serde_json knows and appends to its message: moved to the front, where
/// editors and CI logs look for them.
fn json_problem(file: &str, err: &serde_json::Error) -> String {
    let text = err.to_string();
    if err.line() == 0 {
        return format!("{file}: {text}");
    }
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text);
    format!("{file}:{}:{}: {message}", err.line(), err.column())
}

/// Reads one feature, noting every problem instead of stopping at the first.
#[derive(Default)]
struct FeatureReader {
    /// The id as written, for naming the feature in problems.
    id: Option<String>,
    problems: Vec<String>,
}

impl FeatureReader {
    /// How problems name the feature: `feature 3 (id "yard")`.
    fn label(&self, index: usize) -> String {
        match &self.id {
            Some(id) => format!("feature {index} (id {id:?})"),
            None => format!("feature {index}"),
        }
    }

    fn fence(&mut self, feature: Feature) -> Option<Fence> {
        let mut properties = feature.properties.unwrap_or_default();
        let id = self.id(feature.id, &mut properties);
        let name = self.name(&mut properties);
        let speed_limit = self.speed_limit(&mut properties);
        let dwell = self.dwell(&mut properties);
        let radius = self.radius(&mut properties);
        let geometry = feature.geometry.map(|g| g.value);
        let shape = self.shape(geometry, radius);
        if !self.problems.is_empty() {
            return None;
        }
        Some(Fence {
            id: id?,
            name,
            shape: shape?,
            speed_limit,
            dwell,
            properties,
        })
    }

    /// The Feature's `id`, else `properties.id`; when both are given they
    /// must agree, since one of them would otherwise be silently ignored.
    fn id(&mut self, id: Option<feature::Id>, properties: &mut JsonObject) -> Option<FenceId> {
        let from_feature = id.map(|id| match id {
            feature::Id::String(s) => s,
            feature::Id::Number(n) => n.to_string(),
        });
        let from_properties = match take(properties, "id") {
            None => None,
            Some(JsonValue::String(s)) => Some(s),
            Some(JsonValue::Number(n)) => Some(n.to_string()),
            Some(other) => {
                self.bad("id", "a string or a number", &other);
                None
            }
        };
        let text = match (from_feature, from_properties) {
            (Some(a), Some(b)) if a != b => {
                self.problems.push(format!(
                    "the feature's id {a:?} and properties.id {b:?} differ; give one"
                ));
                self.id = Some(a);
                return None;
            }
            (Some(a), _) => a,
            (None, Some(b)) => b,
            (None, None) => {
                self.problems
                    .push("no id: give the feature an \"id\" or a properties.id".to_owned());
                return None;
            }
        };
        self.id = Some(text.clone());
        match FenceId::new(&text) {
            Ok(id) => Some(id),
            Err(err) => {
                self.problems
                    .push(format!("id {text:?} is not a valid fence id: {err}"));
                None
            }
        }
    }

    fn name(&mut self, properties: &mut JsonObject) -> Option<String> {
        match take(properties, "name")? {
            JsonValue::String(s) => Some(s),
            other => {
                self.bad("name", "a string", &other);
                None
            }
        }
    }

    fn speed_limit(&mut self, properties: &mut JsonObject) -> Option<f64> {
        let value = take(properties, "speed_limit_kmh")?;
        let limit = value.as_f64().and_then(speed_limit_from_kmh);
        if limit.is_none() {
            let expected = format!("a number above 0 and at most {MAX_SPEED_LIMIT_KMH}");
            self.bad("speed_limit_kmh", &expected, &value);
        }
        limit
    }

    /// `dwell` (a duration string or seconds) or `dwell_s` (seconds).
    fn dwell(&mut self, properties: &mut JsonObject) -> Option<Duration> {
        let dwell = take(properties, "dwell");
        let dwell_s = take(properties, "dwell_s");
        let range = format!(
            "above 0 and at most {}",
            humantime::format_duration(MAX_DWELL)
        );
        match (dwell, dwell_s) {
            (Some(_), Some(_)) => {
                self.problems.push(
                    "properties.dwell and properties.dwell_s are both given; give one".into(),
                );
                None
            }
            (Some(JsonValue::String(text)), None) => {
                let dwell = humantime::parse_duration(&text)
                    .ok()
                    .filter(|d| !d.is_zero() && *d <= MAX_DWELL);
                if dwell.is_none() {
                    let expected =
                        format!("a duration like \"10m\" or a number of seconds, {range}");
                    self.bad("dwell", &expected, &JsonValue::String(text));
                }
                dwell
            }
            (Some(value), None) => self.seconds("dwell", &range, value),
            (None, Some(value)) => self.seconds("dwell_s", &range, value),
            (None, None) => None,
        }
    }

    fn seconds(&mut self, key: &str, range: &str, value: JsonValue) -> Option<Duration> {
        let dwell = value.as_f64().and_then(dwell_from_secs);
        if dwell.is_none() {
            self.bad(key, &format!("a number of seconds {range}"), &value);
        }
        dwell
    }

    fn radius(&mut self, properties: &mut JsonObject) -> Option<Result<f64, ()>> {
        let value = take(properties, "radius_m")?;
        match value.as_f64() {
            Some(r) if r > 0.0 => Some(Ok(r)),
            _ => {
                self.bad("radius_m", "a number of metres above 0", &value);
                Some(Err(()))
            }
        }
    }

    /// The shape from the geometry, and for a Point from `radius_m` (`Err`
    /// when given but unusable, already reported).
    fn shape(
        &mut self,
        geometry: Option<GeometryValue>,
        radius: Option<Result<f64, ()>>,
    ) -> Option<Shape> {
        const WANTED: &str = "a Polygon, a MultiPolygon or a Point with properties.radius_m";
        let outline = match (geometry, radius) {
            (None, _) => Err(format!("no geometry; a fence needs {WANTED}")),
            (Some(GeometryValue::Point(coordinates)), Some(radius)) => {
                let [lon, lat, ..] = coordinates.as_slice() else {
                    // geojson refuses shorter Points; kept total all the same.
                    return self.fail("the Point needs a longitude and a latitude");
                };
                let radius_m = radius.ok()?;
                Ok(Outline::Circle {
                    lat: *lat,
                    lon: *lon,
                    radius_m,
                })
            }
            (Some(GeometryValue::Point { .. }), None) => {
                Err("a Point needs properties.radius_m (metres) to be a circle fence".to_owned())
            }
            (Some(_), Some(_)) => Err("properties.radius_m only applies to a Point".to_owned()),
            (Some(GeometryValue::Polygon(coordinates)), None) => {
                positions(std::slice::from_ref(&coordinates)).and_then(area)
            }
            (Some(GeometryValue::MultiPolygon(coordinates)), None) => {
                positions(&coordinates).and_then(area)
            }
            (Some(other), None) => Err(format!(
                "a {} cannot be a fence; use {WANTED}",
                other.type_name()
            )),
        };
        match outline.map(Shape::new) {
            Ok(Ok(shape)) => Some(shape),
            Ok(Err(err)) => self.fail(err.to_string()),
            Err(message) => self.fail(message),
        }
    }

    fn fail<T>(&mut self, message: impl Into<String>) -> Option<T> {
        self.problems.push(message.into());
        None
    }

    /// A known property with a value it cannot have.
    fn bad(&mut self, key: &str, expected: &str, value: &JsonValue) {
        self.problems
            .push(format!("properties.{key} must be {expected}, not {value}"));
    }
}

/// Takes a recognised property out; `null` counts as absent.
fn take(properties: &mut JsonObject, key: &str) -> Option<JsonValue> {
    properties.remove(key).filter(|v| !v.is_null())
}

/// GeoJSON positions as `[lon, lat]` (an altitude is dropped: fences are
/// two-dimensional); `Err` names a position with fewer than two numbers.
fn positions(polygons: &[PolygonType]) -> Result<Vec<Vec<Vec<[f64; 2]>>>, String> {
    polygons
        .iter()
        .enumerate()
        .map(|(p, rings)| {
            rings
                .iter()
                .enumerate()
                .map(|(r, ring)| {
                    ring.iter()
                        .enumerate()
                        .map(|(k, position)| match position.as_slice() {
                            [lon, lat, ..] => Ok([*lon, *lat]),
                            short => Err(format!(
                                "polygon {p}, ring {r}, position {k}: a position needs a longitude and a latitude, found {} number(s)",
                                short.len()
                            )),
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// Reads every fence file of the configuration, adds its inline fences and
/// indexes them all. Every problem of every file is reported; an id used
/// twice is reported with both places (a file and feature, or `config`).
pub fn load_all(config: &crate::config::Geofence) -> Result<FenceSet, LoadError> {
    let mut problems = Vec::new();
    let mut placed: Vec<(Fence, String)> = Vec::new();
    for path in &config.files {
        let file = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) => {
                problems.push(format!("{file}: cannot read: {err}"));
                continue;
            }
        };
        match parse_geojson(&text, &file) {
            Ok(fences) => placed.extend(
                fences
                    .into_iter()
                    .enumerate()
                    .map(|(i, fence)| (fence, format!("{file} (feature {i})"))),
            ),
            Err(err) => problems.extend(err.problems),
        }
    }
    placed.extend(
        config
            .fences
            .iter()
            .map(|fence| (fence.clone(), "config".to_owned())),
    );
    problems.extend(duplicates(&placed));
    if !problems.is_empty() {
        return Err(LoadError::new(problems));
    }
    let fences = placed.into_iter().map(|(fence, _)| fence).collect();
    // Unreachable after the check above; kept as an error, not a panic.
    FenceSet::new(fences).map_err(|err| LoadError::new(vec![err.to_string()]))
}

/// A problem for every fence whose id an earlier one already has.
fn duplicates(placed: &[(Fence, String)]) -> Vec<String> {
    let mut first = std::collections::HashMap::new();
    let mut problems = Vec::new();
    for (fence, place) in placed {
        if let Some(earlier) = first.insert(&fence.id, place) {
            problems.push(format!(
                "fence id {:?} is defined twice: in {earlier} and in {place}",
                fence.id.as_str()
            ));
            // Keep naming the first definition for any further repeat.
            first.insert(&fence.id, earlier);
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A Feature with these properties and geometry, as JSON text.
    fn feature(id: &str, properties: &str, geometry: &str) -> String {
        let id = if id.is_empty() {
            String::new()
        } else {
            format!("\"id\": {id}, ")
        };
        format!(r#"{{"type": "Feature", {id}"properties": {properties}, "geometry": {geometry}}}"#)
    }

    fn collection(features: &[String]) -> String {
        format!(
            r#"{{"type": "FeatureCollection", "features": [{}]}}"#,
            features.join(", ")
        )
    }

    const SQUARE: &str = r#"{"type": "Polygon", "coordinates": [[[5.0, 52.0], [5.01, 52.0], [5.01, 52.01], [5.0, 52.01], [5.0, 52.0]]]}"#;
    const POINT: &str = r#"{"type": "Point", "coordinates": [5.0, 52.0]}"#;

    fn problems(text: &str) -> Vec<String> {
        match parse_geojson(text, "f.geojson") {
            Ok(fences) => panic!("expected problems, got {fences:?}"),
            Err(err) => err.problems().to_vec(),
        }
    }

    /// The one problem of a single feature with these properties and geometry.
    fn problem(properties: &str, geometry: &str) -> String {
        let found = problems(&feature(r#""a""#, properties, geometry));
        assert_eq!(found.len(), 1, "{found:#?}");
        found[0].clone()
    }

    #[test]
    fn a_feature_collection_follows_the_conventions() {
        let text = collection(&[
            feature(
                r#""yard""#,
                r#"{"name": "Yard", "speed_limit_kmh": 36, "dwell": "10m", "colour": "red"}"#,
                SQUARE,
            ),
            feature(
                "17",
                r#"{"radius_m": 50, "dwell": 90, "name": null, "speed_limit_kmh": null}"#,
                POINT,
            ),
            feature("", r#"{"id": "by-property", "dwell_s": 1.5}"#, SQUARE),
        ]);
        let fences = parse_geojson(&text, "f.geojson").unwrap_or_else(|e| panic!("{e}"));
        let [yard, point, by_property] = fences.as_slice() else {
            panic!("{fences:?}")
        };
        assert_eq!(yard.id.as_str(), "yard");
        assert_eq!(yard.name.as_deref(), Some("Yard"));
        assert_eq!(yard.speed_limit, Some(10.0));
        assert_eq!(yard.dwell, Some(Duration::from_secs(600)));
        assert!(matches!(yard.shape.outline(), Outline::Area(a) if a.0.len() == 1));
        let mut free = JsonObject::new();
        free.insert("colour".into(), "red".into());
        assert_eq!(yard.properties, free);
        assert_eq!(point.id.as_str(), "17");
        assert_eq!((point.name.as_ref(), point.speed_limit), (None, None));
        assert_eq!(point.dwell, Some(Duration::from_secs(90)));
        assert_eq!(
            point.shape.outline(),
            &Outline::Circle {
                lat: 52.0,
                lon: 5.0,
                radius_m: 50.0
            }
        );
        assert!(point.properties.is_empty(), "{:?}", point.properties);
        assert_eq!(by_property.id.as_str(), "by-property");
        assert_eq!(by_property.dwell, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn a_single_feature_is_one_fence_and_holes_are_kept() {
        let with_hole = r#"{"type": "Polygon", "coordinates": [
            [[5.0, 52.0], [5.01, 52.0], [5.01, 52.01], [5.0, 52.01], [5.0, 52.0]],
            [[5.004, 52.004], [5.006, 52.004], [5.006, 52.006], [5.004, 52.004]]]}"#;
        let fences = parse_geojson(&feature(r#""a""#, "null", with_hole), "f.geojson").unwrap();
        let Outline::Area(area) = fences[0].shape.outline() else {
            panic!()
        };
        assert_eq!(area.0[0].interiors().len(), 1);
        assert!(fences[0].shape.depth(52.0045, 5.0055) < 0.0);
        assert!(fences[0].shape.depth(52.002, 5.002) > 0.0);
    }

    #[test]
    fn the_example_file_loads() {
        let text = include_str!("../../../config/fences.example.geojson");
        let fences =
            parse_geojson(text, "fences.example.geojson").unwrap_or_else(|e| panic!("{e}"));
        let ids: Vec<&str> = fences.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["depot", "station"]);
        let Outline::Area(depot) = fences[0].shape.outline() else {
            panic!()
        };
        assert_eq!(depot.0[0].interiors().len(), 1);
        let station = &fences[1];
        assert!(matches!(station.shape.outline(), Outline::Circle { .. }));
        assert_eq!(station.dwell, Some(Duration::from_secs(600)));
        assert!(station.speed_limit.is_some());
    }

    #[test]
    fn json_errors_carry_line_and_column() {
        let found = problems("{\"type\": \"FeatureCollection\",\n  \"features\": [}\n");
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("f.geojson:2:16: "), "{found:?}");
        assert!(!found[0].contains("at line"), "{found:?}");
        let found = problems("[1, 2]");
        assert!(found[0].starts_with("f.geojson:1:"), "{found:?}");
    }

    #[test]
    fn a_bare_geometry_is_not_a_fence_file() {
        assert_eq!(
            problems(SQUARE),
            ["f.geojson: expected a FeatureCollection or a Feature, found a bare Polygon geometry"]
        );
    }

    #[test]
    fn problems_name_the_file_the_feature_and_the_ring() {
        let short = r#"{"type": "Polygon", "coordinates": [
            [[5.0, 52.0], [5.01, 52.0], [5.01, 52.01], [5.0, 52.0]],
            [[5.004, 52.004], [5.006, 52.004], [5.004, 52.004]]]}"#;
        let mut features = vec![feature(r#""ok""#, "{}", SQUARE); 3];
        features.push(feature(r#""yard""#, "{}", short));
        assert_eq!(
            problems(&collection(&features)),
            [
                "f.geojson: feature 3 (id \"yard\"): polygon 0, ring 1: a ring needs at least 3 distinct positions, found 2"
            ]
        );
    }

    #[test]
    fn every_problem_of_a_file_is_reported() {
        let text = collection(&[
            feature(
                r#""a""#,
                r#"{"speed_limit_kmh": "fast", "name": 3}"#,
                "null",
            ),
            feature(r#""b""#, "{}", SQUARE),
            feature("", "{}", POINT),
        ]);
        let found = problems(&text);
        assert_eq!(
            found,
            [
                "f.geojson: feature 0 (id \"a\"): properties.name must be a string, not 3",
                "f.geojson: feature 0 (id \"a\"): properties.speed_limit_kmh must be a number above 0 and at most 10800, not \"fast\"",
                "f.geojson: feature 0 (id \"a\"): no geometry; a fence needs a Polygon, a MultiPolygon or a Point with properties.radius_m",
                "f.geojson: feature 2: no id: give the feature an \"id\" or a properties.id",
                "f.geojson: feature 2: a Point needs properties.radius_m (metres) to be a circle fence",
            ]
        );
    }

    #[test]
    fn ids_must_be_valid_and_agree() {
        let found = problems(&feature(r#""a b""#, "{}", SQUARE));
        assert!(
            found[0].starts_with(
                "f.geojson: feature 0 (id \"a b\"): id \"a b\" is not a valid fence id:"
            ),
            "{found:?}"
        );
        let found = problems(&feature(r#""a""#, r#"{"id": "b"}"#, SQUARE));
        assert!(
            found[0].ends_with("the feature's id \"a\" and properties.id \"b\" differ; give one")
        );
        let found = problems(&feature("", r#"{"id": true}"#, SQUARE));
        assert!(found[0].ends_with("properties.id must be a string or a number, not true"));
        // The same id twice is one id, taken out of the free properties.
        let fences = parse_geojson(&feature(r#""a""#, r#"{"id": "a"}"#, SQUARE), "f").unwrap();
        assert!(fences[0].properties.is_empty());
    }

    #[test]
    fn bad_speed_limits_and_dwells_name_the_property() {
        for (properties, expected) in [
            (
                r#"{"speed_limit_kmh": 0}"#,
                "properties.speed_limit_kmh must be a number above 0 and at most 10800, not 0",
            ),
            (
                r#"{"speed_limit_kmh": 20000}"#,
                "properties.speed_limit_kmh must be a number above 0 and at most 10800, not 20000",
            ),
            (
                r#"{"dwell": "soon"}"#,
                "properties.dwell must be a duration like \"10m\" or a number of seconds, above 0 and at most 30days, not \"soon\"",
            ),
            (r#"{"dwell": "0s"}"#, "properties.dwell must be a duration"),
            (
                r#"{"dwell": -5}"#,
                "properties.dwell must be a number of seconds above 0 and at most 30days, not -5",
            ),
            (
                r#"{"dwell": 1e12}"#,
                "properties.dwell must be a number of seconds",
            ),
            (
                r#"{"dwell_s": "10m"}"#,
                "properties.dwell_s must be a number of seconds",
            ),
            (
                r#"{"dwell": "1m", "dwell_s": 60}"#,
                "properties.dwell and properties.dwell_s are both given; give one",
            ),
        ] {
            let found = problem(properties, SQUARE);
            assert!(
                found.starts_with(&format!("f.geojson: feature 0 (id \"a\"): {expected}")),
                "{properties}: {found}"
            );
        }
    }

    #[test]
    fn geometries_other_than_areas_and_circles_are_refused() {
        for (properties, geometry, expected) in [
            (
                "{}",
                r#"{"type": "LineString", "coordinates": [[5, 52], [6, 52]]}"#,
                "a LineString cannot be a fence; use a Polygon, a MultiPolygon or a Point with properties.radius_m",
            ),
            (
                r#"{"radius_m": 5}"#,
                SQUARE,
                "properties.radius_m only applies to a Point",
            ),
            (
                r#"{"radius_m": "big"}"#,
                POINT,
                "properties.radius_m must be a number of metres above 0, not \"big\"",
            ),
            (
                r#"{"radius_m": 2e6}"#,
                POINT,
                "circle: centre [5, 52] must be a longitude",
            ),
            (
                r#"{}"#,
                r#"{"type": "MultiPolygon", "coordinates": [[[[5, 86], [6, 86], [6, 87], [5, 86]]]]}"#,
                "polygon 0: latitude 86 is beyond",
            ),
            (
                r#"{}"#,
                r#"{"type": "MultiPolygon", "coordinates": [[[[5, 52], [6, 52], [6, 53], [5, 52]]], []]}"#,
                "polygon 1 has no rings",
            ),
        ] {
            let found = problem(properties, geometry);
            assert!(
                found.starts_with(&format!("f.geojson: feature 0 (id \"a\"): {expected}")),
                "{geometry}: {found}"
            );
        }
        // A one-number position is refused by the GeoJSON parser itself.
        let found = problem(
            "{}",
            r#"{"type": "Polygon", "coordinates": [[[5, 52], [6], [6, 53], [5, 52]]]}"#,
        );
        assert!(
            found.starts_with("f.geojson") && found.contains("two or more elements"),
            "{found}"
        );
    }

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn load_all_reads_the_files_and_the_inline_fences() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(&dir, "a.geojson", &feature(r#""a""#, "{}", SQUARE));
        let inline = parse_geojson(&feature(r#""b""#, "{}", SQUARE), "x").unwrap();
        let config = crate::config::Geofence {
            files: vec![a],
            fences: inline,
            ..Default::default()
        };
        let set = load_all(&config).unwrap_or_else(|e| panic!("{e}"));
        let ids: Vec<&str> = set.fences().iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn load_all_names_missing_files_bad_files_and_both_places_of_a_repeated_id() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.geojson");
        let bad = write(&dir, "bad.geojson", "{");
        let a = write(
            &dir,
            "a.geojson",
            &collection(&[
                feature(r#""x""#, "{}", SQUARE),
                feature(r#""y""#, "{}", SQUARE),
            ]),
        );
        let b = write(&dir, "b.geojson", &feature(r#""y""#, "{}", SQUARE));
        let inline = parse_geojson(&feature(r#""x""#, "{}", SQUARE), "x").unwrap();
        let config = crate::config::Geofence {
            files: vec![missing.clone(), bad.clone(), a.clone(), b.clone()],
            fences: inline,
            ..Default::default()
        };
        let found = load_all(&config).unwrap_err().problems().to_vec();
        let (missing, bad, a, b) = (
            missing.display().to_string(),
            bad.display().to_string(),
            a.display().to_string(),
            b.display().to_string(),
        );
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(
            found[0].starts_with(&format!("{missing}: cannot read: ")),
            "{found:?}"
        );
        assert!(found[1].starts_with(&format!("{bad}:1:")), "{found:?}");
        assert_eq!(
            found[2],
            format!("fence id \"y\" is defined twice: in {a} (feature 1) and in {b} (feature 0)")
        );
        assert_eq!(
            found[3],
            format!("fence id \"x\" is defined twice: in {a} (feature 0) and in config")
        );
    }
}
