//! What a screen asks to see: `?device=a,b`, `?group=NAME`,
//! `?types=position,status,geofence`, `?bbox=minLon,minLat,maxLon,maxLat`
//! and, on `/events`, `?max_rate=2s` (see [`super::coalesce`]). Parsed once
//! per request into a [`Filter`], a plain value the feed checks each event
//! against.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::fix::{DeviceId, GroupId};

/// The filter parameters as they come in the query string.
#[derive(Debug, Default, Deserialize)]
pub struct FilterQuery {
    /// Comma-separated device ids.
    pub device: Option<String>,
    /// A group name.
    pub group: Option<String>,
    /// Comma-separated event types.
    pub types: Option<String>,
    /// `minLon,minLat,maxLon,maxLat` in degrees.
    pub bbox: Option<String>,
    /// At most one position per device per this (e.g. `2s`).
    pub max_rate: Option<String>,
}

/// Which kinds of event pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Types {
    /// `position`.
    pub position: bool,
    /// `status`.
    pub status: bool,
    /// `geofence`.
    pub geofence: bool,
}

impl Types {
    const ALL: Self = Self {
        position: true,
        status: true,
        geofence: true,
    };
}

/// A box in degrees; one whose west edge is east of its east edge crosses
/// the antimeridian.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bbox {
    /// West edge.
    pub min_lon: f64,
    /// South edge.
    pub min_lat: f64,
    /// East edge.
    pub max_lon: f64,
    /// North edge.
    pub max_lat: f64,
}

impl Bbox {
    /// Whether the point is inside (edges included).
    pub fn contains(&self, lon: f64, lat: f64) -> bool {
        let lon_in = if self.min_lon <= self.max_lon {
            (self.min_lon..=self.max_lon).contains(&lon)
        } else {
            lon >= self.min_lon || lon <= self.max_lon
        };
        lon_in && (self.min_lat..=self.max_lat).contains(&lat)
    }
}

/// What passes.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// Only these devices, when set.
    pub devices: Option<HashSet<DeviceId>>,
    /// Only devices of this group, when set.
    pub group: Option<GroupId>,
    /// Which kinds.
    pub types: Types,
    /// Only events placed inside (positions and geofence events; status
    /// changes carry no place and always pass).
    pub bbox: Option<Bbox>,
    /// Coalescing interval of positions, per device.
    pub max_rate: Option<Duration>,
    /// The groups the client's token may read, when it may read only some
    /// (see [`crate::access::Grant::may_read_group`]): a device in another
    /// group or in none is never shown, whatever else the filter says.
    pub read_groups: Option<Arc<[String]>>,
}

impl Default for Filter {
    fn default() -> Self {
        Self {
            devices: None,
            group: None,
            types: Types::ALL,
            bbox: None,
            max_rate: None,
            read_groups: None,
        }
    }
}

/// The most device ids one filter may list.
pub const MAX_DEVICES: usize = 1000;

/// Parses the parameters; `Err` names the parameter and what is wrong.
pub fn parse(query: &FilterQuery) -> Result<Filter, String> {
    let mut filter = Filter::default();
    if let Some(list) = &query.device {
        let mut devices = HashSet::new();
        for part in list.split(',').map(str::trim) {
            let id = DeviceId::new(part).map_err(|e| {
                format!(
                    "`device`: {:?} is not a device id: {e}",
                    crate::util::log_limit::outside(part, crate::util::log_limit::OUTSIDE_CHARS)
                )
            })?;
            devices.insert(id);
        }
        if devices.len() > MAX_DEVICES {
            return Err(format!("`device` lists more than {MAX_DEVICES} devices"));
        }
        filter.devices = Some(devices);
    }
    if let Some(group) = &query.group {
        filter.group = Some(GroupId::new(group.trim()).map_err(|e| {
            format!(
                "`group`: {:?} is not a group name: {e}",
                crate::util::log_limit::outside(group, crate::util::log_limit::OUTSIDE_CHARS)
            )
        })?);
    }
    if let Some(list) = &query.types {
        let mut types = Types {
            position: false,
            status: false,
            geofence: false,
        };
        for part in list.split(',').map(str::trim) {
            match part {
                "position" => types.position = true,
                "status" => types.status = true,
                "geofence" => types.geofence = true,
                other => {
                    return Err(format!(
                        "`types`: {:?} is not one of position, status, geofence",
                        crate::util::log_limit::outside(
                            other,
                            crate::util::log_limit::OUTSIDE_CHARS
                        )
                    ));
                }
            }
        }
        filter.types = types;
    }
    if let Some(text) = &query.bbox {
        filter.bbox = Some(bbox(text)?);
    }
    if let Some(text) = &query.max_rate {
        let d = humantime::parse_duration(text.trim())
            .map_err(|_| "`max_rate`: must be a duration like 2s or 500ms".to_owned())?;
        if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
            return Err("`max_rate`: must be between 100ms and 1h".into());
        }
        filter.max_rate = Some(d);
    }
    Ok(filter)
}

