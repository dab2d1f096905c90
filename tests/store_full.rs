//! The disk budget and a full disk, on a small tmpfs, with the real daemon
//! taking fixes over HTTP: the store stays under its cap by thinning and
//! dropping, a disk filled by someone else sheds fixes without a crash, and a
//! restart reads back everything held. Skipped (with a message) where a
//! tmpfs cannot be mounted: that needs root.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use common::{Daemon, SseClient, dir_bytes, free_port, get};
use fixgate::fix::{DeviceId, Event, Position};

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB at `path`; `None` (after saying why) when
    /// this process may not mount.
    fn mount(path: &Path, mib: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).expect("mount point");
        // Only root may mount; anyone else is told so by mount itself.
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path)
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs (root needed): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                return None;
            }
            Err(err) => {
                eprintln!("SKIPPED: cannot run mount: {err}");
                return None;
            }
        }
        Some(Tmpfs {
            path: path.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Starts the daemon with a store on `store` under these `[store]` keys.
fn start(dir: &Path, store: &Path, store_keys: &str) -> Daemon {
    let port = free_port();
    let config = dir.join("fixgate.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{}\"\nflush_interval = \"100ms\"\n{store_keys}\n\n[feed]\nlisten = \"127.0.0.1:{port}\"\n\n[log]\nlevel = \"info\"\n\n[mqtt]\nbroker = \"off\"\n\n[filter]\nmax_age = false\n",
            store.display()
        ),
    )
    .expect("config");
    Daemon::spawn(dir, config, port)
}

/// Fixes of a simulated fleet as JSON arrays of `per_post`, one second apart
/// per vehicle, starting `seconds` seconds into a day long past.
struct Fleet {
    fleet: fixgate::sim::Fleet,
    ids: Vec<DeviceId>,
    second: i64,
}

impl Fleet {
    fn new(vehicles: usize) -> Self {
        Self {
            fleet: fixgate::sim::Fleet::new(vehicles, (52.0907, 5.1214), 9),
            ids: (1..=vehicles)
                .map(|i| DeviceId::new(&format!("bus-{i}")).unwrap())
                .collect(),
            second: 0,
        }
    }

    /// The next `epochs` seconds of every vehicle as one JSON array.
    fn next_post(&mut self, epochs: usize) -> String {
        let start = Utc.with_ymd_and_hms(2026, 1, 5, 6, 0, 0).unwrap();
        let mut items = Vec::new();
        for _ in 0..epochs {
            let time = start + chrono::Duration::seconds(self.second);
            self.second += 1;
            for (fix, id) in self.fleet.step(1.0, time).into_iter().zip(&self.ids) {
                let event = Event::Position(Position::new(id.clone(), fix));
                items.push(event.to_json().unwrap());
            }
        }
        format!("[{}]", items.join(","))
    }
}

fn post(port: u16, body: &str) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .post(format!("http://127.0.0.1:{port}/api/fixes"))
        .header("Content-Type", "application/json")
        .send(body)
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Every event id the feed replays from the oldest record up to `head`,
/// checking that they only ever increase.
fn replay(daemon: &Daemon, head: u64) -> Vec<u64> {
    let base = daemon.base();
    let client = SseClient::connect(daemon.port, "", Some(&base.to_string()));
    let mut seqs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seqs.last().is_none_or(|&s| s < head) {
        assert!(
            Instant::now() < deadline,
            "replay stalled at {:?}",
            seqs.last()
        );
        let Some(event) = client.next_event(Duration::from_secs(10)) else {
            panic!("replay stopped at {:?} of {head}", seqs.last());
        };
        if event.event.as_deref() == Some("reset") {
            panic!("unexpected reset: {}", event.data);
        }
        let seq = event.seq();
        assert!(
            seqs.last().is_none_or(|&last| seq > last),
            "{seq} after {:?}",
            seqs.last()
        );
        seqs.push(seq);
    }
    seqs
}

/// The head once two reads a second apart agree: the writer has committed
/// everything it was given.
fn settled_head(daemon: &Daemon) -> u64 {
    let mut head = daemon.head();
    for _ in 0..30 {
        std::thread::sleep(Duration::from_secs(1));
        let now = daemon.head();
        if now == head {
            return head;
        }
        head = now;
    }
    panic!("the head kept moving: {head}");
}

const MIB: u64 = 1024 * 1024;

#[test]
fn the_store_never_grows_past_its_cap_and_a_restart_reads_back_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("fs"), 32) else {
        return;
    };
    let store = fs.path.join("store");
    let cap = 6 * MIB;
    // An uplink that never connects: every record waits for it, so space
    // comes from thinning and dropping, not from deleting history.
    let keys = format!(
        "max_size_mb = 6\nmin_free_mb = 1\nthin = \"douglas-peucker\"\nthin_tolerance = 10.0\n\n[uplink]\ntransport = \"mqtt\"\nhost = \"127.0.0.1\"\nport = {}",
        free_port()
    );
    let mut daemon = start(dir.path(), &store, &keys);
    let mut fleet = Fleet::new(20);
    // 1,000,000 fixes: about 16 MiB in sled without a budget, 2.7 times the cap.
    let mut largest = 0;
    for i in 0..1000 {
        // 1,000 fixes a post, the intake's most.
        assert_eq!(post(daemon.port, &fleet.next_post(50)), 200, "post {i}");
        if i % 20 == 19 {
            largest = largest.max(dir_bytes(&store));
            assert!(
                largest <= cap,
                "the store takes {largest} B, over its cap of {cap} B"
            );
        }
    }
    let accepted = daemon.wait_metric("fixgate_fixes_accepted_total", &[], 1_000_000.0);
    assert_eq!(accepted, Some(1_000_000.0), "{}", daemon.log_text());
    // Let the budget catch up with the last posts. The head is read after
    // that and once it holds still: a fix is counted accepted when it passes
    // the filters, before the writer commits its batch (up to 256), so a
    // head read at once can miss the last batch (1,000 = 3 x 256 + 232).
    std::thread::sleep(Duration::from_secs(6));
    let head = settled_head(&daemon);
    largest = largest.max(dir_bytes(&store));
    assert!(
        largest <= cap,
        "the store takes {largest} B, over its cap of {cap} B"
    );
    let thinned = daemon.metric("fixgate_store_thinned_total").unwrap_or(0.0);
    let dropped = daemon
        .metric_with("fixgate_store_dropped_total", &[("kind", "position")])
        .unwrap_or(0.0);
    assert!(
        thinned > 0.0 && dropped > 0.0,
        "thinned {thinned}, dropped {dropped}"
    );
    assert_eq!(
        daemon.metric("fixgate_store_budget_bytes"),
        Some(cap as f64)
    );
    let size = daemon
        .metric("fixgate_store_size_bytes")
        .unwrap_or(f64::MAX);
    assert!(size <= cap as f64, "sled counts {size} B");
    assert!(daemon.child_running(), "{}", daemon.log_text());
    assert!(get(daemon.port, "/api/devices").unwrap().contains("bus-20"));
    // One line per change of state (normal, thinning, dropping), not per pass.
    let changes = daemon.log_text().matches("store budget: ").count();
    assert!((1..=3).contains(&changes), "{changes} state changes logged");
    eprintln!(
        "cap {cap} B: largest {largest} B on disk; thinned {thinned}, dropped {dropped} of 1,000,000"
    );

    assert!(daemon.terminate().success());
    let daemon = start(dir.path(), &store, &keys);
    assert_eq!(daemon.metric("fixgate_store_quarantined_total"), None);
    let held = daemon
        .wait_metric("fixgate_store_buffered_records", &[], 1.0)
        .unwrap();
    let seqs = replay(&daemon, head);
    assert_eq!(seqs.len() as f64, held, "everything held reads back");
    let devices = get(daemon.port, "/api/devices").unwrap();
    assert_eq!(devices.matches("\"device\":\"bus-").count(), 20);
}

