//! The durable store: every accepted event, by sequence number, in sled.
//!
//! One sled tree holds everything, under one-byte key prefixes, so that an
//! event, its device's last-known state and the segment bookkeeping change in
//! one atomic `apply_batch` (sled batches are atomic within a tree only):
//!
//! * `L` + big-endian first sequence number → a [`segment`] value (the raw
//!   events of one append, or a compacted segment of them); big-endian keys
//!   iterate in order;
//! * `D` + device id → that device's live position and its sequence number
//!   (historic positions never replace it), written once per append: its
//!   last;
//! * `S` + device id → that device's last status change;
//! * `G` + device id → that device's geofence state (the tracker's bytes,
//!   opaque here), written in the batch of the fix that changed it;
//! * `R` + device id → the group the device was last seen reporting under
//!   (an MQTT topic's), see [`crate::groups`];
//! * `M` + name → metadata (the first sequence number of this store).
//!
//! Beside that tree, `line_speeds` holds what serial receivers were last
//! found at (see [`speeds`]): a setting, not a record.
//!
//! Exactly one [`Writer`] appends; any number of [`Reader`]s read by sequence
//! number. Durability is by group commit: [`Store::flush`] (called by one
//! flusher, in `spawn_blocking`) makes everything appended before it durable.

pub mod budget;
pub mod checkpoint;
pub mod flusher;
pub mod ledger;
pub mod mark;
pub mod segment;
pub mod speeds;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};

use crate::fix::{DeviceId, Event, Fix, GroupId, Position, Presence, Record, Status};
use crate::telemetry;
use ledger::{Entry, Kind, Ledger, Usage};

const LOG: u8 = b'L';
const DEVICE: u8 = b'D';
const STATUS: u8 = b'S';
const ZONES: u8 = b'G';
const GROUP: u8 = b'R';
const META: u8 = b'M';
const META_FIRST_SEQ: &[u8] = b"Mfirst_seq";
const META_UPLINK_ACKED: &[u8] = b"Muplink_acked";
/// Where numbering last jumped past a reservation (a start after a crash):
/// the numbers up to it are a hole, accounted for like held ones.
const META_RESUMED_AT: &[u8] = b"Mresumed_at";
/// How often one read seeks again after the writer moved values under it.
const MAX_RESEEKS: u32 = 8;

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The sled directory.
    pub path: PathBuf,
    /// sled's page cache in bytes (sled defaults to 1 GiB, far too much for a Pi).
    pub cache_bytes: u64,
    /// How often sled's own background flusher runs.
    pub flush_interval: Duration,
}

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error (I/O, corruption, full disk).
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// A stored value does not decode.
    #[error("store: damaged record at key {key}: {source}")]
    Damaged {
        /// The key, as a sequence number or device id.
        key: String,
        /// What is wrong with it.
        source: segment::SegmentError,
    },
    /// sled opened without an error but holds less than was durable: it
    /// takes damage in its log for the torn end of a crash and silently
    /// drops everything after it (seen here with bytes overwritten or the
    /// file cut short). Numbering on from there would reuse sequence numbers.
    #[error(
        "store: the log ends at sequence number {held} but {durable} was durable: sled dropped damaged data"
    )]
    RolledBack {
        /// The last sequence number the log holds.
        held: u64,
        /// The last one recorded as durable, beside the log.
        durable: u64,
    },
    /// sled panicked while opening the store: it does on some damage (bytes
    /// overwritten at the start of its log: "tried to serialize Uninitialized").
    #[error("store: sled panicked while opening: {0}")]
    Panicked(String),
    /// The durable mark (see [`mark`]) cannot be read or written: without it
    /// no sequence number may be handed out.
    #[error("store: the durable mark {path}: {source}")]
    Mark {
        /// The mark file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Moving a damaged store aside failed: the daemon cannot start fresh.
    #[error("store at {path} failed to open ({cause}) and could not be moved aside: {source}")]
    Quarantine {
        /// The store directory.
        path: PathBuf,
        /// Why it was being moved.
        cause: String,
        /// Why the move failed.
        source: std::io::Error,
    },
    /// The ledger checkpoint (see [`checkpoint`]) could not be written: the
    /// next start decodes more values, nothing is lost.
    #[error("store: the ledger checkpoint {path}: {source}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A store call handed to the blocking pool did not finish: the
    /// runtime dropped it (it is shutting down).
    #[error("store: a call on the blocking pool did not finish: {0}")]
    Interrupted(String),
}

impl StoreError {
    /// Whether the error means the stored data is damaged. A full disk, a
    /// read-only file system, missing permissions or a store locked by
    /// another process are not: moving the store aside would not help, and
    /// would hide good data behind a fresh, empty store.
    pub fn is_damage(&self) -> bool {
        use std::io::ErrorKind as K;
        match self {
            Self::Damaged { .. } | Self::RolledBack { .. } | Self::Panicked(_) => true,
            Self::Quarantine { .. }
            | Self::Mark { .. }
            | Self::Checkpoint { .. }
            | Self::Interrupted(_) => false,
            Self::Sled(sled::Error::Io(io)) => {
                let environment = matches!(
                    io.kind(),
                    K::StorageFull
                        | K::QuotaExceeded
                        | K::ReadOnlyFilesystem
                        | K::PermissionDenied
                        | K::ResourceBusy
                        | K::OutOfMemory
                        | K::Interrupted
                );
                !self.is_locked() && !environment
            }
            Self::Sled(sled::Error::CollectionNotFound(_)) => false,
            Self::Sled(_) => true,
        }
    }

    /// Whether sled refused the store because its file lock is held: by
    /// another process, or (sled#1234) by the background thread of a `Db`
    /// this process dropped a moment ago.
    pub fn is_locked(&self) -> bool {
        matches!(self, Self::Sled(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock"))
    }

    /// Whether the store failed because its disk (or quota) is full.
    pub fn is_disk_full(&self) -> bool {
        let io = match self {
            Self::Sled(sled::Error::Io(io)) => io,
            Self::Mark { source, .. } => source,
            _ => return false,
        };
        matches!(
            io.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        )
    }
}

/// The last things known about a device, kept beside the log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceState {
    /// The device.
    pub device: DeviceId,
    /// Sequence number of its live position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Its live fix (stored precision); never a historic one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<Fix>,
    /// Whether it is reporting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Presence>,
    /// When that status began.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::fix::time_ms::serialize_opt"
    )]
    pub since: Option<DateTime<Utc>>,
    /// Its geofence state as the tracker stored it (see
    /// [`crate::pipeline::geofence::Zones`]); opaque to the store.
    #[serde(skip)]
    pub zones: Option<Vec<u8>>,
    /// The group it was last seen reporting under (see [`crate::groups`]).
    #[serde(skip)]
    pub reported_group: Option<GroupId>,
}

impl DeviceState {
    fn empty(device: DeviceId) -> Self {
        Self {
            device,
            seq: None,
            fix: None,
            status: None,
            since: None,
            zones: None,
            reported_group: None,
        }
    }

    /// The live position as the feed's `position` event.
    pub fn position(&self) -> Option<Position> {
        let fix = self.fix.clone()?;
        Some(Position::new(self.device.clone(), fix))
    }

    /// The status as the feed's `status` event.
    pub fn status_event(&self) -> Option<Status> {
        Some(Status {
            device: self.device.clone(),
            status: self.status?,
            time: self.since?,
        })
    }
}

/// Sequence numbers acknowledged upstream (inclusive ranges).
pub type Acked = rangemap::RangeInclusiveSet<u64>;

/// What [`Store::open`] had to do.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Where a damaged store was moved, if it was.
    pub quarantined: Option<(PathBuf, String)>,
    /// Whether the store was created now (empty).
    pub created: bool,
    /// Every device's state, as read (and checked) while opening.
    pub devices: Vec<DeviceState>,
    /// Something wrong with the durable mark that did not stop the store
    /// from opening (a damaged copy, a missing or unreadable file), and what
    /// was done about it: to be logged loudly and counted.
    pub mark_problem: Option<String>,
    /// Sequence numbers skipped at this start: the previous run may have
    /// handed them out without making them durable (a crash), so they are
    /// never handed out again.
    pub skipped: u64,
    /// How much of the ledger came from the checkpoint rather than from
    /// decoding (see [`checkpoint`]).
    pub checkpoint: checkpoint::Use,
}

