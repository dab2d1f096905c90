//! Geofences on the gateway: fences, their spatial index, and the
//! per-device state machine that turns fixes into `enter`, `exit`, `dwell`
//! and `speeding` events.
//!
//! A pure core: plain values and functions, no runtime; the only I/O is
//! [`load::load_all`] reading the fence files the configuration names.

pub mod fence;
pub mod geojson_out;
pub mod index;
pub mod load;
pub mod machine;
pub mod probe;
pub mod shape;
#[cfg(test)]
mod tests;
pub mod tracker;

pub use fence::Fence;
pub use index::{DuplicateFence, FenceSet};
pub use load::{LoadError, load_all, parse_geojson};
pub use machine::{Machine, Zones, ZonesError};
pub use probe::{Probe, Spot};
pub use shape::{Envelope, Outline, Shape, ShapeError};
pub use tracker::{Rules, Tracker};

/// How the state machine judges fixes: the hysteresis that keeps a receiver
/// parked on a boundary from flapping in and out.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Consecutive fixes inside that make an enter even when their error
    /// circles are not wholly inside.
    pub enter_fixes: u32,
    /// How far beyond the boundary, in metres, a fix's error circle must be
    /// for an exit: more than a parked receiver's jitter.
    pub exit_margin_m: f64,
    /// A fix's error radius is its reported accuracy, or else its HDOP times
    /// this many metres (the receiver's range error)...
    pub hdop_error_m: f64,
    /// ... or else this many metres.
    pub default_error_m: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            enter_fixes: 3,
            exit_margin_m: 10.0,
            hdop_error_m: 5.0,
            default_error_m: 10.0,
        }
    }
}
