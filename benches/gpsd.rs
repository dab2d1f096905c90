//! gpsd-protocol fan-out (issue 22): one receiver at 10 Hz, 0 and then 100
//! `?WATCH` clients, the server's CPU and RSS — fixgate's `[gpsd]` server,
//! and Debian's gpsd 3.22 itself as the peer on the same input.
//!
//! `cargo bench --bench gpsd` (release binary). The receiver is a real
//! pseudo-terminal fed by this process: a simulated vehicle's NMEA (RMC,
//! GGA, GSA per epoch), 10 epochs a second, paced by the wall clock. Each
//! server opens the pty's slave side through a symlink, as it would a
//! `/dev/serial/by-id/...` name:
//!
//! 1. **fixgate**: `fixgate run` with a `[[serial]]` on the link and
//!    `[gpsd] enabled` on a port of the bench's own (store in a temp dir,
//!    MQTT off);
//! 2. **gpsd**: `gpsd -N -n -b -S PORT LINK` (SKIPPED when gpsd is missing).
//!
//! For each: a warm-up, then W seconds with no client (CPU = `utime +
//! stime` of the server from `/proc/<pid>/stat` over the window, as % of
//! one core; RSS at the end), then 100 clients connect, each a thread with
//! a blocking socket that sends `?WATCH={"enable":true,"json":true};` and
//! reads every line, and the same W-second window is measured again. Each
//! client counts the TPVs it read in the window: the figure is delivered
//! only when every client got about 10 per second.
//!
//! gpsd serves at most a fixed number of clients (Debian's build: 64 at
//! this writing); the row says how many were served at the receiver's rate.
//! `-- fixgate` or `-- gpsd` runs one server.
//!
//! Run as a test (`cargo test --bench gpsd`) it runs fixgate with 10
//! clients for 2 s and asserts that each client read TPVs at the receiver's
//! rate; its figures mean nothing.

#[path = "../tests/common/mod.rs"]
mod common;
use common::proc_stat::{clock_ticks, cpu_ticks, load_average};

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Daemon, PtyReceiver, free_port, memory_kib, wait_until};

/// Epochs per second of the simulated receiver.
const RATE_HZ: u32 = 10;

