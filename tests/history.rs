//! `GET /api/history` and the tile archive, through the real daemon: a
//! device's track as GeoJSON (parsed back), GPX (validated against the GPX
//! 1.1 schema with `xmllint`) and JSON Lines; late fixes in their place and
//! marked; limits and bad parameters answered `400`; a PMTiles archive
//! served by byte ranges.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Daemon, get, http_agent};

const BASE_MS: i64 = 1_796_371_200_000; // 2026-12-04T08:00:00Z

fn post(daemon: &Daemon, body: String) -> u16 {
    http_agent(Duration::from_secs(20))
        .post(format!("http://127.0.0.1:{}/api/fixes", daemon.port))
        .header("Content-Type", "application/json")
        .send(body)
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn fix(device: &str, s: i64) -> String {
    let lat = 52.09 + s as f64 * 1e-4;
    format!(
        r#"{{"device":"{device}","time":{},"lat":{lat},"lon":5.12,"alt":4.5,"speed":7.25,"course":90.0,"hdop":0.8,"sats":11,"mode":3}}"#,
        BASE_MS + s * 1000
    )
}

/// `GET` returning the status and the body.
fn fetch(port: u16, path: &str) -> (u16, String) {
    let mut response = http_agent(Duration::from_secs(20))
        .get(format!("http://127.0.0.1:{port}{path}"))
        .call()
        .expect("request");
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// The GPX 1.1 schema: `$FIXGATE_GPX_XSD`, or where scripts/test.sh puts it.
fn gpx_schema() -> PathBuf {
    std::env::var_os("FIXGATE_GPX_XSD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/gpx-1.1.xsd"))
}

#[test]
fn a_track_in_three_formats_with_late_fixes_in_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "");
    // Live fixes 0..30 s, then ones from 100..110 s, then a late one at
    // 15.5 s (a tracker's buffer), and another device's in between.
    let live: Vec<String> = (0..30).map(|s| fix("bus-1", s)).collect();
    assert_eq!(post(&daemon, format!("[{}]", live.join(","))), 200);
    assert_eq!(post(&daemon, format!("[{}]", fix("van-2", 10))), 200);
    let later: Vec<String> = (100..110).map(|s| fix("bus-1", s)).collect();
    assert_eq!(post(&daemon, format!("[{}]", later.join(","))), 200);
    let late = fix("bus-1", 15).replace(
        &format!("{}", BASE_MS + 15_000),
        &format!("{}", BASE_MS + 15_500),
    );
    assert_eq!(post(&daemon, format!("[{late}]")), 200);
    let head = daemon.head();
    daemon.wait_head(head, Duration::from_secs(10));

    let span = "device=bus-1&from=2026-12-04T08:00:00Z&to=2026-12-04T08:05:00Z";
    let (status, body) = fetch(daemon.port, &format!("/api/history?{span}&format=geojson"));
    assert_eq!(status, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).expect("GeoJSON parses back");
    let track = doc["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["geometry"]["type"] == "LineString")
        .expect("a LineString");
    let coordinates = track["geometry"]["coordinates"].as_array().unwrap();
    assert_eq!(coordinates.len(), 41);
    let times: Vec<&str> = track["properties"]["times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "in fix-time order");
    let late_at = times
        .iter()
        .position(|t| *t == "2026-12-04T08:00:15.500Z")
        .expect("the late fix is in its place");
    assert_eq!(track["properties"]["historic"][late_at], true);
    assert_eq!(track["properties"]["historic"][0], false);

    let (status, jsonl) = fetch(daemon.port, &format!("/api/history?{span}&format=jsonl"));
    assert_eq!(status, 200);
    let lines: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let positions: Vec<_> = lines.iter().filter(|l| l["event"] == "position").collect();
    assert_eq!(positions.len(), 41);
    assert!(
        positions
            .iter()
            .all(|p| p["device"] == "bus-1" && p["seq"].is_u64())
    );

    let (status, gpx) = fetch(daemon.port, &format!("/api/history?{span}&format=gpx"));
    assert_eq!(status, 200);
    assert_eq!(gpx.matches("<trkpt").count(), 41);
    let file = dir.path().join("track.gpx");
    std::fs::write(&file, &gpx).unwrap();
    let schema = gpx_schema();
    assert!(
        schema.exists(),
        "the GPX 1.1 schema is missing at {} (scripts/test.sh fetches it)",
        schema.display()
    );
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&schema)
        .arg(&file)
        .output()
        .expect("xmllint (Debian's libxml2-utils)");
    assert!(
        out.status.success(),
        "not valid GPX 1.1:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Narrower spans and limits.
    let (_, narrow) = fetch(
        daemon.port,
        "/api/history?device=bus-1&from=2026-12-04T08:01:00Z&to=2026-12-04T08:02:00Z&format=jsonl",
    );
    assert_eq!(narrow.lines().count(), 10);
    let (status, body) = fetch(daemon.port, &format!("/api/history?{span}&limit=40"));
    assert_eq!(status, 400);
    assert!(body.contains("more than 40 fixes"), "{body}");
}

#[test]
fn bad_parameters_get_400_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "");
    for (query, says) in [
        ("from=2026-12-04T08:00:00Z", "device"),
        ("device=bus-1", "from"),
        ("device=bus-1&from=soon", "RFC 3339"),
        (
            "device=bus-1&from=2026-01-01T00:00:00Z&to=2026-12-01T00:00:00Z",
            "31 days",
        ),
        (
            "device=bus-1&from=2026-12-04T08:00:00Z&format=kml",
            "format",
        ),
        ("device=bus-1&from=2026-12-04T08:00:00Z&limit=0", "limit"),
        (
            "device=bus-1&from=2026-12-04T08:00:00Z&limit=1000000",
            "limit",
        ),
    ] {
        let (status, body) = fetch(daemon.port, &format!("/api/history?{query}"));
        assert_eq!(status, 400, "{query}");
        assert!(body.contains(says), "{query}: {body}");
    }
    assert!(get(daemon.port, "/healthz").is_ok());
}

