//! The batch header: who sent it and what it covers, uncompressed after the
//! version byte so a receiver can route, log and deduplicate a batch (and
//! refuse an oversized one) before inflating anything.

use serde::{Deserialize, Serialize};

use super::{Batch, BatchKind, MAX_BATCH_RECORDS};
use crate::fix::DeviceId;

/// The header as postcard serialises it, field by field in wire order.
#[derive(Debug, Serialize, Deserialize)]
struct Raw<'a> {
    gateway: &'a str,
    id: u64,
    kind: u8,
    first_seq: u64,
    last_seq: u64,
    records: u64,
}

/// A checked header.
#[derive(Debug)]
pub struct Header {
    /// The gateway id, valid by the [`DeviceId`] rules.
    pub gateway: DeviceId,
    /// The batch id.
    pub id: u64,
    /// The batch kind.
    pub kind: BatchKind,
    /// First sequence number covered.
    pub first_seq: u64,
    /// Last sequence number covered, at least `first_seq`.
    pub last_seq: u64,
    /// Number of records, at most [`MAX_BATCH_RECORDS`] and no more than the range holds.
    pub records: usize,
}

/// The kind's number on the wire.
pub fn kind_number(kind: BatchKind) -> u8 {
    match kind {
        BatchKind::Live => 0,
        BatchKind::Backlog => 1,
        BatchKind::Snapshot => 2,
    }
}

fn kind_of(number: u8) -> Option<BatchKind> {
    match number {
        0 => Some(BatchKind::Live),
        1 => Some(BatchKind::Backlog),
        2 => Some(BatchKind::Snapshot),
        _ => None,
    }
}

/// Appends the header of `batch` to `out`.
pub fn write(batch: &Batch, out: &mut Vec<u8>) {
    let raw = Raw {
        gateway: &batch.gateway,
        id: batch.id,
        kind: kind_number(batch.kind),
        first_seq: batch.first_seq,
        last_seq: batch.last_seq,
        records: batch.records.len() as u64,
    };
    // A struct of integers and a string always serialises.
    if let Ok(bytes) = postcard::to_extend(&raw, std::mem::take(out)) {
        *out = bytes;
    }
}

/// Reads and checks a header; returns it and the bytes after it.
pub fn read(bytes: &[u8]) -> Result<(Header, &[u8]), String> {
    let (raw, rest) =
        postcard::take_from_bytes::<Raw<'_>>(bytes).map_err(|e| format!("header: {e}"))?;
    let gateway =
        DeviceId::new(raw.gateway).map_err(|e| format!("gateway {:?}: {e}", raw.gateway))?;
    let kind = kind_of(raw.kind).ok_or_else(|| format!("unknown batch kind {}", raw.kind))?;
    if raw.first_seq > raw.last_seq {
        return Err(format!(
            "sequence range {}..={} is empty",
            raw.first_seq, raw.last_seq
        ));
    }
    let records = usize::try_from(raw.records)
        .ok()
        .filter(|&n| n <= MAX_BATCH_RECORDS)
        .ok_or_else(|| format!("{} records exceed {MAX_BATCH_RECORDS}", raw.records))?;
    if raw.records.saturating_sub(1) > raw.last_seq - raw.first_seq {
        return Err(format!(
            "{} records cannot fit in {}..={}",
            raw.records, raw.first_seq, raw.last_seq
        ));
    }
    let header = Header {
        gateway,
        id: raw.id,
        kind,
        first_seq: raw.first_seq,
        last_seq: raw.last_seq,
        records,
    };
    Ok((header, rest))
}
