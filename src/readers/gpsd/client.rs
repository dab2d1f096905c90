//! One connected client: its requests, its watch policy, and the reports
//! it is sent, on a task of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::protocol::{self, Line, Lines, Refusal, Request, Watch, WatchChange};
use super::table::{Report, Shared};
use crate::telemetry;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 512;
/// Reports gathered into one write when several are waiting.
const BATCH: usize = 64;
/// Answers queued before they are written out, whatever else waits.
const OUT_FLUSH: usize = 64 * 1024;

/// A client's state between requests.
pub struct Client {
    shared: Arc<Shared>,
    stall_timeout: Duration,
    watch: Watch,
    /// The served device `watch.device` names.
    only: Option<usize>,
    /// Reports to come, while watching.
    reports: Option<broadcast::Receiver<Arc<Report>>>,
    /// What waits to be written, and how many lines it holds.
    out: Vec<u8>,
    lines: u64,
    /// Reports skipped for falling behind, this connection.
    skipped: u64,
}

/// Counts the client in the gauge while it is connected.
struct Connected;

impl Connected {
    fn new() -> Self {
        telemetry::GPSD_CLIENTS.get().increment(1.0);
        Self
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        telemetry::GPSD_CLIENTS.get().decrement(1.0);
    }
}

impl Client {
    /// A client of `shared`, closed when a write waits `stall_timeout`.
    pub fn new(shared: Arc<Shared>, stall_timeout: Duration) -> Self {
        Self {
            shared,
            stall_timeout,
            watch: Watch::default(),
            only: None,
            reports: None,
            out: Vec::new(),
            lines: 0,
            skipped: 0,
        }
    }

    /// Serves `stream` until the client leaves, stalls, or `shutdown`.
    pub async fn run(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
        permit: OwnedSemaphorePermit,
    ) {
        let span = tracing::info_span!("gpsd client", %peer);
        self.serve(stream, shutdown, permit).instrument(span).await;
    }