#[test]
fn a_disk_filled_by_others_sheds_fixes_keeps_serving_and_a_restart_reopens_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("fs"), 24) else {
        return;
    };
    let store = fs.path.join("store");
    let keys = "max_size_mb = 64\nmin_free_mb = 1";
    let mut daemon = start(dir.path(), &store, keys);
    let mut fleet = Fleet::new(10);
    // Fewer fixes than a segment: the writer's raw tail, which the budget
    // never touches, so all of them must survive.
    assert_eq!(post(daemon.port, &fleet.next_post(20)), 200);
    daemon.wait_metric("fixgate_fixes_accepted_total", &[], 200.0);
    // Wait for a group commit, then note what is durable.
    std::thread::sleep(Duration::from_millis(500));
    let before_head = settled_head(&daemon);
    let before = replay(&daemon, before_head);
    assert_eq!(
        before.len(),
        210,
        "200 positions and 10 devices coming online"
    );

    // Someone else fills the file system to the last byte, before sled has
    // room of its own to reuse: its next write needs a new block.
    let ballast = fs.path.join("ballast");
    fill(&ballast);
    let mut posts = 0;
    while daemon
        .metric_with("fixgate_fixes_dropped_total", &[("reason", "store_full")])
        .is_none()
    {
        assert!(
            posts < 300,
            "the store never reported a full disk:\n{}",
            daemon.log_text()
        );
        assert_eq!(post(daemon.port, &fleet.next_post(100)), 200);
        posts += 1;
    }
    // Degraded, not down: the feed serves, intake answers, the daemon runs.
    for _ in 0..5 {
        assert_eq!(post(daemon.port, &fleet.next_post(10)), 200);
    }
    let devices = get(daemon.port, "/api/devices")
        .unwrap_or_else(|e| panic!("/api/devices on a full disk: {e}\n{}", daemon.log_text()));
    assert!(devices.contains("bus-10"));
    let health = get(daemon.port, "/healthz").unwrap_err();
    assert!(health.starts_with("503"), "{health}");
    assert!(daemon.child_running(), "{}", daemon.log_text());
    let log = daemon.log_text();
    assert_eq!(
        log.matches("DISK IS FULL").count(),
        1,
        "logged once:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");

    // Room again: the daemon restarts itself (exits with an error for the
    // service manager) to reopen sled, which refuses writes after ENOSPC.
    std::fs::remove_file(&ballast).unwrap();
    let log_path = daemon.log_path();
    let status = daemon.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "exit status {status}");
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(log.contains("restarting to reopen the store"), "{log}");
    eprintln!(
        "{}",
        log.lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let daemon = start(dir.path(), &store, keys);
    assert_eq!(daemon.metric("fixgate_store_quarantined_total"), None);
    let after: Vec<u64> = replay(&daemon, before_head)
        .into_iter()
        .filter(|&s| s <= before_head)
        .collect();
    assert_eq!(
        after, before,
        "everything durable before the disk filled reads back"
    );
    let head = daemon.head();
    assert_eq!(post(daemon.port, &fleet.next_post(10)), 200);
    assert!(daemon.wait_head(head + 100, Duration::from_secs(10)) >= head + 100);
}

/// Writes `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0xa5u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    let _ = file.flush();
}
