//! NMEA receivers on serial ports (USB, UART), kept open through unplugs.
//!
//! A port is read until it is lost: `read` returning `Ok(0)` (what an unplugged
//! USB adapter or a closed pty gives), a read error, or a silence longer than
//! `silence_timeout` without one valid sentence (a wedged adapter or a receiver
//! that stopped talking). Then it is closed and reopened with exponential
//! back-off, forever, without ever spinning.
//!
//! With `baud = "auto"` each opening first hunts for the line speed (see
//! [`hunt`]): the rate found last time first, then the listed rates, one
//! window each, until a sentence with a good checksum arrives. What arrives
//! at a wrong rate is not the receiver's fault and never reaches the
//! decoder's reject counters. The rate found is remembered in the store; a
//! silence reopens the port and so hunts again, starting there. A round that
//! finds nothing is given up like an unplug, with the same back-off.

pub mod hunt;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_serial::{ClearBuffer, SerialPort, SerialPortBuilderExt, SerialStream};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Context;
use super::chrony::ChronySock;
use super::receivers::ReceiverStatus;
use super::stream::{NmeaStream, PipelineClosed};
use crate::config::{Hunt, Serial};
use crate::daemon::health::Pulse;
use crate::fix::{Observed, SourceKind};
use crate::store::speeds::LineSpeeds;
use crate::telemetry::{self, Value};
use crate::util::labels::DeviceLabel;

/// What a serial receiver is given besides the sources' [`Context`].
#[derive(Debug, Clone)]
pub struct Line {
    /// Where the line speed a hunt found is remembered across restarts.
    pub speeds: LineSpeeds,
    /// This receiver's port and speed, for readers outside the source.
    pub status: Arc<ReceiverStatus>,
}

/// Why a port was given up.
#[derive(Debug)]
enum Lost {
    /// `read` returned 0 bytes: the device is gone.
    Unplugged,
    /// A read error.
    Error(std::io::Error),
    /// No valid sentence for the silence timeout.
    Silent,
    /// A hunt tried every rate and none gave a good sentence.
    NoSpeed {
        rates: Vec<u32>,
        window: Duration,
        took: Duration,
    },
}

impl Lost {
    fn reason(&self) -> &'static str {
        match self {
            Self::Unplugged => "unplugged",
            Self::Error(_) => "read_error",
            Self::Silent => "silent",
            // Never a disconnect (see `report_lost`); named for completeness.
            Self::NoSpeed { .. } => "no_line_speed",
        }
    }
}

/// How a reading session ended.
enum Ended {
    Lost { lost: Lost, delivered: bool },
    Stop,
}

impl Ended {
    fn lost(lost: Lost) -> Self {
        Self::Lost {
            lost,
            delivered: false,
        }
    }
}

/// How a hunt ended.
enum Hunted {
    /// Found `rate`; the decoder takes over the last read from `from` to `to`.
    Locked { rate: u32, from: usize, to: usize },
    /// The port was lost, or the daemon is stopping, before a rate was found.
    Ended(Ended),
}

/// One receiver's task: its settings and what it keeps across reopenings.
struct Receiver {
    spec: Serial,
    device: DeviceLabel,
    stream: NmeaStream,
    tx: mpsc::Sender<Observed>,
    shutdown: CancellationToken,
    pulse: Arc<Pulse>,
    line: Line,
    /// The rate the last hunt found, first read from the store.
    remembered: Option<u32>,
    /// Hunts in a row that found nothing: the first is news, the rest not.
    misses: u64,
    /// The rate this task last locked at: finding it again after a silence
    /// is no news (the silence was logged).
    locked_at: Option<u32>,
}

/// Runs one receiver until `shutdown` or until the pipeline closes.
/// `clock` decides when the system clock may date fixes that carry no date.
/// `pulse` is busy while a read is decoded and handed on.
pub async fn run(spec: Serial, context: Context, line: Line, pulse: Arc<Pulse>) {
    let span = tracing::info_span!("serial", device = %spec.device, path = %spec.path.display());
    async move {
        let Context {
            tx,
            shutdown,
            clock,
            ..
        } = context;
        let remembered = spec
            .hunt
            .as_ref()
            .and_then(|_| line.speeds.get(&spec.device));
        let receiver = Receiver {
            device: DeviceLabel::configured(&spec.device),
            stream: NmeaStream::new(spec.device.clone(), SourceKind::Serial, clock).with_chrony(
                spec.chrony_socket
                    .as_deref()
                    .map(|path| ChronySock::new(path, &spec.device)),
            ),
            spec,
            tx,
            shutdown,
            pulse,
            line,
            remembered,
            misses: 0,
            locked_at: None,
        };
        receiver.read_forever().await;
    }
    .instrument(span)
    .await;
}

