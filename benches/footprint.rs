//! Footprint of the real daemon: start-up time to `READY=1`, resident
//! memory, and instructions per fix through the pipeline.
//!
//! `cargo bench --bench footprint` (release binary). Three parts:
//!
//! 1. **Start-up.** `fixgate run` on the installed default configuration
//!    (`config/fixgate.toml`: embedded broker, feed and HTTP intake, no
//!    sources), with the store, ports and notify socket in a directory of
//!    the bench's own, timed from `spawn` to the `READY=1` datagram on a Unix
//!    socket the bench owns as `NOTIFY_SOCKET` (what systemd waits for with
//!    `Type=notify`). Three cases, several runs each: an empty store; the
//!    same with an `[uplink]` over HTTP to a loopback port where nothing
//!    listens; and that uplink with a backlog of 1,000,000 unacknowledged
//!    fixes (100 vehicles at 1 Hz, written through the library as
//!    `benches/store.rs` does; the uplink never connects, so nothing is
//!    acknowledged and nothing deleted). The daemon's own log gives the
//!    split: spawn to its first line, that to "store open", that to
//!    "fixgate running" (which is right before `READY=1`).
//! 2. **Memory.** `VmRSS`/`VmHWM` from `/proc/<pid>/status`: idle for 10 s
//!    after the last start-up run of each case, and under the MQTT fleet load
//!    of `benches/mqtt.rs` (`fixgate simulate`, 1,000 devices at 1 Hz, one
//!    connection each) for 30 s.
//! 3. **Instructions per fix.** The release daemon under
//!    `valgrind --tool=callgrind --fair-sched=yes` (broker off), fed N
//!    fixes through a `[[replay]]` NMEA
//!    log at `pace = "max"` (NMEA decoding, the filters, presence, two
//!    geofences from `config/fences.example.geojson`, the store with its
//!    group commit), stopped with SIGTERM once the replay logged its end;
//!    the store is then read back and must hold all N. Per fix:
//!    `(I(N) − I(small)) / (N − small)`, so that start-up and shutdown
//!    cancel; a third run, idle for longer, measures what an idle second
//!    costs, which does not cancel (the large run lasts longer). Spin-waits
//!    ([`SPIN_WAITS`]) are left out of the counts: valgrind runs one thread
//!    at a time, so what a thread burns spinning there depends on when
//!    valgrind switches threads. Where the instructions go comes from
//!    `callgrind_annotate`, per function, large run minus small run. Then
//!    the same replay natively, in fixes per second, and its RSS. Last, the
//!    peer: `gpsd -N -n -b` on the same log through a pty, `gpspipe -w`
//!    counting its fixes, per fix the same way, and its RSS natively
//!    (SKIPPED without gpsd).
//!
//! `cargo bench --bench footprint -- instructions` runs one part (`startup`,
//! `mqtt` or `instructions`); `FIXGATE_FOOTPRINT_KEEP=1` keeps the callgrind
//! outputs and prints where.
//!
//! Run as a test (`cargo test --bench footprint`) it uses a backlog of 2,000
//! fixes, 1 s of idling, a 2 s MQTT load of 20 devices and a callgrind run of
//! a few fixes (when valgrind is installed; it says SKIPPED otherwise), and
//! asserts that `READY=1` arrived, the backlog was counted whole, the MQTT
//! load was stored whole and the replay's fixes were all stored.

#[path = "../tests/common/mod.rs"]
mod common;
use common::proc_stat::load_average;

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, Utc};
use fixgate::fix::{DeviceId, Event, Position};
use fixgate::store::{Store, StoreOptions};

use common::{free_port, machine, memory_kib, summary_field};

/// The demo depot the simulator's vehicles circle, and the example fences'.
const DEPOT: (f64, f64) = (52.0907, 5.1214);
/// The replay source's device in the callgrind runs.
const REPLAY_DEVICE: &str = "replay-1";

struct Plan {
    full: bool,
    /// Start-up runs per case.
    runs: usize,
    backlog: usize,
    backlog_vehicles: usize,
    /// Idle time after the last start-up run of each case.
    idle: Duration,
    mqtt_devices: usize,
    mqtt_rate_hz: f64,
    mqtt_run: Duration,
    /// Fixes of the large and the small callgrind run.
    fixes: (usize, usize),
    /// Runs of each size (repeatability).
    callgrind_repeats: usize,
    /// The extra idle time of the run that measures idle cost, if any.
    callgrind_idle: Option<Duration>,
}

