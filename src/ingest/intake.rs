//! What MQTT and HTTP intake share: turning a parsed payload into fixes for
//! the pipeline, and rejecting bad input with a reason, a count and at most
//! one log line per device and reason per minute.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::clock::ClockTrust;
use super::stream::{NmeaStream, PipelineClosed, send};
use crate::fix::{DeviceClass, DeviceId, Fix, Observed, SourceKind};
use crate::labels::BoundedLabels;
use crate::log_limit::{LogLimit, Verdict};

/// A device that sends garbage all day gets one log line per reason per this.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Metric label for input that names no valid device.
const NO_DEVICE: &str = "-";

/// Counts and logs rejected input; shared by every intake task.
#[derive(Debug)]
pub struct Rejects {
    inner: Mutex<RejectsInner>,
}

#[derive(Debug)]
struct RejectsInner {
    log: LogLimit<(String, &'static str)>,
    labels: BoundedLabels,
}

impl Rejects {
    /// At most `max_devices` distinct device labels; the rest count as `other`.
    pub fn new(max_devices: usize) -> Self {
        Self {
            inner: Mutex::new(RejectsInner {
                log: LogLimit::new(LOG_EVERY, max_devices.clamp(16, 65_536)),
                labels: BoundedLabels::new(max_devices),
            }),
        }
    }

    /// Counts one rejection of `source` input and logs it unless it was logged lately.
    pub fn reject(
        &self,
        source: SourceKind,
        device: Option<&str>,
        reason: &'static str,
        detail: &dyn fmt::Display,
    ) {
        let device = device.unwrap_or(NO_DEVICE);
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let label = inner.labels.label(device);
        metrics::counter!(
            "fixgate_ingest_rejected_total",
            "source" => source.as_str(),
            "reason" => reason,
            "device" => label.clone()
        )
        .increment(1);
        if let Verdict::Log { suppressed } = inner.log.check(&(label, reason), Instant::now()) {
            tracing::warn!(
                source = source.as_str(),
                device,
                reason,
                suppressed,
                "input rejected: {detail}"
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
}

impl NmeaDevices {
    /// An empty set that holds at most `max_devices` decoders.
    pub fn new(source: SourceKind, trust: ClockTrust, max_devices: usize) -> Self {
        Self {
            streams: HashMap::new(),
            source,
            trust,
            max_devices,
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
                NmeaStream::new(device.clone(), self.source, self.trust),
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
