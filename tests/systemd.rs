//! The daemon under a notify socket of the test's own, as systemd runs a
//! `Type=notify` service with a watchdog: `READY=1` only once it serves,
//! `WATCHDOG=1` at half the period, a `STATUS=` line every 10 s naming
//! devices, rate and uplink, `STOPPING=1` on SIGTERM, a clean exit; and
//! with its writer thread really stopped (by ptrace), no more `WATCHDOG=1`
//! once the stall limit has passed, until the writer turns again.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Daemon, get};

/// The next datagram on the socket, as text, within `timeout`.
fn next(socket: &UnixDatagram, timeout: Duration) -> Option<String> {
    socket.set_read_timeout(Some(timeout)).ok()?;
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The daemon (broker off) with a notify socket of the test's own and the
/// watchdog period `WatchdogSec=400ms` would give: pings every 200 ms while
/// the pipeline moves. Returned once `READY=1` has arrived, before anything
/// else is asked of it.
fn start_notified(dir: &Path) -> (Daemon, UnixDatagram) {
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let (config, port) = Daemon::write_config(dir, "", "");
    let daemon = Daemon::launch(
        dir,
        config,
        port,
        &[
            ("NOTIFY_SOCKET", socket_path.as_os_str()),
            ("WATCHDOG_USEC", "400000".as_ref()),
        ],
    );
    let ready = next(&socket, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no notification at all:\n{}", daemon.log_text()));
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=running")),
        "{ready:?}"
    );
    (daemon, socket)
}

/// Sends SIGTERM; the next notification that is neither a ping nor a status
/// line must be `STOPPING=1`, and the process must then exit 0.
fn stop(daemon: Daemon, socket: &UnixDatagram) {
    let pid = nix::unistd::Pid::from_raw(daemon.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let stopping = loop {
        let m = next(socket, Duration::from_secs(10)).expect("no STOPPING=1");
        if !m.lines().any(|l| l == "WATCHDOG=1") && !m.starts_with("STATUS=") {
            break m;
        }
    };
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let status = daemon.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}");
}

#[test]
fn ready_once_serving_watchdog_fed_stopping_on_sigterm_then_a_clean_exit() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, socket) = start_notified(dir.path());
    let port = daemon.port;
    // Ready means serving: the feed answers at once.
    assert!(
        get(port, "/healthz").is_ok(),
        "READY=1 before the feed served"
    );

    // The watchdog is fed while the (idle) writer turns.
    let until = Instant::now() + Duration::from_millis(1500);
    let mut pings = 0;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match next(&socket, left) {
            Some(m) if m.lines().any(|l| l == "WATCHDOG=1") => pings += 1,
            Some(m) if m.starts_with("STATUS=") => {}
            Some(other) => panic!("unexpected notification {other:?}"),
            None => break,
        }
    }
    assert!(pings >= 4, "{pings} watchdog pings in 1.5 s");

    // One device reports; the next status line counts it.
    let fix = format!(
        r#"{{"device":"van-1","time":"{}","lat":52.09,"lon":5.12}}"#,
        chrono::Utc::now().to_rfc3339()
    );
    ureq::post(&format!("http://127.0.0.1:{port}/api/fixes"))
        .header("Content-Type", "application/json")
        .send(fix.as_str())
        .expect("POST /api/fixes");
    let line = loop {
        let m = next(&socket, Duration::from_secs(15)).expect("no STATUS= line within 15 s");
        if let Some(line) = m.lines().find_map(|l| l.strip_prefix("STATUS=")) {
            break line.to_owned();
        }
    };
    assert!(
        line.starts_with("1 devices (1 online), ") && line.ends_with(" fixes/s, uplink off"),
        "{line:?}"
    );

    stop(daemon, &socket);
}

