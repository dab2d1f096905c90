//! NMEA receivers on serial ports (USB, UART), kept open through unplugs.
//!
//! A port is read until it is lost: `read` returning `Ok(0)` (what an unplugged
//! USB adapter or a closed pty gives), a read error, or a silence longer than
//! `silence_timeout` without one valid sentence (a wedged adapter or a receiver
//! that stopped talking). Then it is closed and reopened with exponential
//! back-off, forever, without ever spinning.

use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_serial::SerialPortBuilderExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Context;
use super::chrony::ChronySock;
use super::stream::{NmeaStream, PipelineClosed};
use crate::config::Serial;
use crate::daemon::health::Pulse;
use crate::fix::{Observed, SourceKind};
use crate::telemetry::{self, Value};
use crate::util::labels::DeviceLabel;

/// Why a port was given up.
#[derive(Debug)]
enum Lost {
    /// `read` returned 0 bytes: the device is gone.
    Unplugged,
    /// A read error.
    Error(std::io::Error),
    /// No valid sentence for the silence timeout.
    Silent,
}

impl Lost {
    fn reason(&self) -> &'static str {
        match self {
            Self::Unplugged => "unplugged",
            Self::Error(_) => "read_error",
            Self::Silent => "silent",
        }
    }
}

/// How a reading session ended.
enum Ended {
    Lost { lost: Lost, delivered: bool },
    Stop,
}

/// Runs one receiver until `shutdown` or until the pipeline closes.
/// `clock` decides when the system clock may date fixes that carry no date.
/// `pulse` is busy while a read is decoded and handed on.
pub async fn run(spec: Serial, context: Context, pulse: Arc<Pulse>) {
    let span = tracing::info_span!("serial", device = %spec.device, path = %spec.path.display());
    read_forever(spec, context, pulse).instrument(span).await;
}

async fn read_forever(spec: Serial, context: Context, pulse: Arc<Pulse>) {
    let Context {
        tx,
        shutdown,
        clock,
        ..
    } = context;
    let device = DeviceLabel::configured(&spec.device);
    let connected = telemetry::SERIAL_CONNECTED.with([device.clone()]);
    let chrony = spec.chrony_socket.as_deref();
    let mut stream = NmeaStream::new(spec.device.clone(), SourceKind::Serial, clock)
        .with_chrony(chrony.map(|path| ChronySock::new(path, &spec.device)));
    let mut backoff = spec.reconnect_min;
    let mut failures = 0u64;
    while !shutdown.is_cancelled() {
        let port = tokio_serial::new(spec.path.to_string_lossy(), spec.baud).open_native_async();
        let ended = match port {
            Err(err) => {
                telemetry::SERIAL_OPEN_FAILURES
                    .with([device.clone()])
                    .increment(1);
                // The first failure is news; the retries of a receiver that stays
                // away are not.
                if failures == 0 {
                    tracing::warn!(retry_in = ?backoff, "cannot open port: {err}");
                } else {
                    tracing::debug!(retry_in = ?backoff, failures, "cannot open port: {err}");
                }
                failures += 1;
                Ended::Lost {
                    lost: Lost::Error(std::io::Error::other(err)),
                    delivered: false,
                }
            }
            Ok(port) => {
                tracing::info!(baud = spec.baud, "port open");
                failures = 0;
                connected.set(1.0);
                let ended = read_port(port, &spec, &mut stream, &tx, &pulse, &shutdown).await;
                connected.set(0.0);
                stream.finish();
                if stream.send(&tx).await.is_err() {
                    return;
                }
                if let Ended::Lost { lost, delivered } = &ended {
                    // A port that worked earns a quick retry; one that keeps
                    // failing backs off so a missing receiver costs nothing.
                    if *delivered {
                        backoff = spec.reconnect_min;
                    }
                    telemetry::SERIAL_DISCONNECTS
                        .with::<Value>([device.clone().into(), lost.reason().into()])
                        .increment(1);
                    match lost {
                        Lost::Error(err) => {
                            tracing::warn!(retry_in = ?backoff, "port lost: {err}")
                        }
                        Lost::Unplugged => {
                            tracing::warn!(retry_in = ?backoff, "port lost: device unplugged")
                        }
                        Lost::Silent => tracing::warn!(
                            retry_in = ?backoff,
                            "no valid NMEA for {:?}: reopening the port", spec.silence_timeout
                        ),
                    }
                }
                ended
            }
        };
        match ended {
            Ended::Stop => return,
            Ended::Lost { .. } => {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(spec.reconnect_max);
            }
        }
    }
}

/// Reads one open port until it is lost, the pipeline closes or shutdown.
#[expect(
    clippy::too_many_arguments,
    reason = "the reading loop borrows the port's parts (port, spec, decoder, queue, pulse, shutdown) from its caller, which keeps them across reopenings"
)]
async fn read_port(
    mut port: tokio_serial::SerialStream,
    spec: &Serial,
    stream: &mut NmeaStream,
    tx: &mpsc::Sender<Observed>,
    pulse: &Pulse,
    shutdown: &CancellationToken,
) -> Ended {
    let mut buf = [0u8; 1024];
    let mut seen = stream.sentences();
    let mut delivered = false;
    let mut deadline = Instant::now() + spec.silence_timeout;
    loop {
        let read = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ended::Stop,
            _ = sleep_until(deadline) => return Ended::Lost { lost: Lost::Silent, delivered },
            read = port.read(&mut buf) => read,
        };
        match read {
            Ok(0) => {
                return Ended::Lost {
                    lost: Lost::Unplugged,
                    delivered,
                };
            }
            Ok(n) => {
                let _busy = pulse.busy();
                stream.push(&buf[..n]);
                let now_seen = stream.sentences();
                if now_seen > seen {
                    seen = now_seen;
                    delivered = true;
                    deadline = Instant::now() + spec.silence_timeout;
                }
                if let Err(PipelineClosed) = stream.send(tx).await {
                    return Ended::Stop;
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => {
                return Ended::Lost {
                    lost: Lost::Error(err),
                    delivered,
                };
            }
        }
    }
}
