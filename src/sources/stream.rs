//! One NMEA byte stream attached to a device: the decoder, its counters in
//! metrics, and the way into the pipeline. Serial ports, replayed files and
//! the demo fleet all go through it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::chrony::ChronySock;
use super::clock::{ClockTrust, TrustedClock};
use super::nmea::{DecodeStats, Decoder, DecoderOptions};
use crate::fix::{DeviceClass, DeviceId, Fix, Observed, Position, SourceKind};
use crate::telemetry::{self, Value};
use crate::util::labels::{DeviceLabel, DeviceSeries};
use crate::util::log_limit::{Flood, FloodLimit, LINES_PER_REASON, LogLimit, Verdict};

/// A receiver that sends garbage all day gets one log line per reason per this.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// What the streams of devices named from outside (NMEA over MQTT) share,
/// since anyone may invent such a name: the process's budget of
/// device-labelled series, and a log limit per reason across all of them.
/// A configured receiver's stream has neither: its name is the
/// configuration's, and its lines are its own.
#[derive(Debug)]
pub struct OutsideNames {
    series: Arc<DeviceSeries>,
    log: Mutex<FloodLimit<DeviceId, &'static str>>,
}

impl OutsideNames {
    /// Labels from `series`; log lines remembered for up to `max_devices` names.
    pub fn new(series: Arc<DeviceSeries>, max_devices: usize) -> Self {
        Self {
            series,
            log: Mutex::new(FloodLimit::new(
                LOG_EVERY,
                LINES_PER_REASON,
                max_devices.clamp(16, 65_536),
            )),
        }
    }
}

/// The pipeline has shut down: the source should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the pipeline is gone")]
pub struct PipelineClosed;

/// Decoder plus bookkeeping for one device's NMEA stream.
#[derive(Debug)]
pub struct NmeaStream {
    device: DeviceId,
    source: SourceKind,
    decoder: Decoder,
    clock: TrustedClock,
    /// The decoder's counters as last exported to metrics.
    exported: DecodeStats,
    log: LogLimit<&'static str>,
    /// Set for a device named from outside.
    outside: Option<Arc<OutsideNames>>,
    fixes: Vec<Fix>,
    /// Where the receiver's time goes, when it is a clock's reference.
    chrony: Option<ChronySock>,
}

impl NmeaStream {
    /// A fresh stream for `device`.
    pub fn new(device: DeviceId, source: SourceKind, trust: ClockTrust) -> Self {
        Self {
            device,
            source,
            decoder: Decoder::new(DecoderOptions::default()),
            clock: TrustedClock::new(trust),
            exported: DecodeStats::default(),
            log: LogLimit::new(LOG_EVERY, 16),
            outside: None,
            fixes: Vec::new(),
            chrony: None,
        }
    }

    /// A stream whose receiver's time also goes to chrony (a live receiver
    /// only: bytes must be pushed as soon as they are read).
    pub fn with_chrony(mut self, chrony: Option<ChronySock>) -> Self {
        self.chrony = chrony;
        self
    }

    /// The stream of a device named from outside: its metric labels come
    /// from the shared budget and its log lines count against the shared
    /// limit of their reason.
    pub fn named_from_outside(mut self, names: Arc<OutsideNames>) -> Self {
        self.outside = Some(names);
        self
    }

    /// The device this stream belongs to.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }

    /// Starts over (a file replay loops): the old epoch and learned cycle are dropped.
    pub fn restart(&mut self) {
        self.export();
        self.decoder = Decoder::new(DecoderOptions::default());
        self.exported = DecodeStats::default();
        self.fixes.clear();
    }

    /// Decodes bytes; completed fixes wait in the stream until [`Self::take`] or [`Self::send`].
    pub fn push(&mut self, bytes: &[u8]) {
        self.decoder.set_trusted_clock(self.clock.now());
        if let Some(chrony) = &mut self.chrony {
            // The bytes were read just now: their arrival, for chrony.
            self.decoder.set_arrival(Some(SystemTime::now()));
            self.decoder.push(bytes, &mut self.fixes);
            if let Some(mark) = self.decoder.take_time_mark() {
                chrony.offer(mark);
            }
        } else {
            self.decoder.push(bytes, &mut self.fixes);
        }
        self.export();
    }

