//! One fence: an id, a shape, and what the state machine watches for in it.

use std::time::Duration;

use crate::fix::FenceId;

use super::shape::Shape;

/// A geofence as loaded from the configuration or a GeoJSON file.
#[derive(Debug, Clone)]
pub struct Fence {
    /// Unique among all fences; events and zones name it.
    pub id: FenceId,
    /// A name for people (the depot page), if given.
    pub name: Option<String>,
    /// Where it is.
    pub shape: Shape,
    /// Above this speed (m/s) inside, a `speeding` event.
    pub speed_limit: Option<f64>,
    /// After this long inside, a `dwell` event (once per visit).
    pub dwell: Option<Duration>,
    /// Free properties, passed through to `/api/geofences` untouched.
    pub properties: serde_json::Map<String, serde_json::Value>,
}

impl PartialEq for Fence {
    /// Fences are equal when everything given for them is.
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.name == other.name
            && self.shape.outline() == other.shape.outline()
            && self.speed_limit == other.speed_limit
            && self.dwell == other.dwell
            && self.properties == other.properties
    }
}
