//! The cloud side landing in PostgreSQL + PostGIS (issue 20), through real
//! parts only: Debian's PostgreSQL 15 with PostGIS in a cluster of the
//! test's own, Debian's mosquitto with persistence, Debian's nginx as the
//! load balancer, three real `fixgate` gateways fed over HTTP and two
//! `fixgate-receive --postgres` receivers. Receivers are SIGKILLed and
//! restarted, the database and the broker restarted, while fixes flow; at
//! the end every fix each gateway accepted is in `fixgate.fix` exactly
//! once, `fixgate.gaps` is empty and `fixgate.latest_position` is what each
//! gateway's `/api/devices` says. Hostile batches sent straight to a
//! receiver are refused, counted and write nothing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use common::landing::Landing;
use common::nginx::Nginx;
use common::postgres::Postgres;
use common::{Daemon, Mosquitto, SseClient, free_port, get, http_agent, mosquitto_pub_output};
use fixgate::fix::{DeviceId, Event, Fix, Position, Record};
use fixgate::wire::{self, Batch, BatchKind};
use serde_json::Value;

const GATEWAYS: [&str; 3] = ["gw-a", "gw-b", "gw-c"];
const DEVICES: usize = 3;
/// Fixes a second each gateway is fed.
const RATE: f64 = 12.0;
/// How long the end state may take to settle, and each step of the run.
const SETTLE: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(60);

/// Waits (polling every 200 ms: each poll may start a `psql`) until `done`.
fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A position as both sides can state it: seq, device, fix time in ms,
/// latitude and longitude.
#[derive(Debug, Clone, PartialEq)]
struct Pos {
    device: String,
    time_ms: i64,
    lat: f64,
    lon: f64,
}

impl Pos {
    /// Equal up to the wire's quantisation (well under a centimetre).
    fn same(&self, other: &Pos) -> bool {
        self.device == other.device
            && self.time_ms == other.time_ms
            && (self.lat - other.lat).abs() < 1e-6
            && (self.lon - other.lon).abs() < 1e-6
    }
}

fn time_ms(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("time {text:?}: {e}"))
        .timestamp_millis()
}

/// A gateway: the real daemon with its uplink, and the fixes fed to it.
struct Gateway {
    id: &'static str,
    daemon: Daemon,
    poster: Option<Poster>,
    accepted: Vec<(String, i64)>,
}

impl Gateway {
    /// Starts gateway `id` in a dir of its own below `root`, its uplink
    /// described by `uplink` (the `[uplink]` keys), and starts feeding it.
    fn start(root: &Path, id: &'static str, uplink: &str) -> Gateway {
        let dir = root.join(id);
        std::fs::create_dir_all(&dir).expect("gateway dir");
        let daemon = Daemon::start(
            &dir,
            &format!(
                "[gateway]\nid = \"{id}\"\n\n[uplink]\n{uplink}\nmax_records = 50\nmax_age = \"200ms\"\nretry_min = \"200ms\"\nretry_max = \"1s\"\nack_timeout = \"5s\"\n"
            ),
        );
        let poster = Poster::start(daemon.port, id);
        Gateway {
            id,
            daemon,
            poster: Some(poster),
            accepted: Vec::new(),
        }
    }

    fn stop_feeding(&mut self) {
        if let Some(poster) = self.poster.take() {
            self.accepted = poster.finish();
        }
    }

    /// Waits until the uplink has every stored record acknowledged
    /// upstream (the acknowledged prefix reaches the store's head).
    fn wait_backlog_empty(&self) {
        wait_for(
            &format!("{}'s uplink backlog to empty", self.id),
            SETTLE,
            || {
                let head = self.daemon.head() as f64;
                self.daemon
                    .metric("fixgate_uplink_acked_seq")
                    .is_some_and(|acked| acked >= head)
            },
        );
    }

