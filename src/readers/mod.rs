//! The readers of the store: they hold nothing of their own and catch up by
//! sequence number. [`feed`] serves the LAN (SSE, snapshots, history, the
//! depot screen, metrics); [`uplink`] sends everything upstream; [`gpsd`]
//! speaks gpsd's JSON protocol to existing GPS tools.

pub mod feed;
pub mod gpsd;
pub mod uplink;