#[test]
fn a_tile_archive_is_served_by_byte_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("depot.pmtiles");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&archive, &bytes).unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &format!(
            "[map]\ntiles = \"{}\"\nattribution = \"test tiles\"\ncenter = [52.09, 5.12]\n",
            archive.display()
        ),
    );
    let (status, body) = fetch(daemon.port, "/api/map");
    assert_eq!(status, 200);
    let map: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(map["tiles"]["type"], "pmtiles");
    assert_eq!(map["tiles"]["url"], "/tiles/depot.pmtiles");
    assert_eq!(map["center"], serde_json::json!([52.09, 5.12]));

    let agent = http_agent(Duration::from_secs(10));
    let url = format!("http://127.0.0.1:{}/tiles/depot.pmtiles", daemon.port);
    let mut response = agent
        .get(&url)
        .header("Range", "bytes=100-16483")
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 206);
    assert_eq!(
        response.headers().get("content-range").unwrap(),
        "bytes 100-16483/200000"
    );
    let etag = response
        .headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let got = response.body_mut().read_to_vec().unwrap();
    assert_eq!(got, bytes[100..16_484]);
    let mut tail = agent.get(&url).header("Range", "bytes=-10").call().unwrap();
    assert_eq!(tail.body_mut().read_to_vec().unwrap(), bytes[199_990..]);
    let beyond = agent
        .get(&url)
        .header("Range", "bytes=300000-")
        .call()
        .unwrap();
    assert_eq!(beyond.status().as_u16(), 416);
    // The same ETag lets a reader keep reading by ranges; another gets the file.
    let same = agent
        .get(&url)
        .header("Range", "bytes=0-9")
        .header("If-Range", &etag)
        .call()
        .unwrap();
    assert_eq!(same.status().as_u16(), 206);
    let changed = agent
        .get(&url)
        .header("Range", "bytes=0-9")
        .header("If-Range", "\"other\"")
        .call()
        .unwrap();
    assert_eq!(changed.status().as_u16(), 200);
    let other = agent
        .get(format!(
            "http://127.0.0.1:{}/tiles/other.pmtiles",
            daemon.port
        ))
        .call()
        .unwrap();
    assert_eq!(other.status().as_u16(), 404);
}
