//! GPS time for chrony: what a real `chronyd` makes of the time fixgate
//! passes on from a serial receiver.
//!
//! `cargo bench --bench chrony` (release binary): a simulated receiver on a
//! pseudo-terminal writes each second's epoch (RMC, VTG, GGA, GSA, GLL, the
//! current date and time) [`DELAY`] after the second begins, as real
//! receivers do, for 60 s. fixgate reads it as a `[[serial]]` receiver with
//! `chrony_socket`, and sends one sample per second to a chronyd of the
//! bench's own (`-x`: it never touches the clock; `refclock SOCK ... poll 0
//! filter 1`, so every sample is a poll of its own). Then:
//!
//! * chrony's own view: `chronyc sourcestats` (the regression's offset and
//!   standard deviation) and `chronyc sources -v` (reach, last sample);
//! * every raw sample chronyd logged (`log refclocks`): its offset, which is
//!   `-(DELAY + lateness)`: mean, standard deviation, min, max;
//! * how late the writer itself was past `second + DELAY` (the scheduler's
//!   share of the jitter on this machine), and each sample against its own
//!   write: the time from the write on the pty to fixgate's read.
//!
//! Run as a test (`cargo test --bench chrony`) it runs 6 s and asserts that
//! chronyd reached the refclock and took at least 3 samples whose offsets
//! are no earlier than the write. Without chrony it says SKIPPED (a failure
//! in CI, which installs it).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::chrony::{self, Chronyd};
use common::proc_stat::load_average;
use common::{Daemon, PtyReceiver, machine};

/// How long after its second the simulated receiver writes an epoch.
const DELAY: Duration = Duration::from_millis(100);

/// Mean, standard deviation, min and max of `xs`.
fn summary(xs: &[f64]) -> (f64, f64, f64, f64) {
    let n = xs.len().max(1) as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, var.sqrt(), min, max)
}

fn print_ms(what: &str, xs: &[f64]) {
    let (mean, sd, min, max) = summary(xs);
    println!(
        "{what}: n={} mean {:.3} ms, std dev {:.3} ms, min {:.3} ms, max {:.3} ms",
        xs.len(),
        mean * 1e3,
        sd * 1e3,
        min * 1e3,
        max * 1e3
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if !chrony::available("the chrony bench") {
        return;
    }
    let seconds = if full { 60 } else { 6 };
    println!("machine: {}", machine());
    println!("load average at start: {}", load_average());
    println!(
        "mode: {}",
        if full {
            "full (release binary, 60 s)"
        } else {
            "quick self-check (6 s; figures meaningless)"
        }
    );
    let dir = tempfile::tempdir().expect("dir");
    let chronyd = Chronyd::start(dir.path(), "poll 0 filter 1");
    let link = dir.path().join("gps0");
    let mut receiver = PtyReceiver::plug(&link);
    let daemon = Daemon::start(
        dir.path(),
        &format!(
            "[[serial]]\ndevice = \"gps-1\"\npath = \"{}\"\nbaud = 9600\nchrony_socket = \"{}\"\n",
            link.display(),
            chronyd.socket.display()
        ),
    );
    common::wait_until("port open", Duration::from_secs(20), || {
        daemon.metric("fixgate_serial_connected") == Some(1.0)
    });
    let started = Instant::now();
    let late = chrony::send_current_time(&mut receiver, seconds, DELAY);
    // The last sample's poll.
    std::thread::sleep(Duration::from_millis(1500));
    println!(
        "{seconds} epochs written in {:.1} s, each due {} ms after its second",
        started.elapsed().as_secs_f64(),
        DELAY.as_millis()
    );
    println!("load average at end: {}", load_average());
    println!(
        "\n$ chronyc sourcestats\n{}",
        chronyd.chronyc(&["sourcestats"])
    );
    println!(
        "$ chronyc sources -v\n{}",
        chronyd.chronyc(&["sources", "-v"])
    );
    let source = chronyd.source();
    let stats = chronyd.stats();
    println!("chronyc -c: {source:?} {stats:?}");

    let samples = chronyd.raw_samples();
    let raw: Vec<f64> = samples.iter().map(|(_, o)| *o).collect();
    print_ms("raw offsets chronyd logged (true - system)", &raw);
    let delay = DELAY.as_secs_f64();
    let late_past: Vec<f64> = late.iter().map(|(_, l)| l.as_secs_f64() - delay).collect();
    print_ms("writer's own lateness past second + DELAY", &late_past);
    // Each sample against its own write (the sample's second is the
    // write's: the delay is under a second): what the pty and fixgate add.
    let read_after_write: Vec<f64> = samples
        .iter()
        .filter_map(|(at, offset)| {
            // chronyd logs the sample at its own (cooked) time, which -x
            // moves by its estimate of the offset: nearest second of either.
            let second = (at - delay / 2.0).round() as i64;
            let (_, l) = late.iter().find(|(s, _)| *s == second)?;
            Some(-offset - l.as_secs_f64())
        })
        .collect();
    print_ms(
        "read after write (-offset - actual write lateness)",
        &read_after_write,
    );
    let sent = daemon.metric("fixgate_chrony_samples_total").unwrap_or(0.0);
    let failed = daemon
        .metric("fixgate_chrony_send_failures_total")
        .unwrap_or(0.0);
    println!(
        "fixgate: {sent} samples sent, {failed} failed; chronyd logged {}",
        raw.len()
    );

    let source = source.expect("chronyd lists the FXGT refclock");
    let stats = stats.expect("chronyd has statistics of FXGT");
    assert!(source.reach != 0, "chronyd never reached FXGT: {source:?}");
    assert!(stats.samples >= 3, "{stats:?}");
    assert!(raw.len() >= 3, "{raw:?}");
    assert!(
        raw.iter().all(|o| *o <= -delay + 0.001),
        "a sample earlier than its write: {raw:?}"
    );
    assert_eq!(failed, 0.0);
}
