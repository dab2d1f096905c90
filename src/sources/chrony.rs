//! Sends a serial receiver's time to chrony's `SOCK` refclock: one datagram
//! per receiver second (see [`super::timing`] for what is in it).
//!
//! chronyd binds the socket itself (`refclock SOCK PATH` in chrony.conf)
//! and reads whatever arrives; fixgate sends from an unbound, non-blocking
//! datagram socket, so a chronyd that is not running (no socket, or a stale
//! one nobody reads: `not_running`) or that is behind (its queue full:
//! `busy`) costs one failed system call and never holds up the receiver.
//! Failures are counted per sample and logged once per outage, with the
//! number of samples lost when it ends.

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use super::timing::{SampleError, TimeMark};
use crate::fix::DeviceId;
use crate::telemetry::{self, Value};
use crate::util::labels::DeviceLabel;

/// Why a sample was not delivered (the metric's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    NotRunning,
    Busy,
    Permission,
    TimeRange,
    Error,
}

impl Failure {
    fn of(err: &std::io::Error) -> Self {
        match err.kind() {
            ErrorKind::NotFound | ErrorKind::ConnectionRefused => Self::NotRunning,
            ErrorKind::WouldBlock => Self::Busy,
            ErrorKind::PermissionDenied => Self::Permission,
            _ if err.raw_os_error() == Some(libc::ENOBUFS) => Self::Busy,
            _ => Self::Error,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Self::NotRunning => "not_running",
            Self::Busy => "busy",
            Self::Permission => "permission",
            Self::TimeRange => "time_range",
            Self::Error => "error",
        }
    }

    /// What the operator should look at, for the one log line of an outage.
    fn hint(self) -> &'static str {
        match self {
            Self::NotRunning => {
                "is chronyd running with `refclock SOCK` on this path? (it makes the socket)"
            }
            Self::Busy => "chronyd is not reading its socket fast enough",
            Self::Permission => {
                "chronyd makes the socket writable by its own user only: give fixgate write access to it and search access to its directory"
            }
            Self::TimeRange => "the system time does not fit this target's time_t",
            Self::Error => "sending failed",
        }
    }
}

/// One receiver's way to chrony.
#[derive(Debug)]
pub struct ChronySock {
    path: PathBuf,
    device: DeviceId,
    /// Made at the first sample, and again after it could not be.
    socket: Option<UnixDatagram>,
    /// The receiver second last offered: one sample per second.
    last_second: Option<i64>,
    /// Set while samples fail: since when (the first failure's kind) and
    /// how many were lost.
    outage: Option<(Failure, u64)>,
    /// This receiver's series, looked up once.
    samples: metrics::Counter,
    offset: metrics::Gauge,
}

impl ChronySock {
    /// Samples of `device` go to the socket chronyd binds at `path`.
    pub fn new(path: &Path, device: &DeviceId) -> Self {
        Self {
            path: path.to_owned(),
            device: device.clone(),
            socket: None,
            last_second: None,
            outage: None,
            samples: telemetry::CHRONY_SAMPLES.with([DeviceLabel::configured(device)]),
            offset: telemetry::CHRONY_OFFSET.with([DeviceLabel::configured(device)]),
        }
    }

    /// Sends `mark` unless its receiver second was offered already (a 5 Hz
    /// receiver gives five marks a second; chrony needs one).
    pub fn offer(&mut self, mark: TimeMark) {
        let second = mark.second();
        if self.last_second == Some(second) {
            return;
        }
        self.last_second = Some(second);
        match self.send(&mark) {
            Ok(()) => {
                self.samples.increment(1);
                self.offset.set(mark.offset());
                if let Some((_, lost)) = self.outage.take() {
                    tracing::info!(
                        socket = %self.path.display(),
                        lost,
                        "chrony takes this receiver's time again"
                    );
                }
            }
            Err(failure) => {
                telemetry::CHRONY_SEND_FAILURES
                    .with::<Value>([
                        DeviceLabel::configured(&self.device).into(),
                        failure.reason().into(),
                    ])
                    .increment(1);
                match &mut self.outage {
                    Some((_, lost)) => *lost += 1,
                    None => {
                        tracing::warn!(
                            socket = %self.path.display(),
                            reason = failure.reason(),
                            "cannot send this receiver's time to chrony: {}; counted, logged again when it works",
                            failure.hint()
                        );
                        self.outage = Some((failure, 1));
                    }
                }
            }
        }
    }

