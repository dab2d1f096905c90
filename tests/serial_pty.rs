//! Serial receivers through real pseudo-terminals: the daemon opens the pty's
//! slave side by a stable symlink (as it would `/dev/serial/by-id/...`), the
//! test plays the receiver on the master side. Unplugging is closing the
//! master; replugging is a new pty behind the same symlink.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DurationRound, Utc};
use common::{Daemon, PtyReceiver, SseClient, simulated_nmea};

const WAIT: Duration = Duration::from_secs(20);

fn serial_source(link: &Path, extra: &str) -> String {
    format!(
        "[[serial]]\ndevice = \"gps-1\"\npath = \"{}\"\nbaud = 9600\nreconnect_min = \"100ms\"\nreconnect_max = \"400ms\"\n{extra}\n",
        link.display()
    )
}

/// A daemon with one serial receiver `gps-1` behind the symlink `link`, and a feed client.
struct Rig {
    link: std::path::PathBuf,
    daemon: Daemon,
    client: SseClient,
    // Last: the store and the pty link live here until the daemon is gone.
    _dir: tempfile::TempDir,
}

impl Rig {
    /// Starts the daemon; with `plugged`, a receiver is behind the link and
    /// the port is open before this returns, so nothing written is missed.
    fn start(plugged: bool, extra: &str) -> (Rig, Option<PtyReceiver>) {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("gps0");
        let receiver = plugged.then(|| PtyReceiver::plug(&link));
        let daemon = Daemon::start(dir.path(), &serial_source(&link, extra));
        let client = SseClient::connect(daemon.port, "", None);
        let rig = Rig {
            link,
            daemon,
            client,
            _dir: dir,
        };
        if plugged {
            rig.wait_connected("port open");
        }
        (rig, receiver)
    }

    fn wait_connected(&self, what: &str) {
        wait_for(
            || self.daemon.metric("fixgate_serial_connected") == Some(1.0),
            what,
        );
    }
}

/// The `lat` of every RMC in `text`, in degrees, as a receiver would report it.
fn rmc_latitudes(text: &str) -> Vec<f64> {
    text.lines()
        .filter(|l| l.get(3..6) == Some("RMC"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let (deg, min) = f.get(3)?.split_at(2);
            let lat = deg.parse::<f64>().ok()? + min.parse::<f64>().ok()? / 60.0;
            Some(if f.get(4) == Some(&"S") { -lat } else { lat })
        })
        .collect()
}

#[test]
fn fixes_from_a_pty_receiver_reach_the_feed() {
    let (rig, receiver) = Rig::start(true, "");
    let mut receiver = receiver.expect("plugged");
    let client = &rig.client;

    let sent = receiver.send_epochs(10, 7, 0);
    let expected = rmc_latitudes(&sent);
    // The last epoch may wait for the decoder to learn the cycle; nine must come.
    let events = client.take("position", 9, WAIT);
    for (event, lat) in events.iter().zip(&expected) {
        let v = event.json();
        assert_eq!(v["device"], "gps-1");
        let got = v["lat"].as_f64().expect("lat");
        assert!((got - lat).abs() < 1e-6, "lat {got} sent {lat}");
    }
}

#[test]
fn garbage_on_the_line_is_counted_and_good_sentences_still_arrive() {
    let (rig, receiver) = Rig::start(true, "");
    let mut receiver = receiver.expect("plugged");
    let Rig { daemon, client, .. } = &rig;

    let start = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .unwrap();
    let text = simulated_nmea(12, start, 9);
    let mut noisy = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match i % 7 {
            // Binary noise between sentences, as a receiver switching to UBX gives.
            2 => noisy.extend_from_slice(&[0xb5, 0x62, 0x01, 0x07, 0x00, 0xff, 0x13, b'\n']),
            // A sentence whose checksum is off by one.
            4 => noisy.extend_from_slice(
                b"$GPGGA,120000.00,5205.44,N,00507.28,E,1,08,0.9,10.0,M,46.0,M,,*00\r\n",
            ),
            // A line with no end that runs past any sane sentence length.
            5 => noisy.extend(std::iter::repeat_n(b'A', 3000)),
            _ => {}
        }
        noisy.extend_from_slice(line.as_bytes());
        noisy.extend_from_slice(b"\r\n");
    }
    receiver.send(&noisy);

    let events = client.take("position", 8, WAIT);
    assert!(events.iter().all(|e| e.json()["device"] == "gps-1"));
    wait_for(
        || daemon.metric("fixgate_nmea_rejected_total").unwrap_or(0.0) >= 3.0,
        "rejections counted",
    );
    let bad_checksums = daemon
        .metric_with(
            "fixgate_nmea_rejected_total",
            &[("device", "gps-1"), ("reason", "bad_checksum")],
        )
        .unwrap_or(0.0);
    assert!(
        bad_checksums >= 1.0,
        "bad checksum counted:\n{}",
        daemon.log_text()
    );
    let log = daemon.log_text();
    assert!(
        log.contains("NMEA input rejected: bad_checksum"),
        "bad input is logged with its reason:\n{log}"
    );
}

