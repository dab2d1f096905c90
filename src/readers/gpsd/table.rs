//! The served devices, the latest report of each, and the task that follows
//! the store and encodes each new position once for every client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::protocol::{self, DeviceInfo};
use crate::access::DevicePattern;
use crate::fix::{DeviceId, Event, Fix, Record};
use crate::store::Reader;
use crate::telemetry;

/// Trackers (devices served by `gpsd.trackers` patterns) kept at most; the
/// receivers come on top. Beyond, new ones are not served (logged once).
pub const MAX_TRACKERS: usize = 256;
/// Reports the shared queue holds: a client further behind skips.
pub const QUEUE: usize = 1024;
/// Records read from the store at a time.
const READ: usize = 1024;

/// A device as gpsd clients see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    /// The device whose positions are reported.
    pub device: DeviceId,
    /// gpsd's `path`: the serial port, the log file, or the device id.
    pub path: String,
    /// gpsd's `driver`.
    pub driver: Option<&'static str>,
    /// The configured speed of a serial port.
    pub bps: Option<u32>,
}

/// Gives a serial port's speed now (`None`: not a serial port, or unknown).
pub type BpsSource = Arc<dyn Fn(&Port) -> Option<u32> + Send + Sync>;

/// The devices served: the receivers, and trackers by pattern.
pub struct Served {
    ports: Vec<Port>,
    trackers: Vec<DevicePattern>,
    bps: BpsSource,
}

impl Served {
    /// `ports`, and devices matching `trackers` once they report; DEVICE
    /// objects give each port's configured `bps`.
    pub fn new(ports: Vec<Port>, trackers: Vec<DevicePattern>) -> Self {
        Self {
            ports,
            trackers,
            bps: Arc::new(|port: &Port| port.bps),
        }
    }

    /// Takes serial speeds from `bps` instead of the configuration (the
    /// receivers' shared status, once they hunt for their speed).
    pub fn with_bps(mut self, bps: BpsSource) -> Self {
        self.bps = bps;
        self
    }
}

/// One served device and its latest report.
struct Entry {
    port: Port,
    /// When its first report of this run arrived.
    activated: Option<DateTime<Utc>>,
    /// Its latest TPV and SKY objects, without line ends.
    tpv: Option<Arc<str>>,
    sky: Option<Arc<str>>,
}

/// The served devices by id.
struct Table {
    entries: Vec<Entry>,
    index: HashMap<DeviceId, usize>,
    trackers: Vec<DevicePattern>,
    /// The configured receivers: the first entries, never removed.
    receivers: usize,
    /// A tracker was turned away for lack of room (logged once).
    full_logged: bool,
}

impl Table {
    /// The entry of `device`, added when a tracker pattern takes it.
    fn slot(&mut self, device: &DeviceId) -> Option<usize> {
        if let Some(&i) = self.index.get(device) {
            return Some(i);
        }
        if !self.trackers.iter().any(|p| p.matches(device.as_str())) {
            return None;
        }
        let trackers = self.entries.len() - self.receivers;
        if trackers >= MAX_TRACKERS {
            if !self.full_logged {
                self.full_logged = true;
                tracing::warn!(
                    device = %device,
                    "gpsd: {MAX_TRACKERS} trackers are served already; further devices matching gpsd.trackers are not"
                );
            }
            return None;
        }
        self.entries.push(Entry {
            port: Port {
                device: device.clone(),
                path: device.as_str().to_owned(),
                driver: None,
                bps: None,
            },
            activated: None,
            tpv: None,
            sky: None,
        });
        self.index.insert(device.clone(), self.entries.len() - 1);
        Some(self.entries.len() - 1)
    }
}

/// New reports for the watching clients: the lines of one position.
#[derive(Debug)]
pub struct Report {
    /// Whose: an index into the served devices.
    pub entry: usize,
    /// Its TPV line, and its SKY line when it has one, each ending in CR LF.
    pub lines: Bytes,
    /// How many lines.
    pub count: u64,
}

/// What the follower and every client share.
pub struct Shared {
    table: RwLock<Table>,
    bps: BpsSource,
    tx: broadcast::Sender<Arc<Report>>,
    /// VERSION's `release`.
    pub release: String,
    /// Clients connected: with none, the follower skips what it would read.
    clients: AtomicUsize,
    /// The follower skipped records: the next client reseeds the table.
    stale: AtomicBool,
    /// The store, for that reseeding (set by the follower).
    reader: OnceLock<Reader>,
}

/// A connected client, counted while it lives.
pub struct Joined(Arc<Shared>);

