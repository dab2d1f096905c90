//! `baud = "auto"` through real pseudo-terminals. A pty carries bytes at any
//! speed, so the simulated receiver enforces its own: before each burst it
//! reads the speed the daemon set on its end of the line (termios on a pty's
//! master acts on the slave) and sends valid NMEA only when that is its true
//! rate; otherwise it sends what a UART at the daemon's rate would make of
//! the same bytes, bit by bit.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::talker::Talker;
use common::{Daemon, PtyReceiver, SseClient, wait_until};
use fixgate::sim::uart::uart_at;
use fixgate::sources::nmea::framing::{Framed, Framer};

const WAIT: Duration = Duration::from_secs(20);
const DEVICE: [(&str, &str); 1] = [("device", "gps-1")];

/// A window of ten bursts: a loaded machine that delays the talker a few
/// hundred milliseconds still finds the rate in its first round.
fn auto_source(link: &Path, extra: &str) -> String {
    format!(
        "[[serial]]\ndevice = \"gps-1\"\npath = \"{}\"\nbaud = \"auto\"\nhunt_window = \"1s\"\nsilence_timeout = \"1s\"\nreconnect_min = \"100ms\"\nreconnect_max = \"400ms\"\n{extra}\n",
        link.display()
    )
}

fn metric(daemon: &Daemon, name: &str, labels: &[(&str, &str)]) -> f64 {
    daemon.metric_with(name, labels).unwrap_or(0.0)
}

fn wait_speed(daemon: &Daemon, rate: u32) {
    wait_until(&format!("the line speed locked at {rate}"), WAIT, || {
        metric(daemon, "fixgate_serial_line_speed_bps", &DEVICE) == f64::from(rate)
    });
}

fn locked_lines(daemon: &Daemon) -> Vec<String> {
    daemon
        .log_text()
        .lines()
        .filter(|l| l.contains("line speed found"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_mangling_is_a_uart_s_at_the_wrong_speed_and_none_at_the_right_one() {
    let text = common::simulated_nmea(3, Utc::now(), 5);
    assert_eq!(uart_at(text.as_bytes(), 38400, 38400), text.as_bytes());
    for (sent, read) in [(38400, 4800), (38400, 9600), (9600, 38400), (57600, 115200)] {
        let garbage = uart_at(text.as_bytes(), sent, read);
        assert!(!garbage.is_empty(), "{sent} read at {read}");
        let mut framer = Framer::new(256);
        let mut good = 0;
        framer.push(&garbage, &mut |f| {
            good += usize::from(matches!(f, Framed::Sentence(_)))
        });
        assert_eq!(good, 0, "{sent} read at {read} gave a good sentence");
    }
}

#[test]
fn an_auto_port_locks_at_the_receiver_s_speed_and_starts_there_next_time() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("gps0");
    let _talker = Talker::start(
        PtyReceiver::plug(&link),
        Duration::from_millis(100),
        38400,
        21,
    );
    let daemon = Daemon::start(dir.path(), &auto_source(&link, ""));
    let client = SseClient::connect(daemon.port, "", None);

    wait_speed(&daemon, 38400);
    let events = client.take("position", 3, WAIT);
    assert!(events.iter().all(|e| e.json()["device"] == "gps-1"));
    // Tried 4800, 9600 and 19200 first: the defaults in order.
    let found = locked_lines(&daemon);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("rate=38400") && found[0].contains("attempts=4"),
        "{found:?}"
    );
    assert_eq!(
        metric(&daemon, "fixgate_serial_baud_probes_total", &DEVICE),
        4.0
    );
    let locked = [("device", "gps-1"), ("result", "locked")];
    assert_eq!(
        metric(&daemon, "fixgate_serial_baud_hunts_total", &locked),
        1.0
    );
    // The wrong rates' noise was not the receiver's bad input.
    assert_eq!(
        metric(&daemon, "fixgate_nmea_rejected_total", &DEVICE),
        0.0,
        "{}",
        daemon.log_text()
    );

    // Restarted on the same store: the remembered rate is tried first.
    let (config, port) = (daemon.config.clone(), daemon.port);
    assert!(daemon.terminate().success());
    let daemon = Daemon::spawn(dir.path(), config, port);
    let client = SseClient::connect(daemon.port, "", None);
    wait_speed(&daemon, 38400);
    client.take("position", 2, WAIT);
    assert_eq!(
        metric(&daemon, "fixgate_serial_baud_probes_total", &DEVICE),
        1.0
    );
    let found = locked_lines(&daemon);
    assert!(
        found.len() == 1 && found[0].contains("attempts=1"),
        "{found:?}"
    );
}

#[test]
fn a_receiver_that_changes_speed_is_hunted_for_after_the_silence_and_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("gps0");
    let talker = Talker::start(
        PtyReceiver::plug(&link),
        Duration::from_millis(100),
        38400,
        22,
    );
    let daemon = Daemon::start(dir.path(), &auto_source(&link, ""));
    wait_speed(&daemon, 38400);

    talker.set_rate(9600);
    let switched = Instant::now();
    let client = SseClient::connect(daemon.port, "", None);
    wait_speed(&daemon, 9600);
    // Not before the silence timeout: a locked port is not second-guessed.
    assert!(switched.elapsed() >= Duration::from_secs(1));
    let silent = [("device", "gps-1"), ("reason", "silent")];
    assert_eq!(
        metric(&daemon, "fixgate_serial_disconnects_total", &silent),
        1.0
    );
    // 38400 (remembered) first, then the list: 4800, 9600.
    let found = locked_lines(&daemon);
    assert!(
        found.len() == 2 && found[1].contains("rate=9600") && found[1].contains("attempts=3"),
        "{found:?}"
    );
    client.take("position", 2, WAIT);

    let config = daemon.config.clone();
    assert!(daemon.terminate().success());
    let (store, _) = fixgate::store::Store::open(&fixgate::store::StoreOptions {
        path: dir.path().join("store"),
        cache_bytes: 1 << 20,
        flush_interval: Duration::from_millis(100),
    })
    .expect("open the daemon's store");
    let speeds = store.line_speeds().unwrap();
    let device = fixgate::fix::DeviceId::new("gps-1").unwrap();
    assert_eq!(speeds.get(&device), Some(9600), "{}", config.display());
}

