//! The daemon under a notify socket of the test's own, as systemd runs a
//! `Type=notify` service with a watchdog: `READY=1` only once it serves,
//! `WATCHDOG=1` at half the period, a `STATUS=` line every 10 s naming
//! devices, rate and uplink, `STOPPING=1` on SIGTERM, a clean exit; and
//! with its writer thread really stopped (by ptrace), no more `WATCHDOG=1`
//! once the stall limit has passed, until the writer turns again.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, get};

/// The next datagram on the socket, as text, within `timeout`.
fn next(socket: &UnixDatagram, timeout: Duration) -> Option<String> {
    socket.set_read_timeout(Some(timeout)).ok()?;
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn ready_once_serving_watchdog_fed_stopping_on_sigterm_then_a_clean_exit() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let port = free_port();
    let config = dir.path().join("fixgate.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{}\"\n[feed]\nlisten = \"127.0.0.1:{port}\"\n[mqtt]\nbroker = \"off\"\n",
            dir.path().join("store").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fixgate"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        // As WatchdogSec=400ms would: pings every 200 ms while the writer turns.
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();

    let ready = next(&socket, Duration::from_secs(20)).expect("no notification at all");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=running")),
        "{ready:?}"
    );
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

    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let stopping = loop {
        let m = next(&socket, Duration::from_secs(10)).expect("no STOPPING=1");
        if !m.lines().any(|l| l == "WATCHDOG=1") && !m.starts_with("STATUS=") {
            break m;
        }
    };
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
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
/// comes; returns the `WATCHDOG=1` count and whether the quiet was seen.
fn pings_until_quiet(socket: &UnixDatagram, quiet: Duration, deadline: Instant) -> (u32, bool) {
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
            return (pings, true);
        }
    }
    (pings, false)
}

#[test]
fn a_frozen_writer_thread_stops_the_watchdog_pings_until_it_turns_again() {
    use nix::sys::ptrace;
    use nix::sys::wait::{WaitPidFlag, waitpid};

    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let port = free_port();
    let config = dir.path().join("fixgate.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{}\"\n[feed]\nlisten = \"127.0.0.1:{port}\"\n[mqtt]\nbroker = \"off\"\n",
            dir.path().join("store").display()
        ),
    )
    .unwrap();
    let log_path = dir.path().join("daemon.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fixgate"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let ready = next(&socket, Duration::from_secs(20)).expect("no notification at all");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
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
    let writer = writer_thread(child.id());
    ptrace::seize(writer, ptrace::Options::empty()).unwrap_or_else(|e| {
        panic!("cannot ptrace the writer thread ({e}); this test needs ptrace, which a seccomp or Yama policy may forbid")
    });
    ptrace::interrupt(writer).expect("ptrace interrupt");
    waitpid(writer, Some(WaitPidFlag::__WALL)).expect("the writer thread stops");
    let frozen = Instant::now();

    // The pings go on until the writer has not turned for 10 s, then stop.
    let (during, quiet) = pings_until_quiet(
        &socket,
        Duration::from_secs(3),
        frozen + Duration::from_secs(40),
    );
    let stopped_after = frozen.elapsed() - Duration::from_secs(3);
    assert!(quiet, "the watchdog was still fed 40 s into the freeze");
    // The writer's last beat came up to a tick (1 s) before the freeze, and
    // the last ping up to half a period (200 ms) before the limit: pings
    // may stop 8.8 s into the freeze, never earlier.
    assert!(
        stopped_after >= Duration::from_millis(8500),
        "pings stopped {stopped_after:?} into the freeze, before the 10 s stall limit"
    );
    assert!(during > 0, "no pings at all while the stall was young");
    let metrics = get(port, "/metrics").expect("/metrics while the writer is frozen");
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

    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(log.matches("IS STUCK").count(), 1, "{log}");
    assert!(log.contains("the writer IS STUCK"), "{log}");
    assert!(log.contains("moves again"), "{log}");
}
