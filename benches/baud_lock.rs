//! How long `baud = "auto"` takes to find a receiver's line speed: the
//! daemon (this build) on the default hunt (six rates, `hunt_window =
//! "2.5s"`), a 1 Hz receiver on a pseudo-terminal that talks only at its own
//! speed (tests/common/talker.rs), cold (a fresh store) and warm (restarted
//! on it: the remembered rate first). The figure is the daemon's own `took=`
//! on its `line speed found` line, and the rates it tried (`attempts=`).
//!
//! `cargo bench --bench baud_lock` (release build) for receivers at 4800,
//! 38400 and 115200 (the first, fourth and sixth rate tried); `cargo test
//! --bench baud_lock` is its quick self-check: one receiver at 9600 with a
//! 1 s window, asserting that the cold hunt took two attempts and the warm
//! one a single attempt.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::talker::Talker;
use common::{Daemon, PtyReceiver, machine, wait_until};

/// The `took=` and `attempts=` of the daemon's `line speed found` line.
fn found(daemon: &Daemon) -> Option<(String, u32)> {
    let log = daemon.log_text();
    let line = log.lines().find(|l| l.contains("line speed found"))?;
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_owned)
    };
    Some((field("took=")?, field("attempts=")?.parse().ok()?))
}

/// Cold then warm hunts for a receiver at `rate`: ((took, attempts), (took, attempts)).
fn lock(rate: u32, window: &str) -> ((String, u32), (String, u32)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("gps0");
    let _talker = Talker::start(PtyReceiver::plug(&link), Duration::from_secs(1), rate, 7);
    let config = format!(
        "[[serial]]\ndevice = \"gps-1\"\npath = \"{}\"\nbaud = \"auto\"\nhunt_window = \"{window}\"\n",
        link.display()
    );
    let wait = Duration::from_secs(60);
    let daemon = Daemon::start(dir.path(), &config);
    wait_until("the cold hunt", wait, || found(&daemon).is_some());
    let cold = found(&daemon).expect("found");
    let (config, port) = (daemon.config.clone(), daemon.port);
    assert!(daemon.terminate().success());
    let daemon = Daemon::spawn(dir.path(), config, port);
    wait_until("the warm hunt", wait, || found(&daemon).is_some());
    let warm = found(&daemon).expect("found");
    (cold, warm)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if !full {
        let (cold, warm) = lock(9600, "1s");
        println!("9600 with a 1 s window: cold {cold:?}, warm {warm:?}");
        assert_eq!(cold.1, 2, "4800 then 9600");
        assert_eq!(warm.1, 1, "the remembered rate first");
        return;
    }
    println!("{}", machine());
    println!("| receiver at | cold: attempts, took | warm: attempts, took |");
    println!("|---|---|---|");
    for rate in [4800, 38400, 115200] {
        let (cold, warm) = lock(rate, "2.5s");
        println!(
            "| {rate} | {}, {} | {}, {} |",
            cold.1, cold.0, warm.1, warm.0
        );
    }
}
