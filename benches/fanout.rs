//! The SSE feed at depot scale against nginx + nchan, in one run (issue 18,
//! "Figures for BENCHMARKS.md").
//!
//! `cargo bench --bench fanout` (release binary). For every cell of the
//! matrix — N ∈ {100, 1,000, 10,000} concurrent SSE clients × R ∈ {100,
//! 1,000} events/s — three runs, each on a fresh server:
//!
//! 1. **fixgate**: the daemon on a config of the bench's own (store in a temp
//!    dir, `[mqtt] broker = "off"`, `feed.max_clients` and
//!    `feed.max_connections` raised for N), N clients on `/events`, the
//!    events posted to `POST /api/fixes` as one array per 10 ms tick;
//! 2. **nchan**: Debian's nginx with `libnginx-mod-nchan`, one worker process
//!    (fixgate's async runtime has one worker per core: the bench prints its
//!    threads), a config of the bench's own in a temp dir, N clients on an
//!    `nchan_subscriber eventsource` location, every event posted on its own
//!    to an `nchan_publisher` location (nchan takes one message per
//!    request). Skipped, saying so, when nginx or the module is missing.
//!    Either server gets its requests pipelined on one keep-alive
//!    connection, on schedule, the answers read by another thread: nchan
//!    answers a publish only once every subscriber has the message, and
//!    waiting for that would let its answer time set the offered rate;
//! 3. **fixgate with 10 more clients on `?max_rate=2s`**, to show whether
//!    coalescing clients change the others' latency.
//!
//! **The events.** Event `k` (its serial) is a fixgate JSON position of
//! device `bus-(k mod R)` (R devices at 1 Hz, a depot's fleet): `time` is the
//! wall clock when it was sent (milliseconds, as the feed carries it), `alt`
//! the microseconds of that millisecond in decimetres (0.0–99.9, which the
//! store keeps exactly), `lon` = 5 + k·10⁻⁷ (the serial; a device drifts
//! east by at most 7 m/s) and `lat` one per device. Both servers get the same
//! JSON objects and deliver them unchanged, so every client reads the serial
//! and the send time back from what it receives: latency with microsecond
//! resolution (receive time at the bench − send time), and an order check.
//! The daemon's `duplicates` and `max_speed` filters are off so that a
//! publisher catching up after a stall (two fixes of a device within a
//! millisecond) cannot lose events.
//!
//! **The clients** are tasks on this process's tokio runtime (one worker per
//! core), raw TCP with a minimal HTTP/1.1 and SSE parser, sending what a
//! browser's `EventSource` sends. They share the machine's cores with the
//! server: the bench reports its own CPU, and where the machine rather than
//! the server is the limit.
//!
//! **Figures, per run.** Before any event: the server's RSS alone and with
//! the clients connected and idle (per client: the difference ÷ the clients
//! connected, N or N + 10), with
//! fixgate's `fixgate_sse_clients` or nchan's "active subscribers". Then a
//! warm-up (every device posts once, so fixgate's status events are out of
//! the way) and the measured phase: the server's CPU (`utime + stime` from
//! `/proc/<pid>/stat`, nginx's master and worker together) over the window
//! from the first measured event to the end of the drain, divided by the
//! position events all clients received in that window; delivered/expected
//! for the measured events; p50/p99/max latency over them.
//!
//! `cargo bench --bench fanout -- 1000x100` runs the cells named (clients x
//! events/s), `-- nchan` or `-- fixgate` one server; `FIXGATE_FANOUT_PERF=DIR` records a `perf record -e cpu-clock
//! -g` profile of each server over each measured window into DIR.
//!
//! Run as a test (`cargo test --bench fanout`) it runs 20 clients (and 2 on
//! `?max_rate=2s`) at 50 events/s for 2 s against fixgate, and against nchan
//! when nginx and the module are installed (skipped otherwise), and asserts
//! that every plain client received every event once and in order. Its
//! figures mean nothing.

#[path = "../tests/common/mod.rs"]
mod common;
use common::proc_stat::{clock_ticks, cpu_ticks, load_average, machine_busy_ticks};

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use common::{free_port, machine, memory_kib};

/// Where the publisher posts a tick's events: every 10 ms.
const TICK: Duration = Duration::from_millis(10);
/// The devices' base position (the demo depot) and the serial's scale.
const LAT0: f64 = 52.0907;
const LON0: f64 = 5.0;
const SERIAL_DEGREES: f64 = 1e-7;
/// Clients on `?max_rate=2s` in the coalescing runs.
const COALESCED_CLIENTS: usize = 10;
/// Connections opened at once while clients connect.
const CONNECTING: usize = 256;
/// A client's read buffer.
const READ_BUFFER: usize = 4096;
/// Histogram shards the clients record latencies into.
const SHARDS: usize = 32;
/// Where Debian's libnginx-mod-nchan puts the module.
const NCHAN_MODULE: &str = "/usr/lib/nginx/modules/ngx_nchan_module.so";

/// One cell of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cell {
    clients: usize,
    rate: u32,
}

struct Plan {
    full: bool,
    cells: Vec<Cell>,
    /// Idle time before each RSS reading.
    settle: Duration,
    warmup: Duration,
    measure: Duration,
    /// The longest wait after the last event for the clients to get it.
    drain: Duration,
    /// Drain ends early when nothing arrived for this long.
    quiet: Duration,
    /// Clients on `?max_rate=2s` in the coalescing runs.
    coalesced: usize,
    /// A run is cut short when a server's RSS passes this (an overloaded
    /// server buffering for clients that cannot keep up).
    rss_limit_kib: u64,
}

impl Plan {
    fn new(full: bool, only: &[Cell]) -> Plan {
        if full {
            let all = [100, 1_000, 10_000]
                .into_iter()
                .flat_map(|clients| [100, 1_000].map(|rate| Cell { clients, rate }))
                .filter(|c| only.is_empty() || only.contains(c))
                .collect();
            Plan {
                full,
                cells: all,
                settle: Duration::from_secs(2),
                warmup: Duration::from_secs(3),
                measure: Duration::from_secs(15),
                drain: Duration::from_secs(10),
                quiet: Duration::from_secs(2),
                coalesced: COALESCED_CLIENTS,
                rss_limit_kib: 4 << 20,
            }
        } else {
            Plan {
                full,
                cells: vec![Cell {
                    clients: 20,
                    rate: 50,
                }],
                settle: Duration::from_millis(200),
                warmup: Duration::from_millis(500),
                measure: Duration::from_secs(2),
                drain: Duration::from_secs(5),
                quiet: Duration::from_secs(3),
                coalesced: 2,
                rss_limit_kib: 1 << 20,
            }
        }
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    // `cargo bench --bench fanout -- 1000x100` runs that cell alone.
    let only: Vec<Cell> = std::env::args()
        .skip(1)
        .filter_map(|a| {
            let (clients, rate) = a.split_once('x')?;
            Some(Cell {
                clients: clients.parse().ok()?,
                rate: rate.parse().ok()?,
            })
        })
        .collect();
    // ... and `-- nchan` (or `fixgate`) that server alone.
    let peers: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a == "fixgate" || a == "nchan")
        .collect();
    let wanted = |peer: Peer| peers.is_empty() || peers.iter().any(|p| p == peer.name());
    let plan = Plan::new(full, &only);
    let started = Instant::now();
    println!("machine: {}", machine());
    println!("load average at start: {}", load_average());
    println!(
        "mode: {}",
        if full {
            "full (release binary)"
        } else {
            "quick self-check (tiny load; figures meaningless)"
        }
    );
    let most = plan.cells.iter().map(|c| c.clients).max().unwrap_or(0) + plan.coalesced;
    // The clients' sockets, plus the publisher, files and the runtime.
    fixgate::util::fd_limit::raise(most as u64 + 256, "the bench's SSE clients");
    let nchan = Nchan::find();
    match &nchan {
        Ok(n) => println!("peer: {}", n.version),
        Err(why) => println!("peer: nginx + nchan SKIPPED: {why}"),
    }
    let perf_dir = std::env::var_os("FIXGATE_FANOUT_PERF").map(PathBuf::from);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .expect("the clients' runtime");
    println!(
        "clients: this process, a tokio runtime of {cores} workers; the publisher on a thread of its own"
    );
    println!(
        "phases per run: settle {:.1} s, warm-up {:.1} s, measured {:.1} s, drain up to {:.1} s",
        plan.settle.as_secs_f64(),
        plan.warmup.as_secs_f64(),
        plan.measure.as_secs_f64(),
        plan.drain.as_secs_f64()
    );

