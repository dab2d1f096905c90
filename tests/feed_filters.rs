//! The feed at depot scale, through the real daemon: every event encoded
//! once for all live clients, clients far behind catching up from the store
//! and joining the shared ring, filters by device, group, type and box on
//! `/events` and `/api/devices`, coalescing (`max_rate`), device groups from
//! MQTT topics and from the configuration (kept across a restart), and bad
//! filters answered `400`.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, SseClient, get, http_agent, mosquitto_pub, start_with_broker, wait_until};

const WAIT: Duration = Duration::from_secs(20);

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Posts `fixes` (device, lat, lon, ms after two hours ago) in one request.
fn post(daemon: &Daemon, fixes: &[(&str, f64, f64, i64)]) {
    let base = now_ms() - 7_200_000;
    let items: Vec<String> = fixes
        .iter()
        .map(|(d, lat, lon, t)| {
            format!(
                r#"{{"device":"{d}","time":{},"lat":{lat},"lon":{lon}}}"#,
                base + t
            )
        })
        .collect();
    let status = http_agent(WAIT)
        .post(format!("http://127.0.0.1:{}/api/fixes", daemon.port))
        .header("Content-Type", "application/json")
        .send(format!("[{}]", items.join(",")))
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(status, 200);
}

fn status_of(port: u16, path: &str) -> (u16, String) {
    let mut response = http_agent(WAIT)
        .get(format!("http://127.0.0.1:{port}{path}"))
        .call()
        .expect("request");
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

#[test]
fn every_event_is_encoded_once_for_all_live_clients() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "");
    let clients: Vec<SseClient> = (0..8)
        .map(|_| SseClient::connect(daemon.port, "", None).ready())
        .collect();
    let fixes: Vec<(&str, f64, f64, i64)> = (0..200)
        .map(|i| ("bus-1", 52.0 + i as f64 * 1e-4, 5.1, i * 1000))
        .collect();
    post(&daemon, &fixes);
    for client in &clients {
        let got = client.take("position", 200, WAIT);
        let seqs: Vec<u64> = got.iter().map(|e| e.seq()).collect();
        assert!(seqs.windows(2).all(|w| w[1] > w[0]), "in order");
    }
    // 200 positions and one status (online): encoded once, not 8 times.
    let encoded = daemon
        .metric("fixgate_sse_frames_encoded_total")
        .unwrap_or(0.0);
    assert!(
        (201.0..=210.0).contains(&encoded),
        "frames encoded: {encoded} for 201 events and 8 clients"
    );
    assert!(
        daemon
            .metric("fixgate_sse_events_sent_total")
            .unwrap_or(0.0)
            >= 8.0 * 201.0
    );
}

#[test]
fn a_client_far_behind_catches_up_from_the_store_then_goes_on_live() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "");
    // More than the ring holds (8,192 frames).
    for chunk in 0..12 {
        let fixes: Vec<(&str, f64, f64, i64)> = (0..1000)
            .map(|i| {
                let n = chunk * 1000 + i;
                ("van-1", 52.0 + n as f64 * 1e-6, 5.1, n * 100)
            })
            .collect();
        post(&daemon, &fixes);
    }
    let base = daemon.base();
    let client = SseClient::connect(daemon.port, "", Some(&base.to_string()));
    let got = client.take("position", 12_000, Duration::from_secs(60));
    let seqs: Vec<u64> = got.iter().map(|e| e.seq()).collect();
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "no repeats, in order");
    // Then live, from the ring.
    post(&daemon, &[("van-1", 52.0121, 5.1, 1_300_000)]);
    let live = client.take("position", 1, WAIT);
    assert_eq!(live[0].json()["lat"], 52.0121);
}

