//! `GET /events`: the live Server-Sent Events feed, a reader of the store.
//!
//! Live clients read the shared [`super::ring`] of recent frames, each event
//! encoded once for all of them; a client behind the ring (catching up by
//! `Last-Event-ID`, or slow) is a cursor into the store that reads and
//! encodes a chunk at a time and joins the ring once it reaches it. Nothing
//! is buffered per client beyond one chunk, so a slow or stuck client costs
//! a socket and a few kilobytes, never the pipeline's time or unbounded
//! memory. A reset's device states come from one shared
//! [`super::snapshot`], encoded one event at a time as the client takes
//! them. Filters ([`super::filter`]) and coalescing ([`super::coalesce`])
//! apply to every path alike. A client that stops reading is closed after
//! the stall timeout, and a full feed makes room for a new client
//! ([`super::clients`]).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::time::Instant;

use super::FeedState;
use super::clients::Place;
use super::coalesce::Coalescer;
use super::conn::Conn;
use super::filter::{Facts, Filter, FilterQuery, Kind};
use super::ring::{Frame, Take};
use super::snapshot::Snapshot;
use crate::fix::Event;
use crate::telemetry;

/// Events read from the store per chunk, per client behind the ring.
const CHUNK: usize = 256;
/// Frames taken from the ring at a time.
const RING_TAKE: usize = 64;
/// How old a shared snapshot may be for a reset (see [`super::snapshot`]).
const RESET_REUSE: Duration = Duration::from_secs(5);
/// The keep-alive comment, as `axum`'s keep-alive wrote it.
const KEEPALIVE: &[u8] = b":keepalive\n\n";

/// Query parameters of `/events`.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Resume after this sequence number, for clients that cannot set the
    /// `Last-Event-ID` header (the header wins when both are present).
    last_event_id: Option<String>,
    #[serde(flatten)]
    filter: FilterQuery,
}

/// Where a client starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// New client: from the current head on.
    Live,
    /// Reconnecting client: everything after this sequence number.
    After(u64),
}

/// A `400` for a bad parameter, counted.
pub fn bad_request(reason: &'static str, detail: String) -> Response {
    telemetry::SSE_REJECTED.with([reason]).increment(1);
    (StatusCode::BAD_REQUEST, format!("{detail}\n")).into_response()
}