    let mut results = Vec::new();
    for cell in &plan.cells {
        let mut runs = vec![(Peer::Fixgate, 0)];
        if nchan.is_ok() {
            runs.push((Peer::Nchan, 0));
        }
        // Quick mode folds the coalescing clients into its one fixgate run.
        if plan.full {
            runs.push((Peer::Fixgate, plan.coalesced));
        } else {
            runs[0].1 = plan.coalesced;
        }
        for (peer, coalesced) in runs.into_iter().filter(|(peer, _)| wanted(*peer)) {
            let spec = RunSpec {
                cell: *cell,
                peer,
                coalesced,
            };
            println!("\n## {}", spec.describe());
            let result = run(
                &runtime,
                &plan,
                &spec,
                nchan.as_ref().ok(),
                perf_dir.as_deref(),
            );
            result.print();
            results.push(result);
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    print_table(&plan, &results);
    if !plan.full {
        for result in &results {
            result.assert_complete();
        }
        println!("\nquick check: every plain client received every event once, in order");
    }
    println!("\nload average at the end: {}", load_average());
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------
// The servers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Fixgate,
    Nchan,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Fixgate => "fixgate",
            Peer::Nchan => "nchan",
        }
    }
}

/// Debian's nginx and the nchan module, when installed.
struct Nchan {
    nginx: PathBuf,
    module: PathBuf,
    version: String,
}

impl Nchan {
    fn find() -> Result<Nchan, String> {
        let install = "apt install nginx libnginx-mod-nchan";
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| format!("nginx is not installed ({install})"))?;
        let module = PathBuf::from(NCHAN_MODULE);
        if !module.exists() {
            return Err(format!("{NCHAN_MODULE} is missing ({install})"));
        }
        let output = Command::new(&nginx)
            .arg("-v")
            .output()
            .map_err(|e| format!("{}: {e}", nginx.display()))?;
        let nginx_version = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        let nchan_version = Command::new("dpkg-query")
            .args(["-W", "-f", "${Version}", "libnginx-mod-nchan"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "unknown version".to_owned());
        Ok(Nchan {
            nginx,
            module,
            version: format!(
                "{nginx_version}, libnginx-mod-nchan {nchan_version}, worker_processes 1"
            ),
        })
    }
}

