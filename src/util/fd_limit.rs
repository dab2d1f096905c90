//! The process's open-files limit, raised to what its connection limits
//! need: the common soft default of 1024 is less than one broker's worth of
//! trackers, and a process out of descriptors stops accepting anything,
//! health checks included.

/// Raises the soft open-files limit towards `needed` (up to the hard
/// limit), warning naming `what` when the hard limit is lower.
pub fn raise(needed: u64, what: &str) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    // rlim_t is 32 bits wide on 32-bit ARM (armv7 glibc), 64 elsewhere.
    #[allow(clippy::useless_conversion)]
    let (current, hard) = (u64::from(limit.rlim_cur), u64::from(limit.rlim_max));
    if current >= needed {
        return;
    }
    let granted = needed.min(hard);
    let wanted = libc::rlimit {
        // At most the hard limit, so it fits.
        rlim_cur: libc::rlim_t::try_from(granted).unwrap_or(limit.rlim_max),
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } != 0 || granted < needed {
        tracing::warn!(
            needed,
            limit = granted,
            "the open-files limit is lower than {what} need; raise it (LimitNOFILE= in the unit, `ulimit -n`) or lower them"
        );
    }
}