fn bbox(text: &str) -> Result<Bbox, String> {
    let numbers: Vec<f64> = text
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| "`bbox`: must be four numbers minLon,minLat,maxLon,maxLat".to_owned())?;
    let [min_lon, min_lat, max_lon, max_lat] = numbers[..] else {
        return Err("`bbox`: must be four numbers minLon,minLat,maxLon,maxLat".into());
    };
    let lon_ok = |x: f64| (-180.0..=180.0).contains(&x);
    let lat_ok = |y: f64| (-90.0..=90.0).contains(&y);
    if !(lon_ok(min_lon) && lon_ok(max_lon) && lat_ok(min_lat) && lat_ok(max_lat)) {
        return Err("`bbox`: longitudes must be within ±180 and latitudes within ±90".into());
    }
    if min_lat > max_lat {
        return Err("`bbox`: minLat is north of maxLat".into());
    }
    Ok(Bbox {
        min_lon,
        min_lat,
        max_lon,
        max_lat,
    })
}

/// What the feed knows of an event, to filter it.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The event's kind.
    pub kind: Kind,
    /// Its device.
    pub device: &'a DeviceId,
    /// Its device's group.
    pub group: Option<&'a GroupId>,
    /// Where it happened, if it has a place: `(lon, lat)`.
    pub point: Option<(f64, f64)>,
}

/// The kinds of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A fix.
    Position,
    /// Online or offline.
    Status,
    /// A fence crossing.
    Geofence,
}

impl Filter {
    /// Whether an event passes.
    pub fn passes(&self, facts: Facts<'_>) -> bool {
        let typed = match facts.kind {
            Kind::Position => self.types.position,
            Kind::Status => self.types.status,
            Kind::Geofence => self.types.geofence,
        };
        typed
            && self
                .devices
                .as_ref()
                .is_none_or(|d| d.contains(facts.device))
            && self.group.as_ref().is_none_or(|g| facts.group == Some(g))
            && match (self.bbox, facts.point) {
                (Some(bbox), Some((lon, lat))) => bbox.contains(lon, lat),
                _ => true,
            }
            && self.read_groups.as_ref().is_none_or(|allowed| {
                facts
                    .group
                    .is_some_and(|g| allowed.iter().any(|a| a == g.as_str()))
            })
    }

    /// Whether this filter lets everything through (the common case, which
    /// the feed serves without looking at each event).
    pub fn is_open(&self) -> bool {
        *self == Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> FilterQuery {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        FilterQuery {
            device: get("device"),
            group: get("group"),
            types: get("types"),
            bbox: get("bbox"),
            max_rate: get("max_rate"),
        }
    }

    #[test]
    fn parameters_parse_and_bad_ones_are_named() {
        let f = parse(&q(&[
            ("device", "bus-1, bus-2"),
            ("types", "position,geofence"),
            ("bbox", "5,52,6,53"),
            ("max_rate", "2s"),
        ]))
        .unwrap();
        assert_eq!(f.devices.as_ref().map(HashSet::len), Some(2));
        assert!(f.types.position && !f.types.status && f.types.geofence);
        assert_eq!(f.max_rate, Some(Duration::from_secs(2)));
        assert!(parse(&q(&[])).unwrap().is_open());
        for (pairs, says) in [
            (vec![("device", "")], "`device`"),
            (vec![("device", "a b")], "`device`"),
            (vec![("types", "positions")], "`types`"),
            (vec![("types", "")], "`types`"),
            (vec![("bbox", "1,2,3")], "`bbox`"),
            (vec![("bbox", "1,2,x,4")], "`bbox`"),
            (vec![("bbox", "0,60,1,50")], "north"),
            (vec![("bbox", "0,95,1,96")], "±90"),
            (vec![("max_rate", "fast")], "`max_rate`"),
            (vec![("max_rate", "1ms")], "100ms"),
            (vec![("group", "a/b")], "`group`"),
        ] {
            let err = parse(&q(&pairs)).unwrap_err();
            assert!(err.contains(says), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn events_pass_by_kind_device_group_and_place() {
        let bus = DeviceId::new("bus-1").unwrap();
        let north = GroupId::new("north").unwrap();
        let facts = |kind, point| Facts {
            kind,
            device: &bus,
            group: Some(&north),
            point,
        };
        let f = parse(&q(&[("bbox", "5,52,6,53"), ("group", "north")])).unwrap();
        assert!(f.passes(facts(Kind::Position, Some((5.5, 52.5)))));
        assert!(!f.passes(facts(Kind::Position, Some((7.0, 52.5)))));
        // A status change has no place.
        assert!(f.passes(facts(Kind::Status, None)));
        let other = parse(&q(&[("group", "south")])).unwrap();
        assert!(!other.passes(facts(Kind::Position, None)));
        let only = parse(&q(&[("types", "geofence")])).unwrap();
        assert!(!only.passes(facts(Kind::Position, None)));
        // Across the antimeridian.
        let pacific = parse(&q(&[("bbox", "170,-20,-170,20")])).unwrap();
        assert!(pacific.passes(facts(Kind::Position, Some((179.0, 0.0)))));
        assert!(pacific.passes(facts(Kind::Position, Some((-175.0, 0.0)))));
        assert!(!pacific.passes(facts(Kind::Position, Some((0.0, 0.0)))));
    }
}