/// The writer's licence to hand out sequence numbers: the highest one the
/// durable mark allows, raised (and synced) before any number past it is
/// used, so that no number is ever handed out twice, whatever a crash or a
/// damaged log loses.
#[derive(Debug)]
struct Reservation {
    file: Mutex<mark::MarkFile>,
    /// What the file on disk allows; read without the lock by the writer.
    ceiling: AtomicU64,
    path: PathBuf,
}

impl Reservation {
    fn error(&self, source: std::io::Error) -> StoreError {
        StoreError::Mark {
            path: self.path.clone(),
            source,
        }
    }

    /// Raises the ceiling to at least `upto`, waiting for the disk.
    fn reserve(&self, upto: u64) -> Result<(), StoreError> {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let durable = file.mark().durable;
        let written = file
            .write(mark::Mark {
                durable,
                reserved: upto,
            })
            .map_err(|e| self.error(e))?;
        self.ceiling.store(written.reserved, Ordering::Release);
        Ok(())
    }

    /// Records `durable` after a group commit, reserving ahead of `head`.
    fn record(&self, durable: u64, head: u64) -> Result<(), StoreError> {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let written = file
            .write(mark::Mark {
                durable,
                reserved: head.saturating_add(mark::STEP),
            })
            .map_err(|e| self.error(e))?;
        self.ceiling.store(written.reserved, Ordering::Release);
        Ok(())
    }

    /// At a clean shutdown: everything up to `head` is durable and nothing
    /// past it was handed out, so the next start numbers on without a hole.
    fn tighten(&self, head: u64) -> Result<(), StoreError> {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.tighten(mark::Mark {
            durable: head,
            reserved: head,
        })
        .map_err(|e| self.error(e))?;
        self.ceiling.store(head, Ordering::Release);
        Ok(())
    }
}

/// The opened store: hands out the one writer and readers.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    ledger: Arc<Mutex<Ledger>>,
    path: Arc<PathBuf>,
    reservation: Arc<Reservation>,
    /// Numbers up to this may have been handed out before this start.
    floor: u64,
    /// Keeps the ledger checkpoint current; its thread ends with the last clone.
    checks: Arc<checkpoint::Keeper>,
}

/// What [`Store::open_checked`] read.
struct Opened {
    db: sled::Db,
    ledger: Ledger,
    /// The last sequence number the log holds.
    held: u64,
    /// Every value as checked, and how much the checkpoint saved.
    verified: checkpoint::Opening,
}

/// The durable mark as found at open, reduced to what the store needs.
#[derive(Debug, Clone, Copy)]
enum Found {
    /// No mark file.
    None,
    /// A mark, possibly with one copy damaged.
    Mark(mark::Read),
    /// A file that holds no intact copy.
    Damaged,
}

impl Found {
    fn read(dir: &Path) -> Result<Self, StoreError> {
        match mark::read(dir) {
            Ok(None) => Ok(Self::None),
            Ok(Some(Ok(read))) => Ok(Self::Mark(read)),
            Ok(Some(Err(_))) => Ok(Self::Damaged),
            // A store directory that does not exist yet has no mark.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::None),
            Err(source) => Err(StoreError::Mark {
                path: dir.join(mark::FILE),
                source,
            }),
        }
    }

    fn durable(self) -> Option<u64> {
        match self {
            Self::Mark(read) => Some(read.mark.durable),
            _ => None,
        }
    }

    /// The highest number the previous run (of this store, or of the one
    /// moved aside) may have handed out; what is wrong with the mark goes
    /// to `problem`. `held` is the last number the log holds.
    fn floor(self, fresh: bool, held: u64, problem: &mut Option<String>) -> u64 {
        match self {
            Found::Mark(read) => {
                if read.one_damaged {
                    *problem = Some(format!(
                        "one copy of the durable mark was damaged (a torn write at a power cut, or a failing card); numbering goes on after {}",
                        read.ceiling()
                    ));
                }
                read.ceiling()
            }
            // A store made now needs none; one moved aside without a mark
            // leaves the wall clock as the only floor (below).
            Found::None if fresh => 0,
            Found::None | Found::Damaged => {
                let floor = held.saturating_add(2 * mark::STEP).max(now_micros());
                *problem = Some(format!(
                    "the durable mark was {}: damage in the log's tail cannot be checked this once, and numbering jumps to {floor} so that no number is reused",
                    if matches!(self, Found::None) {
                        "missing"
                    } else {
                        "damaged (no intact copy)"
                    }
                ));
                floor
            }
        }
    }
}

/// The wall clock in microseconds: where a store numbers from when nothing
/// better is known (a fresh store, a mark that was lost).
fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
        .max(1)
}

