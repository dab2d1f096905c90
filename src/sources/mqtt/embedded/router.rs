//! The in-process router: each connection's granted subscriptions, and the
//! messages other clients publish passed on to them at QoS 0.
//!
//! Passing a message on never waits: each subscribing connection has a
//! bounded queue ([`QUEUE`] messages, and a byte budget of its own and one
//! of all queues together), and a message that does not fit is dropped for
//! that subscriber and counted (`fixgate_mqtt_dropped_total{reason=
//! "slow_subscriber"}`). So a subscriber that reads slowly, or not at all,
//! never slows a publisher, the intake or the pipeline, and memory stays
//! bounded. Nothing is kept for later: no retained messages, no sessions.
//! A connection's subscriptions and queue go when it does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::sources::mqtt::scope::topic_matches;
use crate::telemetry;

/// Messages queued for one subscribing connection at most.
pub const QUEUE: usize = 64;

/// Bytes queued for one subscriber at most (or twice the largest payload,
/// if that is more, so that any accepted message can be passed on).
const CONNECTION_BYTES: usize = 256 * 1024;

/// Bytes queued for all subscribers together at most (or four times the
/// largest payload, if that is more).
const ROUTER_BYTES: usize = 16 * 1024 * 1024;

/// What a queued message costs beyond its topic and payload (the queue
/// slot, the packet's header), so that empty messages are not free.
const OVERHEAD: usize = 64;

/// A message to pass on, shared by every subscriber it goes to.
#[derive(Debug)]
pub struct Message {
    /// The topic it was published to.
    pub topic: String,
    /// Its payload.
    pub payload: Bytes,
}

/// A message queued for one subscriber; holds its share of the byte budgets
/// until it is written out (or dropped with the connection).
#[derive(Debug)]
pub struct Queued {
    /// The message.
    pub message: Arc<Message>,
    _own: OwnedSemaphorePermit,
    _all: OwnedSemaphorePermit,
}

/// Why a subscription is refused though within the login's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The connection has `mqtt.max_subscriptions_per_connection`.
    PerConnection,
    /// All connections together have `mqtt.max_subscriptions`.
    Total,
}

/// What became of one published message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Passed {
    /// Subscribers it was queued for.
    pub queued: usize,
    /// Subscribers whose queue or budget was full.
    pub dropped: usize,
}

/// Every connection's subscriptions.
#[derive(Debug)]
pub struct Router {
    inner: Mutex<Inner>,
    /// Subscriptions in all: read without the lock, so that publishing
    /// while nobody subscribes costs nothing.
    count: AtomicUsize,
    max_total: usize,
    per_connection: usize,
    connection_bytes: usize,
    budget: Arc<Semaphore>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    subscribers: HashMap<u64, Entry>,
}

#[derive(Debug)]
struct Entry {
    filters: Vec<String>,
    tx: mpsc::Sender<Queued>,
    bytes: Arc<Semaphore>,
}

/// A connection's place in the router, made by its first granted
/// subscription. Dropping it (the connection ends) removes every
/// subscription of the connection and frees its queue.
#[derive(Debug)]
pub struct Subscriber {
    router: Arc<Router>,
    id: u64,
    rx: mpsc::Receiver<Queued>,
}

impl Subscriber {
    /// The next message for this connection.
    pub async fn recv(&mut self) -> Option<Queued> {
        self.rx.recv().await
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<Queued> {
        self.rx.try_recv().ok()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.router.remove(self.id);
    }
}

impl Router {
    /// A router for at most `max_total` subscriptions, `per_connection` of
    /// each connection, passing on payloads of up to `max_payload` bytes.
    pub fn new(max_total: usize, per_connection: usize, max_payload: usize) -> Self {
        let largest = max_payload.saturating_add(u16::MAX as usize + OVERHEAD);
        let cap = |n: usize| n.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize);
        Self {
            inner: Mutex::new(Inner::default()),
            count: AtomicUsize::new(0),
            max_total,
            per_connection,
            connection_bytes: cap(CONNECTION_BYTES.max(largest.saturating_mul(2))),
            budget: Arc::new(Semaphore::new(cap(
                ROUTER_BYTES.max(largest.saturating_mul(4))
            ))),
        }
    }

