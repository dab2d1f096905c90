//! `GET /events` in process: the feed's router called directly (no socket)
//! over a temporary store, its body read frame by frame, with paused time.
//!
//! What is checked is what a depot screen relies on: a `Last-Event-ID`
//! catches up from the store and then follows live events from the shared
//! ring without a gap or a repeat where the two meet; an id the store
//! cannot serve gets a `reset` and the device snapshot; filters apply on
//! every path; keep-alives fill silence at the configured interval. With
//! nothing else to do the runtime jumps to the feed's next timer, so a
//! keep-alive interval passes at once and is measured exactly.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use super::{FeedOptions, FeedState, router};
use crate::fix::{Event, Presence, Status};
use crate::pipeline::WriterHealth;
use crate::store::Writer;
use crate::testing::{TempStore, id, now_s, positions};

/// Longest a read waits for the next frame, in paused time (past every
/// keep-alive interval used here, so a missing frame fails the test).
const PATIENCE: Duration = Duration::from_secs(120);

fn options(keepalive: Duration) -> FeedOptions {
    FeedOptions {
        keepalive,
        retry: Duration::from_millis(1500),
        max_clients: 16,
        max_snapshots: 4,
    }
}

/// The feed over a store the test writes to as the pipeline would.
struct Feed {
    store: TempStore,
    writer: Writer,
    head: watch::Sender<u64>,
    router: axum::Router,
    shutdown: CancellationToken,
}

impl Feed {
    /// A feed whose store already holds `events` (older than its ring).
    fn with(events: &[Event], options: FeedOptions) -> Self {
        let store = TempStore::new();
        let mut writer = store.store.writer().expect("the writer");
        if !events.is_empty() {
            writer.append(events).expect("append");
        }
        let (head, head_rx) = watch::channel(writer.head());
        let shutdown = CancellationToken::new();
        let state = FeedState::new(
            store.store.reader(),
            head_rx,
            options,
            Arc::new(WriterHealth::default()),
            None,
            shutdown.clone(),
        );
        tokio::spawn(state.fan_out());
        Self {
            store,
            writer,
            head,
            router: router(state),
            shutdown,
        }
    }

    /// Appends `events` as the writer does (then wakes the readers); their
    /// sequence numbers.
    fn append(&mut self, events: &[Event]) -> RangeInclusive<u64> {
        let first = self.writer.head() + 1;
        let last = self.writer.append(events).expect("append");
        self.head.send_replace(last);
        first..=last
    }

    fn head(&self) -> u64 {
        self.writer.head()
    }

    /// `GET /events{query}`, with a `Last-Event-ID` header if given.
    async fn connect(&self, query: &str, last_event_id: Option<u64>) -> Client {
        let mut request = Request::builder().uri(format!("/events{query}"));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let request = request.body(Body::empty()).expect("a request");
        let response = self
            .router
            .clone()
            .call(request)
            .await
            .expect("the router answers");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "an event stream"
        );
        Client {
            body: response.into_body(),
            buffer: String::new(),
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// One block of the stream.
#[derive(Debug, Default, Clone, PartialEq)]
struct Sse {
    id: Option<u64>,
    event: Option<String>,
    data: String,
    comment: Option<String>,
    retry: Option<u64>,
    /// When it arrived (paused time).
    at: Option<Instant>,
}

impl Sse {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).expect("JSON data")
    }

    fn is(&self, kind: &str) -> bool {
        self.event.as_deref() == Some(kind)
    }
}

/// The reading end of one `/events` response.
struct Client {
    body: Body,
    buffer: String,
}

impl Client {
    /// The next block (event, comment or `retry:`), within [`PATIENCE`].
    async fn next(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return parse(&block);
            }
            let frame = tokio::time::timeout(PATIENCE, self.body.frame())
                .await
                .expect("a frame within the patience")
                .expect("the stream goes on")
                .expect("no body error");
            if let Ok(data) = frame.into_data() {
                self.buffer
                    .push_str(std::str::from_utf8(&data).expect("UTF-8"));
            }
        }
    }

    /// The next real event, skipping keep-alives and `retry:`.
    async fn event(&mut self) -> Sse {
        loop {
            let sse = self.next().await;
            if sse.event.is_some() {
                return sse;
            }
        }
    }

    /// The next `n` real events.
    async fn events(&mut self, n: usize) -> Vec<Sse> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.push(self.event().await);
        }
        out
    }
}

