//! The uplink: sends every stored event upstream in compacted batches,
//! acknowledged, re-sent until acknowledged, and survives outages, crashes
//! and restarts.
//!
//! The store is the source of truth. This task reads it by sequence number
//! (only what the flusher has made durable, so that a sequence number sent
//! upstream can never be handed out again after a crash), keeps a window of
//! batches in flight, and records acknowledged ranges back in the store.
//! Transports (`mqtt`, `http`) only move bytes and report acknowledgements;
//! what to send next is decided by the pure functions in [`plan`].
//!
//! Every read and write of sled runs on the blocking pool ([`off_runtime`]):
//! a read may wait for the disk, and a runtime thread held by it would hold
//! up the feed, the intake and the rest of the daemon's tasks.

pub mod http;
pub mod mqtt;
pub mod plan;
#[cfg(test)]
mod tests;
pub mod transport;

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
// Tokio's clock (the system's monotonic one, except where a test pauses
// it): the in-process tests (`tests.rs`) drive ack timeouts, `max_age` and
// the backlog's rate with paused time instead of waiting them out.
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Uplink as UplinkConfig, UplinkTransport};
use crate::fix::{Event, Position, Record};
use crate::store::{Acked, Reader, Store, StoreError};
use crate::telemetry;
use crate::util::backoff::Backoff;
use crate::util::tasks::Tasks;
use crate::wire::{self, BatchKind};
use transport::{FromTransport, ToTransport};

/// How often acknowledged ranges are written back to the store at most; a
/// crash in between only means re-sending what the receiver drops as
/// duplicates.
const PERSIST_EVERY: Duration = Duration::from_secs(1);
/// Longest the backlog waits for the live stream after an outage (should
/// the head never become durable: a failing disk).
const HOLD_LIMIT: Duration = Duration::from_secs(10);
/// How long to wait before reading the store again after a read failed.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// How often the uplink reports its backlog (gauges and the status line):
/// a walk of the ledger over what is not acknowledged, too dear for every
/// turn of its loop.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// What the uplink tells the rest of the daemon: its connection, and what
/// it has not had acknowledged, by its own ranges (which run ahead of those
/// last written to the store).
#[derive(Debug, Default)]
pub struct Report {
    connected: AtomicBool,
    /// Events not acknowledged and the oldest one's time; `None` until the
    /// first report.
    backlog: Mutex<Option<crate::store::ledger::Usage>>,
}

impl Report {
    /// Whether the connection is up now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The backlog at the last report.
    pub fn backlog(&self) -> Option<crate::store::ledger::Usage> {
        *self
            .backlog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running uplink.
pub struct Running {
    /// Its task, to await on shutdown.
    pub task: tokio::task::JoinHandle<()>,
    /// Its connection and backlog, for the status line.
    pub report: Arc<Report>,
}

/// Starts the uplink and its transport; `None` when it is off.
#[expect(
    clippy::too_many_arguments,
    reason = "the uplink is started from the daemon's parts (config, gateway, store, two heads, task tracker), each a different type"
)]
pub async fn start(
    config: &UplinkConfig,
    gateway: &str,
    store: Store,
    head: watch::Receiver<u64>,
    durable: watch::Receiver<u64>,
    tasks: &Tasks,
) -> anyhow::Result<Option<Running>> {
    let shutdown = tasks.shutdown().clone();
    let (to_tx, to_rx) = mpsc::channel(config.max_in_flight + 4);
    let (from_tx, from_rx) = mpsc::channel(config.max_in_flight + 4);
    let backoff = Backoff::new(config.retry_min, config.retry_max);
    let side = transport::Side {
        rx: to_rx,
        tx: from_tx,
        shutdown: shutdown.clone(),
    };
    let peer = match &config.transport {
        UplinkTransport::Off => return Ok(None),
        UplinkTransport::Mqtt(m) => {
            let options = mqtt::options(m, gateway, config.max_in_flight)?;
            let topic = m.topic.replace("{gateway}", gateway);
            let target = mqtt::Target {
                options,
                topic: topic.clone(),
                max_in_flight: config.max_in_flight,
            };
            tasks.spawn(mqtt::run(target, backoff, side));
            format!("mqtt://{}:{}/{topic}", m.broker.host, m.broker.port)
        }
        UplinkTransport::Http(h) => {
            let endpoint = http::Endpoint::new(h)?;
            tasks.spawn(http::run(endpoint, backoff, side));
            h.url.clone()
        }
    };
    telemetry::UPLINK_CONNECTED.set(0.0);
    let uplink = Uplink::new(config, gateway, store, head, durable).await?;
    tracing::info!(
        %peer,
        backlog = uplink.backlog(),
        "uplink starting"
    );
    let report = uplink.report.clone();
    let task = tasks.spawn(uplink.run(to_tx, from_rx, shutdown));
    Ok(Some(Running { task, report }))
}

