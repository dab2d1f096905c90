//! The upstream batch codec: what the gateway sends to the cloud, and the
//! values it carries ([`fix`]: fixes, devices, events).
//!
//! Pure: no async runtime, no database, no I/O beyond `std::io` streams, so
//! that a cloud service can link this crate and nothing else (`cargo tree -p
//! fixgate-wire` shows no async runtime and no database). `docs/wire-format.md` beside this
//! crate specifies the bytes for decoders in other languages; in short: a
//! version byte, a postcard header, then the records in columns, each fix
//! as scaled integers (version 2: in steps of the grid the batch's values
//! lie on) predicted from the same device's previous values, compressed
//! (version 2: raw LZMA behind a CRC-32; version 1, still decoded: zlib).

mod body;
pub mod fix;
mod header;
pub mod json;
mod lzma;
mod predict;
pub mod quantise;
pub mod tools;
mod units;
mod zlib;

#[cfg(test)]
mod tests;

use std::io::{self, Read, Write};

use crate::fix::{DeviceId, Event, Record};

pub use json::{JsonError, JsonRecord, parse_record_json, record_json};

/// The format version written first in every batch. Version 0 was the
/// development placeholder (JSON); no decoder reads it. Version 1 (zlib,
/// values in wire units) is still decoded: gateways in the field send it.
pub const VERSION: u8 = 2;

/// The first version, which [`decode`] still reads.
pub const VERSION_1: u8 = 1;

/// Records per batch unless configured otherwise (the daemon's default
/// batching, also used by `fixgate encode`).
pub const DEFAULT_MAX_RECORDS: usize = 1000;

/// Most records a batch may hold: decoders refuse more, which bounds what a
/// hostile batch can make them allocate.
pub const MAX_BATCH_RECORDS: usize = 100_000;

/// Body bytes allowed per record (a record takes at most about 190; version
/// 2's fixes add a few bytes per 32 values at most), plus
/// [`BODY_BYTES_BASE`] (which also covers version 2's units): a
/// decompression bomb stops there.
const BODY_BYTES_PER_RECORD: usize = 256;
/// See [`BODY_BYTES_PER_RECORD`].
const BODY_BYTES_BASE: usize = 1024;

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

impl BatchKind {
    /// The lower-case name logs, metrics and JSON output use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Backlog => "backlog",
            Self::Snapshot => "snapshot",
        }
    }
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

