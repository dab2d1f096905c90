//! A store directory whose files were damaged after the daemon wrote them:
//! the daemon starts anyway, keeps the damaged directory beside the new one
//! (`store.damaged-<time>`), counts it, and takes and serves new fixes.
//!
//! sled 0.34 itself reports none of the damage below: it takes a bad
//! checksum or a short file for the torn end of a crash and opens what comes
//! before, silently losing the rest (thousands of fixes here). The store
//! notices because the flusher records the durable head beside the log.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::{Daemon, SseClient, get};

/// Posts `n` fixes of one device, a second apart, and waits until they are stored.
fn post_fixes(daemon: &Daemon, device: &str, n: usize, start_s: i64) {
    let start = Utc.with_ymd_and_hms(2026, 2, 1, 8, 0, 0).unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .http_status_as_error(false)
        .build()
        .into();
    let before = daemon.head();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let items: Vec<String> = chunk
            .iter()
            .map(|&i| {
                let t = (start + chrono::Duration::seconds(start_s + i as i64)).timestamp_millis();
                let lat = 52.0 + i as f64 * 1e-4 + (i % 7) as f64 * 3e-6;
                format!(r#"{{"device":"{device}","time":{t},"lat":{lat},"lon":5.1}}"#)
            })
            .collect();
        let status = agent
            .post(format!("http://127.0.0.1:{}/api/fixes", daemon.port))
            .header("Content-Type", "application/json")
            .send(format!("[{}]", items.join(",")))
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        assert_eq!(status, 200);
    }
    let want = before + n as u64;
    assert!(daemon.wait_head(want, Duration::from_secs(20)) >= want);
}

/// A store written by the daemon (9,000 fixes: compacted segments and a raw
/// tail), stopped cleanly.
fn written_store(dir: &Path) -> (PathBuf, u64) {
    let daemon = Daemon::start(dir, "");
    post_fixes(&daemon, "van-1", 9_000, 0);
    let head = daemon.head();
    assert!(daemon.terminate().success());
    (dir.join("store"), head)
}

/// The damaged directories kept beside `store`.
fn quarantined(store: &Path) -> Vec<PathBuf> {
    let name = store.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::read_dir(store.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{name}.damaged-")))
        })
        .collect()
}

/// After damage: the daemon runs, counted the quarantine once, kept the old
/// directory, and takes and serves new fixes.
fn assert_recovers(daemon: Daemon, store: &Path) {
    let aside = quarantined(store);
    assert_eq!(
        aside.len(),
        1,
        "the damaged store is kept beside: {aside:?}\n{}",
        daemon.log_text()
    );
    assert!(aside[0].join("db").exists(), "kept whole for diagnosis");
    assert_eq!(daemon.metric("fixgate_store_quarantined_total"), Some(1.0));
    let log = daemon.log_text();
    let cause = log
        .lines()
        .find(|l| l.contains("THE STORE WAS DAMAGED"))
        .expect("logged loudly");
    eprintln!("{}", &cause[cause.find("Cause").unwrap_or(0)..]);
    let feed = SseClient::connect(daemon.port, "", None);
    post_fixes(&daemon, "van-2", 300, 100_000);
    assert_eq!(
        feed.take("position", 300, Duration::from_secs(20)).len(),
        300
    );
    let devices = get(daemon.port, "/api/devices").unwrap();
    assert!(
        devices.contains("van-2") && !devices.contains("van-1"),
        "{devices}"
    );
    assert!(daemon.terminate().success());
}

/// Overwrites `len` bytes at the middle of `path` with a pattern.
fn scribble(path: &Path, len: usize) {
    let size = std::fs::metadata(path).unwrap().len();
    scribble_at(path, size / 2, len);
}

/// Overwrites `len` bytes of `path` at `offset` with a pattern.
fn scribble_at(path: &Path, offset: u64, len: usize) {
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(&vec![0x5a; len]).unwrap();
    file.sync_all().unwrap();
}

#[test]
fn bytes_overwritten_in_the_middle_of_the_log_are_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = written_store(dir.path());
    scribble(&store.join("db"), 4096);
    assert_recovers(Daemon::start(dir.path(), ""), &store);
}

