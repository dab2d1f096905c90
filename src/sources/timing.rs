//! A receiver's time as a sample for chrony's `SOCK` refclock (pure: no I/O).
//!
//! chrony reads one datagram per sample: the C `struct sock_sample` of its
//! `refclock_sock.c` (a `struct timeval` of system time, the `double` offset
//! of true time from it, then the `int`s `pulse`, `leap`, a padding `int`
//! and the magic `0x534f434b`), in the host's byte order and layout, and
//! drops any datagram whose length is not exactly `sizeof` that struct.
//! The layout is therefore the target's C layout, taken from `libc`: 40
//! bytes on amd64 and arm64; 32 bytes on 32-bit ARM (armhf), where glibc's
//! `time_t` is 32 bits by default, as in Debian 12 and Raspberry Pi OS
//! Bookworm whose chronyd is built so. A chronyd built with a 64-bit
//! `time_t` on armhf (Debian 13's time64 transition) expects 40 bytes and
//! drops these; a 32-bit `time_t` also ends in January 2038, after which
//! [`TimeMark::encode`] refuses.
//!
//! The offset follows chrony (and gpsd's time hints): true time minus the
//! system time at which the receiver's message arrived. A serial receiver
//! sends its sentences some tens to hundreds of milliseconds after the
//! second they are stamped with, so the offset is that delay, negative;
//! chrony's `offset` option of the refclock cancels it. The pulse flag stays
//! 0: a PPS signal is the kernel's (`refclock PPS /dev/pps0 lock FXGT`), and
//! the leap flag 0: NMEA announces no leap seconds.

use std::mem::{offset_of, size_of};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use libc::{c_double, c_int, suseconds_t, time_t, timeval};

/// chrony's protocol identifier, "SOCK" in ASCII.
pub const SOCK_MAGIC: c_int = 0x534f_434b;

/// The C struct chrony reads, for its size and field offsets only: samples
/// are written field by field into bytes, so no unsafe code is needed.
#[repr(C)]
struct SockSample {
    tv: timeval,
    offset: c_double,
    pulse: c_int,
    leap: c_int,
    pad: c_int,
    magic: c_int,
}

/// Length of one sample datagram on this target.
pub const SAMPLE_LEN: usize = size_of::<SockSample>();

/// One sample datagram, ready to send.
pub type SampleBytes = [u8; SAMPLE_LEN];

/// Why a time mark cannot be a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SampleError {
    /// The arrival time is before 1970 or past what this target's `time_t` holds.
    #[error("the system time is outside what this target's time_t holds")]
    OutOfRange,
}

/// What a receiver's epoch says about the time: its UTC time, and when the
/// first sentence carrying that time arrived by the system clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeMark {
    /// The epoch's UTC time, dated by the receiver itself (RMC or ZDA).
    pub utc: DateTime<Utc>,
    /// System time when the epoch's first time-bearing sentence was read.
    pub arrived: SystemTime,
}

impl TimeMark {
    /// True time minus system time at arrival, in seconds (negative when
    /// the sentence came after its second, as it always does).
    pub fn offset(&self) -> f64 {
        let arrived = match self.arrived.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as f64, f64::from(d.subsec_nanos())),
            Err(before) => {
                let d = before.duration();
                (-(d.as_secs() as f64), -f64::from(d.subsec_nanos()))
            }
        };
        // Whole seconds and nanoseconds apart, so that the difference of
        // two times 1.7e9 s from 1970 keeps its sub-microsecond digits.
        let secs = self.utc.timestamp() as f64 - arrived.0;
        let nanos = f64::from(self.utc.timestamp_subsec_nanos()) - arrived.1;
        secs + nanos * 1e-9
    }

    /// The second of the receiver's time (for one sample per second).
    pub fn second(&self) -> i64 {
        self.utc.timestamp()
    }

    /// The sample chrony's `SOCK` refclock reads, in this target's layout.
    pub fn encode(&self) -> Result<SampleBytes, SampleError> {
        let since = self
            .arrived
            .duration_since(UNIX_EPOCH)
            .map_err(|_| SampleError::OutOfRange)?;
        let secs = time_t::try_from(since.as_secs()).map_err(|_| SampleError::OutOfRange)?;
        // Below a million: fits the 32 bits of the narrowest suseconds_t.
        let micros = suseconds_t::from(i32::try_from(since.subsec_micros()).unwrap_or(0));
        let mut out = [0u8; SAMPLE_LEN];
        let tv = offset_of!(SockSample, tv);
        put(
            &mut out,
            tv + offset_of!(timeval, tv_sec),
            &secs.to_ne_bytes(),
        );
        put(
            &mut out,
            tv + offset_of!(timeval, tv_usec),
            &micros.to_ne_bytes(),
        );
        let offset: c_double = self.offset();
        put(
            &mut out,
            offset_of!(SockSample, offset),
            &offset.to_ne_bytes(),
        );
        // Not a pulse, no leap second announced, padding zero.
        let zero: c_int = 0;
        for field in [
            offset_of!(SockSample, pulse),
            offset_of!(SockSample, leap),
            offset_of!(SockSample, pad),
        ] {
            put(&mut out, field, &zero.to_ne_bytes());
        }
        put(
            &mut out,
            offset_of!(SockSample, magic),
            &SOCK_MAGIC.to_ne_bytes(),
        );
        Ok(out)
    }
}

