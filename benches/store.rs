//! Store benchmark: append rate, bytes on disk per fix, restart time, and
//! the disk budget at work.
//!
//! `cargo bench --bench store` appends 1,000,000 fixes of 10 simulated
//! vehicles in the writer's batches of 256 with a group commit every 4 batches
//! (about what a 1 s flush interval gives under that load), then reports the
//! append rate and the store's size on disk per fix, both as sled counts it
//! and as the directory occupies it after a clean close; then the time to
//! reopen with that backlog (nothing acknowledged) and to ask for it. Then it
//! appends the same fixes to stores capped at 16 and 6 MiB with their budget
//! running, and reports what was thinned and dropped and the largest size on
//! disk against the cap. Run as a test (`cargo test --benches`) it does the
//! same with 20,000 fixes and a 4 MiB cap, as a smoke test.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use fixgate::fix::Event;
use fixgate::store::budget::{Budget, Limits, Policy, Thin};
use fixgate::store::{Store, StoreOptions, segment};

use common::{dir_bytes, machine};

const VEHICLES: usize = 10;
const BATCH: usize = 256;
const FLUSH_EVERY: usize = 4;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "append-cost") {
        let number = |i: usize, default: usize| {
            args.get(at + i)
                .and_then(|a| a.parse().ok())
                .unwrap_or(default)
        };
        append_cost(number(1, 1), number(2, 16), number(3, 20_000));
        return;
    }
    let full = args.iter().any(|a| a == "--bench");
    let total: usize = if full { 1_000_000 } else { 20_000 };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store");
    let events = common::fleet_events(VEHICLES, total);

    let (store, _) = Store::open(&StoreOptions {
        path: path.clone(),
        cache_bytes: 16 << 20,
        flush_interval: std::time::Duration::from_secs(1),
    })
    .expect("open store");
    let mut writer = store.writer().expect("writer");
    let started = Instant::now();
    // A group commit as the flusher does it: sled's flush, then the durable
    // mark (synced in place), timed apart.
    let (mut flushing, mut marking) = (Vec::new(), Vec::new());
    for (i, batch) in events.chunks(BATCH).enumerate() {
        writer.append(batch).expect("append");
        if i % FLUSH_EVERY == FLUSH_EVERY - 1 {
            let t = Instant::now();
            store.flush().expect("flush");
            flushing.push(t.elapsed());
            let t = Instant::now();
            store
                .record_durable(writer.head(), writer.head())
                .expect("durable mark");
            marking.push(t.elapsed());
        }
    }
    store.close(writer.head()).expect("flush");
    let elapsed = started.elapsed();
    let sled_bytes = store.size_on_disk().expect("size");
    drop(writer);
    drop(store);
    let dir_bytes = dir_bytes(&path);

    // What the record layout itself costs, without sled's pages and index.
    let encoded: usize = events
        .chunks(segment::SEGMENT_RECORDS)
        .map(|c| segment::encode_segment(c.iter()).len() + 9)
        .sum();
    let json: usize = events
        .iter()
        .map(|e| e.to_json().map_or(0, |v| v.len()))
        .sum();

    let n = total as f64;
    println!("machine: {}", machine());
    println!(
        "fixes appended:        {total} ({VEHICLES} vehicles, batches of {BATCH}, flush every {FLUSH_EVERY})"
    );
    println!(
        "append rate:           {:.0} fixes/s ({:.2} s)",
        n / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "record layout:         {:.1} B/fix (segments of {} + keys)",
        encoded as f64 / n,
        segment::SEGMENT_RECORDS
    );
    println!("as JSON, for scale:    {:.1} B/fix", json as f64 / n);
    println!(
        "sled size_on_disk:     {:.1} B/fix ({sled_bytes} B)",
        sled_bytes as f64 / n
    );
    println!(
        "directory after close: {:.1} B/fix ({dir_bytes} B)",
        dir_bytes as f64 / n
    );
    let ms = |d: &mut Vec<std::time::Duration>| {
        d.sort();
        let mean = d.iter().sum::<std::time::Duration>().as_secs_f64() / d.len().max(1) as f64;
        let p99 = d.get(d.len() * 99 / 100).copied().unwrap_or_default();
        (mean * 1e3, p99.as_secs_f64() * 1e3)
    };
    let ((flush_mean, flush_p99), (mark_mean, mark_p99)) = (ms(&mut flushing), ms(&mut marking));
    println!(
        "group commit:          sled flush {flush_mean:.2} ms mean / {flush_p99:.2} ms p99, durable mark {mark_mean:.3} ms mean / {mark_p99:.3} ms p99 ({} commits)",
        flushing.len()
    );

    // Reopen and read everything back, so that a layout that loses data
    // cannot post a good figure.
    let options = StoreOptions {
        path,
        cache_bytes: 16 << 20,
        flush_interval: std::time::Duration::from_secs(1),
    };
    // After a clean close the ledger checkpoint is trusted: nothing decoded.
    let opening = Instant::now();
    let (store, report) = Store::open(&options).expect("reopen");
    println!(
        "reopen after close:    {:.3} s ({} values trusted, {} decoded)",
        opening.elapsed().as_secs_f64(),
        report.checkpoint.trusted,
        report.checkpoint.decoded
    );
    drop(store);
    // Without the checkpoint (a first start of this version, or a damaged
    // file) every stored value is decoded: start-up grows with the store.
    std::fs::remove_file(options.path.join(fixgate::store::checkpoint::FILE)).expect("checkpoint");
    let opening = Instant::now();
    let (store, report) = Store::open(&options).expect("reopen");
    println!(
        "reopen, decoding all:  {:.3} s ({} values decoded)",
        opening.elapsed().as_secs_f64(),
        report.checkpoint.decoded
    );
    let reader = store.reader();
    let mut after = reader.oldest().expect("oldest").expect("not empty") - 1;
    let mut read = 0usize;
    let started = Instant::now();
    loop {
        let chunk = reader.read_after(after, 4096).expect("read");
        let Some(last) = chunk.last() else { break };
        after = last.seq;
        read += chunk.len();
    }
    println!(
        "read back:             {read} fixes at {:.0} fixes/s",
        read as f64 / started.elapsed().as_secs_f64()
    );
    assert_eq!(read, total, "every appended fix reads back");
    let asking = Instant::now();
    let backlog = store.backlog().expect("backlog");
    println!(
        "backlog (none acked):  {} fixes, {} B, asked in {:.0} µs",
        backlog.records,
        backlog.bytes,
        asking.elapsed().as_secs_f64() * 1e6
    );
    assert_eq!(backlog.records, total as u64);
    history(&store, total);
    drop(store);

    let caps: &[u64] = if full { &[16, 6] } else { &[4] };
    for &cap in caps {
        budget_at_work(&events, cap);
    }
}