impl Batch {
    /// Checks what [`decode`] will check, so a sender finds a bad batch
    /// before the receiver refuses it: a valid gateway id, a non-empty range,
    /// at most [`MAX_BATCH_RECORDS`] records in strictly increasing `seq`
    /// within the range, and every value of a fix or geofence event a
    /// number within the wire's range (`quantise`): the encoder never
    /// clamps one that is not.
    pub fn check(&self) -> Result<(), WireError> {
        let bad = |m: String| Err(WireError::Malformed(m));
        if let Err(e) = DeviceId::new(&self.gateway) {
            return bad(format!("gateway {:?}: {e}", self.gateway));
        }
        if self.first_seq > self.last_seq {
            return bad(format!(
                "sequence range {}..={} is empty",
                self.first_seq, self.last_seq
            ));
        }
        if self.records.len() > MAX_BATCH_RECORDS {
            return bad(format!(
                "{} records exceed {MAX_BATCH_RECORDS}",
                self.records.len()
            ));
        }
        let mut previous = None;
        for (i, r) in self.records.iter().enumerate() {
            if previous.is_some_and(|p| r.seq <= p)
                || !(self.first_seq..=self.last_seq).contains(&r.seq)
            {
                return bad(format!(
                    "record {i}: seq {} not increasing within the range",
                    r.seq
                ));
            }
            previous = Some(r.seq);
            let fits = match &r.event {
                Event::Position(p) => quantise::WireFix::try_from_fix(&p.fix).map(drop),
                Event::Geofence(g) => body::check_geofence(g),
                Event::Status(_) => Ok(()),
            };
            if let Err(field) = fits {
                return bad(format!(
                    "record {i}: {field} is not a number within the wire's range"
                ));
            }
        }
        Ok(())
    }
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

/// Encodes a batch, in format [`VERSION`]. A batch that fails
/// [`Batch::check`] with its header or its sequence numbers still encodes,
/// but [`decode`] refuses the bytes; one with a value beyond the wire's
/// ranges is a bug of the caller: a debug build panics, a release build
/// clamps the value (see `quantise`).
pub fn encode(batch: &Batch) -> Vec<u8> {
    encode_as(batch, VERSION)
}

/// Encodes a batch in format `version` ([`VERSION_1`] or [`VERSION`]).
/// Should liblzma fail (it fails only out of memory), the batch goes as
/// version 1, which every receiver reads too.
fn encode_as(batch: &Batch, version: u8) -> Vec<u8> {
    let body = body::write(&batch.records, batch.first_seq, version);
    if version >= 2 {
        if let Ok(compressed) = lzma::compress(&body) {
            let mut out = vec![version];
            header::write(batch, &mut out);
            out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
            out.extend_from_slice(&compressed);
            return out;
        }
        return encode_as(batch, VERSION_1);
    }
    let mut out = vec![VERSION_1];
    header::write(batch, &mut out);
    out.extend_from_slice(&zlib::compress(&body));
    out
}

/// Decodes a batch of any version this build reads, checking everything a
/// damaged or hostile input could get wrong: it returns an error, never
/// panics, and allocates in proportion to the records the bytes really hold.
pub fn decode(bytes: &[u8]) -> Result<Batch, WireError> {
    let (&version, rest) = bytes
        .split_first()
        .ok_or_else(|| WireError::Malformed("empty".into()))?;
    if version != VERSION && version != VERSION_1 {
        return Err(WireError::Version(version));
    }
    let (header, compressed) = header::read(rest).map_err(WireError::Malformed)?;
    let limit = header
        .records
        .saturating_mul(BODY_BYTES_PER_RECORD)
        .saturating_add(BODY_BYTES_BASE);
    let body = if version == VERSION_1 {
        zlib::inflate(compressed, limit)
    } else {
        inflate_v2(compressed, limit)
    }
    .map_err(WireError::Malformed)?;
    let expect = body::Expect {
        records: header.records,
        first_seq: header.first_seq,
        last_seq: header.last_seq,
    };
    let records = body::read(&body, &expect, version).map_err(WireError::Malformed)?;
    Ok(Batch {
        gateway: header.gateway.as_str().to_owned(),
        id: header.id,
        kind: header.kind,
        first_seq: header.first_seq,
        last_seq: header.last_seq,
        records,
    })
}

/// A version-2 body: its CRC-32, then the LZMA stream; checked.
fn inflate_v2(bytes: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let (crc, stream) = bytes
        .split_first_chunk::<4>()
        .ok_or("body checksum is truncated")?;
    let body = lzma::decompress(stream, limit)?;
    if crc32fast::hash(&body) != u32::from_le_bytes(*crc) {
        return Err("body checksum mismatch".into());
    }
    Ok(body)
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

/// Reads one length-prefixed batch; `None` at a clean end of input. Memory
/// grows with the bytes that really arrive, not with what the prefix claims.
pub fn read_delimited(input: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    // u128: ten 7-bit groups do not fit a u64, and excess bits must not vanish.
    let mut len: u128 = 0;
    for i in 0..10 {
        let mut byte = [0u8];
        match input.read_exact(&mut byte) {
            Err(e) if i == 0 && e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            result => result?,
        }
        len |= u128::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l <= MAX_BATCH_BYTES)
                .ok_or_else(|| {
                    invalid(format!("batch of {len} bytes exceeds {MAX_BATCH_BYTES}"))
                })?;
            let mut buf = Vec::new();
            input.by_ref().take(len as u64).read_to_end(&mut buf)?;
            if buf.len() < len {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            return Ok(Some(buf));
        }
    }
    Err(invalid("length prefix longer than 10 bytes".into()))
}
