//! The ledger checkpoint: what decoding each log value found, kept beside
//! sled's files so that a start need not decode values again.
//!
//! A start reads every log value through sled anyway (sled checks its own
//! CRC on every page it reads, which is how overwritten bytes in the middle
//! of its file are caught), but decoding them all to build the
//! [`super::ledger`] cost nearly all of a start with a large backlog (about
//! 0.35 µs per stored fix; a million-fix backlog took 0.39 s to `READY=1`).
//! The checkpoint records, per value, its length, its CRC-32 and the ledger
//! entry that decoding exactly those bytes gave. At the next start a value
//! whose length and CRC match is taken as decoded; any other value (appended
//! or rewritten since, or not in the checkpoint at all) is decoded as before,
//! and one that does not decode is damage, as before. So the checkpoint
//! never vouches for bytes that did not decode, and a stale, damaged or
//! missing checkpoint only costs time: the values it does not cover are
//! decoded. (A rewrite that kept a value's length and CRC-32, a one in 2³²
//! chance per rewrite, would leave that value's ledger entry stale; it
//! cannot hide damage on disk, which sled's own CRC catches first.)
//!
//! Written after a start that had to decode values, by the background check
//! every [`CHECK_EVERY`] and at a clean shutdown ([`super::Store::close`]).
//! The background check decodes the values the writer and the disk budget
//! changed since its last pass (the ledger notes which), so after a crash a
//! start decodes at most those of the last interval. If it finds a value
//! that does not decode, the running store cannot be moved aside: the value
//! is logged as an error and counted (`fixgate_store_damage_found_total`),
//! readers and the budget already skip it, and it stays out of the
//! checkpoint, so the next start decodes it, finds the damage and moves the
//! store aside as for any damage found at start.
//!
//! Format (version 1, little-endian): `FGLC`, version, 3 zero bytes, the
//! store's first sequence number (so that a checkpoint never applies to
//! another store), the number of values, then per value its first sequence
//! number (u64), slots, present, positions, bytes (u32 each), oldest time
//! (i64 ms), kind (u8: 0 raw, 1 segment, 2 thinned), value length and
//! CRC-32 (u32 each); last, the CRC-32 of everything before. A file of
//! another version is ignored (the values are decoded). It is replaced by a
//! rename and not synced: a file torn by a power cut fails its CRC and costs
//! one full decode.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use super::ledger::{Entry, Kind, Ledger};
use super::{Acked, StoreError, describe_key, kind_of, lock, log_key, segment, seq_of_key};
use crate::telemetry;

/// The file's name in the store directory.
pub const FILE: &str = "fixgate-ledger";
/// How often the background check decodes what changed and rewrites the
/// checkpoint: after a crash, the next start decodes at most this long's
/// appends and rewrites.
pub const CHECK_EVERY: Duration = Duration::from_secs(300);

const MAGIC: &[u8; 4] = b"FGLC";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 24;
const RECORD_LEN: usize = 41;

/// What decoding one value found, and how to recognise the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// The value's length.
    pub len: u32,
    /// Its CRC-32.
    pub crc: u32,
    /// Its ledger entry, from decoding it.
    pub entry: Entry,
}

/// Decodes one log value (its key `key_len` bytes long): its ledger entry,
/// and what recognises its bytes again.
pub fn check(key_len: usize, value: &[u8]) -> Result<Checked, segment::SegmentError> {
    let slots = segment::decode(value)?;
    Ok(Checked {
        len: u32::try_from(value.len()).unwrap_or(u32::MAX),
        crc: crc32fast::hash(value),
        entry: Entry::of(
            slots.iter().map(Option::as_ref),
            key_len + value.len(),
            kind_of(value),
        ),
    })
}

/// What a start did with the checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Use {
    /// Why there was none to use: missing, damaged, of another store or
    /// version. `None` when one was read.
    pub unusable: Option<String>,
    /// Values taken from the checkpoint, not decoded.
    pub trusted: u64,
    /// Values decoded (all of them without a checkpoint).
    pub decoded: u64,
}

