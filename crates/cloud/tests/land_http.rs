//! `fixgate-receive --http … --postgres …` end to end: a batch encoded with
//! fixgate-wire is answered 200 only once committed; with the database
//! stopped it is answered 503 (Retry-After) and nothing is acknowledged;
//! after a restart, 200.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use common::pg::Pg;
use fixgate_cloud::fix::{DeviceId, Event, Fix, Position, Record};
use fixgate_cloud::wire::{self, Batch, BatchKind};

struct Receiver {
    child: Child,
    http: String,
    metrics: String,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn receiver(pg: &Pg) -> Receiver {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fixgate-receive"))
        .args([
            "--http",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--postgres",
        ])
        .arg(pg.conninfo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fixgate-receive");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("receiver: {line}");
            let _ = tx.send(line);
        }
    });
    let (mut http, mut metrics) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.is_none() || metrics.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the receiver's listening lines");
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(addr) = value["listening"]["addr"].as_str() {
            http = Some(addr.to_owned());
        }
        if let Some(addr) = value["listening_metrics"].as_str() {
            metrics = Some(addr.to_owned());
        }
    }
    Receiver {
        child,
        http: http.unwrap(),
        metrics: metrics.unwrap(),
    }
}

/// One HTTP/1.1 request; the status, the head and the body.
fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut response = String::new();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("the response");
    response.push_str(&String::from_utf8_lossy(&bytes));
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, head.to_owned(), body.to_owned())
}

fn encoded(first: u64, last: u64) -> Vec<u8> {
    let base = Utc.with_ymd_and_hms(2026, 6, 1, 8, 0, 0).unwrap();
    let records = (first..=last)
        .map(|seq| Record {
            seq,
            event: Event::Position(Position::new(
                DeviceId::new("bus-7").unwrap(),
                Fix::new(
                    base + chrono::Duration::seconds(seq as i64),
                    52.0 + seq as f64 * 0.0001,
                    5.0,
                ),
            )),
        })
        .collect();
    wire::encode(&Batch {
        gateway: "gw-http".into(),
        id: first,
        kind: BatchKind::Live,
        first_seq: first,
        last_seq: last,
        records,
    })
}

#[test]
fn http_batches_are_answered_after_commit_503_while_the_database_is_down_then_200() {
    let pg = Pg::start();
    let receiver = receiver(&pg);
    let (status, _, body) = request(&receiver.http, "POST", "/batches", &encoded(1, 100));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""new":100"#), "{body}");
    // Answered only after COMMIT: the rows are visible to anyone now.
    assert_eq!(pg.psql("SELECT count(*) FROM fixgate.fix"), "100");
    assert_eq!(pg.psql("SELECT seqs FROM fixgate.coverage"), "{[1,101)}");
    let (status, _, body) = request(&receiver.http, "POST", "/batches", &encoded(1, 100));
    assert_eq!(status, 200);
    assert!(body.contains(r#""duplicates":100"#), "{body}");
    let (status, _, _) = request(&receiver.metrics, "GET", "/healthz", b"");
    assert_eq!(status, 200);

    pg.stop();
    let (status, head, body) = request(&receiver.http, "POST", "/batches", &encoded(101, 200));
    assert_eq!(status, 503, "{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    // While down, every try is refused, and /healthz says so soon.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, _) = request(&receiver.metrics, "GET", "/healthz", b"");
        if status == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "/healthz stayed 200");
        std::thread::sleep(Duration::from_millis(200));
    }

    pg.start_again();
    assert_eq!(
        pg.psql("SELECT count(*) FROM fixgate.fix"),
        "100",
        "nothing of the refused batch landed"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, body) = request(&receiver.http, "POST", "/batches", &encoded(101, 200));
        if status == 200 {
            assert!(body.contains(r#""new":100"#), "{body}");
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "still 503 after the restart");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(pg.psql("SELECT count(*) FROM fixgate.fix"), "200");
    let (status, _, metrics) = request(&receiver.metrics, "GET", "/metrics", b"");
    assert_eq!(status, 200);
    for name in [
        "fixgate_receive_batches_total",
        "fixgate_receive_records_total",
        "fixgate_receive_errors_total",
        "fixgate_receive_commit_seconds",
        "fixgate_receive_db_up",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
}

#[test]
fn an_inconsistent_or_oversized_seq_batch_is_refused_with_400_and_nothing_written() {
    let pg = Pg::start();
    let receiver = receiver(&pg);
    let big = i64::MAX as u64 + 1;
    let bad = wire::encode(&Batch {
        gateway: "gw-http".into(),
        id: 1,
        kind: BatchKind::Live,
        first_seq: big,
        last_seq: big,
        records: Vec::new(),
    });
    let (status, _, body) = request(&receiver.http, "POST", "/batches", &bad);
    assert_eq!(status, 400, "{body}");
    assert_eq!(pg.psql("SELECT count(*) FROM fixgate.coverage"), "0");
}