impl Plan {
    fn new(full: bool) -> Plan {
        if full {
            Plan {
                full,
                runs: 7,
                backlog: 1_000_000,
                backlog_vehicles: 100,
                idle: Duration::from_secs(10),
                mqtt_devices: 1000,
                mqtt_rate_hz: 1.0,
                mqtt_run: Duration::from_secs(30),
                fixes: (100_000, 1_000),
                callgrind_repeats: 2,
                callgrind_idle: Some(Duration::from_secs(20)),
            }
        } else {
            Plan {
                full,
                runs: 2,
                backlog: 2_000,
                backlog_vehicles: 10,
                idle: Duration::from_secs(1),
                mqtt_devices: 20,
                mqtt_rate_hz: 2.0,
                mqtt_run: Duration::from_secs(2),
                fixes: (30, 0),
                callgrind_repeats: 1,
                callgrind_idle: None,
            }
        }
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let plan = Plan::new(full);
    let started = Instant::now();
    println!("machine: {}", machine());
    println!("load average at start: {}", load_average());
    println!(
        "mode: {}",
        if full {
            "full (release binary)"
        } else {
            "quick self-check (tiny loads; figures meaningless)"
        }
    );

    // `cargo bench --bench footprint -- instructions` runs that part alone.
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |part: &str| parts.is_empty() || parts.iter().any(|p| p == part);
    let mut summary = Summary::default();
    if wanted("startup") {
        startup(&plan, &mut summary);
    }
    if wanted("mqtt") {
        mqtt_load(&plan, &mut summary);
    }
    if wanted("instructions") {
        instructions(&plan, &mut summary);
    }

    println!("\n## Summary (key = value; compare release to release)\n");
    for (key, value) in &summary.0 {
        println!("{key} = {value}");
    }
    println!("\nload average at the end: {}", load_average());
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
}

/// The figures to compare between releases, in the order they were taken.
#[derive(Default)]
struct Summary(Vec<(String, String)>);

impl Summary {
    fn add(&mut self, key: &str, value: impl std::fmt::Display) {
        self.0.push((key.to_owned(), value.to_string()));
    }
}

// ---------------------------------------------------------------------------
// The configuration and the daemon

/// What the installed default configuration is turned into for a run.
#[derive(Default)]
struct Shape {
    /// The embedded broker's port; `None` turns the broker off.
    mqtt: Option<u16>,
    /// An `[uplink]` over HTTP to this loopback port (where nothing listens).
    uplink_to: Option<u16>,
    /// A `[[replay]]` of this NMEA file at `pace = "max"`.
    replay: Option<PathBuf>,
    /// `geofence.files`.
    fences: Option<PathBuf>,
}

/// `config/fixgate.toml` as installed, with its store in `store`, the feed
/// on loopback `feed` and the rest as `shape` asks. Fails loudly when the
/// file no longer has the lines this edits, so that the bench is mended
/// rather than silently measuring something else.
fn config(store: &Path, feed: u16, shape: &Shape) -> String {
    let mut text = include_str!("../config/fixgate.toml").to_owned();
    let mut edit = |from: &str, to: &str| {
        assert_eq!(
            text.matches(from).count(),
            1,
            "config/fixgate.toml no longer holds {from:?} exactly once: update benches/footprint.rs"
        );
        text = text.replacen(from, to, 1);
    };
    edit(
        "path = \"/var/lib/fixgate/store\"",
        &format!("path = \"{}\"", store.display()),
    );
    edit(
        "listen = \"0.0.0.0:8080\"",
        &format!("listen = \"127.0.0.1:{feed}\""),
    );
    match shape.mqtt {
        Some(port) => edit(
            "listen = \"0.0.0.0:1883\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        ),
        None => edit("\nbroker = \"embedded\"", "\nbroker = \"off\""),
    }
    if let Some(port) = shape.uplink_to {
        edit(
            "transport = \"off\"",
            &format!("transport = \"http\"\nurl = \"http://127.0.0.1:{port}/batches\""),
        );
    }
    if let Some(fences) = &shape.fences {
        edit(
            "# files = [\"/etc/fixgate/fences.geojson\"]",
            &format!("files = [\"{}\"]", fences.display()),
        );
    }
    if let Some(path) = &shape.replay {
        text.push_str(&format!(
            "\n[[replay]]\ndevice = \"{REPLAY_DEVICE}\"\npath = \"{}\"\npace = \"max\"\n",
            path.display()
        ));
    }
    text
}

/// A `fixgate run` process (perhaps under valgrind) with its notify socket
/// and log; killed on drop unless stopped.
struct Gateway {
    child: Child,
    feed: u16,
    log: PathBuf,
    notify: UnixDatagram,
    spawned: Instant,
    spawned_wall: DateTime<Utc>,
    stopped: bool,
}

impl Gateway {
    /// Writes `config` into `dir` as `<name>.toml` and starts the daemon on
    /// it, `wrapper` (e.g. valgrind and its options) in front when given.
    fn spawn(dir: &Path, name: &str, config: &str, feed: u16, wrapper: &[String]) -> Gateway {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).expect("write the config");
        let socket_path = dir.join(format!("{name}.notify"));
        let _ = std::fs::remove_file(&socket_path);
        let notify = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
        let log = dir.join(format!("{name}.log"));
        // The installed configuration's access tokens come from systemd's
        // credentials (LoadCredential=): two made up here, as the package's
        // postinst would make them.
        let credentials = dir.join("credentials");
        std::fs::create_dir_all(&credentials).expect("the credentials directory");
        for token in ["read", "write"] {
            let secret = format!("footprint-bench-{token}-token-0123456789abcdef");
            std::fs::write(credentials.join(format!("{token}.token")), secret)
                .expect("write a token");
        }
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_fixgate"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_fixgate")),
        };
        command
            .args(["run", "--config"])
            .arg(&path)
            // The configuration's log level, not the caller's.
            .env_remove("RUST_LOG")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env("NOTIFY_SOCKET", &socket_path)
            .env("CREDENTIALS_DIRECTORY", &credentials)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let spawned_wall = Utc::now();
        let spawned = Instant::now();
        let child = command.spawn().expect("start fixgate");
        Gateway {
            child,
            feed,
            log,
            notify,
            spawned,
            spawned_wall,
            stopped: false,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for `READY=1`; the time from spawn to its arrival.
    fn wait_ready(&mut self, timeout: Duration) -> Duration {
        let deadline = self.spawned + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("no READY=1 within {timeout:?}:\n{}", self.log_text()));
            // Short waits, so that a daemon that died is noticed.
            self.notify
                .set_read_timeout(Some(left.min(Duration::from_millis(100))))
                .expect("socket timeout");
            match self.notify.recv(&mut buf) {
                Ok(n) => {
                    let at = self.spawned.elapsed();
                    let message = String::from_utf8_lossy(&buf[..n]);
                    if message.lines().any(|l| l == "READY=1") {
                        return at;
                    }
                }
                Err(_) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!(
                            "fixgate exited ({status}) before READY=1:\n{}",
                            self.log_text()
                        );
                    }
                }
            }
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `VmRSS` and `VmHWM` in KiB.
    fn memory(&self) -> (u64, u64) {
        memory_kib(self.pid())
    }

    /// The sum of metric `name` over its series carrying all of `labels`.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        common::metric_at(self.feed, name, labels)
    }

    /// SIGTERM, then waits for the exit; the status and how long it took.
    fn stop(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let asked = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for fixgate") {
                self.stopped = true;
                return (status, asked.elapsed());
            }
            assert!(
                asked.elapsed() < timeout,
                "fixgate did not stop within {timeout:?} of SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// When the first log line containing `what` was written.
fn logged_at(log: &str, what: &str) -> Option<DateTime<Utc>> {
    let line = log.lines().find(|l| l.contains(what))?;
    let stamp = line.split_whitespace().next()?;
    DateTime::parse_from_rfc3339(stamp)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn ms_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a)
        .num_microseconds()
        .map_or(f64::NAN, |us| us as f64 / 1e3)
}

// ---------------------------------------------------------------------------
// 1 and 2: start-up and idle memory

