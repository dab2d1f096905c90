//! Sources: everything that turns outside bytes into fixes for the pipeline.
//! A source never talks to the store, the feed or the uplink: it sends
//! [`crate::fix::Observed`] values down the one bounded channel.

pub mod clock;
pub mod demo;
pub mod http;
pub mod intake;
pub mod mqtt;
pub mod nmea;
pub mod payload;
pub mod replay;
pub mod serial;
pub mod stream;
pub mod topic;
