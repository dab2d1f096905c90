//! Geofences on the gateway: fences, their spatial index, and the
//! per-device state machine that turns fixes into `enter`, `exit`, `dwell`
//! and `speeding` events.
//!
//! A pure core: plain values and functions, no I/O and no runtime.

pub mod fence;
pub mod index;
pub mod shape;

pub use fence::Fence;
pub use index::{DuplicateFence, FenceSet};
pub use shape::{Envelope, Outline, Shape, ShapeError};
