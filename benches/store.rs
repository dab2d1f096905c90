//! Store benchmark: append rate and bytes on disk per fix.
//!
//! `cargo bench --bench store` appends 1,000,000 fixes of 10 simulated
//! vehicles in the writer's batches of 256 with a group commit every 4 batches
//! (about what a 1 s flush interval gives under that load), then reports the
//! append rate and the store's size on disk per fix, both as sled counts it
//! and as the directory occupies it after a clean close. Run as a test
//! (`cargo test --benches`) it does the same with 20,000 fixes, as a smoke test.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::Instant;

use fixgate::store::{Store, StoreOptions, segment};

use common::machine;

const VEHICLES: usize = 10;
const BATCH: usize = 256;
const FLUSH_EVERY: usize = 4;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
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
    for (i, batch) in events.chunks(BATCH).enumerate() {
        writer.append(batch).expect("append");
        if i % FLUSH_EVERY == FLUSH_EVERY - 1 {
            store.flush().expect("flush");
        }
    }
    store.flush().expect("flush");
    let elapsed = started.elapsed();
    let sled_bytes = store.size_on_disk().expect("size");
    drop(writer);
    drop(store);
    let dir_bytes = dir_size(&path);

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

    // Reopen and read everything back, so that a layout that loses data
    // cannot post a good figure.
    let opening = Instant::now();
    let (store, _) = Store::open(&StoreOptions {
        path,
        cache_bytes: 16 << 20,
        flush_interval: std::time::Duration::from_secs(1),
    })
    .expect("reopen");
    // Opening checks every stored value, so start-up grows with the store.
    println!(
        "reopen (validates all): {:.2} s",
        opening.elapsed().as_secs_f64()
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
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            // Allocated blocks, not apparent length: what the SD card loses.
            Ok(m) => std::os::unix::fs::MetadataExt::blocks(&m) * 512,
            Err(_) => 0,
        })
        .sum()
}
