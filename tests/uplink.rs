//! Store and forward through real parts: the daemon's uplink publishing to
//! Debian's mosquitto (or POSTing over HTTP), and `fixgate-receive` on the
//! other side deduplicating by gateway and sequence number. Outages of the
//! upstream, SIGKILLs of the daemon and TLS client certificates.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use common::receiver::Receiver;
use common::{
    Daemon, Mosquitto, SseClient, free_port, make_client_cert, make_tls_files, wait_port,
};
use serde_json::Value;

/// Waits until every `(device, time)` of `want` has arrived at `receiver`.
fn wait_for(
    receiver: &Receiver,
    want: &HashSet<(String, String)>,
    timeout: Duration,
) -> Vec<Value> {
    receiver.wait_until(timeout, |records| {
        let got: HashSet<(String, String)> = records.iter().filter_map(key).collect();
        want.is_subset(&got)
    })
}

/// Every position the daemon's store holds, read back over SSE.
fn stored_positions(daemon: &Daemon) -> HashSet<(String, String)> {
    let base = daemon.base();
    let feed = SseClient::connect(daemon.port, "", Some(&base.to_string()));
    let mut stored = HashSet::new();
    while let Some(event) = feed.next_event(Duration::from_secs(2)) {
        if event.event.as_deref() == Some("position") {
            stored.extend(key(&event.json()));
        }
    }
    stored
}

/// A position's identity, independent of its sequence number.
fn key(record: &Value) -> Option<(String, String)> {
    (record["event"] == "position").then(|| {
        (
            record["device"].as_str().unwrap_or_default().to_owned(),
            record["time"].as_str().unwrap_or_default().to_owned(),
        )
    })
}

/// A fix the daemon answered 200 for, and when.
#[derive(Clone)]
struct Accepted {
    device: String,
    time: String,
    at: Instant,
}

/// Posts fixes of `devices` devices round-robin to `/api/fixes` until
/// stopped, retrying each one until the daemon takes it (it may be down).
struct Poster {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Accepted>>,
}

impl Poster {
    fn start(port: u16, devices: usize, per_second: f64) -> Poster {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(2)))
                .http_status_as_error(false)
                .build()
                .into();
            // Two days ago, one fix a second per device, moving ~1 m/s.
            let base = Utc::now().timestamp_millis() / 1000 * 1000 - 2 * 86_400_000;
            let mut accepted = Vec::new();
            let period = Duration::from_secs_f64(1.0 / per_second);
            let mut n = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let d = n as usize % devices;
                let i = n / devices as u64;
                let time_ms = base + i as i64 * 1000;
                let body = format!(
                    r#"{{"device":"car-{d}","time":{time_ms},"lat":{:.7},"lon":{:.7},"alt":{:.1},"speed":1.1,"course":{:.1},"hdop":0.9,"sats":9}}"#,
                    52.0 + i as f64 * 1e-5,
                    5.0 + d as f64 * 0.01,
                    10.0 + (i % 7) as f64 * 0.1,
                    (i % 3600) as f64 * 0.1,
                );
                let url = format!("http://127.0.0.1:{port}/api/fixes");
                match agent.post(&url).send(&body) {
                    Ok(r) if r.status() == 200 => {
                        let time = Utc
                            .timestamp_millis_opt(time_ms)
                            .unwrap()
                            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                        accepted.push(Accepted {
                            device: format!("car-{d}"),
                            time,
                            at: Instant::now(),
                        });
                        n += 1;
                        std::thread::sleep(period);
                    }
                    // Down or restarting: the same fix again shortly.
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            accepted
        });
        Poster { stop, handle }
    }

    fn finish(self) -> Vec<Accepted> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("poster")
    }
}

fn keys(accepted: &[Accepted]) -> HashSet<(String, String)> {
    accepted
        .iter()
        .map(|a| (a.device.clone(), a.time.clone()))
        .collect()
}

/// Asserts each record arrived once: no sequence number twice, and no
/// position twice under different numbers.
fn assert_once(records: &[Value]) {
    let mut seqs = HashSet::new();
    let mut fixes = HashSet::new();
    for r in records {
        let seq = (r["gateway"].to_string(), r["seq"].as_u64().expect("seq"));
        assert!(seqs.insert(seq.clone()), "seq {seq:?} printed twice");
        if let Some(k) = key(r) {
            assert!(fixes.insert(k.clone()), "fix {k:?} arrived twice");
        }
    }
}

