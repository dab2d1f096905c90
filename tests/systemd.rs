//! The daemon under a notify socket of the test's own, as systemd runs a
//! `Type=notify` service with a watchdog: `READY=1` only once it serves,
//! `WATCHDOG=1` at half the period, a `STATUS=` line every 10 s naming
//! devices, rate and uplink, `STOPPING=1` on SIGTERM, a clean exit.

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
