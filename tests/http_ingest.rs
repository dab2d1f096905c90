//! HTTP intake through a real socket: `POST /api/fixes` and the OsmAnd
//! protocol, with per-device and shared tokens.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{Daemon, SseClient};

const WAIT: Duration = Duration::from_secs(15);

/// Sends a request; the status and body.
fn send(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}{path}");
    let auth = token.map(|t| format!("Bearer {t}"));
    let result = if method == "POST" {
        let mut req = agent.post(&url).header("Content-Type", "application/json");
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        req.send(body)
    } else {
        let mut req = agent.get(&url);
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        req.call()
    };
    let mut response = result.expect("request");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, text)
}

const TOKENS: &str =
    "[http]\ntoken = \"shared-secret\"\n[http.tokens]\n\"van-1\" = \"van-1-own-token\"\n";

#[test]
fn post_api_fixes_takes_one_fix_or_an_array_with_the_right_token() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), TOKENS);
    let feed = SseClient::connect(daemon.port, "", None);
    let now = Utc::now().timestamp_millis();
    let one = format!(r#"{{"device":"car-1","time":{now},"lat":52.1,"lon":5.1,"accuracy":6.5}}"#);
    assert_eq!(
        send(
            daemon.port,
            "POST",
            "/api/fixes",
            Some("shared-secret"),
            &one
        )
        .0,
        200
    );
    let many = format!(
        r#"[{{"time":{},"lat":52.2,"lon":5.2}},{{"time":{},"lat":52.2001,"lon":5.2}}]"#,
        now - 2000,
        now - 1000
    );
    // The device's own token names it; the shared token may not stand in for it.
    assert_eq!(
        send(
            daemon.port,
            "POST",
            "/api/fixes",
            Some("shared-secret"),
            &many.replace("{\"time", "{\"device\":\"van-1\",\"time")
        )
        .0,
        401
    );
    let (status, body) = send(
        daemon.port,
        "POST",
        "/api/fixes",
        Some("van-1-own-token"),
        &many,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["accepted"],
        2
    );
    let got = feed.take("position", 3, WAIT);
    let devices: Vec<_> = got
        .iter()
        .map(|e| e.json()["device"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(devices, ["car-1", "van-1", "van-1"]);
    assert_eq!(got[0].json()["accuracy"], 6.5);
}

#[test]
fn unauthenticated_malformed_and_oversized_requests_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &TOKENS.replace("[http]\n", "[http]\nmax_body = 2048\n"),
    );
    let fix = r#"{"device":"car-2","lat":52.1,"lon":5.1}"#;
    assert_eq!(send(daemon.port, "POST", "/api/fixes", None, fix).0, 401);
    assert_eq!(
        send(daemon.port, "POST", "/api/fixes", Some("nope-nope"), fix).0,
        401
    );
    assert_eq!(
        send(
            daemon.port,
            "POST",
            "/api/fixes",
            Some("shared-secret"),
            "{\"lat\":"
        )
        .0,
        400
    );
    let big = format!("[{}]", vec![fix; 100].join(","));
    assert_eq!(
        send(
            daemon.port,
            "POST",
            "/api/fixes",
            Some("shared-secret"),
            &big
        )
        .0,
        413
    );
    // Devices called like the placeholders of old: counted as themselves,
    // apart from input that names no device, and from those beyond the budget.
    for device in ["-", "other"] {
        let fix = format!(r#"{{"device":"{device}","lat":52.1,"lon":5.1}}"#);
        assert_eq!(send(daemon.port, "POST", "/api/fixes", None, &fix).0, 401);
    }
    for (reason, device) in [
        ("no_token", "car-2"),
        ("bad_token", "car-2"),
        ("malformed", "(none)"),
        ("oversized", "(none)"),
        ("no_token", "-"),
        ("no_token", "other"),
    ] {
        assert_eq!(
            daemon.metric_with(
                "fixgate_ingest_rejected_total",
                &[("source", "http"), ("reason", reason), ("device", device)]
            ),
            Some(1.0),
            "{reason}\n{}",
            daemon.log_text()
        );
    }
    // Nothing got in.
    assert_eq!(daemon.metric("fixgate_fixes_accepted_total"), None);
}

#[test]
fn osmand_protocol_as_traccar_client_sends_it() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "");
    let feed = SseClient::connect(daemon.port, "", None);
    let ts = Utc::now().timestamp() - 3;
    // Traccar Client: query string, empty POST body, speed in knots.
    let path = format!(
        "/osmand?id=phone-42&lat=52.0907&lon=5.1214&timestamp={ts}&speed=10.0&bearing=90.5&altitude=3.0&accuracy=12.0&batt=80"
    );
    let (status, body) = send(daemon.port, "POST", &path, None, "");
    assert_eq!(status, 200, "{body}");
    let got = feed.take("position", 1, WAIT);
    assert_eq!(got.len(), 1);
    let p = got[0].json();
    assert_eq!(p["device"], "phone-42");
    assert_eq!(p["course"], 90.5);
    assert_eq!(p["accuracy"], 12.0);
    let speed = p["speed"].as_f64().unwrap();
    assert!(
        (speed - 5.14).abs() < 0.01,
        "10 knots is 5.14 m/s, got {speed}"
    );
    // Without an id it is refused with a reason.
    assert_eq!(
        send(daemon.port, "GET", "/osmand?lat=1&lon=2", None, "").0,
        400
    );
    assert_eq!(
        daemon.metric_with(
            "fixgate_fixes_accepted_total",
            &[("source", "http"), ("class", "osmand")]
        ),
        Some(1.0)
    );
}