/// One start of the daemon, timed.
#[derive(Debug, Clone, Copy)]
struct Start {
    /// spawn → `READY=1` on the notify socket.
    ready_ms: f64,
    /// spawn → the daemon's first log line ("starting").
    to_first_log_ms: f64,
    /// "starting" → "store open".
    to_store_open_ms: f64,
    /// "store open" → "fixgate running".
    to_running_ms: f64,
    /// SIGTERM → exit.
    stop_ms: f64,
}

/// Starts the daemon on `config`, waits for `READY=1`, optionally idles
/// (reporting memory), stops it.
#[expect(
    clippy::too_many_arguments,
    reason = "the bench's daemon start with everything a run varies"
)]
fn start_once(
    dir: &Path,
    name: &str,
    config: &str,
    feed: u16,
    idle: Option<Duration>,
    check: impl FnOnce(&Gateway),
) -> (Start, Option<Idle>) {
    let mut gateway = Gateway::spawn(dir, name, config, feed, &[]);
    let ready = gateway.wait_ready(Duration::from_secs(60));
    let idle = idle.map(|hold| {
        let at_ready = gateway.memory();
        std::thread::sleep(hold);
        let after = gateway.memory();
        Idle {
            rss_at_ready: at_ready.0,
            rss: after.0,
            hwm: after.1,
            hold,
        }
    });
    check(&gateway);
    let (status, stop) = gateway.stop(Duration::from_secs(60));
    let log = gateway.log_text();
    assert!(status.success(), "fixgate exited with {status}:\n{log}");
    let at = |what: &str| {
        logged_at(&log, what).unwrap_or_else(|| panic!("no {what:?} in the log:\n{log}"))
    };
    let (first, open, running) = (
        at(": starting"),
        at(": store open"),
        at(": fixgate running"),
    );
    let start = Start {
        ready_ms: ready.as_secs_f64() * 1e3,
        to_first_log_ms: ms_between(gateway.spawned_wall, first),
        to_store_open_ms: ms_between(first, open),
        to_running_ms: ms_between(open, running),
        stop_ms: stop.as_secs_f64() * 1e3,
    };
    (start, idle)
}

/// Resident memory of an idle daemon.
#[derive(Debug, Clone, Copy)]
struct Idle {
    rss_at_ready: u64,
    rss: u64,
    hwm: u64,
    hold: Duration,
}

/// Median, minimum and maximum.
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (median, v[0], v[v.len() - 1])
}