    /// A poisoned lock (a panic while routing) keeps routing: entries are
    /// never left half-changed.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds `filter` (already granted by the scope) for the connection whose
    /// place is `place`, making the place on the first. Subscribing again
    /// to a filter held already changes nothing (MQTT 3.1.1, 3.8.4).
    pub fn subscribe(
        self: &Arc<Self>,
        place: &mut Option<Subscriber>,
        filter: &str,
    ) -> Result<(), Full> {
        let mut inner = self.lock();
        let held = place
            .as_ref()
            .and_then(|p| inner.subscribers.get(&p.id))
            .map_or(0, |e| e.filters.len());
        if let Some(entry) = place.as_ref().and_then(|p| inner.subscribers.get(&p.id)) {
            if entry.filters.iter().any(|f| f == filter) {
                return Ok(());
            }
        }
        if held >= self.per_connection {
            return Err(Full::PerConnection);
        }
        if self.count.load(Ordering::Relaxed) >= self.max_total {
            return Err(Full::Total);
        }
        let id = match place {
            Some(p) => p.id,
            None => {
                let id = inner.next_id;
                inner.next_id += 1;
                let (tx, rx) = mpsc::channel(QUEUE);
                let entry = Entry {
                    filters: Vec::new(),
                    tx,
                    bytes: Arc::new(Semaphore::new(self.connection_bytes)),
                };
                inner.subscribers.insert(id, entry);
                *place = Some(Subscriber {
                    router: self.clone(),
                    id,
                    rx,
                });
                id
            }
        };
        if let Some(entry) = inner.subscribers.get_mut(&id) {
            entry.filters.push(filter.to_owned());
            let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
            telemetry::MQTT_SUBSCRIPTIONS.set(count as f64);
        }
        Ok(())
    }

    /// Removes `filter` from the connection's subscriptions, if it has it.
    pub fn unsubscribe(&self, place: Option<&Subscriber>, filter: &str) {
        let Some(place) = place else {
            return;
        };
        let mut inner = self.lock();
        if let Some(entry) = inner.subscribers.get_mut(&place.id) {
            let before = entry.filters.len();
            entry.filters.retain(|f| f != filter);
            if entry.filters.len() < before {
                let count = self.count.fetch_sub(1, Ordering::Relaxed) - 1;
                telemetry::MQTT_SUBSCRIPTIONS.set(count as f64);
            }
        }
    }