/// Serves `GET /events`.
pub async fn events(
    State(state): State<FeedState>,
    conn: Option<Extension<Conn>>,
    grant: Option<Extension<crate::access::Grant>>,
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
                return bad_request(
                    "bad_last_event_id",
                    "Last-Event-ID must be a sequence number from this feed".into(),
                );
            }
        },
    };
    let filter = match state.filter(&query.filter, grant.as_deref()) {
        Ok(filter) => filter,
        Err(why) => return bad_request("bad_filter", why),
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
    let client = Client::new(state, filter, place);
    let stream =
        futures_util::stream::unfold((client, Some(start)), |(mut client, start)| async move {
            if let Some(start) = start {
                client.begin(start).await;
            }
            let bytes = client.next().await?;
            Some((Ok::<_, Infallible>(bytes), (client, None)))
        });
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Reverse proxies (nginx) would otherwise hold events back in their buffers.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// A reset's device states still to send, from a shared snapshot.
struct Resetting {
    snapshot: Arc<Snapshot>,
    /// The next device, and whether its status was sent already.
    next: usize,
    status_sent: bool,
}

/// An SSE event without an id (snapshot events: the client's cursor stays
/// at the reset's).
fn unnumbered(event: &Event) -> Option<Bytes> {
    let data = event.to_json().ok()?;
    Some(Bytes::from(format!(
        "event: {}\ndata: {data}\n\n",
        event.name()
    )))
}

/// One client's cursor, filter and the few events it is about to send.
struct Client {
    state: FeedState,
    ring_head: tokio::sync::watch::Receiver<u64>,
    after: u64,
    filter: Filter,
    coalescer: Option<Coalescer>,
    pending: VecDeque<Bytes>,
    resetting: Option<Resetting>,
    place: Place,
    /// When the last bytes went out (keep-alives fill the silence).
    last_sent: Instant,
}

impl Client {
    fn new(state: FeedState, filter: Filter, place: Place) -> Self {
        let retry = Bytes::from(format!("retry: {}\n\n", state.options.retry.as_millis()));
        Self {
            ring_head: state.ring.subscribe(),
            after: 0,
            coalescer: filter.max_rate.map(Coalescer::new),
            filter,
            pending: VecDeque::from([retry]),
            resetting: None,
            place,
            last_sent: Instant::now(),
            state,
        }
    }

    /// Positions the cursor; a cursor the store cannot serve gets an explicit
    /// reset and the current snapshot instead of silence.
    async fn begin(&mut self, start: Start) {
        let head = *self.state.head.borrow();
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

    async fn reset(&mut self, reason: &'static str, id: u64, oldest: Option<u64>, head: u64) {
        telemetry::SSE_RESETS.with([reason]).increment(1);
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
        self.pending.push_back(Bytes::from(format!(
            "id: {head}\nevent: reset\ndata: {data}\n\n"
        )));
        self.after = head;
        self.resetting = snapshot.map(|snapshot| Resetting {
            snapshot,
            next: 0,
            status_sent: false,
        });
    }

    /// The next snapshot event that passes the filter; `None` when all are sent.
    fn next_snapshot_event(&mut self) -> Option<Bytes> {
        let resetting = self.resetting.as_mut()?;
        while let Some(device) = resetting.snapshot.devices.get(resetting.next) {
            let event = if resetting.status_sent {
                resetting.next += 1;
                resetting.status_sent = false;
                device.position().map(Event::Position)
            } else {
                resetting.status_sent = true;
                device.status_event().map(Event::Status)
            };
            let Some(event) = event else { continue };
            let group = self.state.groups.of(&device.device);
            let facts = facts(&event, group.as_ref());
            if self.filter.passes(facts) {
                if let Some(bytes) = unnumbered(&event) {
                    return Some(bytes);
                }
            }
        }
        // Done: the snapshot goes.
        self.resetting = None;
        None
    }

    /// Queues `frame` if it passes the filter (and the coalescing); moves the
    /// cursor past it either way.
    fn offer(&mut self, frame: &Arc<Frame>, now: Instant) {
        self.after = frame.seq;
        if !self.filter.passes(frame.facts()) {
            return;
        }
        if frame.kind == Kind::Position {
            if let Some(coalescer) = self.coalescer.as_mut() {
                if !coalescer.offer(frame, now) {
                    return;
                }
            }
        }
        telemetry::SSE_EVENTS_SENT.increment(1);
        self.pending.push_back(frame.bytes.clone());
    }

    /// The next bytes to send, waiting for the writer when caught up; `None`
    /// ends the stream (shutdown, or another client took this one's place).
    async fn next(&mut self) -> Option<Bytes> {
        let bytes = self.next_unsent().await?;
        self.last_sent = Instant::now();
        Some(bytes)
    }

    async fn next_unsent(&mut self) -> Option<Bytes> {
        loop {
            if self.state.shutdown.is_cancelled() || self.place.evicted.is_cancelled() {
                return None;
            }
            if let Some(bytes) = self.pending.pop_front() {
                return Some(bytes);
            }
            if let Some(bytes) = self.next_snapshot_event() {
                return Some(bytes);
            }
            let now = Instant::now();
            if let Some(coalescer) = self.coalescer.as_mut() {
                for frame in coalescer.due(now) {
                    // Sent after later events: under the cursor's id, so
                    // that ids only grow.
                    telemetry::SSE_EVENTS_SENT.increment(1);
                    self.pending.push_back(frame.with_id(self.after));
                }
                if !self.pending.is_empty() {
                    continue;
                }
            }
            match self.state.ring.take(self.after, RING_TAKE) {
                Take::Frames(frames, _) if !frames.is_empty() => {
                    for frame in &frames {
                        self.offer(frame, now);
                    }
                    continue;
                }
                Take::Frames(_, ring_head) => {
                    // Holes up to the ring's head as it was when it had no
                    // frame after the cursor (budget deletions, damaged
                    // values skipped) need no waiting; a head read apart
                    // from the frames could skip a push in between.
                    if self.after < ring_head {
                        self.after = ring_head;
                    }
                }
                Take::Behind(base) => {
                    self.fill_from_store(now, base).await;
                    continue;
                }
            }
            let keepalive = self.last_sent + self.state.options.keepalive;
            let coalesced = self
                .coalescer
                .as_ref()
                .and_then(Coalescer::next_due)
                .unwrap_or(keepalive);
            tokio::select! {
                changed = self.ring_head.changed() => changed.ok()?,
                _ = tokio::time::sleep_until(keepalive) => return Some(Bytes::from_static(KEEPALIVE)),
                _ = tokio::time::sleep_until(coalesced), if coalesced < keepalive => {}
                _ = self.state.shutdown.cancelled() => return None,
                _ = self.place.evicted.cancelled() => return None,
            }
        }
    }

    /// Reads the next chunk after the cursor from the store (a client behind
    /// the ring), encoding it for this client alone.
    async fn fill_from_store(&mut self, now: Instant, base: u64) {
        let reader = self.state.reader.clone();
        let groups = self.state.groups.clone();
        let after = self.after;
        let read = tokio::task::spawn_blocking(move || {
            reader.read_after(after, CHUNK).map(|records| {
                records
                    .iter()
                    .filter_map(|r| Frame::encode(r, &groups))
                    .map(Arc::new)
                    .collect::<Vec<_>>()
            })
        })
        .await;
        let frames = match read {
            Ok(Ok(frames)) => frames,
            Ok(Err(err)) => {
                tracing::error!("feed read failed: {err}");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        if frames.is_empty() {
            // Nothing readable up to the ring's base (damaged values were
            // skipped, or the read failed): join the ring there, which has
            // everything after it.
            self.after = self.after.max(base);
            return;
        }
        for frame in &frames {
            self.offer(frame, now);
        }
    }
}

/// What the filter looks at for a snapshot event.
fn facts<'a>(event: &'a Event, group: Option<&'a crate::fix::GroupId>) -> Facts<'a> {
    let (kind, point) = match event {
        Event::Position(p) => (Kind::Position, Some((p.fix.lon, p.fix.lat))),
        Event::Status(_) => (Kind::Status, None),
        Event::Geofence(g) => (Kind::Geofence, Some((g.lon, g.lat))),
    };
    Facts {
        kind,
        device: event.device(),
        group,
        point,
    }
}
