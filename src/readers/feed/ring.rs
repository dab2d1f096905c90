//! The shared fan-out: each new event is read from the store and encoded
//! once, into a bounded ring of recent frames that every live client reads
//! from. A client that falls behind the ring reads the store by its own
//! cursor (as every client used to) and joins the ring again once it has
//! caught up to it, so nothing is lost and the memory stays that of the ring.
//!
//! The ring is a cache of the store, never a second truth: it is filled by
//! one task that follows the writer's head, and every frame carries the
//! sequence number it was stored under.

use std::collections::VecDeque;
use std::sync::{Arc, PoisonError, RwLock};

use axum::body::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::filter::{Facts, Kind};
use crate::fix::{DeviceId, Event, GroupId, Record};
use crate::groups::Groups;
use crate::store::Reader;
use crate::telemetry;

/// Frames the ring holds at most.
pub const CAPACITY: usize = 8192;
/// Bytes of frames the ring holds at most.
pub const MAX_BYTES: usize = 4 * 1024 * 1024;
/// Records read from the store at a time while filling.
const READ: usize = 1024;

/// One event encoded for SSE, with what filters need to know about it.
#[derive(Debug)]
pub struct Frame {
    /// Its sequence number.
    pub seq: u64,
    /// `id: <seq>\nevent: <kind>\ndata: <json>\n\n`.
    pub bytes: Bytes,
    /// Length of the `id:` line (with its newline), so that the rest can
    /// be sent under another id.
    id_len: usize,
    /// The event's kind.
    pub kind: Kind,
    /// Its device.
    pub device: DeviceId,
    /// Its device's group when it was encoded.
    pub group: Option<GroupId>,
    /// Where it happened: `(lon, lat)` of a position or a geofence event.
    pub point: Option<(f64, f64)>,
}

impl Frame {
    /// Encodes a stored record; `None` for one that does not encode (never
    /// for what the store holds: plain values).
    pub fn encode(record: &Record, groups: &Groups) -> Option<Self> {
        let data = record.event.to_json().ok()?;
        let id_line = format!("id: {}\n", record.seq);
        let mut text = String::with_capacity(id_line.len() + data.len() + 32);
        text.push_str(&id_line);
        text.push_str("event: ");
        text.push_str(record.event.name());
        text.push_str("\ndata: ");
        text.push_str(&data);
        text.push_str("\n\n");
        let (kind, point) = match &record.event {
            Event::Position(p) => (Kind::Position, Some((p.fix.lon, p.fix.lat))),
            Event::Status(_) => (Kind::Status, None),
            Event::Geofence(g) => (Kind::Geofence, Some((g.lon, g.lat))),
        };
        let device = record.event.device().clone();
        Some(Self {
            seq: record.seq,
            bytes: Bytes::from(text),
            id_len: id_line.len(),
            kind,
            group: groups.of(&device),
            device,
            point,
        })
    }

    /// What filters look at.
    pub fn facts(&self) -> Facts<'_> {
        Facts {
            kind: self.kind,
            device: &self.device,
            group: self.group.as_ref(),
            point: self.point,
        }
    }

    /// The frame under another id (a coalesced position sent late carries
    /// the client's cursor, so that ids only ever grow).
    pub fn with_id(&self, id: u64) -> Bytes {
        let mut bytes = format!("id: {id}\n").into_bytes();
        bytes.extend_from_slice(&self.bytes[self.id_len..]);
        Bytes::from(bytes)
    }
}

#[derive(Debug)]
struct Frames {
    frames: VecDeque<Arc<Frame>>,
    bytes: usize,
    /// Every event after this number is in `frames` (none was evicted
    /// after it): a cursor at or past it reads from the ring.
    base: u64,
    /// The last sequence number taken in, under the same lock as the
    /// frames: a reader that finds no frame after its cursor may move its
    /// cursor to this, and to nothing newer (the watch below is published
    /// after the lock is released, and a push in between would be skipped).
    head: u64,
}

/// The ring, shared by the filler and every client.
#[derive(Debug)]
pub struct Ring {
    inner: RwLock<Frames>,
    /// The last sequence number the ring has taken in.
    head: watch::Sender<u64>,
}

/// What the ring has for a cursor.
#[derive(Debug)]
pub enum Take {
    /// Frames after the cursor (empty when caught up), and the ring's head
    /// as they were read: with no frame after the cursor, every number up
    /// to it is a hole.
    Frames(Vec<Arc<Frame>>, u64),
    /// The cursor is before what the ring holds (its base, which the store
    /// read may move the cursor to when it finds nothing before it).
    Behind(u64),
}

impl Ring {
    /// An empty ring that starts after `head`.
    pub fn new(head: u64) -> Arc<Self> {
        Arc::new(Self {
            inner: RwLock::new(Frames {
                frames: VecDeque::new(),
                bytes: 0,
                base: head,
                head,
            }),
            head: watch::channel(head).0,
        })
    }

    /// Wakes clients when the ring takes in new frames.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// The last sequence number taken in.
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// Up to `max` frames after `after`.
    pub fn take(&self, after: u64, max: usize) -> Take {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        if after < inner.base {
            return Take::Behind(inner.base);
        }
        let start = inner.frames.partition_point(|f| f.seq <= after);
        let frames = inner.frames.range(start..).take(max).cloned().collect();
        Take::Frames(frames, inner.head)
    }

