//! MQTT ingest on the real binaries: `fixgate simulate` publishing over TCP
//! into the gateway's own MQTT intake server and on into the store and
//! the SSE feed, against Debian's `mosquitto` with a plain `mosquitto_sub`
//! under the same simulator load, in the same run.
//!
//! `cargo bench --bench mqtt`. Three parts:
//!
//! 1. A ladder of offered loads (1,000 or 2,000 devices at 1–20 Hz on one
//!    shared connection, QoS 1), a fresh broker per step, fixgate and
//!    mosquitto alternating. fixgate's figure is fixes stored
//!    (`fixgate_fixes_accepted_total{source="mqtt"}`) and `position` events
//!    at one SSE client; mosquitto's is lines printed by `mosquitto_sub -t
//!    'fleet/#'`. A step is sustained when every message the simulator sent
//!    arrived within the run and a short drain, at the offered rate.
//! 2. Latency of each step, from the fix's `time` (the simulator stamps the
//!    wall clock at publish, truncated to the millisecond) to the arrival of
//!    its event or line at the reader thread.
//! 3. A fleet of per-device connections (1,000 at 1 Hz in full mode) for a
//!    minute: latency, CPU share and resident memory of either broker.
//!
//! CPU is `utime + stime` from `/proc/<pid>/stat` (the simulator's from
//! `wait4`), as a percentage of one core over the publishing window; "other"
//! is whatever else the machine ran meanwhile (`/proc/stat` minus the broker,
//! the simulator, `mosquitto_sub` and this process).
//!
//! Run as a test (`cargo test --bench mqtt`) it uses tiny loads and asserts
//! that nothing was lost, so it cannot rot unnoticed.

#[path = "../tests/common/mod.rs"]
mod common;
use common::proc_stat::{clock_ticks, cpu_ticks, machine_busy_ticks};

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    Daemon, Mosquitto, SseClient, machine, memory_kib, mosquitto_pub, start_with_broker,
    summary_field,
};

/// One simulated fleet: devices, fixes per second each, connection sharing.
#[derive(Debug, Clone, Copy)]
struct Load {
    devices: usize,
    rate_hz: f64,
    shared: bool,
}

impl Load {
    fn offered(&self) -> f64 {
        self.devices as f64 * self.rate_hz
    }

    fn describe(&self) -> String {
        format!(
            "{} × {} Hz, {}",
            self.devices,
            self.rate_hz,
            if self.shared {
                "1 shared connection".to_owned()
            } else {
                format!("{} connections", self.devices)
            }
        )
    }
}

struct Plan {
    full: bool,
    ladder: Vec<Load>,
    step: Duration,
    fleet: Load,
    fleet_run: Duration,
    /// The fleet run's connection storm is left out of its steady figures.
    steady_after: Duration,
}