/// A server under test, killed on drop.
struct Server {
    peer: Peer,
    port: u16,
    child: Child,
    /// Whose CPU and memory count: fixgate, or nginx's master and worker.
    pids: Vec<u32>,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Server {
    fn start(peer: Peer, clients: usize, nchan: Option<&Nchan>) -> Server {
        match peer {
            Peer::Fixgate => Server::fixgate(clients),
            Peer::Nchan => Server::nchan(nchan.expect("nchan is installed"), clients),
        }
    }

    fn fixgate(clients: usize) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = dir.path().join("fixgate.toml");
        // Room for every client, the publisher's connection and the
        // bench's /metrics requests.
        let text = format!(
            "[store]\npath = \"{store}\"\n\n\
             [feed]\nlisten = \"127.0.0.1:{port}\"\nmax_clients = {max_clients}\nmax_connections = {max_connections}\n\n\
             [mqtt]\nbroker = \"off\"\n\n\
             # A publisher catching up after a stall may send two fixes of a device\n\
             # within a millisecond: no event of the bench may be filtered away.\n\
             [filter]\nduplicates = false\nmax_speed = false\n",
            store = dir.path().join("store").display(),
            max_clients = clients + 16,
            max_connections = clients + 64,
        );
        std::fs::write(&config, text).expect("write the fixgate config");
        let log = dir.path().join("fixgate.log");
        let child = Command::new(env!("CARGO_BIN_EXE_fixgate"))
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("fixgate log file"))
            .spawn()
            .expect("start fixgate");
        let pids = vec![child.id()];
        let mut server = Server {
            peer: Peer::Fixgate,
            port,
            child,
            pids,
            dir,
            log,
        };
        server.wait_until(|s| common::get(s.port, "/healthz").is_ok());
        server
    }

    fn nchan(nchan: &Nchan, clients: usize) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let d = dir.path().display();
        // One worker, as fixgate is one process; its connections and open
        // files raised for every client. Access logging off: fixgate logs no
        // line per request either. The publisher's one keep-alive connection
        // must outlive nginx's default of 1,000 requests. New subscribers
        // start at the newest message, as fixgate's live clients start at
        // its head.
        let conf = format!(
            "load_module {module};\n\
             worker_processes 1;\n\
             worker_rlimit_nofile {files};\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections {connections}; }}\n\
             http {{\n\
             \x20 access_log off;\n\
             \x20 keepalive_requests 100000000;\n\
             \x20 client_body_temp_path {d}/client_body;\n\
             \x20 proxy_temp_path {d}/proxy;\n\
             \x20 fastcgi_temp_path {d}/fastcgi;\n\
             \x20 uwsgi_temp_path {d}/uwsgi;\n\
             \x20 scgi_temp_path {d}/scgi;\n\
             \x20 server {{\n\
             \x20   listen 127.0.0.1:{port} backlog=4096;\n\
             \x20   location = /pub {{ nchan_publisher; nchan_channel_id fleet; }}\n\
             \x20   location = /sub {{\n\
             \x20     nchan_subscriber eventsource;\n\
             \x20     nchan_channel_id fleet;\n\
             \x20     nchan_eventsource_event position;\n\
             \x20     nchan_subscriber_first_message newest;\n\
             \x20   }}\n\
             \x20 }}\n\
             }}\n",
            module = nchan.module.display(),
            files = clients + 1024,
            // nchan takes more than one of nginx's connections per
            // subscriber: at one each, 10,256 were "not enough" for 9,612.
            connections = 2 * clients + 256,
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let log = dir.path().join("nginx.stderr");
        let child = Command::new(&nchan.nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-g")
            .arg(format!("daemon off; pid {d}/nginx.pid;"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("nginx log file"))
            .spawn()
            .expect("start nginx");
        let master = child.id();
        let mut server = Server {
            peer: Peer::Nchan,
            port,
            child,
            pids: vec![master],
            dir,
            log,
        };
        server.wait_until(|s| {
            std::net::TcpStream::connect(("127.0.0.1", s.port)).is_ok()
                && !children_of(master).is_empty()
        });
        server.pids.extend(children_of(master));
        server
    }

    /// Waits up to 20 s for `ready`, failing loudly if the server exits.
    fn wait_until(&mut self, ready: impl Fn(&Server) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) at start:\n{}",
                    self.peer.name(),
                    self.log_text()
                );
            }
            if ready(self) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not come up:\n{}",
                self.peer.name(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        let mut text = std::fs::read_to_string(&self.log).unwrap_or_default();
        if self.peer == Peer::Nchan {
            text.push_str(
                &std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default(),
            );
        }
        text
    }

    fn events_path(&self, coalesced: bool) -> &'static str {
        match (self.peer, coalesced) {
            (Peer::Fixgate, false) => "/events",
            (Peer::Fixgate, true) => "/events?max_rate=2s",
            (Peer::Nchan, _) => "/sub",
        }
    }

    fn publish_path(&self) -> &'static str {
        match self.peer {
            Peer::Fixgate => "/api/fixes",
            Peer::Nchan => "/pub",
        }
    }

    /// `utime + stime` of the server's processes, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        self.pids.iter().filter_map(|p| cpu_ticks(*p)).sum()
    }

    /// `VmRSS` of the server's processes, in KiB.
    fn rss_kib(&self) -> u64 {
        self.pids.iter().map(|p| memory_kib(*p).0).sum()
    }

    /// The clients the server says it holds: fixgate's `fixgate_sse_clients`,
    /// nchan's "active subscribers".
    fn subscribers(&self) -> Option<u64> {
        match self.peer {
            Peer::Fixgate => {
                common::metric_at(self.port, "fixgate_sse_clients", &[]).map(|v| v as u64)
            }
            Peer::Nchan => common::get(self.port, "/pub").ok().and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("active subscribers:"))
                    .and_then(|n| n.trim().parse().ok())
            }),
        }
    }

    /// The server's threads, by name.
    fn threads(&self) -> String {
        let mut names: Vec<(String, usize)> = Vec::new();
        for pid in &self.pids {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for task in tasks.flatten() {
                let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                let comm = comm.trim().to_owned();
                match names.iter_mut().find(|(n, _)| *n == comm) {
                    Some((_, count)) => *count += 1,
                    None => names.push((comm, 1)),
                }
            }
        }
        let total: usize = names.iter().map(|(_, c)| c).sum();
        let list: Vec<String> = names.iter().map(|(n, c)| format!("{n} ×{c}")).collect();
        format!(
            "{total} threads in {} process(es): {}",
            self.pids.len(),
            list.join(", ")
        )
    }

    fn stop(&mut self) {
        // SIGTERM: fixgate's graceful stop, nginx's fast shutdown.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        println!("{} ignored SIGTERM for 20 s: killed", self.peer.name());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // nginx's worker follows its master; make sure, by pid.
        for pid in self.pids.iter().skip(1) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The processes whose parent is `pid` (nginx's workers).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.get(stat.rfind(')')? + 1..)?.to_owned();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// CPU ticks and deliveries at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    server: u64,
    bench: u64,
    machine: u64,
    delivered: u64,
}

impl Sample {
    fn take(server: &Server, shared: &Shared) -> Sample {
        Sample {
            at: Instant::now(),
            server: server.cpu_ticks(),
            bench: cpu_ticks(std::process::id()).unwrap_or(0),
            machine: machine_busy_ticks(),
            delivered: shared.delivered.load(Ordering::Relaxed),
        }
    }
}

// ---------------------------------------------------------------------------
// The events and the publisher

/// The wall clock in microseconds since the epoch.
fn wall_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Event `serial` as fixgate JSON, sent at `send_us`: the same object for
/// both servers, and what both deliver.
fn event_json(serial: u64, devices: u64, send_us: i64, time: &str) -> String {
    let device = serial % devices;
    let lat = LAT0 + device as f64 * 1e-5;
    // Whole steps of 1e-7°, which the store keeps exactly.
    let lat = (lat * 1e7).round() / 1e7;
    let lon = (LON0 / SERIAL_DEGREES + serial as f64) * SERIAL_DEGREES;
    let alt = send_us.rem_euclid(1000) as f64 / 10.0;
    format!(r#"{{"device":"bus-{device}","time":"{time}","lat":{lat},"lon":{lon},"alt":{alt}}}"#)
}

/// RFC 3339 with milliseconds, as the feed writes times.
fn time_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("a time in range")
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// A pipelining HTTP/1.1 client on one keep-alive connection: requests go
/// out on schedule without waiting for the answers, which a thread of its
/// own reads and checks. (Waiting for each answer would let the server's
/// answer time set the offered rate: nchan answers a publish once it has
/// handed the message to every subscriber.)
struct Poster {
    stream: std::net::TcpStream,
    host: String,
    sent: u64,
    /// Answers read so far.
    answered: Arc<AtomicU64>,
    /// Reads the answers: ends with the connection, or the first that was
    /// not 2xx.
    answers: std::thread::JoinHandle<Result<(), String>>,
}

impl Poster {
    fn connect(port: u16) -> Poster {
        let stream =
            std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect the publisher");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let reading = stream.try_clone().expect("clone the publisher's socket");
        reading
            .set_read_timeout(Some(Duration::from_secs(120)))
            .expect("read timeout");
        let answered = Arc::new(AtomicU64::new(0));
        let counting = answered.clone();
        let answers = std::thread::spawn(move || read_answers(BufReader::new(reading), &counting));
        Poster {
            stream,
            host: format!("127.0.0.1:{port}"),
            sent: 0,
            answered,
            answers,
        }
    }

    /// Sends a POST of `body` (its answer is read by the other thread).
    fn post(&mut self, path: &str, body: &str) -> Result<(), String> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.stream
            .write_all(request.as_bytes())
            .map_err(|e| format!("sending publish request {}: {e}", self.sent + 1))?;
        self.sent += 1;
        Ok(())
    }

    /// Ends the connection once every request is answered, or `wait` after
    /// the last was sent; how many were answered, or why not all.
    fn finish(self, wait: Duration) -> Result<u64, String> {
        // Not a half-close: hyper closes at once when the client's side
        // ends, answered or not.
        let deadline = Instant::now() + wait;
        while self.answered.load(Ordering::Relaxed) < self.sent
            && !self.answers.is_finished()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        let ended = self.answers.join().expect("the answer reader panicked");
        let answered = self.answered.load(Ordering::Relaxed);
        match ended {
            _ if answered == self.sent => Ok(answered),
            Err(why) => Err(format!("{why} (after {answered} of {} answers)", self.sent)),
            Ok(()) if Instant::now() >= deadline => Err(format!(
                "{answered} of {} publish requests answered within {:.0} s of the last (the server was behind)",
                self.sent,
                wait.as_secs_f64()
            )),
            Ok(()) => Err(format!(
                "the connection ended after {answered} answers to {} publish requests",
                self.sent
            )),
        }
    }
}

