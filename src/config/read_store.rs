//! `[store]`: where the store lives and the disk budget that bounds it.

use std::time::Duration;

use super::{Reader, Section};
use crate::config::Store;
use crate::store::budget::Thin;

pub(super) const STORE_KEYS: &[&str] = &[
    "path",
    "flush_interval",
    "cache_mb",
    "max_size_mb",
    "high_water",
    "min_free_mb",
    "thin",
    "thin_tolerance",
    "thin_interval",
];

impl Reader<'_> {
    pub(super) fn store(&mut self, s: &Section<'_, '_>) -> Store {
        let mut store = Store::default();
        if let Some((path, _)) = self.path(s, "path") {
            store.path = path;
        }
        let flush = Duration::from_millis(10)..=Duration::from_secs(60);
        if let Some((interval, _)) = self.duration(s, "flush_interval", flush) {
            store.flush_interval = interval;
        }
        if let Some(mb) = self.integer(s, "cache_mb", 1..=1024) {
            store.cache_mb = mb;
        }
        // sled alone takes a few MiB; 1 TiB is far beyond a gateway's disk.
        if let Some(mb) = self.integer(s, "max_size_mb", 4..=1024 * 1024) {
            store.max_size_mb = mb;
        }
        if let Some(x) = self.float(s, "high_water", 0.5..=0.95) {
            store.high_water = x;
        }
        if let Some(mb) = self.integer(s, "min_free_mb", 0..=1024 * 1024) {
            store.min_free_mb = mb;
        }
        store.thin = self.thin(s);
        store
    }

    /// `thin` with the one parameter its method uses; a parameter given for
    /// another method is a mistake worth reporting, not ignoring.
    fn thin(&mut self, s: &Section<'_, '_>) -> Thin {
        let method = match s.get("thin") {
            None => Some("douglas-peucker"),
            Some(v) if v.get_ref().as_bool() == Some(false) => None,
            Some(_) => match self.string(s, "thin") {
                Some((m @ ("douglas-peucker" | "distance" | "time"), _)) => Some(m),
                Some((text, span)) => {
                    self.report(
                        &span,
                        format!(
                            "{} must be \"douglas-peucker\", \"distance\", \"time\" or false, not {text:?}",
                            s.key("thin")
                        ),
                    );
                    Some("douglas-peucker")
                }
                None => Some("douglas-peucker"),
            },
        };
        let tolerance = self.float(s, "thin_tolerance", 0.5..=10_000.0);
        let day = Duration::from_secs(24 * 3600);
        let interval = self.duration(s, "thin_interval", Duration::from_secs(1)..=day);
        let uses_tolerance = matches!(method, Some("douglas-peucker" | "distance"));
        if let (Some(value), false) = (s.get("thin_tolerance"), uses_tolerance) {
            self.report(
                &value.span(),
                "`store.thin_tolerance` is only used with thin = \"douglas-peucker\" or \"distance\"",
            );
        }
        if let (Some(value), false) = (s.get("thin_interval"), method == Some("time")) {
            self.report(
                &value.span(),
                "`store.thin_interval` is only used with thin = \"time\"",
            );
        }
        let tolerance_m = tolerance.unwrap_or(Store::DEFAULT_THIN_TOLERANCE_M);
        match method {
            None => Thin::Off,
            Some("distance") => Thin::Distance { min_m: tolerance_m },
            Some("time") => Thin::Time {
                interval: interval.map_or(Store::DEFAULT_THIN_INTERVAL, |(d, _)| d),
            },
            Some(_) => Thin::DouglasPeucker { tolerance_m },
        }
    }
}