fn parse(block: &str) -> Sse {
    let mut sse = Sse {
        at: Some(Instant::now()),
        ..Sse::default()
    };
    // The blank line that ends the block is no field (read as one, it
    // would be an empty comment overwriting the block's own).
    for line in block.lines().filter(|l| !l.is_empty()) {
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "" => sse.comment = Some(value.to_owned()),
            "id" => sse.id = Some(value.parse().expect("a numeric id")),
            "event" => sse.event = Some(value.to_owned()),
            "retry" => sse.retry = value.parse().ok(),
            "data" => sse.data.push_str(value),
            other => panic!("unknown field {other:?} in {block:?}"),
        }
    }
    sse
}

/// Each device online, then `n` positions of them round-robin.
fn fleet(devices: &[&str], n: usize) -> Vec<Event> {
    let start = now_s();
    let mut events: Vec<Event> = devices
        .iter()
        .map(|d| {
            Event::Status(Status {
                device: id(d),
                status: Presence::Online,
                time: start,
            })
        })
        .collect();
    events.extend(positions(devices, n, start));
    events
}

#[tokio::test(start_paused = true)]
async fn last_event_id_catches_up_from_the_store_then_follows_live_events_without_gap_or_repeat() {
    // Far more than one chunk of the store (256) behind the ring.
    let mut feed = Feed::with(
        &fleet(&["a", "b", "c"], 700),
        options(Duration::from_secs(15)),
    );
    let head = feed.head();
    let from = head - 600;
    let mut client = feed.connect("", Some(from)).await;
    let first = client.next().await;
    assert_eq!(first.retry, Some(1500), "the reconnect delay comes first");
    let caught_up = client.events(600).await;
    let ids: Vec<u64> = caught_up.iter().map(|e| e.id.expect("an id")).collect();
    assert_eq!(ids, (from + 1..=head).collect::<Vec<_>>());
    assert!(caught_up.iter().all(|e| e.is("position")));

    // Live now: new events reach it through the ring, the first right after
    // the last it caught up with.
    let live = feed.append(&positions(
        &["a", "b"],
        40,
        now_s() + chrono::Duration::seconds(3600),
    ));
    let got = client.events(40).await;
    let ids: Vec<u64> = got.iter().map(|e| e.id.expect("an id")).collect();
    assert_eq!(ids, live.collect::<Vec<_>>());
    // Each event's data is the stored record's JSON.
    let stored = feed.store.store.reader().read_after(head, 1).unwrap();
    assert_eq!(
        got[0].json(),
        serde_json::from_str::<serde_json::Value>(&stored[0].event.to_json().unwrap()).unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn an_id_ahead_of_the_store_gets_a_reset_with_the_snapshot_then_live_events() {
    let mut feed = Feed::with(&fleet(&["a", "b"], 20), options(Duration::from_secs(15)));
    let head = feed.head();
    let oldest = feed.store.store.reader().oldest().unwrap().unwrap();
    // An id from another gateway's store, or from before this one was replaced.
    let mut client = feed.connect("", Some(head + 1000)).await;
    let reset = client.event().await;
    assert!(reset.is("reset"), "{reset:?}");
    assert_eq!(reset.id, Some(head), "the cursor moves to the head");
    let v = reset.json();
    assert_eq!(v["reason"], "ahead");
    assert_eq!(v["last_event_id"], head + 1000);
    assert_eq!(v["oldest"], oldest);
    assert_eq!(v["head"], head);
    // The snapshot: each device's status and live position, unnumbered (the
    // cursor stays at the reset's id), in device order.
    let snapshot = client.events(4).await;
    let shape: Vec<(String, String)> = snapshot
        .iter()
        .map(|e| {
            assert_eq!(e.id, None, "snapshot events carry no id: {e:?}");
            (
                e.event.clone().unwrap(),
                e.json()["device"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let pair = |k: &str, d: &str| (k.to_owned(), d.to_owned());
    assert_eq!(
        shape,
        vec![
            pair("status", "a"),
            pair("position", "a"),
            pair("status", "b"),
            pair("position", "b")
        ]
    );
    let stored = feed.store.store.reader().device(&id("b")).unwrap().unwrap();
    assert_eq!(
        snapshot[3].json()["time"],
        crate::fix::time_ms::format(&stored.fix.unwrap().time)
    );
    // Then live, from the reset's id on.
    let live = feed.append(&positions(
        &["a"],
        1,
        now_s() + chrono::Duration::seconds(3600),
    ));
    let next = client.event().await;
    assert_eq!(next.id, Some(*live.start()));
}

#[tokio::test(start_paused = true)]
async fn an_id_older_than_the_store_holds_gets_a_reset_behind() {
    let feed = Feed::with(&fleet(&["a"], 5), options(Duration::from_secs(15)));
    let head = feed.head();
    let oldest = feed.store.store.reader().oldest().unwrap().unwrap();
    let mut client = feed.connect("", Some(oldest - 10)).await;
    let reset = client.event().await;
    assert!(reset.is("reset"), "{reset:?}");
    let v = reset.json();
    assert_eq!(v["reason"], "behind", "{v}");
    assert_eq!(v["oldest"], oldest);
    assert_eq!(reset.id, Some(head));
    // One before the oldest is not behind: nothing was missed.
    let mut client = feed.connect("", Some(oldest - 1)).await;
    let first = client.event().await;
    assert_eq!(first.id, Some(oldest), "{first:?}");
}

#[tokio::test(start_paused = true)]
async fn filters_apply_to_catch_up_to_the_reset_snapshot_and_to_live_events() {
    let mut feed = Feed::with(
        &fleet(&["a", "b", "c"], 300),
        options(Duration::from_secs(15)),
    );
    let head = feed.head();

    // Catch-up and live, one device.
    let mut only_b = feed.connect("?device=b", Some(head - 30)).await;
    let caught_up = only_b.events(10).await;
    assert!(
        caught_up.iter().all(|e| e.json()["device"] == "b"),
        "{caught_up:?}"
    );
    let live = feed.append(&positions(
        &["a", "b", "c"],
        6,
        now_s() + chrono::Duration::seconds(3600),
    ));
    let got = only_b.events(2).await;
    assert!(got.iter().all(|e| e.json()["device"] == "b"));
    assert!(got.iter().all(|e| live.contains(&e.id.unwrap())));

    // A reset's snapshot, statuses only.
    let mut statuses = feed.connect("?types=status", Some(feed.head() + 5)).await;
    let reset = statuses.event().await;
    assert!(
        reset.is("reset"),
        "the reset itself always comes: {reset:?}"
    );
    let snapshot = statuses.events(3).await;
    assert!(snapshot.iter().all(|e| e.is("status")), "{snapshot:?}");
    let devices: Vec<&str> = snapshot.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(devices.len(), 3);
    // Positions never come on this stream; a status does.
    feed.append(&positions(
        &["a"],
        1,
        now_s() + chrono::Duration::seconds(7200),
    ));
    let status = feed.append(&[Event::Status(Status {
        device: id("c"),
        status: Presence::Offline,
        time: now_s(),
    })]);
    let next = statuses.event().await;
    assert_eq!(next.id, Some(*status.start()), "{next:?}");
    assert_eq!(next.json()["status"], "offline");
}

#[tokio::test(start_paused = true)]
async fn keepalives_fill_silence_at_the_configured_interval_and_an_event_restarts_it() {
    let keepalive = Duration::from_secs(15);
    let mut feed = Feed::with(&fleet(&["a"], 3), options(keepalive));
    let mut client = feed.connect("", None).await;
    let retry = client.next().await;
    assert_eq!(retry.retry, Some(1500));
    let t0 = retry.at.unwrap();

    let first = client.next().await;
    assert_eq!(first.comment.as_deref(), Some("keepalive"), "{first:?}");
    assert_eq!(first.at.unwrap() - t0, keepalive, "one interval of silence");
    let second = client.next().await;
    assert_eq!(second.comment.as_deref(), Some("keepalive"));
    assert_eq!(second.at.unwrap() - first.at.unwrap(), keepalive);

    // An event ten seconds on; the next keep-alive comes a whole interval
    // after it, not after the last keep-alive.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let live = feed.append(&positions(
        &["a"],
        1,
        now_s() + chrono::Duration::seconds(60),
    ));
    let event = client.next().await;
    assert_eq!(event.id, Some(*live.start()));
    let after = client.next().await;
    assert_eq!(after.comment.as_deref(), Some("keepalive"));
    assert_eq!(after.at.unwrap() - event.at.unwrap(), keepalive);
}