impl Drop for Joined {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    /// The state for `served`, before any report.
    pub fn new(served: Served, release: String) -> Arc<Self> {
        let index = served
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| (p.device.clone(), i))
            .collect();
        let entries: Vec<Entry> = served
            .ports
            .into_iter()
            .map(|port| Entry {
                port,
                activated: None,
                tpv: None,
                sky: None,
            })
            .collect();
        Arc::new(Self {
            table: RwLock::new(Table {
                receivers: entries.len(),
                entries,
                index,
                trackers: served.trackers,
                full_logged: false,
            }),
            bps: served.bps,
            tx: broadcast::channel(QUEUE).0,
            release,
            clients: AtomicUsize::new(0),
            stale: AtomicBool::new(false),
            reader: OnceLock::new(),
        })
    }

    /// Counts a client in and, when the follower skipped records while
    /// nobody was connected, reseeds the latest reports from the store
    /// first, so that its `?POLL;` is current.
    pub async fn join(self: &Arc<Self>) -> Joined {
        self.clients.fetch_add(1, Ordering::SeqCst);
        let joined = Joined(self.clone());
        if self.stale.swap(false, Ordering::SeqCst) {
            if let Some(reader) = self.reader.get().cloned() {
                let me = self.clone();
                let _ = tokio::task::spawn_blocking(move || me.seed(&reader)).await;
            }
        }
        joined
    }

    /// With nobody connected, marks the table stale and says so: the
    /// follower then skips to the head instead of reading and encoding
    /// every record for no one (as the SSE ring does). Stale is set before
    /// the count is read, so a client that joins meanwhile either is
    /// counted here or reseeds.
    fn idle(&self) -> bool {
        if self.clients.load(Ordering::SeqCst) > 0 {
            return false;
        }
        self.stale.store(true, Ordering::SeqCst);
        self.clients.load(Ordering::SeqCst) == 0
    }

    /// A queue of the reports to come.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Report>> {
        self.tx.subscribe()
    }

    /// The index of the device whose `path` is given.
    pub fn find(&self, path: &str) -> Option<usize> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        table.entries.iter().position(|e| e.port.path == path)
    }

    /// The DEVICES object (all of them), or the DEVICE object of the first.
    pub fn devices(&self, first_only: bool) -> Option<String> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let bps: Vec<Option<u32>> = table.entries.iter().map(|e| (self.bps)(&e.port)).collect();
        let infos: Vec<DeviceInfo<'_>> = table
            .entries
            .iter()
            .zip(bps)
            .map(|(e, bps)| DeviceInfo {
                path: &e.port.path,
                driver: e.port.driver,
                activated: e.activated,
                bps,
            })
            .collect();
        if first_only {
            infos.first().map(protocol::device)
        } else {
            Some(protocol::devices(&infos))
        }
    }

    /// The POLL object: the latest report of every device that has one.
    pub fn poll(&self, now: DateTime<Utc>) -> String {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let tpvs: Vec<&str> = table
            .entries
            .iter()
            .filter_map(|e| e.tpv.as_deref())
            .collect();
        let skys: Vec<&str> = table
            .entries
            .iter()
            .filter_map(|e| e.sky.as_deref())
            .collect();
        protocol::poll(now, tpvs.len(), &tpvs, &skys)
    }

    /// Keeps `fix` as the latest of `device`, without telling the clients
    /// (`live`: and marks the device active, and returns the report).
    fn update(&self, device: &DeviceId, fix: &Fix, live: bool) -> Option<Report> {
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let entry = table.slot(device)?;
        let e = &mut table.entries[entry];
        let tpv = protocol::tpv(&e.port.path, fix);
        let sky = protocol::sky(&e.port.path, fix);
        let mut lines = String::with_capacity(tpv.len() + sky.as_ref().map_or(0, String::len) + 4);
        lines.push_str(&tpv);
        lines.push_str("\r\n");
        if let Some(sky) = &sky {
            lines.push_str(sky);
            lines.push_str("\r\n");
        }
        e.tpv = Some(Arc::from(tpv));
        e.sky = sky.map(Arc::from);
        if live && e.activated.is_none() {
            e.activated = Some(Utc::now());
        }
        Some(Report {
            entry,
            count: 1 + u64::from(e.sky.is_some()),
            lines: Bytes::from(lines),
        })
    }

    /// Takes in new records: each live position of a served device is
    /// encoded once and queued for every watching client.
    pub fn take(&self, records: &[Record]) {
        for record in records {
            let Event::Position(p) = &record.event else {
                continue;
            };
            // A tracker's buffered past is history, not where it is now.
            if p.historic {
                continue;
            }
            if let Some(report) = self.update(&p.device, &p.fix, true) {
                telemetry::GPSD_REPORTS_ENCODED.increment(1);
                // An error only says that no client watches.
                let _ = self.tx.send(Arc::new(report));
            }
        }
    }

    /// Seeds the latest report of each served device from the store's
    /// last-known positions, so that `?POLL;` answers before the next fix.
    fn seed(&self, reader: &Reader) {
        match reader.devices() {
            Ok(states) => {
                for state in states {
                    if let Some(fix) = &state.fix {
                        self.update(&state.device, fix, false);
                    }
                }
            }
            Err(err) => tracing::warn!("gpsd: cannot read the last known positions: {err}"),
        }
    }
}

