//! The SSE clients connected now, and whom to let go when a new screen
//! finds every place taken.
//!
//! A client that stops reading is closed once its socket has taken nothing
//! for the stall timeout ([`super::conn`]), but one that never reads costs
//! the feed nothing until its buffers fill, which on a quiet feed takes
//! days; so a full feed would turn new screens away for as long as such
//! clients stay. Instead a new client always gets a place: the one it takes
//! is the longest-stalled client's (a socket that has been blocked for a
//! while), else the oldest client of the address that holds the most
//! (so one misbehaving host cannot lock out the depot's screens, and a
//! screen that is cut off reconnects and catches up by `Last-Event-ID`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::conn::SocketState;
use crate::telemetry;
use crate::util::log_limit::{LogLimit, Verdict};

/// A socket blocked at least this long counts as stalled for eviction.
const STALLED: Duration = Duration::from_secs(2);

/// One connected client as the registry sees it.
struct Entry {
    peer: IpAddr,
    since: Instant,
    socket: Arc<SocketState>,
    evict: CancellationToken,
}

#[derive(Default)]
struct Registry {
    next: u64,
    entries: HashMap<u64, Entry>,
}

/// The connected clients; shared by the feed's handlers.
pub struct Clients {
    max: usize,
    registry: Mutex<Registry>,
    log: Mutex<LogLimit<&'static str>>,
}

/// A client's place; leaving it (dropping) frees it.
pub struct Place {
    id: u64,
    clients: Arc<Clients>,
    socket: Arc<SocketState>,
    /// Cancelled when another client took this place.
    pub evicted: CancellationToken,
}

impl Clients {
    /// At most `max` clients at once.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            registry: Mutex::new(Registry::default()),
            log: Mutex::new(LogLimit::new(Duration::from_secs(60), 4)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a client from `peer`, making room if the feed is full.
    pub fn join(self: &Arc<Self>, peer: IpAddr, socket: Arc<SocketState>) -> Place {
        let evicted = CancellationToken::new();
        let mut registry = self.lock();
        while registry.entries.len() >= self.max {
            let Some((victim, reason)) = choose_victim(&registry.entries) else {
                break;
            };
            if let Some(entry) = registry.entries.remove(&victim) {
                entry.evict.cancel();
                telemetry::SSE_EVICTED.with([reason]).increment(1);
                let verdict = self
                    .log
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .check(&reason, Instant::now());
                if let Verdict::Log { suppressed } = verdict {
                    tracing::warn!(
                        peer = %entry.peer,
                        suppressed,
                        max = self.max,
                        "feed full (feed.max_clients): a new client took the place of a {reason} one"
                    );
                }
            }
        }
        let id = registry.next;
        registry.next += 1;
        registry.entries.insert(
            id,
            Entry {
                peer,
                since: Instant::now(),
                socket: socket.clone(),
                evict: evicted.clone(),
            },
        );
        telemetry::SSE_CLIENTS.set(registry.entries.len() as f64);
        drop(registry);
        Place {
            id,
            clients: self.clone(),
            socket,
            evicted,
        }
    }
}

/// The client to let go: the longest-stalled one, else the oldest of the
/// address with the most clients.
fn choose_victim(entries: &HashMap<u64, Entry>) -> Option<(u64, &'static str)> {
    let stalled = entries
        .iter()
        .filter_map(|(id, e)| Some((*id, e.socket.blocked_for()?)))
        .filter(|(_, blocked)| *blocked >= STALLED)
        .max_by_key(|(_, blocked)| *blocked);
    if let Some((id, _)) = stalled {
        return Some((id, "stalled"));
    }
    let mut per_peer: HashMap<IpAddr, usize> = HashMap::new();
    for e in entries.values() {
        *per_peer.entry(e.peer).or_default() += 1;
    }
    let crowded = per_peer.into_iter().max_by_key(|(_, n)| *n)?.0;
    entries
        .iter()
        .filter(|(_, e)| e.peer == crowded)
        .min_by_key(|(_, e)| e.since)
        .map(|(id, _)| (*id, "crowded"))
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut registry = self.clients.lock();
        registry.entries.remove(&self.id);
        telemetry::SSE_CLIENTS.set(registry.entries.len() as f64);
        drop(registry);
        if self.socket.stalled() {
            telemetry::SSE_STALLED.increment(1);
        }
        tracing::debug!("feed client left");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket() -> Arc<SocketState> {
        let (_, state) = super::super::conn::Guarded::new((), Duration::from_secs(1));
        state
    }

    #[test]
    fn a_full_feed_lets_the_crowding_address_go_first_and_always_admits() {
        let clients = Arc::new(Clients::new(3));
        let greedy: IpAddr = "10.0.0.66".parse().unwrap();
        let screen: IpAddr = "10.0.0.5".parse().unwrap();
        let a = clients.join(greedy, socket());
        let b = clients.join(greedy, socket());
        let s = clients.join(screen, socket());
        // Full: the newcomer takes the greedy address's oldest place.
        let c = clients.join(screen, socket());
        assert!(a.evicted.is_cancelled());
        assert!(!b.evicted.is_cancelled() && !s.evicted.is_cancelled());
        assert_eq!(clients.lock().entries.len(), 3);
        drop((a, b, s, c));
        assert!(clients.lock().entries.is_empty());
    }
}
