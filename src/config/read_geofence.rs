//! Reads `[geofence]`: the fence files, the hysteresis options and the
//! fences written inline as `[[geofence.fence]]`, checked as fully as the
//! GeoJSON reader checks a file's, each problem at its key.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Number, Value as Json};
use toml::de::{DeTable, DeValue};

use super::{Reader, Section, Span, Value, a, number};
use crate::config::Geofence;
use crate::fix::FenceId;
use crate::pipeline::geofence::load::{self, MAX_DWELL, RESERVED_PROPERTIES};
use crate::pipeline::geofence::shape::{MAX_RADIUS_M, Outline, Shape};
use crate::pipeline::geofence::{Fence, Options};

pub(super) const GEOFENCE_KEYS: &[&str] = &[
    "files",
    "enter_fixes",
    "exit_margin_m",
    "hdop_error_m",
    "default_error_m",
    "watch_interval",
    "fence",
];
const FENCE_KEYS: &[&str] = &[
    "id",
    "name",
    "circle",
    "polygon",
    "multipolygon",
    "speed_limit_kmh",
    "dwell",
    "properties",
];
/// The keys that give a fence its shape; exactly one is needed.
const SHAPE_KEYS: &[&str] = &["circle", "polygon", "multipolygon"];
const CIRCLE_KEYS: &[&str] = &["lat", "lon", "radius_m"];

/// Polygons of rings of `[lon, lat]` positions, as written.
type Polygons = Vec<Vec<Vec<[f64; 2]>>>;

