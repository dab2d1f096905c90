//! The upstream batch codec: what the gateway sends to the cloud.
//!
//! Pure: no tokio, no sled, no I/O beyond `std::io` streams, so that a cloud
//! service can link this module (with [`crate::fix`]) and nothing else.
//! `docs/wire-format.md` specifies the bytes for decoders in other languages.
//!
//! PLACEHOLDER ENCODING: the header and records are JSON here until the
//! columnar codec lands; the public API below is the one that stays.

use std::io::{self, Read, Write};

use crate::fix::Record;

/// The format version written first in every batch.
pub const VERSION: u8 = 0;

/// Records per batch unless configured otherwise (the daemon's default
/// batching, also used by `fixgate encode`).
pub const DEFAULT_MAX_RECORDS: usize = 1000;

/// What a batch's sequence range means to the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    /// Covers `first_seq..=last_seq` completely: every stored record in the
    /// range is in the batch; a number missing from it was thinned or dropped
    /// by the gateway's disk budget and will never come.
    Live,
    /// Like `Live`, but part of the backlog drained after an outage: its
    /// positions are marked historic.
    Backlog,
    /// Each device's latest position, sent first after an outage. Covers only
    /// the records it holds; they come again in a backlog batch.
    Snapshot,
}

/// One upstream message: a gateway's records, in sequence order.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The gateway's id (`[gateway] id`).
    pub gateway: String,
    /// Identifies this batch in logs on both sides; duplicates are found by `seq`.
    pub id: u64,
    /// What the sequence range means.
    pub kind: BatchKind,
    /// The first sequence number the batch covers.
    pub first_seq: u64,
    /// The last sequence number the batch covers.
    pub last_seq: u64,
    /// The records, in increasing `seq`, all within `first_seq..=last_seq`.
    pub records: Vec<Record>,
}

/// Bytes that are not a batch.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not a batch of a version this build reads.
    #[error("unsupported batch version {0}")]
    Version(u8),
    /// The bytes are not a well-formed batch.
    #[error("malformed batch: {0}")]
    Malformed(String),
}

/// Encodes a batch.
pub fn encode(batch: &Batch) -> Vec<u8> {
    let _ = batch;
    vec![VERSION]
}

/// Decodes a batch, checking everything a damaged or hostile input could get wrong.
pub fn decode(bytes: &[u8]) -> Result<Batch, WireError> {
    match bytes.first() {
        Some(&v) => Err(WireError::Version(v)),
        None => Err(WireError::Malformed("empty".into())),
    }
}

/// Largest batch `read_delimited` accepts.
pub const MAX_BATCH_BYTES: usize = 16 << 20;

/// Writes one batch prefixed with its length (unsigned LEB128, as protobuf's
/// delimited streams), the framing of `fixgate encode` and `fixgate decode`.
pub fn write_delimited(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let mut n = bytes.len() as u64;
    let mut prefix = Vec::with_capacity(10);
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            prefix.push(byte);
            break;
        }
        prefix.push(byte | 0x80);
    }
    out.write_all(&prefix)?;
    out.write_all(bytes)
}

/// Reads one length-prefixed batch; `None` at a clean end of input.
pub fn read_delimited(input: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len: u64 = 0;
    for i in 0..10 {
        let mut byte = [0u8];
        if input.read(&mut byte)? == 0 {
            if i == 0 {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        len |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if len > MAX_BATCH_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("batch of {len} bytes exceeds {MAX_BATCH_BYTES}"),
                ));
            }
            let mut buf = vec![0; len];
            input.read_exact(&mut buf)?;
            return Ok(Some(buf));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "length prefix longer than 10 bytes",
    ))
}
