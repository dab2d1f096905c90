//! Metric labels made from names that come from outside (device ids in
//! topics and payloads): one process-wide budget of the series that carry
//! such a name, so that a flood of invented names cannot grow the metrics
//! registry (and `/metrics`) without bound.
//!
//! The budget counts series, not names: a name is cheap for an attacker,
//! and every reason and source it is counted under is another series. Once
//! [`DeviceSeries`] has handed out its budget, further series of new names
//! go to the placeholder [`OTHER`], one per metric, source and reason, so
//! every refusal and drop is still counted. A series that already has its
//! own label keeps it. Per-device counts are what finds the one tracker that
//! is misconfigured, so they are kept while the budget lasts; the budget is
//! what keeps a hostile LAN from making the scrape megabytes long.
//!
//! The placeholders hold parentheses, which no [`crate::fix::DeviceId`] may:
//! no device can be counted as, or hidden behind, a placeholder.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use crate::fix::DeviceId;

/// The device label of series past the budget.
pub const OTHER: &str = "(other)";

/// The device label of input that names no valid device (a payload that
/// does not parse, a topic that gives no id).
pub const NONE: &str = "(none)";

/// Most series with a device name from outside, in all, whatever
/// `devices.max_devices` says: about 100 KB of `/metrics`.
pub const MAX_DEVICE_SERIES: usize = 1000;

/// Series a tracked device may have before the budget runs out: a tracker
/// that misbehaves usually shows under a few reasons at once (duplicates,
/// speed jumps, poor accuracy).
pub const SERIES_PER_DEVICE: usize = 4;

/// The `device` label of a metric series: a name that passed the budget
/// ([`DeviceSeries::label`]), a configured device's name, or a placeholder.
/// Nothing else makes one, so a name from outside cannot reach a label
/// without going through the budget.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceLabel(Box<str>);

impl DeviceLabel {
    /// The label of a device named in the operator's configuration (a
    /// serial port, a replayed log, the demo fleet): as many as it names.
    pub fn configured(device: &DeviceId) -> Self {
        Self(device.as_str().into())
    }

    /// [`OTHER`]: a series past the budget.
    pub fn other() -> Self {
        Self(OTHER.into())
    }

    /// [`NONE`]: input that names no valid device.
    pub fn none() -> Self {
        Self(NONE.into())
    }

    /// The label's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The label's text, owned (for the metrics registry).
    pub(crate) fn into_string(self) -> String {
        self.0.into()
    }
}

impl PartialEq<&str> for DeviceLabel {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Display for DeviceLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One series of a device-labelled metric.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Series {
    metric: &'static str,
    source: &'static str,
    reason: &'static str,
    device: Box<str>,
}

/// A budget of metric series labelled with device names from outside.
#[derive(Debug)]
pub struct DeviceSeries {
    named: Mutex<HashSet<Series>>,
    max: usize,
}

impl DeviceSeries {
    /// At most `max` series get their device's name.
    pub fn new(max: usize) -> Self {
        Self {
            named: Mutex::new(HashSet::new()),
            max,
        }
    }

    /// The budget for a gateway tracking `max_devices`:
    /// [`SERIES_PER_DEVICE`] each, at most [`MAX_DEVICE_SERIES`].
    pub fn for_devices(max_devices: usize) -> Self {
        Self::new(
            max_devices
                .saturating_mul(SERIES_PER_DEVICE)
                .min(MAX_DEVICE_SERIES),
        )
    }

    /// The process's budget, shared by every metric that labels by device
    /// (the metrics registry it protects is process-wide too). The first
    /// call sizes it ([`Self::for_devices`]); the daemon makes every call
    /// with the same `max_devices`.
    pub fn shared(max_devices: usize) -> Arc<Self> {
        static SHARED: OnceLock<Arc<DeviceSeries>> = OnceLock::new();
        SHARED
            .get_or_init(|| Arc::new(Self::for_devices(max_devices)))
            .clone()
    }

    /// The device label of one series of `metric`: `device` itself while
    /// the budget lasts (or if this series has it already), else [`OTHER`].
    pub fn label(
        &self,
        metric: &'static str,
        source: &'static str,
        reason: &'static str,
        device: &str,
    ) -> DeviceLabel {
        let Ok(mut named) = self.named.lock() else {
            return DeviceLabel::other();
        };
        let series = Series {
            metric,
            source,
            reason,
            device: device.into(),
        };
        if named.contains(&series) {
            return DeviceLabel(series.device);
        }
        if named.len() < self.max {
            let label = DeviceLabel(series.device.clone());
            named.insert(series);
            return label;
        }
        DeviceLabel::other()
    }

    /// Series handed out so far.
    pub fn len(&self) -> usize {
        self.named.lock().map_or(0, |named| named.len())
    }

    /// Whether no series has been handed out.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_counts_series_not_names_and_known_series_keep_their_label() {
        let series = DeviceSeries::new(3);
        let label = |device, reason| series.label("m", "http", reason, device);
        assert_eq!(label("a", "malformed"), "a");
        assert_eq!(label("a", "no_token"), "a");
        assert_eq!(label("b", "malformed"), "b");
        // The same name under a fourth reason is a fourth series: over.
        assert_eq!(label("b", "no_token"), OTHER);
        assert_eq!(label("c", "malformed"), OTHER);
        assert_eq!(label("a", "no_token"), "a");
        assert_eq!(series.len(), 3);
        // Another metric or source is another series.
        assert_eq!(series.label("n", "http", "malformed", "a"), OTHER);
        assert_eq!(series.label("m", "mqtt", "malformed", "a"), OTHER);
    }

    #[test]
    fn a_flood_of_names_stays_within_the_budget() {
        let series = DeviceSeries::for_devices(100);
        let mut labels = HashSet::new();
        for i in 0..5000 {
            for reason in ["malformed", "no_token", "invalid_value"] {
                labels.insert((reason, series.label("m", "mqtt", reason, &format!("d{i}"))));
            }
        }
        assert_eq!(series.len(), 400);
        assert_eq!(labels.len(), 400 + 3, "400 named, one (other) per reason");
        assert_eq!(DeviceSeries::for_devices(10_000).max, MAX_DEVICE_SERIES);
    }

    #[test]
    fn no_device_can_be_called_like_a_placeholder() {
        assert!(DeviceId::new(OTHER).is_err());
        assert!(DeviceId::new(NONE).is_err());
    }
}