/// Asserts that within each stream (live+snapshot, backlog) a device's
/// records arrive in increasing sequence order.
fn assert_in_order_per_device(records: &[Value]) {
    let mut last: HashMap<(String, bool), u64> = HashMap::new();
    for r in records {
        if r["event"] != "position" || r["kind"] == "snapshot" {
            continue;
        }
        let stream = (
            r["device"].as_str().unwrap_or_default().to_owned(),
            r["kind"] == "backlog",
        );
        let seq = r["seq"].as_u64().expect("seq");
        if let Some(prev) = last.insert(stream.clone(), seq) {
            assert!(prev < seq, "{stream:?}: seq {seq} after {prev}");
        }
    }
}

fn uplink_mqtt(port: u16, extra: &str) -> String {
    format!(
        "[gateway]\nid = \"gw-1\"\n\n[uplink]\ntransport = \"mqtt\"\nhost = \"127.0.0.1\"\nport = {port}\nmax_age = \"200ms\"\nretry_min = \"200ms\"\nretry_max = \"1s\"\nack_timeout = \"5s\"\n{extra}\n"
    )
}

/// mosquitto with persistence, so that the receiver's session (and the
/// batches queued for it) survive a restart of the broker.
fn persistent_mosquitto(dir: &Path, port: u16) -> Mosquitto {
    let db = dir.join("mosquitto-db");
    std::fs::create_dir_all(&db).expect("mosquitto db dir");
    Mosquitto::start_on(
        dir,
        port,
        &format!(
            "listener {port} 127.0.0.1\npersistence true\npersistence_location {}/\nautosave_interval 1\n",
            db.display()
        ),
    )
}

#[test]
fn upstream_down_for_minutes_then_back_every_fix_arrives_once_live_first_then_backlog() {
    let outage = Duration::from_secs(
        std::env::var("FIXGATE_TEST_OUTAGE_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(120),
    );
    let dir = tempfile::tempdir().unwrap();
    let broker_port = free_port();
    let broker = persistent_mosquitto(dir.path(), broker_port);
    let receiver = Receiver::mqtt(dir.path(), broker_port, "test-cloud");
    // Backlog drains at 200 records/s in batches of 100: the outage's
    // ~2,400 fixes take seconds, and live batches go in between.
    let daemon = Daemon::start(
        dir.path(),
        &uplink_mqtt(broker_port, "max_records = 100\nbacklog_rate = 200\n"),
    );
    let poster = Poster::start(daemon.port, 4, 20.0);
    assert_eq!(
        daemon.wait_metric("fixgate_uplink_connected", &[], 1.0),
        Some(1.0)
    );
    // Pacing, not a wait: three seconds of traffic while the link is up.
    std::thread::sleep(Duration::from_secs(3));

    drop(broker);
    // The outage itself (longer than the backlog report's 10 s period).
    std::thread::sleep(outage);
    // The status line's walk of the store reports the backlog (every 10 s).
    let backlog = daemon
        .metric("fixgate_uplink_backlog_records")
        .unwrap_or(0.0);
    assert!(backlog > 0.0, "backlog gauge {backlog} during the outage");
    let oldest = daemon
        .metric("fixgate_uplink_backlog_oldest_seconds")
        .unwrap_or(0.0);
    assert!(
        oldest >= 5.0,
        "oldest unacknowledged fix {oldest}s old during the outage"
    );
    let during = receiver.records().len();
    let broker = persistent_mosquitto(dir.path(), broker_port);
    // Pacing: traffic goes on while the backlog drains.
    std::thread::sleep(Duration::from_secs(3));
    let accepted = poster.finish();
    let records = wait_for(&receiver, &keys(&accepted), Duration::from_secs(120));
    let got: HashSet<_> = records.iter().filter_map(key).collect();
    let missing: Vec<_> = keys(&accepted).difference(&got).cloned().collect();
    assert!(
        missing.is_empty(),
        "{} of {} fixes never arrived, e.g. {:?}\n{}",
        missing.len(),
        accepted.len(),
        missing.iter().take(3).collect::<Vec<_>>(),
        daemon.log_text()
    );
    assert_once(&records);
    assert_in_order_per_device(&records);

    // After the outage: each device's latest position came first (a
    // snapshot), the rest as historic backlog.
    let after = &records[during..];
    let first_backlog = after
        .iter()
        .position(|r| r["kind"] == "backlog")
        .expect("the outage left a backlog");
    let snapshot = after.iter().filter(|r| r["kind"] == "snapshot").count();
    assert!(snapshot > 0, "no snapshot after the outage");
    // Every device's current position (from the snapshot, or the first live
    // batch for one whose latest fix was not durable yet) before any backlog.
    let current: HashSet<&str> = after[..first_backlog]
        .iter()
        .filter(|r| r["kind"] == "snapshot" || r["kind"] == "live")
        .filter_map(|r| r["device"].as_str())
        .collect();
    assert_eq!(
        current.len(),
        4,
        "devices seen before the backlog: {current:?}"
    );
    assert!(
        records
            .iter()
            .filter(|r| r["kind"] == "backlog" && r["event"] == "position")
            .all(|r| r["historic"] == true),
        "backlog positions are historic"
    );
    let backlog = records.iter().filter(|r| r["kind"] == "backlog").count();
    // 20 fixes a second were posted throughout the outage.
    let expected = outage.as_secs() as usize * 20 / 2;
    assert!(backlog > expected, "only {backlog} backlog records");
    let log = receiver.stop();
    let summary: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("summary").cloned())
        .unwrap_or_else(|| panic!("no summary from the receiver:\n{log}"));
    assert_eq!(summary["open_gaps"], 0, "gaps left: {summary}");
    println!(
        "outage {outage:?}: {} fixes accepted, {} arrived before it, {backlog} drained as backlog",
        accepted.len(),
        during
    );
    drop(broker);
}

