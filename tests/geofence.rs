//! Geofences through the real daemon: fixes posted over HTTP, events read
//! from the SSE feed and the snapshot API, a restart, late fixes, reloads on
//! a changed file and on SIGHUP.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{Daemon, SseClient, get};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);
/// Metres per degree of latitude.
const M: f64 = 111_195.08;
const LAT: f64 = 52.0;
const LON: f64 = 5.0;

/// A point `east` metres east of (LAT, LON).
fn east(m: f64) -> (f64, f64) {
    (LAT, LON + m / (M * LAT.to_radians().cos()))
}

/// A square GeoJSON polygon of `half` metres either side of (LAT, LON + shift).
fn square(half: f64, shift: f64) -> String {
    let dlat = half / M;
    let dlon = half / (M * LAT.to_radians().cos());
    let c = LON + shift / (M * LAT.to_radians().cos());
    let (s, n, w, e) = (LAT - dlat, LAT + dlat, c - dlon, c + dlon);
    format!("[[[{w},{s}],[{e},{s}],[{e},{n}],[{w},{n}],[{w},{s}]]]")
}

/// A fence file with one square "yard" of 200 m around (LAT, LON + shift).
fn fences(id: &str, shift: f64, extra: &str) -> String {
    format!(
        r#"{{"type":"FeatureCollection","features":[{{"type":"Feature","id":"{id}","properties":{{"name":"Yard {id}"{extra}}},"geometry":{{"type":"Polygon","coordinates":{}}}}}]}}"#,
        square(100.0, shift)
    )
}

/// Replaces a file the way editors and config management do: write aside, rename.
fn replace(path: &Path, text: &str) {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, text).expect("write");
    std::fs::rename(&aside, path).expect("rename");
}

fn config(file: &Path) -> String {
    format!(
        "[geofence]\nfiles = [\"{}\"]\nwatch_interval = \"200ms\"\n",
        file.display()
    )
}

/// Posts fixes of `device` (JSON objects without the device) to the HTTP intake.
fn post(port: u16, device: &str, fixes: &[Value]) {
    let body: Vec<Value> = fixes
        .iter()
        .map(|f| {
            let mut f = f.clone();
            f["device"] = device.into();
            f
        })
        .collect();
    let agent = common::http_agent(Duration::from_secs(10));
    let response = agent
        .post(format!("http://127.0.0.1:{port}/api/fixes"))
        .header("Content-Type", "application/json")
        .send(serde_json::to_string(&body).expect("json"))
        .expect("post");
    assert_eq!(response.status().as_u16(), 200);
}

/// A fix at `secs` after `t0`, `m` metres east of the yard's centre, HDOP 1.
fn fix(t0: DateTime<Utc>, secs: i64, m: f64) -> Value {
    let (lat, lon) = east(m);
    let time = t0 + chrono::Duration::seconds(secs);
    serde_json::json!({"time": time.to_rfc3339(), "lat": lat, "lon": lon, "hdop": 1.0})
}

/// Geofence events on the feed until `n` have come (or the wait is over).
fn geofence_events(feed: &SseClient, n: usize) -> Vec<Value> {
    feed.take("geofence", n, WAIT)
        .iter()
        .map(|e| e.json())
        .collect()
}

