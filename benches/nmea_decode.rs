//! Decoder throughput on gpsd's regression logs, next to gpsd's own `gpsdecode`.
//!
//! `cargo bench --bench nmea_decode [-- N]`: concatenates every `*.log` of
//! `../shared/testdata/nmea/gpsd` (or `$FIXGATE_GPSD_TESTDATA`) N times
//! (default 20), decodes it with [`Decoder`] and, if `gpsdecode` is on the
//! PATH, pipes the same bytes through it, timing both in the same run.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fixgate::sources::nmea::{Decoder, DecoderOptions};

fn data_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("FIXGATE_GPSD_TESTDATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/nmea/gpsd"),
    };
    dir.is_dir().then_some(dir)
}

fn machine() -> String {
    let arch = Command::new("uname")
        .arg("-m")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| std::env::consts::ARCH.to_owned());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{arch}, {cpu}")
}

fn ours(input: &[u8]) -> (Duration, u64, u64) {
    let mut d = Decoder::new(DecoderOptions::default());
    let mut fixes = Vec::new();
    let mut n = 0u64;
    let start = Instant::now();
    // Serial-port-sized reads, as the daemon sees them.
    for chunk in input.chunks(4096) {
        d.push(chunk, &mut fixes);
        n += fixes.len() as u64;
        fixes.clear();
    }
    d.finish(&mut fixes);
    n += fixes.len() as u64;
    (start.elapsed(), d.stats().sentences, n)
}

fn gpsdecode(input: &[u8]) -> Option<Duration> {
    let start = Instant::now();
    let mut child = Command::new("gpsdecode")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let status = child.wait().ok()?;
    let _ = writer.join();
    status.success().then(|| start.elapsed())
}

/// `n` 1 Hz epochs of one simulated vehicle (RMC, VTG, GGA, GSA, GLL), as
/// the footprint bench replays them through the daemon.
fn simulated(n: usize) -> String {
    let start = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 11, 23, 6, 0, 0)
        .single()
        .unwrap_or_default();
    let mut fleet = fixgate::sim::Fleet::new(1, (52.0907, 5.1214), 7);
    let mut text = String::new();
    for i in 0..n {
        let t = start + chrono::Duration::seconds(i as i64);
        for fix in fleet.step(1.0, t) {
            fixgate::sim::nmea::write_epoch(&fix, &mut text);
        }
    }
    text
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `epochs N`: decode N simulated epochs and nothing else (the process
    // the callgrind part counts).
    if let [mode, n, ..] = args.as_slice() {
        if mode == "epochs" {
            let n = n.parse().unwrap_or(0);
            let (_, sentences, fixes) = ours(simulated(n).as_bytes());
            println!("{sentences} sentences, {fixes} fixes");
            return;
        }
    }
    let Some(dir) = data_dir() else {
        println!("SKIPPED: gpsd test data not found");
        return;
    };
    // `cargo bench` passes `--bench`; the first number is N.
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        // Run by `cargo test` (no `--bench`), one pass is enough to check it works.
        .unwrap_or(if std::env::args().any(|a| a == "--bench") {
            20
        } else {
            1
        });
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    logs.retain(|p| p.extension().is_some_and(|x| x == "log"));
    logs.sort();
    let mut one = Vec::new();
    for p in &logs {
        if let Ok(b) = std::fs::read(p) {
            one.extend_from_slice(&b);
            one.push(b'\n');
        }
    }
    let input = one.repeat(n);
    let mb = input.len() as f64 / 1e6;
    println!("machine: {}", machine());
    println!("input: {} logs x {n} = {:.1} MB", logs.len(), mb);
    // Warm-up, then the best of three.
    let _ = ours(&one);
    let (t, sentences, fixes) = (0..3)
        .map(|_| ours(&input))
        .min_by_key(|r| r.0)
        .unwrap_or_default();
    let secs = t.as_secs_f64();
    println!(
        "fixgate : {:>8.3} s  {:>8.1} MB/s  {:>12.0} sentences/s  ({sentences} sentences, {fixes} fixes)",
        secs,
        mb / secs,
        sentences as f64 / secs
    );
    match gpsdecode(&input) {
        Some(g) => {
            let g = g.as_secs_f64();
            println!(
                "gpsdecode: {:>8.3} s  {:>8.1} MB/s  {:>12.0} sentences/s",
                g,
                mb / g,
                sentences as f64 / g
            );
            println!("fixgate is {:.1}x gpsdecode", g / secs);
        }
        None => println!("gpsdecode: not available (install gpsd-clients)"),
    }
}