/// Copies `bytes` into `out` at `at`; the offsets come from the struct
/// itself, so they always fit.
fn put(out: &mut SampleBytes, at: usize, bytes: &[u8]) {
    if let Some(slot) = out.get_mut(at..at + bytes.len()) {
        slot.copy_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;

    fn mark(utc_ms: i64, arrived_us: u64) -> TimeMark {
        TimeMark {
            utc: Utc.timestamp_millis_opt(utc_ms).single().expect("utc"),
            arrived: UNIX_EPOCH + Duration::from_micros(arrived_us),
        }
    }

    /// The struct as C lays it out, written by hand for each ABI fixgate
    /// ships for: `time_t` and `suseconds_t` are `long` on amd64 and arm64
    /// (8 bytes, so 16 for the timeval), and 4 bytes each on armhf, where
    /// the `double` that follows is 8-aligned in either case.
    fn c_layout(sec: i64, usec: i64, offset: f64, magic: i32) -> Vec<u8> {
        let mut b = Vec::new();
        if cfg!(target_pointer_width = "64") {
            b.extend_from_slice(&sec.to_ne_bytes());
            b.extend_from_slice(&usec.to_ne_bytes());
        } else {
            b.extend_from_slice(&(sec as i32).to_ne_bytes());
            b.extend_from_slice(&(usec as i32).to_ne_bytes());
        }
        b.extend_from_slice(&offset.to_ne_bytes());
        for field in [0i32, 0, 0, magic] {
            b.extend_from_slice(&field.to_ne_bytes());
        }
        b
    }

    #[test]
    fn the_sample_has_chronys_c_layout() {
        // What gcc says for `struct sock_sample` on each target (checked
        // with gcc, aarch64-linux-gnu-gcc and arm-linux-gnueabihf-gcc).
        let expected_len = if cfg!(target_pointer_width = "64") {
            40
        } else {
            32
        };
        assert_eq!(SAMPLE_LEN, expected_len);
        // The fix of 12:00:00.000 read 0.123456 s later.
        let m = mark(1_764_936_000_000, 1_764_936_000_123_456);
        let bytes = m.encode().expect("in range");
        let offset = m.offset();
        assert_eq!(
            bytes.to_vec(),
            c_layout(1_764_936_000, 123_456, offset, 0x534f_434b)
        );
        // "SOCK", as chrony checks it.
        assert_eq!(&bytes[SAMPLE_LEN - 4..], &SOCK_MAGIC.to_ne_bytes());
        assert_eq!(SOCK_MAGIC.to_be_bytes(), *b"SOCK");
    }

    #[test]
    fn the_offset_is_true_time_minus_arrival() {
        // A sentence stamped 12:00:00.000 read at 12:00:00.123456.
        let late = mark(1_764_936_000_000, 1_764_936_000_123_456);
        assert!(
            (late.offset() + 0.123_456).abs() < 1e-9,
            "{}",
            late.offset()
        );
        // A 5 Hz epoch of .400 read at .410: the epoch's own fraction counts.
        let tenth = mark(1_764_936_000_400, 1_764_936_000_410_000);
        assert!((tenth.offset() + 0.010).abs() < 1e-9, "{}", tenth.offset());
        // A system clock 2.5 s behind the receiver: a positive offset.
        let behind = mark(1_764_936_010_000, 1_764_936_007_500_000);
        assert!((behind.offset() - 2.5).abs() < 1e-9, "{}", behind.offset());
        assert_eq!(behind.second(), 1_764_936_010);
    }

    #[test]
    fn a_system_time_before_1970_is_no_sample() {
        let m = TimeMark {
            utc: Utc.timestamp_millis_opt(0).single().expect("utc"),
            arrived: UNIX_EPOCH - Duration::from_secs(2),
        };
        assert_eq!(m.encode(), Err(SampleError::OutOfRange));
        assert!((m.offset() - 2.0).abs() < 1e-9);
    }

    #[test]
    #[cfg(target_pointer_width = "32")]
    fn a_32_bit_time_t_ends_in_2038() {
        let m = mark(2_200_000_000_000, 2_200_000_000_000_000);
        assert_eq!(m.encode(), Err(SampleError::OutOfRange));
    }
}