    async fn serve(
        mut self,
        stream: TcpStream,
        shutdown: CancellationToken,
        _permit: OwnedSemaphorePermit,
    ) {
        let _connected = Connected::new();
        let _joined = self.shared.join().await;
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let mut lines = Lines::default();
        let mut chunk = [0u8; READ_CHUNK];
        // gpsd greets every client with its VERSION.
        let greeting = protocol::version(&self.shared.release);
        self.push(&greeting);
        loop {
            if !self.flush(&mut wr).await {
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                read = rd.read(&mut chunk) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if !self.answer(lines.push(&chunk[..n]), &mut wr).await {
                            break;
                        }
                    }
                },
                report = next(self.reports.as_mut()) => {
                    if !self.deliver(report) {
                        break;
                    }
                }
            }
        }
        if self.skipped > 0 {
            tracing::info!(skipped = self.skipped, "gpsd client left");
        }
    }

    /// Writes what waits, within the stall timeout; false when the client
    /// is gone or stalled.
    async fn flush(&mut self, wr: &mut tokio::net::tcp::OwnedWriteHalf) -> bool {
        if self.out.is_empty() {
            return true;
        }
        match tokio::time::timeout(self.stall_timeout, wr.write_all(&self.out)).await {
            Ok(Ok(())) => {
                telemetry::GPSD_LINES_SENT.increment(self.lines);
                self.out.clear();
                self.lines = 0;
                // A burst (a long DEVICES list) does not keep its buffer.
                self.out.shrink_to(16 * 1024);
                true
            }
            Ok(Err(_)) => false,
            Err(_) => {
                telemetry::GPSD_DROPPED.with(["stalled"]).increment(1);
                tracing::warn!(
                    "gpsd: closing a client that read nothing for {}",
                    humantime::format_duration(self.stall_timeout)
                );
                false
            }
        }
    }

    /// Queues one JSON object as a line.
    fn push(&mut self, object: &str) {
        self.out.extend_from_slice(object.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        self.lines += 1;
    }

    /// Answers the requests of `lines`, writing out whenever the answers
    /// waiting reach [`OUT_FLUSH`]: a client that sends requests and reads
    /// nothing (a line of `?POLL;` repeated) is held to that much memory,
    /// then to its stall timeout. False when the client is gone or stalled.
    async fn answer(
        &mut self,
        lines: impl IntoIterator<Item = Line>,
        wr: &mut tokio::net::tcp::OwnedWriteHalf,
    ) -> bool {
        for line in lines {
            let requests = match line {
                Line::Text(text) => protocol::parse_line(&text),
                Line::TooLong => vec![Request::Bad(Refusal::TooLong)],
            };
            for request in requests {
                self.request(request);
                if self.out.len() >= OUT_FLUSH && !self.flush(wr).await {
                    return false;
                }
            }
        }
        true
    }

    fn request(&mut self, request: Request) {
        match request {
            Request::Version => {
                let version = protocol::version(&self.shared.release);
                self.push(&version);
            }
            Request::Devices => self.push_devices(),
            Request::Device => match self.shared.devices(true) {
                Some(device) => self.push(&device),
                None => self.refuse(&Refusal::NoSuchDevice(String::new())),
            },
            Request::Poll => {
                let poll = self.shared.poll(Utc::now());
                self.push(&poll);
            }
            Request::Watch(change) => self.watch(change),
            Request::Bad(refusal) => self.refuse(&refusal),
        }
    }

    fn push_devices(&mut self) {
        if let Some(devices) = self.shared.devices(false) {
            self.push(&devices);
        }
    }

    fn refuse(&mut self, refusal: &Refusal) {
        telemetry::GPSD_BAD_COMMANDS
            .with([refusal.reason()])
            .increment(1);
        let error = protocol::error(refusal);
        self.push(&error);
    }

    /// `?WATCH`: DEVICES, then the policy as WATCH, then the reports.
    fn watch(&mut self, change: Option<WatchChange>) {
        if let Some(change) = change {
            if let Some(path) = &change.device {
                match self.shared.find(path) {
                    Some(i) => self.only = Some(i),
                    None => return self.refuse(&Refusal::NoSuchDevice(path.clone())),
                }
            }
            self.watch.apply(&change);
        }
        self.push_devices();
        let watch = protocol::watch(&self.watch);
        self.push(&watch);
        match (self.watch.streams(), self.reports.is_some()) {
            (true, false) => self.reports = Some(self.shared.subscribe()),
            (false, true) => self.reports = None,
            _ => {}
        }
    }

    /// Takes a report, and any that wait behind it, up to a batch; false
    /// when the queue is gone (shutdown).
    fn deliver(&mut self, first: Result<Arc<Report>, RecvError>) -> bool {
        match first {
            Ok(report) => self.add(&report),
            Err(RecvError::Lagged(n)) => self.lagged(n),
            Err(RecvError::Closed) => return false,
        }
        for _ in 1..BATCH {
            let Some(reports) = self.reports.as_mut() else {
                break;
            };
            match reports.try_recv() {
                Ok(report) => self.add(&report),
                Err(TryRecvError::Lagged(n)) => self.lagged(n),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return false,
            }
        }
        true
    }

    fn add(&mut self, report: &Report) {
        if self.only.is_some_and(|i| i != report.entry) {
            return;
        }
        self.out.extend_from_slice(&report.lines);
        self.lines += report.count;
    }

    /// The client fell behind the queue by `n` reports: they are skipped,
    /// counted, and said once per client.
    fn lagged(&mut self, n: u64) {
        telemetry::GPSD_SKIPPED.increment(n);
        if self.skipped == 0 {
            tracing::warn!(
                skipped = n,
                "gpsd: a slow client skips reports it fell behind on"
            );
        }
        self.skipped += n;
    }
}

/// The next report, or never when not watching.
async fn next(
    reports: Option<&mut broadcast::Receiver<Arc<Report>>>,
) -> Result<Arc<Report>, RecvError> {
    match reports {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
