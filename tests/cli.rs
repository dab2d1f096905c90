//! The `fixgate` command line, run as a real process.

mod common;
/// The man pages and completions the package installs.
#[path = "cli/packaging.rs"]
mod packaging;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use chrono::{TimeZone, Utc};

fn fixgate(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fixgate"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fixgate");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.unwrap_or_default().to_vec();
    // Fed from a thread: a large input would otherwise fill the pipes both
    // ways, each process waiting for the other to read.
    let writer = std::thread::spawn(move || {
        // A command that fails early stops reading: not the writer's error.
        let _ = pipe.write_all(&input);
    });
    let output = child.wait_with_output().expect("fixgate output");
    writer.join().expect("stdin writer");
    output
}

/// Runs a command that must succeed; its standard output.
fn fixgate_ok(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let out = fixgate(args, stdin);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    out.stdout
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn version_names_the_package_version() {
    let out = fixgate(&["--version"], None);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("fixgate {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_config_accepts_the_shipped_configs() {
    for file in ["config/fixgate.toml", "config/demo.toml"] {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        let out = fixgate(&["check-config", &path], None);
        assert!(out.status.success(), "{file}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("ok"));
    }
}

#[test]
fn check_config_lists_every_problem_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[feed]\nlisten = \"8080\"\n\n[[serial]]\ndevice = \"bus 1\"\npath = \"/dev/ttyUSB0\"\nbaud = 9601\n",
    )
    .unwrap();
    let out = fixgate(&["check-config", path.to_str().unwrap()], None);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let file = path.display().to_string();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("{file}:2:10: `feed.listen`")),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!("{file}:5:10: `serial.device`")),
        "{stderr}"
    );
    assert!(
        lines[2].starts_with(&format!("{file}:7:8: `serial.baud` 9601")),
        "{stderr}"
    );
}

#[test]
fn check_config_loads_the_fence_files_and_counts_the_fences() {
    let dir = tempfile::tempdir().unwrap();
    let example = format!(
        "{}/config/fences.example.geojson",
        env!("CARGO_MANIFEST_DIR")
    );
    let config = dir.path().join("fixgate.toml");
    let inline =
        "[[geofence.fence]]\nid = \"gate\"\ncircle = { lat = 52.0, lon = 5.0, radius_m = 20 }\n";
    std::fs::write(
        &config,
        format!("[geofence]\nfiles = [{example:?}]\n{inline}"),
    )
    .unwrap();
    let out = fixgate(&["check-config", config.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).ends_with(": ok (3 fences)\n"),
        "{}",
        text(&out.stdout)
    );

    let bad = dir.path().join("bad.geojson");
    std::fs::write(
        &bad,
        r#"{"type": "Feature", "id": "x", "properties": {}, "geometry": null}"#,
    )
    .unwrap();
    let missing = dir.path().join("missing.geojson");
    std::fs::write(
        &config,
        format!("[geofence]\nfiles = [{bad:?}, {missing:?}]\n"),
    )
    .unwrap();
    let out = fixgate(&["check-config", config.to_str().unwrap()], None);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with(&format!(
            "{}: feature 0 (id \"x\"): no geometry",
            bad.display()
        )),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!("{}: cannot read: ", missing.display())),
        "{stderr}"
    );
}

/// A GeoJSON Feature with `id` and the rectangle from `west` to `east`
/// between 0° and 1° N, drawn in that order.
fn band(id: &str, west: f64, east: f64) -> String {
    format!(
        r#"{{"type":"Feature","id":"{id}","properties":{{}},"geometry":{{"type":"Polygon","coordinates":[[[{west},0],[{east},0],[{east},1],[{west},1],[{west},0]]]}}}}"#
    )
}

