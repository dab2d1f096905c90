//! Byte-level line framing: arbitrary chunks in, checksummed sentences out.
//!
//! The framer owns one buffer of at most `max_line` bytes and never grows it,
//! so a receiver spewing binary or a line without end cannot make it allocate.
//! Every byte that does not end up in a good sentence is accounted for by a
//! [`Reject`] reason, one per bad line or noise run, never per byte.

/// Why a line (or a run of bytes) was thrown away before it became a sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Longer than the configured maximum line length.
    TooLong,
    /// Bytes outside a sentence: text not starting with `$`/`!`, or binary.
    Noise,
    /// A sentence cut short by a new `$`/`!` before its line end.
    Truncated,
    /// A line with no `*hh` checksum at its end.
    NoChecksum,
    /// The checksum does not match the content.
    BadChecksum,
}

/// What the framer hands on: a sentence whose checksum matched, or a rejection.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed<'a> {
    /// The full sentence from its `$`/`!` up to, not including, `*hh`;
    /// only printable ASCII, so it is valid UTF-8.
    Sentence(&'a str),
    /// Something was thrown away.
    Rejected(Reject),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between lines: line ends are skipped silently.
    Idle,
    /// Inside a run of bytes that cannot start a sentence (already counted).
    Noise,
    /// Collecting a sentence into the buffer.
    Line,
    /// Skipping the rest of a line that was already rejected.
    Discard,
}

/// Splits a byte stream into NMEA sentences and verifies their checksums.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    max_line: usize,
    state: State,
}

const fn is_line_end(b: u8) -> bool {
    b == b'\r' || b == b'\n'
}

const fn is_start(b: u8) -> bool {
    b == b'$' || b == b'!'
}

/// NMEA 0183 allows only printable ASCII between the start and the line end.
const fn is_printable(b: u8) -> bool {
    matches!(b, 0x20..=0x7e)
}

