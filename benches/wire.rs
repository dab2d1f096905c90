//! Wire format benchmark: bytes per fix upstream, and codec speed.
//!
//! `cargo bench --bench wire` encodes, in batches of
//! [`wire::DEFAULT_MAX_RECORDS`] (the daemon's default batching):
//!
//! * the moving tracks among gpsd's receiver logs in
//!   `../shared/testdata/nmea/gpsd` (decoded as `fixgate nmea` does; skipped
//!   with a message if absent). The corpus holds regression snippets, not
//!   drives: no log has more than 148 fixes, so "moving" here means at least
//!   20 fixes faster than 1 m/s, and most of the log; then one line with
//!   the median and range over every log with a fix faster than 1 m/s;
//! * simulator tracks at 1 Hz: one vehicle, and 100 vehicles interleaved as a
//!   gateway stores them.
//!
//! Beside the wire size it prints the same records as JSON Lines (the feed's
//! event JSON), as gzip'd JSON Lines (deflate level 6 per batch plus gzip's
//! 18 bytes of framing) and as Google's encoded polyline of lat/lon alone
//! (precision 5, one polyline per device per batch), then encode and decode
//! speed. Two smaller tables follow: the cost per fix at other batch sizes,
//! and where the simulator's bytes go. Every batch is decoded and checked
//! against its source at the wire's precision, so a lossy codec cannot post
//! a good figure. Run as a test (`cargo test --benches`) it uses short tracks
//! and one timing pass.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fixgate::fix::{DeviceId, Event, Position, Record};
use fixgate::sources::nmea::{Decoder, DecoderOptions};
use fixgate::wire::{self, Batch, BatchKind};

/// Removes or holds some of a fix's values.
type Strip = fn(&mut fixgate::fix::Fix);

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    println!("machine: {}", common::machine());
    println!(
        "batches of {} records (wire::DEFAULT_MAX_RECORDS), mode: {}",
        wire::DEFAULT_MAX_RECORDS,
        if full { "full" } else { "quick" }
    );
    let (seconds, fleet_seconds): (usize, usize) = if full { (3600, 600) } else { (600, 30) };
    let one = common::fleet_events(1, seconds);
    let fleet = common::fleet_events(100, 100 * fleet_seconds);
    let (mut tracks, any_moving) = gpsd_tracks();
    tracks.push((format!("simulator, 1 vehicle, {seconds} s"), one.clone()));
    tracks.push((
        format!("simulator, 100 vehicles, {fleet_seconds} s"),
        fleet.clone(),
    ));

    println!();
    println!(
        "| track | fixes | wire B/fix | JSON Lines | gzip'd JSON Lines | polyline (lat/lon, 1e-5) | encode fixes/s | decode fixes/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, events) in &tracks {
        let batches = batches(events, wire::DEFAULT_MAX_RECORDS);
        let n = events.len() as f64;
        let (encode_rate, decode_rate) = speeds(&batches, events.len(), full);
        println!(
            "| {name} | {} | {:.2} | {:.1} | {:.1} | {:.2} | {:.2} M | {:.2} M |",
            events.len(),
            wire_bytes(&batches) as f64 / n,
            json_lines(&batches) as f64 / n,
            gzip_json_lines(&batches) as f64 / n,
            polylines(&batches) as f64 / n,
            encode_rate / 1e6,
            decode_rate / 1e6,
        );
    }

    gpsd_summary(&any_moving);

    println!();
    println!("| records per batch | 1 vehicle B/fix | 100 vehicles B/fix |");
    println!("|---:|---:|---:|");
    let sizes: &[usize] = if full {
        &[100, 250, 1000, 4000, 10_000]
    } else {
        &[100, 1000]
    };
    for &size in sizes {
        let per_fix =
            |events: &[Event]| wire_bytes(&batches(events, size)) as f64 / events.len() as f64;
        println!("| {size} | {:.2} | {:.2} |", per_fix(&one), per_fix(&fleet));
    }

    println!();
    println!("| simulator, 1 vehicle: fields | wire B/fix |");
    println!("|---|---:|");
    let held = |events: &[Event], strip: Strip| -> f64 {
        let mut events = events.to_vec();
        for e in &mut events {
            if let Event::Position(p) = e {
                strip(&mut p.fix);
            }
        }
        wire_bytes(&batches(&events, wire::DEFAULT_MAX_RECORDS)) as f64 / events.len() as f64
    };
    let rows: [(&str, Strip); 4] = [
        ("as simulated", |_| {}),
        (
            "hdop and sats held (the simulator draws both anew each second)",
            |f| {
                f.hdop = Some(0.9);
                f.sats = Some(11);
            },
        ),
        ("time, lat, lon, alt, course (no speed, hdop, sats)", |f| {
            (f.speed, f.hdop, f.sats) = (None, None, None);
        }),
        ("time, lat, lon only", |f| {
            *f = fixgate::fix::Fix::new(f.time, f.lat, f.lon);
        }),
    ];
    for (name, strip) in rows {
        println!("| {name} | {:.2} |", held(&one, strip));
    }
}

