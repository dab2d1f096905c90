//! gpsd's JSON protocol (`[gpsd]`) proven with gpsd's own clients: a real
//! daemon reads a receiver on a real pseudo-terminal, and Debian's
//! `gpspipe -w` and the Python `gps` module (python3-gps, run by
//! `/usr/bin/python3`) print the positions fixgate stored (read back
//! through `/api/history`). Missing clients fail the test with the package
//! to install (scripts/test.sh installs them).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{Daemon, PtyReceiver, free_port, get, wait_until};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
const PYTHON: &str = "/usr/bin/python3";

/// A daemon with the pty receiver `gps-1` and the gpsd server on `gpsd`.
struct Rig {
    daemon: Daemon,
    receiver: PtyReceiver,
    gpsd: u16,
    link: PathBuf,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn start(extra: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("gps0");
        let receiver = PtyReceiver::plug(&link);
        let gpsd = free_port();
        let config = format!(
            "[[serial]]\ndevice = \"gps-1\"\npath = \"{}\"\nbaud = 9600\n\n[gpsd]\nenabled = true\nlisten = \"127.0.0.1:{gpsd}\"\n{extra}\n",
            link.display()
        );
        let daemon = Daemon::start(dir.path(), &config);
        wait_until("the port open", WAIT, || {
            daemon.metric("fixgate_serial_connected") == Some(1.0)
        });
        Rig {
            daemon,
            receiver,
            gpsd,
            link,
            _dir: dir,
        }
    }

    fn clients(&self) -> f64 {
        self.daemon.metric("fixgate_gpsd_clients").unwrap_or(0.0)
    }

    /// The positions of `gps-1` the store holds, oldest first.
    fn stored(&self) -> Vec<Value> {
        // The simulated epochs run ahead of the clock.
        let from = (Utc::now() - chrono::Duration::minutes(10)).timestamp_millis();
        let to = (Utc::now() + chrono::Duration::minutes(10)).timestamp_millis();
        let body = get(
            self.daemon.port,
            &format!("/api/history?device=gps-1&format=jsonl&from={from}&to={to}"),
        )
        .expect("history");
        body.lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
            .filter(|v| v["event"] == "position")
            .collect()
    }
}

/// Every line `child` prints, as it prints them.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Lines from `rx` until `enough` says so, or `WAIT` has passed.
fn collect(rx: &mpsc::Receiver<String>, enough: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while !enough(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => got.push(line),
            Err(_) => break,
        }
    }
    got
}

fn class_of<'a>(objects: &'a [Value], class: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["class"] == class).collect()
}

/// Each TPV's time, lat and lon equal one stored position's, in order.
fn assert_same_positions(tpvs: &[&Value], stored: &[Value]) {
    assert!(!tpvs.is_empty(), "no TPV");
    let mut rest = stored.iter();
    for tpv in tpvs {
        let time = tpv["time"].as_str().expect("TPV time");
        let found = rest
            .by_ref()
            .find(|p| p["time"] == time)
            .unwrap_or_else(|| panic!("TPV at {time} is not stored (in order): {stored:?}"));
        for key in ["lat", "lon"] {
            let (ours, theirs) = (tpv[key].as_f64().unwrap(), found[key].as_f64().unwrap());
            // Printed with 9 decimals; stored to 1e-7 degrees.
            assert!((ours - theirs).abs() < 1e-9, "{key} {ours} stored {theirs}");
        }
    }
}

fn gpspipe(rig: &Rig) -> Child {
    Command::new("gpspipe")
        .arg("-w")
        .arg(format!("127.0.0.1:{}", rig.gpsd))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gpspipe (apt install gpsd-clients)")
}