/// The writer thread's id, found by the name the daemon gives it.
fn writer_thread(pid: u32) -> nix::unistd::Pid {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/<pid>/task");
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == "fixgate-writer" {
            let tid: i32 = task.file_name().to_string_lossy().parse().expect("tid");
            return nix::unistd::Pid::from_raw(tid);
        }
    }
    panic!("no thread named fixgate-writer in {pid}");
}

/// Notifications until `quiet` passes without a `WATCHDOG=1` or `deadline`
/// comes; returns the `WATCHDOG=1` count and, if the quiet was seen, when
/// the last ping arrived (the start, if none did).
fn pings_until_quiet(
    socket: &UnixDatagram,
    quiet: Duration,
    deadline: Instant,
) -> (u32, Option<Instant>) {
    let mut pings = 0;
    let mut last = Instant::now();
    while Instant::now() < deadline {
        if let Some(m) = next(socket, Duration::from_millis(100)) {
            if m.lines().any(|l| l == "WATCHDOG=1") {
                pings += 1;
                last = Instant::now();
            }
        }
        if last.elapsed() >= quiet {
            return (pings, Some(last));
        }
    }
    (pings, None)
}

#[test]
fn a_frozen_writer_thread_stops_the_watchdog_pings_until_it_turns_again() {
    use nix::sys::ptrace;
    use nix::sys::wait::{WaitPidFlag, waitpid};

    let dir = tempfile::tempdir().unwrap();
    let (daemon, socket) = start_notified(dir.path());
    let (pings, _) = pings_until_quiet(
        &socket,
        Duration::from_secs(5),
        Instant::now() + Duration::from_secs(1),
    );
    assert!(
        pings >= 3,
        "{pings} watchdog pings in 1 s before the freeze"
    );

    // Stop the writer thread alone, as a hang in it would (the rest of the
    // process, the watchdog task with it, runs on): ptrace stops just the
    // thread it is told to.
    let writer = writer_thread(daemon.child.id());
    ptrace::seize(writer, ptrace::Options::empty()).unwrap_or_else(|e| {
        panic!("cannot ptrace the writer thread ({e}); this test needs ptrace, which a seccomp or Yama policy may forbid")
    });
    ptrace::interrupt(writer).expect("ptrace interrupt");
    waitpid(writer, Some(WaitPidFlag::__WALL)).expect("the writer thread stops");
    let frozen = Instant::now();

    // The pings go on until the writer has not turned for 10 s, then stop.
    let (during, last_ping) = pings_until_quiet(
        &socket,
        Duration::from_secs(3),
        frozen + Duration::from_secs(40),
    );
    let last_ping = last_ping.expect("the watchdog was still fed 40 s into the freeze");
    let stopped_after = last_ping.saturating_duration_since(frozen);
    // The writer's last beat came up to a tick (1 s) before the freeze, and
    // the last ping up to half a period (200 ms) before the limit: pings
    // may stop 8.8 s into the freeze. The 300 ms beyond that are for a tick
    // that wakes late on a loaded machine; a bare timer, or a limit a few
    // seconds short, still fails here.
    assert!(
        stopped_after >= Duration::from_millis(8500),
        "pings stopped {stopped_after:?} into the freeze, before the 10 s stall limit"
    );
    assert!(during > 0, "no pings at all while the stall was young");
    let metrics = get(daemon.port, "/metrics").expect("/metrics while the writer is frozen");
    assert!(
        metrics.contains("fixgate_watchdog_withheld_total 1"),
        "withheld pings not counted:\n{metrics}"
    );

    ptrace::detach(writer, None).expect("ptrace detach");
    let (after, _) = pings_until_quiet(
        &socket,
        Duration::from_secs(60),
        Instant::now() + Duration::from_secs(5),
    );
    assert!(
        after >= 3,
        "{after} pings in 5 s once the writer turned again"
    );

    let log_path = daemon.log_path();
    stop(daemon, &socket);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(log.matches("IS STUCK").count(), 1, "{log}");
    assert!(log.contains("the writer IS STUCK"), "{log}");
    assert!(log.contains("moves again"), "{log}");
}
