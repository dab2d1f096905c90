//! The uplink core in process, against a temporary store and a fake
//! transport, with paused time.
//!
//! The core talks to its transport only through [`ToTransport`] and
//! [`FromTransport`]; here the test is the transport: it says when a
//! connection is up, acknowledges batches, delays or loses
//! acknowledgements, and drops connections. Time is tokio's paused clock:
//! with nothing else to do the runtime jumps to the core's next timer
//! (`max_age`, the backlog's rate, the acknowledgement timeout), so minutes
//! of outage take milliseconds and every interval is exact.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::transport::{FromTransport, ToTransport};
use super::{PERSIST_EVERY, Uplink};
use crate::config::Uplink as UplinkConfig;
use crate::fix::Event;
use crate::store::Writer;
use crate::testing::{TempStore, now_s, positions};
use crate::wire::{self, Batch, BatchKind};

/// The gateway id batches carry.
const GATEWAY: &str = "gw-test";

/// Longest any single wait for the core lasts, in paused time.
const PATIENCE: Duration = Duration::from_secs(600);

fn config() -> UplinkConfig {
    UplinkConfig {
        max_records: 10,
        max_age: Duration::from_millis(500),
        backlog_rate: 20,
        max_in_flight: 2,
        ack_timeout: Duration::from_secs(5),
        ..UplinkConfig::default()
    }
}

/// A batch the core handed to the transport.
#[derive(Debug, Clone)]
struct Sent {
    generation: u64,
    token: u64,
    bytes: Arc<Vec<u8>>,
    batch: Batch,
    at: Instant,
}

impl Sent {
    fn covers(&self) -> RangeInclusive<u64> {
        self.batch.first_seq..=self.batch.last_seq
    }

    fn seqs(&self) -> Vec<u64> {
        self.batch.records.iter().map(|r| r.seq).collect()
    }

    fn kind(&self) -> BatchKind {
        self.batch.kind
    }
}

/// What the core said to the transport.
#[derive(Debug)]
enum Said {
    Sent(Sent),
    Reconnect { generation: u64, at: Instant },
}

/// The core, its store and the fake transport's ends of the channels.
struct Link {
    store: TempStore,
    writer: Writer,
    head: watch::Sender<u64>,
    durable: watch::Sender<u64>,
    to: mpsc::Receiver<ToTransport>,
    from: mpsc::Sender<FromTransport>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
    /// The connection the fake transport has up (0: none yet).
    generation: u64,
}

impl Link {
    async fn new(config: &UplinkConfig) -> Self {
        Self::over(TempStore::new(), config).await
    }

    /// The core over `store`, as `uplink::start` starts it, with the test
    /// as its transport.
    async fn over(store: TempStore, config: &UplinkConfig) -> Self {
        let writer = store.store.writer().expect("the writer");
        let (head, head_rx) = watch::channel(writer.head());
        let (durable, durable_rx) = watch::channel(writer.head());
        let (to_tx, to) = mpsc::channel(config.max_in_flight + 4);
        let (from, from_rx) = mpsc::channel(config.max_in_flight + 4);
        let shutdown = CancellationToken::new();
        let uplink = Uplink::new(config, GATEWAY, store.store.clone(), head_rx, durable_rx)
            .await
            .expect("the uplink starts");
        let task = tokio::spawn(uplink.run(to_tx, from_rx, shutdown.clone()));
        Self {
            store,
            writer,
            head,
            durable,
            to,
            from,
            shutdown,
            task: Some(task),
            generation: 0,
        }
    }

    /// Appends `events` and publishes the new head; `durable` says whether
    /// the flusher has made them durable too. Their sequence numbers.
    fn append(&mut self, events: &[Event], durable: bool) -> RangeInclusive<u64> {
        let first = self.writer.head() + 1;
        let last = self.writer.append(events).expect("append");
        self.head.send_replace(last);
        if durable {
            self.make_durable();
        }
        first..=last
    }

    /// The flusher's part: everything appended is durable now.
    fn make_durable(&self) {
        self.durable.send_replace(self.writer.head());
    }

