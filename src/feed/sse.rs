//! `GET /events`: the live Server-Sent Events feed, a reader of the store.
//!
//! Each client is a cursor into the store: it reads what it has not seen in
//! small chunks and then sleeps until the writer announces a new head. Nothing
//! is buffered per client beyond one chunk, so a slow or stuck client costs a
//! socket and a few kilobytes, never the pipeline's time or unbounded memory;
//! it simply falls behind and catches up from the store.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;

use super::FeedState;
use crate::fix::{Event, Record};

/// Events read from the store per chunk, per client.
const CHUNK: usize = 256;

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
    let Ok(permit) = state.clients.clone().try_acquire_owned() else {
        metrics::counter!("fixgate_sse_rejected_total", "reason" => "too_many_clients")
            .increment(1);
        let mut response =
            (StatusCode::SERVICE_UNAVAILABLE, "too many feed clients\n").into_response();
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static("5"));
        return response;
    };
    tracing::debug!(?start, "feed client connected");
    let keepalive = KeepAlive::new()
        .interval(state.options.keepalive)
        .text("keepalive");
    let mut response = Sse::new(client_stream(state, start, permit))
        .keep_alive(keepalive)
        .into_response();
    // Reverse proxies (nginx) would otherwise hold events back in their buffers.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Counts a connected client for as long as its stream lives.
struct Connected {
    _permit: OwnedSemaphorePermit,
}

impl Connected {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!("fixgate_sse_clients").increment(1.0);
        Self { _permit: permit }
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        metrics::gauge!("fixgate_sse_clients").decrement(1.0);
        tracing::debug!("feed client left");
    }
}

/// One client's cursor and the few events it is about to send.
struct Client {
    state: FeedState,
    head: tokio::sync::watch::Receiver<u64>,
    after: u64,
    pending: VecDeque<SseEvent>,
    _connected: Connected,
}

fn client_stream(
    state: FeedState,
    start: Start,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let retry = SseEvent::default().retry(state.options.retry);
    let client = Client {
        head: state.head.clone(),
        after: 0,
        pending: VecDeque::from([retry]),
        _connected: Connected::new(permit),
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
        let reader = self.state.reader.clone();
        let devices = match tokio::task::spawn_blocking(move || reader.devices()).await {
            Ok(Ok(devices)) => devices,
            Ok(Err(err)) => {
                tracing::error!("feed snapshot failed: {err}");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        // The cursor stays at the head read before the snapshot: anything the
        // writer adds meanwhile is sent again from the store rather than
        // skipped (a device's newer state may be in the snapshot, another's not).
        self.after = head;
        for device in devices {
            // Snapshot events carry no id: the client's cursor stays at the reset's.
            let events = [
                device.status_event().map(Event::Status),
                device.position().map(Event::Position),
            ];
            for event in events.into_iter().flatten() {
                if let Ok(data) = event.to_json() {
                    self.pending
                        .push_back(SseEvent::default().event(event.name()).data(data));
                }
            }
        }
    }

    /// The next event to send, waiting for the writer when caught up; `None`
    /// ends the stream (shutdown).
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.state.shutdown.is_cancelled() {
                return None;
            }
            let head = *self.head.borrow_and_update();
            if self.after < head {
                self.fill().await;
                continue;
            }
            tokio::select! {
                changed = self.head.changed() => changed.ok()?,
                _ = self.state.shutdown.cancelled() => return None,
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
