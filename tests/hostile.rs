//! Hostile clients on the HTTP port, through real sockets on loopback: half
//! sent requests, connection floods, bodies that never finish, clients that
//! never read a snapshot or an event stream. Each test states the bound it
//! holds the daemon to (file descriptors, resident memory, time) and checks
//! that `/healthz` keeps answering. Counts and durations are small enough
//! for CI; the bounds are those of docs/feed.md ("Hostile clients and their bounds").

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{Daemon, SseClient, get, http_agent};

/// Open file descriptors of a process.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A loopback connection to the daemon whose receive buffer is small, so
/// that a client that does not read stalls the server's writes soon.
fn connect_small(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let size: libc::c_int = 4096;
    // SAFETY: setsockopt reads `size` for the duration of the call.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    stream
}

/// Whether the server has closed `stream` (a read sees the end or an error;
/// anything it sent first is read and dropped).
fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 16 * 1024];
    while Instant::now() < deadline {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// The status line's code of the response waiting on `stream`.
fn status_of(stream: &mut TcpStream, within: Duration) -> Option<u16> {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn healthy(daemon: &Daemon) -> bool {
    get(daemon.port, "/healthz").is_ok()
}

/// Posts one fix for each of `n` devices named `{prefix}-{i}`.
fn post_devices(daemon: &Daemon, prefix: &str, n: usize) {
    let agent = http_agent(Duration::from_secs(30));
    let now = chrono::Utc::now().timestamp_millis();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let items: Vec<String> = chunk
            .iter()
            .map(|i| {
                let lat = 52.0 + (*i as f64) * 1e-5;
                format!(r#"{{"device":"{prefix}-{i}","time":{now},"lat":{lat},"lon":5.1,"speed":3.5,"alt":12.5,"hdop":0.9,"sats":9}}"#)
            })
            .collect();
        let status = agent
            .post(format!("http://127.0.0.1:{}/api/fixes", daemon.port))
            .header("Content-Type", "application/json")
            .send(format!("[{}]", items.join(",")))
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        assert_eq!(status, 200);
    }
}

/// 400 connections that send half a request head: before, all were still
/// open after 60 s, and enough of them exhausted the process's descriptors.
/// Now each is closed once `feed.header_timeout` passes.
#[test]
fn half_sent_requests_are_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with(dir.path(), "header_timeout = \"2s\"\n", "");
    let pid = daemon.child.id();
    let baseline = fds(pid);
    let mut half: Vec<TcpStream> = (0..400)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
            s.write_all(b"GET /api/devices HTTP/1.1\r\nHost: fixgate\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    // An idle keep-alive connection after a whole request: the same timeout.
    let mut idle = TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: fixgate\r\n\r\n")
        .unwrap();
    assert_eq!(status_of(&mut idle, Duration::from_secs(5)), Some(200));
    // Held for now (most of them: under load some may have reached their
    // timeout while the rest were being opened).
    assert!(
        fds(pid) >= baseline + 100,
        "the flood is held for now: {} descriptors against {baseline}",
        fds(pid)
    );
    assert!(healthy(&daemon));
    let started = Instant::now();
    for s in &mut half {
        assert!(
            closed_by_server(s, Duration::from_secs(6)),
            "a half-sent request is still open {:?} later",
            started.elapsed()
        );
    }
    assert!(closed_by_server(&mut idle, Duration::from_secs(3)));
    let deadline = Instant::now() + Duration::from_secs(5);
    while fds(pid) > baseline + 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        fds(pid) <= baseline + 5,
        "descriptors: {} against {baseline} before",
        fds(pid)
    );
    assert!(
        daemon
            .metric_with("fixgate_http_closed_total", &[("reason", "header_timeout")])
            .unwrap_or(0.0)
            >= 400.0
    );
    assert!(healthy(&daemon));
}

/// A flood of connections that never send anything: new connections beyond
/// `feed.max_connections` are refused (counted), but a few more are always
/// accepted for `/healthz` and `/metrics`, which keep answering.
#[test]
fn a_connection_flood_leaves_room_for_health_checks_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with(
        dir.path(),
        "max_connections = 50\nheader_timeout = \"30s\"\n",
        "",
    );
    let pid = daemon.child.id();
    let baseline = fds(pid);
    let _flood: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(("127.0.0.1", daemon.port)).unwrap())
        .collect();
    // The flood has landed once the connections beyond the limit and the
    // reserve are refused (polled through that reserve).
    daemon.wait_metric(
        "fixgate_http_refused_total",
        &[("reason", "max_connections")],
        200.0,
    );
    // The health check and the scrape get through on the reserved room
    // (which the flood itself held for a second)...
    let deadline = Instant::now() + Duration::from_secs(5);
    while !healthy(&daemon) {
        assert!(
            Instant::now() < deadline,
            "/healthz must answer under a flood"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused = daemon
        .metric_with(
            "fixgate_http_refused_total",
            &[("reason", "max_connections")],
        )
        .unwrap_or(0.0);
    assert!(refused >= 200.0, "refused {refused}");
    // ...anything else there is answered 503.
    let mut other = TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    other
        .write_all(b"GET /api/devices HTTP/1.1\r\nHost: fixgate\r\n\r\n")
        .unwrap();
    let status = status_of(&mut other, Duration::from_secs(5));
    assert!(
        status == Some(503) || status.is_none(),
        "a request beyond the limit got {status:?}"
    );
    // The flood holds at most the limit and the reserve.
    assert!(
        fds(pid) <= baseline + 50 + 8 + 4,
        "descriptors {} (baseline {baseline})",
        fds(pid)
    );
}

/// A body that is announced but never comes, and a declared length over
/// `http.max_body`: the first is answered 408 at `feed.body_timeout`, the
/// second 413 at once, before any of the body is read.
#[test]
fn bodies_that_never_finish_time_out_and_oversized_ones_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with(dir.path(), "body_timeout = \"2s\"\n", "");
    let mut big = TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    big.write_all(
        b"POST /api/fixes HTTP/1.1\r\nHost: fixgate\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n",
    )
    .unwrap();
    let started = Instant::now();
    assert_eq!(status_of(&mut big, Duration::from_secs(5)), Some(413));
    assert!(started.elapsed() < Duration::from_secs(1));

    for (label, head, part) in [
        (
            "short Content-Length",
            "POST /api/fixes HTTP/1.1\r\nHost: fixgate\r\nContent-Length: 100\r\n\r\n",
            "[{\"lat\":",
        ),
        (
            "unfinished chunked body",
            "POST /api/fixes HTTP/1.1\r\nHost: fixgate\r\nTransfer-Encoding: chunked\r\n\r\n",
            "8\r\n[{\"lat\":\r\n",
        ),
    ] {
        let mut slow = TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
        slow.write_all(head.as_bytes()).unwrap();
        slow.write_all(part.as_bytes()).unwrap();
        let started = Instant::now();
        assert_eq!(
            status_of(&mut slow, Duration::from_secs(6)),
            Some(408),
            "{label}"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
            "{label}: answered after {took:?}"
        );
    }
    assert_eq!(
        daemon.metric_with(
            "fixgate_ingest_rejected_total",
            &[("reason", "timeout"), ("source", "http")]
        ),
        Some(2.0)
    );
    assert!(healthy(&daemon));
}