/// Reads HTTP answers (with a `Content-Length`) until the connection ends,
/// counting them into `answered`; fails on one that is not 2xx.
fn read_answers(
    mut stream: BufReader<std::net::TcpStream>,
    answered: &AtomicU64,
) -> Result<(), String> {
    let mut line = String::new();
    loop {
        line.clear();
        match stream.read_line(&mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(err) => return Err(format!("reading publish answers: {err}")),
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an HTTP answer: {line:?}"))?;
        if !(200..300).contains(&status) {
            return Err(format!("answered {status} to a publish"));
        }
        let mut length = 0usize;
        loop {
            line.clear();
            stream
                .read_line(&mut line)
                .map_err(|e| format!("reading an answer's head: {e}"))?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value
                        .trim()
                        .parse()
                        .map_err(|_| format!("bad Content-Length {value:?}"))?;
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err("a chunked answer: the bench reads Content-Length only".into());
                }
            }
        }
        let mut body = vec![0; length];
        stream
            .read_exact(&mut body)
            .map_err(|e| format!("reading an answer's body: {e}"))?;
        answered.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the publisher is to send.
struct Publish {
    peer: Peer,
    port: u16,
    path: &'static str,
    rate: u32,
    /// Warm-up events, then measured ones.
    warmup: u64,
    measured: u64,
    /// Set to stop early (a server over the memory limit).
    stop: Arc<AtomicBool>,
    /// How long answers may take after the last request.
    answer_wait: Duration,
}

/// What the publisher did.
#[derive(Debug, Clone, Default)]
struct Published {
    /// Events sent in all, and of them measured.
    sent: u64,
    measured: u64,
    /// From the first measured event to the last event sent.
    measured_secs: f64,
    /// How late events went out against their schedule: p99 and max, ms.
    late_p99_ms: f64,
    late_max_ms: f64,
    /// Requests sent (all answered 2xx, unless `error` or `behind` says).
    posts: u64,
    /// Why publishing failed (a request not sent or not answered 2xx).
    error: Option<String>,
    /// Requests still unanswered when the bench stopped waiting.
    behind: Option<String>,
}

/// Sends `p`'s events on schedule (event `i` due at `i / rate` s after the
/// start), a tick's worth at a time, without waiting for answers; never
/// skips one, so a server that stops reading (TCP holds the publisher up)
/// gets them late and the run takes longer. Sends the moment the measured
/// events begin on `measuring`.
fn publish(p: Publish, measuring: mpsc::Sender<Instant>) -> Published {
    let mut poster = Poster::connect(p.port);
    let devices = u64::from(p.rate);
    let total = p.warmup + p.measured;
    let mut late = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram");
    let mut out = Published::default();
    let start = Instant::now();
    let mut measure_start = None;
    let mut next = 0u64;
    let mut tick = 0u32;
    'ticks: while next < total && !p.stop.load(Ordering::Relaxed) {
        let at = start + TICK * tick;
        tick += 1;
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let elapsed = start.elapsed().as_secs_f64();
        let due = ((elapsed * f64::from(p.rate)).floor() as u64 + 1).min(total);
        // A catching-up batch holds each device once at most.
        let mut upto = due.min(next + devices);
        // The measured events start a batch of their own.
        if next < p.warmup {
            upto = upto.min(p.warmup);
        }
        if next == p.warmup && upto > next {
            let now = Instant::now();
            measure_start = Some(now);
            let _ = measuring.send(now);
        }
        // How late event `serial` goes out now, in µs.
        let late_us = |serial: u64| {
            let scheduled = start + Duration::from_secs_f64(serial as f64 / f64::from(p.rate));
            Instant::now()
                .saturating_duration_since(scheduled)
                .as_micros() as u64
        };
        while next < upto {
            let send_us = wall_us();
            let time = time_text(send_us.div_euclid(1000));
            let sent = match p.peer {
                Peer::Fixgate => {
                    let fixes: Vec<String> = (next..upto)
                        .map(|serial| {
                            late.saturating_record(late_us(serial));
                            event_json(serial, devices, send_us, &time)
                        })
                        .collect();
                    next = upto;
                    poster.post(p.path, &format!("[{}]", fixes.join(",")))
                }
                // nchan publishes one message per request.
                Peer::Nchan => {
                    late.saturating_record(late_us(next));
                    let body = event_json(next, devices, send_us, &time);
                    next += 1;
                    poster.post(p.path, &body)
                }
            };
            if let Err(why) = sent {
                out.error = Some(why);
                break 'ticks;
            }
        }
    }
    out.measured_secs = measure_start.map_or(0.0, |t| t.elapsed().as_secs_f64());
    out.posts = poster.sent;
    match poster.finish(p.answer_wait) {
        Ok(_) => {}
        // Answers still coming: the server is behind, the run goes on.
        Err(why) if why.contains("was behind") => out.behind = Some(why),
        Err(why) => {
            out.error.get_or_insert(why);
        }
    }
    out.sent = next;
    out.measured = next.saturating_sub(p.warmup);
    out.late_p99_ms = late.value_at_quantile(0.99) as f64 / 1000.0;
    out.late_max_ms = late.max() as f64 / 1000.0;
    out
}

// ---------------------------------------------------------------------------
// The clients

/// What all clients of a run share.
struct Shared {
    /// Latencies of the plain clients' measured events, µs, in shards.
    latency: Vec<Mutex<Histogram<u64>>>,
    /// The same for the clients on `?max_rate`.
    coalesced_latency: Mutex<Histogram<u64>>,
    /// Position events received by all clients.
    delivered: AtomicU64,
    /// Measured events received by the plain clients.
    measured: AtomicU64,
    /// Clients whose stream has begun.
    connected: AtomicUsize,
    /// Clients that failed to connect or were cut off.
    failed: AtomicUsize,
    /// The serials of the measured events: `[from, to)`.
    from: u64,
    to: AtomicU64,
}

fn latency_histogram() -> Histogram<u64> {
    // 1 µs to 10 minutes, three significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram")
}

impl Shared {
    fn new(from: u64, to: u64) -> Shared {
        Shared {
            latency: (0..SHARDS)
                .map(|_| Mutex::new(latency_histogram()))
                .collect(),
            coalesced_latency: Mutex::new(latency_histogram()),
            delivered: AtomicU64::new(0),
            measured: AtomicU64::new(0),
            connected: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            from,
            to: AtomicU64::new(to),
        }
    }

    fn merged(&self) -> Histogram<u64> {
        let mut all = latency_histogram();
        for shard in &self.latency {
            all.add(&*shard.lock().unwrap_or_else(PoisonError::into_inner))
                .expect("same bounds");
        }
        all
    }
}

