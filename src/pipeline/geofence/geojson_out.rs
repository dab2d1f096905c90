//! The fences as GeoJSON, for `GET /api/geofences`: what was given, in the
//! conventions [`parse_geojson`](super::load::parse_geojson) reads, so that
//! the answer can be saved and loaded again as a fence file.

use geojson::{Feature, Geometry, JsonObject, JsonValue, Value as GeometryValue, feature};

use super::fence::Fence;
use super::index::FenceSet;
use super::load::KMH_PER_MPS;
use super::shape::Outline;

/// Every fence of `set` as a Feature of a FeatureCollection, in load order.
pub fn feature_collection(set: &FenceSet) -> JsonValue {
    let features: Vec<JsonValue> = set
        .fences()
        .iter()
        .map(|fence| JsonValue::Object(JsonObject::from(&to_feature(fence))))
        .collect();
    serde_json::json!({ "type": "FeatureCollection", "features": features })
}

/// One fence: an area as the Polygon (one part) or MultiPolygon it was, a
/// circle as a Point with `radius_m`; `name`, `speed_limit_kmh` and
/// `dwell_s` beside the free properties.
fn to_feature(fence: &Fence) -> Feature {
    let mut properties = fence.properties.clone();
    let geometry = match fence.shape.outline() {
        Outline::Area(area) => match area.0.as_slice() {
            [polygon] => GeometryValue::from(polygon),
            _ => GeometryValue::from(area),
        },
        Outline::Circle { lat, lon, radius_m } => {
            properties.insert("radius_m".into(), (*radius_m).into());
            GeometryValue::Point(vec![*lon, *lat])
        }
    };
    if let Some(name) = &fence.name {
        properties.insert("name".into(), name.clone().into());
    }
    if let Some(limit) = fence.speed_limit {
        properties.insert("speed_limit_kmh".into(), kmh(limit).into());
    }
    if let Some(dwell) = fence.dwell {
        let seconds = match dwell.subsec_nanos() {
            0 => dwell.as_secs().into(),
            _ => dwell.as_secs_f64().into(),
        };
        properties.insert("dwell_s".into(), seconds);
    }
    Feature {
        bbox: None,
        geometry: Some(Geometry::new(geometry)),
        id: Some(feature::Id::String(fence.id.to_string())),
        properties: Some(properties),
        foreign_members: None,
    }
}

/// A limit in m/s as km/h, rounded to 1e-9 km/h: limits are given in km/h,
/// and the rounding undoes the error of `/ 3.6 * 3.6` so that `50` reads
/// back as `50`, not `50.00000000000001`, and loads as the same limit.
fn kmh(mps: f64) -> f64 {
    (mps * KMH_PER_MPS * 1e9).round() / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::geofence::load::parse_geojson;

    const FENCES: &str = r#"{"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "yard",
         "properties": {"name": "Yard", "speed_limit_kmh": 15, "dwell": "10m 0.5s", "colour": "red", "tags": [1, {"a": null}]},
         "geometry": {"type": "Polygon", "coordinates": [
            [[5.0, 52.0], [5.01, 52.0], [5.01, 52.01], [5.0, 52.01], [5.0, 52.0]],
            [[5.004, 52.004], [5.006, 52.004], [5.006, 52.006], [5.004, 52.004]]]}},
        {"type": "Feature", "id": 7,
         "properties": {"radius_m": 250.5, "speed_limit_kmh": 33.3, "dwell": 90},
         "geometry": {"type": "Point", "coordinates": [-3.7, 40.4]}},
        {"type": "Feature", "properties": {"id": "islands"},
         "geometry": {"type": "MultiPolygon", "coordinates": [
            [[[179.9, -17.0], [180.0, -17.0], [180.0, -16.9], [179.9, -17.0]]],
            [[[-180.0, -17.0], [-179.9, -17.0], [-180.0, -16.9], [-180.0, -17.0]]]]}}
    ]}"#;

    #[test]
    fn what_is_written_loads_as_the_same_fences() {
        let fences = parse_geojson(FENCES, "in.geojson").unwrap();
        let set = FenceSet::new(fences.clone()).unwrap();
        let out = feature_collection(&set);
        let again =
            parse_geojson(&out.to_string(), "out.geojson").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, fences);
    }

    #[test]
    fn circles_are_points_with_a_radius_and_units_are_as_documented() {
        let set = FenceSet::new(parse_geojson(FENCES, "in.geojson").unwrap()).unwrap();
        let out = feature_collection(&set);
        let yard = &out["features"][0];
        assert_eq!(yard["id"], "yard");
        assert_eq!(yard["geometry"]["type"], "Polygon");
        assert_eq!(yard["properties"]["speed_limit_kmh"], 15.0);
        assert_eq!(yard["properties"]["dwell_s"], 600.5);
        assert_eq!(yard["properties"]["colour"], "red");
        let circle = &out["features"][1];
        assert_eq!(circle["id"], "7");
        assert_eq!(circle["geometry"]["type"], "Point");
        assert_eq!(
            circle["geometry"]["coordinates"],
            serde_json::json!([-3.7, 40.4])
        );
        assert_eq!(circle["properties"]["radius_m"], 250.5);
        assert_eq!(circle["properties"]["dwell_s"], 90);
        assert_eq!(out["features"][2]["geometry"]["type"], "MultiPolygon");
    }

    #[test]
    fn limits_in_whole_and_decimal_kmh_come_back_as_written() {
        for given in [1.0, 15.0, 30.0, 33.3, 50.0, 80.0, 99.9, 130.0, 0.1, 7.25] {
            let mps = crate::pipeline::geofence::load::speed_limit_from_kmh(given).unwrap();
            assert_eq!(kmh(mps), given);
        }
    }
}
