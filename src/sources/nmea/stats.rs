//! Counters of one decoder, for metrics, logs and the serial watchdog.

use super::framing::Reject;

/// Counters since the decoder was created: what was accepted, emitted, skipped and rejected.
///
/// Cheap to copy: a caller that wants to know what changed keeps the previous
/// value and compares, e.g. `now.sentences > before.sentences` means "a valid
/// sentence arrived since I last looked" (the serial source reopens a port
/// that stays silent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Bytes fed in.
    pub bytes: u64,
    /// Sentences with a correct checksum, whether or not they are used.
    pub sentences: u64,
    /// Sentences that fed an epoch (RMC, GGA, GNS, GLL, VTG, GSA, ZDA).
    pub used: u64,
    /// Of `used`: sentences the fast path left to the `nmea` crate, which
    /// refused them, and that our own field reader accepted.
    pub crate_refused: u64,
    /// Fixes emitted.
    pub fixes: u64,
    /// Epochs closed without a fix: the receiver said it had none, or gave no position.
    pub epochs_without_fix: u64,
    /// Epochs with a fix that could not be emitted because no date was known
    /// (no RMC/ZDA date yet and no trusted clock).
    pub epochs_undated: u64,
    /// Sentences skipped as of no use for a fix, by reason.
    pub skipped: Skipped,
    /// Lines and bytes rejected, by reason.
    pub rejected: Rejected,
}

/// Valid sentences that are skipped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Standard sentences we do not use (GSV, GST, TXT, HDG, ...).
    pub unused: u64,
    /// Proprietary `$P...` sentences.
    pub proprietary: u64,
    /// Encapsulated `!...` sentences (AIS).
    pub encapsulated: u64,
    /// Sentences whose address field is neither standard nor proprietary.
    pub unknown: u64,
}

/// Input thrown away, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejected {
    /// Lines longer than the configured maximum.
    pub too_long: u64,
    /// Runs of bytes outside any sentence: text without `$`/`!`, binary.
    pub noise: u64,
    /// Sentences cut short by a new start character or the end of input.
    pub truncated: u64,
    /// Lines without a `*hh` checksum.
    pub no_checksum: u64,
    /// Lines whose checksum does not match.
    pub bad_checksum: u64,
    /// Sentences with a good checksum but content we cannot read.
    pub malformed: u64,
}

impl Rejected {
    pub(super) fn count(&mut self, reason: Reject) {
        let counter = match reason {
            Reject::TooLong => &mut self.too_long,
            Reject::Noise => &mut self.noise,
            Reject::Truncated => &mut self.truncated,
            Reject::NoChecksum => &mut self.no_checksum,
            Reject::BadChecksum => &mut self.bad_checksum,
        };
        *counter += 1;
    }

    /// Every rejection reason with its count, labels stable for metrics.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + use<> {
        [
            ("too_long", self.too_long),
            ("noise", self.noise),
            ("truncated", self.truncated),
            ("no_checksum", self.no_checksum),
            ("bad_checksum", self.bad_checksum),
            ("malformed", self.malformed),
        ]
        .into_iter()
    }
}

impl Skipped {
    /// Every skip reason with its count, labels stable for metrics.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + use<> {
        [
            ("unused", self.unused),
            ("proprietary", self.proprietary),
            ("encapsulated", self.encapsulated),
            ("unknown", self.unknown),
        ]
        .into_iter()
    }
}

impl DecodeStats {
    /// Sentences with a correct checksum so far; a watchdog compares two
    /// readings to tell a live receiver from a silent or garbled one.
    pub fn sentences(&self) -> u64 {
        self.sentences
    }

    /// Rejections by reason: `(reason_label, count)`, labels stable for metrics.
    pub fn rejections(&self) -> impl Iterator<Item = (&'static str, u64)> + use<> {
        self.rejected.iter()
    }
}