#[test]
fn sigkill_during_ingest_and_upload_loses_at_most_the_flush_interval_and_duplicates_nothing() {
    let rounds = 8;
    // What `Daemon::start` configures.
    let flush = Duration::from_millis(100);
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let receiver = Receiver::mqtt(dir.path(), broker.port, "test-cloud-kill");
    let mut daemon = Daemon::start(dir.path(), &uplink_mqtt(broker.port, "max_records = 50\n"));
    let (config_path, port) = (daemon.config.clone(), daemon.port);
    let poster = Poster::start(port, 3, 200.0);
    let mut kills = Vec::new();
    for round in 0..rounds {
        // Pacing: kills at varying points of the traffic.
        std::thread::sleep(Duration::from_millis(1000 + 300 * (round % 4)));
        daemon.kill();
        // After the process is gone: a request answered while it was dying
        // belongs to this kill, not the next.
        kills.push(Instant::now());
        daemon = Daemon::spawn(dir.path(), config_path.clone(), port);
    }
    // Pacing: traffic into the last daemon.
    std::thread::sleep(Duration::from_secs(1));
    let accepted = poster.finish();
    // Everything durable arrives; wait for the last accepted ones.
    let last_round: Vec<Accepted> = accepted
        .iter()
        .filter(|a| a.at > *kills.last().unwrap())
        .cloned()
        .collect();
    let records = wait_for(&receiver, &keys(&last_round), Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let records = {
        let more = receiver.records();
        if more.len() > records.len() {
            more
        } else {
            records
        }
    };
    assert_once(&records);
    let got: HashSet<_> = records.iter().filter_map(key).collect();
    // Everything the store holds went upstream.
    let stored = stored_positions(&daemon);
    let missing: Vec<_> = stored.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{} stored fixes never arrived upstream, e.g. {:?}",
        missing.len(),
        missing.iter().take(3).collect::<Vec<_>>()
    );
    let mut window = Duration::ZERO;
    let mut lost = 0;
    for a in &accepted {
        if got.contains(&(a.device.clone(), a.time.clone())) {
            continue;
        }
        lost += 1;
        let kill = kills.iter().find(|k| **k >= a.at).unwrap_or_else(|| {
            panic!(
                "{} {} accepted after the last kill never arrived",
                a.device, a.time
            )
        });
        window = window.max(kill.duration_since(a.at));
    }
    println!(
        "{rounds} SIGKILLs, {} fixes accepted, {lost} lost, loss window {:?} (flush interval {flush:?})",
        accepted.len(),
        window
    );
    if window > flush + Duration::from_millis(150) {
        let mut logs = String::new();
        for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("daemon-") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                for l in text.lines().filter(|l| {
                    l.contains("ERROR") || l.contains("WARN") || l.contains("store open")
                }) {
                    logs.push_str(&format!("{name}: {l}\n"));
                }
            }
        }
        panic!("lost a fix accepted {window:?} before a kill; flush interval {flush:?}\n{logs}");
    }
    // The kills must land while fixes are flowing, or the test proves
    // nothing; how many flow depends on the machine, so only ask that
    // every round carried some.
    let mut since = None;
    for (round, kill) in kills.iter().enumerate() {
        let n = accepted
            .iter()
            .filter(|a| since.is_none_or(|s| a.at > s) && a.at <= *kill)
            .count();
        assert!(
            n >= 10,
            "round {round}: only {n} fixes accepted before its kill"
        );
        since = Some(*kill);
    }
    drop(daemon);
}

