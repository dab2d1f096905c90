//! What the in-process tests of the async middle share (the pipeline's in
//! `pipeline/tests.rs`, the uplink's in `readers/uplink/tests.rs`, the SSE
//! client's in `readers/feed/sse_tests.rs`): a store in a temporary
//! directory, fixes near now, the metrics the code under test records, and
//! a timeout in real time for what runs on a thread of its own.
//!
//! Those tests run on a current-thread runtime with paused time
//! (`#[tokio::test(start_paused = true)]`): timers fire when the test
//! advances the clock (or, with nothing else to do, when the runtime jumps
//! to the next one), never by waiting.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::fix::{DeviceId, Event, Fix, Position, Record};
use crate::store::{OpenReport, Store, StoreOptions};

/// A store in a directory of its own, removed when this is dropped.
pub(crate) struct TempStore {
    /// The store.
    pub store: Store,
    /// What opening it found (the devices' states the writer is seeded with).
    pub report: OpenReport,
    /// Its options, to open it again.
    pub options: StoreOptions,
    // Last: the store's files go after the store.
    _dir: tempfile::TempDir,
}

impl TempStore {
    /// A new, empty store.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let options = StoreOptions {
            path: dir.path().join("store"),
            cache_bytes: 1 << 20,
            flush_interval: Duration::from_millis(100),
        };
        let (store, report) = Store::open_in_test(&options);
        Self {
            store,
            report,
            options,
            _dir: dir,
        }
    }

    /// Opens the store again, as a restart would: every other handle of it
    /// (writers, readers) must be gone, since two open stores on one
    /// directory would both write it.
    pub fn reopen(self) -> Self {
        let Self {
            store,
            report,
            options,
            _dir,
        } = self;
        drop((store, report));
        let (store, report) = Store::open_in_test(&options);
        Self {
            store,
            report,
            options,
            _dir,
        }
    }

    /// Every record the store holds, in order.
    pub fn records(&self) -> Vec<Record> {
        self.store
            .reader()
            .read_after(0, usize::MAX)
            .expect("read the store")
    }
}

/// A device id that must be valid.
pub(crate) fn id(name: &str) -> DeviceId {
    DeviceId::new(name).expect("a valid device id")
}

/// A good fix `secs` seconds from `start` at `(lat, lon)`: HDOP 1, 3D.
pub(crate) fn fix_at(start: DateTime<Utc>, secs: i64, lat: f64, lon: f64) -> Fix {
    let mut fix = Fix::new(start + chrono::Duration::seconds(secs), lat, lon);
    fix.hdop = Some(1.0);
    fix.sats = Some(9);
    fix
}

/// Now, to the whole second: fix times the filters take as current.
pub(crate) fn now_s() -> DateTime<Utc> {
    let now = Utc::now();
    now - chrono::Duration::nanoseconds(i64::from(now.timestamp_subsec_nanos()))
}

/// `n` positions of `devices` devices, round-robin, one second apart per
/// device, moving north about a metre a second.
pub(crate) fn positions(devices: &[&str], n: usize, start: DateTime<Utc>) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let d = i % devices.len();
            let step = (i / devices.len()) as i64;
            let fix = fix_at(
                start,
                step,
                52.0 + step as f64 * 1e-5,
                5.0 + d as f64 * 0.01,
            );
            Event::Position(Position::new(id(devices[d]), fix))
        })
        .collect()
}

/// The process's metrics, as `/metrics` would render them. Installed once
/// per process: nextest runs every test in a process of its own, and under
/// plain `cargo test` tests that read metrics look only at series labelled
/// with devices of their own.
///
/// A test that reads metrics must call this before the code under test
/// records any: until the recorder is installed, the `metrics` macros
/// record into the no-op one and those counts are lost (the pipeline's
/// harness calls it when it builds the writer).
pub(crate) fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder already installed (none is, in the library's
        // tests) would leave every count here at `None`: the asserts say so.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The sum of counter or gauge `name` over the series carrying every one of
/// `labels`; `None` when there is no such series.
pub(crate) fn metric(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics()
        .render()
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

/// `future`, or a panic naming `what` once `limit` of real time has passed.
///
/// For waits on something that runs outside the runtime (the writer on its
/// thread): while it runs, the paused clock does not move by itself, so a
/// `tokio::time::timeout` would never fire and a broken test would hang.
pub(crate) async fn within<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        let _ = tx.send(());
    });
    tokio::select! {
        out = future => out,
        _ = rx => panic!("{what}: not within {limit:?} (real time)"),
    }
}

/// `future`'s output if it completes within `limit` of real time.
pub(crate) async fn real_timeout<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        let _ = tx.send(());
    });
    tokio::select! {
        out = future => Some(out),
        _ = rx => None,
    }
}