    /// Every position the gateway's store holds, by seq: the feed read
    /// from the oldest stored record up to the head.
    fn stored_positions(&self) -> BTreeMap<u64, Pos> {
        let head = self.daemon.head();
        let base = self.daemon.base();
        let feed = SseClient::connect(self.daemon.port, "", Some(&base.to_string()));
        let mut stored = BTreeMap::new();
        let mut last = base;
        while last < head {
            let event = feed
                .next_event(Duration::from_secs(20))
                .unwrap_or_else(|| panic!("{}: the feed stopped at {last} of {head}", self.id));
            assert_ne!(
                event.event.as_deref(),
                Some("reset"),
                "{}: the feed reset instead of replaying from {base}: {}",
                self.id,
                event.data
            );
            let Some(seq) = event.id.as_deref().and_then(|i| i.parse::<u64>().ok()) else {
                continue;
            };
            last = seq;
            if event.event.as_deref() == Some("position") {
                let v = event.json();
                stored.insert(seq, pos_of(&v));
            }
        }
        stored
    }

    /// The latest position of each device, as `/api/devices` gives it.
    fn latest(&self) -> BTreeMap<String, Pos> {
        let body = get(self.daemon.port, "/api/devices").expect("/api/devices");
        let v: Value = serde_json::from_str(&body).expect("json");
        v["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .filter(|d| d["fix"].is_object())
            .map(|d| {
                let device = d["device"].as_str().expect("device").to_owned();
                let fix = &d["fix"];
                let pos = Pos {
                    device: device.clone(),
                    time_ms: time_ms(fix["time"].as_str().expect("time")),
                    lat: fix["lat"].as_f64().expect("lat"),
                    lon: fix["lon"].as_f64().expect("lon"),
                };
                (device, pos)
            })
            .collect()
    }
}

/// A position event's JSON (the feed's) as a [`Pos`].
fn pos_of(v: &Value) -> Pos {
    let fix = if v["fix"].is_object() { &v["fix"] } else { v };
    Pos {
        device: v["device"].as_str().expect("device").to_owned(),
        time_ms: time_ms(fix["time"].as_str().expect("time")),
        lat: fix["lat"].as_f64().expect("lat"),
        lon: fix["lon"].as_f64().expect("lon"),
    }
}

/// Posts fixes of [`DEVICES`] devices round-robin to a gateway's
/// `/api/fixes` until stopped; each fix again until the gateway takes it.
/// Fix times start 150 days back, three hours apart per device, so that
/// they span several months (and so several partitions of `fixgate.fix`).
struct Poster {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<(String, i64)>>,
}

impl Poster {
    fn start(port: u16, gateway: &str) -> Poster {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        // Each gateway's devices apart from the others'.
        let lon0 = 5.0 + GATEWAYS.iter().position(|g| *g == gateway).unwrap_or(0) as f64;
        let handle = std::thread::spawn(move || {
            let agent = http_agent(Duration::from_secs(2));
            let base = Utc::now().timestamp() * 1000 - 150 * 86_400_000;
            let period = Duration::from_secs_f64(1.0 / RATE);
            let url = format!("http://127.0.0.1:{port}/api/fixes");
            let mut accepted = Vec::new();
            let mut n = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let d = n as usize % DEVICES;
                let i = n / DEVICES as u64;
                let time_ms = base + i as i64 * 3 * 3_600_000;
                let body = format!(
                    r#"{{"device":"car-{d}","time":{time_ms},"lat":{:.7},"lon":{:.7},"speed":1.5,"course":90.0,"hdop":0.8,"sats":10}}"#,
                    52.0 + i as f64 * 1e-4,
                    lon0 + d as f64 * 0.01,
                );
                match agent.post(&url).send(&body) {
                    Ok(r) if r.status() == 200 => {
                        accepted.push((format!("car-{d}"), time_ms));
                        n += 1;
                        std::thread::sleep(period);
                    }
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            accepted
        });
        Poster { stop, handle }
    }

    fn finish(self) -> Vec<(String, i64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("poster")
    }
}

/// Rows of `fixgate.fix` in all.
fn fix_rows(pg: &Postgres) -> i64 {
    pg.count("SELECT count(*) FROM fixgate.fix").unwrap_or(0)
}

/// Waits until `fixgate.fix` has grown by at least `by` rows past `from`:
/// batches are landing.
fn wait_landing(pg: &Postgres, what: &str, by: i64) {
    let from = fix_rows(pg);
    wait_for(&format!("{by} more fixes to land {what}"), STEP, || {
        fix_rows(pg) >= from + by
    });
}

/// The positions landed for `gateway`, by seq, and the seqs that have more
/// than one row.
fn landed_positions(pg: &Postgres, gateway: &str) -> (BTreeMap<u64, Pos>, Vec<u64>) {
    let rows = pg.psql(&format!(
        "SELECT seq, device, (extract(epoch FROM time) * 1000)::bigint, lat, lon FROM fixgate.fix WHERE gateway = '{gateway}' ORDER BY seq"
    ));
    let mut landed = BTreeMap::new();
    let mut twice = Vec::new();
    for line in rows.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('|').collect();
        let seq: u64 = f[0].parse().expect("seq");
        let pos = Pos {
            device: f[1].to_owned(),
            time_ms: f[2].parse().expect("time"),
            lat: f[3].parse().expect("lat"),
            lon: f[4].parse().expect("lon"),
        };
        if landed.insert(seq, pos).is_some() {
            twice.push(seq);
        }
    }
    (landed, twice)
}

/// `fixgate.latest_position` of `gateway`, by device.
fn landed_latest(pg: &Postgres, gateway: &str) -> BTreeMap<String, Pos> {
    pg.psql(&format!(
        "SELECT device, (extract(epoch FROM time) * 1000)::bigint, lat, lon FROM fixgate.latest_position WHERE gateway = '{gateway}' ORDER BY device"
    ))
    .lines()
    .filter(|l| !l.is_empty())
    .map(|line| {
        let f: Vec<&str> = line.split('|').collect();
        let pos = Pos {
            device: f[0].to_owned(),
            time_ms: f[1].parse().expect("time"),
            lat: f[2].parse().expect("lat"),
            lon: f[3].parse().expect("lon"),
        };
        (f[0].to_owned(), pos)
    })
    .collect()
}

/// The rows of `fixgate.gaps`.
fn gaps(pg: &Postgres) -> String {
    pg.try_psql("SELECT * FROM fixgate.gaps ORDER BY 1, 2")
        .unwrap_or_else(|| "(fixgate.gaps unreadable)".to_owned())
}

/// Whether `stored` (a gateway's store) and `landed` hold the same
/// positions under the same seqs.
fn same_positions(stored: &BTreeMap<u64, Pos>, landed: &BTreeMap<u64, Pos>) -> bool {
    stored.len() == landed.len()
        && stored
            .iter()
            .all(|(seq, p)| landed.get(seq).is_some_and(|l| l.same(p)))
}

/// The end checks of a run: each gateway fed everything it accepted into
/// its store and uploaded it; the database holds each stored position once
/// under its seq, no gaps, and each device's latest position.
fn assert_everything_landed_once(
    pg: &Postgres,
    gateways: &mut [Gateway],
    logs: &dyn Fn() -> String,
) {
    for gw in gateways.iter_mut() {
        gw.stop_feeding();
    }
    for gw in gateways.iter() {
        gw.wait_backlog_empty();
    }
    for gw in gateways.iter() {
        let stored = gw.stored_positions();
        // Every fix the gateway answered 200 for is in its store.
        let stored_keys: BTreeSet<(String, i64)> = stored
            .values()
            .map(|p| (p.device.clone(), p.time_ms))
            .collect();
        let lost: Vec<_> = gw
            .accepted
            .iter()
            .filter(|k| !stored_keys.contains(k))
            .collect();
        assert!(
            lost.is_empty(),
            "{}: {} accepted fixes not in its store, e.g. {:?}",
            gw.id,
            lost.len(),
            lost.iter().take(3).collect::<Vec<_>>()
        );
        assert_eq!(
            gw.daemon.metric("fixgate_fixes_accepted_total"),
            Some(stored.len() as f64),
            "{}: fixes accepted vs positions stored",
            gw.id
        );
        // Landing may trail the broker's acknowledgement (MQTT): wait
        // for the database to hold it all, then say what differs.
        let mut landed = (BTreeMap::new(), Vec::new());
        let deadline = Instant::now() + SETTLE;
        while Instant::now() < deadline {
            landed = landed_positions(pg, gw.id);
            if same_positions(&stored, &landed.0) {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let (landed, twice) = landed;
        assert!(twice.is_empty(), "{}: seqs landed twice: {twice:?}", gw.id);
        let missing: Vec<u64> = stored
            .keys()
            .filter(|s| !landed.contains_key(s))
            .copied()
            .collect();
        let extra: Vec<u64> = landed
            .keys()
            .filter(|s| !stored.contains_key(s))
            .copied()
            .collect();
        let wrong: Vec<u64> = stored
            .iter()
            .filter(|(s, p)| landed.get(s).is_some_and(|l| !l.same(p)))
            .map(|(s, _)| *s)
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty() && wrong.is_empty(),
            "{}: {} stored, {} landed; missing {} (e.g. {:?}), not stored {} (e.g. {:?}), different {} (e.g. {:?})\n{}",
            gw.id,
            stored.len(),
            landed.len(),
            missing.len(),
            &missing[..missing.len().min(5)],
            extra.len(),
            &extra[..extra.len().min(5)],
            wrong.len(),
            &wrong[..wrong.len().min(5)],
            logs()
        );
        let dups = pg.psql(&format!(
            "SELECT seq FROM fixgate.fix WHERE gateway = '{}' GROUP BY seq HAVING count(*) > 1",
            gw.id
        ));
        assert!(dups.trim().is_empty(), "{}: seqs twice: {dups}", gw.id);
        println!(
            "{}: {} fixes accepted, stored and landed once",
            gw.id,
            stored.len()
        );
    }
    wait_for("fixgate.gaps to be empty", SETTLE, || {
        gaps(pg).trim().is_empty()
    });
    assert_eq!(gaps(pg).trim(), "", "fixgate.gaps");
    for gw in gateways.iter() {
        let want = gw.latest();
        assert_eq!(want.len(), DEVICES, "{}: /api/devices", gw.id);
        let got = landed_latest(pg, gw.id);
        let same = want.len() == got.len()
            && want
                .iter()
                .all(|(d, p)| got.get(d).is_some_and(|g| g.same(p)));
        assert!(
            same,
            "{}: fixgate.latest_position {got:?}\n/api/devices {want:?}",
            gw.id
        );
    }
    let months = pg
        .count("SELECT count(DISTINCT date_trunc('month', time)) FROM fixgate.fix")
        .unwrap_or(0);
    println!("the fixes span {months} months (partitions)");
}

fn uplink_mqtt(port: u16) -> String {
    format!("transport = \"mqtt\"\nhost = \"127.0.0.1\"\nport = {port}\n")
}

fn uplink_http(port: u16) -> String {
    format!("transport = \"http\"\nurl = \"http://127.0.0.1:{port}/batches\"\n")
}

#[test]
fn mqtt_three_gateways_two_shared_receivers_survive_receiver_kills_and_database_and_broker_restarts()
 {
    let dir = tempfile::tempdir().unwrap();
    let mut pg = Postgres::start();
    let conninfo = pg.conninfo();
    let broker_port = free_port();
    let mut broker = Mosquitto::start_persistent(dir.path(), broker_port);
    // Both receivers subscribed before any gateway publishes: a shared
    // subscription nobody holds yet would drop the batches.
    let mut one = Landing::mqtt(
        dir.path(),
        broker_port,
        "receivers",
        "receiver-1",
        &conninfo,
    );
    let two = Landing::mqtt(
        dir.path(),
        broker_port,
        "receivers",
        "receiver-2",
        &conninfo,
    );
    let mut gateways: Vec<Gateway> = GATEWAYS
        .iter()
        .map(|id| Gateway::start(dir.path(), id, &uplink_mqtt(broker_port)))
        .collect();
    let pg_log = pg.log_path();
    let logs = || {
        format!(
            "{}\n{}\n{}",
            one_logs(dir.path()),
            two.all_logs(),
            std::fs::read_to_string(&pg_log).unwrap_or_default()
        )
    };
    wait_landing(&pg, "at the start", 30);

    for round in 1..=3 {
        one.kill();
        wait_landing(&pg, &format!("with receiver-1 killed ({round})"), 20);
        one.restart();
        // Back in the share group: it lands batches again.
        wait_for(
            &format!("receiver-1 to land again after kill {round}"),
            STEP,
            || one.batches("landed") + one.batches("duplicate") >= 1.0,
        );
    }

    pg.stop_immediate();
    wait_for("a receiver to report the database down", STEP, || {
        one.healthz() == Some(503) || two.healthz() == Some(503)
    });
    pg.start_server();
    pg.wait_ready(STEP);
    wait_landing(&pg, "after the database restart", 30);

    broker.terminate();
    wait_for("every gateway to notice the broker is gone", STEP, || {
        gateways
            .iter()
            .all(|g| g.daemon.metric("fixgate_uplink_connected") == Some(0.0))
    });
    // mosquitto (2.0.11) does not save shared subscriptions: the restarted
    // broker has the receivers' sessions and what is queued for them, but
    // no `$share/...` subscription until each receiver subscribes again
    // after its CONNACK. A batch published before that matches nothing:
    // mosquitto PUBACKs it to the gateway (which forgets it) and drops it.
    // So the gateways are held until both receivers are subscribed again,
    // as docs/cloud.md tells operators to do.
    let subscribed = (one.subscriptions(), two.subscriptions());
    for g in &gateways {
        g.daemon.pause();
    }
    broker = Mosquitto::start_persistent(dir.path(), broker_port);
    wait_for("both receivers to subscribe again", STEP, || {
        one.subscriptions() > subscribed.0 && two.subscriptions() > subscribed.1
    });
    for g in &gateways {
        g.daemon.resume();
    }
    wait_for("every gateway to reconnect", STEP, || {
        gateways
            .iter()
            .all(|g| g.daemon.metric("fixgate_uplink_connected") == Some(1.0))
    });
    wait_landing(&pg, "after the broker restart", 30);

    assert_everything_landed_once(&pg, &mut gateways, &logs);
    drop(gateways);
    drop(one);
    drop(broker);
}

/// receiver-1's logs of every start (it is restarted, so read from files).
fn one_logs(dir: &Path) -> String {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("receiver-1-") || n.starts_with("lb-1-"))
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .map(|p| {
            format!(
                "--- {} ---\n{}",
                p.display(),
                std::fs::read_to_string(p).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn http_three_gateways_through_nginx_to_two_receivers_survive_a_receiver_kill() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let conninfo = pg.conninfo();
    let mut one = Landing::http(dir.path(), "lb-1", &conninfo);
    let two = Landing::http(dir.path(), "lb-2", &conninfo);
    let ports = [one.http_port.expect("port"), two.http_port.expect("port")];
    let nginx = Nginx::round_robin(dir.path(), &ports);
    let mut gateways: Vec<Gateway> = GATEWAYS
        .iter()
        .map(|id| Gateway::start(dir.path(), id, &uplink_http(nginx.port)))
        .collect();
    let logs = || {
        format!(
            "{}\n{}\n{}",
            one_logs(dir.path()),
            two.all_logs(),
            nginx.log_text()
        )
    };
    wait_landing(&pg, "at the start", 30);
    // Round robin: both receivers take batches.
    wait_for("both receivers to land batches", STEP, || {
        one.batches("landed") >= 1.0 && two.batches("landed") >= 1.0
    });

    one.kill();
    wait_landing(&pg, "with lb-1 killed", 30);
    one.restart();
    wait_for("lb-1 to land batches again", STEP, || {
        one.batches("landed") >= 1.0
    });
    wait_landing(&pg, "after lb-1 is back", 30);

    assert_everything_landed_once(&pg, &mut gateways, &logs);
    drop(gateways);
    drop(nginx);
}

/// A position of one of three devices, distinct for every `seq`.
fn record(seq: u64) -> Record {
    let time = Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap()
        + chrono::Duration::seconds((seq % 1_000_000) as i64);
    let device = DeviceId::new(&format!("bus-{}", seq % 3)).unwrap();
    let fix = Fix::new(time, 52.0 + (seq % 1000) as f64 * 1e-5, 5.1);
    Record {
        seq,
        event: Event::Position(Position::new(device, fix)),
    }
}

/// The encoded live batch `id` of `gateway` covering `first..=last`,
/// holding the records `seqs`.
fn batch_of(gateway: &str, id: u64, (first, last): (u64, u64), seqs: &[u64]) -> Vec<u8> {
    wire::encode(&Batch {
        gateway: gateway.into(),
        id,
        kind: BatchKind::Live,
        first_seq: first,
        last_seq: last,
        records: seqs.iter().copied().map(record).collect(),
    })
}

/// A complete live batch: every seq of `first..=last` present.
fn full(gateway: &str, id: u64, first: u64, last: u64) -> Vec<u8> {
    let seqs: Vec<u64> = (first..=last).collect();
    batch_of(gateway, id, (first, last), &seqs)
}

/// A batch over the receiver's limit: a valid batch's bytes padded with
/// incompressible noise past [`wire::MAX_BATCH_BYTES`].
fn huge() -> Vec<u8> {
    let mut bytes = full("gw-huge", 1, 1, 10);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while bytes.len() <= wire::MAX_BATCH_BYTES + 1024 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes
}

/// Everything the receivers write, as text: what must not change when a
/// batch is refused.
fn db_state(pg: &Postgres) -> String {
    pg.psql(
        "SELECT 'fix', gateway, count(*)::text FROM fixgate.fix GROUP BY gateway \
         UNION ALL SELECT 'event', gateway, count(*)::text FROM fixgate.event GROUP BY gateway \
         UNION ALL SELECT 'coverage', gateway, seqs::text FROM fixgate.coverage \
         UNION ALL SELECT 'latest', gateway || '/' || device, seq::text || '@' || time::text FROM fixgate.latest \
         ORDER BY 1, 2",
    )
}

/// POSTs `body` to `url`; the status and the body as JSON (Null if none).
fn post(url: &str, body: &[u8]) -> (u16, Value) {
    let mut response = http_agent(Duration::from_secs(30))
        .post(url)
        .send(body)
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The hostile batches, by name: each one the receiver must refuse.
fn hostile(gateway: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("malformed", b"\x01this is not a fixgate batch".to_vec()),
        // Records outside the range the batch claims to cover: trusted,
        // the range would hide seqs 11..=14 as thinned.
        (
            "records outside the range",
            batch_of(gateway, 90, (11, 14), &[11, 12, 25]),
        ),
        // A seq PostgreSQL's bigint cannot hold.
        (
            "seq above i64::MAX",
            full(gateway, 91, 1 << 63, (1 << 63) + 2),
        ),
        ("huge", huge()),
    ]
}

#[test]
fn hostile_batches_over_http_and_mqtt_are_refused_counted_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let conninfo = pg.conninfo();
    let broker = Mosquitto::start(dir.path());
    let web = Landing::http(dir.path(), "hostile-http", &conninfo);
    let mut sub = Landing::mqtt(
        dir.path(),
        broker.port,
        "receivers",
        "hostile-mqtt",
        &conninfo,
    );
    let url = format!("http://127.0.0.1:{}/batches", web.http_port.expect("port"));

    // Something landed first, so that "nothing written" means something.
    let (status, answer) = post(&url, &full("gw-h", 1, 1, 10));
    assert_eq!(status, 200, "a good batch: {answer}");
    let topic = "fixgate/gw-m/batches";
    let (ok, err) = mosquitto_pub_output(broker.port, topic, &full("gw-m", 1, 1, 10), None, &[]);
    assert!(ok, "mosquitto_pub: {err}");
    wait_for("gw-m's first batch to land", STEP, || {
        pg.count("SELECT count(*) FROM fixgate.fix WHERE gateway = 'gw-m'") == Some(10)
    });
    let before = db_state(&pg);
    assert!(
        before.contains("gw-h") && before.contains("gw-m"),
        "{before}"
    );

    // HTTP: each one answered 4xx with the reason, counted, nothing written.
    for (n, (what, bytes)) in hostile("gw-h").into_iter().enumerate() {
        let (status, answer) = post(&url, &bytes);
        let want = if what == "huge" { 413 } else { 400 };
        assert_eq!(status, want, "{what}: {answer}\n{}", web.log());
        assert!(answer["error"].is_string(), "{what}: answer {answer}");
        // Counted when the receiver has taken it in, which may come just
        // after the answer (a 413 is sent before the body is read).
        wait_for(&format!("{what} to be counted"), STEP, || {
            web.batches("refused") >= (n + 1) as f64
        });
        assert_eq!(
            web.batches("refused"),
            (n + 1) as f64,
            "{what}: refused batches counted\n{}",
            web.log()
        );
        assert_eq!(db_state(&pg), before, "{what} over HTTP wrote something");
    }
    // MQTT: refused and acknowledged (a redelivery could not help), so
    // the receiver goes on with the next batch and never sees them again.
    let mut hostile_mqtt = hostile("gw-m");
    // Another gateway's batch on gw-m's topic: one login writing for another.
    hostile_mqtt.push(("another gateway's batch", full("gw-h", 95, 11, 20)));
    let refused = hostile_mqtt.len() as f64;
    for (what, bytes) in &hostile_mqtt {
        let (ok, err) = mosquitto_pub_output(broker.port, topic, bytes, None, &[]);
        assert!(ok, "mosquitto_pub {what}: {err}");
    }
    wait_for("the MQTT receiver to refuse them all", STEP, || {
        sub.batches("refused") >= refused
    });
    assert_eq!(sub.batches("refused"), refused, "{}", sub.log());
    assert_eq!(
        db_state(&pg),
        before,
        "hostile batches over MQTT wrote something"
    );
    // A good batch after them lands: they did not block the session.
    let (ok, err) = mosquitto_pub_output(broker.port, topic, &full("gw-m", 2, 11, 20), None, &[]);
    assert!(ok, "mosquitto_pub: {err}");
    wait_for("gw-m's batch after the hostile ones to land", STEP, || {
        pg.count("SELECT count(*) FROM fixgate.fix WHERE gateway = 'gw-m'") == Some(20)
    });
    // Restarted under the same client id: the broker redelivers nothing
    // refused, because it was acknowledged.
    sub.terminate();
    sub.restart();
    let (ok, err) = mosquitto_pub_output(broker.port, topic, &full("gw-m", 3, 21, 30), None, &[]);
    assert!(ok, "mosquitto_pub: {err}");
    wait_for("gw-m's batch after the restart to land", STEP, || {
        pg.count("SELECT count(*) FROM fixgate.fix WHERE gateway = 'gw-m'") == Some(30)
    });
    assert_eq!(
        sub.batches("refused"),
        0.0,
        "refused batches came again after a restart: not acknowledged\n{}",
        sub.log()
    );
    assert_eq!(gaps(&pg).trim(), "", "fixgate.gaps");

    // Last, since it changes the state if it fails: a gateway's seqs
    // again, with other fixes (a replay under its name).
    // They are accounted for already, so nothing of them is written
    // (one row per seq stays, the latest positions stay).
    let after = db_state(&pg);
    let replay = wire::encode(&Batch {
        gateway: "gw-m".into(),
        id: 92,
        kind: BatchKind::Live,
        first_seq: 1,
        last_seq: 10,
        records: (1..=10)
            .map(|seq| {
                let mut r = record(seq);
                if let Event::Position(p) = &mut r.event {
                    p.fix.time += chrono::Duration::days(1);
                    p.fix.lat += 0.5;
                }
                r
            })
            .collect(),
    });
    let (status, answer) = post(&url, &replay);
    assert!(
        status == 200 || status == 400,
        "a replay of gw-m's seqs: {status} {answer}"
    );
    assert_eq!(
        db_state(&pg),
        after,
        "a replay of gw-m's seqs wrote something"
    );
}
