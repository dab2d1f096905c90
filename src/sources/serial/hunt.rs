//! Finding a receiver's line speed (`baud = "auto"`), as plain values: the
//! order the rates are tried in, the window each is given, and when what
//! arrived at a rate proves it right. The serial task does the I/O.
//!
//! A UART at the wrong speed still delivers bytes, framed from the wrong
//! bits: noise without line structure, where a sentence whose checksum
//! matches does not happen by chance. One such sentence proves the rate.

use std::time::{Duration, Instant};

use crate::sources::nmea::DecoderOptions;
use crate::sources::nmea::framing::{Framed, Framer};

/// The order a hunt tries `rates` in: the `remembered` rate first, when it
/// is one of them, then the others as listed. A remembered rate that is not
/// listed is left out: the list says what this port may be set to.
pub fn order(rates: &[u32], remembered: Option<u32>) -> Vec<u32> {
    let first = remembered.filter(|r| rates.contains(r));
    first
        .into_iter()
        .chain(rates.iter().copied().filter(|&r| Some(r) != first))
        .collect()
}

/// Whether the rate a hunt found is news to the store.
pub fn worth_remembering(remembered: Option<u32>, found: u32) -> bool {
    remembered != Some(found)
}

/// One rate to listen at, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Bits per second.
    pub rate: u32,
    /// The end of its window.
    pub until: Instant,
}

/// One round over the rates, one window each.
#[derive(Debug, Clone)]
pub struct Round {
    order: Vec<u32>,
    tried: usize,
    window: Duration,
    started: Instant,
}

impl Round {
    /// A round begun at `now` over `rates` (see [`order`]), `window` per rate.
    pub fn new(rates: &[u32], remembered: Option<u32>, window: Duration, now: Instant) -> Self {
        Self {
            order: order(rates, remembered),
            tried: 0,
            window,
            started: now,
        }
    }

    /// The next rate to try from `now` on; `None` once every rate was tried.
    pub fn next(&mut self, now: Instant) -> Option<Probe> {
        let rate = *self.order.get(self.tried)?;
        self.tried += 1;
        Some(Probe {
            rate,
            until: now + self.window,
        })
    }

    /// Rates tried so far, the one being tried included.
    pub fn attempts(&self) -> usize {
        self.tried
    }

    /// The rates of the round, in the order tried.
    pub fn rates(&self) -> &[u32] {
        &self.order
    }

    /// How long the round has taken by `now`.
    pub fn took(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }
}

/// Listens to one rate's window: frames what arrives, without counting the
/// noise of a wrong rate as a receiver's bad input.
#[derive(Debug)]
pub struct Listener {
    framer: Framer,
}

impl Default for Listener {
    fn default() -> Self {
        Self::new()
    }
}

impl Listener {
    /// A listener with the decoder's own line limit.
    pub fn new() -> Self {
        Self {
            framer: Framer::new(DecoderOptions::default().max_line),
        }
    }

    /// Feeds one read. Once a sentence with a good checksum has completed,
    /// returns where in `bytes` the decoder should take over: at that
    /// sentence's start, so that it is not lost, or past its end when it
    /// began in an earlier read. Noise before it never reaches the decoder.
    pub fn push(&mut self, bytes: &[u8]) -> Option<usize> {
        let here = bytes.as_ptr_range();
        let mut found = None;
        // One pass of the framer over the read, as the decoder would make.
        self.framer.push(bytes, &mut |framed| match framed {
            Framed::Sentence(sentence) if found.is_none() && has_address(sentence) => {
                let start = sentence.as_ptr();
                found = Some(if here.contains(&start) {
                    // Checked where it lies in this read.
                    start as usize - here.start as usize
                } else {
                    // Completed from the framer's buffer: it began in an
                    // earlier read and ended at this read's first line end.
                    bytes
                        .iter()
                        .position(|&b| b == b'\n' || b == b'\r')
                        .map_or(bytes.len(), |i| i + 1)
                });
            }
            _ => {}
        });
        found
    }
}

