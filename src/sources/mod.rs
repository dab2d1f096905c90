//! Sources: everything that turns outside bytes into fixes for the pipeline.
//! A source never talks to the store, the feed or the uplink: it sends
//! [`crate::fix::Observed`] values down the one bounded channel.

pub mod chrony;
pub mod clock;
pub mod demo;
pub mod http;
pub mod intake;
pub mod mqtt;
pub mod nmea;
pub mod payload;
pub mod receivers;
pub mod replay;
pub mod serial;
pub mod stream;
pub mod timing;
pub mod topic;

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::fix::Observed;
use crate::groups::Groups;
use clock::ClockTrust;
use intake::Rejects;

/// What every source is given, instead of a long list of arguments: the way
/// into the pipeline, how to stop, and what the sources share.
#[derive(Debug, Clone)]
pub struct Context {
    /// The one bounded channel to the writer.
    pub tx: mpsc::Sender<Observed>,
    /// Cancelled at shutdown: a source then stops taking input and ends.
    pub shutdown: CancellationToken,
    /// When the system clock may date fixes from receivers that send none.
    pub clock: ClockTrust,
    /// Most devices tracked at once (bounds per-device state in sources).
    pub max_devices: usize,
    /// Counts and logs refused input.
    pub rejects: Arc<Rejects>,
    /// Learns devices' groups from where they report.
    pub groups: Arc<Groups>,
}
