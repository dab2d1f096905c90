//! Device snapshots, built once and shared: `/api/devices` and the device
//! states an SSE reset sends.
//!
//! Built per request, a snapshot of 10,000 devices (about 2 MB of JSON) is
//! held by every client until it has read it: 300 clients that never read
//! held 550 MiB. Here one snapshot serves every request that arrives while
//! the head has not moved past it, it is built by one request at a time
//! while the others wait for it, and at most `max_snapshots` `/api/devices`
//! responses may be in flight (being built, or still being sent to a slow
//! client); beyond that a request gets `503`. SSE resets share the latest
//! snapshot while it is a few seconds old ([`Snapshots::get_recent`]). So
//! snapshots cost at most `(max_snapshots + stall_timeout / RESET_REUSE + 1)
//! × size`, however many clients ask or stop reading.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use serde::Serialize;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, watch};

use crate::fix::{FenceId, GroupId};
use crate::groups::Groups;
use crate::pipeline::geofence::{Rules, Zones};
use crate::store::{DeviceState, Reader, StoreError};

/// Every device's last known state at one head.
#[derive(Debug)]
pub struct Snapshot {
    /// The head read before the states: anything newer is also in them or
    /// will be replayed after this number, never missed.
    pub seq: u64,
    /// The states, ordered by device id.
    pub devices: Vec<DeviceState>,
    /// The fences in force when it was built (names the devices' zones).
    rules: Option<Arc<Rules>>,
    built: Instant,
    /// `/api/devices`'s body, made once when first asked for.
    json: OnceLock<Bytes>,
}

/// Why no snapshot could be had.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The store could not be read.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The blocking read did not finish (the runtime is shutting down).
    #[error("the snapshot read was cancelled")]
    Cancelled,
}

/// `GET /api/devices` body.
#[derive(Serialize)]
struct Devices<'a> {
    seq: u64,
    devices: Vec<Device<'a>>,
}

/// A device in the snapshot: its state, its group and the fences it is in now.
#[derive(Serialize)]
struct Device<'a> {
    #[serde(flatten)]
    state: &'a DeviceState,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<GroupId>,
    zones: Vec<Zone>,
}

/// A fence a device is in.
#[derive(Serialize)]
struct Zone {
    id: FenceId,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// When the device came in.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::fix::time_ms::serialize_opt"
    )]
    since: Option<chrono::DateTime<chrono::Utc>>,
}

/// A device's zones from its stored geofence state, among the fences in
/// force (a removed fence leaves a device's stored state only at its next
/// fix, which may be long in coming), named from them.
fn zones(state: &DeviceState, rules: Option<&Rules>) -> Vec<Zone> {
    let (Some(zones), Some(rules)) = (
        state.zones.as_deref().and_then(|b| Zones::decode(b).ok()),
        rules,
    ) else {
        return Vec::new();
    };
    zones
        .inside()
        .filter_map(|(id, since)| {
            let fence = rules.fences.get(id)?;
            Some(Zone {
                id: id.clone(),
                name: fence.name.clone(),
                since,
            })
        })
        .collect()
}

impl Snapshot {
    /// The `/api/devices` JSON, encoded on first use; blocking (call it from
    /// the blocking pool).
    pub fn json(&self, groups: &Groups) -> Bytes {
        self.json
            .get_or_init(|| self.encode(groups, |_, _| true))
            .clone()
    }

    /// The JSON of the devices `keep` lets through (given each device and
    /// its group), made for one request; blocking.
    pub fn json_filtered(
        &self,
        groups: &Groups,
        keep: impl Fn(&DeviceState, Option<&GroupId>) -> bool,
    ) -> Bytes {
        self.encode(groups, keep)
    }

