//! The depot screen's figures, measured in Debian's headless Chromium
//! (through `tests/browser/bridge.mjs`) against the real daemon.
//!
//! `cargo bench --bench depot_screen` (release daemon). Three parts:
//!
//! 1. **First load**: the bytes a browser with an empty cache transfers for
//!    the page, its scripts and styles (and, apart, the API answers), and
//!    the time from navigation start to the first frame with a marker, with
//!    100 vehicles in the store.
//! 2. **Frames** at 100, 1,000 and 5,000 vehicles at 1 Hz: the page's own
//!    requestAnimationFrame intervals over a window (median, 95th percentile,
//!    frames dropped), the time of one redraw of the vehicles, and how busy
//!    the page's main thread was (CDP `TaskDuration` over the window); as
//!    the screen opens (clustered once more than 300 vehicles are on
//!    screen) and with clustering off (`?cluster=0`: every vehicle a marker).
//!    The fixes come from a feeder thread posting JSON arrays to
//!    `/api/fixes`, a tenth of the fleet every 100 ms.
//! 3. **Memory** over a long run of 1,000 vehicles at 1 Hz: the page's JS
//!    heap after a forced garbage collection, its DOM nodes and event
//!    listeners, every minute (`FIXGATE_SCREEN_SOAK_MIN`, default 10).
//!
//! `cargo bench --bench depot_screen -- frames` runs one part (`firstload`,
//! `frames` or `memory`). The browser shares this machine's cores with the
//! daemon and the feeder, which a real screen (a PC or a Pi of its own)
//! does not.
//!
//! Run as a test (`cargo test --benches`) it runs each part small (20
//! vehicles, one 3 s window, a 6 s soak) and checks that the page drew,
//! kept up with the feed and counted nothing twice.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::Daemon;
use common::browser::{Browser, artifacts_dir};
use fixgate::fix::{DeviceId, Position};
use serde_json::{Value, json};

const CENTER: (f64, f64) = (52.0907, 5.1214);
const DEPOT: &str = "[geofence]\n\n[[geofence.fence]]\nid = \"depot\"\nname = \"Depot\"\ncircle = { lat = 52.0907, lon = 5.1214, radius_m = 120 }\n";