/// What one client saw.
#[derive(Debug, Clone, Default)]
struct Seen {
    coalesced: bool,
    /// Position events received, and of them measured ones.
    positions: u64,
    measured: u64,
    first: Option<u64>,
    last: Option<u64>,
    /// Serials that did not follow the one before (one less than it, or equal).
    out_of_order: u64,
    /// Serials skipped (a later one came first), and the first such gap.
    skipped: u64,
    first_gap: Option<(u64, u64)>,
    /// Other events (fixgate's status events).
    others: u64,
    bytes: u64,
    /// Why the stream ended before the bench stopped it.
    error: Option<String>,
}

/// One SSE client: connects, reads until `stop`, counts and times what it
/// gets.
#[expect(
    clippy::too_many_arguments,
    reason = "one bench client's whole setup, passed once at spawn"
)]
async fn client(
    id: usize,
    port: u16,
    path: &'static str,
    coalesced: bool,
    shared: Arc<Shared>,
    connecting: Arc<tokio::sync::Semaphore>,
    stop: CancellationToken,
) -> Seen {
    let mut seen = Seen {
        coalesced,
        ..Seen::default()
    };
    let permit = connecting.acquire_owned().await.expect("semaphore");
    let connected = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await;
    let mut stream = match connected {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return failed(&shared, seen, format!("connect: {err}")),
        Err(_) => return failed(&shared, seen, "connect: timed out".into()),
    };
    let _ = stream.set_nodelay(true);
    // What a browser's EventSource sends.
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    );
    if let Err(err) = stream.write_all(request.as_bytes()).await {
        return failed(&shared, seen, format!("send the request: {err}"));
    }
    let mut parser = SseStream::default();
    let mut buf = vec![0u8; READ_BUFFER];
    let mut permit = Some(permit);
    let mut latencies: Vec<u64> = Vec::new();
    let shard = id % SHARDS;
    loop {
        let read = tokio::select! {
            _ = stop.cancelled() => break,
            read = stream.read(&mut buf) => read,
        };
        let n = match read {
            Ok(0) => return failed(&shared, seen, "closed by the server".into()),
            Ok(n) => n,
            Err(err) => return failed(&shared, seen, format!("read: {err}")),
        };
        let now_us = wall_us();
        seen.bytes += n as u64;
        let (from, to) = (shared.from, shared.to.load(Ordering::Relaxed));
        let before = seen.positions;
        let measured_before = seen.measured;
        let fed = parser.feed(&buf[..n], |event| match event {
            Event::Position { serial, send_us } => {
                if let Some(last) = seen.last {
                    if serial <= last {
                        seen.out_of_order += 1;
                    } else if serial > last + 1 {
                        seen.skipped += serial - last - 1;
                        seen.first_gap.get_or_insert((last, serial));
                    }
                }
                seen.first.get_or_insert(serial);
                seen.last = Some(serial);
                seen.positions += 1;
                if (from..to).contains(&serial) {
                    seen.measured += 1;
                    latencies.push((now_us - send_us).max(0) as u64);
                }
            }
            Event::Other => seen.others += 1,
        });
        if let Err(why) = fed {
            return failed(&shared, seen, why);
        }
        if permit.is_some() && parser.begun() {
            // The server has set this client's cursor: it counts as connected.
            permit = None;
            shared.connected.fetch_add(1, Ordering::Relaxed);
        }
        let got = seen.positions - before;
        if got > 0 {
            shared.delivered.fetch_add(got, Ordering::Relaxed);
        }
        if !latencies.is_empty() {
            let histogram = if coalesced {
                &shared.coalesced_latency
            } else {
                shared
                    .measured
                    .fetch_add(seen.measured - measured_before, Ordering::Relaxed);
                &shared.latency[shard]
            };
            let mut histogram = histogram.lock().unwrap_or_else(PoisonError::into_inner);
            for l in latencies.drain(..) {
                histogram.saturating_record(l.max(1));
            }
        }
    }
    seen
}

fn failed(shared: &Shared, mut seen: Seen, why: String) -> Seen {
    shared.failed.fetch_add(1, Ordering::Relaxed);
    seen.error = Some(why);
    seen
}

/// What the parser hands the client.
enum Event {
    /// A position event: the bench's serial and send time.
    Position { serial: u64, send_us: i64 },
    /// Any other event.
    Other,
}

/// A response read as it arrives: the HTTP head, the body (chunked, as
/// hyper sends it, or ended by the connection, as nginx sends nchan's), and
/// the SSE lines in it.
#[derive(Default)]
struct SseStream {
    /// The head, until it is complete.
    head: Vec<u8>,
    body: Option<Framing>,
    /// Body bytes not yet split into lines.
    text: Vec<u8>,
    /// The event being read is a position.
    position: bool,
    /// Whether any body bytes arrived (the server began the stream).
    begun: bool,
}

enum Framing {
    /// Until the connection ends.
    Close,
    Chunked(Chunk),
}

enum Chunk {
    /// Reading a chunk-size line (kept until its newline).
    Size(Vec<u8>),
    /// Bytes of chunk data still to come.
    Data(usize),
    /// The CR LF after a chunk's data still to skip.
    End(usize),
}

impl SseStream {
    fn begun(&self) -> bool {
        self.begun
    }