impl Store {
    /// [`Store::open`] for tests that reopen a store they have just
    /// dropped. sled lets go of its file lock from a background thread a
    /// moment after the last `Db` is dropped (sled#1234), so an immediate
    /// reopen can find it still locked; the daemon opens its store once per
    /// process and never meets this.
    #[cfg(test)]
    pub(crate) fn open_in_test(options: &StoreOptions) -> (Self, OpenReport) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match Self::open(options) {
                Err(err) if err.is_locked() && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                opened => return opened.unwrap_or_else(|err| panic!("open the store: {err}")),
            }
        }
    }

    /// Opens the store, moving a damaged one aside (kept for diagnosis) and
    /// starting fresh rather than refusing to start.
    ///
    /// Sequence numbers go on after the highest the durable mark says may
    /// have been handed out, so none is reused after a crash, after damage
    /// that was caught (a fresh store starts above it) or after damage that
    /// was not.
    pub fn open(options: &StoreOptions) -> Result<(Self, OpenReport), StoreError> {
        let mut report = OpenReport::default();
        let found = Found::read(&options.path)?;
        let opened = match Self::open_unwinding(options, found.durable()) {
            Ok(opened) => opened,
            Err(cause) if cause.is_damage() => {
                let aside = quarantine(&options.path, &cause.to_string())?;
                report.quarantined = Some((aside, cause.to_string()));
                Self::open_unwinding(options, None)?
            }
            Err(cause) => return Err(cause),
        };
        let (db, held) = (opened.db, opened.held);
        report.checkpoint = opened.verified.used.clone();
        let fresh = db.get(META_FIRST_SEQ)?.is_none();
        let floor = found.floor(fresh, held, &mut report.mark_problem);
        if fresh {
            report.created = true;
            // A replaced store must never reuse a sequence number the old one
            // handed out (the feed and the uplink identify events by it), so a
            // new store starts past the old one's reservation, and at least at
            // the wall clock in microseconds, past anything a store whose mark
            // was lost with it can have numbered.
            let first = now_micros().max(floor.saturating_add(1));
            db.insert(META_FIRST_SEQ, &first.to_be_bytes())?;
            db.flush()?;
        }
        let first = first_seq_of(&db)?;
        let held = if fresh { first - 1 } else { held };
        let start = held.max(floor).max(first - 1);
        report.skipped = start - held;
        let file = mark::MarkFile::create(
            &options.path,
            mark::Mark {
                durable: held,
                reserved: start.saturating_add(mark::STEP),
            },
            match found {
                Found::Mark(read) => read.generation,
                _ => 0,
            },
        )
        .map_err(|source| StoreError::Mark {
            path: options.path.join(mark::FILE),
            source,
        })?;
        let reservation = Reservation {
            ceiling: AtomicU64::new(file.mark().reserved),
            file: Mutex::new(file),
            path: options.path.join(mark::FILE),
        };
        let ledger = Arc::new(Mutex::new(opened.ledger));
        let keeper = checkpoint::Keeper::new(&db, &ledger, &options.path, first);
        let checks = keeper.start(opened.verified.verified)?;
        let store = Self {
            db,
            ledger,
            path: Arc::new(options.path.clone()),
            reservation: Arc::new(reservation),
            floor: start,
            checks,
        };
        report.devices = store.reader().devices()?;
        Ok((store, report))
    }

    /// [`Store::open_checked`], with a panic inside sled taken for damage
    /// rather than left to stop the daemon at every start.
    fn open_unwinding(options: &StoreOptions, durable: Option<u64>) -> Result<Opened, StoreError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::open_checked(options, durable)
        }))
        .unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_owned());
            Err(StoreError::Panicked(message))
        })
    }

    /// Opens sled and reads every log value once, so that damage shows now
    /// rather than in the middle of serving: sled checks its CRC on every
    /// page it reads, and a value is decoded unless the checkpoint has its
    /// exact bytes as decoded before. The same read builds the ledger.
    /// Returns the last sequence number the log holds, which must not be
    /// below `durable`, the mark's.
    fn open_checked(options: &StoreOptions, durable: Option<u64>) -> Result<Opened, StoreError> {
        let db = sled::Config::new()
            .path(&options.path)
            .cache_capacity(options.cache_bytes)
            // sled's background flusher must run: with it off, the log's IO
            // buffers are only written by an explicit flush, and a writer that
            // fills them between two flushes spins in sled forever (seen here).
            // It also gives sled idle time for its page GC. Our flusher still
            // does the group commit that reports what is durable.
            .flush_every_ms(Some(
                u64::try_from(options.flush_interval.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            ))
            .open()?;
        let first = first_seq_of(&db)?;
        let mut verified = checkpoint::Opening::load(&options.path, first);
        let mut entries = Vec::new();
        for item in db.scan_prefix([LOG]) {
            let (key, value) = item?;
            let damaged = |source| StoreError::Damaged {
                key: describe_key(&key),
                source,
            };
            let seq =
                seq_of_key(&key).ok_or_else(|| damaged(segment::SegmentError::Layout(0xff)))?;
            entries.push((seq, verified.take(seq, &key, &value).map_err(damaged)?));
        }
        verified.finish();
        // Everything is checked: the background check starts from here.
        let ledger: Ledger = entries.into_iter().collect();
        let resumed_at = db
            .get(META_RESUMED_AT)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        let held = ledger
            .iter()
            .next_back()
            .map_or(first - 1, |(at, e)| at + u64::from(e.slots) - 1)
            .max(resumed_at);
        if let Some(durable) = durable.filter(|&d| held < d) {
            return Err(StoreError::RolledBack { held, durable });
        }
        Ok(Opened {
            db,
            ledger,
            held,
            verified,
        })
    }

    /// The single writer. Call once: two writers would hand out the same numbers.
    pub fn writer(&self) -> Result<Writer, StoreError> {
        Writer::resume(
            self.db.clone(),
            self.ledger.clone(),
            self.reservation.clone(),
            self.floor,
        )
    }

    /// The remembered line speeds of serial receivers (see [`speeds`]).
    pub fn line_speeds(&self) -> Result<speeds::LineSpeeds, StoreError> {
        speeds::LineSpeeds::open(&self.db)
    }

    /// A reader; cheap, clone as needed.
    pub fn reader(&self) -> Reader {
        Reader {
            db: self.db.clone(),
        }
    }

    /// Makes everything appended so far durable. Blocks: call it from one flusher
    /// thread, never `flush_async` (it deadlocks under concurrency, sled#1308).
    pub fn flush(&self) -> Result<usize, StoreError> {
        Ok(self.db.flush()?)
    }

    /// The first sequence number this store handed out (or will hand out).
    pub fn first_seq(&self) -> Result<u64, StoreError> {
        first_seq_of(&self.db)
    }

    /// Records, beside sled's files, that everything up to `durable` is
    /// durable, and reserves numbers ahead of the writer's `head`; call after
    /// every [`Store::flush`] that covered `durable`. [`Store::open`] then
    /// knows a log that ends before `durable` lost data to damage (sled would
    /// open it without a word). One small in-place write and a sync.
    pub fn record_durable(&self, durable: u64, head: u64) -> Result<(), StoreError> {
        self.reservation.record(durable, head)
    }

    /// A clean shutdown, after the writer has stopped at `head`: makes
    /// everything durable and tells the next start that nothing past `head`
    /// was handed out, so that it numbers on without a hole.
    ///
    /// Then decodes what changed since the background check's last pass and
    /// rewrites the ledger checkpoint, so that the next start decodes
    /// nothing; a failure there is logged, not returned (it costs the next
    /// start time, nothing else).
    pub fn close(&self, head: u64) -> Result<(), StoreError> {
        self.flush()?;
        self.reservation.tighten(head)?;
        if let Err(err) = self.checks.pass_and_save() {
            telemetry::STORE_ERRORS.with(["check"]).increment(1);
            tracing::warn!("store: the ledger checkpoint was not written at shutdown: {err}");
        }
        Ok(())
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sequence numbers the upstream has acknowledged, as ranges.
    pub fn uplink_acked(&self) -> Result<Acked, StoreError> {
        let Some(value) = self.db.get(META_UPLINK_ACKED)? else {
            return Ok(Acked::new());
        };
        let ranges: Vec<(u64, u64)> =
            postcard::from_bytes(&value).map_err(|e| StoreError::Damaged {
                key: describe_key(META_UPLINK_ACKED),
                source: segment::SegmentError::Body(e),
            })?;
        Ok(ranges.into_iter().map(|(a, b)| a..=b).collect())
    }

    /// Records what the upstream has acknowledged. Durable with the next
    /// flush; losing it to a crash only means re-sending (receivers drop
    /// duplicates by sequence number).
    pub fn set_uplink_acked(&self, acked: &Acked) -> Result<(), StoreError> {
        let ranges: Vec<(u64, u64)> = acked.iter().map(|r| (*r.start(), *r.end())).collect();
        // A vector of integer pairs always serialises.
        let value = postcard::to_stdvec(&ranges).unwrap_or_default();
        self.db.insert(META_UPLINK_ACKED, value)?;
        Ok(())
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Everything buffered: events held, their bytes (before sled's own
    /// overhead) and the oldest event's time. Kept up to date in memory:
    /// costs a lock and a look at the oldest value.
    pub fn usage(&self) -> Usage {
        lock(&self.ledger).usage()
    }

    /// What the upstream has not acknowledged yet, for the uplink to report:
    /// events, their bytes and the oldest one's time. Reads the acknowledged
    /// ranges (one small sled value) and walks the in-memory ledger over the
    /// unacknowledged ranges only; values partly acknowledged are counted
    /// in proportion. Use [`Store::backlog_given`] when the ranges are at hand.
    pub fn backlog(&self) -> Result<Usage, StoreError> {
        let acked = self.uplink_acked()?;
        Ok(self.backlog_given(&acked))
    }

    /// [`Store::backlog`] with the acknowledged ranges supplied by the caller.
    pub fn backlog_given(&self, acked: &Acked) -> Usage {
        lock(&self.ledger).backlog(acked)
    }
}

/// The ledger, whoever panicked while holding it: its totals are updated
/// after each sled write, so it is at worst one write behind.
fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(PoisonError::into_inner)
}

fn kind_of(value: &[u8]) -> Kind {
    if segment::is_raw(value) {
        Kind::Raw
    } else if segment::is_thinned(value) {
        Kind::Thinned
    } else {
        Kind::Segment
    }
}

/// The first sequence number of a store (1 if it never recorded one).
fn first_seq_of(db: &sled::Db) -> Result<u64, StoreError> {
    Ok(db
        .get(META_FIRST_SEQ)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(1)
        .max(1))
}

/// Moves a damaged store directory aside, next to where it was.
fn quarantine(path: &Path, cause: &str) -> Result<PathBuf, StoreError> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".damaged-{stamp}"));
    let aside = path.with_file_name(name);
    std::fs::rename(path, &aside).map_err(|source| StoreError::Quarantine {
        path: path.to_owned(),
        cause: cause.to_owned(),
        source,
    })?;
    Ok(aside)
}

