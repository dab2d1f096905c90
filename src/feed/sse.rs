//! `GET /events`: the live Server-Sent Events feed, a reader of the store.
//!
//! Each client is a cursor into the store: it reads what it has not seen in
//! small chunks and then sleeps until the writer announces a new head. Nothing
//! is buffered per client beyond one chunk, so a slow or stuck client costs a
//! socket and a few kilobytes, never the pipeline's time or unbounded memory;
//! it simply falls behind and catches up from the store. A reset's device
//! states come from one shared [`super::snapshot`], encoded one event at a
//! time as the client takes them. A client that stops reading is closed
//! after the stall timeout, and a full feed makes room for a new client
//! ([`super::clients`]).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;

use super::FeedState;
use super::clients::Place;
use super::conn::Conn;
use super::snapshot::Snapshot;
use crate::fix::{Event, Record};

/// Events read from the store per chunk, per client.
const CHUNK: usize = 256;
/// How old a shared snapshot may be for a reset (see [`super::snapshot`]).
const RESET_REUSE: Duration = Duration::from_secs(5);

/// Query parameters of `/events`.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Resume after this sequence number, for clients that cannot set the
    /// `Last-Event-ID` header (the header wins when both are present).
    last_event_id: Option<String>,
}

/// Where a client starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// New client: from the current head on.
    Live,
    /// Reconnecting client: everything after this sequence number.
    After(u64),
}