#[test]
fn http_uplink_retries_until_the_receiver_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let receiver = Receiver::http(dir.path(), port);
    let daemon = Daemon::start(
        dir.path(),
        &format!(
            "[gateway]\nid = \"gw-http\"\n\n[uplink]\ntransport = \"http\"\nurl = \"http://127.0.0.1:{port}/batches\"\nmax_age = \"200ms\"\nretry_min = \"200ms\"\nretry_max = \"1s\"\n"
        ),
    );
    let poster = Poster::start(daemon.port, 2, 50.0);
    // Pacing: traffic while the receiver is up, then an outage of 4 s.
    std::thread::sleep(Duration::from_secs(2));
    let before = receiver.stop();
    let first = before.len();
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        daemon
            .wait_metric("fixgate_uplink_disconnects_total", &[], 1.0)
            .is_some_and(|v| v >= 1.0),
        "the uplink noticed the receiver was gone"
    );
    let receiver = Receiver::http(dir.path(), port);
    // Pacing: traffic after the receiver is back.
    std::thread::sleep(Duration::from_secs(1));
    let accepted = poster.finish();
    // The second receiver has no memory of the first: everything not
    // acknowledged before the outage comes again, and all that came after.
    let after_outage: Vec<Accepted> = accepted[accepted.len() / 2..].to_vec();
    let records = wait_for(&receiver, &keys(&after_outage), Duration::from_secs(30));
    let got: HashSet<_> = records.iter().filter_map(key).collect();
    assert!(
        keys(&after_outage).is_subset(&got),
        "fixes posted during the outage never arrived over HTTP ({first} bytes of log before)"
    );
    assert_once(&records);
    assert!(records.iter().all(|r| r["gateway"] == "gw-http"));
}

#[test]
fn mqtt_uplink_authenticates_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_tls_files(dir.path());
    let (cert, cert_key) = make_client_cert(dir.path(), "gw-cert");
    let (tls_port, plain_port) = (free_port(), free_port());
    let d = dir.path().display();
    let _broker = Mosquitto::start_on(
        dir.path(),
        tls_port,
        &format!(
            "per_listener_settings false\nlistener {tls_port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\nrequire_certificate true\nlistener {plain_port} 127.0.0.1\npersistence false\n"
        ),
    );
    wait_port(plain_port);
    let receiver = Receiver::mqtt(dir.path(), plain_port, "test-cloud-tls");
    let tls = |with_cert: bool| {
        let certs = if with_cert {
            format!(
                "cert_file = \"{}\"\nkey_file = \"{}\"\n",
                cert.display(),
                cert_key.display()
            )
        } else {
            String::new()
        };
        uplink_mqtt(
            tls_port,
            &format!("tls = true\nca_file = \"{}\"\n{certs}", ca.display()),
        )
        .replace("host = \"127.0.0.1\"", "host = \"localhost\"")
    };

    // Without a certificate the broker refuses the TLS handshake.
    let anonymous = dir.path().join("anonymous");
    std::fs::create_dir_all(&anonymous).unwrap();
    let refused = Daemon::start(&anonymous, &tls(false));
    let poster = Poster::start(refused.port, 1, 20.0);
    // Two seconds in which nothing may get through (and traffic to refuse).
    std::thread::sleep(Duration::from_secs(2));
    let accepted = poster.finish();
    assert!(!accepted.is_empty());
    assert_eq!(refused.metric("fixgate_uplink_connected"), Some(0.0));
    assert!(
        receiver.records().is_empty(),
        "nothing got through without a certificate"
    );
    drop(refused);

    let daemon = Daemon::start(dir.path(), &tls(true));
    let poster = Poster::start(daemon.port, 2, 20.0);
    // Pacing: two seconds of traffic.
    std::thread::sleep(Duration::from_secs(2));
    let accepted = poster.finish();
    let records = wait_for(&receiver, &keys(&accepted), Duration::from_secs(20));
    let got: HashSet<_> = records.iter().filter_map(key).collect();
    assert!(keys(&accepted).is_subset(&got), "{}", daemon.log_text());
    assert_eq!(daemon.metric("fixgate_uplink_connected"), Some(1.0));
}