    fn push(&self, frames: Vec<Frame>, last: u64) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        for frame in frames {
            inner.bytes += frame.bytes.len();
            inner.frames.push_back(Arc::new(frame));
        }
        while inner.frames.len() > CAPACITY || inner.bytes > MAX_BYTES {
            let Some(old) = inner.frames.pop_front() else {
                break;
            };
            inner.bytes -= old.bytes.len();
            inner.base = old.seq;
        }
        inner.head = inner.head.max(last);
        drop(inner);
        telemetry::SSE_RING_FRAMES.set(self.len() as f64);
        self.head.send_replace(last);
    }

    /// Moves the ring past `last` without reading or encoding anything:
    /// with no client listening that work would be thrown away (on a
    /// gateway without a depot screen, most of the time). A client that
    /// comes later finds its cursor behind the ring and reads the store
    /// from it, as one that fell far behind does.
    fn skip(&self, last: u64) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.frames.clear();
        inner.bytes = 0;
        inner.base = inner.base.max(last);
        inner.head = inner.head.max(last);
        drop(inner);
        telemetry::SSE_RING_FRAMES.set(0.0);
        self.head.send_replace(last);
    }

    /// Whether any client waits on the ring.
    fn listened(&self) -> bool {
        self.head.receiver_count() > 0
    }

    fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .frames
            .len()
    }
}

/// Fills `ring` from the store whenever the writer's `head` moves, until
/// `shutdown`: each event read and encoded once for every client.
pub async fn fill(
    ring: Arc<Ring>,
    reader: Reader,
    groups: Arc<Groups>,
    mut head: watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    loop {
        let target = *head.borrow_and_update();
        let mut after = ring.head();
        while after < target {
            if !ring.listened() {
                ring.skip(target);
                break;
            }
            let reading = reader.clone();
            let encoding = groups.clone();
            let read = tokio::task::spawn_blocking(move || {
                reading.read_after(after, READ).map(|records| {
                    let frames: Vec<Frame> = records
                        .iter()
                        .filter_map(|r| Frame::encode(r, &encoding))
                        .collect();
                    (frames, records.last().map(|r| r.seq))
                })
            })
            .await;
            match read {
                Ok(Ok((frames, Some(last)))) => {
                    telemetry::SSE_FRAMES_ENCODED.increment(frames.len() as u64);
                    ring.push(frames, last);
                    after = last;
                }
                // Nothing readable up to the head (holes, damaged values
                // skipped): the ring moves on to it.
                Ok(Ok((_, None))) => {
                    ring.push(Vec::new(), target);
                    after = target;
                }
                Ok(Err(err)) => {
                    tracing::error!("feed: reading new events failed: {err}");
                    break;
                }
                Err(_) => return,
            }
        }
        tokio::select! {
            changed = head.changed() => if changed.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fix::{Fix, Position};
    use chrono::{TimeZone, Utc};

    fn frame(seq: u64) -> Frame {
        let record = Record {
            seq,
            event: Event::Position(Position::new(
                DeviceId::new("bus-1").unwrap(),
                Fix::new(
                    Utc.with_ymd_and_hms(2026, 12, 4, 8, 0, 0).unwrap(),
                    52.0,
                    5.0,
                ),
            )),
        };
        Frame::encode(&record, &Groups::default()).unwrap()
    }

    #[test]
    fn frames_are_sse_events_and_can_go_under_another_id() {
        let f = frame(42);
        let text = std::str::from_utf8(&f.bytes).unwrap();
        assert!(text.starts_with("id: 42\nevent: position\ndata: {\"device\":\"bus-1\""));
        assert!(text.ends_with("}\n\n"));
        let moved = f.with_id(50);
        assert!(
            std::str::from_utf8(&moved)
                .unwrap()
                .starts_with("id: 50\nevent: position\n")
        );
    }

    #[test]
    fn a_cursor_before_the_ring_reads_the_store_and_one_inside_gets_what_follows() {
        let ring = Ring::new(10);
        ring.push(vec![frame(11), frame(12), frame(14)], 14);
        let seqs = |take: Take| match take {
            Take::Frames(f, _) => f.iter().map(|f| f.seq).collect::<Vec<_>>(),
            Take::Behind(_) => vec![0],
        };
        assert_eq!(seqs(ring.take(10, 100)), vec![11, 12, 14]);
        assert_eq!(seqs(ring.take(12, 100)), vec![14]);
        assert_eq!(seqs(ring.take(13, 100)), vec![14]);
        assert_eq!(seqs(ring.take(14, 100)), Vec::<u64>::new());
        assert_eq!(seqs(ring.take(9, 100)), vec![0]);
        // Overflow evicts the oldest; the base moves with it.
        let many: Vec<Frame> = (15..15 + CAPACITY as u64).map(frame).collect();
        ring.push(many, 14 + CAPACITY as u64);
        assert!(matches!(ring.take(12, 1), Take::Behind(_)));
        // The head comes with the frames, read under the same lock.
        assert!(
            matches!(ring.take(14 + CAPACITY as u64, 1), Take::Frames(f, h) if f.is_empty() && h == 14 + CAPACITY as u64)
        );
        assert_eq!(seqs(ring.take(20, 2)), vec![21, 22]);
    }

    #[test]
    fn with_nobody_listening_the_ring_skips_and_a_late_client_reads_the_store() {
        let ring = Ring::new(10);
        assert!(!ring.listened());
        ring.skip(20);
        assert_eq!(ring.head(), 20);
        assert!(matches!(ring.take(15, 10), Take::Behind(20)));
        assert!(matches!(ring.take(20, 10), Take::Frames(f, 20) if f.is_empty()));
        let listener = ring.subscribe();
        assert!(ring.listened());
        ring.push(vec![frame(21)], 21);
        assert!(matches!(ring.take(20, 10), Take::Frames(f, 21) if f.len() == 1));
        drop(listener);
        assert!(!ring.listened());
    }
}