/// `/api/history`'s work for one vehicle of the fleet (a tenth of the
/// store): the scan of the whole store, then the GeoJSON and GPX documents.
fn history(store: &Store, total: usize) {
    use fixgate::readers::feed::history::{Format, Request, encode, scan};
    let from = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 11, 23, 6, 0, 0)
        .single()
        .expect("time");
    for format in [Format::GeoJson, Format::Gpx] {
        let request = Request {
            device: fixgate::fix::DeviceId::new("bus-1").expect("id"),
            from,
            to: from + chrono::Duration::days(30),
            format,
            limit: fixgate::readers::feed::history::MAX_LIMIT,
        };
        let started = Instant::now();
        let selection = match scan(&store.reader(), &request) {
            Ok(selection) => selection,
            Err(_) => panic!("history scan failed"),
        };
        let scanned = started.elapsed();
        let bytes: usize = encode(&request, &selection).map(|piece| piece.len()).sum();
        let elapsed = started.elapsed();
        let n = selection.positions.len();
        assert_eq!(n, total / VEHICLES, "every fix of the vehicle");
        println!(
            "history {format:?}: {n} fixes of one vehicle from a {total}-fix store in {:.2} s (scan {:.2} s) = {:.0} fixes/s, {:.1} B/fix",
            elapsed.as_secs_f64(),
            scanned.as_secs_f64(),
            n as f64 / elapsed.as_secs_f64(),
            bytes as f64 / n as f64
        );
    }
}

