//! What MQTT and HTTP intake share: turning a parsed payload into fixes for
//! the pipeline, and rejecting bad input with a reason, a count and a log
//! line, at most once a minute per device and reason and a few a minute per
//! reason in all.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::clock::ClockTrust;
use super::stream::{NmeaStream, OutsideNames, PipelineClosed, send};
use crate::fix::{DeviceClass, DeviceId, Fix, Observed, SourceKind};
use crate::telemetry::{self, Value};
use crate::util::labels::{self, DeviceLabel, DeviceSeries};
use crate::util::log_limit::{
    DETAIL_CHARS, Flood, FloodLimit, LINES_PER_REASON, OUTSIDE_CHARS, outside,
};

/// A device that sends garbage all day gets one log line per reason per this.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Counts and logs rejected input; shared by every intake task.
#[derive(Debug)]
pub struct Rejects {
    log: Mutex<FloodLimit<String, (&'static str, &'static str)>>,
    series: Arc<DeviceSeries>,
    nmea: Arc<OutsideNames>,
}

impl Rejects {
    /// Device labels from the process's [`DeviceSeries`] budget, sized for
    /// `max_devices`.
    pub fn new(max_devices: usize) -> Self {
        let series = DeviceSeries::shared(max_devices);
        Self {
            log: Mutex::new(FloodLimit::new(
                LOG_EVERY,
                LINES_PER_REASON,
                max_devices.clamp(16, 65_536),
            )),
            nmea: Arc::new(OutsideNames::new(series.clone(), max_devices)),
            series,
        }
    }

    /// What the NMEA streams of devices named from outside (over MQTT)
    /// share: the series budget and a log limit across them all.
    pub fn nmea(&self) -> Arc<OutsideNames> {
        self.nmea.clone()
    }

    /// Counts one rejection without logging it: for callers that log the
    /// reason under a limit of their own (the embedded broker, once a
    /// minute per reason).
    pub fn count(&self, source: SourceKind, device: Option<&str>, reason: &'static str) {
        let device = device.map(|d| outside(d, OUTSIDE_CHARS));
        self.increment(source, device.as_deref(), reason);
    }

    /// Counts one rejection of `device` as it is shown (cut and escaped).
    fn increment(&self, source: SourceKind, device: Option<&str>, reason: &'static str) {
        let label = match device {
            Some(d) => self.series.label(
                telemetry::INGEST_REJECTED.name(),
                source.as_str(),
                reason,
                d,
            ),
            None => DeviceLabel::none(),
        };
        telemetry::INGEST_REJECTED
            .with::<Value>([source.as_str().into(), reason.into(), label.into()])
            .increment(1);
    }

    /// Counts one rejection of `source` input and logs it unless it was
    /// logged lately (or its reason had its lines this minute). `device` is
    /// the name as given, `None` when the input names no valid device.
    pub fn reject(
        &self,
        source: SourceKind,
        device: Option<&str>,
        reason: &'static str,
        detail: &dyn fmt::Display,
    ) {
        let device = device.map(|d| outside(d, OUTSIDE_CHARS));
        self.increment(source, device.as_deref(), reason);
        let shown = device.as_deref().unwrap_or(labels::NONE);
        let verdict = match self.log.lock() {
            Ok(mut log) => log.check(&shown.to_owned(), (source.as_str(), reason), Instant::now()),
            Err(_) => return,
        };
        if let Flood::Log {
            suppressed,
            held,
            last,
        } = verdict
        {
            let detail = detail.to_string();
            tracing::warn!(
                source = source.as_str(),
                device = shown,
                reason,
                suppressed,
                held,
                "input rejected: {}{}",
                outside(&detail, DETAIL_CHARS),
                if last {
                    " (further rejections for this reason are held back for a minute)"
                } else {
                    ""
                }
            );
        }
    }
}

/// NMEA streams of devices that publish raw sentences, one decoder each, so
/// that each device's epochs are assembled as a serial receiver's would be.
#[derive(Debug)]
pub struct NmeaDevices {
    /// Each device's decoder and when it was last used.
    streams: HashMap<DeviceId, (NmeaStream, Instant)>,
    source: SourceKind,
    trust: ClockTrust,
    max_devices: usize,
    names: Arc<OutsideNames>,
}

impl NmeaDevices {
    /// An empty set that holds at most `max_devices` decoders, whose
    /// streams label and log through `names`.
    pub fn new(
        source: SourceKind,
        trust: ClockTrust,
        max_devices: usize,
        names: Arc<OutsideNames>,
    ) -> Self {
        Self {
            streams: HashMap::new(),
            source,
            trust,
            max_devices,
            names,
        }
    }

    /// Decodes one message of `device` and sends its completed fixes on. A
    /// new device beyond the limit takes the decoder of the one heard from
    /// longest ago (which loses at most its half-assembled epoch).
    pub async fn push(
        &mut self,
        device: &DeviceId,
        text: &[u8],
        tx: &mpsc::Sender<Observed>,
    ) -> Result<(), PipelineClosed> {
        if !self.streams.contains_key(device) && self.streams.len() >= self.max_devices {
            let oldest = self
                .streams
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(d, _)| d.clone());
            if let Some(oldest) = oldest {
                self.streams.remove(&oldest);
            }
        }
        let (stream, used) = self.streams.entry(device.clone()).or_insert_with(|| {
            (
                NmeaStream::new(device.clone(), self.source, self.trust)
                    .named_from_outside(self.names.clone()),
                Instant::now(),
            )
        });
        *used = Instant::now();
        stream.push(text);
        // A message holds whole sentences; a missing final line end must not
        // hold its last sentence back until the next message.
        if !text.ends_with(b"\n") {
            stream.push(b"\r\n");
        }
        stream.send(tx).await
    }
}

/// Compares secrets (passwords, tokens) without leaking where they first differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Sends the fixes of one message to the pipeline.
pub async fn deliver(
    tx: &mpsc::Sender<Observed>,
    source: SourceKind,
    class: DeviceClass,
    device: &DeviceId,
    fixes: impl IntoIterator<Item = Fix>,
) -> Result<(), PipelineClosed> {
    for fix in fixes {
        send(tx, source, class, device, fix).await?;
    }
    Ok(())
}
