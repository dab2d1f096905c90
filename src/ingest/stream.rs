//! One NMEA byte stream attached to a device: the decoder, its counters in
//! metrics, and the way into the pipeline. Serial ports, replayed files and
//! the demo fleet all go through it.

use tokio::sync::mpsc;

use super::clock::{ClockTrust, TrustedClock};
use super::nmea::{Decoder, DecoderOptions};
use crate::fix::{DeviceId, Fix, Observed, Position, SourceKind};

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
    /// Rejection counts already exported to metrics, by reason.
    exported: Vec<(&'static str, u64)>,
    fixes: Vec<Fix>,
}

impl NmeaStream {
    /// A fresh stream for `device`.
    pub fn new(device: DeviceId, source: SourceKind, trust: ClockTrust) -> Self {
        Self {
            device,
            source,
            decoder: Decoder::new(DecoderOptions::default()),
            clock: TrustedClock::new(trust),
            exported: Vec::new(),
            fixes: Vec::new(),
        }
    }

    /// The device this stream belongs to.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }

    /// Starts over (a file replay loops): the old epoch and learned cycle are dropped.
    pub fn restart(&mut self) {
        self.export();
        self.decoder = Decoder::new(DecoderOptions::default());
        self.exported.clear();
        self.fixes.clear();
    }

    /// Decodes bytes; completed fixes wait in the stream until [`Self::take`] or [`Self::send`].
    pub fn push(&mut self, bytes: &[u8]) {
        self.decoder.set_trusted_clock(self.clock.now());
        self.decoder.push(bytes, &mut self.fixes);
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
            send(tx, self.source, &self.device, fix).await?;
        }
        Ok(())
    }

    /// Moves the decoder's rejection counters into metrics as increments.
    fn export(&mut self) {
        for (reason, count) in self.decoder.stats().rejections() {
            let seen = match self.exported.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, seen)) => seen,
                None => {
                    self.exported.push((reason, 0));
                    let last = self.exported.len() - 1;
                    &mut self.exported[last].1
                }
            };
            if count > *seen {
                metrics::counter!(
                    "fixgate_nmea_rejected_total",
                    "source" => self.source.as_str(),
                    "device" => self.device.to_string(),
                    "reason" => reason
                )
                .increment(count - *seen);
                *seen = count;
            }
        }
    }
}

/// Sends one fix of `device` to the pipeline.
pub async fn send(
    tx: &mpsc::Sender<Observed>,
    source: SourceKind,
    device: &DeviceId,
    fix: Fix,
) -> Result<(), PipelineClosed> {
    let observed = Observed {
        source,
        position: Position {
            device: device.clone(),
            fix,
        },
    };
    tx.send(observed).await.map_err(|_| PipelineClosed)
}