/// Posts the fixes of `n` simulated vehicles at 1 Hz: every 100 ms one
/// tenth of them, as one JSON array.
struct Feeder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Feeder {
    fn start(port: u16, n: usize, prefix: &str) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let ids: Vec<DeviceId> = (1..=n)
            .map(|i| DeviceId::new(&format!("{prefix}{i}")).expect("id"))
            .collect();
        let thread = std::thread::spawn(move || {
            let agent = common::http_agent(Duration::from_secs(10));
            let mut fleet = fixgate::sim::Fleet::new(n, CENTER, 7);
            let mut posted = 0u64;
            let started = Instant::now();
            let mut second = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let fixes = fleet.step(1.0, Utc::now());
                let positions: Vec<Position> = fixes
                    .into_iter()
                    .zip(&ids)
                    .map(|(fix, id)| Position::new(id.clone(), fix))
                    .collect();
                let slice = positions.len().div_ceil(10).max(1);
                for (k, chunk) in positions.chunks(slice).enumerate() {
                    let due = started
                        + Duration::from_secs(second)
                        + Duration::from_millis(100 * k as u64);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    let body = serde_json::to_vec(chunk).expect("json");
                    let sent = agent
                        .post(format!("http://127.0.0.1:{port}/api/fixes"))
                        .header("Content-Type", "application/json")
                        .send(&body[..]);
                    if sent.is_ok_and(|r| r.status() == 200) {
                        posted += chunk.len() as u64;
                    }
                }
                second += 1;
            }
            posted
        });
        Feeder {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops; the fixes accepted.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn daemon(dir: &std::path::Path) -> Daemon {
    Daemon::start(dir, DEPOT)
}

/// The CDP metric `name` (0 when absent).
fn metric(metrics: &Value, name: &str) -> f64 {
    metrics["cdp"][name].as_f64().unwrap_or(0.0)
}

fn first_load(full: bool) {
    let runs = if full { 5 } else { 1 };
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = daemon(dir.path());
    let feeder = Feeder::start(daemon.port, 100, "bus-");
    std::thread::sleep(Duration::from_secs(2));
    let Some(mut browser) = Browser::start(daemon.port) else {
        return;
    };
    println!("\n## First load (100 vehicles in the store, empty cache, 1280×800)\n");
    println!(
        "| run | page+scripts+styles (bytes) | API answers (bytes) | load event (ms) | first marker (ms) |"
    );
    println!("|---|---|---|---|---|");
    let mut markers = Vec::new();
    for run in 1..=runs {
        let opened = browser.open("/", 1280, 800);
        browser.must(
            "window.fixgateScreen && window.fixgateScreen.layer.firstMarkerAt > 0",
            Duration::from_secs(20),
        );
        let first = browser
            .eval("window.fixgateScreen.layer.firstMarkerAt")
            .as_f64()
            .unwrap_or(0.0);
        let network = browser.network();
        let bytes = |api: bool| -> f64 {
            network
                .iter()
                .filter(|r| r["type"] != "EventSource" && (r["type"] == "Fetch") == api)
                .map(|r| r["encoded"].as_f64().unwrap_or(0.0))
                .sum()
        };
        let (assets, api) = (bytes(false), bytes(true));
        println!(
            "| {run} | {assets:.0} | {api:.0} | {} | {first:.0} |",
            opened["load_ms"]
        );
        assert!(assets <= 300.0 * 1024.0, "first load {assets} bytes");
        markers.push(first);
    }
    markers.sort_by(f64::total_cmp);
    println!(
        "\nTime to first marker, median of {runs}: {:.0} ms",
        markers[markers.len() / 2]
    );
    let accepted = feeder.stop();
    assert!(accepted > 0);
}

/// One window of frame timing at `n` vehicles; a table row.
fn frames_at(n: usize, cluster: bool, window: Duration) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = daemon(dir.path());
    let feeder = Feeder::start(daemon.port, n, "v-");
    let Some(mut browser) = Browser::start(daemon.port) else {
        return Value::Null;
    };
    let query = if cluster { "/" } else { "/?cluster=0" };
    browser.open(query, 1280, 800);
    browser.must(
        &format!("Number(document.body.dataset.devices) >= {n}"),
        Duration::from_secs(60),
    );
    browser.eval("window.fixgateScreen.fitAll()");
    std::thread::sleep(Duration::from_secs(2));
    let before = browser.number("positionsReceived");
    let busy_before = metric(&browser.cmd(json!({"cmd": "metrics"})), "TaskDuration");
    browser.eval("window.fixgateScreen.meter.start()");
    let started = Instant::now();
    std::thread::sleep(window);
    let frames = browser.eval("window.fixgateScreen.meter.result()");
    let elapsed = started.elapsed().as_secs_f64();
    let busy = metric(&browser.cmd(json!({"cmd": "metrics"})), "TaskDuration") - busy_before;
    let draw = browser.eval("window.fixgateScreen.layer.drawStats()");
    let state = browser.dataset();
    let received = browser.number("positionsReceived") - before;
    browser.screenshot(&artifacts_dir().join(format!(
        "bench-{n}{}.png",
        if cluster { "" } else { "-nocluster" }
    )));
    let accepted = feeder.stop();
    assert_eq!(state["duplicates"], "0", "{state}");
    assert!(accepted > 0);
    json!({
        "n": n,
        "cluster": cluster,
        "frames": frames,
        "draw": draw,
        "busy": busy / elapsed,
        "received_per_s": received / elapsed,
        "markers": state["markers"],
        "clusters": state["clusters"],
    })
}