    /// Whether anyone subscribes to anything: while not, publishing costs
    /// nothing here.
    pub fn active(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    /// Queues a message published to `topic` for every connection with a
    /// matching subscription (once per connection, however many of its
    /// filters match). Never waits.
    pub fn pass_on(&self, topic: &str, payload: &Bytes) -> Passed {
        let mut passed = Passed::default();
        if self.count.load(Ordering::Relaxed) == 0 {
            return passed;
        }
        let cost = topic.len().saturating_add(payload.len()) + OVERHEAD;
        let Ok(permits) = u32::try_from(cost) else {
            return passed;
        };
        let inner = self.lock();
        let mut message: Option<Arc<Message>> = None;
        for entry in inner.subscribers.values() {
            if !entry.filters.iter().any(|f| topic_matches(topic, f)) {
                continue;
            }
            let message = message
                .get_or_insert_with(|| {
                    Arc::new(Message {
                        topic: topic.to_owned(),
                        payload: payload.clone(),
                    })
                })
                .clone();
            // Both budgets, or the message is dropped for this subscriber.
            let own = entry.bytes.clone().try_acquire_many_owned(permits);
            let all = self.budget.clone().try_acquire_many_owned(permits);
            let (Ok(own), Ok(all)) = (own, all) else {
                passed.dropped += 1;
                continue;
            };
            let queued = Queued {
                message,
                _own: own,
                _all: all,
            };
            match entry.tx.try_send(queued) {
                Ok(()) => passed.queued += 1,
                Err(TrySendError::Full(_)) => passed.dropped += 1,
                // The connection is going; its entry goes with it.
                Err(TrySendError::Closed(_)) => {}
            }
        }
        passed
    }

    fn remove(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(entry) = inner.subscribers.remove(&id) {
            let count = self
                .count
                .fetch_sub(entry.filters.len(), Ordering::Relaxed)
                .saturating_sub(entry.filters.len());
            telemetry::MQTT_SUBSCRIPTIONS.set(count as f64);
        }
    }

    /// Subscriptions in all.
    #[cfg(test)]
    fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(total: usize, per_connection: usize) -> Arc<Router> {
        Arc::new(Router::new(total, per_connection, 1024))
    }

    #[test]
    fn subscriptions_are_capped_per_connection_and_in_total() {
        let router = router(3, 2);
        let (mut a, mut b) = (None, None);
        assert_eq!(router.subscribe(&mut a, "x/#"), Ok(()));
        assert_eq!(router.subscribe(&mut a, "x/#"), Ok(()), "again: no change");
        assert_eq!(router.subscribe(&mut a, "y/#"), Ok(()));
        assert_eq!(router.subscribe(&mut a, "z/#"), Err(Full::PerConnection));
        assert_eq!(router.subscribe(&mut b, "x/1"), Ok(()));
        assert_eq!(router.subscribe(&mut b, "x/2"), Err(Full::Total));
        assert_eq!(router.count(), 3);
        router.unsubscribe(a.as_ref(), "x/#");
        router.unsubscribe(a.as_ref(), "never/subscribed");
        assert_eq!(router.count(), 2);
        assert_eq!(router.subscribe(&mut b, "x/2"), Ok(()));
        // A connection that ends takes everything of it along.
        drop(b);
        assert_eq!(router.count(), 1);
        drop(a);
        assert_eq!(router.count(), 0);
        assert!(router.lock().subscribers.is_empty());
    }

    #[tokio::test]
    async fn messages_go_once_to_each_matching_connection() {
        let router = router(10, 10);
        let (mut a, mut b, mut c) = (None, None, None);
        router.subscribe(&mut a, "fleet/#").unwrap();
        router.subscribe(&mut a, "fleet/+/x").unwrap();
        router.subscribe(&mut b, "fleet/1/x").unwrap();
        router.subscribe(&mut c, "other/#").unwrap();
        let payload = Bytes::from_static(b"{}");
        assert_eq!(
            router.pass_on("fleet/1/x", &payload),
            Passed {
                queued: 2,
                dropped: 0
            }
        );
        let mut a = a.unwrap();
        let got = a.recv().await.unwrap();
        assert_eq!(got.message.topic, "fleet/1/x");
        assert!(a.try_recv().is_none(), "once, though two filters match");
        assert_eq!(b.unwrap().recv().await.unwrap().message.payload, payload);
        assert!(c.unwrap().try_recv().is_none());
    }

    #[test]
    fn a_full_queue_drops_for_that_subscriber_only() {
        let router = router(10, 10);
        let (mut slow, mut quick) = (None, None);
        router.subscribe(&mut slow, "t").unwrap();
        router.subscribe(&mut quick, "t").unwrap();
        let payload = Bytes::from_static(b"x");
        let mut quick = quick.unwrap();
        for _ in 0..QUEUE {
            assert_eq!(router.pass_on("t", &payload).dropped, 0);
            assert!(quick.try_recv().is_some());
        }
        assert_eq!(
            router.pass_on("t", &payload),
            Passed {
                queued: 1,
                dropped: 1
            }
        );
        // Read, the slow one takes messages again.
        let mut slow = slow.unwrap();
        assert!(slow.try_recv().is_some());
        assert_eq!(router.pass_on("t", &payload).dropped, 0);
    }

    #[test]
    fn the_byte_budgets_bound_what_waits() {
        let router = router(10, 10);
        let mut slow = None;
        router.subscribe(&mut slow, "t").unwrap();
        let big = Bytes::from(vec![b'x'; 100 * 1024]);
        let mut queued = 0;
        while router.pass_on("t", &big).queued == 1 {
            queued += 1;
            assert!(queued < QUEUE, "the byte budget never ran out");
        }
        // 256 KiB for one connection: two messages of 100 KiB.
        assert_eq!(queued, 2);
        // What is written out gives its bytes back.
        let mut slow = slow.unwrap();
        drop(slow.try_recv());
        assert_eq!(router.pass_on("t", &big).queued, 1);
    }

    #[test]
    fn nothing_is_queued_without_subscribers() {
        let router = router(10, 10);
        assert_eq!(
            router.pass_on("t", &Bytes::from_static(b"x")),
            Passed::default()
        );
        assert_eq!(router.budget.available_permits(), ROUTER_BYTES);
    }
}
