//! GPS time for chrony: a receiver on a real pseudo-terminal sends the
//! current time at 1 Hz, fixgate passes each second to a real `chronyd`'s
//! `refclock SOCK`, and `chronyc` shows the refclock reachable and sampled.
//! chronyd runs with `-x` (no clock changes), as the user running the test
//! (see tests/common/chrony.rs for how it runs without root).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::chrony::{self, Chronyd};
use common::{Daemon, PtyReceiver};

/// How long after its second the simulated receiver writes an epoch.
const DELAY: Duration = Duration::from_millis(100);

fn serial_source(link: &Path, socket: &Path) -> String {
    format!(
        "[[serial]]\ndevice = \"gps-1\"\npath = \"{}\"\nchrony_socket = \"{}\"\n",
        link.display(),
        socket.display()
    )
}

fn wait_connected(daemon: &Daemon) {
    common::wait_until("port open", Duration::from_secs(20), || {
        daemon.metric("fixgate_serial_connected") == Some(1.0)
    });
}

/// Runs the receiver in a thread until the returned flag is set.
fn receiver_thread(mut receiver: PtyReceiver) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            chrony::send_current_time(&mut receiver, 1, DELAY);
        }
    });
    (stop, thread)
}

#[test]
fn chronyd_reaches_and_samples_the_receivers_time() {
    if !chrony::available("chronyd_reaches_and_samples_the_receivers_time") {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    // poll 0 with a one-sample filter: each 1 Hz sample is a poll of its own.
    let chronyd = Chronyd::start(dir.path(), "poll 0 filter 1");
    let link = dir.path().join("gps0");
    let receiver = PtyReceiver::plug(&link);
    let daemon = Daemon::start(dir.path(), &serial_source(&link, &chronyd.socket));
    wait_connected(&daemon);
    let (stop, thread) = receiver_thread(receiver);

    let deadline = Instant::now() + Duration::from_secs(20);
    let reached = loop {
        let source = chronyd.source();
        let stats = chronyd.stats();
        if let (Some(source), Some(stats)) = (&source, &stats) {
            if source.reach != 0 && stats.samples >= 3 {
                break Some((source.clone(), stats.clone()));
            }
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    stop.store(true, Ordering::Relaxed);
    thread.join().expect("receiver thread");
    let sources = chronyd.chronyc(&["sources"]);
    let (source, stats) = reached.unwrap_or_else(|| {
        panic!(
            "chronyd never reached the FXGT refclock:\n{sources}\n{}\nchronyd:\n{}\nfixgate:\n{}",
            chronyd.chronyc(&["sourcestats"]),
            chronyd.log_text(),
            daemon.log_text()
        )
    });
    println!("{sources}\n{}", chronyd.chronyc(&["sourcestats"]));
    assert!(source.reach != 0, "{source:?}");
    assert!(stats.samples >= 3, "{stats:?}");

    // Each raw sample says the system clock read the sentence at least
    // DELAY after its second (the write came no earlier), and not absurdly
    // later on a loaded machine.
    let raw = chronyd.raw_offsets();
    assert!(raw.len() >= 3, "{raw:?}");
    let delay = DELAY.as_secs_f64();
    for offset in &raw {
        assert!(
            (-(delay + 0.5)..=-delay + 0.001).contains(offset),
            "raw offset {offset} for a sentence written {delay} s after its second: {raw:?}"
        );
    }
    let sent = daemon
        .metric_with("fixgate_chrony_samples_total", &[("device", "gps-1")])
        .unwrap_or(0.0);
    assert!(
        sent >= raw.len() as f64,
        "sent {sent}, chronyd logged {raw:?}"
    );
    assert_eq!(daemon.metric("fixgate_chrony_send_failures_total"), None);
}

#[test]
fn no_chronyd_is_counted_and_logged_once_and_fixes_still_flow() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("nobody-binds-this.sock");
    let link = dir.path().join("gps0");
    let mut receiver = PtyReceiver::plug(&link);
    let daemon = Daemon::start(dir.path(), &serial_source(&link, &socket));
    wait_connected(&daemon);
    chrony::send_current_time(&mut receiver, 4, Duration::from_millis(50));
    let failures = daemon.wait_metric(
        "fixgate_chrony_send_failures_total",
        &[("device", "gps-1"), ("reason", "not_running")],
        3.0,
    );
    assert!(failures.is_some_and(|n| n >= 3.0), "{failures:?}");
    let head = daemon.wait_head(3, Duration::from_secs(10));
    assert!(head >= 3, "the fixes are stored all the same: {head}");
    let log = daemon.log_text();
    assert_eq!(
        log.matches("cannot send this receiver's time to chrony")
            .count(),
        1,
        "one line per outage:\n{log}"
    );
}