fn cell(values: &[f64]) -> String {
    let (median, min, max) = spread(values);
    format!("{median:.1} ({min:.1}–{max:.1})")
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Writes `total` position events of `vehicles` simulated vehicles at 1 Hz
/// (the last ones a minute ago) into a new store at `path`, through the
/// library in the writer's batches of 256 with a group commit every 4, as
/// `benches/store.rs` does; marks them durable as the daemon's flusher would.
fn build_backlog(path: &Path, total: usize, vehicles: usize) -> Duration {
    let started = Instant::now();
    let (store, _) = Store::open(&StoreOptions {
        path: path.to_owned(),
        cache_bytes: 16 << 20,
        flush_interval: Duration::from_secs(1),
    })
    .expect("open the backlog store");
    let mut writer = store.writer().expect("store writer");
    let mut fleet = fixgate::sim::Fleet::new(vehicles, DEPOT, 42);
    let ids: Vec<DeviceId> = (1..=vehicles)
        .map(|i| DeviceId::new(&format!("bus-{i}")).expect("device id"))
        .collect();
    let seconds = total.div_ceil(vehicles) as i64;
    let start = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .expect("now")
        - chrono::Duration::seconds(seconds + 60);
    let mut pending: Vec<Event> = Vec::with_capacity(256 + vehicles);
    let (mut written, mut batches, mut t) = (0, 0, 0);
    while written < total {
        let time = start + chrono::Duration::seconds(t);
        t += 1;
        for (fix, device) in fleet.step(1.0, time).into_iter().zip(&ids) {
            if written + pending.len() < total {
                pending.push(Event::Position(Position::new(device.clone(), fix)));
            }
        }
        while pending.len() >= 256 || (written + pending.len() == total && !pending.is_empty()) {
            let n = pending.len().min(256);
            writer.append(&pending[..n]).expect("append to the store");
            pending.drain(..n);
            written += n;
            batches += 1;
            if batches % 4 == 0 {
                store.flush().expect("flush");
            }
        }
    }
    store.close(writer.head()).expect("flush and mark");
    started.elapsed()
}

fn startup(plan: &Plan, summary: &mut Summary) {
    let dir = tempfile::tempdir().expect("temp dir");
    let closed = free_port();
    let shape = |uplink: bool| Shape {
        mqtt: Some(free_port()),
        uplink_to: uplink.then_some(closed),
        ..Shape::default()
    };

    // The backlog first: built while nothing else runs.
    let backlog_store = dir.path().join("backlog-store");
    let took = build_backlog(&backlog_store, plan.backlog, plan.backlog_vehicles);
    println!(
        "\nbacklog: {} fixes of {} vehicles at 1 Hz written through the library in {:.2} s ({:.1} MB on disk)",
        plan.backlog,
        plan.backlog_vehicles,
        took.as_secs_f64(),
        common::dir_bytes(&backlog_store) as f64 / 1e6
    );
    // The same open in this process, for comparison with the daemon's.
    let mut decoded = 0;
    let opens: Vec<f64> = (0..3)
        .map(|_| {
            let started = Instant::now();
            let (opened, report) = Store::open(&StoreOptions {
                path: backlog_store.clone(),
                cache_bytes: 16 << 20,
                flush_interval: Duration::from_secs(1),
            })
            .expect("reopen the backlog store");
            let took = started.elapsed().as_secs_f64() * 1e3;
            decoded = decoded.max(report.checkpoint.decoded);
            drop(opened);
            took
        })
        .collect();
    println!(
        "Store::open of that store in the bench's own process (values decoded, at most: {decoded}; 0 = the ledger checkpoint trusted): {} ms, median (min–max) of 3",
        cell(&opens)
    );

    struct Case {
        name: &'static str,
        key: &'static str,
        store: PathBuf,
        uplink: bool,
    }
    /// A case's row title; the backlog case names its size.
    fn case_name(case: &Case, plan: &Plan) -> String {
        if case.key == "backlog" {
            format!("{} fixes, + [uplink] to a closed port", plan.backlog)
        } else {
            case.name.to_owned()
        }
    }
    let empty_store = dir.path().join("empty-store");
    let cases = [
        Case {
            name: "empty store, installed default",
            key: "empty",
            store: empty_store.clone(),
            uplink: false,
        },
        Case {
            name: "empty store, + [uplink] to a closed port",
            key: "empty_uplink",
            store: empty_store.clone(),
            uplink: true,
        },
        Case {
            name: "backlog store, + [uplink] to a closed port",
            key: "backlog",
            store: backlog_store.clone(),
            uplink: true,
        },
    ];

    // The very first start creates the store: not a restart, reported alone.
    let feed = free_port();
    let (first, _) = start_once(
        dir.path(),
        "first",
        &config(&empty_store, feed, &shape(false)),
        feed,
        None,
        |_| {},
    );

    let mut results: Vec<(&Case, Vec<Start>, Idle)> = Vec::new();
    for case in &cases {
        let mut starts = Vec::new();
        let mut idle = None;
        for run in 0..plan.runs {
            let last = run + 1 == plan.runs;
            let feed = free_port();
            let text = config(&case.store, feed, &shape(case.uplink));
            let expect_backlog = if case.key == "backlog" {
                plan.backlog as u64
            } else {
                0
            };
            let (start, held) = start_once(
                dir.path(),
                &format!("{}-{run}", case.key),
                &text,
                feed,
                last.then_some(plan.idle),
                |gateway| {
                    if case.uplink {
                        check_backlog(gateway, expect_backlog);
                    }
                },
            );
            starts.push(start);
            idle = idle.or(held);
        }
        let idle = idle.expect("the last run idles");
        results.push((case, starts, idle));
    }

    println!(
        "\n## Start-up: spawn → READY=1 (ms; median (min–max) of {} runs)\n",
        plan.runs
    );
    println!(
        "Installed default configuration (config/fixgate.toml): embedded broker, feed and HTTP intake on loopback ports, no sources. Warm page cache."
    );
    println!(
        "First start (creates the store): READY=1 after {:.1} ms. Load average now: {}\n",
        first.ready_ms,
        load_average()
    );
    println!(
        "| case | spawn → READY=1 | spawn → first log line | → \"store open\" | → \"fixgate running\" | SIGTERM → exit |"
    );
    println!("|---|---|---|---|---|---|");
    for (case, starts, _) in &results {
        let column = |f: fn(&Start) -> f64| cell(&starts.iter().map(f).collect::<Vec<_>>());
        let name = case_name(case, plan);
        println!(
            "| {name} | **{}** | {} | {} | {} | {} |",
            column(|s| s.ready_ms),
            column(|s| s.to_first_log_ms),
            column(|s| s.to_store_open_ms),
            column(|s| s.to_running_ms),
            column(|s| s.stop_ms),
        );
        let (median, min, max) = spread(&starts.iter().map(|s| s.ready_ms).collect::<Vec<_>>());
        summary.add(
            &format!("startup_ready_ms.{}", case.key),
            format!(
                "{median:.1} (min {min:.1}, max {max:.1}, {} runs)",
                plan.runs
            ),
        );
    }

    println!("\n## Idle memory (VmRSS / VmHWM after the last start-up run of each case)\n");
    println!("| case | VmRSS at READY=1 | VmRSS after idling | VmHWM |");
    println!("|---|---|---|---|");
    for (case, _, idle) in &results {
        let name = case_name(case, plan);
        println!(
            "| {name} | {} | {} ({:.0} s) | {} |",
            mib(idle.rss_at_ready),
            mib(idle.rss),
            idle.hold.as_secs_f64(),
            mib(idle.hwm)
        );
        assert!(idle.rss > 0 && idle.hwm >= idle.rss, "{idle:?}");
        summary.add(
            &format!("rss_idle_kib.{}", case.key),
            format!("{} (VmHWM {})", idle.rss, idle.hwm),
        );
    }
}

/// The uplink counted the whole store as its backlog (nothing was
/// acknowledged), and the disk budget's gauge says the same.
fn check_backlog(gateway: &Gateway, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = gateway.log_text();
        let logged = log
            .lines()
            .find(|l| l.contains("uplink starting"))
            .and_then(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("backlog="))
            })
            .and_then(|v| v.parse::<u64>().ok());
        let gauge = gateway.metric("fixgate_store_buffered_records", &[]);
        if logged == Some(want) && gauge == Some(want as f64) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "backlog: want {want}, the uplink logged {logged:?}, fixgate_store_buffered_records {gauge:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// 2c: memory under the MQTT fleet load