impl Reader<'_> {
    pub(super) fn geofence(&mut self, s: &Section<'_, '_>) -> Geofence {
        let mut g = Geofence {
            options: self.geofence_options(s),
            ..Geofence::default()
        };
        if let Some(files) = self.files(s) {
            g.files = files;
        }
        if let Some(interval) = self.watch_interval(s) {
            g.watch_interval = interval;
        }
        if let Some(value) = s.get("fence") {
            let mut ids = Vec::new();
            for f in self.array_of_tables("geofence.fence", value, FENCE_KEYS) {
                g.fences.extend(self.fence(&f, &mut ids));
            }
            self.check_unique_fences(ids);
        }
        g
    }

    fn geofence_options(&mut self, s: &Section<'_, '_>) -> Options {
        let mut o = Options::default();
        if let Some(n) = self.integer(s, "enter_fixes", 1..=100) {
            o.enter_fixes = n;
        }
        if let Some(x) = self.float(s, "exit_margin_m", 0.0..=10_000.0) {
            o.exit_margin_m = x;
        }
        if let Some(x) = self.float(s, "hdop_error_m", 0.0..=1_000.0) {
            o.hdop_error_m = x;
        }
        if let Some(x) = self.float(s, "default_error_m", 0.0..=10_000.0) {
            o.default_error_m = x;
        }
        o
    }

    /// `files`: paths as given (relative ones from the working directory).
    fn files(&mut self, s: &Section<'_, '_>) -> Option<Vec<PathBuf>> {
        let (items, _) = self.typed(s, "files", "an array of paths", DeValue::as_array)?;
        let mut files = Vec::with_capacity(items.len());
        for item in items {
            match item.get_ref().as_str() {
                Some(text) if !text.is_empty() => files.push(PathBuf::from(text)),
                _ => self.report(
                    &item.span(),
                    format!("each of {} must be a non-empty path string", s.key("files")),
                ),
            }
        }
        Some(files)
    }

    /// `"0s"` turns watching off; anything shorter than 100 ms would only
    /// spin on `stat`.
    fn watch_interval(&mut self, s: &Section<'_, '_>) -> Option<Duration> {
        let range = Duration::ZERO..=Duration::from_secs(3600);
        let (d, span) = self.duration(s, "watch_interval", range)?;
        if !d.is_zero() && d < Duration::from_millis(100) {
            self.report(
                &span,
                format!(
                    "{} must be \"0s\" (do not watch) or at least 100ms",
                    s.key("watch_interval")
                ),
            );
            return None;
        }
        Some(d)
    }

    /// One `[[geofence.fence]]`; its id and where it is go to `ids`.
    fn fence(&mut self, s: &Section<'_, '_>, ids: &mut Vec<(FenceId, Span)>) -> Option<Fence> {
        // Every key is read before giving up, so one problem hides no other.
        let id = self.fence_id(s);
        let name = self.string(s, "name").map(|(n, _)| n.to_owned());
        let shape = self.fence_shape(s);
        let speed_limit = self.speed_limit(s);
        let dwell = self.duration(s, "dwell", Duration::from_nanos(1)..=MAX_DWELL);
        let properties = self.fence_properties(s);
        let (id, span) = id?;
        ids.push((id.clone(), span));
        Some(Fence {
            id,
            name,
            shape: shape?,
            speed_limit,
            dwell: dwell.map(|(d, _)| d),
            properties: properties.unwrap_or_default(),
        })
    }

    fn fence_id(&mut self, s: &Section<'_, '_>) -> Option<(FenceId, Span)> {
        if !self.require(s, "id") {
            return None;
        }
        let (text, span) = self.string(s, "id")?;
        match FenceId::new(text) {
            Ok(id) => Some((id, span)),
            Err(err) => {
                self.report(
                    &span,
                    format!("{} {text:?} is not a valid id: {err}", s.key("id")),
                );
                None
            }
        }
    }

    fn speed_limit(&mut self, s: &Section<'_, '_>) -> Option<f64> {
        let (kmh, span) = self.typed(s, "speed_limit_kmh", "a number", number)?;
        let limit = load::speed_limit_from_kmh(kmh);
        if limit.is_none() {
            self.report(
                &span,
                format!(
                    "{} must be a number above 0 and at most {}, not {kmh}",
                    s.key("speed_limit_kmh"),
                    load::MAX_SPEED_LIMIT_KMH
                ),
            );
        }
        limit
    }

    /// The one shape key, read and checked with [`Shape::new`]; problems
    /// with the shape are reported at its value.
    fn fence_shape(&mut self, s: &Section<'_, '_>) -> Option<Shape> {
        let given: Vec<&str> = SHAPE_KEYS
            .iter()
            .copied()
            .filter(|k| s.get(k).is_some())
            .collect();
        let key = match given.as_slice() {
            [key] => *key,
            [] => {
                self.report(
                    &s.span,
                    format!(
                        "{} needs one of {}, {} or {}",
                        s.header(),
                        s.key("circle"),
                        s.key("polygon"),
                        s.key("multipolygon")
                    ),
                );
                return None;
            }
            [first, second, ..] => {
                let span = s.get(second)?.span();
                self.report(
                    &span,
                    format!(
                        "{} and {} are both given; a fence has one shape",
                        s.key(first),
                        s.key(second)
                    ),
                );
                return None;
            }
        };
        let value = s.get(key)?;
        let outline = match key {
            "circle" => self.circle(s)?,
            "polygon" => {
                let polygon = self.polygon(s, key, value);
                self.area(s, key, polygon.map(|p| vec![p]))?
            }
            _ => {
                let polygons = self.polygons(s, key, value);
                self.area(s, key, polygons)?
            }
        };
        match Shape::new(outline) {
            Ok(shape) => Some(shape),
            Err(err) => {
                self.report(&value.span(), format!("{}: {err}", s.key(key)));
                None
            }
        }
    }

    fn area(
        &mut self,
        s: &Section<'_, '_>,
        key: &str,
        polygons: Option<Polygons>,
    ) -> Option<Outline> {
        match load::area(polygons?) {
            Ok(outline) => Some(outline),
            Err(why) => {
                let span = s.get(key).map_or(s.span.clone(), Value::span);
                self.report(&span, format!("{}: {why}", s.key(key)));
                None
            }
        }
    }

    /// `circle = { lat, lon, radius_m }`.
    fn circle(&mut self, s: &Section<'_, '_>) -> Option<Outline> {
        let expected = "a table { lat = ..., lon = ..., radius_m = ... }";
        let (table, span) = self.typed(s, "circle", expected, DeValue::as_table)?;
        let c = self.section("geofence.fence.circle", false, table, span, CIRCLE_KEYS);
        let required: Vec<bool> = CIRCLE_KEYS.iter().map(|k| self.require(&c, k)).collect();
        let lat = self.float(&c, "lat", -90.0..=90.0);
        let lon = self.float(&c, "lon", -180.0..=180.0);
        let radius_m = self.float(&c, "radius_m", 0.0..=MAX_RADIUS_M);
        if required.contains(&false) {
            return None;
        }
        Some(Outline::Circle {
            lat: lat?,
            lon: lon?,
            radius_m: radius_m?,
        })
    }

    /// `multipolygon = [polygon, ...]`.
    fn polygons(&mut self, s: &Section<'_, '_>, key: &str, value: &Value<'_>) -> Option<Polygons> {
        let what = format!("{} must be an array of polygons", s.key(key));
        self.each(value, &what, |r, p| r.polygon(s, key, p))
    }

    /// A polygon: `[[[lon, lat], ...], [hole...], ...]`.
    fn polygon(
        &mut self,
        s: &Section<'_, '_>,
        key: &str,
        value: &Value<'_>,
    ) -> Option<Vec<Vec<[f64; 2]>>> {
        let what = format!(
            "{}: a polygon must be an array of rings (the outline, then any holes)",
            s.key(key)
        );
        self.each(value, &what, |r, ring| {
            let what = format!(
                "{}: a ring must be an array of [lon, lat] positions",
                s.key(key)
            );
            r.each(ring, &what, |r, p| r.position(s, key, p))
        })
    }

    fn position(&mut self, s: &Section<'_, '_>, key: &str, value: &Value<'_>) -> Option<[f64; 2]> {
        let pair = match value.get_ref().as_array().map(AsRef::as_ref) {
            Some([lon, lat]) => number(lon.get_ref()).zip(number(lat.get_ref())),
            _ => None,
        };
        if let Some((lon, lat)) = pair {
            return Some([lon, lat]);
        }
        self.report(
            &value.span(),
            format!(
                "{}: a position must be [lon, lat], two numbers in degrees",
                s.key(key)
            ),
        );
        None
    }

    /// Every element of an array, read by `read`; `what` says what the
    /// value must be when it is no array. Every element is read even after
    /// a bad one; `None` when any was bad.
    fn each<T>(
        &mut self,
        value: &Value<'_>,
        what: &str,
        mut read: impl FnMut(&mut Self, &Value<'_>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let DeValue::Array(items) = value.get_ref() else {
            self.report(
                &value.span(),
                format!("{what}, not {}", a(value.get_ref().type_str())),
            );
            return None;
        };
        let read: Vec<Option<T>> = items.iter().map(|item| read(self, item)).collect();
        read.into_iter().collect()
    }

    /// `properties`: a table, passed through as JSON; the names with a
    /// meaning of their own are refused, since on output they would be read
    /// back as that meaning.
    fn fence_properties(&mut self, s: &Section<'_, '_>) -> Option<Map<String, Json>> {
        let (table, _) = self.typed(s, "properties", "a table", DeValue::as_table)?;
        let mut map = Map::new();
        for (k, v) in table.iter() {
            let name: &str = k.get_ref();
            let key = format!("`{}.properties.{name}`", s.name);
            if RESERVED_PROPERTIES.contains(&name) {
                self.report(
                    &k.span(),
                    format!(
                        "{key} is reserved ({} have a meaning of their own); use the fence's own keys",
                        RESERVED_PROPERTIES.join(", ")
                    ),
                );
            } else if let Some(json) = self.json(&key, v) {
                map.insert(name.to_owned(), json);
            }
        }
        Some(map)
    }

    /// A TOML value as JSON: dates become their RFC 3339 text; a float JSON
    /// cannot hold (nan, inf) is reported.
    fn json(&mut self, key: &str, value: &Value<'_>) -> Option<Json> {
        Some(match value.get_ref() {
            DeValue::String(text) => Json::String(text.to_string()),
            DeValue::Boolean(b) => Json::Bool(*b),
            DeValue::Datetime(d) => Json::String(d.to_string()),
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Json::Number(n.into()),
                Err(_) => return self.unrepresentable(key, value),
            },
            DeValue::Float(_) => match number(value.get_ref()).and_then(Number::from_f64) {
                Some(n) => Json::Number(n),
                None => return self.unrepresentable(key, value),
            },
            DeValue::Array(items) => {
                let items: Vec<Option<Json>> = items.iter().map(|v| self.json(key, v)).collect();
                Json::Array(items.into_iter().collect::<Option<_>>()?)
            }
            DeValue::Table(table) => Json::Object(self.json_object(key, table)?),
        })
    }

    fn json_object(&mut self, key: &str, table: &DeTable<'_>) -> Option<Map<String, Json>> {
        let mut map = Map::new();
        let mut ok = true;
        for (k, v) in table.iter() {
            match self.json(&format!("{key}.{}", k.get_ref()), v) {
                Some(json) => {
                    map.insert(k.get_ref().to_string(), json);
                }
                None => ok = false,
            }
        }
        ok.then_some(map)
    }

    fn unrepresentable(&mut self, key: &str, value: &Value<'_>) -> Option<Json> {
        self.report(
            &value.span(),
            format!("{key} holds a number JSON cannot represent"),
        );
        None
    }

    /// Fence ids must be unique: events and zones name fences by id.
    fn check_unique_fences(&mut self, ids: Vec<(FenceId, Span)>) {
        for (i, (id, span)) in ids.iter().enumerate() {
            if let Some((line, col)) = self.first_use(&ids, i) {
                self.report(
                    span,
                    format!("duplicate fence id `{id}`; first used at line {line}, column {col}"),
                );
            }
        }
    }
}