/// The records in batches of `size`, seqs from 1.
fn batches(events: &[Event], size: usize) -> Vec<Batch> {
    let records: Vec<Record> = (1u64..)
        .zip(events)
        .map(|(seq, event)| Record {
            seq,
            event: event.clone(),
        })
        .collect();
    (1u64..)
        .zip(records.chunks(size))
        .map(|(id, chunk)| Batch {
            gateway: "gw-bench".into(),
            id,
            kind: BatchKind::Live,
            first_seq: chunk[0].seq,
            last_seq: chunk[chunk.len() - 1].seq,
            records: chunk.to_vec(),
        })
        .collect()
}

/// Bytes of the encoded batches, each checked to decode to its source at
/// the wire's precision.
fn wire_bytes(batches: &[Batch]) -> usize {
    let mut total = 0;
    for batch in batches {
        let bytes = wire::encode(batch);
        total += bytes.len();
        let back = wire::decode(&bytes).expect("own batches decode");
        assert_eq!(back.records.len(), batch.records.len());
        for (got, want) in back.records.iter().zip(&batch.records) {
            assert_eq!(got.seq, want.seq);
            if let (Event::Position(g), Event::Position(w)) = (&got.event, &want.event) {
                assert_eq!(g.fix.time.timestamp_millis(), w.fix.time.timestamp_millis());
                assert!((g.fix.lat - w.fix.lat).abs() <= 0.5e-7 + 1e-12);
                assert!((g.fix.lon - w.fix.lon).abs() <= 0.5e-7 + 1e-12);
                assert_eq!(g.fix.alt.is_some(), w.fix.alt.is_some());
                assert_eq!(g.fix.sats, w.fix.sats);
            }
        }
    }
    total
}

/// Encode and decode rates in fixes per second: the best of several passes
/// (one when run as a test).
fn speeds(batches: &[Batch], fixes: usize, full: bool) -> (f64, f64) {
    let passes = if full { 20 } else { 1 };
    let encoded: Vec<Vec<u8>> = batches.iter().map(wire::encode).collect();
    let best = |f: &dyn Fn()| {
        (0..passes)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .min()
            .unwrap_or(Duration::MAX)
    };
    let encode = best(&|| {
        for b in batches {
            std::hint::black_box(wire::encode(b));
        }
    });
    let decode = best(&|| {
        for bytes in &encoded {
            std::hint::black_box(wire::decode(bytes).expect("decodes"));
        }
    });
    let rate = |d: Duration| fixes as f64 / d.as_secs_f64().max(1e-9);
    (rate(encode), rate(decode))
}

fn json_lines(batches: &[Batch]) -> usize {
    batches.iter().map(|b| json_text(b).len()).sum()
}

/// Each batch's events as JSON Lines, the feed's shape.
fn json_text(batch: &Batch) -> String {
    let mut text = String::new();
    for r in &batch.records {
        text.push_str(&r.event.to_json().expect("JSON"));
        text.push('\n');
    }
    text
}