/// Whether a checksummed sentence starts like NMEA: an address of two to
/// eight letters or digits, then a comma. Rules out the shortest lines
/// (`$*00`) that noise could still complete by chance.
fn has_address(sentence: &[u8]) -> bool {
    let body = sentence.get(1..).unwrap_or_default();
    let Some(comma) = body.iter().position(|&b| b == b',') else {
        return false;
    };
    let address = body.get(..comma).unwrap_or_default();
    (2..=8).contains(&address.len())
        && address
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RMC: &[u8] =
        b"$GPRMC,123519.00,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*44\r\n";
    const GGA: &[u8] = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n";

    /// Deterministic bytes of no line structure, like a UART at a wrong rate.
    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect()
    }

    #[test]
    fn the_remembered_rate_goes_first_and_only_if_listed() {
        let rates = [4800, 9600, 19200, 38400];
        assert_eq!(order(&rates, None), rates);
        assert_eq!(order(&rates, Some(38400)), [38400, 4800, 9600, 19200]);
        assert_eq!(order(&rates, Some(4800)), rates);
        assert_eq!(order(&rates, Some(115200)), rates, "not listed");
        assert!(worth_remembering(None, 9600));
        assert!(worth_remembering(Some(4800), 9600));
        assert!(!worth_remembering(Some(9600), 9600));
    }

    #[test]
    fn a_round_gives_each_rate_one_window_then_ends() {
        let t0 = Instant::now();
        let window = Duration::from_millis(2500);
        let mut round = Round::new(&[4800, 9600, 38400], Some(9600), window, t0);
        assert_eq!(round.rates(), [9600, 4800, 38400]);
        assert_eq!(round.attempts(), 0);
        let mut seen = Vec::new();
        let mut now = t0;
        while let Some(probe) = round.next(now) {
            assert_eq!(probe.until, now + window);
            seen.push(probe.rate);
            now = probe.until;
        }
        assert_eq!(seen, [9600, 4800, 38400]);
        assert_eq!(round.attempts(), 3);
        assert_eq!(round.took(now), window * 3);
        assert_eq!(round.next(now), None, "stays ended");
    }

    #[test]
    fn one_good_sentence_locks_and_the_decoder_takes_it_from_its_start() {
        let mut listener = Listener::new();
        let mut read = noise(300, 7);
        assert_eq!(listener.push(&read), None);
        let start = read.len();
        read.extend_from_slice(RMC);
        read.extend_from_slice(GGA);
        assert_eq!(listener.push(&read), Some(start));
        assert_eq!(read.get(start..start + 7), Some(&b"$GPRMC,"[..]));
    }

    #[test]
    fn a_sentence_split_across_reads_locks_past_its_end() {
        let mut listener = Listener::new();
        let (head, tail) = RMC.split_at(30);
        assert_eq!(listener.push(head), None);
        let mut read = tail.to_vec();
        let after = read.len();
        read.extend_from_slice(GGA);
        // "\r\n": the framer completes the sentence at '\r'; the '\n' is
        // left for the decoder, which skips line ends.
        assert_eq!(listener.push(&read), Some(after - 1));
    }

    #[test]
    fn noise_and_bad_checksums_never_lock() {
        let mut listener = Listener::new();
        for seed in 1..200 {
            assert_eq!(listener.push(&noise(512, seed)), None, "seed {seed}");
        }
        let mut bad = RMC.to_vec();
        let star = bad.len() - 4;
        bad[star + 1] = b'0';
        assert_eq!(listener.push(&bad), None, "a wrong checksum");
        assert_eq!(listener.push(b"$*00\r\n"), None, "no address");
        assert_eq!(listener.push(b"$gp,1*0A\r\n"), None, "not an address");
        assert_eq!(listener.push(b"$GPRMC,123519.00,A*"), None, "not complete");
    }
}
