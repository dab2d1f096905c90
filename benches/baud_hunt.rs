//! What a serial port at the wrong line speed costs: its bytes through the
//! hunt's listener (`baud = "auto"`), next to the same bytes through the
//! NMEA decoder (a fixed `baud` that does not match the receiver: every
//! byte is framed, rejected and counted there).
//!
//! `cargo bench --bench baud_hunt [-- MIB]`: simulated NMEA, turned into
//! what a UART at each wrong rate makes of it (8N1, sampled bit by bit),
//! `MIB` MiB of it (default 8) per case. For instruction counts run the
//! bench binary under `valgrind --tool=callgrind` with `-- 1`. `cargo test
//! --bench baud_hunt` is its quick self-check.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use fixgate::sim::uart::uart_at;
use fixgate::sources::nmea::{Decoder, DecoderOptions};
use fixgate::sources::serial::hunt::Listener;

/// NMEA text of `epochs` 1 Hz epochs of one simulated vehicle.
fn nmea(epochs: usize) -> Vec<u8> {
    let mut fleet = fixgate::sim::Fleet::new(1, (52.0907, 5.1214), 3);
    let start = Utc
        .with_ymd_and_hms(2026, 11, 23, 6, 0, 0)
        .single()
        .expect("time");
    let mut text = String::new();
    for i in 0..epochs {
        for fix in fleet.step(1.0, start + chrono::Duration::seconds(i as i64)) {
            fixgate::sim::nmea::write_epoch(&fix, &mut text);
        }
    }
    text.into_bytes()
}

/// `noise` cycled to `len` bytes.
fn cycled(noise: &[u8], len: usize) -> Vec<u8> {
    noise.iter().copied().cycle().take(len).collect()
}

/// Feeds `input` in serial-sized reads to the listener: locks seen, time.
/// Not inlined, so that callgrind shows it on its own.
#[inline(never)]
fn listen(input: &[u8]) -> (usize, Duration) {
    let mut listener = Listener::new();
    let start = Instant::now();
    let locks = input
        .chunks(1024)
        .filter(|c| listener.push(c).is_some())
        .count();
    (locks, start.elapsed())
}

/// The same through the decoder: valid sentences seen, time.
#[inline(never)]
fn decode(input: &[u8]) -> (u64, Duration) {
    let mut decoder = Decoder::new(DecoderOptions::default());
    let mut fixes = Vec::new();
    let start = Instant::now();
    for chunk in input.chunks(1024) {
        decoder.push(chunk, &mut fixes);
        fixes.clear();
    }
    (decoder.stats().sentences(), start.elapsed())
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let mib: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if quick { 1 } else { 8 });
    let clean = nmea(if quick { 20 } else { 200 });
    // The receiver's own rate, then what each other common rate reads of it.
    let (sent, reads) = (38400, [4800, 9600, 19200, 57600, 115200]);
    let (locks, _) = listen(&clean);
    assert!(locks > 0, "clean NMEA at the right rate locks");
    println!(
        "{:>8} {:>10} {:>12} {:>12}",
        "read at", "bytes", "listener", "decoder"
    );
    for read in reads {
        let noise = uart_at(&clean, sent, read);
        let input = cycled(&noise, mib << 20);
        let (locks, listened) = listen(&input);
        let (sentences, decoded) = decode(&input);
        assert_eq!((locks, sentences), (0, 0), "{sent} read at {read}");
        let per_byte = |d: Duration| d.as_nanos() as f64 / input.len() as f64;
        println!(
            "{read:>8} {:>10} {:>9.2} ns/B {:>9.2} ns/B",
            input.len(),
            per_byte(listened),
            per_byte(decoded)
        );
    }
}
