//! A serial line at the wrong speed, for the tests and the bench of line-speed
//! hunting (`baud = "auto"`): what a receiver's bytes become when the UART
//! that reads them runs at another rate. A pseudo-terminal carries bytes
//! whatever its speed setting, so the simulated receiver applies this itself.

/// What a UART reading at `read` bit/s makes of `bytes` sent at `sent` bit/s,
/// 8N1: it waits for a falling edge, samples the middle of each of its own
/// bit times, and passes a byte whose stop bit it finds low on as NUL (a
/// framing error, as a raw tty without INPCK or PARMRK does).
pub fn uart_at(bytes: &[u8], sent: u32, read: u32) -> Vec<u8> {
    if read == 0 {
        return Vec::new();
    }
    let bits: Vec<bool> = bytes
        .iter()
        .flat_map(|&b| {
            std::iter::once(false)
                .chain((0..8).map(move |i| (b >> i) & 1 == 1))
                .chain(std::iter::once(true))
        })
        .collect();
    // The line idles high around the frames.
    let level = |t: f64| t < 0.0 || bits.get(t as usize).copied().unwrap_or(true);
    let bit = f64::from(sent) / f64::from(read);
    let step = bit / 16.0;
    let end = bits.len() as f64;
    let mut out = Vec::new();
    let mut t = 0.0;
    while t < end {
        let mid = t + bit / 2.0;
        if level(t) || level(mid) {
            // Idle, or a glitch too short to be a start bit.
            t += step;
            continue;
        }
        let byte = (0..8)
            .filter(|&i| level(mid + bit * f64::from(i + 1)))
            .fold(0u8, |byte, i| byte | 1 << i);
        let stop = mid + bit * 9.0;
        out.push(if level(stop) { byte } else { 0 });
        // The next frame starts at the next falling edge.
        t = stop;
        while t < end && !level(t) {
            t += step;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_right_speed_is_the_identity_and_a_wrong_one_breaks_every_sentence() {
        let text = b"$GPRMC,123519.00,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*44\r\n";
        assert_eq!(uart_at(text, 38400, 38400), text);
        for read in [4800, 9600, 19200, 57600, 115200] {
            let garbage = uart_at(text, 38400, read);
            assert_ne!(garbage, text, "read at {read}");
            assert!(
                !garbage.windows(6).any(|w| w == b"$GPRMC"),
                "read at {read}"
            );
        }
        assert!(uart_at(text, 38400, 0).is_empty());
    }
}