#[test]
fn gpspipe_prints_the_positions_fixgate_stores() {
    let mut rig = Rig::start("");
    let mut pipe = gpspipe(&rig);
    let rx = lines_of(&mut pipe);
    // Watching (its WATCH answered) before the receiver sends.
    let mut lines = collect(&rx, |got| got.iter().any(|l| l.contains("\"WATCH\"")));
    rig.receiver.send_epochs(10, 3, 0);
    lines.extend(collect(&rx, |got| {
        got.iter()
            .filter(|l| l.contains("\"class\":\"TPV\""))
            .count()
            >= 9
    }));
    let _ = pipe.kill();
    let _ = pipe.wait();
    let objects: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    // gpsd's order: the greeting, DEVICES and WATCH, then the reports.
    assert_eq!(objects[0]["class"], "VERSION");
    assert_eq!(objects[0]["proto_major"], 3);
    assert_eq!(objects[1]["class"], "DEVICES");
    let device = &objects[1]["devices"][0];
    assert_eq!(device["path"], rig.link.display().to_string());
    assert_eq!(device["bps"], 9600);
    assert_eq!(objects[2]["class"], "WATCH");
    assert_eq!(objects[2]["enable"], true);
    let tpvs = class_of(&objects, "TPV");
    assert!(tpvs.len() >= 9, "{lines:#?}");
    for tpv in &tpvs {
        assert_eq!(tpv["device"], rig.link.display().to_string());
        assert!(tpv["mode"] == 2 || tpv["mode"] == 3, "{tpv}");
    }
    // The simulated receiver sends GGA with HDOP and satellites used.
    let skys = class_of(&objects, "SKY");
    assert!(!skys.is_empty(), "{lines:#?}");
    assert!(skys[0]["hdop"].is_number() && skys[0]["uSat"].is_number());
    assert_same_positions(&tpvs, &rig.stored());
    wait_until("gpspipe gone", WAIT, || rig.clients() == 0.0);
    assert!(
        rig.daemon
            .metric("fixgate_gpsd_lines_sent_total")
            .unwrap_or(0.0)
            >= 12.0
    );
}