impl Plan {
    fn new(full: bool) -> Plan {
        let shared = |devices, rate_hz| Load {
            devices,
            rate_hz,
            shared: true,
        };
        if full {
            Plan {
                full,
                // At most 20 Hz a device: the fleet's half-metre position
                // noise over 10 ms would look like > 100 m/s to `speed_jump`.
                ladder: vec![
                    shared(1000, 1.0),
                    shared(1000, 2.0),
                    shared(1000, 5.0),
                    shared(1000, 10.0),
                    shared(1000, 20.0),
                    shared(2000, 20.0),
                    // Issue 21's goal: 80,000 msgs/s sustained.
                    shared(4000, 20.0),
                ],
                step: Duration::from_secs(10),
                fleet: Load {
                    devices: 1000,
                    rate_hz: 1.0,
                    shared: false,
                },
                fleet_run: Duration::from_secs(60),
                steady_after: Duration::from_secs(15),
            }
        } else {
            Plan {
                full,
                ladder: vec![shared(10, 10.0), shared(20, 10.0)],
                step: Duration::from_secs(1),
                fleet: Load {
                    devices: 40,
                    rate_hz: 2.0,
                    shared: false,
                },
                fleet_run: Duration::from_secs(2),
                steady_after: Duration::from_millis(500),
            }
        }
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let plan = Plan::new(full);
    println!("machine: {}", machine());
    println!("peer: {}", mosquitto_version());
    println!(
        "load average at start: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "mode: {} (simulator: fixgate simulate, JSON payloads, QoS 1, --seed 1)",
        if full { "full" } else { "quick (tiny loads)" }
    );
    let started = Instant::now();

    let mut ladder = Vec::new();
    for load in &plan.ladder {
        for kind in [Kind::Fixgate, Kind::Mosquitto] {
            let result = run_step(kind, *load, plan.step, Duration::ZERO);
            result.print_log();
            ladder.push(result);
        }
    }
    print_ladder(&plan, &ladder);

    let fleet: Vec<Step> = [Kind::Fixgate, Kind::Mosquitto]
        .into_iter()
        .map(|kind| {
            let result = run_step(kind, plan.fleet, plan.fleet_run, plan.steady_after);
            result.print_log();
            result
        })
        .collect();
    print_fleet(&plan, &fleet);
    print_summary(&plan, &ladder, &fleet);

    if !plan.full {
        for step in ladder.iter().chain(&fleet) {
            step.assert_complete();
        }
    }
    println!("\ntotal time {:.1} s", started.elapsed().as_secs_f64());
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Fixgate,
    Mosquitto,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Fixgate => "fixgate",
            Kind::Mosquitto => "mosquitto",
        }
    }
}

/// The broker under test, its reader, and its temp dir.
struct Broker {
    pid: u32,
    mqtt_port: u16,
    daemon: Option<Daemon>,
    mosquitto: Option<Mosquitto>,
    sub: Option<Child>,
    reader: Reader,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start(kind: Kind) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        match kind {
            Kind::Fixgate => {
                let (daemon, mqtt_port) = start_with_broker(
                    dir.path(),
                    "max_connections = 4000\n",
                    "[devices]\nmax_devices = 10000\n",
                );
                let client = SseClient::connect(daemon.port, "", None);
                assert_eq!(client.status, 200, "GET /events");
                Broker {
                    pid: daemon.child.id(),
                    mqtt_port,
                    daemon: Some(daemon),
                    mosquitto: None,
                    sub: None,
                    reader: Reader::sse(client),
                    _dir: dir,
                }
            }
            Kind::Mosquitto => {
                let mosquitto = Mosquitto::start(dir.path());
                let port = mosquitto.port;
                // mosquitto_sub calls fflush(stdout) after every message, so a
                // pipe gets each line at once (checked: no stdbuf needed).
                let mut sub = Command::new("mosquitto_sub")
                    .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "fleet/#"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("mosquitto_sub (apt install mosquitto-clients)");
                let stdout = sub.stdout.take().expect("mosquitto_sub stdout");
                let reader = Reader::lines(stdout);
                // Publish probes until one comes back: then the subscription is live.
                let deadline = Instant::now() + Duration::from_secs(10);
                while reader.other.load(Ordering::Relaxed) == 0 {
                    assert!(Instant::now() < deadline, "mosquitto_sub never subscribed");
                    assert!(mosquitto_pub(port, "fleet/probe", b"probe", None));
                    std::thread::sleep(Duration::from_millis(50));
                }
                Broker {
                    pid: mosquitto.pid(),
                    mqtt_port: port,
                    daemon: None,
                    mosquitto: Some(mosquitto),
                    sub: Some(sub),
                    reader,
                    _dir: dir,
                }
            }
        }
    }

    /// Fixes the broker took in: stored fixes for fixgate, lines for mosquitto.
    fn taken(&self) -> u64 {
        match &self.daemon {
            Some(daemon) => daemon
                .metric_with("fixgate_fixes_accepted_total", &[("source", "mqtt")])
                .unwrap_or(0.0) as u64,
            None => self.reader.count.load(Ordering::Relaxed),
        }
    }

    fn sub_pid(&self) -> Option<u32> {
        self.sub.as_ref().map(Child::id)
    }
}