#[test]
fn check_config_refuses_a_fence_wider_than_half_the_globe_naming_file_and_feature() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fixgate.toml");
    let file = dir.path().join("wide.geojson");
    // Across the antimeridian, drawn both ways RFC 7946 readers meet: one
    // ring from 170° to -170° (20° wide), and split at ±180°.
    let split = r#"{"type":"Feature","id":"split","properties":{},"geometry":{"type":"MultiPolygon","coordinates":[[[[175,0],[180,0],[180,1],[175,1],[175,0]]],[[[-180,0],[-175,0],[-175,1],[-180,1],[-180,0]]]]}}"#;
    std::fs::write(
        &file,
        format!(
            r#"{{"type":"FeatureCollection","features":[{},{split}]}}"#,
            band("pacific", 170.0, -170.0)
        ),
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "[geofence]
files = [{file:?}]
"
        ),
    )
    .unwrap();
    let out = fixgate(&["check-config", config.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).ends_with(": ok (2 fences)\n"),
        "{}",
        text(&out.stdout)
    );

    // -100° to 100°: 200° wide as written, 160° read across ±180°.
    std::fs::write(
        &file,
        format!(
            r#"{{"type":"FeatureCollection","features":[{},{}]}}"#,
            band("pacific", 170.0, -170.0),
            band("wide", -100.0, 100.0)
        ),
    )
    .unwrap();
    let out = fixgate(&["check-config", config.to_str().unwrap()], None);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: feature 1 (id \"wide\"): the area spans 200.0° of longitude as written, or 160.0° read across the antimeridian",
            file.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("pacific"), "{stderr}");

    // The same drawn the other way round, inline.
    std::fs::write(&file, band("pacific", 170.0, -170.0)).unwrap();
    std::fs::write(
        &config,
        format!(
            "[geofence]\nfiles = [{file:?}]\n\n[[geofence.fence]]\nid = \"inline\"\npolygon = [[[100, 0], [-100, 0], [-100, 1], [100, 1]]]\n"
        ),
    )
    .unwrap();
    let out = fixgate(&["check-config", config.to_str().unwrap()], None);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:6:11: `geofence.fence.polygon`: the area spans 200.0° of longitude as written",
            config.display()
        )),
        "{stderr}"
    );
}

#[test]
fn run_refuses_a_bad_config_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[store]\nflush_intervall = \"1s\"\n").unwrap();
    let out = fixgate(&["run", "--config", path.to_str().unwrap()], None);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:2:1: unknown key `flush_intervall`",
            path.display()
        )),
        "{stderr}"
    );
}

#[test]
fn nmea_prints_one_json_line_per_epoch_from_a_file_or_stdin() {
    let start = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let log = common::simulated_nmea(5, start, 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("track.nmea");
    std::fs::write(&path, &log).unwrap();

    let from_file = fixgate(&["nmea", path.to_str().unwrap()], None);
    let from_stdin = fixgate(&["nmea", "-"], Some(log.as_bytes()));
    assert!(from_file.status.success(), "{}", text(&from_file.stderr));
    assert_eq!(from_file.stdout, from_stdin.stdout);

    let lines: Vec<serde_json::Value> = text(&from_file.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 5);
    for (i, fix) in lines.iter().enumerate() {
        assert_eq!(fix["time"], format!("2026-11-23T12:00:0{i}.000Z"));
        for key in [
            "lat", "lon", "alt", "speed", "course", "hdop", "sats", "mode",
        ] {
            assert!(fix.get(key).is_some(), "{key} in {fix}");
        }
    }
}

#[test]
fn nmea_omits_what_the_receiver_does_not_say() {
    // RMC alone: dated, but no altitude and no satellite count.
    let input = "$GPRMC,081836,A,3751.65,S,14507.36,E,000.0,360.0,130998,011.3,E*62\r\n";
    let out = fixgate(&["nmea"], Some(input.as_bytes()));
    assert!(out.status.success());
    let line = text(&out.stdout);
    let fix: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
    assert_eq!(fix["time"], "1998-09-13T08:18:36.000Z");
    assert!(fix.get("alt").is_none(), "no altitude in RMC: {fix}");
    assert!(fix.get("sats").is_none(), "no satellites in RMC: {fix}");
    assert!((fix["lat"].as_f64().unwrap() + 37.860833).abs() < 1e-6);
}

#[test]
fn nmea_reports_an_unreadable_file() {
    let out = fixgate(&["nmea", "/nonexistent/track.nmea"], None);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cannot open /nonexistent/track.nmea"));
}

/// `fixgate nmea` output for a simulated 1 Hz drive of `epochs` seconds.
fn nmea_json_lines(epochs: usize) -> Vec<u8> {
    let start = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let log = common::simulated_nmea(epochs, start, 3);
    fixgate_ok(&["nmea"], Some(log.as_bytes()))
}

/// Whether two JSON numbers agree to within the wire's unit.
fn close(a: &serde_json::Value, b: &serde_json::Value, unit: f64) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) => (a - b).abs() <= unit / 2.0 + 1e-9,
        _ => a == b,
    }
}