/// Runs a store call on the blocking pool and waits for it. A panic in the
/// call goes on in the caller, as if the call had been made here; a call the
/// runtime dropped (it is shutting down) is an error.
async fn off_runtime<T, F>(call: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(join) => Err(StoreError::Interrupted(join.to_string())),
    }
}

/// A batch handed to the transport and not yet acknowledged.
struct Flight {
    kind: BatchKind,
    /// The sequence numbers it accounts for.
    covers: Acked,
    records: usize,
    bytes: Arc<Vec<u8>>,
    /// When it was last sent; `None` while it waits to be (re-)sent.
    sent: Option<Instant>,
    /// How often it was handed to a transport.
    attempts: u32,
}

/// The uplink's state; one task owns it.
struct Uplink {
    gateway: String,
    store: Store,
    reader: Reader,
    durable: watch::Receiver<u64>,
    /// The writer's head: what exists, durable or not yet.
    head: watch::Receiver<u64>,
    max_records: usize,
    max_age: Duration,
    backlog_rate: f64,
    max_in_flight: usize,
    ack_timeout: Duration,
    /// The lowest sequence number the store ever handed out.
    first_seq: u64,
    acked: Acked,
    acked_dirty: bool,
    persisted_at: Instant,
    flights: BTreeMap<u64, Flight>,
    next_token: u64,
    next_batch_id: u64,
    /// The next sequence number the live stream sends; `None` until the
    /// first connection decides where it starts.
    live_next: Option<u64>,
    /// Since when the live stream has had records waiting.
    live_since: Option<Instant>,
    /// The backlog may send its next batch from then on (rate limit).
    backlog_at: Instant,
    /// After a live-first jump the backlog waits until the live stream has
    /// passed the head of that moment (and at most [`HOLD_LIMIT`]): devices
    /// whose latest position was not durable yet at the snapshot get it in
    /// the first live batches, still before any backlog.
    backlog_hold: Option<(u64, Instant)>,
    /// The connection's generation while one is up.
    connected: Option<u64>,
    /// The connection and backlog as readers outside the task see them.
    report: Arc<Report>,
    /// When the backlog was last reported.
    reported_at: Option<Instant>,
    down_since: Option<Instant>,
    store_retry_at: Option<Instant>,
}

