//! fixgate: a GPS gateway daemon.
//!
//! One straight pipeline: sources decode bytes into [`fix::Fix`] values and send
//! them down one bounded channel; a single writer validates and appends them to
//! the [`store`], the only durable point; readers (the SSE [`feed`], later the
//! uplink) catch up from the store by sequence number.

pub mod access;
pub mod backoff;
pub mod config;
pub mod daemon;
pub mod fd_limit;
pub mod feed;
pub mod fence_watch;
pub mod filter;
pub mod fix;
pub mod geofence;
pub mod groups;
pub mod health;
pub mod ingest;
pub mod labels;
pub mod log_limit;
pub mod logging;
pub mod mqtt_client;
pub mod pattern;
pub mod pipeline;
pub mod presence;
pub mod reload;
pub mod secret;
pub mod sim;
pub mod status;
pub mod store;
pub mod systemd;
pub mod uplink;

pub use fixgate_support::{signal, tls};
pub use fixgate_wire as wire;