/// A checkpoint that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Too short, a bad CRC or a wrong magic number.
    #[error("the ledger checkpoint is damaged ({0})")]
    Damaged(&'static str),
    /// Written by another fixgate.
    #[error("the ledger checkpoint is of version {0}, not {VERSION}")]
    Version(u8),
    /// Written for another store (this directory was replaced or copied).
    #[error("the ledger checkpoint is of another store (first sequence number {0})")]
    OtherStore(u64),
}

fn kind_byte(kind: Kind) -> u8 {
    match kind {
        Kind::Raw => 0,
        Kind::Segment => 1,
        Kind::Thinned => 2,
    }
}

/// The checkpoint file's bytes.
pub fn encode(store_first: u64, values: &BTreeMap<u64, Checked>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + values.len() * RECORD_LEN + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[VERSION, 0, 0, 0]);
    out.extend_from_slice(&store_first.to_le_bytes());
    out.extend_from_slice(&(values.len() as u64).to_le_bytes());
    for (first, c) in values {
        let e = &c.entry;
        out.extend_from_slice(&first.to_le_bytes());
        for n in [e.slots, e.present, e.positions, e.bytes] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&e.oldest_ms.to_le_bytes());
        out.push(kind_byte(e.kind));
        out.extend_from_slice(&c.len.to_le_bytes());
        out.extend_from_slice(&c.crc.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads little-endian fields in order; `None` past the end.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
}

fn record(fields: &mut Fields<'_>) -> Option<(u64, Checked)> {
    let first = fields.u64()?;
    let (slots, present, positions, bytes) =
        (fields.u32()?, fields.u32()?, fields.u32()?, fields.u32()?);
    let oldest_ms = fields.take().map(i64::from_le_bytes)?;
    let kind = match fields.take::<1>()?[0] {
        0 => Kind::Raw,
        1 => Kind::Segment,
        2 => Kind::Thinned,
        _ => return None,
    };
    let (len, crc) = (fields.u32()?, fields.u32()?);
    let entry = Entry {
        slots,
        present,
        positions,
        bytes,
        oldest_ms,
        kind,
    };
    Some((first, Checked { len, crc, entry }))
}

/// Reads a checkpoint file's bytes, written for the store whose first
/// sequence number is `store_first`.
pub fn decode(bytes: &[u8], store_first: u64) -> Result<BTreeMap<u64, Checked>, CheckpointError> {
    let (body, crc) = bytes
        .split_last_chunk::<4>()
        .ok_or(CheckpointError::Damaged("too short"))?;
    if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
        return Err(CheckpointError::Damaged("bad CRC"));
    }
    let mut fields = Fields(body);
    let short = CheckpointError::Damaged("too short");
    if fields.take::<4>().as_ref() != Some(MAGIC) {
        return Err(CheckpointError::Damaged("not a checkpoint"));
    }
    let version = fields.take::<4>().ok_or(short.clone())?[0];
    if version != VERSION {
        return Err(CheckpointError::Version(version));
    }
    let first = fields.u64().ok_or(short.clone())?;
    if first != store_first {
        return Err(CheckpointError::OtherStore(first));
    }
    let count = fields.u64().ok_or(short.clone())?;
    if u64::try_from(fields.0.len() / RECORD_LEN).ok() != Some(count)
        || fields.0.len() % RECORD_LEN != 0
    {
        return Err(CheckpointError::Damaged("wrong length"));
    }
    let mut values = BTreeMap::new();
    while !fields.0.is_empty() {
        let (first, checked) = record(&mut fields).ok_or(CheckpointError::Damaged("bad kind"))?;
        values.insert(first, checked);
    }
    Ok(values)
}

