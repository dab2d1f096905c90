//! What each configured serial receiver is doing now, for readers outside
//! the source (a gpsd-protocol `?DEVICES` answer): its port, the line speed
//! it is read at and since when. The serial task writes it; others only read.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};

use crate::fix::DeviceId;

/// One `[[serial]]` receiver's live state.
#[derive(Debug)]
pub struct ReceiverStatus {
    device: DeviceId,
    path: PathBuf,
    /// Bits per second; 0 while the port is closed or its speed is hunted for.
    bps: AtomicU32,
    /// When the port last started delivering at `bps`.
    activated: Mutex<Option<DateTime<Utc>>>,
}

impl ReceiverStatus {
    /// A receiver on `path`, closed.
    pub fn new(device: DeviceId, path: impl Into<PathBuf>) -> Self {
        Self {
            device,
            path: path.into(),
            bps: AtomicU32::new(0),
            activated: Mutex::new(None),
        }
    }

    /// The device its fixes are attributed to.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }

    /// The port as configured.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The line speed the port is read at, or `None` while it is closed or
    /// its speed is not known yet.
    pub fn bps(&self) -> Option<u32> {
        Some(self.bps.load(Ordering::Relaxed)).filter(|&b| b != 0)
    }

    /// When the port last started delivering at its current speed; `None`
    /// while it is closed or hunted for.
    pub fn activated(&self) -> Option<DateTime<Utc>> {
        *self
            .activated
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The port is read at `bps` from `at` on.
    pub fn set_active(&self, bps: u32, at: DateTime<Utc>) {
        *self
            .activated
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(at);
        self.bps.store(bps, Ordering::Relaxed);
    }

    /// The port is closed, or its speed is being hunted for.
    pub fn set_inactive(&self) {
        self.bps.store(0, Ordering::Relaxed);
        *self
            .activated
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Every configured serial receiver's status, in configuration order.
pub type Receivers = Arc<[Arc<ReceiverStatus>]>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receiver_is_closed_until_active_and_after() {
        let status = ReceiverStatus::new(DeviceId::new("gps-1").unwrap(), "/dev/ttyACM0");
        assert_eq!((status.bps(), status.activated()), (None, None));
        let at = Utc::now();
        status.set_active(38400, at);
        assert_eq!((status.bps(), status.activated()), (Some(38400), Some(at)));
        status.set_inactive();
        assert_eq!((status.bps(), status.activated()), (None, None));
        assert_eq!(status.path(), Path::new("/dev/ttyACM0"));
        assert_eq!(status.device().as_str(), "gps-1");
    }
}