/// 10,000 devices make `/api/devices` about 2 MB. Before, 300 clients that
/// asked for it and never read grew the daemon by 549 MiB. Now every
/// request at one head shares one snapshot, at most `feed.max_snapshots`
/// are held by responses (the rest get 503), and a client that stalls is
/// closed at `feed.stall_timeout`: growth stays under 64 MiB.
#[test]
fn snapshot_readers_that_never_read_do_not_grow_memory() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with(dir.path(), "stall_timeout = \"4s\"\n", "");
    post_devices(&daemon, "dev", 10_000);
    let body = get(daemon.port, "/api/devices").unwrap();
    assert!(body.len() > 1_500_000, "{} bytes", body.len());
    let before = daemon.rss_kib();
    let mut statuses = Vec::new();
    let mut stalled: Vec<TcpStream> = (0..300)
        .map(|i| {
            let mut s = connect_small(daemon.port);
            s.write_all(b"GET /api/devices HTTP/1.1\r\nHost: fixgate\r\n\r\n")
                .unwrap();
            // Now and then the head moves, so that not every request could
            // share one snapshot.
            if i % 50 == 0 {
                post_devices(&daemon, &format!("more{i}"), 1);
            }
            s
        })
        .collect();
    // A measurement, not a wait for a condition: memory with the readers
    // stalled for a while.
    std::thread::sleep(Duration::from_secs(2));
    let during = daemon.rss_kib();
    for s in &mut stalled {
        statuses.push(status_of(s, Duration::from_secs(2)));
    }
    let busy = statuses.iter().filter(|s| **s == Some(503)).count();
    assert!(busy >= 250, "beyond max_snapshots the rest get 503: {busy}");
    assert!(healthy(&daemon));
    eprintln!("RSS {before} KiB before, {during} KiB with 300 stalled snapshot readers");
    assert!(
        during < before + 64 * 1024,
        "RSS grew from {before} KiB to {during} KiB"
    );
    // The stalled ones are let go, and their snapshots with them.
    assert!(
        daemon
            .wait_metric("fixgate_http_closed_total", &[("reason", "stalled")], 1.0)
            .unwrap_or(0.0)
            >= 1.0
    );
    // Requests are served again.
    assert!(get(daemon.port, "/api/devices").is_ok());
}