/// The checkpoint of the store at `dir`, or why none can be used.
pub fn load(dir: &Path, store_first: u64) -> Result<BTreeMap<u64, Checked>, String> {
    match std::fs::read(dir.join(FILE)) {
        Ok(bytes) => decode(&bytes, store_first).map_err(|e| e.to_string()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err("missing".to_owned()),
        Err(err) => Err(format!("unreadable: {err}")),
    }
}

/// Replaces the checkpoint at `dir`.
pub fn save(dir: &Path, store_first: u64, values: &BTreeMap<u64, Checked>) -> io::Result<()> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, encode(store_first, values))?;
    std::fs::rename(&tmp, dir.join(FILE))
}

/// The values checked at open or since, as the next checkpoint will say.
#[derive(Debug, Default)]
pub(super) struct Verified {
    /// By first sequence number.
    values: BTreeMap<u64, Checked>,
    /// Whether they differ from the file.
    dirty: bool,
    /// Bytes of values decoded since the file was written: a pass rewrites
    /// the file only once they reach its own size, so that a gateway taking
    /// fixes does not rewrite its whole checkpoint every pass (the SD card's
    /// wear); a crash then costs the next start decoding at most that much.
    unsaved: u64,
}

impl Verified {
    /// Whether a pass should write the file now.
    fn worth_saving(&self, damaged: u64) -> bool {
        let file = (HEADER_LEN + self.values.len() * RECORD_LEN + 4) as u64;
        self.dirty && (damaged > 0 || self.unsaved >= file)
    }
}

/// The checkpoint as a start uses it: what it trusts, and what was checked.
#[derive(Debug)]
pub(super) struct Opening {
    /// The checkpoint's values not met yet.
    trusted: BTreeMap<u64, Checked>,
    /// Every value met, for the next checkpoint.
    pub(super) verified: Verified,
    /// What the checkpoint saved.
    pub(super) used: Use,
}

impl Opening {
    /// The checkpoint of the store at `dir` whose first sequence number is
    /// `store_first`; none (every value decoded) when it cannot be used.
    pub(super) fn load(dir: &Path, store_first: u64) -> Self {
        let (trusted, unusable) = match load(dir, store_first) {
            Ok(trusted) => (trusted, None),
            Err(why) => (BTreeMap::new(), Some(why)),
        };
        Self {
            trusted,
            verified: Verified::default(),
            used: Use {
                unusable,
                ..Use::default()
            },
        }
    }

    /// The ledger entry of the value at `first`: the checkpoint's when it
    /// has these very bytes, else from decoding them.
    pub(super) fn take(
        &mut self,
        first: u64,
        key: &[u8],
        value: &[u8],
    ) -> Result<Entry, segment::SegmentError> {
        let known = self.trusted.remove(&first).filter(|c| {
            usize::try_from(c.len).ok() == Some(value.len()) && c.crc == crc32fast::hash(value)
        });
        let checked = match known {
            Some(checked) => {
                self.used.trusted += 1;
                checked
            }
            None => {
                self.used.decoded += 1;
                check(key.len(), value)?
            }
        };
        self.verified.values.insert(first, checked);
        Ok(checked.entry)
    }

    /// After the last value: the file needs rewriting if anything was
    /// decoded or it named values that are gone.
    pub(super) fn finish(&mut self) {
        let used = &self.used;
        self.verified.dirty =
            used.decoded > 0 || !self.trusted.is_empty() || used.unusable.is_some();
        // The open's own decoding is not counted: a stale file is written by
        // the first pass whatever its size.
        self.verified.unsaved = if self.verified.dirty { u64::MAX } else { 0 };
        self.trusted = BTreeMap::new();
        match &used.unusable {
            Some(why) if why != "missing" => tracing::warn!(
                "store: {why}; all {} values were decoded instead",
                used.decoded
            ),
            _ => tracing::debug!(
                trusted = used.trusted,
                decoded = used.decoded,
                "store: ledger read"
            ),
        }
    }
}