#[test]
fn a_truncated_log_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = written_store(dir.path());
    let db = store.join("db");
    let size = std::fs::metadata(&db).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(size / 3)
        .unwrap();
    assert_recovers(Daemon::start(dir.path(), ""), &store);
}

/// Seen here, run to run: sled drops everything (taken for damage by the
/// durable mark), panics while opening (taken for damage too), or the bytes
/// hit space sled no longer used and nothing is lost.
#[test]
fn bytes_overwritten_at_the_start_of_the_log_are_quarantined_unless_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let (store, head) = written_store(dir.path());
    scribble_at(&store.join("db"), 0, 512);
    let daemon = Daemon::start(dir.path(), "");
    if daemon.metric("fixgate_store_quarantined_total").is_none() {
        assert_eq!(daemon.head(), head, "nothing lost:\n{}", daemon.log_text());
        assert!(get(daemon.port, "/api/devices").unwrap().contains("van-1"));
        return;
    }
    assert_recovers(daemon, &store);
}

/// Copies a store directory (sled's files and the durable mark).
fn copy_store(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            copy_store(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).unwrap();
        }
    }
}

/// Flips one bit in each of `n` bytes of `path` from `offset` on.
fn flip_bits(path: &Path, offset: u64, n: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    for i in 0..n {
        let at = (offset as usize + i * 37) % bytes.len();
        bytes[at] ^= 1 << (i % 8);
    }
    std::fs::write(path, bytes).unwrap();
}

/// Damage in the tail of sled's log, to events flushed a moment before a
/// crash, used to go unnoticed: the durable mark was only written every
/// 10 s, so sled's silent drop of the damaged tail looked like an intact
/// log, the flushed events were gone without a word, and the next fix got a
/// number already handed out. Now every group commit records the durable
/// head and reserves numbers ahead, so each trial either keeps every flushed
/// event or quarantines the store loudly, and never reuses a number.
#[test]
fn tail_damage_after_a_crash_never_loses_flushed_events_silently_nor_reuses_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "");
    post_fixes(&daemon, "van-1", 6_000, 0);
    let head = daemon.head();
    // Everything flushed (and, before the fix, no 10 s mark yet).
    assert_eq!(
        daemon.wait_metric("fixgate_store_durable_seq", &[], head as f64),
        Some(head as f64)
    );
    // A crash: no clean shutdown writes anything more.
    daemon.kill();
    let original = dir.path().join("store");
    let size = std::fs::metadata(original.join("db")).unwrap().len();
    let trials: &[(&str, f64)] = &[
        ("cut", 0.90),
        ("cut", 0.95),
        ("cut", 0.99),
        ("flip", 0.85),
        ("flip", 0.93),
        ("flip", 0.98),
    ];
    let (mut caught, mut intact) = (0, 0);
    for &(damage, at) in trials {
        let trial = tempfile::tempdir().unwrap();
        let store = trial.path().join("store");
        copy_store(&original, &store);
        let offset = (size as f64 * at) as u64;
        match damage {
            "cut" => std::fs::OpenOptions::new()
                .write(true)
                .open(store.join("db"))
                .unwrap()
                .set_len(offset)
                .unwrap(),
            _ => flip_bits(&store.join("db"), offset, 6),
        }
        let restarted = Daemon::start(trial.path(), "");
        let feed = SseClient::connect(restarted.port, "", None);
        if restarted.metric("fixgate_store_quarantined_total") == Some(1.0) {
            caught += 1;
            assert!(restarted.log_text().contains("THE STORE WAS DAMAGED"));
        } else {
            intact += 1;
            assert_eq!(
                restarted.wait_metric("fixgate_store_buffered_records", &[], 6_000.0),
                Some(6_000.0),
                "{damage} at {at}: flushed events lost without a word\n{}",
                restarted.log_text()
            );
        }
        post_fixes(&restarted, "van-3", 1, 50_000);
        let new = feed.take("position", 1, Duration::from_secs(20));
        assert_eq!(new.len(), 1, "{damage} at {at}");
        assert!(
            new[0].seq() > head,
            "{damage} at {at}: number {} was handed out before (head {head})",
            new[0].seq()
        );
        restarted.kill();
    }
    eprintln!("tail damage: {caught} caught and quarantined, {intact} harmless");
}