#[test]
fn nmea_encode_decode_keeps_every_fix_at_the_wire_precision() {
    let fixes = nmea_json_lines(2500);
    let encoded = fixgate_ok(
        &["encode", "--device", "bus-7", "--gateway", "gw-test"],
        Some(&fixes),
    );
    // 2,500 records in the default batching of 1,000.
    let mut input = encoded.as_slice();
    let mut sizes = Vec::new();
    while let Some(batch) = fixgate::wire::read_delimited(&mut input).unwrap() {
        sizes.push(fixgate::wire::decode(&batch).unwrap().records.len());
    }
    assert_eq!(sizes, [1000, 1000, 500]);

    let decoded = fixgate_ok(&["decode"], Some(&encoded));
    let parse = |bytes: &[u8]| -> Vec<serde_json::Value> {
        text(bytes)
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect()
    };
    let (want, got) = (parse(&fixes), parse(&decoded));
    assert_eq!(want.len(), 2500);
    assert_eq!(got.len(), want.len());
    let units = [
        ("lat", 1e-7),
        ("lon", 1e-7),
        ("alt", 0.1),
        ("speed", 0.01),
        ("hdop", 0.01),
    ];
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(g["gateway"], "gw-test");
        assert_eq!(g["device"], "bus-7");
        assert_eq!(g["event"], "position");
        assert_eq!(g["seq"], i as u64 + 1);
        assert_eq!(g["time"], w["time"]);
        assert_eq!(g["sats"], w["sats"]);
        assert_eq!(g["mode"], w["mode"]);
        for (key, unit) in units {
            assert!(
                close(&g[key], &w[key], unit),
                "{key} of line {i}: {g} vs {w}"
            );
        }
        let course = |v: &serde_json::Value| v["course"].as_f64().map(|c| c.rem_euclid(360.0));
        let (gc, wc) = (course(g).unwrap(), course(w).unwrap());
        let diff = (gc - wc).abs();
        assert!(
            diff.min(360.0 - diff) <= 0.05 + 1e-9,
            "course of line {i}: {g} vs {w}"
        );
    }
}

#[test]
fn decode_then_encode_gives_the_same_bytes() {
    let fixes = nmea_json_lines(1200);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fixes.jsonl");
    std::fs::write(&path, &fixes).unwrap();
    let encoded = fixgate_ok(
        &["encode", path.to_str().unwrap(), "--device", "gps0"],
        None,
    );
    let decoded = fixgate_ok(&["decode", "-"], Some(&encoded));
    assert!(
        text(&decoded)
            .starts_with(r#"{"gateway":"fixgate","seq":1,"event":"position","device":"gps0","#)
    );
    assert_eq!(fixgate_ok(&["encode"], Some(&decoded)), encoded);
}

#[test]
fn encode_names_the_line_at_fault() {
    let good = r#"{"device":"a","time":"2026-11-23T12:00:00Z","lat":1,"lon":2}"#;
    let cases = [
        (format!("{good}\n\n{{\"device\":\"a\"\n"), "line 3: "),
        (
            format!("{good}\n{}\n", good.replace("\"lat\":1", "\"lat\":91")),
            "line 2: latitude 91",
        ),
        (
            format!("{{\"seq\":5,{}\n{{\"seq\":5,{}\n", &good[1..], &good[1..]),
            "line 2: seq 5 does not follow 5",
        ),
        (
            r#"{"time":"2026-11-23T12:00:00Z","lat":1,"lon":2}"#.to_owned(),
            "line 1: no device",
        ),
        (
            format!(
                "{{\"gateway\":\"g1\",{}\n{{\"gateway\":\"g2\",{}\n",
                &good[1..],
                &good[1..]
            ),
            "line 2: gateway g2 differs from g1",
        ),
    ];
    for (input, message) in cases {
        let out = fixgate(&["encode"], Some(input.as_bytes()));
        assert!(!out.status.success(), "{input}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(message), "{message:?} in {stderr}");
    }
    let out = fixgate(&["encode", "--max-records", "0"], Some(good.as_bytes()));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn decode_names_the_batch_at_fault() {
    let fixes = nmea_json_lines(30);
    let stream = fixgate_ok(
        &["encode", "--device", "gps0", "--max-records", "10"],
        Some(&fixes),
    );

    let truncated = fixgate(&["decode"], Some(&stream[..stream.len() - 3]));
    assert!(!truncated.status.success());
    assert!(
        text(&truncated.stderr).contains("batch 3: truncated"),
        "{}",
        text(&truncated.stderr)
    );
    // The first two batches were printed before the damaged one.
    assert_eq!(text(&truncated.stdout).lines().count(), 20);

    let mut damaged = stream.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x40;
    let out = fixgate(&["decode"], Some(&damaged));
    assert!(!out.status.success());
    // Format version 2's LZMA decoder (or, past it, the body's CRC-32)
    // catches the flip; version 1's zlib checksum did.
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("batch 3: malformed batch: lzma stream is corrupt")
            || stderr.contains("batch 3: malformed batch: body checksum"),
        "{stderr}"
    );

    let out = fixgate(&["decode"], Some(b"\x03abc"));
    assert!(
        text(&out.stderr).contains("batch 1: unsupported batch version 97"),
        "{}",
        text(&out.stderr)
    );
}
