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
    let mut out = vec![VERSION];
    let kind = match batch.kind {
        BatchKind::Live => "live",
        BatchKind::Backlog => "backlog",
        BatchKind::Snapshot => "snapshot",
    };
    let header = serde_json::json!({
        "gateway": batch.gateway, "id": batch.id, "kind": kind,
        "first_seq": batch.first_seq, "last_seq": batch.last_seq,
    });
    out.extend_from_slice(header.to_string().as_bytes());
    for r in &batch.records {
        out.push(b'\n');
        let (name, body) = match &r.event {
            crate::fix::Event::Position(p) => ("position", serde_json::to_value(p)),
            crate::fix::Event::Status(s) => ("status", serde_json::to_value(s)),
        };
        let line =
            serde_json::json!({"seq": r.seq, "event": name, "body": body.unwrap_or_default()});
        out.extend_from_slice(line.to_string().as_bytes());
    }
    out
}

/// Decodes a batch, checking everything a damaged or hostile input could get wrong.
pub fn decode(bytes: &[u8]) -> Result<Batch, WireError> {
    use crate::fix::{Event, Position, Status};
    let bad = |e: serde_json::Error| WireError::Malformed(e.to_string());
    let body = match bytes {
        [VERSION, body @ ..] => body,
        [v, ..] => return Err(WireError::Version(*v)),
        [] => return Err(WireError::Malformed("empty".into())),
    };
    let mut lines = body.split(|&b| b == b'\n');
    let header: serde_json::Value =
        serde_json::from_slice(lines.next().unwrap_or_default()).map_err(bad)?;
    let field = |k: &str| {
        header
            .get(k)
            .and_then(|v| v.as_u64())
            .ok_or_else(|| WireError::Malformed(format!("no {k}")))
    };
    let kind = match header.get("kind").and_then(|v| v.as_str()) {
        Some("live") => BatchKind::Live,
        Some("backlog") => BatchKind::Backlog,
        Some("snapshot") => BatchKind::Snapshot,
        _ => return Err(WireError::Malformed("kind".into())),
    };
    let mut records = Vec::new();
    for line in lines {
        let v: serde_json::Value = serde_json::from_slice(line).map_err(bad)?;
        let seq = v
            .get("seq")
            .and_then(|s| s.as_u64())
            .ok_or_else(|| WireError::Malformed("seq".into()))?;
        let body = v.get("body").cloned().unwrap_or_default();
        let event = match v.get("event").and_then(|e| e.as_str()) {
            Some("position") => {
                Event::Position(serde_json::from_value::<Position>(body).map_err(bad)?)
            }
            Some("status") => Event::Status(serde_json::from_value::<Status>(body).map_err(bad)?),
            _ => return Err(WireError::Malformed("event".into())),
        };
        records.push(Record { seq, event });
    }
    Ok(Batch {
        gateway: header
            .get("gateway")
            .and_then(|g| g.as_str())
            .unwrap_or_default()
            .to_owned(),
        id: field("id")?,
        kind,
        first_seq: field("first_seq")?,
        last_seq: field("last_seq")?,
        records,
    })
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