/// Appends `events` to a store capped at `cap_mib` with its budget passing
/// after every 4 batches (a flush interval's worth), as the daemon's budget
/// task does when the writer grows the store; reports what it did.
fn budget_at_work(events: &[Event], cap_mib: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store");
    let (store, _) = Store::open(&StoreOptions {
        path: path.clone(),
        cache_bytes: 16 << 20,
        flush_interval: std::time::Duration::from_secs(1),
    })
    .expect("open store");
    let cap = cap_mib << 20;
    let mut budget = Budget::new(
        store.clone(),
        Policy {
            limits: Limits {
                max_bytes: cap,
                high_water: 0.8,
                min_free_bytes: 0,
            },
            thin: Thin::DouglasPeucker { tolerance_m: 10.0 },
            // Nothing is acknowledged: the budget must thin, then drop.
            keep_unacked: true,
        },
    );
    let mut writer = store.writer().expect("writer");
    let (mut thinned, mut dropped, mut largest, mut largest_dir) = (0, 0, 0, 0);
    let started = Instant::now();
    for (i, batch) in events.chunks(BATCH).enumerate() {
        writer.append(batch).expect("append");
        if i % FLUSH_EVERY == FLUSH_EVERY - 1 {
            store.flush().expect("flush");
            let pass = budget.pass().expect("budget pass");
            thinned += pass.thinned;
            dropped += pass.dropped_positions + pass.dropped_events;
            largest = largest.max(store.size_on_disk().expect("size"));
            if i % (FLUSH_EVERY * 16) == FLUSH_EVERY - 1 {
                largest_dir = largest_dir.max(dir_bytes(&path));
            }
        }
    }
    store.flush().expect("flush");
    let elapsed = started.elapsed();
    let held = store.usage();
    drop((writer, budget, store));
    let final_dir = dir_bytes(&path);
    let n = events.len();
    println!("budget, cap {cap_mib} MiB, nothing acknowledged, Douglas-Peucker 10 m:");
    println!(
        "  appended {n} fixes at {:.0} fixes/s with a pass every {FLUSH_EVERY} batches",
        n as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  thinned {thinned} ({:.1}%), dropped {dropped} ({:.1}%), held {} at the end",
        100.0 * thinned as f64 / n as f64,
        100.0 * dropped as f64 / n as f64,
        held.records
    );
    println!(
        "  largest size_on_disk {largest} B = {:.0}% of the cap; directory {largest_dir} B while running, {final_dir} B after close",
        100.0 * largest as f64 / cap as f64
    );
    assert!(
        largest <= cap && final_dir <= cap,
        "the store outgrew its cap"
    );
}

/// Only appends: `fixes` fixes of `vehicles` vehicles in batches of `batch`,
/// a group commit every 4 batches. For counting the writer's instructions
/// per fix under callgrind (see BENCHMARKS.md, Store):
/// `valgrind --tool=callgrind --toggle-collect='*Writer::append_with_state*'
/// target/release/deps/store-HASH append-cost 1 16 20000`.
fn append_cost(vehicles: usize, batch: usize, fixes: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let events = common::fleet_events(vehicles, fixes);
    let (store, _) = Store::open(&StoreOptions {
        path: dir.path().join("store"),
        cache_bytes: 16 << 20,
        flush_interval: std::time::Duration::from_secs(1),
    })
    .expect("open store");
    let mut writer = store.writer().expect("writer");
    for (i, chunk) in events.chunks(batch.max(1)).enumerate() {
        writer.append(chunk).expect("append");
        if i % FLUSH_EVERY == FLUSH_EVERY - 1 {
            store.flush().expect("flush");
        }
    }
    store.close(writer.head()).expect("close");
    println!("appended {fixes} fixes of {vehicles} vehicles in batches of {batch}");
}