#[test]
fn the_pipelines_filters_drop_and_count_by_reason_and_device() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        "[gateway]\nclock = \"always\"\n[filter]\nmin_period = \"5s\"\n",
    );
    let now = Utc::now().timestamp_millis();
    let fix = |time: i64, lat: f64, extra: &str| {
        format!(r#"{{"device":"f-1","time":{time},"lat":{lat},"lon":5.1{extra}}}"#)
    };
    let cases = [
        (fix(now - 60_000, 52.1, ""), None),                  // live
        (fix(now - 60_000, 52.1, ""), Some("duplicate")),     // same time again
        (fix(now - 59_000, 52.1001, ""), Some("min_period")), // 1 s later
        (fix(now - 50_000, 53.1, ""), Some("speed_jump")),    // 111 km in 10 s
        (
            fix(now - 40_000, 52.1002, r#","hdop":35"#),
            Some("accuracy"),
        ),
        (fix(now + 3_600_000, 52.1, ""), Some("future")),
        (fix(now - 30 * 86_400_000, 52.1, ""), Some("too_old")),
        (
            r#"{"device":"f-1","lat":0.0,"lon":0.0}"#.to_owned(),
            Some("zero_island"),
        ),
        (fix(now - 30_000, 52.1003, ""), None), // live again
        (fix(now - 90_000, 52.0999, ""), None), // late: historic
    ];
    for (body, _) in &cases {
        let (status, text) = send(daemon.port, "POST", "/api/fixes", None, body);
        assert_eq!(status, 200, "{body}: {text}");
    }
    // The writer takes them in order: once the last is in, all are.
    daemon.wait_metric("fixgate_fixes_accepted_total", &[("kind", "historic")], 1.0);
    for (_, reason) in &cases {
        if let Some(reason) = reason {
            assert_eq!(
                daemon.metric_with(
                    "fixgate_fixes_dropped_total",
                    &[("reason", reason), ("device", "f-1"), ("source", "http")]
                ),
                Some(1.0),
                "{reason}\n{}",
                daemon.log_text()
            );
        }
    }
    assert_eq!(
        daemon.metric_with("fixgate_fixes_accepted_total", &[("kind", "live")]),
        Some(2.0)
    );
    assert_eq!(
        daemon.metric_with("fixgate_fixes_accepted_total", &[("kind", "historic")]),
        Some(1.0)
    );
}

#[test]
fn a_forgotten_device_keeps_its_live_position_and_a_flood_of_bad_names_evicts_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        "[devices]\nmax_devices = 2\noffline_after = \"1s\"\n",
    );
    let now = Utc::now().timestamp_millis();
    let post = |device: &str, age_ms: i64, lat: f64| {
        let body = format!(
            r#"{{"device":"{device}","time":{},"lat":{lat},"lon":5.1}}"#,
            now - age_ms
        );
        assert_eq!(send(daemon.port, "POST", "/api/fixes", None, &body).0, 200);
    };
    post("a", 10_000, 52.1);
    post("b", 10_000, 52.2);
    // Both silent past offline_after (1 s): offline.
    assert_eq!(
        daemon.wait_metric("fixgate_device_status_total", &[("status", "offline")], 2.0),
        Some(2.0)
    );
    // New names whose fixes the filters drop (at 0,0): nobody evicted.
    for i in 0..5 {
        let body = format!(r#"{{"device":"junk-{i}","lat":0.0,"lon":0.0}}"#);
        assert_eq!(send(daemon.port, "POST", "/api/fixes", None, &body).0, 200);
    }
    assert_eq!(
        daemon.wait_metric(
            "fixgate_fixes_dropped_total",
            &[("reason", "zero_island")],
            5.0
        ),
        Some(5.0)
    );
    // Nor do impossible ones, which the intake refuses outright.
    let body = r#"{"device":"junk-9","lat":123.0,"lon":5.1}"#;
    assert_eq!(send(daemon.port, "POST", "/api/fixes", None, body).0, 400);
    assert_eq!(
        daemon.metric_with(
            "fixgate_fixes_dropped_total",
            &[("reason", "too_many_devices")]
        ),
        None
    );
    post("c", 5_000, 52.3); // evicts a, the longest silent
    post("a", 20_000, 52.9); // older than a's stored live fix
    daemon.wait_metric("fixgate_fixes_accepted_total", &[("kind", "historic")], 1.0);
    let all: serde_json::Value =
        serde_json::from_str(&common::get(daemon.port, "/api/devices").unwrap()).unwrap();
    let a = all["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == "a")
        .unwrap();
    assert_eq!(a["fix"]["lat"], 52.1, "the live position stayed: {all}");
    assert_eq!(
        daemon.metric_with("fixgate_fixes_accepted_total", &[("kind", "historic")]),
        Some(1.0)
    );
}

#[test]
fn a_configured_receivers_name_cannot_be_used_from_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("none.nmea");
    std::fs::write(&log, "").unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &format!(
            "[[replay]]\ndevice = \"bus-1\"\npath = \"{}\"\n",
            log.display()
        ),
    );
    let body = r#"{"device":"bus-1","lat":52.1,"lon":5.1}"#;
    assert_eq!(send(daemon.port, "POST", "/api/fixes", None, body).0, 200);
    assert_eq!(
        daemon.wait_metric(
            "fixgate_fixes_dropped_total",
            &[("reason", "reserved_device"), ("source", "http")],
            1.0
        ),
        Some(1.0)
    );
    assert_eq!(daemon.metric("fixgate_fixes_accepted_total"), None);
}

