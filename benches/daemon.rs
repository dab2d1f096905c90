//! Whole-daemon benchmark on the real binary: serial (pty) → SSE latency,
//! and resident memory idle and with ten receivers.
//!
//! `cargo bench --bench daemon`. Latency is from the `write` of an epoch's
//! last sentence into the pty master to the arrival of its `position` event
//! at an SSE client over loopback (the client parses on a thread of its own,
//! which adds a few microseconds). Memory is `VmRSS`/`VmHWM` of the daemon
//! from `/proc`. Run as a test (`cargo test --benches`) it takes few samples.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DurationRound, Utc};
use common::{Daemon, PtyReceiver, SseClient, machine, simulated_nmea};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    println!("machine: {}", machine());
    latency(if full { 600 } else { 20 });
    memory(if full {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(3)
    });
}

fn serial(device: &str, link: &Path) -> String {
    format!(
        "[[serial]]\ndevice = \"{device}\"\npath = \"{}\"\nbaud = 115200\n",
        link.display()
    )
}

/// Epochs of one receiver, one string each, dated from now on at 1 s steps.
fn epochs(n: usize, seed: u64) -> Vec<String> {
    let start = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .expect("now");
    let text = simulated_nmea(n, start, seed);
    // Every epoch starts with its RMC.
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.get(3..6) == Some("RMC") || out.is_empty() {
            out.push(String::new());
        }
        if let Some(last) = out.last_mut() {
            last.push_str(line);
            last.push_str("\r\n");
        }
    }
    out
}

fn latency(samples: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let link = dir.path().join("gps0");
    let mut receiver = PtyReceiver::plug(&link);
    let daemon = Daemon::start(dir.path(), &serial("gps-1", &link));
    let client = SseClient::connect(daemon.port, "", None);
    wait(|| daemon.metric("fixgate_serial_connected") == Some(1.0));

    // Warm-up epochs let the decoder learn the receiver's cycle first; until
    // it has, an epoch is only closed by the next one.
    let warmup = 5;
    let all = epochs(samples + warmup, 1);
    for epoch in &all[..warmup] {
        receiver.send(epoch.as_bytes());
        std::thread::sleep(Duration::from_millis(100));
    }
    while client.next_event(Duration::from_millis(500)).is_some() {}
    let mut micros = Vec::with_capacity(samples);
    for epoch in &all[warmup..] {
        receiver.send(epoch.as_bytes());
        let sent = Instant::now();
        let event = client
            .take("position", 1, Duration::from_secs(5))
            .pop()
            .expect("event");
        let took = sent.elapsed();
        assert_eq!(event.json()["device"], "gps-1");
        micros.push(took.as_micros() as u64);
        // A 10 Hz receiver.
        std::thread::sleep(Duration::from_millis(100).saturating_sub(took));
    }
    micros.sort_unstable();
    let pct = |p: f64| micros[((micros.len() - 1) as f64 * p).round() as usize];
    println!(
        "pty → SSE latency over {} epochs: p50 {} µs, p99 {} µs, max {} µs",
        micros.len(),
        pct(0.50),
        pct(0.99),
        micros[micros.len() - 1]
    );
}

fn memory(run: Duration) {
    let dir = tempfile::tempdir().expect("temp dir");
    let idle = Daemon::start(dir.path(), "");
    std::thread::sleep(Duration::from_secs(2));
    let (rss, hwm) = idle.memory_kib();
    println!("RSS idle (no sources): {rss} KiB (peak {hwm} KiB)");
    drop(idle);

    let dir = tempfile::tempdir().expect("temp dir");
    let mut receivers = Vec::new();
    let mut config = String::new();
    for i in 0..10 {
        let link = dir.path().join(format!("gps{i}"));
        receivers.push(PtyReceiver::plug(&link));
        config.push_str(&serial(&format!("gps-{i}"), &link));
    }
    let daemon = Daemon::start(dir.path(), &config);
    let client = SseClient::connect(daemon.port, "", None);
    wait(|| daemon.metric("fixgate_serial_connected").unwrap_or(0.0) >= 10.0);
    let ticks = (run.as_millis() / 100) as usize;
    let streams: Vec<Vec<String>> = (0..10).map(|i| epochs(ticks, 100 + i)).collect();
    for tick in 0..ticks {
        let started = Instant::now();
        for (receiver, stream) in receivers.iter_mut().zip(&streams) {
            receiver.send(stream[tick].as_bytes());
        }
        std::thread::sleep(Duration::from_millis(100).saturating_sub(started.elapsed()));
    }
    let arrived = daemon.head();
    let (rss, hwm) = daemon.memory_kib();
    println!(
        "RSS with 10 receivers at 10 Hz and 1 SSE client after {} s: {rss} KiB (peak {hwm} KiB), head seq {arrived}",
        run.as_secs()
    );
    drop(client);
}

fn wait(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}
