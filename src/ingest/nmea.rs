//! NMEA 0183: sentence framing, checksums and epoch assembly into fixes.
//! (Placeholder API while the decoder lands on its own branch.)

use chrono::{DateTime, Utc};

use crate::fix::Fix;

/// Decoder tunables.
#[derive(Debug, Clone, Default)]
pub struct DecoderOptions {}

/// Counters since creation.
#[derive(Debug, Clone, Default)]
pub struct DecodeStats {
    sentences: u64,
}

impl DecodeStats {
    /// Sentences accepted.
    pub fn sentences(&self) -> u64 {
        self.sentences
    }
    /// Rejections by reason.
    pub fn rejections(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        std::iter::empty()
    }
}

/// Bytes in, fixes out.
#[derive(Debug, Default)]
pub struct Decoder {
    stats: DecodeStats,
}

impl Decoder {
    /// A decoder.
    pub fn new(_options: DecoderOptions) -> Self {
        Self::default()
    }
    /// Feed bytes.
    pub fn push(&mut self, _bytes: &[u8], _out: &mut Vec<Fix>) {}
    /// End of input.
    pub fn finish(&mut self, _out: &mut Vec<Fix>) {}
    /// Counters.
    pub fn stats(&self) -> &DecodeStats {
        &self.stats
    }
    /// The trusted clock.
    pub fn set_trusted_clock(&mut self, _now: Option<DateTime<Utc>>) {}
}

/// Decodes a whole NMEA stream into one JSON line per fix.
pub fn nmea_to_json_lines(
    _input: impl std::io::Read,
    _out: &mut impl std::io::Write,
) -> std::io::Result<DecodeStats> {
    Ok(DecodeStats::default())
}
