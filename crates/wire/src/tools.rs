//! `fixgate encode` and `fixgate decode`: JSON Lines to length-delimited
//! batches and back, over any `std::io` streams.

use std::io::{self, BufRead, Read, Write};

use super::{
    Batch, BatchKind, DEFAULT_MAX_RECORDS, JsonError, JsonRecord, decode, encode,
    parse_record_json, read_delimited, record_json, write_delimited,
};
use crate::fix::{DeviceId, Record};

/// Why a tool stopped; names the input line or batch at fault.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// An input line of `encode` is not a usable record.
    #[error("line {line}: {message}")]
    Line {
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        message: String,
    },
    /// A batch read by `decode` is damaged or not a batch.
    #[error("batch {batch}: {message}")]
    Batch {
        /// 1-based batch number in the stream.
        batch: u64,
        /// What is wrong with it.
        message: String,
    },
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Options of [`encode_json_lines`].
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// The gateway id of every batch; default: the first line's `gateway`
    /// (later lines must agree), else `fixgate`.
    pub gateway: Option<DeviceId>,
    /// The device of lines that name none (`fixgate nmea` prints none).
    pub device: Option<DeviceId>,
    /// Records per batch.
    pub max_records: usize,
    /// The first batch's id; the next ones count up.
    pub first_id: u64,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            gateway: None,
            device: None,
            max_records: DEFAULT_MAX_RECORDS,
            first_id: 1,
        }
    }
}

/// How much a tool wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Batches written or read.
    pub batches: u64,
    /// Records in them.
    pub records: u64,
}

/// Reads JSON Lines (see [`parse_record_json`]) and writes them as `Live`
/// batches of `max_records`, each length-delimited. A line's `seq` is kept
/// (it must increase); lines without one follow the previous record (the
/// first gets 1). A batch covers its first record's seq to its last's.
pub fn encode_json_lines(
    input: impl BufRead,
    out: &mut impl Write,
    options: &EncodeOptions,
) -> Result<Counts, ToolError> {
    let mut batcher = Batcher {
        gateway: options.gateway.clone(),
        gateway_fixed: options.gateway.is_some(),
        max_records: options.max_records.max(1),
        next_id: options.first_id,
        records: Vec::new(),
        counts: Counts::default(),
    };
    let mut last_seq: Option<u64> = None;
    for (n, line) in (1u64..).zip(input.lines()) {
        let fail = |message: String| ToolError::Line { line: n, message };
        let line = line.map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => fail("not UTF-8".into()),
            _ => ToolError::Io(e),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let JsonRecord {
            gateway,
            seq,
            event,
        } = parse_record_json(&line, options.device.as_ref()).map_err(|e| match e {
            JsonError::NoDevice => {
                fail("no device (give --device ID for lines without one)".into())
            }
            e => fail(e.to_string()),
        })?;
        batcher.gateway_of_line(gateway).map_err(fail)?;
        let seq = match (seq, last_seq) {
            (Some(s), Some(last)) if s <= last => {
                return Err(fail(format!("seq {s} does not follow {last}")));
            }
            (Some(s), _) => s,
            (None, None) => 1,
            (None, Some(last)) => last
                .checked_add(1)
                .ok_or_else(|| fail("seq overflows".into()))?,
        };
        last_seq = Some(seq);
        batcher.push(Record { seq, event }, out)?;
    }
    batcher.flush(out)?;
    out.flush()?;
    Ok(batcher.counts)
}

/// Collects records into batches and writes each full one.
struct Batcher {
    gateway: Option<DeviceId>,
    /// Given by the caller: lines' own gateways are ignored.
    gateway_fixed: bool,
    max_records: usize,
    next_id: u64,
    records: Vec<Record>,
    counts: Counts,
}

impl Batcher {
    fn gateway_of_line(&mut self, line: Option<DeviceId>) -> Result<(), String> {
        match (line, &self.gateway) {
            (Some(_), _) if self.gateway_fixed => Ok(()),
            (Some(g), Some(current)) if &g != current => Err(format!(
                "gateway {g} differs from {current} (one gateway per stream, or give --gateway)"
            )),
            (Some(g), None) => {
                self.gateway = Some(g);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn push(&mut self, record: Record, out: &mut impl Write) -> io::Result<()> {
        self.records.push(record);
        if self.records.len() >= self.max_records {
            self.flush(out)?;
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut impl Write) -> io::Result<()> {
        let (Some(first), Some(last)) = (self.records.first(), self.records.last()) else {
            return Ok(());
        };
        let batch = Batch {
            gateway: self
                .gateway
                .as_ref()
                .map_or("fixgate", DeviceId::as_str)
                .to_owned(),
            id: self.next_id,
            kind: BatchKind::Live,
            first_seq: first.seq,
            last_seq: last.seq,
            records: std::mem::take(&mut self.records),
        };
        write_delimited(out, &encode(&batch))?;
        self.next_id = self.next_id.wrapping_add(1);
        self.counts.batches += 1;
        self.counts.records += batch.records.len() as u64;
        Ok(())
    }
}

/// Reads length-delimited batches and writes one [`record_json`] line per
/// record.
pub fn decode_to_json_lines(
    mut input: impl Read,
    out: &mut impl Write,
) -> Result<Counts, ToolError> {
    let mut counts = Counts::default();
    for n in 1u64.. {
        let fail = |message: String| ToolError::Batch { batch: n, message };
        let bytes = match read_delimited(&mut input) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => break,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(fail("truncated".into()));
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(fail(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        let batch = decode(&bytes).map_err(|e| fail(e.to_string()))?;
        for record in &batch.records {
            writeln!(out, "{}", record_json(&batch.gateway, record))?;
        }
        counts.batches += 1;
        counts.records += batch.records.len() as u64;
    }
    out.flush()?;
    Ok(counts)
}