impl Receiver {
    async fn read_forever(mut self) {
        let connected = telemetry::SERIAL_CONNECTED.with([self.device.clone()]);
        let mut backoff = self.spec.reconnect_min;
        let mut failures = 0u64;
        while !self.shutdown.is_cancelled() {
            let path = self.spec.path.to_string_lossy();
            let port = tokio_serial::new(path, self.spec.baud).open_native_async();
            let ended = match port {
                Err(err) => {
                    self.open_failed(&err, failures, backoff);
                    failures += 1;
                    Ended::lost(Lost::Error(std::io::Error::other(err)))
                }
                Ok(port) => {
                    match &self.spec.hunt {
                        None => tracing::info!(baud = self.spec.baud, "port open"),
                        // A receiver no rate fits is reopened for every
                        // round: its hunt's result is the news, once.
                        Some(plan) if self.misses > 0 => tracing::debug!(
                            rates = ?hunt::order(&plan.rates, self.remembered),
                            "port open, hunting for its line speed"
                        ),
                        Some(plan) => tracing::info!(
                            rates = ?hunt::order(&plan.rates, self.remembered),
                            "port open, hunting for its line speed"
                        ),
                    }
                    failures = 0;
                    connected.set(1.0);
                    let ended = self.session(port).await;
                    connected.set(0.0);
                    self.set_inactive();
                    self.stream.finish();
                    if self.stream.send(&self.tx).await.is_err() {
                        return;
                    }
                    if let Ended::Lost { lost, delivered } = &ended {
                        // A port that worked earns a quick retry; one that keeps
                        // failing backs off so a missing receiver costs nothing.
                        if *delivered {
                            backoff = self.spec.reconnect_min;
                        }
                        self.report_lost(lost, backoff);
                    }
                    ended
                }
            };
            match ended {
                Ended::Stop => return,
                Ended::Lost { .. } => {
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.spec.reconnect_max);
                }
            }
        }
    }

    fn open_failed(&self, err: &tokio_serial::Error, failures: u64, backoff: Duration) {
        telemetry::SERIAL_OPEN_FAILURES
            .with([self.device.clone()])
            .increment(1);
        // The first failure is news; the retries of a receiver that stays
        // away are not.
        if failures == 0 {
            tracing::warn!(retry_in = ?backoff, "cannot open port: {err}");
        } else {
            tracing::debug!(retry_in = ?backoff, failures, "cannot open port: {err}");
        }
    }

    fn report_lost(&mut self, lost: &Lost, backoff: Duration) {
        let (rates, window, took) = match lost {
            Lost::NoSpeed {
                rates,
                window,
                took,
            } => (rates, window, took),
            // The others are disconnects.
            Lost::Error(_) | Lost::Unplugged | Lost::Silent => {
                telemetry::SERIAL_DISCONNECTS
                    .with::<Value>([self.device.clone().into(), lost.reason().into()])
                    .increment(1);
                match lost {
                    Lost::Error(err) => tracing::warn!(retry_in = ?backoff, "port lost: {err}"),
                    Lost::Silent => tracing::warn!(
                        retry_in = ?backoff,
                        "no valid NMEA for {:?}: reopening the port", self.spec.silence_timeout
                    ),
                    _ => tracing::warn!(retry_in = ?backoff, "port lost: device unplugged"),
                }
                return;
            }
        };
        // Not a disconnect: the port was fine, nothing on it made sense.
        self.misses += 1;
        let message = "no line speed found: no NMEA sentence with a good checksum at any rate";
        if self.misses == 1 {
            tracing::warn!(?rates, ?window, ?took, retry_in = ?backoff, "{message}");
        } else {
            tracing::debug!(?rates, ?window, ?took, retry_in = ?backoff, misses = self.misses, "{message}");
        }
    }

    /// One opening of the port: the hunt, when the speed is to be found,
    /// then reading until the port is lost.
    async fn session(&mut self, mut port: SerialStream) -> Ended {
        let mut buf = [0u8; 1024];
        let (rate, locked) = match self.spec.hunt.clone() {
            None => (self.spec.baud, false),
            Some(plan) => match self.hunt(&mut port, &plan, &mut buf).await {
                Hunted::Locked { rate, from, to } => {
                    let _busy = self.pulse.busy();
                    self.stream.push(&buf[from..to]);
                    if let Err(PipelineClosed) = self.stream.send(&self.tx).await {
                        return Ended::Stop;
                    }
                    (rate, true)
                }
                Hunted::Ended(ended) => return ended,
            },
        };
        self.line.status.set_active(rate, Utc::now());
        telemetry::SERIAL_LINE_SPEED
            .with([self.device.clone()])
            .set(f64::from(rate));
        let mut ended = read_port(
            port,
            &self.spec,
            &mut self.stream,
            &self.tx,
            &self.pulse,
            &self.shutdown,
        )
        .await;
        // The sentence that ended the hunt was good input too.
        if let Ended::Lost { delivered, .. } = &mut ended {
            *delivered |= locked;
        }
        ended
    }

    fn set_inactive(&self) {
        self.line.status.set_inactive();
        telemetry::SERIAL_LINE_SPEED
            .with([self.device.clone()])
            .set(0.0);
    }

    /// Listens at each rate of a round in turn until one gives a good
    /// sentence. Nothing read here goes to the decoder, except the read in
    /// which the rate was found, from its good sentence on.
    async fn hunt(&mut self, port: &mut SerialStream, spec: &Hunt, buf: &mut [u8]) -> Hunted {
        let mut round = hunt::Round::new(
            &spec.rates,
            self.remembered,
            spec.window,
            std::time::Instant::now(),
        );
        let probes = telemetry::SERIAL_BAUD_PROBES.with([self.device.clone()]);
        while let Some(probe) = round.next(std::time::Instant::now()) {
            probes.increment(1);
            // Bytes the port took in at the last rate were framed from the
            // wrong bits: dropped with it.
            let set = port
                .set_baud_rate(probe.rate)
                .and_then(|()| port.clear(ClearBuffer::Input));
            if let Err(err) = set {
                return Hunted::Ended(Ended::lost(Lost::Error(std::io::Error::other(err))));
            }
            tracing::debug!(rate = probe.rate, "listening for NMEA");
            match self.listen(port, buf, Instant::from_std(probe.until)).await {
                Ok(None) => {}
                Ok(Some((from, to))) => {
                    self.locked(probe.rate, &round);
                    return Hunted::Locked {
                        rate: probe.rate,
                        from,
                        to,
                    };
                }
                Err(ended) => return Hunted::Ended(ended),
            }
        }
        self.result("not_found");
        let took = round.took(std::time::Instant::now());
        Hunted::Ended(Ended::lost(Lost::NoSpeed {
            rates: round.rates().to_vec(),
            window: spec.window,
            took,
        }))
    }

    /// Reads at the rate just set until `until`: the span of the last read
    /// the decoder takes once a good sentence came, `None` if none did.
    async fn listen(
        &self,
        port: &mut SerialStream,
        buf: &mut [u8],
        until: Instant,
    ) -> Result<Option<(usize, usize)>, Ended> {
        let mut listener = hunt::Listener::new();
        loop {
            let read = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Err(Ended::Stop),
                _ = sleep_until(until) => return Ok(None),
                read = port.read(buf) => read,
            };
            match read {
                Ok(0) => return Err(Ended::lost(Lost::Unplugged)),
                Ok(n) => {
                    if let Some(from) = listener.push(&buf[..n]) {
                        return Ok(Some((from, n)));
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(Ended::lost(Lost::Error(err))),
            }
        }
    }

    /// A hunt found `rate`: logged, counted and remembered.
    fn locked(&mut self, rate: u32, round: &hunt::Round) {
        self.result("locked");
        self.misses = 0;
        let took = round.took(std::time::Instant::now());
        if self.locked_at == Some(rate) {
            tracing::debug!(rate, attempts = round.attempts(), took = ?took, "line speed found");
        } else {
            tracing::info!(rate, attempts = round.attempts(), took = ?took, "line speed found");
        }
        self.locked_at = Some(rate);
        if hunt::worth_remembering(self.remembered, rate) {
            // One small sled insert, once per change of rate: no need to
            // leave the runtime for it.
            if let Err(err) = self.line.speeds.set(&self.spec.device, rate) {
                tracing::warn!("cannot remember the line speed: {err}");
            }
        }
        self.remembered = Some(rate);
    }

    fn result(&self, result: &'static str) {
        telemetry::SERIAL_BAUD_HUNTS
            .with::<Value>([self.device.clone().into(), result.into()])
            .increment(1);
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