/// `Last-Event-ID: 0` asks for a reset: the current state of every device.
/// Before, each such client had all of it encoded and queued in memory
/// (255 clients: +1.3 GB). Now the states come from the shared snapshot, one
/// event at a time as the client reads.
#[test]
fn reset_clients_that_never_read_do_not_grow_memory() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with(dir.path(), "stall_timeout = \"30s\"\n", "");
    post_devices(&daemon, "dev", 10_000);
    let before = daemon.rss_kib();
    let _stalled: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = connect_small(daemon.port);
            s.write_all(b"GET /events HTTP/1.1\r\nHost: fixgate\r\nLast-Event-ID: 0\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    // A measurement: memory with the reset readers stalled for a while.
    std::thread::sleep(Duration::from_secs(3));
    let during = daemon.rss_kib();
    eprintln!("RSS {before} KiB before, {during} KiB with 200 stalled reset readers");
    assert!(
        during < before + 64 * 1024,
        "RSS grew from {before} KiB to {during} KiB"
    );
    assert!(healthy(&daemon));
    // A screen that does read still gets the whole reset.
    let screen = SseClient::connect(daemon.port, "", Some("0"));
    assert_eq!(screen.status, 200);
    let got = screen.take("position", 10_000, Duration::from_secs(60));
    assert_eq!(got.len(), 10_000);
}

/// Before, 255 clients that never read locked every new screen out (503)
/// for as long as they stayed. Now a full feed makes room for a new client
/// (evicting a stalled one, else the oldest of the most crowded address),
/// and a client whose socket takes nothing for `feed.stall_timeout` is
/// closed and counted.
#[test]
fn stalled_feed_clients_never_lock_new_screens_out() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with(dir.path(), "max_clients = 20\nstall_timeout = \"3s\"\n", "");
    let _stalled: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = connect_small(daemon.port);
            s.write_all(b"GET /events HTTP/1.1\r\nHost: fixgate\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    // Full: every place taken by a client that never reads.
    assert_eq!(
        daemon.wait_metric("fixgate_sse_clients", &[], 20.0),
        Some(20.0)
    );
    // Full: a new screen still gets in, at once, and is served.
    let screen = SseClient::connect(daemon.port, "", None);
    assert_eq!(screen.status, 200);
    post_devices(&daemon, "bus", 1);
    assert_eq!(screen.take("position", 1, Duration::from_secs(10)).len(), 1);
    assert!(daemon.metric("fixgate_sse_evicted_total").unwrap_or(0.0) >= 1.0);
    // Events keep flowing: the stalled clients' sockets fill and they are
    // closed after the stall timeout.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    while daemon.metric("fixgate_sse_stalled_total").unwrap_or(0.0) < 1.0 {
        assert!(Instant::now() < deadline, "no stalled client was closed");
        post_devices(&daemon, &format!("flood{i}"), 1000);
        i += 1;
    }
    // The reading screen was never the one let go.
    assert!(
        !screen
            .take("position", 1, Duration::from_secs(10))
            .is_empty()
    );
    assert!(healthy(&daemon));
}
