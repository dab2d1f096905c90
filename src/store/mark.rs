//! The durable mark: a small file beside sled's own that says how far the
//! log was durable at the last group commit and how far sequence numbers
//! may have been handed out.
//!
//! sled 0.34 opens a log with flipped or missing bytes in its tail without
//! an error, silently dropping everything after the damage. Two facts kept
//! outside the log make that visible and harmless:
//!
//! * `durable` — the last sequence number a flush made durable, written after
//!   every group commit. A log that opens ending before it lost data.
//! * `reserved` — the highest sequence number the writer may hand out. The
//!   writer never numbers past it without first raising it here, so the next
//!   start numbers on after it, whatever the log lost, caught or not.
//!
//! The file holds two copies ("slots") in different 4 KiB pages, each with a
//! generation and a CRC; a write replaces the older one in place and is
//! synced, so a torn write or a flipped bit in one copy leaves the other.
//! The parsing here is a pure function over bytes, tested without a disk.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The file's name in the store directory.
pub const FILE: &str = "fixgate-durable";
/// How far ahead of the head the flusher reserves numbers. The writer only
/// waits for the disk when it appends more than this within one flush
/// interval; after a crash, up to this many numbers are skipped (holes, which
/// the feed and the uplink already skip).
pub const STEP: u64 = 1 << 16;

const MAGIC: &[u8; 4] = b"FGDM";
const VERSION: u8 = 1;
/// Bytes of one slot: magic, version, 3 zero bytes, generation, durable,
/// reserved (little-endian u64s), then the CRC-32 of the 32 bytes before.
const SLOT_LEN: usize = 36;
/// Where the second slot starts: its own page, so one torn page write cannot
/// damage both.
const SLOT_B: usize = 4096;
/// The whole file.
const FILE_LEN: usize = SLOT_B + SLOT_LEN;

/// What the mark says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// The last sequence number known durable.
    pub durable: u64,
    /// The highest sequence number that may have been handed out.
    pub reserved: u64,
}

/// A mark as read from disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// The newest intact copy.
    pub mark: Mark,
    /// Its generation (0 for the old one-number format).
    pub generation: u64,
    /// One copy was damaged: the newer one may be lost, so its reservation
    /// may have been up to [`STEP`] past `mark.reserved`.
    pub one_damaged: bool,
    /// Written by an older fixgate (one decimal number, the durable head).
    pub legacy: bool,
}

impl Read {
    /// The highest number that can have been handed out under this mark.
    pub fn ceiling(&self) -> u64 {
        let slack = if self.one_damaged || self.legacy {
            STEP
        } else {
            0
        };
        self.mark.reserved.saturating_add(slack)
    }
}

/// Why a mark file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarkError {
    /// Neither copy is intact and it is not the old format either.
    #[error("the durable mark is damaged ({len} bytes, no intact copy)")]
    Damaged {
        /// The file's length.
        len: usize,
    },
}

fn encode_slot(generation: u64, mark: Mark) -> [u8; SLOT_LEN] {
    let mut slot = [0u8; SLOT_LEN];
    slot[..4].copy_from_slice(MAGIC);
    slot[4] = VERSION;
    slot[8..16].copy_from_slice(&generation.to_le_bytes());
    slot[16..24].copy_from_slice(&mark.durable.to_le_bytes());
    slot[24..32].copy_from_slice(&mark.reserved.to_le_bytes());
    let crc = crc32fast::hash(&slot[..32]);
    slot[32..36].copy_from_slice(&crc.to_le_bytes());
    slot
}

fn decode_slot(bytes: &[u8]) -> Option<(u64, Mark)> {
    let slot = bytes.get(..SLOT_LEN)?;
    let crc = u32::from_le_bytes(slot[32..36].try_into().ok()?);
    if &slot[..4] != MAGIC || slot[4] != VERSION || crc32fast::hash(&slot[..32]) != crc {
        return None;
    }
    let u64_at = |at: usize| slot[at..at + 8].try_into().ok().map(u64::from_le_bytes);
    let mark = Mark {
        durable: u64_at(16)?,
        reserved: u64_at(24)?,
    };
    // A copy that reserves less than it calls durable was never written so.
    (mark.reserved >= mark.durable).then_some((u64_at(8)?, mark))
}

/// Reads a mark file's bytes: the newest intact copy, or the old format.
pub fn decode(bytes: &[u8]) -> Result<Read, MarkError> {
    let a = decode_slot(bytes);
    let b = bytes.get(SLOT_B..).and_then(decode_slot);
    let newest = match (a, b) {
        (Some(a), Some(b)) => Some(if a.0 >= b.0 { a } else { b }),
        (one, other) => one.or(other),
    };
    if let Some((generation, mark)) = newest {
        return Ok(Read {
            mark,
            generation,
            one_damaged: a.is_none() || b.is_none(),
            legacy: false,
        });
    }
    // Before this format the file held the durable head as decimal text.
    let text = std::str::from_utf8(bytes).ok().map(str::trim);
    if let Some(durable) = text
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
    {
        return Ok(Read {
            mark: Mark {
                durable,
                reserved: durable,
            },
            generation: 0,
            one_damaged: false,
            legacy: true,
        });
    }
    Err(MarkError::Damaged { len: bytes.len() })
}