#[test]
fn an_unplugged_receiver_is_reopened_when_it_comes_back() {
    let (rig, receiver) = Rig::start(true, "");
    let mut receiver = receiver.expect("plugged");
    let Rig { daemon, client, .. } = &rig;
    receiver.send_epochs(5, 11, -60);
    client.take("position", 4, WAIT);

    // Unplug: the master goes away, the daemon's reads fail.
    drop(receiver);
    wait_for(
        || {
            daemon
                .metric("fixgate_serial_disconnects_total")
                .unwrap_or(0.0)
                >= 1.0
        },
        "disconnect counted",
    );
    assert_eq!(daemon.metric("fixgate_serial_connected"), Some(0.0));
    // Away for a while: reopen attempts fail and back off (100ms doubling to 400ms).
    // The window the attempts are counted over, not a wait for a condition.
    std::thread::sleep(Duration::from_secs(2));
    let failures = daemon
        .metric("fixgate_serial_open_failures_total")
        .unwrap_or(0.0);
    assert!(
        (1.0..=12.0).contains(&failures),
        "retries back off instead of spinning: {failures} failed opens in 2 s\n{}",
        daemon.log_text()
    );

    // Replug: a new receiver behind the same name.
    let mut receiver = PtyReceiver::plug(&rig.link);
    rig.wait_connected("port reopened");
    let sent = receiver.send_epochs(6, 12, 0);
    let expected = rmc_latitudes(&sent);
    // The old receiver's last epoch may arrive first (closed when the port
    // was lost); it is a minute older than anything the new one sends.
    let mut events = client.take("position", 5, WAIT);
    let cutoff = (Utc::now() - chrono::Duration::seconds(30)).to_rfc3339();
    events.retain(|e| e.json()["time"].as_str().unwrap_or("") > cutoff.as_str());
    let fresh = client.take("position", 5 - events.len().min(5), WAIT);
    events.extend(fresh);
    for (event, lat) in events.iter().zip(&expected) {
        let got = event.json()["lat"].as_f64().expect("lat");
        assert!(
            (got - lat).abs() < 1e-6,
            "after the replug the new receiver's epochs arrive in order: {got} vs {lat}"
        );
    }
    assert!(
        daemon.log_text().contains("port lost"),
        "the unplug is logged"
    );
}

#[test]
fn a_silent_receiver_is_reopened_after_the_timeout() {
    let (rig, receiver) = Rig::start(true, "silence_timeout = \"1s\"");
    let mut receiver = receiver.expect("plugged");
    let Rig { daemon, client, .. } = &rig;
    // Only noise: bytes arrive but no valid sentence, which is silence too.
    receiver.send(b"\x00\x01garbage\r\n");
    wait_for(
        || {
            daemon
                .metric_with(
                    "fixgate_serial_disconnects_total",
                    &[("device", "gps-1"), ("reason", "silent")],
                )
                .unwrap_or(0.0)
                >= 1.0
        },
        "silence noticed",
    );
    // The same pty is reopened and what the receiver says next gets through.
    rig.wait_connected("reopened");
    receiver.send_epochs(5, 13, 0);
    client.take("position", 4, WAIT);
}

#[test]
fn a_port_missing_at_start_is_picked_up_when_it_appears() {
    let (rig, _) = Rig::start(false, "");
    let Rig { daemon, client, .. } = &rig;
    // A second in which it may not connect (there is no port yet).
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(daemon.metric("fixgate_serial_connected"), Some(0.0));
    let healthy = common::get(daemon.port, "/healthz");
    assert!(
        healthy.is_ok(),
        "a missing receiver does not make the gateway unhealthy"
    );

    let mut receiver = PtyReceiver::plug(&rig.link);
    rig.wait_connected("port opened");
    receiver.send_epochs(5, 14, 0);
    client.take("position", 4, WAIT);
    let log = daemon.log_text();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains("cannot open port"))
            .count(),
        1,
        "one warning for a missing port, retries at debug:\n{log}"
    );
}

fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for: {what}");
}