fn mqtt_load(plan: &Plan, summary: &mut Summary) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (feed, mqtt) = (free_port(), free_port());
    let text = config(
        &dir.path().join("store"),
        feed,
        &Shape {
            mqtt: Some(mqtt),
            ..Shape::default()
        },
    );
    let mut gateway = Gateway::spawn(dir.path(), "mqtt", &text, feed, &[]);
    gateway.wait_ready(Duration::from_secs(60));
    common::wait_port(mqtt);
    let before = gateway.memory();

    let out = dir.path().join("simulate.out");
    let err = dir.path().join("simulate.err");
    let mut simulator = Command::new(env!("CARGO_BIN_EXE_fixgate"))
        .arg("simulate")
        .args(["--mqtt", &format!("127.0.0.1:{mqtt}")])
        .args(["--devices", &plan.mqtt_devices.to_string()])
        .args(["--rate", &plan.mqtt_rate_hz.to_string()])
        .args(["--duration", &format!("{}ms", plan.mqtt_run.as_millis())])
        .args(["--seed", "1", "--connections", "per-device"])
        .stdout(std::fs::File::create(&out).expect("simulator stdout"))
        .stderr(std::fs::File::create(&err).expect("simulator stderr"))
        .spawn()
        .expect("start fixgate simulate");
    let t0 = Instant::now();
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let status = loop {
        if let Some(status) = simulator.try_wait().expect("wait for the simulator") {
            break status;
        }
        assert!(
            t0.elapsed() < plan.mqtt_run + Duration::from_secs(60),
            "fixgate simulate did not end"
        );
        let second = t0.elapsed().as_secs_f64();
        if samples.last().is_none_or(|(s, _)| second - s >= 1.0) {
            samples.push((second, gateway.memory().0));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "fixgate simulate failed ({status}):\n{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    let line = std::fs::read_to_string(&out)
        .unwrap_or_default()
        .trim()
        .to_owned();
    let sent = summary_field(&line, "sent") as u64;
    let failed = summary_field(&line, "failed") as u64;
    // Drain: everything sent is stored, or 20 s pass.
    let deadline = Instant::now() + Duration::from_secs(20);
    let stored = loop {
        let stored = gateway
            .metric("fixgate_fixes_accepted_total", &[("source", "mqtt")])
            .unwrap_or(0.0) as u64;
        if stored >= sent || Instant::now() > deadline {
            break stored;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (rss, hwm) = gateway.memory();
    // Does the memory go back once the devices have gone?
    std::thread::sleep(plan.idle);
    let (after, _) = gateway.memory();
    let (status, _) = gateway.stop(Duration::from_secs(60));
    assert!(status.success(), "fixgate exited with {status}");

    println!(
        "\n## Memory under MQTT load: fixgate simulate, {} devices × {} Hz, one connection each, {:.0} s\n",
        plan.mqtt_devices,
        plan.mqtt_rate_hz,
        plan.mqtt_run.as_secs_f64()
    );
    println!(
        "Installed default configuration (flush_interval 1 s), empty store. Simulator: {line}"
    );
    println!(
        "stored: {stored} of {sent} sent ({failed} failed); load average now: {}",
        load_average()
    );
    let series: Vec<String> = samples
        .iter()
        .filter(|(s, _)| !plan.full || (*s as u64) % 5 == 0)
        .map(|(s, kib)| format!("{:.0} s {:.1}", s, *kib as f64 / 1024.0))
        .collect();
    println!("VmRSS (MiB) while publishing: {}", series.join(", "));
    println!(
        "VmRSS before the load {}, at the end {}, VmHWM {}; {:.0} s after the simulator disconnected {}",
        mib(before.0),
        mib(rss),
        mib(hwm),
        plan.idle.as_secs_f64(),
        mib(after)
    );
    summary.add(
        "rss_mqtt_load_kib",
        format!(
            "{rss} (VmHWM {hwm}; {} devices × {} Hz, one connection each, {:.0} s; {after} {:.0} s after)",
            plan.mqtt_devices,
            plan.mqtt_rate_hz,
            plan.mqtt_run.as_secs_f64(),
            plan.idle.as_secs_f64()
        ),
    );
    assert!(sent > 0 && failed == 0, "{line}");
    assert_eq!(stored, sent, "every fix the simulator sent is stored");
}

// ---------------------------------------------------------------------------
// 3: instructions per fix under callgrind

/// One run of the daemon under callgrind.
struct Counted {
    fixes: usize,
    /// Everything callgrind counted.
    instructions: u64,
    /// Of those, instructions spent spinning in [`SPIN_WAITS`].
    spin: u64,
    /// Self cost by function (`callgrind_annotate`).
    self_costs: HashMap<String, u64>,
    wall: Duration,
    out: PathBuf,
}

impl Counted {
    /// The count without the spin-waits: what the per-fix figure uses.
    fn work(&self) -> u64 {
        self.instructions - self.spin
    }
}

/// Functions that spin until another thread moves on. Valgrind runs one
/// thread at a time, so a thread spinning there burns instructions until
/// valgrind switches threads, not the few a spin takes on real cores: in
/// one run sled's lazy statics spun for 6.3 billion instructions, in the
/// next for 8 million (before `--fair-sched=yes`, which hands the CPU round
/// in turn and made them steady). Their self cost is left out of the figure.
const SPIN_WAITS: &[&str] = &["<sled::lazy::Lazy<T,F> as core::ops::deref::Deref>::deref"];

fn valgrind_version() -> Option<String> {
    let out = Command::new("valgrind").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `n` 1 Hz epochs of one simulated vehicle (RMC, VTG, GGA, GSA, GLL), the
/// last a minute ago, so that the default filters pass them all.
fn nmea_log(n: usize) -> String {
    let start = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .expect("now")
        - chrono::Duration::seconds(n as i64 + 60);
    common::simulated_nmea(n, start, 7)
}

/// Runs the daemon under callgrind on a replay of `n` fixes, idles `extra`
/// after the replay ended, stops it, and checks that all `n` were stored.
fn callgrind(dir: &Path, name: &str, n: usize, extra: Duration) -> Counted {
    let log_path = dir.join(format!("{name}.nmea"));
    std::fs::write(&log_path, nmea_log(n)).expect("write the NMEA log");
    let store = dir.join(format!("{name}-store"));
    let feed = free_port();
    let text = config(
        &store,
        feed,
        &Shape {
            mqtt: None,
            uplink_to: None,
            replay: Some(log_path),
            fences: Some(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fences.example.geojson"),
            ),
        },
    );
    let out = dir.join(format!("{name}.callgrind"));
    let wrapper = vec![
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        format!("--callgrind-out-file={}", out.display()),
        "--quiet".to_owned(),
        "--fair-sched=yes".to_owned(),
    ];
    let started = Instant::now();
    let mut gateway = Gateway::spawn(dir, name, &text, feed, &wrapper);
    gateway.wait_ready(Duration::from_secs(300));
    let deadline = Instant::now() + Duration::from_secs(1800);
    let finished = loop {
        let log = gateway.log_text();
        if let Some(line) = log.lines().find(|l| l.contains("replay finished")) {
            break line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the replay did not finish:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(extra);
    let (status, _) = gateway.stop(Duration::from_secs(600));
    let wall = started.elapsed();
    assert!(
        status.success(),
        "fixgate under callgrind exited with {status}:\n{}",
        gateway.log_text()
    );
    assert!(
        finished.contains(&format!("fixes={n}")),
        "the replay sent other than {n} fixes: {finished}"
    );
    let stored = stored_positions(&store, REPLAY_DEVICE);
    assert_eq!(stored, n, "{name}: {stored} of {n} replayed fixes stored");
    let text = std::fs::read_to_string(&out).expect("read the callgrind output");
    let instructions = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("a totals: line in the callgrind output");
    let self_costs = annotate(&out, false);
    let spin = self_costs
        .iter()
        .filter(|(name, _)| SPIN_WAITS.iter().any(|w| name.contains(w)))
        .map(|(_, cost)| cost)
        .sum();
    Counted {
        fixes: n,
        instructions,
        spin,
        self_costs,
        wall,
        out,
    }
}

/// The same replay of `n` fixes at native speed: fixes per second from
/// `READY=1` until all are counted accepted, and `VmRSS`/`VmHWM` (KiB) then;
/// checks the store afterwards.
fn native(dir: &Path, n: usize) -> (f64, (u64, u64)) {
    let log_path = dir.join("native.nmea");
    std::fs::write(&log_path, nmea_log(n)).expect("write the NMEA log");
    let store = dir.join("native-store");
    let feed = free_port();
    let text = config(
        &store,
        feed,
        &Shape {
            replay: Some(log_path),
            fences: Some(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fences.example.geojson"),
            ),
            ..Shape::default()
        },
    );
    let mut gateway = Gateway::spawn(dir, "native", &text, feed, &[]);
    gateway.wait_ready(Duration::from_secs(60));
    let ready = Instant::now();
    let deadline = ready + Duration::from_secs(600);
    let took = loop {
        let accepted = gateway
            .metric("fixgate_fixes_accepted_total", &[])
            .unwrap_or(0.0);
        if accepted >= n as f64 {
            break ready.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "only {accepted} of {n} fixes accepted:\n{}",
            gateway.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let memory = gateway.memory();
    let (status, _) = gateway.stop(Duration::from_secs(60));
    assert!(status.success(), "fixgate exited with {status}");
    assert_eq!(stored_positions(&store, REPLAY_DEVICE), n);
    (n as f64 / took.as_secs_f64(), memory)
}

/// Positions of `device` in the store at `path` (the daemon has exited).
fn stored_positions(path: &Path, device: &str) -> usize {
    let (store, _) = Store::open(&StoreOptions {
        path: path.to_owned(),
        cache_bytes: 16 << 20,
        flush_interval: Duration::from_secs(1),
    })
    .expect("reopen the store");
    let reader = store.reader();
    let Some(oldest) = reader.oldest().expect("read the store") else {
        return 0;
    };
    let (mut after, mut count) = (oldest - 1, 0);
    loop {
        let chunk = reader.read_after(after, 4096).expect("read the store");
        let Some(last) = chunk.last() else { break };
        after = last.seq;
        count += chunk
            .iter()
            .filter(|r| matches!(&r.event, Event::Position(p) if p.device.as_str() == device))
            .count();
    }
    count
}

/// Inclusive (or self) cost by function, from `callgrind_annotate`.
fn annotate(out: &Path, inclusive: bool) -> HashMap<String, u64> {
    let output = Command::new("callgrind_annotate")
        .arg(format!(
            "--inclusive={}",
            if inclusive { "yes" } else { "no" }
        ))
        .arg("--threshold=100")
        .arg("--auto=no")
        .arg(out)
        .output()
        .expect("callgrind_annotate");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut costs = HashMap::new();
    for line in text.lines() {
        // "  1,234,567 (12.34%)  file:function [object]"
        let line = line.trim_start();
        let Some((count, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(count) = count.replace(',', "").parse::<u64>() else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(rest) = rest.strip_prefix('(').and_then(|r| r.split_once(')')) else {
            continue;
        };
        let name = rest.1.trim();
        if name.is_empty() || name.starts_with("PROGRAM TOTALS") {
            continue;
        }
        // The object in brackets at the end says little here: one binary.
        let name = match name.rfind(" [") {
            Some(at) if name.ends_with(']') => &name[..at],
            _ => name,
        };
        let name = name.strip_prefix("???:").unwrap_or(name);
        *costs.entry(name.to_owned()).or_insert(0) += count;
    }
    costs
}

fn instructions(plan: &Plan, summary: &mut Summary) {
    println!("\n## Instructions per fix (valgrind --tool=callgrind --fair-sched=yes)\n");
    let Some(version) = valgrind_version() else {
        println!("SKIPPED: valgrind is not installed (apt install valgrind)");
        summary.add("instructions_per_fix", "SKIPPED (no valgrind)");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    // FIXGATE_FOOTPRINT_KEEP=1 keeps the callgrind outputs for a closer look.
    let keep = std::env::var_os("FIXGATE_FOOTPRINT_KEEP").is_some();
    let (large, small) = plan.fixes;
    let span = (large - small) as f64;
    println!(
        "{version}; the daemon on the installed default configuration with the broker off, one [[replay]] of an NMEA log (1 Hz epochs of RMC, VTG, GGA, GSA and GLL of one simulated vehicle) at pace = \"max\", geofence.files = config/fences.example.geojson (2 fences around the vehicle's depot); SIGTERM once the replay logged its end; every fix checked in the store afterwards."
    );
    println!(
        "\"work\" = all instructions minus the self cost of spin-waits ({}), which depends on valgrind's thread switching.\n",
        SPIN_WAITS.join(", ")
    );
    println!("| N | instructions | spin-waits | work | under callgrind |");
    println!("|---:|---:|---:|---:|---:|");
    let row = |run: &Counted, note: &str| {
        println!(
            "| {} | {} | {} | {} | {:.1} s{note} |",
            run.fixes,
            run.instructions,
            run.spin,
            run.work(),
            run.wall.as_secs_f64()
        );
    };
    let mut runs: Vec<Counted> = Vec::new();
    for repeat in 0..plan.callgrind_repeats {
        for n in [small, large] {
            let run = callgrind(
                dir.path(),
                &format!("n{n}-{repeat}"),
                n,
                Duration::from_millis(500),
            );
            row(&run, "");
            runs.push(run);
        }
    }
    let idle = plan.callgrind_idle.map(|extra| {
        let run = callgrind(
            dir.path(),
            "idle",
            small,
            extra + Duration::from_millis(500),
        );
        row(
            &run,
            &format!(", idling {:.0} s longer", extra.as_secs_f64()),
        );
        run
    });

    // Pairs of (small, large) runs, in the order they ran.
    let pairs: Vec<(&Counted, &Counted)> = runs.chunks(2).map(|p| (&p[0], &p[1])).collect();
    let per = |f: fn(&Counted) -> u64| -> Vec<f64> {
        pairs
            .iter()
            .map(|(a, b)| (f(b) as f64 - f(a) as f64) / span)
            .collect()
    };
    let work = per(Counted::work);
    let raw = per(|r| r.instructions);
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (median, min, max) = spread(&work);
    let (raw_median, raw_min, raw_max) = spread(&raw);
    println!(
        "\nFIGURE instructions/fix = {median:.0}  (work: (I({large}) − I({small})) / {}; {} pair(s): {})",
        large - small,
        work.len(),
        list(&work)
    );
    println!("with the spin-waits: {raw_median:.0} ({})", list(&raw));
    let startup = runs
        .iter()
        .filter(|r| r.fixes == small)
        .map(Counted::work)
        .min()
        .unwrap_or(0);
    println!(
        "start-up, {small} fixes and shutdown: {startup} instructions of work (the smallest of the N = {small} runs)"
    );
    summary.add(
        "instructions_per_fix",
        format!(
            "{median:.0} (min {min:.0}, max {max:.0}; N {large} − {small}; NMEA replay → filters → 2 geofences → store; spin-waits left out)"
        ),
    );
    summary.add(
        "instructions_per_fix_with_spin_waits",
        format!("{raw_median:.0} (min {raw_min:.0}, max {raw_max:.0})"),
    );
    summary.add(
        "instructions_startup_and_shutdown",
        format!("{startup} (N = {small})"),
    );

    if let Some(idle) = &idle {
        // The idle run against the mean of the small runs it repeats.
        let mean = |f: &dyn Fn(&Counted) -> f64, n: usize| {
            let of: Vec<&Counted> = runs.iter().filter(|r| r.fixes == n).collect();
            of.iter().map(|r| f(r)).sum::<f64>() / of.len() as f64
        };
        let works: Vec<u64> = runs
            .iter()
            .filter(|r| r.fixes == small)
            .map(Counted::work)
            .collect();
        let noise = works.iter().max().unwrap_or(&0) - works.iter().min().unwrap_or(&0);
        let small_wall = mean(&|r| r.wall.as_secs_f64(), small);
        let seconds = idle.wall.as_secs_f64() - small_wall;
        let delta = idle.work() as f64 - mean(&|r| r.work() as f64, small);
        // What idling costs the large runs, which last longer, per fix: at
        // the measured rate, or at the noise's when the noise hides it.
        let longer = mean(&|r| r.wall.as_secs_f64(), large) - small_wall;
        let rate = delta.abs().max(noise as f64) / seconds;
        let share = rate * longer / span;
        if delta.abs() <= noise as f64 {
            println!(
                "idle cost: hidden by the noise: idling {seconds:.1} s longer changed the work by {delta:.0}, within the spread of the N = {small} runs ({noise}); so idling makes at most {share:.0} instructions ({:.2}%) of the per-fix figure (the N = {large} runs lasted {longer:.0} s longer)",
                100.0 * share / median
            );
        } else {
            println!(
                "idle cost: {:.0} instructions per second under callgrind (idling {seconds:.1} s longer); the N = {large} runs lasted {longer:.0} s longer, so about {share:.0} instructions ({:.2}%) of the per-fix figure are idle time, not fixes",
                delta / seconds,
                100.0 * share / median
            );
        }
        summary.add(
            "instructions_idle_share_of_per_fix",
            format!("at most {:.2}%", 100.0 * share / median),
        );
    }

    // Where the instructions of a fix go: per function, the large run minus
    // the small one of the first pair, over the fixes between them.
    let (first_small, first_large) = pairs[0];
    for (inclusive, title, top) in [
        (true, "inclusive, without runtime frames", 25),
        (false, "self (exclusive)", 15),
    ] {
        let (a, b) = if inclusive {
            (
                annotate(&first_small.out, true),
                annotate(&first_large.out, true),
            )
        } else {
            (
                first_small.self_costs.clone(),
                first_large.self_costs.clone(),
            )
        };
        let mut rows: Vec<(String, f64)> = b
            .iter()
            .filter(|(name, _)| !inclusive || !runtime_frame(name))
            .map(|(name, cost)| {
                let delta = *cost as f64 - a.get(name).copied().unwrap_or(0) as f64;
                (name.clone(), delta / span)
            })
            .collect();
        rows.sort_by(|x, y| y.1.total_cmp(&x.1));
        println!(
            "\nTop functions per fix, {title} (callgrind_annotate, N = {large} minus N = {small}, first pair):\n"
        );
        println!("| instructions/fix | of the figure | function |");
        println!("|---:|---:|---|");
        for (name, cost) in rows.iter().take(top) {
            let mut shown: String = name.chars().take(120).collect();
            if shown.len() < name.len() {
                shown.push('…');
            }
            println!("| {cost:.0} | {:.1}% | `{shown}` |", 100.0 * cost / median);
        }
    }

    let (rate, (rss, hwm)) = native(dir.path(), large);
    println!(
        "\nThe same replay of {large} fixes natively (release binary, no valgrind): {rate:.0} fixes/s from READY=1 until all were accepted (wall time: moves with the machine's load); then VmRSS {}, VmHWM {}",
        mib(rss),
        mib(hwm)
    );
    summary.add("replay_fixes_per_second_native", format!("{rate:.0}"));
    summary.add(
        "replay_rss_native",
        format!("{} (VmHWM {})", mib(rss), mib(hwm)),
    );

    gpsd_part(plan, dir.path(), median, summary);

    if keep {
        println!(
            "\ncallgrind outputs kept in {} (FIXGATE_FOOTPRINT_KEEP)",
            dir.keep().display()
        );
    } else {
        println!("\n(set FIXGATE_FOOTPRINT_KEEP=1 to keep the callgrind outputs)");
    }
}

// ---------------------------------------------------------------------------
// 3b: gpsd, the peer, on the same NMEA log

/// `gpsd` on the PATH or in /usr/sbin (Debian's place, often off a user's PATH).
fn gpsd_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("gpsd"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/gpsd")])
        .find(|p| p.is_file())
}

/// One gpsd run: what it counted and what it held.
struct GpsdRun {
    /// Callgrind's total, when run under it.
    instructions: Option<u64>,
    /// TPV reports with a 2D/3D fix its client received.
    fixes: usize,
    /// `VmRSS` and `VmHWM` at the end, in KiB (natively only).
    memory: Option<(u64, u64)>,
}

/// `gpsd -N -n -b` reading `n` epochs of the simulated log from a pty, with
/// `gpspipe -w` watching (so gpsd decodes every sentence and reports every
/// fix, which its client counts), under callgrind if `callgrind_out` is set.
fn gpsd_run(
    gpsd: &Path,
    dir: &Path,
    name: &str,
    n: usize,
    callgrind_out: Option<&Path>,
) -> GpsdRun {
    let link = dir.join(format!("{name}.tty"));
    let mut pty = common::PtyReceiver::plug(&link);
    let port = free_port();
    let mut command = match callgrind_out {
        Some(out) => {
            let mut c = Command::new("valgrind");
            c.arg("--tool=callgrind")
                .arg(format!("--callgrind-out-file={}", out.display()))
                .arg("--quiet")
                .arg("--fair-sched=yes")
                .arg(gpsd);
            c
        }
        None => Command::new(gpsd),
    };
    let mut child = command
        .args(["-N", "-n", "-b", "-S", &port.to_string(), "-F"])
        .arg(dir.join(format!("{name}.sock")))
        .arg(&link)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gpsd");
    let pid = child.id();
    // Listening, and the device open (it flushes the line when it opens it).
    let deadline = Instant::now() + Duration::from_secs(120);
    let tty = std::fs::read_link(&link).expect("pty link");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() || !holds(pid, &tty) {
        assert!(Instant::now() < deadline, "gpsd did not start");
        assert!(child.try_wait().ok().flatten().is_none(), "gpsd exited");
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(out) = callgrind_out {
        // Callgrind made its output file as root at the start and writes it
        // at the end as gpsd's user.
        let _ = std::fs::set_permissions(out, std::os::unix::fs::PermissionsExt::from_mode(0o666));
    }
    let reports = dir.join(format!("{name}.json"));
    let mut client = Command::new("gpspipe")
        .args(["-w", &format!("127.0.0.1:{port}")])
        .stdout(std::fs::File::create(&reports).expect("create the report file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gpspipe (Debian package gpsd-clients)");
    let tpvs = || {
        std::fs::read_to_string(&reports)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.starts_with("{\"class\":\"TPV\"")
                    && !l.contains("\"mode\":1")
                    && !l.contains("\"mode\":0")
            })
            .count()
    };
    // The client's WATCH is in once gpsd has answered it.
    while !std::fs::read_to_string(&reports)
        .unwrap_or_default()
        .contains("\"class\":\"WATCH\"")
    {
        assert!(Instant::now() < deadline, "gpspipe got no WATCH from gpsd");
        std::thread::sleep(Duration::from_millis(50));
    }
    pty.send(nmea_log(n).as_bytes());
    // Every epoch reported, then a moment for stragglers.
    let deadline = Instant::now() + Duration::from_secs(1800);
    while tpvs() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let memory = callgrind_out.is_none().then(|| memory_kib(pid));
    let fixes = tpvs();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM gpsd");
    let _ = child.wait();
    let _ = client.kill();
    let _ = client.wait();
    let instructions = callgrind_out.map(|out| {
        std::fs::read_to_string(out)
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("totals:")
                    .or_else(|| l.strip_prefix("summary:"))
            })
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("a totals: line in gpsd's callgrind output")
    });
    GpsdRun {
        instructions,
        fixes,
        memory,
    }
}

/// Whether process `pid` has `path` open.
fn holds(pid: u32, path: &Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == path))
        })
        .unwrap_or(false)
}

/// gpsd's instructions per fix, measured as fixgate's, and its memory.
fn gpsd_part(plan: &Plan, dir: &Path, fixgate: f64, summary: &mut Summary) {
    println!("\n### The peer: gpsd on the same NMEA log\n");
    let client = Command::new("gpspipe").arg("-h").output().is_ok();
    let Some(gpsd) = gpsd_binary().filter(|_| client) else {
        println!("SKIPPED: gpsd or gpspipe is not installed (apt install gpsd gpsd-clients)");
        summary.add("gpsd_instructions_per_fix", "SKIPPED (no gpsd)");
        return;
    };
    let version = Command::new(&gpsd)
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!(
        "{version}: `gpsd -N -n -b -S PORT -F SOCK /dev/pts/N` (foreground, device opened at once, read-only), the same simulated log written into a pty, `gpspipe -w` watching so that gpsd decodes every sentence and reports every fix (TPV), which the bench counts; SIGTERM once all were reported. Per fix as for fixgate: (I(N) - I(small)) / (N - small), under callgrind --fair-sched=yes; gpsd reports, fixgate stores.\n"
    );
    // Started as root, gpsd drops to its own user before it exits, when
    // callgrind writes its output: that user must be able to write there.
    let out_dir = dir.join("gpsd-callgrind");
    std::fs::create_dir_all(&out_dir).expect("create the gpsd output directory");
    for (path, mode) in [(dir, 0o711), (out_dir.as_path(), 0o777)] {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .expect("open the gpsd output directory to gpsd's user");
    }
    let (large, small) = plan.fixes;
    let span = (large - small) as f64;
    println!("| N | instructions | TPVs with a fix |");
    println!("|---:|---:|---:|");
    let mut counts = Vec::new();
    for n in [small, large] {
        let run = gpsd_run(
            &gpsd,
            dir,
            &format!("gpsd-n{n}"),
            n,
            Some(&out_dir.join(format!("gpsd-n{n}.callgrind"))),
        );
        let i = run.instructions.unwrap_or(0);
        println!("| {n} | {i} | {} |", run.fixes);
        assert!(run.fixes >= n, "gpsd reported {} fixes of {n}", run.fixes);
        counts.push(i);
    }
    let per = (counts[1] as f64 - counts[0] as f64) / span;
    let native = gpsd_run(&gpsd, dir, "gpsd-native", large, None);
    let (rss, hwm) = native.memory.unwrap_or_default();
    println!(
        "\nFIGURE gpsd instructions/fix = {per:.0}  (fixgate: {fixgate:.0}; gpsd / fixgate = {:.2})",
        per / fixgate
    );
    println!(
        "gpsd natively after {large} fixes ({} TPVs): VmRSS {}, VmHWM {}",
        native.fixes,
        mib(rss),
        mib(hwm)
    );
    summary.add(
        "gpsd_instructions_per_fix",
        format!("{per:.0} (gpsd -N -n -b with gpspipe -w; N {large} − {small})"),
    );
    summary.add(
        "gpsd_rss_after_replay",
        format!("{} (VmHWM {})", mib(rss), mib(hwm)),
    );
}

/// Frames every fix passes through on its way, which say nothing about
/// where its instructions go: thread starts, the async runtime, futures.
fn runtime_frame(name: &str) -> bool {
    let name = name.trim_start_matches('<');
    [
        "std::",
        "core::",
        "alloc::",
        "tokio::",
        "futures",
        "tracing::",
        "./nptl",
        "./csu",
        "(below main)",
        "main",
        "0x",
        "F as ",
        "fixgate::main",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}