/// Reads the mark of the store at `dir`: `Ok(None)` when there is none.
pub fn read(dir: &Path) -> io::Result<Option<Result<Read, MarkError>>> {
    match std::fs::read(dir.join(FILE)) {
        Ok(bytes) => Ok(Some(decode(&bytes))),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// The open mark file; writes replace the older copy in place.
#[derive(Debug)]
pub struct MarkFile {
    file: File,
    generation: u64,
    mark: Mark,
}

impl MarkFile {
    /// Writes a fresh mark file (both copies) to `dir`, atomically replacing
    /// any old one, and keeps it open for later writes.
    pub fn create(dir: &Path, mark: Mark, generation: u64) -> io::Result<Self> {
        let mut bytes = vec![0u8; FILE_LEN];
        bytes[..SLOT_LEN].copy_from_slice(&encode_slot(generation + 1, mark));
        bytes[SLOT_B..].copy_from_slice(&encode_slot(generation + 2, mark));
        let tmp = dir.join(format!("{FILE}.tmp"));
        let file = File::create(&tmp)?;
        file.write_all_at(&bytes, 0)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dir.join(FILE))?;
        // The rename itself must survive a power cut.
        File::open(dir)?.sync_all()?;
        Ok(Self {
            file,
            generation: generation + 2,
            mark,
        })
    }

    /// What the file says now.
    pub fn mark(&self) -> Mark {
        self.mark
    }

    /// Records `mark` (each field only ever grows) and waits for the disk.
    pub fn write(&mut self, mark: Mark) -> io::Result<Mark> {
        let next = Mark {
            durable: mark.durable.max(self.mark.durable),
            reserved: mark.reserved.max(self.mark.reserved),
        };
        if next == self.mark {
            return Ok(next);
        }
        self.put(next)
    }

    /// Records `mark` as it is, lowering the reservation: only for a clean
    /// shutdown, once everything handed out is durable and nothing more will be.
    pub fn tighten(&mut self, mark: Mark) -> io::Result<Mark> {
        self.put(mark)
    }

    fn put(&mut self, mark: Mark) -> io::Result<Mark> {
        let generation = self.generation + 1;
        // The older copy is the one of the other parity.
        let at = if generation % 2 == 1 {
            0
        } else {
            SLOT_B as u64
        };
        self.file.write_all_at(&encode_slot(generation, mark), at)?;
        // The file's size never changes: syncing its data is enough.
        self.file.sync_data()?;
        self.generation = generation;
        self.mark = mark;
        Ok(mark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_bytes(dir: &Path) -> Vec<u8> {
        std::fs::read(dir.join(FILE)).unwrap()
    }

    #[test]
    fn the_newest_intact_copy_wins_and_a_damaged_one_widens_the_ceiling() {
        let dir = tempfile::tempdir().unwrap();
        let first = Mark {
            durable: 10,
            reserved: 100,
        };
        let mut file = MarkFile::create(dir.path(), first, 0).unwrap();
        let read = decode(&file_bytes(dir.path())).unwrap();
        assert_eq!(
            (read.mark, read.one_damaged, read.ceiling()),
            (first, false, 100)
        );
        let second = Mark {
            durable: 50,
            reserved: 200,
        };
        file.write(second).unwrap();
        let bytes = file_bytes(dir.path());
        assert_eq!(decode(&bytes).unwrap().mark, second);
        // A flipped bit in the newer copy: the older one is read, and the
        // ceiling allows for a reservation that copy may have made.
        let generation = |at: usize| decode_slot(&bytes[at..]).map(|(g, _)| g);
        let newer_at = if generation(0) > generation(SLOT_B) {
            0
        } else {
            SLOT_B
        };
        let mut flipped = bytes.clone();
        flipped[newer_at + 20] ^= 0x10;
        let read = decode(&flipped).unwrap();
        assert_eq!(read.mark, first);
        assert!(read.one_damaged);
        assert_eq!(read.ceiling(), 100 + STEP);
        // Both copies damaged: an error, never a guess.
        let mut both = bytes;
        both[3] ^= 1;
        both[SLOT_B + 3] ^= 1;
        assert_eq!(decode(&both), Err(MarkError::Damaged { len: FILE_LEN }));
    }

    #[test]
    fn fields_only_grow_until_a_clean_shutdown_tightens_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = MarkFile::create(
            dir.path(),
            Mark {
                durable: 5,
                reserved: 500,
            },
            0,
        )
        .unwrap();
        let kept = file
            .write(Mark {
                durable: 3,
                reserved: 400,
            })
            .unwrap();
        assert_eq!(
            kept,
            Mark {
                durable: 5,
                reserved: 500
            }
        );
        file.tighten(Mark {
            durable: 7,
            reserved: 7,
        })
        .unwrap();
        let read = read(dir.path()).unwrap().unwrap().unwrap();
        assert_eq!(read.ceiling(), 7);
    }

    #[test]
    fn the_old_decimal_format_is_read_and_garbage_is_not() {
        let legacy = decode(b"123456\n").unwrap();
        assert!(legacy.legacy);
        assert_eq!(legacy.mark.durable, 123_456);
        assert_eq!(legacy.ceiling(), 123_456 + STEP);
        assert!(decode(b"12x4").is_err());
        assert!(decode(b"").is_err());
        assert!(decode(&[0u8; FILE_LEN]).is_err());
    }

    #[test]
    fn a_missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
    }
}