/// Runs the Python script `code` (the `gps` module of python3-gps) with
/// the port as its argument; its stdout lines.
fn python(port: u16, code: &str) -> (Child, mpsc::Receiver<String>) {
    let check = Command::new(PYTHON).args(["-c", "import gps"]).output();
    match check {
        Ok(out) if out.status.success() => {}
        _ => panic!("{PYTHON} cannot import gps (apt install python3-gps)"),
    }
    let mut child = Command::new(PYTHON)
        .args(["-u", "-c", code, &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run python3");
    let rx = lines_of(&mut child);
    (child, rx)
}

/// Watches with the module's own `stream`, prints each TPV as the module
/// read it, then sends `?POLL;`, `?VERSION;` and `?DEVICES;` raw and prints
/// what comes back.
const PY_CLIENT: &str = r#"
import json, sys
import gps
session = gps.gps(host="127.0.0.1", port=int(sys.argv[1]))
session.stream(gps.WATCH_ENABLE | gps.WATCH_JSON)
tpvs = 0
for report in session:
    cls = report["class"]
    if cls == "WATCH":
        print(json.dumps({"ready": True}))
    elif cls == "TPV":
        tpvs += 1
        print(json.dumps({"class": "TPV", "time": session.fix.time,
                          "lat": session.fix.latitude, "lon": session.fix.longitude,
                          "mode": session.fix.mode, "device": session.device}))
        if tpvs == 5:
            session.send("?POLL;?VERSION;")
            session.send("?DEVICES;")
    elif cls in ("POLL", "VERSION", "DEVICES"):
        print(json.dumps(dict(report)))
        if cls == "DEVICES" and tpvs >= 5:
            break
"#;

#[test]
fn the_python_gps_module_reads_watches_and_polls() {
    let mut rig = Rig::start("");
    let (mut child, rx) = python(rig.gpsd, PY_CLIENT);
    // Watching before the receiver sends: else the first epochs would be
    // stored before the client asked for them.
    let mut lines = collect(&rx, |got| got.iter().any(|l| l.contains("ready")));
    rig.receiver.send_epochs(10, 5, 0);
    lines.extend(collect(&rx, |got| {
        // The answer to ?DEVICES; (the first came before "ready").
        got.iter().any(|l| l.contains("\"DEVICES\""))
    }));
    let _ = child.kill();
    let _ = child.wait();
    let objects: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let tpvs = class_of(&objects, "TPV");
    assert!(tpvs.len() >= 5, "{lines:#?}");
    let stored = rig.stored();
    assert_same_positions(&tpvs, &stored);
    let poll = class_of(&objects, "POLL");
    assert_eq!(poll.len(), 1, "{lines:#?}");
    assert_eq!(poll[0]["active"], 1);
    // The latest report when polled: one of the stored positions.
    let polled = &poll[0]["tpv"][0];
    assert_eq!(polled["device"], rig.link.display().to_string());
    assert_same_positions(&[polled], &stored);
    let versions = class_of(&objects, "VERSION");
    // The greeting, and the answer to ?VERSION;.
    assert_eq!(versions.len(), 2, "{lines:#?}");
    assert_eq!(versions[0]["proto_major"], 3);
    let devices = class_of(&objects, "DEVICES");
    assert_eq!(devices.last().unwrap()["devices"][0]["bps"], 9600);
}

/// A raw client: what it sends and reads, line by line.
struct Raw {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Raw {
    fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Raw { stream, reader }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    fn object(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a line");
        assert!(line.ends_with("}\r\n"), "gpsd's line end: {line:?}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

#[test]
fn requests_split_or_bundled_errors_device_filters_and_unwatching() {
    let mut rig = Rig::start("max_clients = 2");
    let mut raw = Raw::connect(rig.gpsd);
    assert_eq!(raw.object()["class"], "VERSION");
    // A request split over two writes, then two in one line.
    raw.send(b"?VERS");
    std::thread::sleep(Duration::from_millis(100));
    raw.send(b"ION;\n?DEVICES;?FOO;\n");
    assert_eq!(raw.object()["class"], "VERSION");
    assert_eq!(raw.object()["class"], "DEVICES");
    let error = raw.object();
    assert_eq!(error["class"], "ERROR");
    assert_eq!(error["message"], "Unrecognized request '?FOO;'");
    // No such device: an ERROR, and no watch.
    raw.send(b"?WATCH={\"enable\":true,\"json\":true,\"device\":\"/dev/none\"};\n");
    assert_eq!(raw.object()["message"], "No such device as /dev/none");
    let watch = format!(
        "?WATCH={{\"enable\":true,\"json\":true,\"device\":\"{}\"}};\n",
        rig.link.display()
    );
    raw.send(watch.as_bytes());
    assert_eq!(raw.object()["class"], "DEVICES");
    let w = raw.object();
    assert_eq!(w["class"], "WATCH");
    assert_eq!(w["device"], rig.link.display().to_string());
    rig.receiver.send_epochs(3, 9, 0);
    let mut tpv = raw.object();
    while tpv["class"] != "TPV" {
        tpv = raw.object();
    }
    assert_eq!(tpv["device"], rig.link.display().to_string());
    // Unwatching: DEVICES and WATCH, then nothing but answers.
    raw.send(b"?WATCH={\"enable\":false};\n");
    let mut next = raw.object();
    while next["class"] != "DEVICES" {
        assert!(["TPV", "SKY"].contains(&next["class"].as_str().unwrap()));
        next = raw.object();
    }
    assert_eq!(raw.object()["enable"], false);
    let stored = rig.stored().len();
    // The same vehicle, later (another would move too fast for the filters).
    rig.receiver.send_epochs(3, 9, 3);
    wait_until("more positions stored", WAIT, || {
        rig.stored().len() >= stored + 2
    });
    raw.send(b"?VERSION;\n");
    assert_eq!(
        raw.object()["class"],
        "VERSION",
        "no report after unwatching"
    );
    // A line longer than any request is refused and the client stays.
    raw.send(&vec![b'?'; 5000]);
    raw.send(b"\n?POLL;\n");
    assert_eq!(raw.object()["class"], "ERROR");
    assert_eq!(raw.object()["class"], "POLL");
    // max_clients = 2: a third connection is closed at once.
    let _second = Raw::connect(rig.gpsd);
    wait_until("two clients", WAIT, || rig.clients() == 2.0);
    let mut third = TcpStream::connect(("127.0.0.1", rig.gpsd)).unwrap();
    third.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = Vec::new();
    let _ = third.read_to_end(&mut buf);
    assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
    assert_eq!(
        rig.daemon
            .metric_with("fixgate_gpsd_dropped_total", &[("reason", "full")]),
        Some(1.0)
    );
    assert!(
        rig.daemon.metric_with(
            "fixgate_gpsd_bad_commands_total",
            &[("reason", "unrecognized")]
        ) >= Some(1.0)
    );
}

#[test]
fn a_listen_address_beyond_loopback_needs_the_opt_in() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fixgate.toml");
    std::fs::write(
        &config,
        "[gpsd]\nenabled = true\nlisten = \"0.0.0.0:2947\"\n",
    )
    .unwrap();
    let out = check_config(&config);
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("fixgate.toml:3:10: `gpsd.listen`"), "{text}");
    assert!(text.contains("anonymous_network"), "{text}");
    std::fs::write(
        &config,
        "[gpsd]\nenabled = true\nlisten = \"0.0.0.0:2947\"\nanonymous_network = true\nallow_from = [\"192.168.1.0/24\"]\n",
    )
    .unwrap();
    let out = check_config(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check_config(path: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fixgate"))
        .arg("check-config")
        .arg(path)
        .output()
        .expect("run fixgate")
}

#[test]
fn a_client_outside_allow_from_is_closed_at_once() {
    let rig = Rig::start("allow_from = [\"10.0.0.0/8\"]");
    let mut stream = TcpStream::connect(("127.0.0.1", rig.gpsd)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
    assert_eq!(
        rig.daemon
            .metric_with("fixgate_gpsd_dropped_total", &[("reason", "not_allowed")]),
        Some(1.0)
    );
}

/// The screen text of `cgps`'s output: escape sequences and line-drawing
/// switches out, runs of blanks down to one.
fn screen_text(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI (`ESC [ ... letter`) or a charset switch (`ESC ( B`).
            match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
                Some(_) => {
                    chars.next();
                }
                None => {}
            }
            out.push(' ');
        } else if c.is_control() {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `cgps -s`, a curses client (on a pseudo-terminal that `script` makes),
/// shows the position fixgate stored last, as gpsd's own cgps formats it.
#[test]
fn cgps_shows_the_position_fixgate_stores() {
    let present = Command::new("cgps").arg("-V").output();
    assert!(
        present.is_ok_and(|o| o.status.success()),
        "cgps is missing (apt install gpsd-clients)"
    );
    let mut rig = Rig::start("");
    let screen = rig._dir.path().join("cgps.out");
    let command = format!("stty cols 100 rows 30; cgps -s 127.0.0.1:{}", rig.gpsd);
    let mut cgps = Command::new("script")
        .args(["-qfc", &command])
        .arg(&screen)
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("script (util-linux) to run cgps");
    wait_until("cgps watching", WAIT, || rig.clients() == 1.0);
    rig.receiver.send_epochs(3, 5, 0);
    wait_until("3 positions stored", WAIT, || rig.stored().len() >= 3);
    // cgps prints degrees with 8 decimals and the hemisphere; curses then
    // repaints only the characters that change, so the first report is the
    // one whole in the output: look for any stored position whole.
    let as_cgps = |p: &Value| {
        let (lat, lon) = (p["lat"].as_f64().unwrap(), p["lon"].as_f64().unwrap());
        [
            p["time"].as_str().unwrap_or_default().to_owned(),
            format!("{:.8} {}", lat.abs(), if lat < 0.0 { 'S' } else { 'N' }),
            format!("{:.8} {}", lon.abs(), if lon < 0.0 { 'W' } else { 'E' }),
        ]
    };
    let stored: Vec<[String; 3]> = rig.stored().iter().map(as_cgps).collect();
    let read = || screen_text(&std::fs::read(&screen).unwrap_or_default());
    let shown = |text: &str| {
        stored
            .iter()
            .any(|fields| fields.iter().all(|f| text.contains(f.as_str())))
    };
    let deadline = Instant::now() + WAIT;
    while !shown(&read()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = cgps.kill();
    let _ = cgps.wait();
    let text = read();
    assert!(shown(&text), "cgps showed none of {stored:?}: {text}");
}

/// With nobody connected the server reads and encodes nothing; the first
/// client's `?POLL;` still gives the position stored last (reseeded from
/// the store when it joined).
#[test]
fn nothing_is_encoded_for_no_one_and_a_late_poll_is_current() {
    let mut rig = Rig::start("");
    rig.receiver.send_epochs(3, 11, 0);
    wait_until("3 positions stored", WAIT, || rig.stored().len() >= 3);
    assert_eq!(
        rig.daemon
            .metric("fixgate_gpsd_reports_encoded_total")
            .unwrap_or(0.0),
        0.0,
        "encoded with no client connected"
    );
    let last = rig.stored().pop().expect("a stored position");
    let mut raw = Raw::connect(rig.gpsd);
    assert_eq!(raw.object()["class"], "VERSION");
    raw.send(b"?POLL;\n");
    let poll = raw.object();
    assert_eq!(poll["class"], "POLL");
    let tpv = &poll["tpv"][0];
    assert_eq!(tpv["time"], last["time"], "{poll}");
    assert!((tpv["lat"].as_f64().unwrap() - last["lat"].as_f64().unwrap()).abs() < 1e-9);
}