#[test]
fn a_receiver_at_an_unlisted_speed_is_warned_about_once_and_retried_without_spinning() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("gps0");
    let talker = Talker::start(
        PtyReceiver::plug(&link),
        Duration::from_millis(100),
        57600,
        23,
    );
    let daemon = Daemon::start(
        dir.path(),
        &auto_source(&link, "hunt_rates = [9600, 38400]")
            .replace("hunt_window = \"1s\"", "hunt_window = \"300ms\""),
    );
    let not_found = [("device", "gps-1"), ("result", "not_found")];
    wait_until("two rounds without a rate", WAIT, || {
        metric(&daemon, "fixgate_serial_baud_hunts_total", &not_found) >= 2.0
    });
    // Each round takes two windows and a back-off growing to 400 ms: at
    // most five rounds fit in three seconds.
    let before = metric(&daemon, "fixgate_serial_baud_hunts_total", &not_found);
    std::thread::sleep(Duration::from_secs(3));
    let rounds = metric(&daemon, "fixgate_serial_baud_hunts_total", &not_found) - before;
    assert!(
        (1.0..=5.0).contains(&rounds),
        "{rounds} rounds in 3 s\n{}",
        daemon.log_text()
    );
    let log = daemon.log_text();
    let warned = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("no line speed found"))
        .count();
    assert_eq!(warned, 1, "one warning, the retries at debug:\n{log}");
    assert_eq!(
        metric(&daemon, "fixgate_serial_line_speed_bps", &DEVICE),
        0.0
    );
    assert!(common::get(daemon.port, "/healthz").is_ok());

    // The receiver is set to a listed rate: the next round finds it.
    talker.set_rate(38400);
    wait_speed(&daemon, 38400);
    let client = SseClient::connect(daemon.port, "", None);
    client.take("position", 2, WAIT);
}
