//! `fixgate-receive` (the cloud crate's receiver) with real parts: batches built with the library's own
//! encoder, published by Debian's `mosquitto_pub` through Debian's
//! `mosquitto`, or POSTed over HTTP; the real binary's stdout and stderr
//! are what is asserted.

mod common;

use std::io::{BufRead, BufReader};
use std::ops::RangeInclusive;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use common::Mosquitto;
use fixgate::fix::{DeviceId, Event, Fix, Position, Record};
use fixgate::wire::{self, Batch, BatchKind};
use nix::sys::signal::Signal;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);
const TOPIC: &str = "fixgate/gw-1/batches";

/// A position of one of three buses, distinct for every `seq`.
fn record(seq: u64) -> Record {
    let time =
        Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap() + chrono::Duration::seconds(seq as i64);
    let device = DeviceId::new(&format!("bus-{}", seq % 3)).unwrap();
    let fix = Fix::new(time, 52.0 + seq as f64 * 1e-5, 5.1);
    Record {
        seq,
        event: Event::Position(Position::new(device, fix)),
    }
}

/// The encoded batch `id` of `gateway` covering `range`, holding `seqs`.
fn batch_of(
    gateway: &str,
    id: u64,
    kind: BatchKind,
    range: RangeInclusive<u64>,
    seqs: impl IntoIterator<Item = u64>,
) -> Vec<u8> {
    wire::encode(&Batch {
        gateway: gateway.into(),
        id,
        kind,
        first_seq: *range.start(),
        last_seq: *range.end(),
        records: seqs.into_iter().map(record).collect(),
    })
}

/// A complete batch of gw-1: every number of `range` present.
fn full(id: u64, kind: BatchKind, range: RangeInclusive<u64>) -> Vec<u8> {
    batch_of("gw-1", id, kind, range.clone(), range)
}