/// No further geofence event within `quiet`.
fn assert_no_geofence_event(feed: &SseClient, quiet: Duration) {
    let deadline = Instant::now() + quiet;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Some(e) = feed.next_event(left) {
            assert_ne!(
                e.event.as_deref(),
                Some("geofence"),
                "unexpected: {}",
                e.data
            );
        }
    }
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["type"].as_str().unwrap_or("?"),
                e["fence"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// The device's zones in `/api/devices`, as fence ids.
fn zones(port: u16, device: &str) -> Vec<String> {
    let body: Value =
        serde_json::from_str(&get(port, "/api/devices").expect("devices")).expect("json");
    body["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["device"] == device)
        .map(|d| {
            d["zones"]
                .as_array()
                .expect("zones")
                .iter()
                .map(|z| z["id"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Fixes posted one second apart from `t0 + from`, walking east from `a` to `b` metres in 10 m steps.
fn walk(t0: DateTime<Utc>, from: i64, a: f64, b: f64) -> Vec<Value> {
    let steps = ((b - a).abs() / 10.0) as i64;
    (0..=steps)
        .map(|i| fix(t0, from + i, a + (b - a).signum() * 10.0 * i as f64))
        .collect()
}

/// A daemon judging the fences of `fence_file` (written to `fences.geojson`
/// in `dir`) with `extra` configuration, a feed client, and a time base ten
/// minutes back.
fn start(dir: &Path, fence_file: &str, extra: &str) -> (Daemon, SseClient, DateTime<Utc>) {
    let file = dir.join("fences.geojson");
    std::fs::write(&file, fence_file).unwrap();
    let daemon = Daemon::start(dir, &format!("{}{extra}", config(&file)));
    let feed = SseClient::connect(daemon.port, "", None);
    (daemon, feed, Utc::now() - chrono::Duration::seconds(600))
}

#[test]
fn a_drive_through_a_yard_makes_enter_dwell_speeding_and_exit_on_the_feed_and_in_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let extra = r#","speed_limit_kmh":20,"dwell":"5s","operator":"depot-7""#;
    let (daemon, feed, t0) = start(dir.path(), &fences("yard", 0.0, extra), "");

    // In from the west at 10 m/s: the enter is where the 5 m error circle is inside.
    post(daemon.port, "bus-1", &walk(t0, 0, -300.0, 0.0));
    let enter = geofence_events(&feed, 1);
    assert_eq!(types(&enter), vec!["enter:yard"]);
    assert_eq!(enter[0]["device"], "bus-1");
    assert!(enter[0].get("historic").is_none());
    assert_eq!(zones(daemon.port, "bus-1"), vec!["yard"]);

    // Parked for 10 s: one dwell; then 30 m/s (108 km/h) through a 20 km/h yard.
    let parked: Vec<Value> = (31..41).map(|s| fix(t0, s, 0.0)).collect();
    post(daemon.port, "bus-1", &parked);
    let mut fast = fix(t0, 41, 30.0);
    fast["speed"] = 30.0.into();
    post(daemon.port, "bus-1", &[fast]);
    let more = geofence_events(&feed, 2);
    assert_eq!(types(&more), vec!["dwell:yard", "speeding:yard"]);
    assert_eq!(more[1]["speed"], 30.0);
    // Stored at the wire's precision, 0.01 m/s.
    assert!((more[1]["limit"].as_f64().unwrap() - 20.0 / 3.6).abs() < 0.01);

    // Out to the east: one exit, with when the visit began.
    post(daemon.port, "bus-1", &walk(t0, 42, 40.0, 400.0));
    let exit = geofence_events(&feed, 1);
    assert_eq!(types(&exit), vec!["exit:yard"]);
    assert_eq!(exit[0]["since"], enter[0]["time"]);
    assert_eq!(zones(daemon.port, "bus-1"), Vec::<String>::new());
    assert_no_geofence_event(&feed, Duration::from_millis(500));

    // The fences as GeoJSON, with their options and free properties.
    let api: Value = serde_json::from_str(&get(daemon.port, "/api/geofences").unwrap()).unwrap();
    assert_eq!(api["type"], "FeatureCollection");
    let feature = &api["features"][0];
    assert_eq!(feature["id"], "yard");
    assert_eq!(feature["geometry"]["type"], "Polygon");
    assert_eq!(feature["properties"]["name"], "Yard yard");
    assert_eq!(feature["properties"]["operator"], "depot-7");
    assert_eq!(
        daemon.metric_with("fixgate_geofence_events_total", &[("type", "enter")]),
        Some(1.0)
    );
}

#[test]
fn a_restart_neither_enters_again_nor_forgets_when_the_visit_began() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, feed, t0) = start(dir.path(), &fences("yard", 0.0, ""), "");
    post(daemon.port, "van-2", &[fix(t0, 0, 0.0)]);
    let enter = geofence_events(&feed, 1);
    assert_eq!(types(&enter), vec!["enter:yard"]);
    let config_path = daemon.config.clone();
    let port = daemon.port;
    assert!(daemon.terminate().success());

    let daemon = Daemon::spawn(dir.path(), config_path, port);
    assert_eq!(zones(port, "van-2"), vec!["yard"]);
    let head = daemon.head();
    let feed = SseClient::connect(port, &format!("?last_event_id={head}"), None);
    post(port, "van-2", &[fix(t0, 10, 0.0), fix(t0, 11, 5.0)]);
    assert_no_geofence_event(&feed, Duration::from_secs(1));
    // 500 m in 50 s: slow enough for the jump filter.
    post(port, "van-2", &[fix(t0, 61, 500.0)]);
    let exit = geofence_events(&feed, 1);
    assert_eq!(types(&exit), vec!["exit:yard"]);
    assert_eq!(exit[0]["since"], enter[0]["time"]);
}

#[test]
fn late_fixes_make_historic_events_and_leave_the_zones_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, feed, t0) = start(dir.path(), &fences("yard", 0.0, ""), "");
    // Live: inside at t0+100.
    post(daemon.port, "trk-3", &[fix(t0, 100, 0.0)]);
    assert_eq!(types(&geofence_events(&feed, 1)), vec!["enter:yard"]);
    // A tracker's buffer arrives late: outside at t0+10..20, inside at t0+30.
    let mut late: Vec<Value> = (10..20).map(|s| fix(t0, s, -600.0)).collect();
    late.push(fix(t0, 30, 0.0));
    post(daemon.port, "trk-3", &late);
    let historic = geofence_events(&feed, 1);
    assert_eq!(types(&historic), vec!["enter:yard"]);
    assert_eq!(historic[0]["historic"], true);
    assert_eq!(
        historic[0]["time"].as_str().unwrap(),
        fixgate::fix::time_ms::format(&(t0 + chrono::Duration::seconds(30))).as_str()
    );
    assert_eq!(zones(daemon.port, "trk-3"), vec!["yard"]);
    // The live state was not flipped: a live fix inside makes nothing.
    post(daemon.port, "trk-3", &[fix(t0, 101, 0.0)]);
    assert_no_geofence_event(&feed, Duration::from_millis(500));
}

#[test]
fn a_changed_fence_file_is_reloaded_an_invalid_one_is_refused_and_sighup_rereads_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, feed, t0) = start(dir.path(), &fences("old", 0.0, ""), "");
    let file = dir.path().join("fences.geojson");
    let ids = |port| -> Vec<String> {
        let api: Value = serde_json::from_str(&get(port, "/api/geofences").unwrap()).unwrap();
        let mut ids: Vec<String> = api["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let wait_ids = |want: &[&str]| {
        let deadline = Instant::now() + WAIT;
        while ids(daemon.port) != want {
            assert!(
                Instant::now() < deadline,
                "fences stayed {:?}",
                ids(daemon.port)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    // A new file, 1 km east: picked up without a restart.
    replace(&file, &fences("new", 1000.0, ""));
    wait_ids(&["new"]);
    post(daemon.port, "car-4", &[fix(t0, 0, 1000.0)]);
    assert_eq!(types(&geofence_events(&feed, 1)), vec!["enter:new"]);

    // A broken file: refused with the file named in the log, the old fences stay.
    replace(
        &file,
        r#"{"type":"FeatureCollection","features":[{"type":"Feature","id":"x y","geometry":null}]}"#,
    );
    assert!(
        daemon
            .wait_metric(
                "fixgate_geofence_reloads_total",
                &[("result", "error")],
                1.0
            )
            .is_some()
    );
    assert!(
        daemon.log_text().contains("fences.geojson"),
        "{}",
        daemon.log_text()
    );
    assert_eq!(ids(daemon.port), vec!["new"]);
    post(daemon.port, "car-4", &[fix(t0, 100, 3000.0)]);
    assert_eq!(types(&geofence_events(&feed, 1)), vec!["exit:new"]);

    // SIGHUP re-reads the configuration: an inline fence joins the file's.
    replace(&file, &fences("new", 1000.0, ""));
    let ok = &[("result", "ok")];
    assert_eq!(
        daemon.wait_metric("fixgate_geofence_reloads_total", ok, 3.0),
        Some(3.0)
    );
    let mut toml = std::fs::read_to_string(&daemon.config).unwrap();
    toml.push_str(&format!(
        "\n[[geofence.fence]]\nid = \"gate\"\nname = \"Gate\"\ncircle = {{ lat = {LAT}, lon = {LON}, radius_m = 50 }}\n"
    ));
    std::fs::write(&daemon.config, toml).unwrap();
    let pid = nix::unistd::Pid::from_raw(daemon.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_ids(&["gate", "new"]);
    post(daemon.port, "car-4", &[fix(t0, 300, 0.0)]);
    assert_eq!(types(&geofence_events(&feed, 1)), vec!["enter:gate"]);
}

#[test]
fn geofence_events_go_upstream_with_the_fix_that_caused_them() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let upstream = common::receiver::Receiver::http(dir.path(), port);
    let uplink = format!(
        "\n[uplink]\ntransport = \"http\"\nurl = \"http://127.0.0.1:{port}/batches\"\nmax_age = \"100ms\"\n"
    );
    let (daemon, _feed, t0) = start(dir.path(), &fences("yard", 0.0, ""), &uplink);
    post(daemon.port, "bus-9", &walk(t0, 0, -300.0, 0.0));
    let records = upstream.wait_until(WAIT, |r| r.iter().any(|r| r["event"] == "geofence"));
    let enter = records
        .iter()
        .position(|r| r["event"] == "geofence")
        .expect("a geofence record upstream");
    let e = &records[enter];
    assert_eq!(
        (e["type"].as_str(), e["fence"].as_str()),
        (Some("enter"), Some("yard"))
    );
    // Right behind the fix that caused it, with that fix's time and place.
    let fix = &records[enter - 1];
    assert_eq!(fix["event"], "position");
    assert_eq!(fix["seq"].as_u64().unwrap() + 1, e["seq"].as_u64().unwrap());
    assert_eq!(fix["time"], e["time"]);
    assert_eq!(fix["lat"], e["lat"]);
}

#[test]
fn a_fence_wider_than_half_the_globe_is_refused_at_reload_and_the_fences_in_force_stay() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, feed, t0) = start(dir.path(), &fences("yard", 0.0, ""), "");
    let file = dir.path().join("fences.geojson");
    let ids = || -> Vec<String> {
        let api: Value =
            serde_json::from_str(&get(daemon.port, "/api/geofences").unwrap()).unwrap();
        api["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(), ["yard"]);
    // -100° to 100° would be read as 160° across ±180° (everything but
    // Europe, Africa and the yard): refused whole, with the file and the feature.
    let wide = r#"{"type":"Feature","id":"wide","properties":{},"geometry":{"type":"Polygon","coordinates":[[[-100,0],[100,0],[100,60],[-100,60],[-100,0]]]}}"#;
    let yard = fences("yard", 0.0, "");
    let both = yard.replace("}]}", &format!("}},{wide}]}}"));
    replace(&file, &both);
    let error = &[("result", "error")];
    assert_eq!(
        daemon.wait_metric("fixgate_geofence_reloads_total", error, 1.0),
        Some(1.0)
    );
    let log = daemon.log_text();
    assert!(
        log.contains(
            "fences.geojson: feature 1 (id \"wide\"): the area spans 200.0° of longitude as written"
        ),
        "{log}"
    );
    assert_eq!(ids(), ["yard"]);
    // The yard is still judged: in and out of it.
    post(daemon.port, "car-9", &walk(t0, 0, -300.0, 300.0));
    assert_eq!(
        types(&geofence_events(&feed, 2)),
        vec!["enter:yard", "exit:yard"]
    );

    // The same as an inline fence on SIGHUP: refused whole too.
    replace(&file, &yard);
    let ok = &[("result", "ok")];
    daemon.wait_metric("fixgate_geofence_reloads_total", ok, 2.0);
    let mut toml = std::fs::read_to_string(&daemon.config).unwrap();
    toml.push_str("\n[[geofence.fence]]\nid = \"inline\"\npolygon = [[[100, 0], [-100, 0], [-100, 60], [100, 60]]]\n");
    std::fs::write(&daemon.config, toml).unwrap();
    let pid = nix::unistd::Pid::from_raw(daemon.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    assert_eq!(
        daemon.wait_metric("fixgate_geofence_reloads_total", error, 2.0),
        Some(2.0)
    );
    assert!(
        daemon
            .log_text()
            .contains("`geofence.fence.polygon`: the area spans 200.0°"),
        "{}",
        daemon.log_text()
    );
    assert_eq!(ids(), ["yard"]);
    // A fix across the Pacific enters nothing.
    let pacific = t0 + chrono::Duration::seconds(200);
    post(
        daemon.port,
        "ship-1",
        &[serde_json::json!({"time": pacific.to_rfc3339(), "lat": 30.0, "lon": 179.0})],
    );
    assert_no_geofence_event(&feed, Duration::from_millis(500));
}