fn log_key(seq: u64) -> [u8; 9] {
    let mut k = [LOG; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn seq_of_key(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

fn state_key(prefix: u8, device: &DeviceId) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + device.as_str().len());
    k.push(prefix);
    k.extend_from_slice(device.as_str().as_bytes());
    k
}

fn describe_key(key: &[u8]) -> String {
    match key.first() {
        Some(&LOG) => seq_of_key(key).map_or_else(|| format!("{key:?}"), |s| format!("seq {s}")),
        Some(&DEVICE) | Some(&STATUS) | Some(&ZONES) | Some(&GROUP) | Some(&META) => {
            String::from_utf8_lossy(key).into_owned()
        }
        _ => format!("{key:?}"),
    }
}

/// Device state on disk (`D` and `S` keys): a sequence number then one raw event.
fn encode_device(seq: u64, event: &Event) -> Vec<u8> {
    let mut v = seq.to_be_bytes().to_vec();
    v.extend_from_slice(&segment::encode_raw(event));
    v
}

fn decode_device(key: &[u8], value: &[u8]) -> Result<(u64, Event), StoreError> {
    let damaged = |source| StoreError::Damaged {
        key: describe_key(key),
        source,
    };
    let seq = value
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or(damaged(segment::SegmentError::Inconsistent(
            "short device state",
        )))?;
    let event = segment::decode(&value[8..])
        .map_err(damaged)?
        .into_iter()
        .flatten()
        .next()
        .ok_or(damaged(segment::SegmentError::Inconsistent(
            "empty device state",
        )))?;
    Ok((seq, event))
}

/// Folds one `D` or `S` record into a device's state.
fn merge_device(states: &mut BTreeMap<DeviceId, DeviceState>, seq: u64, event: Event) {
    let device = event.device().clone();
    let state = states
        .entry(device.clone())
        .or_insert_with(|| DeviceState::empty(device));
    match event {
        Event::Position(p) => {
            state.seq = Some(seq);
            state.fix = Some(p.fix);
        }
        Event::Status(s) => {
            state.status = Some(s.status);
            state.since = Some(s.time);
        }
        // Not device state: `append` never stores one under `D` or `S`.
        Event::Geofence(_) => {}
    }
}

/// Geofence state (or a group) that cannot be read leaves devices without
/// zones rather than failing the whole snapshot: after a write error (a full
/// disk) sled may refuse reads of pages it no longer holds, and the positions
/// it still serves matter more than the zones.
fn zones_unreadable(err: &sled::Error) {
    telemetry::STORE_ERRORS.with(["zones"]).increment(1);
    tracing::debug!("store: devices' geofence state not read: {err}");
}

/// Adds a `G` record to its device's state. A key that is not a device id
/// (it cannot be written so) is skipped: the state is only geofence
/// hysteresis, not worth refusing to open the store for.
fn merge_zones(states: &mut BTreeMap<DeviceId, DeviceState>, key: &[u8], value: Vec<u8>) {
    let Some(device) = std::str::from_utf8(&key[1..])
        .ok()
        .and_then(|id| DeviceId::new(id).ok())
    else {
        tracing::warn!("store: skipping geofence state under a bad key {key:?}");
        return;
    };
    states
        .entry(device.clone())
        .or_insert_with(|| DeviceState::empty(device))
        .zones = Some(value);
}

/// Adds an `R` record to its device's state; one that does not read (it
/// cannot be written so) is skipped: the group is learned again at the
/// device's next report.
fn merge_group(states: &mut BTreeMap<DeviceId, DeviceState>, key: &[u8], value: &[u8]) {
    let device = std::str::from_utf8(&key[1..])
        .ok()
        .and_then(|id| DeviceId::new(id).ok());
    let group = std::str::from_utf8(value)
        .ok()
        .and_then(|g| GroupId::new(g).ok());
    let (Some(device), Some(group)) = (device, group) else {
        tracing::warn!("store: skipping a device group under a bad key or value");
        return;
    };
    states
        .entry(device.clone())
        .or_insert_with(|| DeviceState::empty(device))
        .reported_group = Some(group);
}

/// The one appender: gives each event the next sequence number.
pub struct Writer {
    db: sled::Db,
    ledger: Arc<Mutex<Ledger>>,
    reservation: Arc<Reservation>,
    next_seq: u64,
    /// Raw events not yet compacted; the first has sequence number `tail_first`.
    tail: Vec<Event>,
    tail_first: u64,
    /// The keys of the raw values that hold the tail, ascending: one per
    /// append (one per event in stores written before appends were kept
    /// whole), all replaced when the tail is compacted.
    tail_keys: Vec<u64>,
}

/// What an append changes in the writer's memory and the ledger, applied
/// only once sled has taken the batch (so that a failed append changes
/// nothing and can be retried).
#[derive(Default)]
struct Appended {
    /// Log values the batch removes (the raw tail, when it was compacted).
    removed: Vec<u64>,
    /// Log values the batch writes, with what the ledger learns of them.
    written: Vec<(u64, Entry)>,
    /// Events of the tail (and the append) now in segments.
    compacted: usize,
}

impl Writer {
    /// Picks up where the log ends: the next number, and the raw tail to
    /// compact later. Numbering goes on after `floor` when the last run may
    /// have handed out numbers the log does not hold (a crash); the raw tail
    /// is then compacted at once into a short segment, since the budget only
    /// ever leaves raw values at the very end of the log alone.
    fn resume(
        db: sled::Db,
        ledger: Arc<Mutex<Ledger>>,
        reservation: Arc<Reservation>,
        floor: u64,
    ) -> Result<Self, StoreError> {
        let first = first_seq_of(&db)?;
        let mut next_seq = None;
        let mut raw = Vec::new();
        // Walk back over the raw values at the end of the log: they are the tail.
        for item in db.scan_prefix([LOG]).rev() {
            let (key, value) = item?;
            let damaged = |source| StoreError::Damaged {
                key: describe_key(&key),
                source,
            };
            let seq = seq_of_key(&key).ok_or(damaged(segment::SegmentError::Layout(0xff)))?;
            let slots = segment::decode(&value).map_err(damaged)?;
            next_seq.get_or_insert(seq + slots.len() as u64);
            if !segment::is_raw(&value) {
                break;
            }
            raw.push((seq, slots.into_iter().flatten()));
        }
        let next_seq = next_seq.unwrap_or(first);
        let tail_first = raw.last().map_or(next_seq, |(seq, _)| *seq);
        let tail_keys: Vec<u64> = raw.iter().rev().map(|(seq, _)| *seq).collect();
        let tail: Vec<Event> = raw
            .into_iter()
            .rev()
            .flat_map(|(_, events)| events)
            .collect();
        let mut writer = Self {
            db,
            ledger,
            reservation,
            next_seq,
            tail,
            tail_first,
            tail_keys,
        };
        if floor >= next_seq {
            writer.jump(floor)?;
        }
        Ok(writer)
    }

    /// Numbers on after `floor`: compacts the raw tail, however short, into
    /// one segment (the budget leaves raw values alone only at the end of
    /// the log) and records where the hole ends, so that a later start takes
    /// the log as reaching `floor` even before anything follows it.
    fn jump(&mut self, floor: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.insert(META_RESUMED_AT, &floor.to_be_bytes());
        let sealed = if self.tail.is_empty() {
            None
        } else {
            let first = self.tail_first;
            let value = segment::encode_segment(self.tail.iter());
            let entry = Entry::of(self.tail.iter().map(Some), 9 + value.len(), Kind::Segment);
            // The segment's insert comes last: it wins over the removal of
            // the raw value under the same key.
            for &key in &self.tail_keys {
                batch.remove(&log_key(key)[..]);
            }
            batch.insert(&log_key(first)[..], value);
            Some((first, entry))
        };
        self.db.apply_batch(batch)?;
        self.next_seq = floor + 1;
        self.tail_first = floor + 1;
        let Some((first, entry)) = sealed else {
            return Ok(());
        };
        let mut ledger = lock(&self.ledger);
        for &key in &self.tail_keys {
            ledger.remove(key);
        }
        ledger.put(first, entry);
        drop(ledger);
        self.tail.clear();
        self.tail_keys.clear();
        Ok(())
    }

    /// The sequence number of the last appended event (one less than the first
    /// number when nothing was ever appended).
    pub fn head(&self) -> u64 {
        self.next_seq - 1
    }

    /// Appends events in one atomic batch, updates their devices' last-known
    /// state, and compacts the raw tail when a segment's worth has gathered.
    /// Returns the sequence number of the last one. Not durable until the next
    /// [`Store::flush`]. On error nothing changed and the call can be retried.
    pub fn append(&mut self, events: &[Event]) -> Result<u64, StoreError> {
        self.append_with_zones(events, &[])
    }

    /// [`Writer::append`], storing devices' new geofence state in the same
    /// atomic batch as the events (the fixes and geofence events) that
    /// changed it, so that after a crash the state and the events agree.
    pub fn append_with_zones(
        &mut self,
        events: &[Event],
        zones: &[(DeviceId, Vec<u8>)],
    ) -> Result<u64, StoreError> {
        self.append_with_state(events, zones, &[])
    }

    /// [`Writer::append_with_zones`], also storing the groups devices were
    /// learned to report under.
    pub fn append_with_state(
        &mut self,
        events: &[Event],
        zones: &[(DeviceId, Vec<u8>)],
        groups: &[(DeviceId, GroupId)],
    ) -> Result<u64, StoreError> {
        // Never number past what the durable mark allows: a crash must not
        // let the next start hand out these numbers again.
        let last = self.next_seq + events.len() as u64;
        if last > self.reservation.ceiling.load(Ordering::Acquire) {
            self.reservation.reserve(last.saturating_add(mark::STEP))?;
        }
        let mut batch = sled::Batch::default();
        for (device, bytes) in zones {
            batch.insert(state_key(ZONES, device), bytes.as_slice());
        }
        for (device, group) in groups {
            batch.insert(state_key(GROUP, device), group.as_str().as_bytes());
        }
        put_device_states(&mut batch, events, self.next_seq);
        let appended = self.log_writes(&mut batch, events);
        self.db.apply_batch(batch)?;
        {
            let mut ledger = lock(&self.ledger);
            for &key in &appended.removed {
                ledger.remove(key);
            }
            for (first, entry) in appended.written {
                ledger.put(first, entry);
            }
        }
        let appended_at = self.next_seq;
        self.next_seq += events.len() as u64;
        self.tail.extend_from_slice(events);
        if appended.compacted > 0 {
            self.tail.drain(..appended.compacted);
            self.tail_first += appended.compacted as u64;
            self.tail_keys.clear();
            if !self.tail.is_empty() {
                self.tail_keys.push(self.tail_first);
            }
        } else if !events.is_empty() {
            self.tail_keys.push(appended_at);
        }
        Ok(self.next_seq - 1)
    }

    /// Adds an append's events to `batch`: as one raw value (the whole
    /// append under its first number, so one sled key however many events),
    /// or, once a segment's worth has gathered, as the segments that replace
    /// the raw tail and a raw value for what is left over.
    fn log_writes(&self, batch: &mut sled::Batch, events: &[Event]) -> Appended {
        let mut appended = Appended::default();
        let pending = self.tail.len() + events.len();
        let compacted = pending - pending % segment::SEGMENT_RECORDS;
        if compacted == 0 {
            if !events.is_empty() {
                appended.written.push(put_raw(batch, self.next_seq, events));
            }
            return appended;
        }
        // The segments take the first key of the tail and the removals drop
        // the rest of its raw values: one batch, so a crash sees either.
        // Inserts come after the removals, which they win over.
        for &key in &self.tail_keys {
            batch.remove(&log_key(key)[..]);
            appended.removed.push(key);
        }
        let all: Vec<&Event> = self.tail.iter().chain(events).collect();
        for (i, chunk) in all[..compacted]
            .chunks_exact(segment::SEGMENT_RECORDS)
            .enumerate()
        {
            let first = self.tail_first + (i * segment::SEGMENT_RECORDS) as u64;
            let value = segment::encode_segment(chunk.iter().copied());
            let entry = Entry::of(
                chunk.iter().copied().map(Some),
                9 + value.len(),
                Kind::Segment,
            );
            batch.insert(&log_key(first)[..], value);
            appended.written.push((first, entry));
        }
        let rest = &all[compacted..];
        if !rest.is_empty() {
            let first = self.tail_first + compacted as u64;
            appended
                .written
                .push(put_raw(batch, first, rest.iter().copied()));
        }
        appended.compacted = compacted;
        appended
    }
}

/// Adds one raw value holding `events` under `first`; returns its ledger entry.
fn put_raw<'a, I>(batch: &mut sled::Batch, first: u64, events: I) -> (u64, Entry)
where
    I: IntoIterator<Item = &'a Event>,
    I::IntoIter: Clone + ExactSizeIterator,
{
    let events = events.into_iter();
    let value = segment::encode_raw_run(events.clone());
    let entry = Entry::of(events.map(Some), 9 + value.len(), Kind::Raw);
    batch.insert(&log_key(first)[..], value);
    (first, entry)
}

/// Adds each device's live position and status as of an append (its events
/// numbered from `first`) to `batch`: the last of each per device, written
/// once however many the append holds.
fn put_device_states(batch: &mut sled::Batch, events: &[Event], first: u64) {
    let mut written: HashSet<(u8, &DeviceId)> = HashSet::new();
    for (i, event) in events.iter().enumerate().rev() {
        let prefix = match event {
            // Logged only: a historic position never replaces the live one,
            // and what a device's zones are is not kept here.
            Event::Position(p) if p.historic => continue,
            Event::Geofence(_) => continue,
            Event::Position(_) => DEVICE,
            Event::Status(_) => STATUS,
        };
        if written.insert((prefix, event.device())) {
            batch.insert(
                state_key(prefix, event.device()),
                encode_device(first + i as u64, event),
            );
        }
    }
}

/// Reads events by sequence number and device snapshots; any number may exist.
#[derive(Clone)]
pub struct Reader {
    db: sled::Db,
}

impl Reader {
    /// The oldest sequence number the store still holds an event for, or
    /// `None` when empty.
    pub fn oldest(&self) -> Result<Option<u64>, StoreError> {
        for item in self.db.scan_prefix([LOG]) {
            let (key, value) = item?;
            let (Some(first), Ok(slots)) = (seq_of_key(&key), segment::decode(&value)) else {
                continue;
            };
            if let Some(i) = slots.iter().position(Option::is_some) {
                return Ok(Some(first + i as u64));
            }
        }
        Ok(None)
    }

    /// Up to `limit` events with sequence numbers greater than `after`, in
    /// order. Numbers the disk budget removed are skipped, so a result may
    /// have holes; it never has repeats.
    pub fn read_after(&self, after: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.read_counting(after, limit, &mut 0)
    }

    /// [`Reader::read_after`], adding the seeks it repeated to `reseeks_total`.
    fn read_counting(
        &self,
        after: u64,
        limit: usize,
        reseeks_total: &mut u32,
    ) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        let mut next = after.saturating_add(1);
        // sled's iterators are not snapshots: when the writer compacts raw
        // values into a segment while we iterate, the raw keys ahead of us
        // vanish and the iterator skips to whatever follows. So a key past
        // `next` is checked: if a value (a new segment) holds `next`, seek
        // again from there; if none does, `next` is in a gap (left by the
        // disk budget, a skipped damaged value, or a cursor from before the
        // oldest record) and the read goes on from that key, at no extra cost.
        let mut reseeks = 0;
        'seek: loop {
            // The value holding `next` may start before it (a compacted segment).
            let found = self
                .db
                .range(log_key(0)..=log_key(next))
                .keys()
                .next_back()
                .transpose()?
                .and_then(|k| seq_of_key(&k));
            let start = found.unwrap_or(next);
            let mut visited = false;
            for item in self.db.range(log_key(start)..log_key(u64::MAX)) {
                visited = true;
                let (key, value) = item?;
                let Some(first) = seq_of_key(&key) else {
                    continue;
                };
                if first > next {
                    if reseeks < MAX_RESEEKS && self.holds(next)? {
                        reseeks += 1;
                        *reseeks_total += 1;
                        continue 'seek;
                    }
                    next = first;
                }
                let slots = match segment::decode(&value) {
                    Ok(slots) => slots,
                    Err(err) => {
                        // Readers skip what cannot be decoded rather than stall on it.
                        telemetry::STORE_ERRORS.with(["decode"]).increment(1);
                        tracing::error!(
                            "store: skipping damaged value at {}: {err}",
                            describe_key(&key)
                        );
                        continue;
                    }
                };
                for (i, slot) in slots.into_iter().enumerate() {
                    let seq = first + i as u64;
                    if seq < next {
                        continue;
                    }
                    next = seq + 1;
                    // The limit is on seeks without progress: a long
                    // read under a busy writer may need many.
                    reseeks = 0;
                    if let Some(event) = slot {
                        out.push(Record { seq, event });
                        if out.len() >= limit {
                            return Ok(out);
                        }
                    }
                }
            }
            // The value found a moment ago is gone: compacted into a segment
            // that starts before it, or deleted by the disk budget.
            if found.is_some() && !visited && reseeks < MAX_RESEEKS {
                reseeks += 1;
                *reseeks_total += 1;
                continue;
            }
            return Ok(out);
        }
    }

    /// Whether a value holds sequence number `seq` right now (as an event or
    /// a gone slot).
    fn holds(&self, seq: u64) -> Result<bool, StoreError> {
        let Some((key, value)) = self
            .db
            .range(log_key(0)..=log_key(seq))
            .next_back()
            .transpose()?
        else {
            return Ok(false);
        };
        let Some(first) = seq_of_key(&key) else {
            return Ok(false);
        };
        if first == seq {
            return Ok(true);
        }
        // A raw value holds one append's events, a segment up to a
        // segment's worth: decoded to count.
        Ok(segment::decode(&value).is_ok_and(|slots| first + slots.len() as u64 > seq))
    }

    /// The last-known state of every device, ordered by device id.
    pub fn devices(&self) -> Result<Vec<DeviceState>, StoreError> {
        let mut states = BTreeMap::new();
        for prefix in [DEVICE, STATUS] {
            for item in self.db.scan_prefix([prefix]) {
                let (key, value) = item?;
                let (seq, event) = decode_device(&key, &value)?;
                merge_device(&mut states, seq, event);
            }
        }
        for item in self.db.scan_prefix([ZONES]) {
            match item {
                Ok((key, value)) => merge_zones(&mut states, &key, value.to_vec()),
                Err(err) => {
                    zones_unreadable(&err);
                    break;
                }
            }
        }
        for item in self.db.scan_prefix([GROUP]) {
            match item {
                Ok((key, value)) => merge_group(&mut states, &key, &value),
                // As for the zones: positions matter more than groups, which
                // are learned again at each device's next report.
                Err(err) => {
                    zones_unreadable(&err);
                    break;
                }
            }
        }
        Ok(states.into_values().collect())
    }

    /// The last-known state of one device.
    pub fn device(&self, device: &DeviceId) -> Result<Option<DeviceState>, StoreError> {
        let mut states = BTreeMap::new();
        for prefix in [DEVICE, STATUS] {
            let key = state_key(prefix, device);
            if let Some(value) = self.db.get(&key)? {
                let (seq, event) = decode_device(&key, &value)?;
                merge_device(&mut states, seq, event);
            }
        }
        let key = state_key(ZONES, device);
        match self.db.get(&key) {
            Ok(Some(value)) => merge_zones(&mut states, &key, value.to_vec()),
            Ok(None) => {}
            Err(err) => zones_unreadable(&err),
        }
        let key = state_key(GROUP, device);
        match self.db.get(&key) {
            Ok(Some(value)) => merge_group(&mut states, &key, &value),
            Ok(None) => {}
            Err(err) => zones_unreadable(&err),
        }
        Ok(states.into_values().next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fix::{Fix, FixMode, Geofence};
    use chrono::{TimeZone, Utc};

    /// A small store in `dir` that commits often (shared by the store's tests).
    pub(super) fn options(dir: &Path) -> StoreOptions {
        StoreOptions {
            flush_interval: Duration::from_millis(100),
            path: dir.join("store"),
            cache_bytes: 1 << 20,
        }
    }

    fn event(device: &str, i: u64) -> Event {
        Event::Position(Position::new(
            DeviceId::new(device).unwrap(),
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
                mode: Some(FixMode::TwoD),
                accuracy: None,
            },
        ))
    }

    fn seqs(records: &[Record]) -> Vec<u64> {
        records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn geofence_state_is_kept_per_device_beside_its_fix_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let bus = DeviceId::new("bus-1").unwrap();
        {
            let (store, _) = Store::open_in_test(&options(dir.path()));
            let mut writer = store.writer().unwrap();
            writer
                .append_with_zones(&[event("bus-1", 1)], &[(bus.clone(), vec![1, 2, 3])])
                .unwrap();
            writer
                .append_with_zones(&[event("bus-1", 2)], &[(bus.clone(), vec![1, 4])])
                .unwrap();
            // A device known only by its zones still has a state.
            writer
                .append_with_zones(&[], &[(DeviceId::new("van-2").unwrap(), vec![1])])
                .unwrap();
            store.flush().unwrap();
        }
        let (store, report) = Store::open_in_test(&options(dir.path()));
        let zones: Vec<_> = report
            .devices
            .iter()
            .map(|d| (d.device.as_str(), d.zones.clone()))
            .collect();
        assert_eq!(
            zones,
            vec![("bus-1", Some(vec![1, 4])), ("van-2", Some(vec![1]))]
        );
        let one = store.reader().device(&bus).unwrap().unwrap();
        assert_eq!(one.zones, Some(vec![1, 4]));
        // Zones are not events: the log holds the two fixes only.
        let records = store.reader().read_after(0, 10).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(one.seq, Some(records[1].seq));
    }

    /// The events of `tests/fixtures/store-before-runs`, a store written
    /// by the writer before it kept each append in one raw value (one value
    /// per event then; commit 3fa21c8): a status with zones and a group,
    /// 290 positions of two devices in appends of 1, 7, 250, 3 and 29, then
    /// a historic position and a geofence event. So a segment of 256 and a
    /// raw tail of 37 one-event values. Returned at the stored precision.
    fn written_before_runs() -> Vec<Event> {
        let at = |s: i64| {
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(s)
        };
        let position = |j: u64| {
            let device = if j % 2 == 0 { "bus-1" } else { "van-2" };
            let mut fix = Fix::new(at(j as i64), 52.0 + j as f64 * 1e-5, 5.0 - j as f64 * 2e-5);
            fix.alt = Some(10.0 + j as f64 * 0.1);
            (fix.speed, fix.course, fix.hdop) = (Some(1.5), Some(90.0), Some(0.9));
            (fix.sats, fix.mode) = (Some(7), Some(FixMode::ThreeD));
            Event::Position(Position::new(DeviceId::new(device).unwrap(), fix))
        };
        let mut events = vec![Event::Status(Status {
            device: DeviceId::new("bus-1").unwrap(),
            status: Presence::Online,
            time: at(0),
        })];
        events.extend((0..290).map(position));
        let mut old = position(5);
        if let Event::Position(p) = &mut old {
            p.historic = true;
        }
        events.push(old);
        events.push(Event::Geofence(Geofence::example("bus-1", at(300))));
        events
            .iter()
            .flat_map(|e| segment::decode(&segment::encode_raw(e)).unwrap())
            .flatten()
            .collect()
    }

    #[test]
    fn a_store_written_with_a_raw_value_per_event_opens_reads_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path());
        std::fs::create_dir_all(&opts.path).unwrap();
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-before-runs");
        for name in ["conf", "db", mark::FILE] {
            std::fs::copy(fixture.join(name), opts.path.join(name)).unwrap();
        }
        let (store, report) = Store::open_in_test(&opts);
        assert!(report.quarantined.is_none() && !report.created);
        assert_eq!((report.mark_problem, report.skipped), (None, 0));
        let want = written_before_runs();
        let first = store.first_seq().unwrap();
        let events =
            |records: Vec<Record>| -> Vec<Event> { records.into_iter().map(|r| r.event).collect() };
        let all = store.reader().read_after(0, usize::MAX).unwrap();
        assert_eq!(seqs(&all), (first..first + 293).collect::<Vec<_>>());
        assert_eq!(events(all), want);
        // Device state: the live positions (not the historic one), the
        // status, the zones and the group.
        let devices = store.reader().devices().unwrap();
        let [bus, van] = &devices[..] else {
            panic!("{devices:?}")
        };
        assert_eq!(bus.seq, Some(first + 1 + 288));
        assert_eq!(
            bus.position().map(Event::Position).as_ref(),
            Some(&want[1 + 288])
        );
        assert_eq!(bus.status, Some(Presence::Online));
        assert_eq!(bus.zones, Some(vec![1, 2]));
        assert_eq!(
            bus.reported_group.as_ref().map(GroupId::as_str),
            Some("fleet-1")
        );
        assert_eq!(van.seq, Some(first + 1 + 289));
        // The old raw tail (37 values of one event) compacts with new appends.
        let mut writer = store.writer().unwrap();
        assert_eq!(writer.head(), first + 292);
        // The fixture's compacted segment holds 256 (the size then); the
        // tail compacts into one of today's size and 81 are left raw.
        let seg = segment::SEGMENT_RECORDS as u64;
        let more: Vec<Event> = (0..seg + 44).map(|i| event("a", i)).collect();
        assert_eq!(writer.append(&more).unwrap(), first + 292 + seg + 44);
        let values: Vec<(u64, usize, bool)> = store
            .db
            .scan_prefix([LOG])
            .map(Result::unwrap)
            .map(|(k, v)| {
                let n = segment::decode(&v).unwrap().len();
                (seq_of_key(&k).unwrap(), n, segment::is_raw(&v))
            })
            .collect();
        assert_eq!(
            values,
            vec![
                (first, 256, false),
                (first + 256, seg as usize, false),
                (first + 256 + seg, 81, true)
            ]
        );
        let mut want = want;
        want.extend(more);
        let all = store.reader().read_after(0, usize::MAX).unwrap();
        assert_eq!(all[0].seq, first);
        assert_eq!(events(all), want);
        store.close(writer.head()).unwrap();
        drop((writer, store));
        let (store, report) = Store::open_in_test(&opts);
        assert_eq!((report.mark_problem, report.skipped), (None, 0));
        assert_eq!(store.usage().records, 293 + seg + 44);
        assert_eq!(
            events(store.reader().read_after(0, usize::MAX).unwrap()),
            want
        );
        assert_eq!(store.writer().unwrap().head(), first + 292 + seg + 44);
    }

    #[test]
    fn a_reader_sees_no_holes_while_the_writer_compacts_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open_in_test(&options(dir.path()));
        let mut writer = store.writer().unwrap();
        let base = writer.head();
        let total = 160 * segment::SEGMENT_RECORDS as u64;
        let appender = std::thread::spawn(move || {
            // Small batches, so that raw tails and compactions interleave with reads.
            for i in 0..total / 8 {
                let batch: Vec<Event> = (0..8).map(|j| event("bus-1", i * 8 + j)).collect();
                writer.append(&batch).unwrap();
            }
        });
        let reader = store.reader();
        let mut after = base;
        // Stuck means no progress for a while, not slow: the run takes about
        // 4 s natively and from 10 s to over 3 minutes under qemu-user (the
        // ARM unit tests), depending on how the dependencies are optimised.
        let mut progressed = std::time::Instant::now();
        while after < base + total {
            assert!(
                progressed.elapsed() < Duration::from_secs(30),
                "reader stuck at {after}"
            );
            for record in reader.read_after(after, 1000).unwrap() {
                assert_eq!(record.seq, after + 1, "no hole, no repeat");
                after = record.seq;
                progressed = std::time::Instant::now();
            }
        }
        appender.join().unwrap();
    }

    /// Rewrites the segment at `first` keeping the slots `keep` says, as the
    /// budget does; deletes it when nothing is left.
    fn rewrite(store: &Store, first: u64, keep: impl Fn(u64) -> bool) {
        let value = store.db.get(log_key(first)).unwrap().unwrap();
        assert!(segment::is_segment(&value));
        let slots = segment::decode(&value).unwrap();
        let kept: Vec<Option<&Event>> = slots
            .iter()
            .enumerate()
            .map(|(i, s)| s.as_ref().filter(|_| keep(first + i as u64)))
            .collect();
        if kept.iter().all(Option::is_none) {
            store.db.remove(log_key(first)).unwrap();
        } else {
            let value = segment::encode_rewritten(kept, false);
            store.db.insert(log_key(first), value).unwrap();
        }
    }

    #[test]
    fn a_reader_skips_gone_slots_and_deleted_segments_without_seeking_again() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open_in_test(&options(dir.path()));
        let mut writer = store.writer().unwrap();
        let base = writer.head();
        let n = 10 * segment::SEGMENT_RECORDS as u64 + 40;
        let events: Vec<Event> = (0..n).map(|i| event("a", i)).collect();
        writer.append(&events).unwrap();
        let seg = |k: u64| base + 1 + k * segment::SEGMENT_RECORDS as u64;
        // Segment 0 loses its first half, 2 every odd slot, 4 to 6 go whole,
        // 9 (the last segment before the raw tail) keeps only its last slot.
        rewrite(&store, seg(0), |s| s >= seg(0) + 128);
        rewrite(&store, seg(2), |s| s % 2 == 0);
        for k in 4..=6 {
            rewrite(&store, seg(k), |_| false);
        }
        rewrite(&store, seg(9), |s| s == seg(10) - 1);
        let kept = |s: u64| {
            let in_seg = |k: u64| (seg(k)..seg(k + 1)).contains(&s);
            let gone = (in_seg(0) && s < seg(0) + 128)
                || (in_seg(2) && s % 2 == 1)
                || (4..=6).any(in_seg)
                || (in_seg(9) && s != seg(10) - 1);
            !gone
        };
        let want: Vec<u64> = (base + 1..=base + n).filter(|&s| kept(s)).collect();
        let reader = store.reader();
        assert_eq!(reader.oldest().unwrap(), Some(seg(0) + 128));
        for limit in [usize::MAX, 1000, 7, 1] {
            let mut got = Vec::new();
            let mut after = base;
            let mut reseeks = 0;
            loop {
                let chunk = reader.read_counting(after, limit, &mut reseeks).unwrap();
                let Some(last) = chunk.last() else { break };
                after = last.seq;
                got.extend(seqs(&chunk));
            }
            assert_eq!(got, want, "limit {limit}");
            assert_eq!(
                reseeks, 0,
                "gaps are not taken for compactions (limit {limit})"
            );
        }
        // Cursors inside a gap, and before the oldest record.
        let from_gap = reader.read_after(seg(5) + 3, 2).unwrap();
        assert_eq!(seqs(&from_gap), vec![seg(7), seg(7) + 1]);
        let from_start = reader.read_after(0, 1).unwrap();
        assert_eq!(seqs(&from_start), vec![seg(0) + 128]);
        // A restart numbers on after the last slot, gone or not.
        store.close(writer.head()).unwrap();
        drop((writer, reader, store));
        let (store, _) = Store::open_in_test(&options(dir.path()));
        assert_eq!(store.writer().unwrap().head(), base + n);
        assert_eq!(store.usage().records, want.len() as u64);
    }

    #[test]
    fn appends_read_back_in_order_across_segments_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let (store, report) = Store::open_in_test(&options(dir.path()));
        assert!(report.created);
        let mut writer = store.writer().unwrap();
        let base = writer.head();
        // 600 events in uneven batches: two compactions and a raw tail.
        let mut n = 0;
        for size in [1, 7, 250, 3, 100, 239] {
            let batch: Vec<Event> = (n..n + size).map(|i| event("a", i)).collect();
            assert_eq!(writer.append(&batch).unwrap(), base + n + size);
            n += size;
        }
        let reader = store.reader();
        assert_eq!(reader.oldest().unwrap(), Some(base + 1));
        let all = reader.read_after(base, usize::MAX).unwrap();
        assert_eq!(seqs(&all), (base + 1..=base + 600).collect::<Vec<_>>());
        assert_eq!(all[599].event, event("a", 599));
        // Reads that start inside a compacted segment, and limits.
        let part = reader.read_after(base + 300, 5).unwrap();
        assert_eq!(seqs(&part), (base + 301..=base + 305).collect::<Vec<_>>());
        assert!(reader.read_after(base + 600, 10).unwrap().is_empty());
        store.close(writer.head()).unwrap();
        drop((writer, reader, store));

        let (store, report) = Store::open_in_test(&options(dir.path()));
        assert!(!report.created && report.quarantined.is_none());
        let mut writer = store.writer().unwrap();
        assert_eq!(writer.head(), base + 600);
        // The reloaded raw tail (88 events) compacts with the next ones.
        let more: Vec<Event> = (600..700).map(|i| event("a", i)).collect();
        writer.append(&more).unwrap();
        let raw: Vec<usize> = store
            .db
            .scan_prefix([LOG])
            .values()
            .map(Result::unwrap)
            .filter(|v| segment::is_raw(v))
            .map(|v| segment::decode(&v).unwrap().len())
            .collect();
        assert_eq!(raw.iter().sum::<usize>(), 700 % segment::SEGMENT_RECORDS);
        // One raw value per append: the reloaded 88, and the 100.
        assert_eq!(raw, vec![88, 100]);
        let all = store.reader().read_after(base, usize::MAX).unwrap();
        assert_eq!(seqs(&all), (base + 1..=base + 700).collect::<Vec<_>>());
        assert_eq!(all[650].event, event("a", 650));
    }

    #[test]
    fn keeps_last_known_state_per_device() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open_in_test(&options(dir.path()));
        let mut writer = store.writer().unwrap();
        let last = writer
            .append(&[event("a", 1), event("b", 2), event("a", 3)])
            .unwrap();
        let devices = store.reader().devices().unwrap();
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].seq, Some(last));
        assert_eq!(
            devices[0].position().map(Event::Position),
            Some(event("a", 3))
        );
        assert_eq!(devices[1].seq, Some(last - 1));
        let b = DeviceId::new("b").unwrap();
        assert_eq!(
            store.reader().device(&b).unwrap().unwrap().seq,
            Some(last - 1)
        );
    }

    #[test]
    fn historic_positions_are_logged_but_never_replace_the_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open_in_test(&options(dir.path()));
        let mut writer = store.writer().unwrap();
        let live = writer.append(&[event("a", 10)]).unwrap();
        let mut old = event("a", 3);
        if let Event::Position(p) = &mut old {
            p.historic = true;
        }
        let went_offline = Event::Status(Status {
            device: DeviceId::new("a").unwrap(),
            status: Presence::Offline,
            time: Utc.with_ymd_and_hms(2026, 1, 1, 1, 0, 0).unwrap(),
        });
        let head = writer.append(&[old.clone(), went_offline]).unwrap();
        let state = store
            .reader()
            .device(&DeviceId::new("a").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(state.seq, Some(live));
        assert_eq!(state.position().map(Event::Position), Some(event("a", 10)));
        assert_eq!(state.status, Some(Presence::Offline));
        let logged = store.reader().read_after(live, 10).unwrap();
        assert_eq!(logged.len(), 2);
        assert_eq!(logged[0].event, old);
        assert_eq!(logged[1].seq, head);
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["status"], "offline");
        assert_eq!(json["since"], "2026-01-01T01:00:00.000Z");
        assert_eq!(json["fix"]["lat"], 52.0001);
    }

    #[test]
    fn geofence_events_are_logged_but_are_not_device_state() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open_in_test(&options(dir.path()));
        let mut writer = store.writer().unwrap();
        let live = writer.append(&[event("a", 10)]).unwrap();
        let time = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 10).unwrap();
        let crossings = [
            Event::Geofence(Geofence::example("a", time)),
            Event::Geofence(Geofence::example("only-fenced", time)),
        ];
        writer.append(&crossings).unwrap();
        let devices = store.reader().devices().unwrap();
        assert_eq!(devices.len(), 1, "a geofence event makes no device");
        assert_eq!(devices[0].seq, Some(live));
        assert_eq!((devices[0].status, devices[0].since), (None, None));
        let logged = store.reader().read_after(live, 10).unwrap();
        let events: Vec<Event> = logged.into_iter().map(|r| r.event).collect();
        assert_eq!(events, crossings);
    }

    #[test]
    fn a_store_with_a_damaged_record_is_moved_aside_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path());
        let (store, _) = Store::open_in_test(&opts);
        let old_head = store.writer().unwrap().append(&[event("a", 1)]).unwrap();
        store
            .db
            .insert(log_key(old_head + 1), &[7u8, 7, 7][..])
            .unwrap();
        store.flush().unwrap();
        drop(store);

        let (store, report) = Store::open_in_test(&opts);
        let (aside, cause) = report.quarantined.expect("store should be quarantined");
        assert!(aside.exists(), "damaged store kept for diagnosis");
        assert!(cause.contains("damaged record"), "{cause}");
        assert!(report.created);
        let writer = store.writer().unwrap();
        // A fresh store starts past anything the old one could have numbered.
        assert!(writer.head() >= old_head);
        assert!(store.reader().devices().unwrap().is_empty());
    }

    #[test]
    fn a_log_that_ends_before_the_durable_mark_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path());
        let (store, _) = Store::open_in_test(&opts);
        let head = store.writer().unwrap().append(&[event("a", 1)]).unwrap();
        store.flush().unwrap();
        store.record_durable(head, head).unwrap();
        drop(store);
        // As marked: opens as it is.
        let (store, report) = Store::open_in_test(&opts);
        assert!(report.quarantined.is_none());
        assert!(report.mark_problem.is_none());
        // A mark past the log: what sled shows after it dropped damaged data.
        store.record_durable(head + 5, head + 5).unwrap();
        drop(store);
        let (store, report) = Store::open_in_test(&opts);
        let (_, cause) = report.quarantined.expect("quarantined");
        assert!(cause.contains("sled dropped damaged data"), "{cause}");
        // The fresh store numbers past the old one's reservation.
        assert!(store.writer().unwrap().head() > head + 5 + mark::STEP);
    }

    #[test]
    fn after_a_crash_numbers_handed_out_but_not_durable_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path());
        let (store, _) = Store::open_in_test(&opts);
        let mut writer = store.writer().unwrap();
        let base = writer.head();
        // A segment and a raw tail of 44, durable...
        let events: Vec<Event> = (0..300).map(|i| event("a", i)).collect();
        let durable = writer.append(&events).unwrap();
        store.flush().unwrap();
        store.record_durable(durable, durable).unwrap();
        // ...and numbers the feed has seen but no flush made durable: lost
        // in a crash, like a log whose damaged tail sled dropped unnoticed.
        let lost_seq = writer.append(&[event("a", 300)]).unwrap();
        store.db.remove(log_key(lost_seq)).unwrap();
        store.flush().unwrap();
        drop((writer, store));

        let (store, report) = Store::open_in_test(&opts);
        assert!(report.quarantined.is_none() && report.mark_problem.is_none());
        assert!(report.skipped > 0);
        let mut writer = store.writer().unwrap();
        let next = writer.append(&[event("a", 301)]).unwrap();
        assert!(next > lost_seq, "{next} reuses a number up to {lost_seq}");
        // The old raw tail was sealed: everything reads back in order, and
        // only the new event is raw.
        let all = store.reader().read_after(base, usize::MAX).unwrap();
        let mut want: Vec<u64> = (base + 1..=durable).collect();
        want.push(next);
        assert_eq!(seqs(&all), want);
        let raw = store
            .db
            .scan_prefix([LOG])
            .values()
            .filter(|v| segment::is_raw(v.as_ref().unwrap()))
            .count();
        assert_eq!(raw, 1);
        // A clean shutdown leaves no hole at the next start.
        store.close(next).unwrap();
        drop((writer, store));
        let (store, report) = Store::open_in_test(&opts);
        assert_eq!(report.skipped, 0);
        assert_eq!(store.writer().unwrap().head(), next);
        // A crash, a start that appends nothing and a clean stop: the head is
        // then the end of a hole, which must not read as a rolled-back log.
        drop(store);
        let (store, report) = Store::open_in_test(&opts);
        let writer = store.writer().unwrap();
        let jumped = writer.head();
        assert!(report.skipped > 0 && jumped > next);
        store.close(jumped).unwrap();
        drop((writer, store));
        let (store, report) = Store::open_in_test(&opts);
        assert!(report.quarantined.is_none(), "{:?}", report.quarantined);
        assert_eq!(store.writer().unwrap().head(), jumped);
    }

    #[test]
    fn a_damaged_or_missing_mark_is_reported_and_numbering_jumps_past_any_use() {
        for damage in ["garbage", "missing"] {
            let dir = tempfile::tempdir().unwrap();
            let opts = options(dir.path());
            let (store, _) = Store::open_in_test(&opts);
            let mut writer = store.writer().unwrap();
            let head = writer.append(&[event("a", 1)]).unwrap();
            store.close(head).unwrap();
            drop((writer, store));
            let file = opts.path.join(mark::FILE);
            if damage == "garbage" {
                std::fs::write(&file, b"\x01\x02 not a mark").unwrap();
            } else {
                std::fs::remove_file(&file).unwrap();
            }
            let (store, report) = Store::open_in_test(&opts);
            assert!(report.quarantined.is_none(), "{damage}");
            let problem = report.mark_problem.expect(damage);
            assert!(
                problem.contains(damage) || problem.contains("damaged"),
                "{problem}"
            );
            assert!(store.writer().unwrap().head() >= head + 2 * mark::STEP);
            // The data is kept.
            assert_eq!(store.reader().read_after(0, 10).unwrap().len(), 1);
        }
    }

    #[test]
    fn a_full_disk_or_a_lock_is_not_damage() {
        let io = |kind, text: &str| {
            StoreError::Sled(sled::Error::Io(std::io::Error::new(kind, text.to_owned())))
        };
        assert!(!io(std::io::ErrorKind::StorageFull, "no space").is_damage());
        assert!(io(std::io::ErrorKind::StorageFull, "no space").is_disk_full());
        assert!(
            !io(
                std::io::ErrorKind::Other,
                "could not acquire lock on \"db\""
            )
            .is_damage()
        );
        assert!(io(std::io::ErrorKind::UnexpectedEof, "short read").is_damage());
        assert!(StoreError::Sled(sled::Error::Corruption { at: None, bt: () }).is_damage());
    }

    #[test]
    fn uplink_acknowledgements_persist_as_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path());
        let (store, _) = Store::open_in_test(&opts);
        assert!(store.uplink_acked().unwrap().is_empty());
        let mut acked = Acked::new();
        acked.insert(1..=10);
        acked.insert(11..=20);
        acked.insert(40..=41);
        store.set_uplink_acked(&acked).unwrap();
        store.flush().unwrap();
        drop(store);
        let (store, _) = Store::open_in_test(&opts);
        let back: Vec<_> = store.uplink_acked().unwrap().into_iter().collect();
        assert_eq!(back, vec![1..=20, 40..=41]);
    }

    #[test]
    fn a_store_whose_files_are_garbage_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path());
        let (store, _) = Store::open_in_test(&opts);
        store.writer().unwrap().append(&[event("a", 1)]).unwrap();
        store.flush().unwrap();
        drop(store);
        for entry in std::fs::read_dir(&opts.path).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::write(&path, b"\x00garbage, not a sled file").unwrap();
            }
        }
        let (_store, report) = Store::open_in_test(&opts);
        assert!(report.quarantined.is_some());
    }
}
