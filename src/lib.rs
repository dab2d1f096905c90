//! fixgate: a GPS gateway daemon.
//!
//! One straight pipeline, and the tree shows it: [`sources`] decode bytes
//! into [`fix`] values and send them down one bounded channel; the single
//! writer in [`pipeline`] runs its checks (filters, presence, geofences) and
//! appends to the [`store`], the only durable point; [`readers`] (the SSE
//! feed and snapshot, the uplink) catch up from the store by sequence
//! number. [`daemon`] wires them and holds the operations around them
//! (systemd, health, status, reload, logging). Low down, used by all:
//! [`fix`], [`groups`], [`access`], [`config`] and [`util`]. The wire codec
//! and the fix values live in the `fixgate-wire` crate, re-exported here.

// Short functions in the daemon itself (clippy.toml sets the limit); tests
// may run long, one scenario each.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod access;
pub mod config;
pub mod daemon;
pub mod fix;
pub mod groups;
pub mod pipeline;
pub mod readers;
pub mod sim;
pub mod sources;
pub mod store;
pub mod telemetry;
#[cfg(test)]
mod testing;
pub mod util;

pub use fixgate_support::{signal, tls};
pub use fixgate_wire as wire;