#[test]
fn a_token_in_the_query_is_url_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "[http]\ntoken = \"abc+def/ghi=\"\n");
    let path = "/osmand?id=q-1&lat=52.1&lon=5.1";
    assert_eq!(send(daemon.port, "GET", path, None, "").0, 401);
    let encoded = format!("{path}&token=abc%2Bdef%2Fghi%3D");
    assert_eq!(send(daemon.port, "GET", &encoded, None, "").0, 200);
    assert_eq!(
        send(daemon.port, "POST", path, Some("abc+def/ghi="), "").0,
        200
    );
}

#[test]
fn impossible_values_are_refused_naming_the_field_and_the_edges_are_stored_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        "[filter]\nmax_age = false\nmax_hdop = false\nmax_accuracy = false\n",
    );
    let now = Utc::now().timestamp_millis();
    let fix =
        |extra: &str| format!(r#"{{"device":"v-1","time":{now},"lat":52.1,"lon":5.1{extra}}}"#);
    let cases = [
        (
            fix(r#","alt":1e308"#),
            "`alt`: 1e308 is outside -1000…100000 m",
        ),
        (
            fix(r#","speed":1e12"#),
            "`speed`: 1000000000000 is outside 0…3000 m/s",
        ),
        (fix(r#","hdop":1000"#), "`hdop`"),
        (fix(r#","accuracy":1e12"#), "`accuracy`"),
        (fix(r#","course":400"#), "`course`"),
        (fix(r#","alt":-1e5"#), "`alt`"),
        (
            format!("[{},{}]", fix(""), fix(r#","speed":-1"#)),
            "array element 1: invalid `speed`",
        ),
        (
            r#"{"device":"v-1","time":0,"lat":52.1,"lon":5.1}"#.to_owned(),
            "`time`: 1970-01-01T00:00:00.000Z is outside 1980-01-06",
        ),
    ];
    for (body, named) in &cases {
        let (status, text) = send(daemon.port, "POST", "/api/fixes", None, body);
        assert_eq!(status, 400, "{body}: {text}");
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["error"], "invalid_value", "{text}");
        let detail = answer["detail"].as_str().unwrap();
        assert!(detail.contains(named), "{named:?} in {detail}");
    }
    let (status, text) = send(
        daemon.port,
        "GET",
        "/osmand?id=v-1&lat=52.1&lon=5.1&altitude=1e308",
        None,
        "",
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("`altitude`"), "{text}");
    assert_eq!(
        daemon.metric_with(
            "fixgate_ingest_rejected_total",
            &[("reason", "invalid_value"), ("source", "http")]
        ),
        Some(cases.len() as f64 + 1.0)
    );
    // Nothing of a refused request was taken, not even its good fix.
    assert_eq!(daemon.metric("fixgate_fixes_accepted_total"), None);

    // The ends of every range are stored and served exactly.
    let feed = SseClient::connect(daemon.port, "", None);
    let high = format!(
        r#"{{"device":"edge-1","time":{},"lat":-89.9999999,"lon":180,"alt":100000,"speed":3000,"course":359.9,"hdop":100,"sats":255,"accuracy":20000000}}"#,
        now - 1000
    );
    let low = format!(
        r#"{{"device":"edge-1","time":{now},"lat":-89.9999999,"lon":180,"alt":-1000,"speed":0,"course":0,"hdop":0,"sats":0,"accuracy":0}}"#
    );
    for body in [&high, &low] {
        let (status, text) = send(daemon.port, "POST", "/api/fixes", None, body);
        assert_eq!(status, 200, "{text}");
    }
    let got = feed.take("position", 2, WAIT);
    let sent: Vec<serde_json::Value> = [&high, &low]
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    for (event, sent) in got.iter().zip(&sent) {
        let event = event.json();
        for key in [
            "lat", "lon", "alt", "speed", "course", "hdop", "sats", "accuracy",
        ] {
            assert_eq!(
                event[key].as_f64(),
                sent[key].as_f64(),
                "{key}: {event} for {sent}"
            );
        }
    }
    // And as the store keeps them, from the snapshot.
    let all: serde_json::Value =
        serde_json::from_str(&common::get(daemon.port, "/api/devices").unwrap()).unwrap();
    let edge = &all["devices"][0]["fix"];
    assert_eq!(edge["alt"], -1000.0, "{all}");
    assert_eq!(edge["accuracy"], 0.0, "{all}");
}

/// Most lines a flood may log per reason: five a minute per reason
/// (`log_limit::LINES_PER_REASON`); a test run spans at most two minutes.
const LINES_PER_REASON: usize = 10;
/// Longest log line allowed: outside strings are cut to 64 characters and
/// messages about them to 400.
const LONGEST_LINE: usize = 1000;

/// Log lines with `marker` whose `reason` field is `reason`.
fn lines_of(log: &str, marker: &str, reason: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(marker) && l.contains(&format!("reason=\"{reason}\"")))
        .count()
}

#[test]
fn a_flood_of_invented_names_leaves_metrics_and_logs_small() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        "[gateway]\nclock = \"always\"\n[filter]\nmax_age = \"1h\"\n[http]\ntoken = \"shared-secret\"\n",
    );
    let agent = common::http_agent(Duration::from_secs(10));
    let url = format!("http://127.0.0.1:{}/api/fixes", daemon.port);
    let now = Utc::now().timestamp_millis();
    let names = 5000;
    let long_name = "n".repeat(10_000);
    // Four reasons that keep the device's name, 1,250 names each: two
    // refusals at the intake, one request each (a refusal refuses the
    // whole request) ...
    for i in 0..names / 2 {
        let body = format!(r#"{{"device":"inv-{i}","lat":52.1,"lon":5.1}}"#);
        let mut request = agent.post(&url).header("Content-Type", "application/json");
        if i % 2 == 1 {
            request = request.header("Authorization", "Bearer not-the-token");
        }
        let status = request.send(&body).expect("post").status().as_u16();
        assert_eq!(status, 401, "{body}");
        if i % 250 == 0 {
            // ... and a name of 10 KB, which is no device id, now and then ...
            let body = format!(r#"{{"device":"{long_name}","lat":52.1,"lon":5.1}}"#);
            let response = agent
                .post(&url)
                .header("Authorization", "Bearer shared-secret")
                .send(&body)
                .expect("post");
            assert_eq!(response.status().as_u16(), 400);
        }
    }
    // ... and two drops by the writer's filters, 500 names a request.
    let fixes: Vec<String> = (names / 2..names)
        .map(|i| {
            if i % 2 == 0 {
                format!(r#"{{"device":"inv-{i}","lat":0,"lon":0}}"#)
            } else {
                let old = now - 7_200_000;
                format!(r#"{{"device":"inv-{i}","time":{old},"lat":52.1,"lon":5.1}}"#)
            }
        })
        .collect();
    for chunk in fixes.chunks(500) {
        let (status, text) = send(
            daemon.port,
            "POST",
            "/api/fixes",
            Some("shared-secret"),
            &format!("[{}]", chunk.join(",")),
        );
        assert_eq!(status, 200, "{text}");
    }
    let drops = f64::from(names / 2);
    assert_eq!(
        daemon.wait_metric("fixgate_fixes_dropped_total", &[], drops),
        Some(drops),
        "{}",
        daemon.log_text()
    );
    let rejected = daemon.metric("fixgate_ingest_rejected_total");
    assert_eq!(rejected, Some(f64::from(names / 2 + 10)));

    // Metrics: one budget of device-labelled series (1,000 at most, on
    // this default max_devices), each reason's `(other)` beyond it.
    let scrape = common::scrape(daemon.port);
    eprintln!("after {names} invented names over HTTP: {scrape:?}");
    assert!(scrape.device_series <= 1000 + 10, "{scrape:?}");
    assert!(scrape.bytes < 256 * 1024, "{scrape:?}");
    assert!(scrape.took < Duration::from_secs(1), "{scrape:?}");
    assert!(
        daemon
            .metric_with("fixgate_fixes_dropped_total", &[("device", "(other)")])
            .is_some_and(|n| n > 0.0)
    );
    assert_eq!(
        daemon.metric_with(
            "fixgate_ingest_rejected_total",
            &[("reason", "device_id"), ("device", "(none)")]
        ),
        Some(10.0)
    );

    // Logs: a few lines per reason, none of them long.
    let log = daemon.log_text();
    for reason in ["no_token", "bad_token", "device_id"] {
        let n = lines_of(&log, "input rejected", reason);
        assert!(
            (1..=LINES_PER_REASON).contains(&n),
            "{reason}: {n} lines\n{log}"
        );
    }
    for reason in ["zero_island", "too_old"] {
        let n = lines_of(&log, "fix dropped by filter", reason);
        assert!(
            (1..=LINES_PER_REASON).contains(&n),
            "{reason}: {n} lines\n{log}"
        );
    }
    let longest = log.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    assert!(longest <= LONGEST_LINE, "a line of {longest} characters");
    assert!(log.contains("held back for a minute"), "{log}");
    eprintln!(
        "log: {} lines, the longest {longest} characters",
        log.lines().count()
    );
}

#[test]
fn a_fix_of_a_device_beyond_max_devices_is_answered_as_queued_and_dropped_by_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "[devices]\nmax_devices = 1\n");
    let fix = |device: &str| format!(r#"{{"device":"{device}","lat":52.1,"lon":5.1}}"#);
    assert_eq!(
        send(daemon.port, "POST", "/api/fixes", None, &fix("one")).0,
        200
    );
    // `one` is online, so there is no room for `two`: the intake has
    // queued its fix (200), and the writer drops and counts it, as the
    // docs/devices.md ("HTTP devices") says.
    let (status, body) = send(daemon.port, "POST", "/api/fixes", None, &fix("two"));
    assert_eq!((status, body.as_str()), (200, r#"{"accepted":1}"#));
    assert_eq!(
        daemon.wait_metric(
            "fixgate_fixes_dropped_total",
            &[("reason", "too_many_devices"), ("source", "http")],
            1.0
        ),
        Some(1.0)
    );
    let all: serde_json::Value =
        serde_json::from_str(&common::get(daemon.port, "/api/devices").unwrap()).unwrap();
    assert_eq!(all["devices"].as_array().unwrap().len(), 1, "{all}");
}