    fn send(&mut self, mark: &TimeMark) -> Result<(), Failure> {
        let bytes = mark
            .encode()
            .map_err(|SampleError::OutOfRange| Failure::TimeRange)?;
        let socket = match self.socket.take() {
            Some(socket) => socket,
            None => {
                let socket = UnixDatagram::unbound().map_err(|e| Failure::of(&e))?;
                socket.set_nonblocking(true).map_err(|e| Failure::of(&e))?;
                socket
            }
        };
        let sent = socket.send_to(&bytes, &self.path);
        self.socket = Some(socket);
        match sent {
            Ok(n) if n == bytes.len() => Ok(()),
            Ok(_) => Err(Failure::Error),
            Err(err) => Err(Failure::of(&err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use chrono::TimeZone;

    use super::*;
    use crate::sources::timing::{SAMPLE_LEN, SOCK_MAGIC};

    fn mark(second: i64, millis: i64) -> TimeMark {
        let utc = chrono::Utc
            .timestamp_millis_opt(second * 1000 + millis)
            .single()
            .expect("time");
        TimeMark {
            utc,
            arrived: UNIX_EPOCH + Duration::from_millis((second * 1000 + millis + 150) as u64),
        }
    }

    fn device() -> DeviceId {
        DeviceId::new("gps-1").expect("id")
    }

    #[test]
    fn one_sample_per_receiver_second_reaches_the_socket() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("fixgate.sock");
        let chronyd = UnixDatagram::bind(&path).expect("bind");
        chronyd.set_nonblocking(true).expect("nonblocking");
        let mut sock = ChronySock::new(&path, &device());
        // A 5 Hz receiver: marks at .0 and .2 of one second, then the next.
        sock.offer(mark(1_764_936_000, 0));
        sock.offer(mark(1_764_936_000, 200));
        sock.offer(mark(1_764_936_001, 0));
        let mut buf = [0u8; 128];
        let mut got = Vec::new();
        while let Ok(n) = chronyd.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        assert_eq!(got.len(), 2, "one per second");
        for datagram in &got {
            assert_eq!(datagram.len(), SAMPLE_LEN);
            assert_eq!(&datagram[SAMPLE_LEN - 4..], &SOCK_MAGIC.to_ne_bytes());
        }
        assert_eq!(
            got[1],
            mark(1_764_936_001, 0).encode().expect("encode").to_vec()
        );
        assert!(sock.outage.is_none());
    }

    #[test]
    fn a_chronyd_that_is_away_costs_a_count_and_one_outage() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("fixgate.sock");
        let mut sock = ChronySock::new(&path, &device());
        // No socket at all.
        sock.offer(mark(1_764_936_000, 0));
        sock.offer(mark(1_764_936_001, 0));
        assert_eq!(sock.outage, Some((Failure::NotRunning, 2)));
        // A stale socket file nobody reads: refused, the same outage.
        drop(UnixDatagram::bind(&path).expect("bind"));
        sock.offer(mark(1_764_936_002, 0));
        assert_eq!(sock.outage, Some((Failure::NotRunning, 3)));
        // chronyd back: the outage ends.
        std::fs::remove_file(&path).expect("remove stale");
        let chronyd = UnixDatagram::bind(&path).expect("bind");
        sock.offer(mark(1_764_936_003, 0));
        assert_eq!(sock.outage, None);
        let mut buf = [0u8; 128];
        assert_eq!(chronyd.recv(&mut buf).expect("sample"), SAMPLE_LEN);
    }

    #[test]
    fn a_full_queue_is_busy_and_never_blocks() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("fixgate.sock");
        let _chronyd = UnixDatagram::bind(&path).expect("bind");
        let mut sock = ChronySock::new(&path, &device());
        // Nobody reads: the receive queue fills, then sending must fail at once.
        let started = std::time::Instant::now();
        for second in 0..2_000 {
            sock.offer(mark(1_764_936_000 + second, 0));
            if sock.outage.is_some() {
                break;
            }
        }
        assert!(
            matches!(sock.outage, Some((Failure::Busy, _))),
            "{:?}",
            sock.outage
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