/// The receiver under test, its stdout lines and stderr read on threads.
struct Receiver {
    child: Child,
    lines: Option<mpsc::Receiver<Value>>,
    stdout: Option<ChildStdout>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    /// Starts `fixgate-receive ARGS`; with `drain`, stdout is read as it comes.
    fn spawn(args: &[&str], drain: bool) -> Receiver {
        let mut child = Command::new(common::receive_bin())
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fixgate-receive");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let err_pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push(line);
            }
        });
        let mut stdout = child.stdout.take();
        let lines = drain.then(|| {
            let (tx, rx) = mpsc::channel();
            let pipe = stdout.take().expect("stdout");
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { return };
                    let value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("stdout line {line:?} is not JSON: {e}"));
                    if tx.send(value).is_err() {
                        return;
                    }
                }
            });
            rx
        });
        Receiver {
            child,
            lines,
            stdout,
            stderr,
        }
    }

    /// Subscribed to `broker` under `client_id`, stdout drained.
    fn mqtt(broker: &Broker, client_id: &str) -> Receiver {
        Self::mqtt_with(broker.port(), client_id, &[], true)
    }

    fn mqtt_with(port: u16, client_id: &str, extra: &[&str], drain: bool) -> Receiver {
        let addr = format!("localhost:{port}");
        let mut args = vec!["--mqtt", &addr, "--client-id", client_id];
        args.extend_from_slice(extra);
        let receiver = Self::spawn(&args, drain);
        receiver.event("subscribed");
        receiver
    }

    /// Listening on a free loopback port; returns the batches URL too.
    fn http() -> (Receiver, String) {
        let receiver = Self::spawn(&["--http", "127.0.0.1:0"], true);
        let listening = receiver.event("listening");
        let addr = listening["listening"]["addr"].as_str().expect("addr");
        let url = format!("http://{addr}/batches");
        (receiver, url)
    }

    /// Everything the receiver wrote to stderr so far.
    fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The JSON lines on stderr that have `key` at the top.
    fn events(&self, key: &str) -> Vec<Value> {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get(key).is_some())
            .collect()
    }

    /// Waits for the first JSON line on stderr with `key`.
    fn event(&self, key: &str) -> Value {
        self.events_n(key, 1).remove(0)
    }

    /// Waits for `n` JSON lines on stderr with `key`.
    fn events_n(&self, key: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let found = self.events(key);
            if found.len() >= n {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "only {} {key:?} lines on stderr:\n{}",
                found.len(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The next `n` record lines.
    fn records(&self, n: usize) -> Vec<Value> {
        let lines = self.lines.as_ref().expect("stdout is drained");
        let deadline = Instant::now() + WAIT;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(v) => out.push(v),
                Err(_) => panic!(
                    "only {} of {n} records on stdout:\n{out:?}\nstderr:\n{}",
                    out.len(),
                    self.log()
                ),
            }
        }
        out
    }

    /// Asserts that no further record comes within a short while.
    fn no_more_records(&self) {
        let lines = self.lines.as_ref().expect("stdout is drained");
        if let Ok(extra) = lines.recv_timeout(Duration::from_millis(500)) {
            panic!("unexpected record {extra}");
        }
    }

    /// Sends `signal`, waits for the exit; the status and the summary line.
    fn stop(mut self, signal: Signal) -> (ExitStatus, Value) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal");
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{signal} ignored:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The stderr thread may still hold the last line.
        let summary = self.event("summary")["summary"].clone();
        (status, summary)
    }

    /// SIGTERM; asserts a clean exit and returns the summary.
    fn terminate(self) -> Value {
        let (status, summary) = self.stop(Signal::SIGTERM);
        assert!(status.success(), "exit {status}");
        summary
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's mosquitto, and a folder for the payload files.
struct Broker {
    mosquitto: Mosquitto,
    dir: tempfile::TempDir,
    /// Extra `mosquitto_pub` arguments (`--cafile`).
    extra: Vec<String>,
}

impl Broker {
    fn start() -> Broker {
        let dir = tempfile::tempdir().expect("temporary folder");
        let mosquitto = Mosquitto::start(dir.path());
        Broker {
            mosquitto,
            dir,
            extra: Vec::new(),
        }
    }

    /// A TLS listener; returns the CA's PEM path too.
    fn start_tls() -> (Broker, String) {
        let dir = tempfile::tempdir().expect("temporary folder");
        let (mosquitto, ca) = Mosquitto::start_tls(dir.path());
        let ca = ca.to_str().expect("UTF-8 path").to_owned();
        let extra = vec!["--cafile".to_owned(), ca.clone()];
        (
            Broker {
                mosquitto,
                dir,
                extra,
            },
            ca,
        )
    }

    fn port(&self) -> u16 {
        self.mosquitto.port
    }

    /// `mosquitto_pub -f FILE -q 1`: one binary payload from a file.
    fn publish(&self, topic: &str, payload: &[u8]) {
        let file = tempfile::NamedTempFile::new_in(self.dir.path()).expect("payload file");
        std::fs::write(file.path(), payload).expect("write payload");
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let status = common::mosquitto_pub_command(self.port(), topic, &extra)
            .arg("-f")
            .arg(file.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("mosquitto_pub (apt install mosquitto-clients)");
        assert!(status.success(), "mosquitto_pub to {topic} failed");
    }
}

/// POSTs a body; the status and the JSON answer.
fn post(url: &str, body: &[u8]) -> (u16, Value) {
    let mut response = common::http_agent(Duration::from_secs(10))
        .post(url)
        .header("Content-Type", "application/octet-stream")
        .send(body)
        .expect("POST");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().expect("answer");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, json)
}

/// Asserts the summary's counts by name.
fn assert_counts(summary: &Value, want: &[(&str, u64)]) {
    for (key, n) in want {
        assert_eq!(summary[key], *n, "{key} in {summary}");
    }
}

fn seqs_of(lines: &[Value], gateway: &str) -> Vec<u64> {
    let mut seqs: Vec<u64> = lines
        .iter()
        .filter(|l| l["gateway"] == gateway)
        .map(|l| l["seq"].as_u64().expect("seq"))
        .collect();
    seqs.sort_unstable();
    seqs
}

fn range(r: RangeInclusive<u64>) -> Vec<u64> {
    r.collect()
}

/// Two batches, the first again, and another gateway's batch with the same
/// numbers: every record once, the repeat dropped.
fn every_record_once(receiver: &Receiver, send: impl Fn(&[u8])) {
    let first = full(1, BatchKind::Live, 1..=5);
    send(&first);
    send(&full(2, BatchKind::Live, 6..=10));
    send(&first);
    send(&batch_of("gw-2", 1, BatchKind::Live, 1..=3, 1..=3));
    let lines = receiver.records(13);
    receiver.no_more_records();
    assert_eq!(seqs_of(&lines, "gw-1"), range(1..=10));
    assert_eq!(seqs_of(&lines, "gw-2"), range(1..=3));
    let one = &lines[0];
    assert_eq!(one["event"], "position");
    assert_eq!(one["kind"], "live");
    assert_eq!(one["batch"], 1);
    assert_eq!(one["device"], "bus-1");
    assert_eq!(one["time"], "2026-05-01T12:00:01.000Z");
    assert_eq!(one["lat"], 52.00001);
}

/// A thinned number (no gap), a batch ahead (a gap), the backlog that fills it.
fn gap_then_filled(receiver: &Receiver, send: impl Fn(&[u8])) {
    send(&batch_of("gw-1", 1, BatchKind::Live, 1..=5, [1, 2, 4, 5]));
    assert_eq!(seqs_of(&receiver.records(4), "gw-1"), [1, 2, 4, 5]);
    send(&full(2, BatchKind::Live, 11..=15));
    receiver.records(5);
    let gap = &receiver.event("gap")["gap"];
    assert_eq!(
        (&gap["gateway"], &gap["from"], &gap["to"]),
        (&"gw-1".into(), &6.into(), &10.into())
    );
    send(&full(3, BatchKind::Backlog, 6..=10));
    let backlog = receiver.records(5);
    assert!(backlog.iter().all(|l| l["kind"] == "backlog"));
    assert_eq!(seqs_of(&backlog, "gw-1"), range(6..=10));
    let filled = &receiver.event("gap_filled")["gap_filled"];
    assert_eq!(
        (&filled["from"], &filled["to"], &filled["batch"]),
        (&6.into(), &10.into(), &3.into())
    );
    assert_eq!(
        receiver.events("gap").len(),
        1,
        "the thinned number is no gap"
    );
}

#[test]
fn mqtt_prints_every_record_once_and_drops_a_republished_batch() {
    let broker = Broker::start();
    let receiver = Receiver::mqtt(&broker, "receive-once");
    every_record_once(&receiver, |b| {
        let gateway = wire::decode(b).expect("a batch").gateway;
        broker.publish(&format!("fixgate/{gateway}/batches"), b);
    });
    let want = [
        ("gateways", 2),
        ("batches", 4),
        ("records", 13),
        ("duplicates", 5),
        ("open_gaps", 0),
    ];
    assert_counts(&receiver.terminate(), &want);
}

#[test]
fn mqtt_reports_a_gap_then_its_filling() {
    let broker = Broker::start();
    let receiver = Receiver::mqtt(&broker, "receive-gap");
    gap_then_filled(&receiver, |b| broker.publish(TOPIC, b));
    assert_counts(&receiver.terminate(), &[("open_gaps", 0), ("missing", 0)]);
}

#[test]
fn mqtt_malformed_payload_is_reported_acknowledged_and_the_receiver_goes_on() {
    let broker = Broker::start();
    let receiver = Receiver::mqtt(&broker, "receive-bad");
    broker.publish(TOPIC, b"not a batch");
    broker.publish(TOPIC, &full(1, BatchKind::Live, 1..=2));
    assert_eq!(seqs_of(&receiver.records(2), "gw-1"), [1, 2]);
    let error = receiver.event("error");
    assert_eq!(error["topic"], TOPIC, "{error}");
    assert!(!error["error"].as_str().unwrap_or_default().is_empty());
    assert_counts(&receiver.terminate(), &[("malformed", 1), ("records", 2)]);

    // Acknowledged: the same session does not get it (or the batch) again.
    let again = Receiver::mqtt(&broker, "receive-bad");
    broker.publish(TOPIC, &full(2, BatchKind::Live, 3..=3));
    assert_eq!(seqs_of(&again.records(1), "gw-1"), [3]);
    again.no_more_records();
    assert!(again.events("error").is_empty(), "{}", again.log());
}

#[test]
fn mqtt_persistent_session_gets_what_was_published_while_the_receiver_was_down() {
    let broker = Broker::start();
    let first = Receiver::mqtt(&broker, "receive-session");
    broker.publish(TOPIC, &full(1, BatchKind::Live, 1..=3));
    assert_eq!(seqs_of(&first.records(3), "gw-1"), [1, 2, 3]);
    first.terminate();

    broker.publish(TOPIC, &full(2, BatchKind::Live, 4..=6));
    broker.publish(TOPIC, &full(3, BatchKind::Live, 7..=9));
    let second = Receiver::mqtt(&broker, "receive-session");
    assert_eq!(seqs_of(&second.records(6), "gw-1"), range(4..=9));
    second.no_more_records();
}

#[test]
fn mqtt_batch_of_a_receiver_killed_while_writing_it_comes_again() {
    let broker = Broker::start();
    let mut stuck = Receiver::mqtt_with(broker.port(), "receive-kill", &[], false);
    // Far more output than the pipe holds: with nobody reading, the receiver
    // blocks halfway through the batch, before it could acknowledge it.
    let n = 3000;
    broker.publish(TOPIC, &full(1, BatchKind::Live, 1..=n));
    let mut out = BufReader::new(stuck.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("a first record");
    assert!(line.contains(r#""seq":1,"#), "{line}");
    // Killed (and reaped) while still holding the pipe, so that it never
    // sees a write fail.
    drop(stuck);
    drop(out);

    let second = Receiver::mqtt(&broker, "receive-kill");
    assert_eq!(seqs_of(&second.records(n as usize), "gw-1"), range(1..=n));
}

#[test]
fn mqtt_over_tls_trusting_a_ca_file() {
    let (broker, ca) = Broker::start_tls();
    let tls = ["--tls", "--ca-file", ca.as_str()];
    let receiver = Receiver::mqtt_with(broker.port(), "receive-tls", &tls, true);
    broker.publish(TOPIC, &full(1, BatchKind::Live, 1..=2));
    assert_eq!(seqs_of(&receiver.records(2), "gw-1"), [1, 2]);
}

#[test]
fn http_prints_every_record_once_and_answers_a_resent_batch_with_no_new_records() {
    let (receiver, url) = Receiver::http();
    let answers = Mutex::new(Vec::new());
    every_record_once(&receiver, |b| answers.lock().unwrap().push(post(&url, b)));
    let answers = answers.into_inner().unwrap();
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    assert_eq!(answers[2].1, serde_json::json!({"new": 0, "duplicates": 5}));
    assert_counts(&receiver.terminate(), &[("records", 13), ("duplicates", 5)]);
}

#[test]
fn http_reports_a_gap_then_its_filling() {
    let (receiver, url) = Receiver::http();
    gap_then_filled(&receiver, |b| assert_eq!(post(&url, b).0, 200));
    assert_counts(&receiver.terminate(), &[("open_gaps", 0)]);
}

#[test]
fn http_answers_400_to_garbage_and_goes_on() {
    let (receiver, url) = Receiver::http();
    let (status, answer) = post(&url, b"garbage");
    assert_eq!(status, 400);
    assert!(answer["error"].is_string(), "{answer}");
    assert!(receiver.event("error")["peer"].is_string());
    let (status, _) = post(&url, &full(1, BatchKind::Live, 1..=2));
    assert_eq!(status, 200);
    assert_eq!(seqs_of(&receiver.records(2), "gw-1"), [1, 2]);
    // SIGINT (Ctrl-C) stops it as cleanly as SIGTERM.
    let (exit, summary) = receiver.stop(Signal::SIGINT);
    assert!(exit.success(), "exit {exit}");
    assert_counts(&summary, &[("malformed", 1)]);
}

#[test]
fn http_answers_413_above_the_batch_limit() {
    let (receiver, url) = Receiver::http();
    let (status, _) = post(&url, &vec![0u8; wire::MAX_BATCH_BYTES + 1]);
    assert_eq!(status, 413);
    let (status, _) = post(&url, &full(1, BatchKind::Live, 1..=1));
    assert_eq!(status, 200);
    assert_counts(&receiver.terminate(), &[("malformed", 1)]);
}
