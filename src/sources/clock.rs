//! When the system clock may date fixes from receivers that send no date.
//!
//! Receivers that only send GGA, GLL or GNS give the time of day but not the
//! date. A Raspberry Pi has no real-time clock: until NTP (or a GNSS-disciplined
//! chrony) has set it, the system date is whatever the last shutdown left, or
//! 1970. So by default (`auto`) the system date is used only while the kernel
//! reports the clock as synchronised (`adjtimex` without `STA_UNSYNC`, what
//! `timedatectl` shows as "System clock synchronized: yes"); fixes that cannot
//! be dated are held back rather than stored with a wrong date.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

pub use crate::config::ClockTrust;

/// Whether the kernel considers the system clock synchronised to a time source.
pub fn kernel_synchronised() -> bool {
    // SAFETY: adjtimex with `modes == 0` only reads the kernel's clock state
    // into the zeroed struct we own.
    let (state, status) = unsafe {
        let mut tx: libc::timex = std::mem::zeroed();
        let state = libc::adjtimex(&mut tx);
        (state, tx.status)
    };
    state >= 0 && state != libc::TIME_ERROR && status & libc::STA_UNSYNC == 0
}

/// Answers "may I use the system clock now?", asking the kernel at most once a second.
#[derive(Debug)]
pub struct TrustedClock {
    trust: ClockTrust,
    checked: Option<(Instant, bool)>,
}

impl TrustedClock {
    /// A clock following `trust`.
    pub fn new(trust: ClockTrust) -> Self {
        Self {
            trust,
            checked: None,
        }
    }

    /// The current time if the policy trusts the system clock now.
    pub fn now(&mut self) -> Option<DateTime<Utc>> {
        let trusted = match self.trust {
            ClockTrust::Always => true,
            ClockTrust::Never => false,
            ClockTrust::Auto => match self.checked {
                Some((at, ok)) if at.elapsed() < Duration::from_secs(1) => ok,
                _ => {
                    let ok = kernel_synchronised();
                    self.checked = Some((Instant::now(), ok));
                    ok
                }
            },
        };
        trusted.then(Utc::now)
    }
}