impl Uplink {
    async fn new(
        config: &UplinkConfig,
        gateway: &str,
        store: Store,
        head: watch::Receiver<u64>,
        durable: watch::Receiver<u64>,
    ) -> Result<Self, StoreError> {
        let reading = store.clone();
        let (acked, first_seq) =
            off_runtime(move || Ok((reading.uplink_acked(), reading.first_seq()?))).await?;
        let acked = acked.unwrap_or_else(|err| {
            // Forgetting what was acknowledged only means sending it again
            // (receivers drop duplicates); refusing to start would send nothing.
            telemetry::UPLINK_ERRORS.with(["store"]).increment(1);
            tracing::error!(
                "uplink: acknowledged ranges unreadable, sending everything held again: {err}"
            );
            Acked::new()
        });
        let now = Instant::now();
        Ok(Self {
            gateway: gateway.to_owned(),
            reader: store.reader(),
            store,
            durable,
            head,
            max_records: config.max_records,
            max_age: config.max_age,
            backlog_rate: f64::from(config.backlog_rate),
            max_in_flight: config.max_in_flight,
            ack_timeout: config.ack_timeout,
            first_seq,
            acked,
            acked_dirty: false,
            persisted_at: now,
            flights: BTreeMap::new(),
            next_token: 1,
            // Unique across restarts without storing a counter.
            next_batch_id: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_micros() as u64),
            live_next: None,
            live_since: None,
            backlog_at: now,
            backlog_hold: None,
            connected: None,
            report: Arc::new(Report::default()),
            reported_at: None,
            down_since: None,
            store_retry_at: None,
        })
    }

    /// Sequence numbers handed to a batch not yet acknowledged: the union of
    /// the flights' `covers` (at most `max_in_flight` plus a snapshot).
    fn in_flight(&self) -> Acked {
        self.flights
            .values()
            .flat_map(|f| f.covers.iter().cloned())
            .collect()
    }

    /// Stored records not acknowledged yet (the store's ledger counts what
    /// is really held: thinned and dropped numbers are not backlog). Its
    /// gauge is the budget's `fixgate_store_buffered_records`.
    fn backlog(&self) -> u64 {
        self.store.backlog_given(&self.acked).records
    }

    async fn run(
        mut self,
        to: mpsc::Sender<ToTransport>,
        mut from: mpsc::Receiver<FromTransport>,
        shutdown: CancellationToken,
    ) {
        let mut watching = true;
        loop {
            let wake = self.next_wake();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                message = from.recv() => match message {
                    Some(m) => self.on_transport(m).await,
                    None => break,
                },
                changed = self.durable.changed(), if watching => {
                    // The flusher is gone: the daemon is stopping.
                    watching = changed.is_ok();
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            if self.pump(&to).await.is_err() {
                break;
            }
            if self.acked_dirty && self.persisted_at.elapsed() >= PERSIST_EVERY {
                self.persist().await;
            }
            if self
                .reported_at
                .is_none_or(|at| at.elapsed() >= REPORT_EVERY)
            {
                self.report_backlog();
            }
        }
        if self.acked_dirty {
            self.persist().await;
        }
    }

    /// Publishes the backlog: gauges, and the status line's copy.
    fn report_backlog(&mut self) {
        self.reported_at = Some(Instant::now());
        let usage = self.store.backlog_given(&self.acked);
        let age = usage.oldest_age(chrono::Utc::now());
        telemetry::UPLINK_BACKLOG_RECORDS.set(usage.records as f64);
        telemetry::UPLINK_BACKLOG_OLDEST_SECONDS.set(age.map_or(0.0, |a| a.as_secs_f64()));
        *self
            .report
            .backlog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(usage);
    }

    /// The next moment something may become due without an outside event.
    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = now + Duration::from_secs(1);
        if let Some(since) = self.live_since {
            wake = wake.min(since + self.max_age);
        }
        if self.connected.is_some() && self.backlog_at > now {
            wake = wake.min(self.backlog_at);
        }
        if let Some(oldest) = self.flights.values().filter_map(|f| f.sent).min() {
            wake = wake.min(oldest + self.ack_timeout);
        }
        if let Some(at) = self.store_retry_at {
            wake = wake.min(at);
        }
        wake.max(now)
    }

    async fn on_transport(&mut self, message: FromTransport) {
        match message {
            FromTransport::Connected { generation } => self.on_connected(generation).await,
            FromTransport::Acked { token } => {
                let Some(flight) = self.flights.remove(&token) else {
                    return;
                };
                for range in flight.covers.iter() {
                    self.acked.insert(range.clone());
                }
                self.acked_dirty = true;
                if let Some(sent) = flight.sent {
                    telemetry::UPLINK_ACK_SECONDS.record(sent.elapsed().as_secs_f64());
                }
                telemetry::UPLINK_ACKED_RECORDS
                    .with([flight.kind.name()])
                    .increment(flight.records as u64);
                if let Some(first) = self.acked.iter().next() {
                    telemetry::UPLINK_ACKED_SEQ.set(*first.end() as f64);
                }
            }
            FromTransport::Lost { generation, reason } => {
                if self.connected == Some(generation) {
                    self.disconnected(&reason);
                }
            }
        }
    }

    /// The connection is gone (or given up on): everything in flight waits
    /// to be re-sent on the next one.
    fn disconnected(&mut self, reason: &str) {
        self.connected = None;
        self.report.connected.store(false, Ordering::Relaxed);
        self.down_since = Some(Instant::now());
        telemetry::UPLINK_CONNECTED.set(0.0);
        telemetry::UPLINK_DISCONNECTS.increment(1);
        let unacked = self.flights.values().filter(|f| f.sent.is_some()).count();
        for flight in self.flights.values_mut() {
            flight.sent = None;
        }
        tracing::warn!(
            unacknowledged_batches = unacked,
            "uplink lost: {reason}; buffering in the store and retrying"
        );
    }

    async fn on_connected(&mut self, generation: u64) {
        self.connected = Some(generation);
        self.report.connected.store(true, Ordering::Relaxed);
        telemetry::UPLINK_CONNECTED.set(1.0);
        let durable = *self.durable.borrow();
        let from = self.live_next.unwrap_or(self.first_seq);
        let start = plan::resume(&self.acked, from, durable, self.max_records as u64);
        let down = self.down_since.take().map(|t| t.elapsed());
        tracing::info!(
            down_for = ?down.map(|d| Duration::from_millis(d.as_millis() as u64)),
            backlog = self.backlog(),
            live_first = start.snapshot,
            "uplink connected"
        );
        if start.snapshot {
            self.snapshot(from, durable).await;
            self.backlog_hold = Some((*self.head.borrow(), Instant::now()));
        }
        self.live_next = Some(start.live_next);
    }

    /// Queues each device's latest position not yet sent, so that the
    /// receiver sees where vehicles are now before the backlog drains.
    async fn snapshot(&mut self, from: u64, durable: u64) {
        let reader = self.reader.clone();
        let devices = match off_runtime(move || reader.devices()).await {
            Ok(d) => d,
            Err(err) => {
                telemetry::UPLINK_ERRORS.with(["store"]).increment(1);
                tracing::error!("uplink: cannot read device states for the snapshot: {err}");
                return;
            }
        };
        let in_flight = self.in_flight();
        let mut records: Vec<Record> = devices
            .into_iter()
            .filter_map(|d| {
                let seq = d.seq?;
                let fix = d.fix?;
                let fresh = (from..=durable).contains(&seq)
                    && !self.acked.contains(&seq)
                    && !in_flight.contains(&seq);
                fresh.then(|| Record {
                    seq,
                    event: Event::Position(Position::new(d.device, fix)),
                })
            })
            .collect();
        if records.is_empty() {
            return;
        }
        records.sort_by_key(|r| r.seq);
        for chunk in records.chunks(self.max_records) {
            let covers: Acked = chunk.iter().map(|r| r.seq..=r.seq).collect();
            let range = chunk[0].seq..=chunk[chunk.len() - 1].seq;
            self.queue(BatchKind::Snapshot, range, covers, chunk.to_vec());
        }
    }

    /// Sends what the window allows: re-sends first, then live, then backlog.
    async fn pump(&mut self, to: &mpsc::Sender<ToTransport>) -> Result<(), ()> {
        let Some(generation) = self.connected else {
            return Ok(());
        };
        let now = Instant::now();
        if self
            .flights
            .values()
            .filter_map(|f| f.sent)
            .any(|sent| now >= sent + self.ack_timeout)
        {
            telemetry::UPLINK_ERRORS.with(["ack_timeout"]).increment(1);
            // The transport drops the connection and answers with
            // `Connected` for a new one.
            to.send(ToTransport::Reconnect { generation })
                .await
                .map_err(drop)?;
            self.disconnected(&format!("no acknowledgement within {:?}", self.ack_timeout));
            return Ok(());
        }
        if self.store_retry_at.is_some_and(|at| now < at) {
            return Ok(());
        }
        self.store_retry_at = None;
        loop {
            let sent = self.flights.values().filter(|f| f.sent.is_some()).count();
            if sent >= self.max_in_flight {
                return Ok(());
            }
            let waiting = self
                .flights
                .iter()
                .find(|(_, f)| f.sent.is_none())
                .map(|(t, _)| *t);
            let token = match waiting {
                Some(token) => token,
                None => match self.next_batch(now).await {
                    Ok(Some(token)) => token,
                    Ok(None) => return Ok(()),
                    Err(err) => {
                        telemetry::UPLINK_ERRORS.with(["store"]).increment(1);
                        tracing::error!("uplink: cannot read the store: {err}");
                        self.store_retry_at = Some(now + STORE_RETRY);
                        return Ok(());
                    }
                },
            };
            let Some(flight) = self.flights.get_mut(&token) else {
                return Ok(());
            };
            flight.sent = Some(Instant::now());
            if flight.attempts > 0 {
                telemetry::UPLINK_RESENT.increment(1);
            }
            flight.attempts += 1;
            telemetry::UPLINK_BATCHES
                .with([flight.kind.name()])
                .increment(1);
            telemetry::UPLINK_BYTES.increment(flight.bytes.len() as u64);
            to.send(ToTransport::Send {
                generation,
                token,
                bytes: flight.bytes.clone(),
            })
            .await
            .map_err(drop)?;
        }
    }

    /// Builds the next batch, live before backlog; returns its token.
    async fn next_batch(&mut self, now: Instant) -> Result<Option<u64>, StoreError> {
        if let Some(token) = self.next_live(now).await? {
            return Ok(Some(token));
        }
        self.next_backlog(now).await
    }

    async fn next_live(&mut self, now: Instant) -> Result<Option<u64>, StoreError> {
        let durable = *self.durable.borrow();
        loop {
            let Some(next) = self.live_next else {
                return Ok(None);
            };
            if next > durable {
                self.live_since = None;
                return Ok(None);
            }
            if durable - next + 1 < self.max_records as u64 {
                let since = *self.live_since.get_or_insert(now);
                if now < since + self.max_age {
                    return Ok(None);
                }
            }
            let (covers, records) = self.read(next, durable).await?;
            self.live_next = Some(covers.end() + 1);
            self.live_since = None;
            if plan::unacked(&self.acked, *covers.start(), *covers.end()) == 0 {
                // Sent and acknowledged before a restart: nothing to do.
                continue;
            }
            let set: Acked = std::iter::once(covers.clone()).collect();
            return Ok(Some(self.queue(BatchKind::Live, covers, set, records)));
        }
    }

    async fn next_backlog(&mut self, now: Instant) -> Result<Option<u64>, StoreError> {
        if now < self.backlog_at {
            return Ok(None);
        }
        let Some(live_next) = self.live_next else {
            return Ok(None);
        };
        if let Some((head, since)) = self.backlog_hold {
            if live_next <= head && since.elapsed() < HOLD_LIMIT {
                return Ok(None);
            }
            self.backlog_hold = None;
        }
        let Some(gap) = plan::first_unsent(
            &self.acked,
            &self.in_flight(),
            self.first_seq,
            live_next.saturating_sub(1),
        ) else {
            return Ok(None);
        };
        let (covers, records) = self.read(*gap.start(), *gap.end()).await?;
        let pause = Duration::from_secs_f64(records.len().max(1) as f64 / self.backlog_rate);
        self.backlog_at = self.backlog_at.max(now) + pause;
        let set: Acked = std::iter::once(covers.clone()).collect();
        Ok(Some(self.queue(BatchKind::Backlog, covers, set, records)))
    }

    /// Reads up to a batch of records from `from..=to`; returns the range
    /// they account for (up to `to` when the read came back short, since
    /// every number up to there was looked at) and those not yet acknowledged.
    async fn read(
        &self,
        from: u64,
        to: u64,
    ) -> Result<(RangeInclusive<u64>, Vec<Record>), StoreError> {
        let reader = self.reader.clone();
        let limit = self.max_records;
        let mut records = off_runtime(move || reader.read_after(from - 1, limit)).await?;
        let full = records.len() == self.max_records;
        records.retain(|r| r.seq <= to);
        let end = match records.last() {
            Some(last) if full && records.len() == self.max_records => last.seq,
            _ => to,
        };
        records.retain(|r| !self.acked.contains(&r.seq));
        Ok((from..=end, records))
    }

    /// Encodes a batch and queues it to be sent; returns its token.
    fn queue(
        &mut self,
        kind: BatchKind,
        range: RangeInclusive<u64>,
        covers: Acked,
        records: Vec<Record>,
    ) -> u64 {
        let id = self.next_batch_id;
        self.next_batch_id += 1;
        let count = records.len();
        let batch = plan::batch(kind, &self.gateway, id, range, records);
        let bytes = Arc::new(wire::encode(&batch));
        telemetry::UPLINK_RECORDS
            .with([kind.name()])
            .increment(count as u64);
        let token = self.next_token;
        self.next_token += 1;
        self.flights.insert(
            token,
            Flight {
                kind,
                covers,
                records: count,
                bytes,
                sent: None,
                attempts: 0,
            },
        );
        token
    }

    /// Writes the acknowledged ranges back to the store. Nothing else runs
    /// in this task meanwhile, so the ranges written are the ranges held.
    async fn persist(&mut self) {
        let store = self.store.clone();
        let acked = self.acked.clone();
        match off_runtime(move || store.set_uplink_acked(&acked)).await {
            Ok(()) => {
                self.acked_dirty = false;
                self.persisted_at = Instant::now();
            }
            Err(err) => {
                telemetry::UPLINK_ERRORS.with(["store"]).increment(1);
                tracing::error!("uplink: cannot record acknowledgements: {err}");
                // Try again a little later rather than on every loop.
                self.persisted_at = Instant::now();
            }
        }
    }
}