/// One arrival at the reader: when, and how long after the fix's time.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    at: Instant,
    latency_ms: f64,
}

/// A thread reading SSE `position` events or `mosquitto_sub` lines.
struct Reader {
    count: Arc<AtomicU64>,
    other: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: JoinHandle<Vec<Arrival>>,
}

impl Reader {
    fn sse(client: SseClient) -> Reader {
        let (count, other) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, s) = (count.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut out = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let Some(event) = client.next(Duration::from_millis(100)) else {
                    // Timed out, or the stream ended (then do not spin).
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                if event.event.as_deref() != Some("position") {
                    continue;
                }
                let (at, now) = (Instant::now(), now_ms());
                if let Some(time) = fix_time_ms(&event.data) {
                    out.push(Arrival {
                        at,
                        latency_ms: now - time,
                    });
                }
                c.fetch_add(1, Ordering::Relaxed);
            }
            out
        });
        Reader {
            count,
            other,
            stop,
            thread,
        }
    }

    fn lines(stdout: impl std::io::Read + Send + 'static) -> Reader {
        let (count, other) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, o) = (count.clone(), other.clone());
        let thread = std::thread::spawn(move || {
            let mut out = Vec::new();
            // Ends at EOF, when mosquitto_sub is killed.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let (at, now) = (Instant::now(), now_ms());
                match fix_time_ms(&line) {
                    Some(time) => {
                        out.push(Arrival {
                            at,
                            latency_ms: now - time,
                        });
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            out
        });
        Reader {
            count,
            other,
            stop,
            thread,
        }
    }
}

/// The wall clock in milliseconds since the epoch.
fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The `"time"` of a fix in JSON, in milliseconds since the epoch.
fn fix_time_ms(json: &str) -> Option<f64> {
    let key = "\"time\":\"";
    let start = json.find(key)? + key.len();
    let end = start + json[start..].find('"')?;
    let time = chrono::DateTime::parse_from_rfc3339(&json[start..end]).ok()?;
    Some(time.timestamp_micros() as f64 / 1000.0)
}

/// CPU ticks of everything a step watches, read at one moment.
#[derive(Debug, Clone, Copy)]
struct Ticks {
    at: Instant,
    broker: u64,
    sub: u64,
    this: u64,
    machine: u64,
}

impl Ticks {
    fn read(broker: &Broker) -> Ticks {
        Ticks {
            at: Instant::now(),
            broker: cpu_ticks(broker.pid).unwrap_or(0),
            sub: broker.sub_pid().and_then(cpu_ticks).unwrap_or(0),
            this: cpu_ticks(std::process::id()).unwrap_or(0),
            machine: machine_busy_ticks(),
        }
    }
}

/// CPU over a window, in % of one core.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    broker: f64,
    sub: f64,
    simulator: f64,
    other: f64,
    machine: f64,
}

impl Cpu {
    /// Between two readings; `simulator` is the simulator's share already.
    fn between(a: Ticks, b: Ticks, simulator: f64) -> Cpu {
        let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
        let pct = |ticks: u64| ticks as f64 / clock_ticks() / secs * 100.0;
        let (broker, sub, this, machine) = (
            pct(b.broker.saturating_sub(a.broker)),
            pct(b.sub.saturating_sub(a.sub)),
            pct(b.this.saturating_sub(a.this)),
            pct(b.machine.saturating_sub(a.machine)),
        );
        Cpu {
            broker,
            sub,
            simulator,
            other: (machine - broker - sub - this - simulator).max(0.0),
            machine,
        }
    }
}