/// What one pass of the background check did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Values decoded.
    pub decoded: u64,
    /// Values that did not decode (logged and counted).
    pub damaged: u64,
    /// Whether the checkpoint file was rewritten.
    pub saved: bool,
}

/// Keeps the checkpoint current for one open store; the background thread
/// holds it weakly, so that dropping the last [`super::Store`] ends both.
pub(super) struct Keeper {
    db: sled::Db,
    ledger: Arc<Mutex<Ledger>>,
    dir: PathBuf,
    store_first: u64,
    verified: Mutex<Verified>,
    stop: Arc<Stop>,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper").field("dir", &self.dir).finish()
    }
}

/// The state behind `mutex`, whoever panicked while holding it: each
/// update here is one assignment or one map insert, whole or not at all.
fn guard<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Tells the background thread to end.
#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    /// Waits up to `timeout`; whether the thread should end.
    fn wait(&self, timeout: Duration) -> bool {
        let stopped = guard(&self.stopped);
        let (stopped, _) = self
            .wake
            .wait_timeout_while(stopped, timeout, |stopped| !*stopped)
            .unwrap_or_else(PoisonError::into_inner);
        *stopped
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        *guard(&self.stop.stopped) = true;
        self.stop.wake.notify_all();
    }
}

impl Keeper {
    /// A keeper of the checkpoint of the store in `dir` (whose first
    /// sequence number is `store_first`), with nothing checked yet.
    pub(super) fn new(
        db: &sled::Db,
        ledger: &Arc<Mutex<Ledger>>,
        dir: &Path,
        store_first: u64,
    ) -> Self {
        Self {
            db: db.clone(),
            ledger: ledger.clone(),
            dir: dir.to_owned(),
            store_first,
            verified: Mutex::new(Verified::default()),
            stop: Arc::new(Stop::default()),
        }
    }

    /// Takes over what the open checked and starts the background check
    /// (every [`CHECK_EVERY`]).
    /// Without a thread (none could be made) the store still opens: the
    /// checkpoint is then written at close only, which costs a crash's next
    /// start time, nothing else.
    pub(super) fn start(self, verified: Verified) -> Result<Arc<Self>, StoreError> {
        *guard(&self.verified) = verified;
        let keeper = Arc::new(self);
        if let Err(err) = Self::spawn(&keeper, CHECK_EVERY) {
            telemetry::STORE_ERRORS.with(["check"]).increment(1);
            tracing::warn!("store: the background check could not start: {err}");
        }
        Ok(keeper)
    }

    /// Starts the background check: a pass at once when the open left the
    /// file stale, then one every `every`, until the keeper is dropped.
    pub(super) fn spawn(keeper: &Arc<Self>, every: Duration) -> io::Result<()> {
        let weak: Weak<Self> = Arc::downgrade(keeper);
        let stop = keeper.stop.clone();
        let now = guard(&keeper.verified).dirty;
        std::thread::Builder::new()
            .name("fixgate-store-check".to_owned())
            .spawn(move || {
                let mut wait = if now { Duration::ZERO } else { every };
                while !stop.wait(wait) {
                    let Some(keeper) = weak.upgrade() else { return };
                    if let Err(err) = keeper.pass() {
                        telemetry::STORE_ERRORS.with(["check"]).increment(1);
                        tracing::warn!("store: the background check failed: {err}");
                    }
                    wait = every;
                }
            })
            .map(drop)
    }

    /// Decodes every value the ledger says changed since the last pass and
    /// rewrites the checkpoint if anything changed. Damage is logged, counted
    /// and left out of the checkpoint (see the module's doc).
    pub(super) fn pass(&self) -> Result<Pass, StoreError> {
        self.pass_saving(false)
    }

    /// A pass that writes the file whenever anything changed (at close).
    pub(super) fn pass_and_save(&self) -> Result<Pass, StoreError> {
        self.pass_saving(true)
    }

