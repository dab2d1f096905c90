//! The `fixgate` command line, run as a real process.

mod common;

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
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("fixgate output")
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
