//! Store and forward on the real binaries: a backlog built up while the
//! uplink was off, then drained to Debian's mosquitto over loopback and
//! received by `fixgate-receive`.
//!
//! `cargo bench --bench uplink` (1,000,000 fixes of 100 vehicles at 1 Hz).
//! Reports bytes on disk per buffered fix (the store directory after a
//! clean stop), the restart time with that backlog (spawn to `/healthz`),
//! the drain rate (every fix printed by the receiver, from the moment the
//! daemon answered) and bytes per fix on the wire (`fixgate_uplink_bytes_total`).
//! Run as a test (`cargo test --bench uplink`) it uses 5,000 fixes and
//! asserts that every one arrived.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::{Daemon, Mosquitto, get, machine};

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Posts `n` fixes of `devices` vehicles, 1 Hz each, in requests of 1,000.
fn fill(port: u16, n: usize, devices: usize) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let base = chrono::Utc::now().timestamp_millis() / 1000 * 1000 - 7 * 86_400_000;
    let mut sent = 0;
    let mut body = String::with_capacity(200_000);
    while sent < n {
        body.clear();
        body.push('[');
        let batch = 1000.min(n - sent);
        for k in 0..batch {
            let j = sent + k;
            let (d, i) = (j % devices, j / devices);
            // A vehicle driving a slow curve at ~10 m/s with GPS-like jitter.
            let t = i as f64;
            let lat = 52.0 + d as f64 * 0.01 + t * 6e-5 + ((j * 7919) % 13) as f64 * 1e-7;
            let lon = 5.0 + (t * 0.001).sin() * 0.05 + ((j * 104_729) % 11) as f64 * 1e-7;
            if k > 0 {
                body.push(',');
            }
            body.push_str(&format!(
                r#"{{"device":"bus-{d}","time":{},"lat":{lat:.7},"lon":{lon:.7},"alt":{:.1},"speed":{:.2},"course":{:.1},"hdop":{:.2},"sats":{}}}"#,
                base + i as i64 * 1000,
                20.0 + (t * 0.01).sin() * 5.0,
                10.0 + (t * 0.1).sin(),
                (t * 0.05) % 360.0,
                0.8 + (i % 5) as f64 * 0.05,
                8 + i % 3,
            ));
        }
        body.push(']');
        agent
            .post(format!("http://127.0.0.1:{port}/api/fixes"))
            .header("Content-Type", "application/json")
            .send(&body)
            .expect("POST /api/fixes");
        sent += batch;
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n, devices) = if full { (1_000_000, 100) } else { (5_000, 10) };
    let dir = tempfile::tempdir().expect("tempdir");

    // 1. The backlog: fixes taken in while no uplink was configured.
    let daemon = Daemon::start(
        dir.path(),
        "[gateway]\nid = \"bench-gw\"\n\n[http]\nmax_body = 16777216\n",
    );
    let started = Instant::now();
    fill(daemon.port, n, devices);
    let base = daemon.base();
    daemon.wait_head(base + n as u64, Duration::from_secs(60));
    let ingest = started.elapsed();
    let (config, port) = (daemon.config.clone(), daemon.port);
    assert!(daemon.terminate().success());
    let on_disk = dir_size(&dir.path().join("store"));

    // 2. The uplink turned on, towards mosquitto and a receiver.
    let broker = Mosquitto::start(dir.path());
    let receiver = Receiver::mqtt(dir.path(), broker.port, "bench-cloud");
    std::thread::sleep(Duration::from_millis(500));
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!(
            "{text}\n[uplink]\ntransport = \"mqtt\"\nhost = \"127.0.0.1\"\nport = {}\nbacklog_rate = 10000000\nmax_age = \"200ms\"\n",
            broker.port
        ),
    )
    .expect("config");
    let spawned = Instant::now();
    let daemon = Daemon::spawn(dir.path(), config, port);
    let restart = spawned.elapsed();
    let answered = Instant::now();
    let records = receiver.wait_until(Duration::from_secs(600), |r| r.len() >= n);
    let drain = answered.elapsed();
    assert!(
        records.len() >= n,
        "only {} of {n} fixes arrived upstream",
        records.len()
    );
    let positions = records.iter().filter(|r| r["event"] == "position").count();
    let wire = daemon.metric("fixgate_uplink_bytes_total").unwrap_or(0.0);
    let metrics = get(port, "/metrics").unwrap_or_default();
    let resent = metrics
        .lines()
        .find(|l| l.starts_with("fixgate_uplink_resent_total"))
        .unwrap_or("fixgate_uplink_resent_total 0")
        .to_owned();
    drop(daemon);

    println!("uplink bench on {}", machine());
    println!(
        "backlog: {n} fixes of {devices} vehicles at 1 Hz, ingested over HTTP in {ingest:.2?}"
    );
    println!(
        "on disk after a clean stop: {:.1} B/fix ({:.1} MB)",
        on_disk as f64 / n as f64,
        on_disk as f64 / 1e6
    );
    println!("restart with the backlog (spawn to /healthz): {restart:.2?}");
    println!(
        "drain to mosquitto and fixgate-receive: {positions} positions in {drain:.2?} = {:.0} fixes/s",
        positions as f64 / drain.as_secs_f64()
    );
    println!(
        "on the wire: {:.2} B/fix ({:.1} MB in all); {resent}",
        wire / n as f64,
        wire / 1e6
    );
}