    fn pass_saving(&self, always: bool) -> Result<Pass, StoreError> {
        let mut verified = guard(&self.verified);
        let changed = lock(&self.ledger).take_changed();
        let mut pass = Pass::default();
        if let Err(err) = self.check_ranges(&changed, &mut verified, &mut pass) {
            lock(&self.ledger).restore_changed(&changed);
            return Err(err);
        }
        if (always && verified.dirty) || verified.worth_saving(pass.damaged) {
            save(&self.dir, self.store_first, &verified.values).map_err(|source| {
                StoreError::Checkpoint {
                    path: self.dir.join(FILE),
                    source,
                }
            })?;
            verified.dirty = false;
            verified.unsaved = 0;
            pass.saved = true;
        }
        Ok(pass)
    }

    fn check_ranges(
        &self,
        changed: &Acked,
        verified: &mut Verified,
        pass: &mut Pass,
    ) -> Result<(), StoreError> {
        for range in changed.iter() {
            let (lo, hi) = (*range.start(), *range.end());
            let mut found = Vec::new();
            for item in self.db.range(log_key(lo)..=log_key(hi)) {
                let (key, value) = item?;
                let Some(first) = seq_of_key(&key) else {
                    continue;
                };
                found.push(first);
                pass.decoded += 1;
                verified.unsaved = verified.unsaved.saturating_add(value.len() as u64);
                match check(key.len(), &value) {
                    Ok(checked) => {
                        verified.values.insert(first, checked);
                    }
                    Err(err) => {
                        pass.damaged += 1;
                        verified.values.remove(&first);
                        telemetry::STORE_DAMAGE_FOUND.increment(1);
                        tracing::error!(
                            "store: DAMAGE FOUND by the background check at {}: {err}; readers skip it, and the next start moves the store aside",
                            describe_key(&key)
                        );
                    }
                }
            }
            // What the checkpoint holds in the range and sled no longer does.
            let gone: Vec<u64> = verified
                .values
                .range(lo..=hi)
                .map(|(first, _)| *first)
                .filter(|first| found.binary_search(first).is_err())
                .collect();
            for first in gone {
                verified.values.remove(&first);
            }
            verified.dirty = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(slots: u32, crc: u32, kind: Kind) -> Checked {
        Checked {
            len: 100 + slots,
            crc,
            entry: Entry {
                slots,
                present: slots - 1,
                positions: slots / 2,
                bytes: 109 + slots,
                oldest_ms: -5,
                kind,
            },
        }
    }

    fn sample() -> BTreeMap<u64, Checked> {
        [
            (10, checked(256, 7, Kind::Segment)),
            (266, checked(200, u32::MAX, Kind::Thinned)),
            (522, checked(1, 0, Kind::Raw)),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn round_trips_and_only_for_its_own_store() {
        let bytes = encode(10, &sample());
        assert_eq!(bytes.len(), HEADER_LEN + 3 * RECORD_LEN + 4);
        assert_eq!(decode(&bytes, 10), Ok(sample()));
        assert_eq!(decode(&bytes, 11), Err(CheckpointError::OtherStore(10)));
        assert_eq!(decode(&encode(1, &BTreeMap::new()), 1), Ok(BTreeMap::new()));
    }

    #[test]
    fn any_damage_makes_it_unusable() {
        let bytes = encode(10, &sample());
        for at in [0, 4, 9, 20, 30, HEADER_LEN + 40, bytes.len() - 1] {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x04;
            assert!(decode(&flipped, 10).is_err(), "flip at {at}");
        }
        for len in [0, 3, 4, HEADER_LEN, bytes.len() - 1] {
            assert!(decode(&bytes[..len], 10).is_err(), "cut at {len}");
        }
        // A future version with a valid CRC is not read as this one.
        let mut newer = bytes[..bytes.len() - 4].to_vec();
        newer[4] = VERSION + 1;
        let crc = crc32fast::hash(&newer);
        newer.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode(&newer, 10),
            Err(CheckpointError::Version(VERSION + 1))
        );
    }

    #[test]
    fn load_says_why_there_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), 1), Err("missing".to_owned()));
        save(dir.path(), 1, &sample()).unwrap();
        assert_eq!(load(dir.path(), 1), Ok(sample()));
        std::fs::write(dir.path().join(FILE), b"FGLC").unwrap();
        assert!(load(dir.path(), 1).unwrap_err().contains("damaged"));
    }
}