/// A `fixgate simulate` process, its output in files.
struct Simulator {
    child: Child,
    started: Instant,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// What the simulator did.
#[derive(Debug, Clone, Default)]
struct SimResult {
    summary: String,
    sent: u64,
    failed: u64,
    /// `utime + stime` in seconds, from `wait4`.
    cpu_s: f64,
    wall: Duration,
    /// Connections that failed at least once ("connection failed; retrying").
    connect_failures: usize,
}

impl Simulator {
    fn spawn(dir: &Path, port: u16, load: Load, run: Duration) -> Simulator {
        let stdout = dir.join(format!("simulate-{port}.out"));
        let stderr = dir.join(format!("simulate-{port}.err"));
        let child = Command::new(env!("CARGO_BIN_EXE_fixgate"))
            .arg("simulate")
            .args(["--mqtt", &format!("127.0.0.1:{port}")])
            .args(["--devices", &load.devices.to_string()])
            .args(["--rate", &load.rate_hz.to_string()])
            .args(["--duration", &format!("{}ms", run.as_millis())])
            .args(["--seed", "1"])
            .args([
                "--connections",
                if load.shared { "shared" } else { "per-device" },
            ])
            .stdout(std::fs::File::create(&stdout).expect("simulator stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("simulator stderr file"))
            .spawn()
            .expect("start fixgate simulate");
        Simulator {
            child,
            started: Instant::now(),
            stdout,
            stderr,
        }
    }

    /// Waits for the exit (reaping it with `wait4` for its CPU times).
    fn finish(self, run: Duration) -> SimResult {
        let pid = self.child.id() as libc::pid_t;
        let deadline = Instant::now() + run + Duration::from_secs(60);
        let mut status: libc::c_int = 0;
        // SAFETY: rusage is plain old data; all zeroes is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: wait4 writes only into the two values we own; the pid
            // is our child, not yet reaped (std's Child never waited on it).
            let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
            if reaped == pid {
                break;
            }
            assert!(reaped == 0, "wait4 on the simulator failed");
            if Instant::now() > deadline {
                let mut child = self.child;
                let _ = child.kill();
                panic!(
                    "fixgate simulate did not end:\n{}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let wall = self.started.elapsed();
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "fixgate simulate failed ({status}):\n{stderr}"
        );
        let summary = std::fs::read_to_string(&self.stdout)
            .unwrap_or_default()
            .trim()
            .to_owned();
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        SimResult {
            sent: summary_field(&summary, "sent") as u64,
            failed: summary_field(&summary, "failed") as u64,
            cpu_s: seconds(usage.ru_utime) + seconds(usage.ru_stime),
            wall,
            connect_failures: stderr.matches("MQTT connection failed").count(),
            summary,
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Latency {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Latency {
    fn of(mut ms: Vec<f64>) -> Latency {
        if ms.is_empty() {
            return Latency::default();
        }
        ms.sort_unstable_by(f64::total_cmp);
        let pct = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
        Latency {
            n: ms.len(),
            p50: pct(0.50),
            p99: pct(0.99),
            max: ms[ms.len() - 1],
        }
    }

    fn cells(&self) -> String {
        if self.n == 0 {
            return "— | — | — | 0".to_owned();
        }
        format!(
            "{} | {} | {} | {}",
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            self.n
        )
    }
}

fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// Everything one run of one broker under one load gave.
#[derive(Debug, Clone)]
struct Step {
    kind: Kind,
    load: Load,
    run: Duration,
    sim: SimResult,
    /// Fixes stored (fixgate) or lines printed (mosquitto).
    taken: u64,
    /// Events or lines that reached the reader.
    delivered: u64,
    /// From the start of the simulator to the last arrival.
    last_arrival: Duration,
    first_arrival: Duration,
    latency: Latency,
    /// Arrivals before the steady window (left out of `latency`) and their max.
    early: (usize, f64),
    cpu: Cpu,
    rss_kib: u64,
    hwm_kib: u64,
    /// fixgate only: drops by reason, refused inputs, broker error kinds.
    counters: String,
    /// WARN and ERROR lines of the gateway log, counted by message.
    log: BTreeMap<String, usize>,
}

impl Step {
    /// Fixes taken per second: over the run, or longer if they trailed in.
    fn rate(&self) -> f64 {
        let span = (self.last_arrival.saturating_sub(self.first_arrival)).max(self.run);
        self.taken as f64 / span.as_secs_f64()
    }

    fn lost(&self) -> u64 {
        self.sim.sent.saturating_sub(self.taken)
    }

    /// The simulator offered (nearly) the nominal load.
    fn offered_in_full(&self) -> bool {
        self.sim.sent as f64 >= 0.95 * self.load.offered() * self.run.as_secs_f64()
            && self.sim.failed == 0
    }

    fn sustained(&self) -> bool {
        self.offered_in_full()
            && self.taken == self.sim.sent
            && self.delivered == self.sim.sent
            && self.rate() >= 0.95 * self.load.offered()
    }

    fn verdict(&self) -> String {
        if self.sustained() {
            "yes".to_owned()
        } else if !self.offered_in_full() {
            format!(
                "simulator short ({} sent, {} failed)",
                self.sim.sent, self.sim.failed
            )
        } else if self.lost() > 0 {
            let stalled = self.last_arrival + Duration::from_secs(1) < self.run;
            if stalled {
                format!(
                    "**no: intake stopped at {:.1} s**",
                    self.last_arrival.as_secs_f64()
                )
            } else {
                "**no: lost**".to_owned()
            }
        } else {
            "no: fell behind".to_owned()
        }
    }

    fn print_log(&self) {
        eprintln!(
            "{} {} for {:.0} s: {}; taken {}, at reader {}{}",
            self.kind.name(),
            self.load.describe(),
            self.run.as_secs_f64(),
            self.sim.summary,
            self.taken,
            self.delivered,
            if self.counters.is_empty() {
                String::new()
            } else {
                format!("; {}", self.counters)
            }
        );
        if self.kind == Kind::Fixgate {
            if self.log.is_empty() {
                eprintln!("  gateway log: no WARN or ERROR lines");
            }
            for (line, n) in &self.log {
                eprintln!("  gateway log {n}×: {line}");
            }
        }
    }

    fn assert_complete(&self) {
        assert!(self.sim.sent > 0, "{:?}", self.sim);
        assert_eq!(self.sim.failed, 0, "{}", self.sim.summary);
        assert_eq!(
            self.taken,
            self.sim.sent,
            "{} {}",
            self.kind.name(),
            self.sim.summary
        );
        assert_eq!(
            self.delivered,
            self.sim.sent,
            "{} {}",
            self.kind.name(),
            self.sim.summary
        );
        assert!(self.latency.n > 0, "no latency samples");
        assert!(self.rss_kib > 0, "no VmRSS for {}", self.kind.name());
        if self.kind == Kind::Fixgate {
            assert!(
                !self.log.keys().any(|l| l.contains("ERROR")),
                "{:?}",
                self.log
            );
        }
    }
}

/// Starts a broker, publishes `load` into it for `run`, drains, measures.
fn run_step(kind: Kind, load: Load, run: Duration, steady_after: Duration) -> Step {
    let broker = Broker::start(kind);
    let sim_dir = tempfile::tempdir().expect("temp dir");
    let before = Ticks::read(&broker);
    let sim = Simulator::spawn(sim_dir.path(), broker.mqtt_port, load, run);
    let t0 = sim.started;
    let steady_from = if steady_after.is_zero() {
        before
    } else {
        std::thread::sleep((t0 + steady_after).saturating_duration_since(Instant::now()));
        Ticks::read(&broker)
    };
    let sim = sim.finish(run);
    let after = Ticks::read(&broker);
    // The simulator's CPU over its whole life, as a share of the window.
    let simulator = sim.cpu_s / sim.wall.as_secs_f64() * 100.0;
    let cpu = Cpu::between(steady_from, after, simulator);

    // Drain: until everything sent arrived, or nothing moved for 3 s.
    let drain_deadline = Instant::now() + Duration::from_secs(20);
    let mut last = (broker.taken(), broker.reader.count.load(Ordering::Relaxed));
    let mut moved = Instant::now();
    loop {
        let now = (broker.taken(), broker.reader.count.load(Ordering::Relaxed));
        if now.0 >= sim.sent && now.1 >= sim.sent {
            break;
        }
        if now != last {
            last = now;
            moved = Instant::now();
        }
        if moved.elapsed() > Duration::from_secs(3) || Instant::now() > drain_deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let taken = broker.taken();
    let (rss_kib, hwm_kib) = memory_kib(broker.pid);
    let (counters, log) = match &broker.daemon {
        Some(daemon) => gateway_state(daemon),
        None => (String::new(), BTreeMap::new()),
    };

    let Broker {
        daemon,
        mosquitto,
        mut sub,
        reader,
        ..
    } = broker;
    reader.stop.store(true, Ordering::Relaxed);
    if let Some(sub) = sub.as_mut() {
        let _ = sub.kill();
        let _ = sub.wait();
    }
    let arrivals = reader.thread.join().expect("reader thread");
    drop((daemon, mosquitto));

    let delivered = arrivals.len() as u64;
    let since = |a: &Arrival| a.at.saturating_duration_since(t0);
    let first_arrival = arrivals.first().map(since).unwrap_or_default();
    let last_arrival = arrivals.last().map(since).unwrap_or_default();
    let (steady, early): (Vec<Arrival>, Vec<Arrival>) =
        arrivals.into_iter().partition(|a| since(a) >= steady_after);
    Step {
        kind,
        load,
        run,
        sim,
        taken,
        delivered,
        first_arrival,
        last_arrival,
        latency: Latency::of(steady.iter().map(|a| a.latency_ms).collect()),
        early: (
            early.len(),
            early.iter().map(|a| a.latency_ms).fold(0.0, f64::max),
        ),
        cpu,
        rss_kib,
        hwm_kib,
        counters,
        log,
    }
}

/// The gateway's drop/refusal counters in one line, and its WARN/ERROR lines.
fn gateway_state(daemon: &Daemon) -> (String, BTreeMap<String, usize>) {
    let text = common::get(daemon.port, "/metrics").unwrap_or_default();
    let counters: Vec<String> = text
        .lines()
        .filter(|l| {
            [
                "fixgate_fixes_dropped_total",
                "fixgate_ingest_rejected_total",
                "fixgate_mqtt_broker_errors_total",
                "fixgate_fixes_lost_total",
                "fixgate_mqtt_refused_total",
                "fixgate_sse_resets_total",
            ]
            .iter()
            .any(|m| l.starts_with(m))
        })
        .map(|l| l.trim_start_matches("fixgate_").to_owned())
        .collect();
    let mut log = BTreeMap::new();
    for line in daemon.log_text().lines() {
        if line.contains(" WARN ") || line.contains(" ERROR ") {
            // Without the timestamp, and with connection ids and counts of
            // suppressed repeats blanked, so repeats group together.
            let text = line.split_once(' ').map_or(line, |(_, rest)| rest);
            let text: String = text
                .split(' ')
                .map(|w| {
                    if w.starts_with("suppressed=") {
                        "suppressed=N"
                    } else if w.chars().any(|c| c.is_ascii_digit())
                        && w.chars().all(|c| c.is_ascii_digit() || c == ',')
                    {
                        "N"
                    } else {
                        w
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            *log.entry(text).or_insert(0) += 1;
        }
    }
    (counters.join(", "), log)
}

fn mosquitto_version() -> String {
    Command::new("mosquitto")
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "mosquitto (version unknown)".to_owned())
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn print_ladder(plan: &Plan, steps: &[Step]) {
    println!(
        "\n## Ingest ladder: fresh broker per step, {:.0} s each, QoS 1, one shared connection\n",
        plan.step.as_secs_f64()
    );
    println!(
        "fixgate: stored = fixgate_fixes_accepted_total{{source=\"mqtt\"}}; mosquitto: lines printed by mosquitto_sub."
    );
    println!(
        "CPU in % of one core over the run (machine = all processes, 200% = both cores busy).\n"
    );
    println!(
        "| offered | broker | sent | stored / delivered | lost | rate /s | sustained | p50 ms | p99 ms | max ms | n | broker CPU | sim CPU | other CPU | machine | RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for s in steps {
        println!(
            "| {} ({}) | {} | {} | {} | {} | {:.0} | {} | {} | {:.0}% | {:.0}% | {:.0}% | {:.0}% | {} |",
            s.load.offered(),
            s.load.describe(),
            s.kind.name(),
            s.sim.sent,
            s.taken,
            s.lost(),
            s.rate(),
            s.verdict(),
            s.latency.cells(),
            s.cpu.broker,
            s.cpu.simulator,
            s.cpu.other,
            s.cpu.machine,
            mib(s.rss_kib)
        );
    }
    for kind in [Kind::Fixgate, Kind::Mosquitto] {
        let best = highest_sustained(steps, kind);
        println!(
            "\nhighest sustained, {}: {}",
            kind.name(),
            best.map_or("none of the steps".to_owned(), |s| format!(
                "{:.0} msgs/s ({:.0} stored/delivered per s){}",
                s.load.offered(),
                s.rate(),
                if steps
                    .iter()
                    .filter(|t| t.kind == kind)
                    .all(|t| t.load.offered() <= s.load.offered())
                {
                    " — the top of the ladder, so a lower bound"
                } else {
                    ""
                }
            ))
        );
    }
}

fn highest_sustained(steps: &[Step], kind: Kind) -> Option<&Step> {
    steps
        .iter()
        .filter(|s| s.kind == kind && s.sustained())
        .max_by(|a, b| a.load.offered().total_cmp(&b.load.offered()))
}

fn print_fleet(plan: &Plan, fleet: &[Step]) {
    println!(
        "\n## Fleet: {} for {:.0} s, one SSE client / one mosquitto_sub\n",
        plan.fleet.describe(),
        plan.fleet_run.as_secs_f64()
    );
    println!(
        "Steady window: from {:.1} s after the simulator started to its end (the connection storm left out).\n",
        plan.steady_after.as_secs_f64()
    );
    let f = |kind: Kind| fleet.iter().find(|s| s.kind == kind);
    let (Some(fg), Some(mq)) = (f(Kind::Fixgate), f(Kind::Mosquitto)) else {
        return;
    };
    println!(
        "| figure | fixgate (embedded server) | mosquitto + mosquitto_sub | fixgate / mosquitto |"
    );
    println!("|---|---|---|---|");
    let row = |name: &str, a: String, b: String, ratio: String| {
        println!("| {name} | {a} | {b} | {ratio} |");
    };
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}×", a / b)
        } else {
            "—".to_owned()
        }
    };
    row(
        "sent → stored / delivered",
        format!("{} → {}", fg.sim.sent, fg.taken),
        format!("{} → {}", mq.sim.sent, mq.taken),
        String::new(),
    );
    row(
        "simulator connections that had to retry",
        fg.sim.connect_failures.to_string(),
        mq.sim.connect_failures.to_string(),
        String::new(),
    );
    row(
        "latency p50 (steady)",
        format!("{} ms", ms(fg.latency.p50)),
        format!("{} ms", ms(mq.latency.p50)),
        ratio(fg.latency.p50, mq.latency.p50),
    );
    row(
        "latency p99 (steady)",
        format!("{} ms", ms(fg.latency.p99)),
        format!("{} ms", ms(mq.latency.p99)),
        ratio(fg.latency.p99, mq.latency.p99),
    );
    row(
        "latency max (steady)",
        format!("{} ms", ms(fg.latency.max)),
        format!("{} ms", ms(mq.latency.max)),
        ratio(fg.latency.max, mq.latency.max),
    );
    row(
        "samples (steady)",
        fg.latency.n.to_string(),
        mq.latency.n.to_string(),
        String::new(),
    );
    row(
        "before the window: samples, max latency",
        format!("{}, {} ms", fg.early.0, ms(fg.early.1)),
        format!("{}, {} ms", mq.early.0, ms(mq.early.1)),
        String::new(),
    );
    row(
        "broker CPU (steady, % of one core)",
        format!("{:.1}%", fg.cpu.broker),
        format!("{:.1}% (+ mosquitto_sub {:.1}%)", mq.cpu.broker, mq.cpu.sub),
        ratio(fg.cpu.broker, mq.cpu.broker),
    );
    row(
        "simulator CPU (whole run)",
        format!("{:.1}%", fg.cpu.simulator),
        format!("{:.1}%", mq.cpu.simulator),
        String::new(),
    );
    row(
        "other processes on the machine",
        format!("{:.0}%", fg.cpu.other),
        format!("{:.0}%", mq.cpu.other),
        String::new(),
    );
    row(
        "VmRSS at the end",
        format!("{} MiB", mib(fg.rss_kib)),
        format!("{} MiB", mib(mq.rss_kib)),
        ratio(fg.rss_kib as f64, mq.rss_kib as f64),
    );
    row(
        "VmHWM (peak)",
        format!("{} MiB", mib(fg.hwm_kib)),
        format!("{} MiB", mib(mq.hwm_kib)),
        ratio(fg.hwm_kib as f64, mq.hwm_kib as f64),
    );
}

fn print_summary(plan: &Plan, ladder: &[Step], fleet: &[Step]) {
    println!("\n## fixgate / mosquitto\n");
    println!("| figure | fixgate | mosquitto | ratio |");
    println!("|---|---|---|---|");
    let (fg, mq) = (
        highest_sustained(ladder, Kind::Fixgate),
        highest_sustained(ladder, Kind::Mosquitto),
    );
    let rate = |s: Option<&Step>| s.map_or(0.0, |s| s.load.offered());
    println!(
        "| highest sustained offered rate | {:.0} msgs/s | {:.0} msgs/s | {} |",
        rate(fg),
        rate(mq),
        if rate(mq) > 0.0 {
            format!("{:.2}×", rate(fg) / rate(mq))
        } else {
            "—".to_owned()
        }
    );
    let pair = |steps: &[Step], load: f64, name: &str| {
        let find = |kind| {
            steps
                .iter()
                .find(|s| s.kind == kind && s.load.offered() == load)
        };
        if let (Some(a), Some(b)) = (find(Kind::Fixgate), find(Kind::Mosquitto)) {
            println!(
                "| latency p50 / p99, {name} | {} / {} ms | {} / {} ms | {:.1}× / {:.1}× |",
                ms(a.latency.p50),
                ms(a.latency.p99),
                ms(b.latency.p50),
                ms(b.latency.p99),
                a.latency.p50 / b.latency.p50.max(1e-3),
                a.latency.p99 / b.latency.p99.max(1e-3),
            );
        }
    };
    pair(
        fleet,
        plan.fleet.offered(),
        &format!("{} (steady)", plan.fleet.describe()),
    );
    if let Some(top) = fg {
        pair(
            ladder,
            top.load.offered(),
            &format!("{:.0}/s, fixgate's highest sustained", top.load.offered()),
        );
    }
}