/// Serves `GET /events`.
pub async fn events(
    State(state): State<FeedState>,
    conn: Option<Extension<Conn>>,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Response {
    let requested = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("\u{fffd}").to_owned())
        .or(query.last_event_id);
    let start = match requested.as_deref().map(str::trim) {
        None | Some("") => Start::Live,
        Some(id) => match id.parse::<u64>() {
            Ok(seq) => Start::After(seq),
            Err(_) => {
                metrics::counter!("fixgate_sse_rejected_total", "reason" => "bad_last_event_id")
                    .increment(1);
                return (
                    StatusCode::BAD_REQUEST,
                    "Last-Event-ID must be a sequence number from this feed\n",
                )
                    .into_response();
            }
        },
    };
    // Served by our own server, a request knows its connection; a router
    // served some other way (tests, embedding) counts as one anonymous peer.
    let (peer, socket) = match conn {
        Some(Extension(conn)) => (conn.peer, conn.state),
        None => (
            std::net::IpAddr::from([0, 0, 0, 0]),
            super::conn::Guarded::new((), state.options.keepalive).1,
        ),
    };
    let place = state.clients.join(peer, socket);
    tracing::debug!(?start, %peer, "feed client connected");
    let keepalive = KeepAlive::new()
        .interval(state.options.keepalive)
        .text("keepalive");
    let mut response = Sse::new(client_stream(state, start, place))
        .keep_alive(keepalive)
        .into_response();
    // Reverse proxies (nginx) would otherwise hold events back in their buffers.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// A reset's device states still to send, from a shared snapshot.
struct Resetting {
    snapshot: Arc<Snapshot>,
    /// The next device, and whether its status was sent already.
    next: usize,
    status_sent: bool,
}

impl Resetting {
    /// The next snapshot event, encoded now; `None` when all are sent.
    fn next_event(&mut self) -> Option<SseEvent> {
        while let Some(device) = self.snapshot.devices.get(self.next) {
            let event = if self.status_sent {
                self.next += 1;
                self.status_sent = false;
                device.position().map(Event::Position)
            } else {
                self.status_sent = true;
                device.status_event().map(Event::Status)
            };
            // Snapshot events carry no id: the client's cursor stays at the reset's.
            if let Some(data) = event.as_ref().and_then(|e| e.to_json().ok()) {
                let name = event.as_ref().map_or("position", Event::name);
                return Some(SseEvent::default().event(name).data(data));
            }
        }
        None
    }
}

/// One client's cursor and the few events it is about to send.
struct Client {
    state: FeedState,
    head: tokio::sync::watch::Receiver<u64>,
    after: u64,
    pending: VecDeque<SseEvent>,
    resetting: Option<Resetting>,
    place: Place,
}

fn client_stream(
    state: FeedState,
    start: Start,
    place: Place,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let retry = SseEvent::default().retry(state.options.retry);
    let client = Client {
        head: state.head.clone(),
        after: 0,
        pending: VecDeque::from([retry]),
        resetting: None,
        place,
        state,
    };
    futures_util::stream::unfold((client, Some(start)), |(mut client, start)| async move {
        if let Some(start) = start {
            client.begin(start).await;
        }
        let event = client.next().await?;
        Some((Ok(event), (client, None)))
    })
}

impl Client {
    /// Positions the cursor; a cursor the store cannot serve gets an explicit
    /// reset and the current snapshot instead of silence.
    async fn begin(&mut self, start: Start) {
        let head = *self.head.borrow_and_update();
        let Start::After(id) = start else {
            self.after = head;
            return;
        };
        let reader = self.state.reader.clone();
        let oldest = match tokio::task::spawn_blocking(move || reader.oldest()).await {
            Ok(Ok(oldest)) => oldest,
            _ => None,
        };
        let reason = if id > head {
            // The store was replaced, or the id belongs to another gateway.
            Some("ahead")
        } else if id < head && oldest.is_none_or(|oldest| id + 1 < oldest) {
            // What the client missed is no longer held.
            Some("behind")
        } else {
            None
        };
        match reason {
            None => self.after = id,
            Some(reason) => self.reset(reason, id, oldest, head).await,
        }
    }

    async fn reset(&mut self, reason: &str, id: u64, oldest: Option<u64>, head: u64) {
        metrics::counter!("fixgate_sse_resets_total", "reason" => reason.to_owned()).increment(1);
        let snapshot = match self.state.snapshots.get_recent(RESET_REUSE).await {
            Ok(snapshot) => Some(snapshot),
            Err(err) => {
                tracing::error!("feed snapshot failed: {err}");
                None
            }
        };
        // The cursor stays at the head read before the snapshot: anything the
        // writer adds meanwhile is sent again from the store rather than
        // skipped (a device's newer state may be in the snapshot, another's not).
        let head = snapshot.as_ref().map_or(head, |s| head.min(s.seq));
        let data = serde_json::json!({
            "reason": reason,
            "last_event_id": id,
            "oldest": oldest,
            "head": head,
        });
        self.pending.push_back(
            SseEvent::default()
                .event("reset")
                .id(head.to_string())
                .data(data.to_string()),
        );
        self.after = head;
        self.resetting = snapshot.map(|snapshot| Resetting {
            snapshot,
            next: 0,
            status_sent: false,
        });
    }

    /// The next event to send, waiting for the writer when caught up; `None`
    /// ends the stream (shutdown, or another client took this one's place).
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if self.state.shutdown.is_cancelled() || self.place.evicted.is_cancelled() {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if let Some(resetting) = self.resetting.as_mut() {
                match resetting.next_event() {
                    Some(event) => return Some(event),
                    // Done: the snapshot and its licence go.
                    None => self.resetting = None,
                }
            }
            let head = *self.head.borrow_and_update();
            if self.after < head {
                self.fill().await;
                continue;
            }
            tokio::select! {
                changed = self.head.changed() => changed.ok()?,
                _ = self.state.shutdown.cancelled() => return None,
                _ = self.place.evicted.cancelled() => return None,
            }
        }
    }

    /// Reads the next chunk after the cursor from the store.
    async fn fill(&mut self) {
        let reader = self.state.reader.clone();
        let after = self.after;
        let records =
            match tokio::task::spawn_blocking(move || reader.read_after(after, CHUNK)).await {
                Ok(Ok(records)) => records,
                Ok(Err(err)) => {
                    tracing::error!("feed read failed: {err}");
                    Vec::new()
                }
                Err(_) => Vec::new(),
            };
        let Some(last) = records.last().map(|r| r.seq) else {
            // Nothing readable up to the head (damaged values were skipped).
            self.after = *self.head.borrow();
            return;
        };
        self.pending.extend(records.iter().filter_map(sse_event));
        self.after = last;
    }
}

/// A stored record as an SSE event: `id:` sequence number, `event:` kind, JSON `data:`.
fn sse_event(record: &Record) -> Option<SseEvent> {
    let data = record.event.to_json().ok()?;
    Some(
        SseEvent::default()
            .id(record.seq.to_string())
            .event(record.event.name())
            .data(data),
    )
}
