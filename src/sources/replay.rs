//! Replays an NMEA log as if a receiver were sending it, like gpsd's gpsfake:
//! for demos and tests.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::time::sleep;
use tracing::Instrument;

use super::Context;
use super::clock::ClockTrust;
use super::stream::{self, NmeaStream, PipelineClosed};
pub use crate::config::Pace;
use crate::config::Replay;
use crate::fix::{DeviceClass, Observed, SourceKind};
use crate::telemetry;
use crate::util::labels::DeviceLabel;

/// Longest line read at once; longer ones reach the decoder in pieces and are
/// rejected there as over-long.
const MAX_LINE: u64 = 4096;
/// Longest pause honoured between recorded epochs (a log with a gap of hours
/// should not look like a hung replay).
const MAX_RECORDED_GAP: Duration = Duration::from_secs(10);

/// Replays until the end (or forever when looping), `shutdown`, or the pipeline closes.
/// `clock` decides when the system clock may date fixes that carry no date.
pub async fn run(spec: Replay, context: Context) {
    let Context {
        tx,
        shutdown,
        clock,
        ..
    } = context;
    let span = tracing::info_span!("replay", device = %spec.device, path = %spec.path.display());
    async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = replay(&spec, clock, &tx) => {}
        }
    }
    .instrument(span)
    .await;
}

async fn replay(
    spec: &Replay,
    clock: ClockTrust,
    tx: &mpsc::Sender<Observed>,
) -> Result<(), PipelineClosed> {
    let mut stream = NmeaStream::new(spec.device.clone(), SourceKind::Replay, clock);
    let mut pacer = Pacer::new(spec.pace);
    // Each loop is dated after the previous one, so that a looping replay
    // looks like a receiver that keeps going rather than one repeating old
    // fixes (which the duplicate filter would drop).
    let mut pass = Pass::default();
    loop {
        let fixes = match replay_once(spec, &mut stream, &mut pacer, &mut pass, tx).await {
            Ok(fixes) => fixes,
            Err(Failure::Closed) => return Err(PipelineClosed),
            Err(Failure::Io(err)) => {
                telemetry::REPLAY_ERRORS
                    .with([DeviceLabel::configured(&spec.device)])
                    .increment(1);
                tracing::error!("cannot read the log: {err}");
                0
            }
        };
        if !spec.r#loop {
            tracing::info!(fixes, "replay finished");
            return Ok(());
        }
        if fixes == 0 {
            // A log without a single fix (or a missing file) would otherwise loop hot.
            sleep(Duration::from_secs(5)).await;
        }
        stream.restart();
        pacer.restart();
        pass.next_loop();
    }
}

/// The time span of one pass over the log, and how far later passes are shifted.
#[derive(Debug, Default)]
struct Pass {
    shift: chrono::Duration,
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
}

impl Pass {
    /// A fix's time as this pass presents it.
    fn date(&mut self, recorded: DateTime<Utc>) -> DateTime<Utc> {
        self.first.get_or_insert(recorded);
        self.last = Some(recorded);
        recorded + self.shift
    }

    /// The next pass starts one second after this one ended.
    fn next_loop(&mut self) {
        if let (Some(first), Some(last)) = (self.first.take(), self.last.take()) {
            self.shift += (last - first) + chrono::Duration::seconds(1);
        }
    }
}

enum Failure {
    Closed,
    Io(std::io::Error),
}

/// One pass over the file; returns the number of fixes sent.
async fn replay_once(
    spec: &Replay,
    stream: &mut NmeaStream,
    pacer: &mut Pacer,
    pass: &mut Pass,
    tx: &mpsc::Sender<Observed>,
) -> Result<u64, Failure> {
    let file = tokio::fs::File::open(&spec.path)
        .await
        .map_err(Failure::Io)?;
    let mut reader = BufReader::new(file);
    let mut line = Vec::with_capacity(128);
    let mut sent = 0;
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
            .map_err(Failure::Io)?;
        if n == 0 {
            stream.finish();
        } else {
            stream.push(&line);
        }
        for mut fix in stream.take() {
            pacer.wait(fix.time).await;
            fix.time = pass.date(fix.time);
            stream::send(
                tx,
                SourceKind::Replay,
                DeviceClass::NmeaReceiver,
                stream.device(),
                fix,
            )
            .await
            .map_err(|_| Failure::Closed)?;
            sent += 1;
        }
        if n == 0 {
            return Ok(sent);
        }
    }
}

/// Spaces fixes out according to the pace.
struct Pacer {
    pace: Pace,
    last: Option<DateTime<Utc>>,
}

impl Pacer {
    fn new(pace: Pace) -> Self {
        Self { pace, last: None }
    }

    fn restart(&mut self) {
        self.last = None;
    }

    async fn wait(&mut self, time: DateTime<Utc>) {
        let delay = self.delay(time);
        if !delay.is_zero() {
            sleep(delay).await;
        }
    }

    /// How long to wait before the epoch taken at `time`.
    fn delay(&mut self, time: DateTime<Utc>) -> Duration {
        let delay = match self.pace {
            Pace::Max => Duration::ZERO,
            Pace::Rate(hz) => Duration::from_secs_f64(1.0 / hz.max(1e-3)),
            Pace::Recorded => self
                .last
                .and_then(|last| (time - last).to_std().ok())
                .unwrap_or(Duration::ZERO)
                .min(MAX_RECORDED_GAP),
        };
        self.last = Some(time);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap() + chrono::Duration::milliseconds(s)
    }

    #[test]
    fn recorded_pace_follows_the_log_but_caps_gaps_and_ignores_time_going_back() {
        let mut pacer = Pacer::new(Pace::Recorded);
        assert_eq!(pacer.delay(at(0)), Duration::ZERO);
        assert_eq!(pacer.delay(at(200)), Duration::from_millis(200));
        assert_eq!(pacer.delay(at(3_600_000)), MAX_RECORDED_GAP);
        assert_eq!(pacer.delay(at(1_000)), Duration::ZERO);
        pacer.restart();
        assert_eq!(pacer.delay(at(5_000)), Duration::ZERO);
    }

    #[test]
    fn rates_and_max_ignore_the_log() {
        let mut rate = Pacer::new(Pace::Rate(4.0));
        assert_eq!(rate.delay(at(0)), Duration::from_millis(250));
        assert_eq!(rate.delay(at(60_000)), Duration::from_millis(250));
        let mut max = Pacer::new(Pace::Max);
        assert_eq!(max.delay(at(0)), Duration::ZERO);
        assert_eq!(max.delay(at(60_000)), Duration::ZERO);
    }
}
