//! The SSE feed, snapshot and health endpoints of the real daemon, over real
//! sockets: live delivery, Last-Event-ID replay across restarts, resets, slow
//! clients, and the SIGTERM durability contract.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::{Daemon, SseClient, get, simulated_nmea};

const WAIT: Duration = Duration::from_secs(20);

fn replay_source(dir: &std::path::Path, epochs: usize, pace: &str, looping: bool) -> String {
    let log = dir.join("track.nmea");
    let start = Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap();
    std::fs::write(&log, simulated_nmea(epochs, start, 3)).unwrap();
    format!(
        "[[replay]]\ndevice = \"bus-1\"\npath = \"{}\"\npace = \"{pace}\"\nloop = {looping}\n",
        log.display()
    )
}

#[test]
fn live_events_carry_sequence_ids_json_and_the_right_headers() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &replay_source(dir.path(), 600, "20hz", false));
    let client = SseClient::connect(daemon.port, "", None);
    assert_eq!(client.status, 200);
    assert_eq!(client.header("content-type"), Some("text/event-stream"));
    assert_eq!(client.header("cache-control"), Some("no-cache"));
    assert_eq!(client.header("x-accel-buffering"), Some("no"));
    let first = client.next(WAIT).expect("a first block");
    assert_eq!(first.retry, Some(3000), "retry hint first: {first:?}");

    let events = client.take("position", 10, WAIT);
    let mut last = 0;
    for e in &events {
        let seq = e.seq();
        assert!(seq > last, "ids increase: {seq} after {last}");
        last = seq;
        assert!(!e.data.contains('\n'), "one-line data");
        let v = e.json();
        assert_eq!(v["device"], "bus-1");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        assert!((v["lat"].as_f64().unwrap() - 52.09).abs() < 0.1);
        assert!(v["lon"].as_f64().is_some() && v["mode"] == 3);
    }
    // Consecutive live events are consecutive store records.
    assert_eq!(events[9].seq() - events[0].seq(), 9);
}

#[test]
fn last_event_id_replays_what_was_missed_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let source = replay_source(dir.path(), 300, "max", false);
    let daemon = Daemon::start(dir.path(), &source);
    let base = daemon.base();
    // The device's `online` status, then its 300 positions.
    let head = daemon.wait_head(base + 301, WAIT);
    assert_eq!(head, base + 301, "every epoch stored");
    assert!(daemon.terminate().success());

    // Restarted without sources: the history comes from the store alone.
    let daemon = Daemon::start(dir.path(), "");
    assert_eq!(daemon.head(), head);
    let from = head - 50;
    let client = SseClient::connect(daemon.port, "", Some(&from.to_string()));
    let events = client.take("position", 50, WAIT);
    let ids: Vec<u64> = events.iter().map(|e| e.seq()).collect();
    assert_eq!(ids, (from + 1..=head).collect::<Vec<_>>());

    // The query parameter works for clients that cannot set headers.
    let client = SseClient::connect(daemon.port, &format!("?last_event_id={}", head - 3), None);
    let ids: Vec<u64> = client
        .take("position", 3, WAIT)
        .iter()
        .map(|e| e.seq())
        .collect();
    assert_eq!(ids, vec![head - 2, head - 1, head]);
}

#[test]
fn an_id_the_store_cannot_serve_gets_a_reset_and_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &replay_source(dir.path(), 20, "max", false));
    let head = daemon.wait_head(daemon.base() + 21, WAIT);

    for (id, reason) in [("1", "behind"), (&*(head + 1000).to_string(), "ahead")] {
        let client = SseClient::connect(daemon.port, "", Some(id));
        let reset = client.next_event(WAIT).expect("reset event");
        assert_eq!(reset.event.as_deref(), Some("reset"), "{reset:?}");
        assert_eq!(reset.seq(), head);
        let v = reset.json();
        assert_eq!(v["reason"], reason);
        assert_eq!(v["head"], head);
        let status = client.next_event(WAIT).expect("snapshot");
        assert_eq!(status.event.as_deref(), Some("status"));
        assert_eq!(status.json()["status"], "online");
        let snapshot = client.next_event(WAIT).expect("snapshot");
        assert_eq!(snapshot.event.as_deref(), Some("position"));
        assert_eq!(snapshot.json()["device"], "bus-1");
    }
    let bad = get(daemon.port, "/events?last_event_id=abc").unwrap_err();
    assert!(bad.starts_with("400"), "{bad}");
}

#[test]
fn keepalive_comments_flow_when_nothing_happens() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with(dir.path(), "keepalive = \"1s\"", "");
    let client = SseClient::connect(daemon.port, "", None);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let e = client
            .next(Duration::from_secs(3))
            .expect("keepalive within 3 s");
        if e.comment.as_deref() == Some("keepalive") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no keepalive comment");
    }
}