/// Follows the writer's `head` until `shutdown`, from where it is now (what
/// came before is seeded from the store's last-known positions).
pub async fn follow(
    shared: Arc<Shared>,
    reader: Reader,
    mut head: watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    let mut after = *head.borrow_and_update();
    let seeding = (shared.clone(), reader.clone());
    if tokio::task::spawn_blocking(move || seeding.0.seed(&seeding.1))
        .await
        .is_err()
    {
        return;
    }
    let _ = shared.reader.set(reader.clone());
    loop {
        let target = *head.borrow_and_update();
        if shared.idle() {
            after = target;
        }
        while after < target {
            let reading = reader.clone();
            let taking = shared.clone();
            // Reading blocks on sled, and encoding goes with it: the
            // runtime's threads stay free for the clients.
            let read = tokio::task::spawn_blocking(move || {
                reading.read_after(after, READ).map(|records| {
                    taking.take(&records);
                    records.last().map(|r| r.seq)
                })
            })
            .await;
            match read {
                Ok(Ok(Some(last))) => after = last,
                // Holes up to the head.
                Ok(Ok(None)) => after = target,
                Ok(Err(err)) => {
                    tracing::error!("gpsd: reading new events failed: {err}");
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
    use crate::fix::Position;
    use chrono::TimeZone;

    fn record(seq: u64, device: &str, historic: bool) -> Record {
        let mut p = Position::new(
            DeviceId::new(device).unwrap(),
            Fix::new(
                Utc.with_ymd_and_hms(2026, 12, 4, 8, 0, 0).unwrap(),
                52.0,
                5.0,
            ),
        );
        p.historic = historic;
        Record {
            seq,
            event: Event::Position(p),
        }
    }

    fn port(id: &str, path: &str) -> Port {
        Port {
            device: DeviceId::new(id).unwrap(),
            path: path.into(),
            driver: Some("NMEA0183"),
            bps: Some(9600),
        }
    }

    #[test]
    fn only_live_positions_of_served_devices_are_reported_once_each() {
        let served = Served::new(
            vec![port("gps-1", "/dev/ttyUSB0")],
            vec![DevicePattern::parse("bus-*").unwrap()],
        );
        let shared = Shared::new(served, "fixgate test".into());
        let mut rx = shared.subscribe();
        shared.take(&[
            record(1, "gps-1", false),
            record(2, "car-1", false),
            record(3, "bus-1", true),
            record(4, "bus-2", false),
        ]);
        let first = rx.try_recv().unwrap();
        assert_eq!(first.entry, 0);
        assert!(
            first
                .lines
                .starts_with(b"{\"class\":\"TPV\",\"device\":\"/dev/ttyUSB0\"")
        );
        assert!(first.lines.ends_with(b"}\r\n"));
        let second = rx.try_recv().unwrap();
        assert!(
            second
                .lines
                .starts_with(b"{\"class\":\"TPV\",\"device\":\"bus-2\"")
        );
        assert!(
            rx.try_recv().is_err(),
            "car-1 is not served, bus-1's was historic"
        );
        let devices = shared.devices(false).unwrap();
        assert!(devices.contains("\"path\":\"bus-2\""), "{devices}");
        assert!(!devices.contains("bus-1"), "{devices}");
        let poll: serde_json::Value = serde_json::from_str(&shared.poll(Utc::now())).unwrap();
        assert_eq!(poll["active"], 2);
        assert_eq!(shared.find("/dev/ttyUSB0"), Some(0));
        assert_eq!(shared.find("/dev/none"), None);
    }

    #[test]
    fn trackers_are_bounded_and_speeds_can_come_from_elsewhere() {
        let served = Served::new(
            vec![port("gps-1", "/dev/ttyUSB0")],
            vec![DevicePattern::parse("*").unwrap()],
        )
        .with_bps(Arc::new(|p: &Port| p.bps.map(|_| 115_200)));
        let shared = Shared::new(served, "fixgate test".into());
        let records: Vec<Record> = (0..MAX_TRACKERS as u64 + 10)
            .map(|i| record(i, &format!("t-{i}"), false))
            .collect();
        shared.take(&records);
        let devices: serde_json::Value =
            serde_json::from_str(&shared.devices(false).unwrap()).unwrap();
        assert_eq!(
            devices["devices"].as_array().unwrap().len(),
            MAX_TRACKERS + 1
        );
        assert_eq!(devices["devices"][0]["bps"], 115_200);
    }
}