fn gzip_json_lines(batches: &[Batch]) -> usize {
    // gzip = raw deflate + 10 bytes of header + 8 of CRC-32 and length.
    batches
        .iter()
        .map(|b| miniz_oxide::deflate::compress_to_vec(json_text(b).as_bytes(), 6).len() + 18)
        .sum()
}

/// Google's encoded polyline of each device's positions in each batch: what
/// sending the track alone, without time or any other field, would cost.
fn polylines(batches: &[Batch]) -> usize {
    let mut total = 0;
    for batch in batches {
        let mut per_device: BTreeMap<&str, Vec<geo_types::Coord<f64>>> = BTreeMap::new();
        for r in &batch.records {
            if let Event::Position(p) = &r.event {
                per_device
                    .entry(p.device.as_str())
                    .or_default()
                    .push(geo_types::Coord {
                        x: p.fix.lon,
                        y: p.fix.lat,
                    });
            }
        }
        for coords in per_device.into_values() {
            total += polyline::encode_coordinates(coords, 5)
                .expect("valid coordinates")
                .len();
        }
    }
    total
}

fn gpsd_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/nmea/gpsd");
    dir.is_dir().then_some(dir)
}

/// A named track's events.
type Track = (String, Vec<Event>);

/// The gpsd logs decoded as `fixgate nmea` does: those with a moving track
/// (at least 20 fixes faster than 1 m/s, and most of the log), and those
/// with any fix faster than 1 m/s.
fn gpsd_tracks() -> (Vec<Track>, Vec<Track>) {
    let Some(dir) = gpsd_dir() else {
        println!("SKIPPED gpsd logs: ../shared/testdata/nmea/gpsd not found");
        return (Vec::new(), Vec::new());
    };
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    logs.retain(|p| p.extension().is_some_and(|e| e == "log"));
    logs.sort();
    let device = DeviceId::new("gps").expect("id");
    let (mut tracks, mut any) = (Vec::new(), Vec::new());
    for path in &logs {
        let events = decode_log(path, &device);
        let moving = events
            .iter()
            .filter(|e| matches!(e, Event::Position(p) if p.fix.speed.is_some_and(|s| s > 1.0)))
            .count();
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if moving >= 20 && 2 * moving > events.len() {
            tracks.push((format!("gpsd {name}"), events.clone()));
        }
        if moving > 0 {
            any.push((name, events));
        }
    }
    (tracks, any)
}

/// Wire bytes per fix of every gpsd log with a moving fix, one batch each
/// (none has 1,000 fixes): a check that the codec holds for receivers in
/// general, not for the two tracks above.
fn gpsd_summary(logs: &[Track]) {
    if logs.is_empty() {
        return;
    }
    let mut per_fix: Vec<(f64, &str, usize)> = logs
        .iter()
        .map(|(name, events)| {
            let bytes = wire_bytes(&batches(events, wire::DEFAULT_MAX_RECORDS));
            (
                bytes as f64 / events.len() as f64,
                name.as_str(),
                events.len(),
            )
        })
        .collect();
    per_fix.sort_by(|a, b| a.0.total_cmp(&b.0));
    println!();
    let list: Vec<String> = per_fix
        .iter()
        .map(|(b, name, n)| format!("{name} ({n}) {b:.2}"))
        .collect();
    let median = if per_fix.len() % 2 == 1 {
        per_fix[per_fix.len() / 2].0
    } else {
        (per_fix[per_fix.len() / 2 - 1].0 + per_fix[per_fix.len() / 2].0) / 2.0
    };
    println!(
        "all {} gpsd logs with a fix faster than 1 m/s: wire B/fix median {median:.2}, range {:.2}-{:.2}: {}",
        per_fix.len(),
        per_fix[0].0,
        per_fix[per_fix.len() - 1].0,
        list.join(", ")
    );
}

fn decode_log(path: &Path, device: &DeviceId) -> Vec<Event> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let mut decoder = Decoder::new(DecoderOptions::default());
    let mut fixes = Vec::new();
    decoder.push(&bytes, &mut fixes);
    decoder.finish(&mut fixes);
    fixes
        .into_iter()
        .map(|fix| Event::Position(Position::new(device.clone(), fix)))
        .collect()
}