impl Framer {
    /// A framer for lines of at most `max_line` bytes (start character to checksum).
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: Vec::with_capacity(max_line),
            max_line,
            state: State::Idle,
        }
    }

    /// Feeds bytes; calls `emit` for every sentence completed and every rejection.
    pub fn push(&mut self, bytes: &[u8], emit: &mut impl FnMut(Framed<'_>)) {
        for &b in bytes {
            self.step(b, emit);
        }
    }

    /// End of input: a sentence still open has lost its line end.
    pub fn finish(&mut self, emit: &mut impl FnMut(Framed<'_>)) {
        if self.state == State::Line {
            emit(Framed::Rejected(Reject::Truncated));
        }
        self.buf.clear();
        self.state = State::Idle;
    }

    fn start_line(&mut self, b: u8) {
        self.buf.clear();
        self.buf.push(b);
        self.state = State::Line;
    }

    fn step(&mut self, b: u8, emit: &mut impl FnMut(Framed<'_>)) {
        match self.state {
            State::Idle | State::Noise | State::Discard => {
                if is_start(b) {
                    self.start_line(b);
                } else if is_line_end(b) {
                    self.state = State::Idle;
                } else if self.state == State::Idle {
                    emit(Framed::Rejected(Reject::Noise));
                    self.state = State::Noise;
                }
            }
            State::Line => {
                if is_line_end(b) {
                    self.state = State::Idle;
                    emit(check(&self.buf));
                } else if is_start(b) {
                    emit(Framed::Rejected(Reject::Truncated));
                    self.start_line(b);
                } else if !is_printable(b) {
                    // Binary inside a sentence: the line is corrupt; the rest of
                    // it is noise until the next line end or start character.
                    emit(Framed::Rejected(Reject::Noise));
                    self.state = State::Discard;
                } else if self.buf.len() >= self.max_line {
                    emit(Framed::Rejected(Reject::TooLong));
                    self.state = State::Discard;
                } else {
                    self.buf.push(b);
                }
            }
        }
    }
}

/// Verifies `*hh` at the end of a complete line and hands back the part before it.
fn check(line: &[u8]) -> Framed<'_> {
    let Some(star) = line.iter().rposition(|&b| b == b'*') else {
        return Framed::Rejected(Reject::NoChecksum);
    };
    let (body, tail) = line.split_at(star);
    let [_, hi, lo] = tail else {
        return Framed::Rejected(Reject::NoChecksum);
    };
    let (Some(hi), Some(lo)) = (hex(*hi), hex(*lo)) else {
        return Framed::Rejected(Reject::NoChecksum);
    };
    // The checksum covers everything between the start character and '*'.
    let sum = body.iter().skip(1).fold(0u8, |acc, &b| acc ^ b);
    if sum != (hi << 4 | lo) {
        return Framed::Rejected(Reject::BadChecksum);
    }
    match std::str::from_utf8(body) {
        Ok(s) => Framed::Sentence(s),
        // Unreachable in practice: the buffer only ever holds printable ASCII.
        Err(_) => Framed::Rejected(Reject::Noise),
    }
}

const fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Out {
        S(String),
        R(Reject),
    }

    fn frame_chunks(chunks: &[&[u8]], max_line: usize) -> Vec<Out> {
        let mut f = Framer::new(max_line);
        let mut out = Vec::new();
        let mut emit = |x: Framed<'_>| {
            out.push(match x {
                Framed::Sentence(s) => Out::S(s.to_owned()),
                Framed::Rejected(r) => Out::R(r),
            })
        };
        for c in chunks {
            f.push(c, &mut emit);
        }
        f.finish(&mut emit);
        out
    }

    fn frame(bytes: &[u8]) -> Vec<Out> {
        frame_chunks(&[bytes], 512)
    }

    const GLL: &str = "$GNGLL,4404.14066,N,12118.85481,W,171925.00,A,A*66";
    const RMC: &str = "$GNRMC,171926.00,A,4404.14063,N,12118.85478,W,0.117,,180315,,,A*76";

    fn body(s: &str) -> Out {
        Out::S(s.split('*').next().unwrap().to_owned())
    }

    #[test]
    fn accepts_cr_lf_and_crlf_line_ends() {
        for end in ["\r\n", "\n", "\r", "\r\r\n"] {
            let input = format!("{GLL}{end}{RMC}{end}");
            assert_eq!(
                frame(input.as_bytes()),
                vec![body(GLL), body(RMC)],
                "{end:?}"
            );
        }
    }

    #[test]
    fn every_split_point_gives_the_same_result() {
        let input = format!("{GLL}\r\n#junk\n{RMC}\n$GPGGA,1*00\n");
        let whole = frame(input.as_bytes());
        let bytes = input.as_bytes();
        for i in 0..=bytes.len() {
            let (a, b) = bytes.split_at(i);
            assert_eq!(frame_chunks(&[a, b], 512), whole, "split at {i}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(frame_chunks(&singles, 512), whole);
    }

    #[test]
    fn bad_checksum_is_rejected() {
        let bad = GLL.replace("*66", "*67");
        assert_eq!(
            frame(format!("{bad}\n").as_bytes()),
            vec![Out::R(Reject::BadChecksum)]
        );
        // Lower-case hex is accepted.
        let lower = "$GPGSV,4,4,13,32,76,331,27*4f";
        assert_eq!(frame(format!("{lower}\n").as_bytes()), vec![body(lower)]);
    }

    #[test]
    fn missing_or_short_checksum_is_rejected() {
        for line in [
            "$GPGGA,1,2,3",
            "$GPGGA,1,2*4",
            "$GPGGA,1,2*4G",
            "$GPGGA,1*411",
        ] {
            assert_eq!(
                frame(format!("{line}\n").as_bytes()),
                vec![Out::R(Reject::NoChecksum)],
                "{line}"
            );
        }
    }

    #[test]
    fn a_new_start_before_the_line_end_truncates() {
        let input = format!("$GNRMC,1719{GLL}\n");
        assert_eq!(
            frame(input.as_bytes()),
            vec![Out::R(Reject::Truncated), body(GLL)]
        );
        // End of input inside a sentence.
        assert_eq!(frame(b"$GNRMC,1719"), vec![Out::R(Reject::Truncated)]);
    }

    #[test]
    fn over_long_lines_are_skipped_to_their_end() {
        let long = format!("$GPTXT,{}*00\n{GLL}\n", "x".repeat(600));
        assert_eq!(
            frame(long.as_bytes()),
            vec![Out::R(Reject::TooLong), body(GLL)]
        );
        // Exactly max_line bytes is fine; one more is not.
        let exact = GLL.len();
        let input = format!("{GLL}\n");
        assert_eq!(frame_chunks(&[input.as_bytes()], exact), vec![body(GLL)]);
        assert_eq!(
            frame_chunks(&[input.as_bytes()], exact - 1),
            vec![Out::R(Reject::TooLong)]
        );
    }

    #[test]
    fn binary_noise_is_counted_per_run_and_never_stalls() {
        let mut input = vec![0xb5, 0x62, 0x01, 0x07, 0x00, 0xff, 0x0a];
        input.extend_from_slice(GLL.as_bytes());
        input.extend_from_slice(b"\n\xb5\x62junk$");
        input.extend_from_slice(&RMC.as_bytes()[1..]);
        input.extend_from_slice(b"\n");
        assert_eq!(
            frame(&input),
            vec![
                Out::R(Reject::Noise),
                body(GLL),
                Out::R(Reject::Noise),
                body(RMC)
            ]
        );
        // Binary inside a sentence spoils that sentence only.
        let mut input = b"$GNRMC,17\x0019".to_vec();
        input.extend_from_slice(b"26\n");
        input.extend_from_slice(GLL.as_bytes());
        input.push(b'\n');
        assert_eq!(frame(&input), vec![Out::R(Reject::Noise), body(GLL)]);
    }

    #[test]
    fn text_lines_without_a_start_are_noise() {
        assert_eq!(
            frame(b"# comment line\n\n\nGPGGA,1*00\n"),
            vec![Out::R(Reject::Noise), Out::R(Reject::Noise)]
        );
    }

    #[test]
    fn the_buffer_never_grows_past_max_line() {
        let mut f = Framer::new(64);
        let cap = f.buf.capacity();
        let mut n = 0;
        let junk: Vec<u8> = (0..100_000u32)
            .map(|i| b"$ab*\r\x00x"[(i % 7) as usize])
            .collect();
        f.push(&junk, &mut |_| n += 1);
        f.push(&[b'$'; 10_000], &mut |_| n += 1);
        f.push(&[b'A'; 10_000], &mut |_| n += 1);
        assert!(n > 0);
        assert_eq!(f.buf.capacity(), cap);
        assert!(f.buf.len() <= 64);
    }
}