#[test]
fn filters_by_device_type_and_box_on_the_feed_and_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        "[[group]]\nname = \"buses\"\ndevices = [\"bus-*\"]\n",
    );
    let only_bus2 = SseClient::connect(daemon.port, "?device=bus-2", None).ready();
    let statuses = SseClient::connect(daemon.port, "?types=status", None).ready();
    let in_box =
        SseClient::connect(daemon.port, "?types=position&bbox=5.0,52.0,5.2,52.2", None).ready();
    let buses = SseClient::connect(daemon.port, "?group=buses&types=position", None).ready();
    post(
        &daemon,
        &[
            ("bus-1", 52.1, 5.1, 0),
            ("bus-2", 52.1, 5.1, 0),
            ("van-1", 52.1, 5.1, 0),
            // An hour later and 150 km away: out of the box.
            ("bus-2", 53.5, 7.0, 3_600_000),
        ],
    );
    let got = only_bus2.take("position", 2, WAIT);
    assert!(got.iter().all(|e| e.json()["device"] == "bus-2"));
    let online = statuses.take("status", 3, WAIT);
    assert_eq!(online.len(), 3);
    let placed = in_box.take("position", 3, WAIT);
    assert!(placed.iter().all(|e| e.json()["lat"] == 52.1));
    let bus = buses.take("position", 3, WAIT);
    assert!(bus.iter().all(|e| {
        e.json()["device"]
            .as_str()
            .is_some_and(|d| d.starts_with("bus-"))
    }));
    // Nothing else came to the box client: its next event would be a
    // keepalive. (Bounded: half a second in which nothing may arrive.)
    assert!(in_box.next_event(Duration::from_millis(500)).is_none());

    let (_, body) = status_of(daemon.port, "/api/devices?group=buses");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["bus-1", "bus-2"]);
    assert_eq!(v["devices"][0]["group"], "buses");
    let (_, body) = status_of(
        daemon.port,
        "/api/devices?bbox=5.0,52.0,5.2,52.2&device=bus-2,van-1",
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["van-1"], "bus-2's live position left the box");
}

#[test]
fn max_rate_sends_the_latest_position_per_interval_and_every_other_event() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "");
    let slow = SseClient::connect(daemon.port, "?max_rate=2s", None).ready();
    let full = SseClient::connect(daemon.port, "", None).ready();
    // 20 positions of one device over about 2 s of wall time: the pace is
    // the scenario (a device reporting at 10 Hz against a 2 s max_rate).
    let started = Instant::now();
    for i in 0..20 {
        post(&daemon, &[("bus-1", 52.0 + i as f64 * 1e-5, 5.1, i * 1000)]);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(full.take("position", 20, WAIT).len(), 20);
    // The slow client: the first, then at most one per 2 s, the last one
    // (the latest) arriving once its interval has passed.
    let mut positions = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut ids = Vec::new();
    while Instant::now() < deadline {
        if let Some(e) = slow.next_event(Duration::from_millis(200)) {
            if let Some(id) = e.id.as_deref().and_then(|i| i.parse::<u64>().ok()) {
                ids.push(id);
            }
            if e.event.as_deref() == Some("position") {
                positions.push(e.json()["lat"].as_f64().unwrap());
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        positions.len() >= 2 && positions.len() as f64 <= 2.0 + elapsed / 2.0,
        "{} positions in {elapsed:.1} s: {positions:?}",
        positions.len()
    );
    assert_eq!(*positions.last().unwrap(), 52.00019, "the latest wins");
    assert!(
        ids.windows(2).all(|w| w[1] >= w[0]),
        "ids only grow: {ids:?}"
    );
}

#[test]
fn groups_come_from_mqtt_topics_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mqtt) = start_with_broker(dir.path(), "", "");
    let north = r#"{"lat":52.1,"lon":5.1}"#;
    assert!(mosquitto_pub(
        mqtt,
        "fleet/north/device/tram-1/fix",
        north.as_bytes(),
        None
    ));
    assert!(mosquitto_pub(
        mqtt,
        "fleet/south/device/tram-2/fix",
        north.as_bytes(),
        None
    ));
    wait_until("tram-2 in /api/devices", WAIT, || {
        status_of(daemon.port, "/api/devices").1.contains("tram-2")
    });
    let names = |port| {
        let (status, body) = status_of(port, "/api/devices?group=north");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["device"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(daemon.port), vec!["tram-1"]);
    let (config, port) = (daemon.config.clone(), daemon.port);
    assert!(daemon.terminate().success());
    let daemon = Daemon::spawn(dir.path(), config, port);
    assert_eq!(
        names(daemon.port),
        vec!["tram-1"],
        "learned groups are stored"
    );
    assert!(get(daemon.port, "/healthz").is_ok());
}

#[test]
fn bad_filters_get_400_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "");
    for (path, says) in [
        ("/events?types=positions", "types"),
        ("/events?bbox=1,2,3", "bbox"),
        ("/events?bbox=0,60,1,50", "north"),
        ("/events?device=", "device"),
        ("/events?group=nobody", "no group"),
        ("/events?max_rate=soon", "max_rate"),
        ("/api/devices?types=status", "/events only"),
        ("/api/devices?group=a%2Fb", "group"),
    ] {
        let (status, body) = status_of(daemon.port, path);
        assert_eq!(status, 400, "{path}");
        assert!(body.contains(says), "{path}: {body}");
    }
    assert!(
        daemon
            .metric_with("fixgate_sse_rejected_total", &[("reason", "bad_filter")])
            .unwrap_or(0.0)
            >= 8.0
    );
    assert!(get(daemon.port, "/healthz").is_ok());
}