    /// A new connection is up.
    async fn connect(&mut self) {
        self.generation += 1;
        self.tell(FromTransport::Connected {
            generation: self.generation,
        })
        .await;
    }

    /// The connection is gone.
    async fn lose(&mut self) {
        self.tell(FromTransport::Lost {
            generation: self.generation,
            reason: "the test pulled the cable".into(),
        })
        .await;
    }

    async fn ack(&self, sent: &Sent) {
        self.tell(FromTransport::Acked { token: sent.token }).await;
    }

    /// Tells the core `message` and lets it run (on this runtime's one
    /// thread; no time passes) until it has taken it in, as a transport
    /// would see it: what the core does with a message depends on what the
    /// test does next (where the live stream resumes depends on what is
    /// durable when the connection comes up; a stop right after an ack
    /// would race it).
    async fn tell(&self, message: FromTransport) {
        self.from.send(message).await.expect("the core listens");
        // The channel's capacity comes back when the core receives the
        // message, and it handles it in the same poll. The core may first
        // finish a store read on the blocking pool (a real thread), so the
        // bound is real time; yielding keeps this task runnable, so the
        // paused clock does not move meanwhile.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if self.from.capacity() == self.from.max_capacity() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the core never took in what the transport told it");
    }

    /// What the core says next within `limit` of paused time.
    async fn said(&mut self, limit: Duration) -> Option<Said> {
        let message = tokio::time::timeout(limit, self.to.recv()).await.ok()?;
        let at = Instant::now();
        Some(match message.expect("the core runs") {
            ToTransport::Send {
                generation,
                token,
                bytes,
            } => Said::Sent(Sent {
                generation,
                token,
                batch: wire::decode(&bytes).expect("the core sends batches that decode"),
                bytes,
                at,
            }),
            ToTransport::Reconnect { generation } => Said::Reconnect { generation, at },
        })
    }