    fn encode(
        &self,
        groups: &Groups,
        keep: impl Fn(&DeviceState, Option<&GroupId>) -> bool,
    ) -> Bytes {
        let rules = self.rules.as_deref();
        let body = Devices {
            seq: self.seq,
            devices: self
                .devices
                .iter()
                .filter_map(|state| {
                    let group = groups.of(&state.device);
                    keep(state, group.as_ref()).then(|| Device {
                        state,
                        group,
                        zones: zones(state, rules),
                    })
                })
                .collect(),
        };
        // Plain data: serialising it cannot fail.
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }
}

/// Builds and shares snapshots; cheap to clone.
#[derive(Clone)]
pub struct Snapshots {
    reader: Reader,
    head: watch::Receiver<u64>,
    geofences: watch::Receiver<Option<Arc<Rules>>>,
    permits: Arc<Semaphore>,
    latest: Arc<Mutex<Option<Arc<Snapshot>>>>,
}

impl Snapshots {
    /// Snapshots of `reader`'s devices at `head`, at most `max` held by
    /// responses at once.
    pub fn new(
        reader: Reader,
        head: watch::Receiver<u64>,
        geofences: watch::Receiver<Option<Arc<Rules>>>,
        max: usize,
    ) -> Self {
        Self {
            reader,
            head,
            geofences,
            permits: Arc::new(Semaphore::new(max)),
            latest: Arc::new(Mutex::new(None)),
        }
    }

    /// A licence to hold a snapshot now, or `None` when `max` are held.
    pub fn try_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// A snapshot at least as new as the head is now: the latest one if the
    /// head has not moved past it, else a new one (built by one caller while
    /// the others wait for it).
    pub async fn get(&self) -> Result<Arc<Snapshot>, SnapshotError> {
        let wanted = *self.head.borrow();
        self.get_if(|snapshot| snapshot.seq >= wanted).await
    }

    /// A snapshot built within `max_age`, or a new one. For an SSE reset,
    /// whose client catches up from the snapshot's own number: sharing one
    /// recent snapshot among all clients that reset bounds how many distinct
    /// ones slow clients can hold (about one per `max_age` of stall timeout)
    /// without making any client wait for a licence.
    pub async fn get_recent(&self, max_age: Duration) -> Result<Arc<Snapshot>, SnapshotError> {
        self.get_if(|snapshot| snapshot.built.elapsed() <= max_age)
            .await
    }

    async fn get_if(
        &self,
        fresh: impl Fn(&Snapshot) -> bool,
    ) -> Result<Arc<Snapshot>, SnapshotError> {
        let rules = self.geofences.borrow().clone();
        let mut latest = self.latest.lock().await;
        if let Some(snapshot) = latest.as_ref() {
            let same_rules = match (&snapshot.rules, &rules) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if same_rules && fresh(snapshot) {
                return Ok(snapshot.clone());
            }
        }
        // Drop the old one first: it is not kept alive by the cache while
        // the new one is read.
        *latest = None;
        let seq = *self.head.borrow();
        let reader = self.reader.clone();
        let devices = tokio::task::spawn_blocking(move || reader.devices())
            .await
            .map_err(|_| SnapshotError::Cancelled)??;
        let snapshot = Arc::new(Snapshot {
            seq,
            devices,
            rules,
            built: Instant::now(),
            json: OnceLock::new(),
        });
        *latest = Some(snapshot.clone());
        Ok(snapshot)
    }
}

/// A response body of shared bytes that holds `permit` until it has been
/// handed to the connection in full: hyper asks for the end of a body only
/// once its write buffer has drained below its limit, so the permit bounds
/// the snapshots held by slow clients.
pub fn permitted_body(bytes: Bytes, permit: OwnedSemaphorePermit) -> Body {
    let chunks =
        futures_util::stream::unfold((Some(bytes), Some(permit)), |(bytes, permit)| async move {
            match bytes {
                Some(bytes) => Some((Ok::<_, std::convert::Infallible>(bytes), (None, permit))),
                None => {
                    drop(permit);
                    None
                }
            }
        });
    Body::from_stream(chunks)
}