struct Plan {
    clients: usize,
    window: Duration,
    warmup: Duration,
    peer: bool,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let plan = if full {
        Plan {
            clients: 100,
            window: Duration::from_secs(30),
            warmup: Duration::from_secs(5),
            peer: true,
        }
    } else {
        Plan {
            clients: 10,
            window: Duration::from_secs(2),
            warmup: Duration::from_secs(2),
            peer: false,
        }
    };
    println!(
        "gpsd fan-out: {} Hz receiver on a pty, 0 and {} ?WATCH clients, {:?} windows; load {}",
        RATE_HZ,
        plan.clients,
        plan.window,
        load_average()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    // `cargo bench --bench gpsd -- gpsd` runs the peer alone, `-- fixgate` fixgate.
    let only: Option<String> = std::env::args()
        .skip(1)
        .find(|a| a == "gpsd" || a == "fixgate");
    if only.as_deref() != Some("gpsd") {
        run_fixgate(&plan, dir.path(), full);
    }
    if plan.peer && only.as_deref() != Some("fixgate") {
        match gpsd_binary() {
            Some(gpsd) => run_gpsd(&plan, dir.path(), &gpsd),
            None => println!("gpsd: SKIPPED (gpsd is not installed: apt install gpsd)"),
        }
    }
}

/// The simulated receiver: writes 10 Hz NMEA into the pty until stopped.
struct Feeder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Feeder {
    fn start(mut receiver: PtyReceiver) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut fleet = fixgate::sim::Fleet::new(1, (52.0907, 5.1214), 22);
            let period = Duration::from_secs(1) / RATE_HZ;
            let start = Instant::now();
            let t0 = chrono::Utc::now();
            let mut n: u32 = 0;
            while !stopping.load(Ordering::Relaxed) {
                let t = t0 + chrono::Duration::from_std(period * n).expect("duration");
                let mut text = String::new();
                for fix in fleet.step(period.as_secs_f64(), t) {
                    fixgate::sim::nmea::write_epoch(&fix, &mut text);
                }
                receiver.send(text.as_bytes());
                n += 1;
                let next = start + period * n;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
        Feeder {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One watching client on its own thread, counting TPV lines.
struct Client {
    tpvs: Arc<AtomicU64>,
    stream: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Client {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .write_all(b"?WATCH={\"enable\":true,\"json\":true};\n")
            .expect("send WATCH");
        let tpvs = Arc::new(AtomicU64::new(0));
        let counting = tpvs.clone();
        let reading = stream.try_clone().expect("clone socket");
        std::thread::spawn(move || {
            for line in BufReader::new(reading).lines() {
                let Ok(line) = line else { return };
                if line.starts_with("{\"class\":\"TPV\"") {
                    assert!(
                        serde_json::from_str::<serde_json::Value>(&line).is_ok(),
                        "{line}"
                    );
                    counting.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Client { tpvs, stream }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// CPU % of one core and RSS of `pid` over `window`, and what each client
/// read in it.
fn measure(pid: u32, window: Duration, clients: &[Client]) -> (f64, u64, Vec<u64>) {
    let before: Vec<u64> = clients
        .iter()
        .map(|c| c.tpvs.load(Ordering::Relaxed))
        .collect();
    let t0 = Instant::now();
    let c0 = cpu_ticks(pid).expect("cpu ticks");
    std::thread::sleep(window);
    let c1 = cpu_ticks(pid).expect("cpu ticks");
    let secs = t0.elapsed().as_secs_f64();
    let got = clients
        .iter()
        .zip(before)
        .map(|(c, b)| c.tpvs.load(Ordering::Relaxed) - b)
        .collect();
    let cpu = (c1 - c0) as f64 / clock_ticks() / secs * 100.0;
    (cpu, memory_kib(pid).0, got)
}

/// Prints one row; asserts that every client read TPVs at the receiver's rate.
fn report(server: &str, clients: usize, figures: &(f64, u64, Vec<u64>), window: Duration) {
    let served = served(server, clients, figures, window);
    if server == "fixgate" && clients > 0 {
        assert_eq!(served, clients, "fixgate: a client read too few TPVs");
    }
}

/// Prints one row; how many clients read TPVs at the receiver's rate.
fn served(
    server: &str,
    clients: usize,
    (cpu, rss, got): &(f64, u64, Vec<u64>),
    window: Duration,
) -> usize {
    let expect = RATE_HZ as f64 * window.as_secs_f64();
    let (min, max) = (
        got.iter().min().copied().unwrap_or(0),
        got.iter().max().copied().unwrap_or(0),
    );
    // A late first epoch or one at the window's edge may be missing.
    let served = got.iter().filter(|&&n| n as f64 >= expect * 0.8).count();
    println!(
        "{server:8} clients {clients:4}: CPU {cpu:5.2}% of a core, RSS {rss} KiB, TPVs per client {min}-{max} (expected ~{expect:.0}), {served} clients served"
    );
    served
}

fn run_fixgate(plan: &Plan, dir: &Path, release: bool) {
    let dir = dir.join("fixgate");
    std::fs::create_dir_all(&dir).expect("dir");
    let link = dir.join("gps0");
    let feeder = Feeder::start(PtyReceiver::plug(&link));
    let gpsd_port = free_port();
    let config = format!(
        "[[serial]]\ndevice = \"gps-1\"\npath = \"{}\"\nbaud = 115200\n\n[gpsd]\nenabled = true\nlisten = \"127.0.0.1:{gpsd_port}\"\nmax_clients = {}\n",
        link.display(),
        plan.clients + 10
    );
    let daemon = Daemon::start(&dir, &config);
    if !release {
        println!("(debug build: figures mean nothing)");
    }
    let pid = daemon.child.id();
    wait_until("fixes stored", Duration::from_secs(20), || {
        daemon.head() > 10
    });
    std::thread::sleep(plan.warmup);
    let idle = measure(pid, plan.window, &[]);
    report("fixgate", 0, &idle, plan.window);
    let clients: Vec<Client> = (0..plan.clients)
        .map(|_| Client::connect(gpsd_port))
        .collect();
    wait_until("clients watching", Duration::from_secs(20), || {
        daemon.metric("fixgate_gpsd_clients") == Some(plan.clients as f64)
    });
    std::thread::sleep(plan.warmup);
    let busy = measure(pid, plan.window, &clients);
    report("fixgate", plan.clients, &busy, plan.window);
    let skipped = daemon.metric("fixgate_gpsd_skipped_total").unwrap_or(0.0);
    let lines = daemon
        .metric("fixgate_gpsd_lines_sent_total")
        .unwrap_or(0.0);
    println!("fixgate: {lines} lines sent, {skipped} reports skipped by slow clients");
    drop(clients);
    drop(daemon);
    drop(feeder);
}

/// `gpsd` on the PATH or in /usr/sbin (Debian's place, often off a user's PATH).
fn gpsd_binary() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("gpsd"))
        .chain([PathBuf::from("/usr/sbin/gpsd")])
        .find(|p| p.is_file())
}

/// gpsd, killed on drop.
struct Gpsd(Child);

impl Drop for Gpsd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_gpsd(plan: &Plan, dir: &Path, gpsd: &Path) {
    let dir = dir.join("gpsd");
    std::fs::create_dir_all(&dir).expect("dir");
    let link = dir.join("gps0");
    let feeder = Feeder::start(PtyReceiver::plug(&link));
    let port = free_port();
    let server = Gpsd(
        Command::new(gpsd)
            .args(["-N", "-n", "-b", "-S", &port.to_string()])
            .arg(&link)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gpsd"),
    );
    let pid = server.0.id();
    wait_until("gpsd listening", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    std::thread::sleep(plan.warmup);
    let idle = measure(pid, plan.window, &[]);
    report("gpsd", 0, &idle, plan.window);
    let clients: Vec<Client> = (0..plan.clients).map(|_| Client::connect(port)).collect();
    std::thread::sleep(plan.warmup);
    let busy = measure(pid, plan.window, &clients);
    report("gpsd", plan.clients, &busy, plan.window);
    drop(clients);
    drop(server);
    drop(feeder);
}