#[test]
fn a_stuck_client_blocks_neither_the_pipeline_nor_other_clients() {
    let dir = tempfile::tempdir().unwrap();
    let epochs = 20_000;
    let daemon = Daemon::start(dir.path(), &replay_source(dir.path(), epochs, "max", false));
    let base = daemon.base();
    // A client that connects and never reads: its socket buffers fill up.
    let mut stuck = TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    write!(
        stuck,
        "GET /events?last_event_id={base} HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    let live = SseClient::connect(daemon.port, "", Some(&base.to_string()));
    let rss_before = daemon.rss_kib();
    let head = daemon.wait_head(base + 1 + epochs as u64, Duration::from_secs(120));
    assert_eq!(head, base + 1 + epochs as u64, "pipeline stalled at {head}");
    let got = live.take("position", epochs, Duration::from_secs(60));
    assert_eq!(got.last().unwrap().seq(), head);
    let growth = daemon.rss_kib().saturating_sub(rss_before);
    assert!(growth < 64 * 1024, "RSS grew by {growth} KiB");
    drop(stuck);
}

#[test]
fn snapshot_and_health_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &replay_source(dir.path(), 30, "max", false));
    let head = daemon.wait_head(daemon.base() + 31, WAIT);
    let v: serde_json::Value =
        serde_json::from_str(&get(daemon.port, "/api/devices").unwrap()).unwrap();
    assert_eq!(v["seq"], head);
    let devices = v["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["device"], "bus-1");
    assert_eq!(devices[0]["seq"], head);
    assert_eq!(devices[0]["fix"]["time"], "2026-11-23T08:00:29.000Z");
    let health: serde_json::Value =
        serde_json::from_str(&get(daemon.port, "/healthz").unwrap()).unwrap();
    assert_eq!(health["status"], "ok");
    let metrics = get(daemon.port, "/metrics").unwrap();
    assert!(
        metrics.contains("fixgate_fixes_accepted_total"),
        "{metrics}"
    );
}

#[test]
fn sigterm_stops_intake_flushes_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &replay_source(dir.path(), 5000, "200hz", false));
    let base = daemon.base();
    // SIGTERM while the replay is feeding it (5,000 fixes at 200 Hz).
    let seen = daemon.wait_head(base + 100, WAIT);
    assert!(seen >= base + 100, "some fixes accepted before SIGTERM");
    assert!(daemon.terminate().success(), "exit status 0");

    let daemon = Daemon::start(dir.path(), "");
    let head = daemon.head();
    assert!(head >= seen, "accepted fixes survive: {head} < {seen}");
    // Everything stored is there, in order and without holes.
    let client = SseClient::connect(daemon.port, "", Some(&base.to_string()));
    // The first record is the device's `online` status.
    let events = client.take("position", (head - base - 1) as usize, WAIT);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq(), base + 2 + i as u64);
        let want = Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap()
            + chrono::Duration::seconds(i as i64);
        assert_eq!(e.json()["time"], fixgate::fix::time_ms::format(&want));
    }
}

#[test]
fn a_damaged_store_is_moved_aside_and_the_daemon_runs() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &replay_source(dir.path(), 10, "max", false));
    daemon.wait_head(daemon.base() + 10, WAIT);
    assert!(daemon.terminate().success());
    for entry in std::fs::read_dir(dir.path().join("store")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::write(&path, b"\xffnot sled").unwrap();
        }
    }
    let daemon = Daemon::start(dir.path(), "");
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("store.damaged-")
        });
    assert!(aside, "damaged store kept beside the new one");
    assert_eq!(daemon.metric("fixgate_store_quarantined_total"), Some(1.0));
    let log = daemon.log_text();
    assert!(log.contains("THE STORE WAS DAMAGED"), "{log}");
}

#[test]
fn a_replay_keeps_its_recorded_pace_and_loops() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &replay_source(dir.path(), 3, "recorded", true));
    let client = SseClient::connect(
        daemon.port,
        &format!("?last_event_id={}", daemon.base()),
        None,
    );
    let started = std::time::Instant::now();
    // Three epochs a second apart, then the file again from the start.
    let events = client.take("position", 5, WAIT);
    let times: Vec<String> = events
        .iter()
        .map(|e| e.json()["time"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(times[0], "2026-11-23T08:00:00.000Z");
    assert_eq!(times[2], "2026-11-23T08:00:02.000Z");
    // The loop goes on in time, one second after the last epoch.
    assert_eq!(times[3], "2026-11-23T08:00:03.000Z", "looped: {times:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "recorded pace: {:?} for 5 epochs",
        started.elapsed()
    );
}