    /// End of input (EOF, unplug): completes the pending epoch if it holds a fix.
    pub fn finish(&mut self) {
        self.decoder.finish(&mut self.fixes);
        self.export();
    }

    /// Valid sentences decoded so far (a silent-port watchdog watches it move).
    pub fn sentences(&self) -> u64 {
        self.decoder.stats().sentences()
    }

    /// Takes the fixes decoded so far.
    pub fn take(&mut self) -> Vec<Fix> {
        std::mem::take(&mut self.fixes)
    }

    /// Sends the fixes decoded so far to the pipeline, waiting while it is full.
    pub async fn send(&mut self, tx: &mpsc::Sender<Observed>) -> Result<(), PipelineClosed> {
        for fix in self.fixes.drain(..) {
            send(
                tx,
                self.source,
                DeviceClass::NmeaReceiver,
                &self.device,
                fix,
            )
            .await?;
        }
        Ok(())
    }

    /// Moves what the decoder counted since the last call into metrics, and
    /// logs each kind of bad input with its reason, at most once a minute.
    fn export(&mut self) {
        let now = *self.decoder.stats();
        let before = std::mem::replace(&mut self.exported, now);
        // Skipped sentences are normal receiver output: counted, not logged.
        for ((reason, count), (_, seen)) in now.skipped.iter().zip(before.skipped.iter()) {
            self.count(telemetry::NMEA_SKIPPED, reason, count - seen);
        }
        for ((reason, count), (_, seen)) in now.rejections().zip(before.rejections()) {
            if count > seen {
                self.count(telemetry::NMEA_REJECTED, reason, count - seen);
                self.warn(
                    reason,
                    format_args!("NMEA input rejected: {reason} ({count} so far)"),
                );
            }
        }
        let undated = now.epochs_undated - before.epochs_undated;
        if undated > 0 {
            self.count(telemetry::NMEA_UNDATED, "undated", undated);
            self.warn(
                "undated",
                format_args!(
                    "fix held back: the receiver sends no date (RMC/ZDA) and gateway.clock does not trust the system clock now"
                ),
            );
        }
    }

    fn count(&self, metric: telemetry::Counter<3>, reason: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        let source = self.source.as_str();
        let device = match &self.outside {
            Some(names) => names
                .series
                .label(metric.name(), source, reason, self.device.as_str()),
            None => DeviceLabel::configured(&self.device),
        };
        metric
            .with::<Value>([source.into(), device.into(), reason.into()])
            .increment(n);
    }

    fn warn(&mut self, reason: &'static str, message: std::fmt::Arguments<'_>) {
        let now = Instant::now();
        let Some(names) = &self.outside else {
            if let Verdict::Log { suppressed } = self.log.check(&reason, now) {
                tracing::warn!(device = %self.device, suppressed, "{message}");
            }
            return;
        };
        let verdict = match names.log.lock() {
            Ok(mut log) => log.check(&self.device, reason, now),
            Err(_) => return,
        };
        if let Flood::Log {
            suppressed,
            held,
            last,
        } = verdict
        {
            let more = if last {
                " (further lines for this reason are held back for a minute)"
            } else {
                ""
            };
            tracing::warn!(device = %self.device, suppressed, held, "{message}{more}");
        }
    }
}

/// Sends one fix of `device` to the pipeline.
pub async fn send(
    tx: &mpsc::Sender<Observed>,
    source: SourceKind,
    class: DeviceClass,
    device: &DeviceId,
    fix: Fix,
) -> Result<(), PipelineClosed> {
    let observed = Observed {
        source,
        class,
        position: Position {
            device: device.clone(),
            fix,
            historic: false,
        },
    };
    tx.send(observed).await.map_err(|_| PipelineClosed)
}