    /// The next batch the core sends.
    async fn sent(&mut self) -> Sent {
        match self.said(PATIENCE).await {
            Some(Said::Sent(sent)) => {
                assert_eq!(
                    sent.generation, self.generation,
                    "sent on the connection up"
                );
                assert_eq!(sent.batch.gateway, GATEWAY);
                sent
            }
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    /// Takes batches, acknowledging each at once, until the core has sent
    /// nothing for `quiet` of paused time; them, in order.
    async fn drain(&mut self, quiet: Duration) -> Vec<Sent> {
        let mut all = Vec::new();
        while let Some(said) = self.said(quiet).await {
            let Said::Sent(sent) = said else {
                panic!("a reconnect while every batch was acknowledged at once");
            };
            self.ack(&sent).await;
            all.push(sent);
        }
        all
    }

    /// Stops the core (as shutdown does) and waits for it; the store.
    async fn stop(mut self) -> TempStore {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("the core stops")
                .expect("the core did not panic");
        }
        self.store
    }
}

/// Every sequence number in `batches`' records, in the order sent.
fn seqs(batches: &[Sent]) -> Vec<u64> {
    batches.iter().flat_map(Sent::seqs).collect()
}

#[tokio::test(start_paused = true)]
async fn batches_cover_what_is_durable_in_order_within_the_window() {
    let config = config();
    let mut link = Link::new(&config).await;
    link.connect().await;
    // Stored but not durable yet: nothing may go up (a crash could hand
    // these numbers out again).
    let stored = link.append(&positions(&["a", "b"], 25, now_s()), false);
    assert!(
        link.said(Duration::from_secs(30)).await.is_none(),
        "sent before it was durable"
    );

    link.make_durable();
    let first = link.sent().await;
    let second = link.sent().await;
    assert_eq!(first.kind(), BatchKind::Live);
    assert_eq!(first.covers(), *stored.start()..=stored.start() + 9);
    assert_eq!(second.covers(), stored.start() + 10..=stored.start() + 19);
    assert_eq!(
        first.seqs(),
        first.covers().collect::<Vec<_>>(),
        "every record covered is in it"
    );
    // Two in flight, unacknowledged: the window is full.
    assert!(
        link.said(config.ack_timeout / 2).await.is_none(),
        "past max_in_flight"
    );

    link.ack(&first).await;
    let acked_at = Instant::now();
    // The last five are fewer than a batch: they wait max_age.
    let third = link.sent().await;
    assert_eq!(third.covers(), stored.start() + 20..=*stored.end());
    assert_eq!(
        third.at - acked_at,
        config.max_age,
        "a short batch closes after max_age"
    );
    link.ack(&second).await;
    link.ack(&third).await;
    assert_eq!(
        seqs(&[first, second, third]),
        stored.collect::<Vec<_>>(),
        "each record once, in order"
    );
    link.stop().await;
}

#[tokio::test(start_paused = true)]
async fn unacknowledged_batches_go_again_after_a_reconnect_and_acknowledged_ones_do_not() {
    let config = config();
    let mut link = Link::new(&config).await;
    link.connect().await;
    let stored = link.append(&positions(&["a"], 30, now_s()), true);
    let first = link.sent().await;
    let second = link.sent().await;
    link.ack(&first).await;
    let third = link.sent().await;
    // Acknowledgements lost with the connection.
    link.lose().await;
    assert!(
        link.said(Duration::from_secs(60)).await.is_none(),
        "nothing is sent while the connection is down"
    );
    link.connect().await;
    let again = [link.sent().await, link.sent().await];
    for (old, new) in [&second, &third].into_iter().zip(&again) {
        assert_eq!(new.bytes, old.bytes, "the same batch, byte for byte");
        assert_eq!(new.generation, 2, "on the new connection");
    }
    link.ack(&again[0]).await;
    link.ack(&again[1]).await;
    let rest = link.drain(Duration::from_secs(60)).await;
    assert!(rest.is_empty(), "all 30 were in three batches: {rest:?}");
    let mut delivered = seqs(&[first, again[0].clone(), again[1].clone()]);
    delivered.sort_unstable();
    assert_eq!(delivered, stored.collect::<Vec<_>>());
    link.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_late_ack_is_waited_for_but_no_ack_within_ack_timeout_drops_the_connection() {
    let config = config();
    let mut link = Link::new(&config).await;
    link.connect().await;
    link.append(&positions(&["a"], 10, now_s()), true);
    let slow = link.sent().await;
    // Acknowledged a moment before the timeout: the connection stays.
    tokio::time::sleep(config.ack_timeout - Duration::from_millis(100)).await;
    link.ack(&slow).await;
    link.append(&positions(&["b"], 10, now_s()), true);
    let unanswered = link.sent().await;
    match link.said(PATIENCE).await {
        Some(Said::Reconnect { generation, at }) => {
            assert_eq!(generation, 1);
            assert_eq!(
                at - unanswered.at,
                config.ack_timeout,
                "dropped exactly at ack_timeout"
            );
        }
        other => panic!("expected a reconnect, got {other:?}"),
    }
    // The transport makes a new connection; the batch goes again on it.
    link.connect().await;
    let again = link.sent().await;
    assert_eq!(again.bytes, unanswered.bytes);
    assert_eq!(again.generation, 2);
    link.ack(&again).await;
    link.stop().await;
}

#[tokio::test(start_paused = true)]
async fn after_an_outage_current_positions_go_first_then_live_then_the_backlog_at_its_rate() {
    let config = config();
    let mut link = Link::new(&config).await;
    link.connect().await;
    let start = now_s();
    let before = link.append(&positions(&["a", "b", "c"], 30, start), true);
    let steady = link.drain(Duration::from_secs(10)).await;
    assert_eq!(seqs(&steady), before.clone().collect::<Vec<_>>());

    // Ten minutes down while fixes keep coming.
    link.lose().await;
    let later = start + chrono::Duration::seconds(60);
    let outage = link.append(&positions(&["a", "b", "c"], 300, later), true);
    tokio::time::sleep(Duration::from_secs(600)).await;
    link.connect().await;

    // First each device's latest position: a snapshot.
    let snapshot = link.sent().await;
    assert_eq!(snapshot.kind(), BatchKind::Snapshot);
    let latest: Vec<u64> = (0..3).map(|i| outage.end() - 2 + i).collect();
    assert_eq!(snapshot.seqs(), latest, "one record per device, its newest");
    // Nothing newer is waiting for the live stream, so the backlog starts.
    let mut backlog = vec![link.sent().await];
    assert_eq!(backlog[0].kind(), BatchKind::Backlog);
    // The window is full; meanwhile the backlog's next batch falls due and
    // new fixes arrive: with room for one batch, the live one goes first.
    assert!(
        link.said(Duration::from_secs(1)).await.is_none(),
        "past max_in_flight"
    );
    let fresh = link.append(
        &positions(&["a", "b", "c"], 10, later + chrono::Duration::seconds(700)),
        true,
    );
    link.ack(&snapshot).await;
    let first_live = link.sent().await;
    assert_eq!(
        first_live.kind(),
        BatchKind::Live,
        "live waited behind the backlog"
    );
    link.ack(&first_live).await;
    link.ack(&backlog[0]).await;
    let mut live = vec![first_live];
    for sent in link.drain(Duration::from_secs(30)).await {
        match sent.kind() {
            BatchKind::Live => live.push(sent),
            BatchKind::Backlog => backlog.push(sent),
            BatchKind::Snapshot => panic!("a second snapshot"),
        }
    }
    assert_eq!(seqs(&live), fresh.collect::<Vec<_>>());
    // The backlog: everything the outage left, oldest first, once, minus
    // what the snapshot carried, its positions marked historic.
    let mut expected: Vec<u64> = outage.clone().filter(|s| !latest.contains(s)).collect();
    expected.sort_unstable();
    assert_eq!(seqs(&backlog), expected);
    for batch in &backlog {
        for record in &batch.batch.records {
            assert!(
                matches!(&record.event, Event::Position(p) if p.historic),
                "backlog positions are historic"
            );
        }
    }
    // At backlog_rate: each batch waits its records' share of a second.
    for pair in backlog.windows(2) {
        let gap = pair[1].at - pair[0].at;
        let share = Duration::from_secs_f64(
            pair[0].batch.records.len() as f64 / f64::from(config.backlog_rate),
        );
        assert!(
            gap >= share,
            "backlog batches {gap:?} apart, under {share:?} at {}/s",
            config.backlog_rate
        );
    }
    let took = backlog.last().unwrap().at - backlog[0].at;
    let floor =
        Duration::from_secs_f64((expected.len() - 10) as f64 / f64::from(config.backlog_rate));
    assert!(
        took >= floor,
        "the backlog drained in {took:?}, under {floor:?}"
    );
    link.stop().await;
}

#[tokio::test(start_paused = true)]
async fn acknowledged_ranges_are_persisted_and_a_restart_sends_only_what_was_not_acknowledged() {
    let config = config();
    let mut link = Link::new(&config).await;
    link.connect().await;
    let stored = link.append(&positions(&["a"], 30, now_s()), true);
    let first = link.sent().await;
    let second = link.sent().await;
    link.ack(&first).await;
    // Written back to the store within PERSIST_EVERY.
    tokio::time::sleep(PERSIST_EVERY + Duration::from_millis(10)).await;
    let acked = link.store.store.uplink_acked().unwrap();
    assert!(acked.contains(stored.start()) && acked.contains(first.covers().end()));
    assert!(!acked.contains(second.covers().start()));
    link.ack(&second).await;
    // Stopped before the next write-back: written on the way out.
    let store = link.stop().await;
    let acked = store.store.uplink_acked().unwrap();
    assert!(acked.contains(second.covers().end()));

    // The next start resumes after them: only the last ten go up.
    let mut link = Link::over(store, &config).await;
    link.connect().await;
    let after = link.drain(Duration::from_secs(30)).await;
    assert_eq!(
        seqs(&after),
        (stored.start() + 20..=*stored.end()).collect::<Vec<_>>()
    );
    assert!(after.iter().all(|s| s.kind() == BatchKind::Live));
    link.stop().await;
}