    /// Takes `bytes` from the socket, calling `on` for each complete event.
    fn feed(&mut self, mut bytes: &[u8], mut on: impl FnMut(Event)) -> Result<(), String> {
        if self.body.is_none() {
            self.head.extend_from_slice(bytes);
            let Some(end) = find(&self.head, b"\r\n\r\n") else {
                if self.head.len() > 64 * 1024 {
                    return Err("no end to the response head".into());
                }
                return Ok(());
            };
            let head = String::from_utf8_lossy(&self.head[..end]).into_owned();
            let status = head.split_whitespace().nth(1).unwrap_or("");
            if status != "200" {
                return Err(format!("answered {}", head.lines().next().unwrap_or("")));
            }
            let chunked = head.lines().any(|l| {
                l.split_once(':').is_some_and(|(name, value)| {
                    name.eq_ignore_ascii_case("transfer-encoding")
                        && value.trim().eq_ignore_ascii_case("chunked")
                })
            });
            self.body = Some(if chunked {
                Framing::Chunked(Chunk::Size(Vec::new()))
            } else {
                Framing::Close
            });
            let rest = std::mem::take(&mut self.head).split_off(end + 4);
            return self.feed(&rest, on);
        }
        match self.body.as_mut() {
            Some(Framing::Close) => self.text.extend_from_slice(bytes),
            Some(Framing::Chunked(chunk)) => {
                while !bytes.is_empty() {
                    match chunk {
                        Chunk::Size(line) => {
                            let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
                                line.extend_from_slice(bytes);
                                break;
                            };
                            line.extend_from_slice(&bytes[..nl]);
                            bytes = &bytes[nl + 1..];
                            let text = String::from_utf8_lossy(line);
                            let hex = text.split(';').next().unwrap_or("").trim();
                            let size = usize::from_str_radix(hex, 16)
                                .map_err(|_| format!("bad chunk size {hex:?}"))?;
                            if size == 0 {
                                return Err("the server ended the stream".into());
                            }
                            *chunk = Chunk::Data(size);
                        }
                        Chunk::Data(left) => {
                            let take = (*left).min(bytes.len());
                            self.text.extend_from_slice(&bytes[..take]);
                            bytes = &bytes[take..];
                            *left -= take;
                            if *left == 0 {
                                *chunk = Chunk::End(2);
                            }
                        }
                        Chunk::End(left) => {
                            let take = (*left).min(bytes.len());
                            bytes = &bytes[take..];
                            *left -= take;
                            if *left == 0 {
                                *chunk = Chunk::Size(Vec::new());
                            }
                        }
                    }
                }
            }
            None => unreachable!("the head was read"),
        }
        if !self.text.is_empty() {
            self.begun = true;
        }
        let mut start = 0;
        while let Some(nl) = self.text[start..].iter().position(|&b| b == b'\n') {
            let line = &self.text[start..start + nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                self.position = false;
            } else if let Some(kind) = line.strip_prefix(b"event: ") {
                self.position = kind == b"position";
                if !self.position {
                    on(Event::Other);
                }
            } else if let Some(data) = line.strip_prefix(b"data: ") {
                if self.position {
                    let event = position(data).ok_or_else(|| {
                        format!("not a bench event: {}", String::from_utf8_lossy(data))
                    })?;
                    on(event);
                }
            }
            start += nl + 1;
        }
        self.text.drain(..start);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The number after `key` in a flat JSON object.
fn number_after(json: &[u8], key: &[u8]) -> Option<f64> {
    let at = find(json, key)? + key.len();
    let len = json[at..].iter().position(|&b| b == b',' || b == b'}')?;
    std::str::from_utf8(&json[at..at + len]).ok()?.parse().ok()
}

/// The serial and send time of a bench event (see the module docs).
fn position(json: &[u8]) -> Option<Event> {
    let lon = number_after(json, b"\"lon\":")?;
    let alt = number_after(json, b"\"alt\":")?;
    let key = b"\"time\":\"";
    let at = find(json, key)? + key.len();
    let time_ms = parse_time_ms(json.get(at..at + 24)?)?;
    let serial = (lon / SERIAL_DEGREES - LON0 / SERIAL_DEGREES).round();
    if serial < 0.0 {
        return None;
    }
    Some(Event::Position {
        serial: serial as u64,
        send_us: time_ms * 1000 + (alt * 10.0).round() as i64,
    })
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` in milliseconds since the epoch, without a
/// general parser (a client may handle a million of these a second).
fn parse_time_ms(t: &[u8]) -> Option<i64> {
    if t.len() != 24 || t[4] != b'-' || t[10] != b'T' || t[19] != b'.' || t[23] != b'Z' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        t[from..to].iter().try_fold(0i64, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
        })
    };
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hh, mm, ss, ms) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((((days * 24 + hh) * 60 + mm) * 60 + ss) * 1000 + ms)
}

// ---------------------------------------------------------------------------
// One run

struct RunSpec {
    cell: Cell,
    peer: Peer,
    /// Clients on `?max_rate=2s` beside the cell's plain ones.
    coalesced: usize,
}

impl RunSpec {
    fn describe(&self) -> String {
        let extra = if self.coalesced > 0 {
            format!(" + {} on ?max_rate=2s", self.coalesced)
        } else {
            String::new()
        };
        format!(
            "{}: {} clients{extra} × {} events/s",
            self.peer.name(),
            self.cell.clients,
            self.cell.rate
        )
    }
}

struct RunResult {
    spec: RunSpec,
    threads: String,
    connected: usize,
    subscribers: Option<u64>,
    /// RSS alone, with the clients idle, and the largest seen under load.
    rss_idle_kib: u64,
    rss_clients_kib: u64,
    rss_peak_kib: u64,
    published: Published,
    /// Measured events received by the plain clients, and expected.
    delivered: u64,
    expected: u64,
    window: Duration,
    deliveries_in_window: u64,
    server_cpu_s: f64,
    server_pct: f64,
    bench_pct: f64,
    machine_pct: f64,
    latency: Histogram<u64>,
    coalesced_latency: Histogram<u64>,
    seen: Vec<Seen>,
    /// fixgate's own count of events it queued for its clients
    /// (`fixgate_sse_events_sent_total`) at the end of the run.
    server_sent: Option<u64>,
    aborted: Option<String>,
    /// What the server logged (for a run that went wrong).
    server_log: String,
}

impl RunResult {
    fn cpu_us_per_event(&self) -> f64 {
        self.server_cpu_s * 1e6 / self.deliveries_in_window.max(1) as f64
    }

    /// Position events all clients received per second over the window.
    fn deliveries_per_second(&self) -> f64 {
        self.deliveries_in_window as f64 / self.window.as_secs_f64().max(1e-3)
    }

    /// CPU of everything else on the machine (other users' work), % of a core.
    fn other_pct(&self) -> f64 {
        (self.machine_pct - self.server_pct - self.bench_pct).max(0.0)
    }

    /// Over every client connected, the coalescing ones included.
    fn kib_per_client(&self) -> f64 {
        (self.rss_clients_kib as f64 - self.rss_idle_kib as f64) / self.connected.max(1) as f64
    }

    fn plain(&self) -> impl Iterator<Item = &Seen> {
        self.seen.iter().filter(|s| !s.coalesced)
    }

    fn bytes_per_event(&self) -> f64 {
        let (bytes, events) = self.plain().fold((0, 0), |(b, e), s| {
            (b + s.bytes, e + s.positions + s.others)
        });
        bytes as f64 / events.max(1) as f64
    }

    fn print(&self) {
        let p = &self.published;
        println!("server: {}", self.threads);
        println!(
            "clients connected: {} of {} (server says {})",
            self.connected,
            self.spec.cell.clients + self.spec.coalesced,
            self.subscribers.map_or("?".to_owned(), |n| n.to_string())
        );
        println!(
            "RSS: {:.1} MiB alone, {:.1} MiB with the clients idle ({:.1} KiB per client), {:.1} MiB at most under load",
            self.rss_idle_kib as f64 / 1024.0,
            self.rss_clients_kib as f64 / 1024.0,
            self.kib_per_client(),
            self.rss_peak_kib as f64 / 1024.0
        );
        println!(
            "published: {} events ({} measured, in {:.1} s: {:.0}/s of {} offered) in {} requests; late against the schedule p99 {:.1} ms, max {:.1} ms",
            p.sent,
            p.measured,
            p.measured_secs,
            p.measured as f64 / p.measured_secs.max(1e-3),
            self.spec.cell.rate,
            p.posts,
            p.late_p99_ms,
            p.late_max_ms
        );
        if let Some(behind) = &p.behind {
            println!("publish answers: {behind}");
        }
        println!(
            "delivered: {} of {} measured events ({:.2}%) to the plain clients; {:.0} bytes per event on the wire",
            self.delivered,
            self.expected,
            100.0 * self.delivered as f64 / self.expected.max(1) as f64,
            self.bytes_per_event()
        );
        println!(
            "CPU over {:.1} s: server {:.2} s ({:.0}% of a core) for {} deliveries ({:.0}/s, offered {}/s) = {:.2} µs per delivered event; bench {:.0}%, other processes {:.0}%, whole machine {:.0}% of 2 cores' 200%",
            self.window.as_secs_f64(),
            self.server_cpu_s,
            self.server_pct,
            self.deliveries_in_window,
            self.deliveries_per_second(),
            self.spec.cell.clients as u64 * u64::from(self.spec.cell.rate),
            self.cpu_us_per_event(),
            self.bench_pct,
            self.other_pct(),
            self.machine_pct
        );
        println!(
            "latency (plain clients, measured events): p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
            ms(&self.latency, 0.5),
            ms(&self.latency, 0.99),
            self.latency.max() as f64 / 1000.0
        );
        if self.spec.coalesced > 0 {
            let got: u64 = self
                .seen
                .iter()
                .filter(|s| s.coalesced)
                .map(|s| s.positions)
                .sum();
            println!(
                "?max_rate=2s clients: {} positions in all ({:.0} per client; {} devices), latency p50 {:.0} ms, max {:.0} ms",
                got,
                got as f64 / self.spec.coalesced as f64,
                self.spec.cell.rate,
                ms(&self.coalesced_latency, 0.5),
                self.coalesced_latency.max() as f64 / 1000.0
            );
        }
        let out_of_order: u64 = self.plain().map(|s| s.out_of_order).sum();
        let errors: Vec<&str> = self
            .seen
            .iter()
            .filter_map(|s| s.error.as_deref())
            .collect();
        if out_of_order > 0 {
            println!("OUT OF ORDER: {out_of_order} events at the plain clients");
        }
        // Plain clients that did not get every event up to the last one sent.
        let last_sent = self.published.sent.checked_sub(1);
        let incomplete: Vec<(usize, &Seen)> = self
            .seen
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.coalesced && (s.skipped > 0 || s.last != last_sent))
            .collect();
        if !incomplete.is_empty() {
            println!(
                "INCOMPLETE: {} plain clients missed events; the first few:",
                incomplete.len()
            );
            if let Some(sent) = self.server_sent {
                let received: u64 = self.seen.iter().map(|s| s.positions + s.others).sum();
                println!(
                    "  fixgate counted {sent} events queued for its clients (fixgate_sse_events_sent_total); they received {received}{}",
                    if sent == received {
                        ": the missing events were never queued, the server skipped them"
                    } else if self.spec.coalesced > 0 {
                        " (positions a ?max_rate client gets late are not in the count)"
                    } else {
                        ""
                    }
                );
            }
            for (i, s) in incomplete.iter().take(5) {
                println!(
                    "  client {i}: {} positions, serials {:?}..={:?} of 0..={last_sent:?}, {} skipped (first gap after {:?}), error {:?}",
                    s.positions, s.first, s.last, s.skipped, s.first_gap, s.error
                );
            }
        }
        if !errors.is_empty() {
            let mut kinds: Vec<(&str, usize)> = Vec::new();
            for e in &errors {
                match kinds.iter_mut().find(|(k, _)| k == e) {
                    Some((_, n)) => *n += 1,
                    None => kinds.push((e, 1)),
                }
            }
            println!("clients cut off or failed: {kinds:?}");
        }
        if let Some(why) = &self.aborted {
            println!("ABORTED: {why}");
        }
        if self.aborted.is_some() || !errors.is_empty() {
            let lines: Vec<&str> = self.server_log.lines().collect();
            println!("the server's log, last lines:");
            for line in &lines[lines.len().saturating_sub(12)..] {
                println!("  {line}");
            }
        }
    }

    /// The quick mode's check: every plain client got every event, once, in
    /// order; the coalescing ones got some.
    fn assert_complete(&self) {
        let name = self.spec.describe();
        assert!(self.aborted.is_none(), "{name}: {:?}", self.aborted);
        let total = self.published.sent;
        assert!(total > 0, "{name}: nothing was published");
        for (i, seen) in self.seen.iter().enumerate() {
            assert!(seen.error.is_none(), "{name}: client {i}: {:?}", seen.error);
            if seen.coalesced {
                assert!(
                    seen.positions > 0 && seen.positions < total,
                    "{name}: coalescing client {i} received {} of {total} events",
                    seen.positions
                );
                continue;
            }
            assert_eq!(
                (seen.positions, seen.first, seen.last, seen.out_of_order),
                (total, Some(0), Some(total - 1), 0),
                "{name}: client {i} did not receive events 0..{total} once and in order"
            );
        }
    }
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

fn run(
    runtime: &tokio::runtime::Runtime,
    plan: &Plan,
    spec: &RunSpec,
    nchan: Option<&Nchan>,
    perf_dir: Option<&Path>,
) -> RunResult {
    let cell = spec.cell;
    let all = cell.clients + spec.coalesced;
    let mut server = Server::start(spec.peer, all, nchan);
    let threads_idle = server.threads();
    std::thread::sleep(plan.settle);
    let rss_idle_kib = server.rss_kib();

    let warmup = (plan.warmup.as_secs_f64() * f64::from(cell.rate)).round() as u64;
    let measured = (plan.measure.as_secs_f64() * f64::from(cell.rate)).round() as u64;
    let shared = Arc::new(Shared::new(warmup, warmup + measured));
    let stop = CancellationToken::new();
    let connecting = Arc::new(tokio::sync::Semaphore::new(CONNECTING));
    let connect_started = Instant::now();
    let clients: Vec<_> = (0..all)
        .map(|id| {
            let coalesced = id >= cell.clients;
            runtime.spawn(client(
                id,
                server.port,
                server.events_path(coalesced),
                coalesced,
                shared.clone(),
                connecting.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while shared.connected.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) < all
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let connected = shared.connected.load(Ordering::Relaxed);
    println!(
        "{connected} of {all} clients connected in {:.2} s",
        connect_started.elapsed().as_secs_f64()
    );
    std::thread::sleep(plan.settle);
    let rss_clients_kib = server.rss_kib();
    let subscribers = server.subscribers();

    // The load.
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let (measuring_tx, measuring_rx) = mpsc::channel();
    let publisher = {
        let p = Publish {
            peer: spec.peer,
            port: server.port,
            path: server.publish_path(),
            rate: cell.rate,
            warmup,
            measured,
            stop: stop_publishing.clone(),
            answer_wait: plan.drain,
        };
        std::thread::spawn(move || publish(p, measuring_tx))
    };
    let mut aborted = None;
    let mut rss_peak_kib = rss_clients_kib;
    let mut watch_memory = |aborted: &mut Option<String>| {
        let rss = server.rss_kib();
        rss_peak_kib = rss_peak_kib.max(rss);
        if rss > plan.rss_limit_kib && aborted.is_none() {
            *aborted = Some(format!(
                "{} passed {} MiB of RSS: publishing stopped",
                spec.peer.name(),
                plan.rss_limit_kib / 1024
            ));
            stop_publishing.store(true, Ordering::Relaxed);
        }
    };
    let start = loop {
        match measuring_rx.recv_timeout(Duration::from_millis(250)) {
            Ok(at) => break Some(at),
            Err(mpsc::RecvTimeoutError::Timeout) => watch_memory(&mut aborted),
            Err(mpsc::RecvTimeoutError::Disconnected) => break None,
        }
    };
    let first = Sample::take(&server, &shared);
    let perf = perf_dir.map(|dir| Perf::start(dir, spec, &server));
    if start.is_none() {
        println!("the publisher stopped before the measured events");
    }
    while !publisher.is_finished() {
        watch_memory(&mut aborted);
        std::thread::sleep(Duration::from_millis(250));
    }
    let published = publisher.join().expect("the publisher panicked");
    if let Some(why) = &published.error {
        aborted.get_or_insert(format!("publishing failed: {why}"));
    }
    // Events never published are not expected.
    shared
        .to
        .store(warmup + published.measured, Ordering::Relaxed);
    let expected = published.measured * cell.clients as u64;

    // The drain: until every plain client has every measured event, nothing
    // arrives for a while, or the time is up.
    let drain_end = Instant::now() + plan.drain;
    let mut last = (shared.delivered.load(Ordering::Relaxed), Instant::now());
    let mut end = Sample::take(&server, &shared);
    loop {
        if shared.measured.load(Ordering::Relaxed) >= expected || Instant::now() >= drain_end {
            end = Sample::take(&server, &shared);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        let delivered = shared.delivered.load(Ordering::Relaxed);
        if delivered != last.0 {
            last = (delivered, Instant::now());
            end = Sample::take(&server, &shared);
        } else if last.1.elapsed() >= plan.quiet {
            // The window ends with the last delivery, not the wait after it.
            break;
        }
        watch_memory(&mut aborted);
    }
    if let Some(perf) = perf {
        perf.stop();
    }
    let threads = format!("{threads_idle}; under load: {}", server.threads());
    let server_sent = match spec.peer {
        Peer::Fixgate => {
            common::metric_at(server.port, "fixgate_sse_events_sent_total", &[]).map(|v| v as u64)
        }
        Peer::Nchan => None,
    };
    stop.cancel();
    let seen: Vec<Seen> = runtime.block_on(async {
        let mut seen = Vec::with_capacity(clients.len());
        for handle in clients {
            seen.push(handle.await.expect("a client panicked"));
        }
        seen
    });
    server.stop();
    let server_log = server.log_text();
    drop(server);

    let secs = end.at.duration_since(first.at).as_secs_f64().max(1e-3);
    let ticks = clock_ticks();
    let pct = |a: u64, b: u64| b.saturating_sub(a) as f64 / ticks / secs * 100.0;
    RunResult {
        threads,
        connected,
        subscribers,
        rss_idle_kib,
        rss_clients_kib,
        rss_peak_kib,
        delivered: shared.measured.load(Ordering::Relaxed),
        expected,
        window: end.at.duration_since(first.at),
        deliveries_in_window: end.delivered.saturating_sub(first.delivered),
        server_cpu_s: end.server.saturating_sub(first.server) as f64 / ticks,
        server_pct: pct(first.server, end.server),
        bench_pct: pct(first.bench, end.bench),
        machine_pct: pct(first.machine, end.machine),
        latency: shared.merged(),
        coalesced_latency: shared
            .coalesced_latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
        published,
        seen,
        server_sent,
        aborted,
        server_log,
        spec: RunSpec {
            cell,
            peer: spec.peer,
            coalesced: spec.coalesced,
        },
    }
}

/// `perf record` of a server's processes over a measured window.
struct Perf {
    child: Child,
}

impl Perf {
    fn start(dir: &Path, spec: &RunSpec, server: &Server) -> Perf {
        std::fs::create_dir_all(dir).expect("the perf directory");
        let name = format!(
            "{}-{}x{}{}.perf.data",
            spec.peer.name(),
            spec.cell.clients,
            spec.cell.rate,
            if spec.coalesced > 0 { "-coalesced" } else { "" }
        );
        let pids: Vec<String> = server.pids.iter().map(u32::to_string).collect();
        let child = Command::new("perf")
            .args(["record", "-q", "-e", "cpu-clock", "-F", "999", "-g", "-p"])
            .arg(pids.join(","))
            .arg("-o")
            .arg(dir.join(&name))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("perf (apt install linux-perf)");
        println!("perf: recording into {}", dir.join(name).display());
        Perf { child }
    }

    fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The report

fn print_table(plan: &Plan, results: &[RunResult]) {
    println!(
        "\n## Table (CPU per delivered event = server utime+stime over the window ÷ position events all clients received in it)\n"
    );
    println!(
        "| clients × events/s | server | delivered / expected | deliveries/s received (offered) | server CPU µs per delivered event | server CPU (% core) | bench CPU (% core) | other processes (% core) | p50 / p99 / max latency ms | RSS idle → with clients, MiB | KiB per idle client | clients (server's count) |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---|---|---:|---|");
    for r in results {
        let c = r.spec.cell;
        let server = if r.spec.coalesced > 0 {
            format!(
                "{} (+{} on max_rate=2s)",
                r.spec.peer.name(),
                r.spec.coalesced
            )
        } else {
            r.spec.peer.name().to_owned()
        };
        let mut delivered = if r.delivered == r.expected {
            "all".to_owned()
        } else if r.delivered * 100 >= r.expected * 99 {
            format!("all but {}", r.expected - r.delivered)
        } else {
            format!(
                "{:.1}%",
                100.0 * r.delivered as f64 / r.expected.max(1) as f64
            )
        };
        let sent_rate = r.published.measured as f64 / r.published.measured_secs.max(1e-3);
        if sent_rate < 0.95 * f64::from(c.rate) {
            delivered.push_str(&format!(" (published {sent_rate:.0}/s)"));
        }
        if r.aborted.is_some() {
            delivered.push_str(" ABORTED");
        }
        println!(
            "| {} × {} | {server} | {delivered} | {:.0} k ({} k) | {:.2} | {:.0} | {:.0} | {:.0} | {:.2} / {:.2} / {:.0} | {:.1} → {:.1} | {:.1} | {} / {} |",
            c.clients,
            c.rate,
            r.deliveries_per_second() / 1000.0,
            c.clients as u64 * u64::from(c.rate) / 1000,
            r.cpu_us_per_event(),
            r.server_pct,
            r.bench_pct,
            r.other_pct(),
            ms(&r.latency, 0.5),
            ms(&r.latency, 0.99),
            r.latency.max() as f64 / 1000.0,
            r.rss_idle_kib as f64 / 1024.0,
            r.rss_clients_kib as f64 / 1024.0,
            r.kib_per_client(),
            r.connected,
            r.subscribers.map_or("?".to_owned(), |n| n.to_string()),
        );
    }
    if plan.full {
        println!(
            "\nThe machine has 200% (2 cores). Where server + bench + other reach it, the cores were the limit, not the server: the clients (this process) and the server shared them, and other processes took their part."
        );
    }
}