/// The checkpoint at work in a store: what a start trusts, decodes and
/// finds, and the background check.
#[cfg(test)]
mod store_tests {
    use super::*;
    use crate::fix::{DeviceId, Event, Fix, Position};
    use crate::store::tests::options;
    use crate::store::{OpenReport, Store, StoreOptions, Writer};
    use chrono::{TimeZone, Utc};

    fn events(from: u64, n: u64) -> Vec<Event> {
        (from..from + n)
            .map(|i| {
                Event::Position(Position::new(
                    DeviceId::new(["a", "b", "c"][(i % 3) as usize]).unwrap(),
                    Fix {
                        time: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
                            + chrono::Duration::seconds(i as i64),
                        lat: 52.0 + i as f64 * 1e-5,
                        lon: 5.0,
                        alt: None,
                        speed: Some(1.5),
                        course: None,
                        hdop: None,
                        sats: Some(7),
                        mode: None,
                        accuracy: None,
                    },
                ))
            })
            .collect()
    }

    fn values(store: &Store) -> u64 {
        store.db.scan_prefix([super::super::LOG]).count() as u64
    }

    /// Every ledger entry, to compare with what decoding everything gives.
    fn entries(store: &Store) -> Vec<(u64, Entry)> {
        lock(&store.ledger).iter().collect()
    }

    /// The ledger a start builds without a checkpoint.
    fn decoded_ledger(opts: &StoreOptions) -> Vec<(u64, Entry)> {
        let copy = tempfile::tempdir().unwrap();
        let to = copy.path().join("store");
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(&opts.path).unwrap().flatten() {
            let path = entry.path();
            if path.is_file() && entry.file_name() != FILE {
                std::fs::copy(&path, to.join(entry.file_name())).unwrap();
            }
        }
        let (store, report) = Store::open_in_test(&options(copy.path()));
        assert_eq!(report.checkpoint.unusable.as_deref(), Some("missing"));
        assert_eq!(report.checkpoint.trusted, 0);
        entries(&store)
    }

    /// Events in a segment.
    const SEG: u64 = segment::SEGMENT_RECORDS as u64;
    /// Events in [`closed_store`]: two segments and a raw tail of 88.
    const CLOSED: u64 = 2 * SEG + 88;

    /// A store with two segments and a raw tail of 88 (one value: an
    /// append's events share one), closed cleanly.
    fn closed_store(opts: &StoreOptions) -> u64 {
        let (store, _) = Store::open_in_test(opts);
        let mut writer = store.writer().unwrap();
        writer.append(&events(0, CLOSED)).unwrap();
        store.close(writer.head()).unwrap();
        writer.head()
    }

    /// Reopens the store; the ledger and the value count as the open left
    /// them, before the writer (after a crash, it seals the raw tail).
    fn reopen(opts: &StoreOptions) -> (Store, OpenReport, Writer, Vec<(u64, Entry)>) {
        let (store, report) = Store::open_in_test(opts);
        assert_eq!(
            report.checkpoint.trusted + report.checkpoint.decoded,
            values(&store)
        );
        let ledger = entries(&store);
        let writer = store.writer().unwrap();
        (store, report, writer, ledger)
    }