fn frames(full: bool) {
    let window = if full {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(3)
    };
    let sizes: &[usize] = if full { &[100, 1000, 5000] } else { &[20] };
    println!(
        "\n## Frames ({} s windows, 1280×800, vehicles at 1 Hz)\n",
        window.as_secs()
    );
    println!(
        "| vehicles | view | median frame (ms) | p95 (ms) | fps (mean) | dropped | redraw median / p95 (ms) | main thread busy | positions/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let views: &[bool] = if full { &[true, false] } else { &[true] };
    for &n in sizes {
        for &cluster in views {
            let row = frames_at(n, cluster, window);
            if row.is_null() {
                return;
            }
            let f = &row["frames"];
            let view = if cluster {
                format!(
                    "as opened ({} clusters, {} markers)",
                    row["clusters"].as_str().unwrap_or("?"),
                    row["markers"].as_str().unwrap_or("?")
                )
            } else {
                format!(
                    "every vehicle ({} markers)",
                    row["markers"].as_str().unwrap_or("?")
                )
            };
            println!(
                "| {n} | {view} | {:.1} | {:.1} | {:.1} | {} of {} | {:.2} / {:.2} | {:.0} % | {:.0} |",
                f["median_ms"].as_f64().unwrap_or(0.0),
                f["p95_ms"].as_f64().unwrap_or(0.0),
                f["fps_mean"].as_f64().unwrap_or(0.0),
                f["dropped"],
                f["frames"].as_u64().unwrap_or(0) + f["dropped"].as_u64().unwrap_or(0),
                row["draw"]["median"].as_f64().unwrap_or(0.0),
                row["draw"]["p95"].as_f64().unwrap_or(0.0),
                row["busy"].as_f64().unwrap_or(0.0) * 100.0,
                row["received_per_s"].as_f64().unwrap_or(0.0),
            );
            assert!(f["frames"].as_u64().unwrap_or(0) > 0, "no frames: {row}");
        }
    }
}

fn memory(full: bool) {
    let minutes: u64 = std::env::var("FIXGATE_SCREEN_SOAK_MIN")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(10);
    let (n, total, every) = if full {
        (
            1000,
            Duration::from_secs(60 * minutes),
            Duration::from_secs(60),
        )
    } else {
        (20, Duration::from_secs(6), Duration::from_secs(2))
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = daemon(dir.path());
    let feeder = Feeder::start(daemon.port, n, "m-");
    let Some(mut browser) = Browser::start(daemon.port) else {
        return;
    };
    browser.open("/", 1280, 800);
    browser.must(
        &format!("Number(document.body.dataset.devices) >= {n}"),
        Duration::from_secs(60),
    );
    println!(
        "\n## Memory: {n} vehicles at 1 Hz for {} s (after a forced GC)\n",
        total.as_secs()
    );
    println!(
        "| elapsed (s) | JS heap used (MB) | DOM nodes | JS event listeners | positions received | log entries shown |"
    );
    println!("|---|---|---|---|---|---|");
    let started = Instant::now();
    let mut samples = Vec::new();
    loop {
        browser.cmd(json!({"cmd": "gc"}));
        let m = browser.cmd(json!({"cmd": "metrics"}));
        let heap = metric(&m, "JSHeapUsedSize") / 1e6;
        let received = browser.number("positionsReceived");
        println!(
            "| {} | {heap:.1} | {} | {} | {received:.0} | {} |",
            started.elapsed().as_secs(),
            metric(&m, "Nodes"),
            metric(&m, "JSEventListeners"),
            browser.number("logShown"),
        );
        samples.push(heap);
        if started.elapsed() >= total {
            break;
        }
        std::thread::sleep(every);
    }
    let state = browser.dataset();
    let accepted = feeder.stop();
    assert_eq!(state["duplicates"], "0", "{state}");
    assert!(accepted > 0);
    if samples.len() >= 3 {
        let settled = samples[1];
        let last = samples[samples.len() - 1];
        println!(
            "\nJS heap: {settled:.1} MB after the first interval, {last:.1} MB at the end ({:+.1} MB)",
            last - settled
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let only = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned();
    let run = |part: &str| only.as_deref().is_none_or(|o| o == part);
    println!("machine: {}", common::machine());
    if let Some(missing) = common::browser::missing_peer() {
        if std::env::var_os("CI").is_some() {
            panic!("the depot screen bench cannot run: {missing}");
        }
        println!("SKIPPED: {missing}");
        return;
    }
    if run("firstload") {
        first_load(full);
    }
    if run("frames") {
        frames(full);
    }
    if run("memory") {
        memory(full);
    }
}
