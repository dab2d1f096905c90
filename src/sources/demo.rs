//! The demo fleet: simulated vehicles whose receivers "send" NMEA text that
//! goes through the real decoder, so a fresh clone shows moving vehicles with
//! no hardware.

use std::time::Duration;

use chrono::{DurationRound, TimeDelta, Utc};
use tracing::Instrument;

use super::Context;
use super::clock::ClockTrust;
use super::stream::NmeaStream;
use crate::config::Demo;
use crate::fix::SourceKind;
use crate::sim::{self, Fleet};

/// Drives the fleet until `shutdown` or until the pipeline closes.
pub async fn run(spec: Demo, context: Context) {
    let Context { tx, shutdown, .. } = context;
    let span = tracing::info_span!("demo", vehicles = spec.vehicles);
    async move {
        // The simulated receivers stamp their own dates (RMC), like real ones.
        let mut streams: Vec<NmeaStream> = spec
            .device_ids()
            .into_iter()
            .map(|id| NmeaStream::new(id, SourceKind::Demo, ClockTrust::Never))
            .collect();
        let [lat, lon] = spec.center;
        let mut fleet = Fleet::new(streams.len(), (lat, lon), 1);
        let period = Duration::from_secs_f64(1.0 / spec.rate_hz.max(0.01));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut text = String::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            // NMEA carries centiseconds.
            let now = Utc::now();
            let now = now
                .duration_trunc(TimeDelta::milliseconds(10))
                .unwrap_or(now);
            for (fix, stream) in fleet
                .step(period.as_secs_f64(), now)
                .iter()
                .zip(&mut streams)
            {
                text.clear();
                sim::nmea::write_epoch(fix, &mut text);
                stream.push(text.as_bytes());
                if stream.send(&tx).await.is_err() {
                    return;
                }
            }
        }
    }
    .instrument(span)
    .await;
}