    #[test]
    fn after_a_clean_close_a_start_decodes_nothing_and_builds_the_same_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path());
        let head = closed_store(&opts);
        let (store, report, writer, ledger) = reopen(&opts);
        let used = &report.checkpoint;
        assert_eq!(used.unusable, None);
        assert_eq!((used.trusted, used.decoded), (2 + 1, 0));
        assert_eq!(writer.head(), head);
        assert_eq!(ledger, decoded_ledger(&opts));
        assert_eq!(ledger, entries(&store));
        assert_eq!(store.usage().records, CLOSED);
    }

    #[test]
    fn a_stale_checkpoint_costs_decoding_only_what_changed_since() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path());
        let head = closed_store(&opts);
        let (store, _, mut writer, _) = reopen(&opts);
        // Appends (a compaction of the old raw tail among them) and the
        // budget's kind of rewrite of the first segment, then a crash: no
        // close, no pass of the background check.
        writer.append(&events(CLOSED, SEG + 32 - 88)).unwrap();
        let first = store.first_seq().unwrap();
        let value = store.db.get(log_key(first)).unwrap().unwrap();
        let slots = segment::decode(&value).unwrap();
        let kept: Vec<Option<&Event>> = slots
            .iter()
            .enumerate()
            .map(|(i, e)| e.as_ref().filter(|_| i % 2 == 0))
            .collect();
        let rewritten = segment::encode_rewritten(kept.iter().copied(), true);
        store.db.insert(log_key(first), rewritten.clone()).unwrap();
        lock(&store.ledger).put(first, check(9, &rewritten).unwrap().entry);
        store.flush().unwrap();
        drop((writer, store));

        let (store, report, writer, ledger) = reopen(&opts);
        let used = &report.checkpoint;
        // Trusted: the second segment; decoded: the rewritten first one, the
        // new segment at the old tail's start and the new raw tail of 32 (in
        // one value).
        assert_eq!(used.unusable, None);
        assert_eq!((used.trusted, used.decoded), (1, 2 + 1));
        assert!(writer.head() > head + 200, "a crash: numbering jumped");
        assert_eq!(store.usage().records, CLOSED + SEG + 32 - 88 - SEG / 2);
        assert_eq!(ledger, decoded_ledger(&opts));
    }

    #[test]
    fn a_damaged_missing_or_foreign_checkpoint_means_decoding_everything() {
        for damage in ["damaged", "missing", "another store"] {
            let dir = tempfile::tempdir().unwrap();
            let opts = options(dir.path());
            closed_store(&opts);
            let file = opts.path.join(FILE);
            match damage {
                "damaged" => {
                    let mut bytes = std::fs::read(&file).unwrap();
                    bytes[HEADER_LEN + 3] ^= 0x20;
                    std::fs::write(&file, bytes).unwrap();
                }
                "missing" => std::fs::remove_file(&file).unwrap(),
                _ => {
                    let other = tempfile::tempdir().unwrap();
                    closed_store(&options(other.path()));
                    std::fs::copy(options(other.path()).path.join(FILE), &file).unwrap();
                }
            }
            let (store, report, _writer, _) = reopen(&opts);
            let why = report.checkpoint.unusable.clone().expect(damage);
            assert!(why.contains(damage), "{why}");
            assert_eq!(report.checkpoint.trusted, 0, "{damage}");
            assert_eq!(report.checkpoint.decoded, 2 + 1, "{damage}");
            assert_eq!(store.usage().records, CLOSED, "{damage}");
            // The background check writes a good one at once.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while load(&opts.path, store.first_seq().unwrap()).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{damage}: not rewritten"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    #[test]
    fn damage_behind_a_checkpoint_is_still_found_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path());
        closed_store(&opts);
        let (store, _, _writer, _) = reopen(&opts);
        // Bytes that sled stores intact but that do not decode, under a key
        // the checkpoint vouches for.
        let first = store.first_seq().unwrap();
        store.db.insert(log_key(first), &[7u8, 7, 7][..]).unwrap();
        store.flush().unwrap();
        drop((_writer, store));
        let (_store, report) = Store::open_in_test(&opts);
        let (_, cause) = report.quarantined.expect("quarantined");
        assert!(cause.contains("damaged record"), "{cause}");
    }

    #[test]
    fn the_background_check_keeps_the_checkpoint_current_and_finds_damage() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path());
        let head = closed_store(&opts);
        let (store, _, mut writer, _) = reopen(&opts);
        let more = SEG + 132 - 88;
        writer.append(&events(CLOSED, more)).unwrap();
        let pass = store.checks.pass().unwrap();
        // The old tail's new segment and the raw tail of 132 (one value).
        assert_eq!(
            pass,
            Pass {
                decoded: 1 + 1,
                damaged: 0,
                saved: true
            }
        );
        assert_eq!(store.checks.pass().unwrap(), Pass::default());
        // A writer that wrote a value that does not decode.
        writer.append(&events(CLOSED + more, 1)).unwrap();
        let bad = head + more + 1;
        store.db.insert(log_key(bad), &[9u8, 9][..]).unwrap();
        let pass = store.checks.pass().unwrap();
        assert_eq!((pass.decoded, pass.damaged), (1, 1));
        let saved = load(&opts.path, store.first_seq().unwrap()).unwrap();
        // The damaged value is left out; the tail's good value before it stays.
        assert!(!saved.contains_key(&bad));
        assert!(saved.keys().any(|&at| at > head && at < bad));
        // Readers serve around it.
        let read = store.reader().read_after(head, usize::MAX).unwrap();
        assert_eq!(read.len() as u64, more);
        // A crash: the next start decodes only that value, and moves the
        // store aside.
        store.flush().unwrap();
        drop((writer, store));
        let (_store, report) = Store::open_in_test(&opts);
        let (aside, cause) = report.quarantined.expect("quarantined");
        assert!(cause.contains("damaged record"), "{cause}");
        let (old, _) = Store::open_in_test(&StoreOptions {
            path: aside,
            ..opts.clone()
        });
        drop(old);
    }

    #[test]
    fn a_small_change_is_written_at_close_not_by_every_pass() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path());
        closed_store(&opts);
        let (store, _, mut writer, _) = reopen(&opts);
        // One more event in the raw tail: decoded, but fewer bytes than the
        // checkpoint file, so not worth rewriting it yet.
        writer.append(&events(CLOSED, 1)).unwrap();
        let pass = store.checks.pass().unwrap();
        assert_eq!((pass.decoded, pass.saved), (1, false), "{pass:?}");
        let head = writer.head();
        store.close(head).unwrap();
        drop((writer, store));
        let (_store, report, _writer, _) = reopen(&opts);
        assert_eq!(report.checkpoint.decoded, 0, "{:?}", report.checkpoint);
    }

    #[test]
    fn after_a_pass_a_crash_costs_no_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path());
        closed_store(&opts);
        let (store, _, mut writer, _) = reopen(&opts);
        writer.append(&events(CLOSED, 4 * SEG + 64 - 88)).unwrap();
        store.checks.pass().unwrap();
        store.flush().unwrap();
        drop((writer, store));
        let (store, report, _writer, _) = reopen(&opts);
        assert_eq!(report.checkpoint.decoded, 0, "{:?}", report.checkpoint);
        // Six segments and the raw tail of 64 in one value.
        assert_eq!(report.checkpoint.trusted, 6 + 1);
        assert_eq!(store.usage().records, 6 * SEG + 64);
    }

    #[test]
    fn the_thread_checks_on_its_own_and_ends_with_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path());
        closed_store(&opts);
        let (store, _, mut writer, _) = reopen(&opts);
        let before = std::fs::metadata(opts.path.join(FILE)).unwrap().len();
        Keeper::spawn(&store.checks, Duration::from_millis(20)).unwrap();
        writer.append(&events(CLOSED, 256)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(opts.path.join(FILE)).unwrap().len() == before {
            assert!(std::time::Instant::now() < deadline, "no pass");
            std::thread::sleep(Duration::from_millis(10));
        }
        let weak = Arc::downgrade(&store.checks);
        drop((writer, store));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while weak.upgrade().is_some() {
            assert!(std::time::Instant::now() < deadline, "kept alive");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
