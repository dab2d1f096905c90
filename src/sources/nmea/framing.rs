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
    /// only printable ASCII (so also valid UTF-8).
    Sentence(&'a [u8]),
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
    ///
    /// Works a run of bytes at a time. A line that starts and ends within
    /// `bytes` is checked where it lies; only a line split across calls is
    /// copied into the buffer.
    pub fn push(&mut self, bytes: &[u8], emit: &mut impl FnMut(Framed<'_>)) {
        let mut rest = bytes;
        while let Some(&b) = rest.first() {
            rest = if self.state == State::Line {
                self.extend(rest, emit)
            } else if is_start(b) {
                self.line(rest, emit)
            } else if is_line_end(b) {
                self.state = State::Idle;
                rest.get(1..).unwrap_or_default()
            } else {
                if self.state == State::Idle {
                    emit(Framed::Rejected(Reject::Noise));
                    self.state = State::Noise;
                }
                // Whatever else comes before the next start or line end is
                // part of this noise (or of the line already rejected).
                let tail = rest.get(1..).unwrap_or_default();
                let skip = tail
                    .iter()
                    .position(|&c| is_start(c) || is_line_end(c))
                    .unwrap_or(tail.len());
                tail.get(skip..).unwrap_or_default()
            };
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

    /// The most bytes a line may hold; a start character alone always fits.
    fn limit(&self) -> usize {
        self.max_line.max(1)
    }

    /// A line starting at `rest[0]` (a start character), outside any line:
    /// checked in place if it ends within `rest`, else buffered. Returns
    /// what follows the bytes it used.
    fn line<'b>(&mut self, rest: &'b [u8], emit: &mut impl FnMut(Framed<'_>)) -> &'b [u8] {
        let body = rest.get(1..).unwrap_or_default();
        let n = ordinary_run(body);
        let limit = self.limit();
        if n >= limit {
            // The byte past the limit is where the byte-wise reading rejects it.
            emit(Framed::Rejected(Reject::TooLong));
            self.state = State::Discard;
            return rest.get(limit + 1..).unwrap_or_default();
        }
        let (line, after) = rest.split_at((n + 1).min(rest.len()));
        match after.first() {
            Some(&b) if is_line_end(b) => {
                self.state = State::Idle;
                emit(check(line));
                after.get(1..).unwrap_or_default()
            }
            Some(&b) => {
                self.state = State::Idle;
                emit(Framed::Rejected(if is_start(b) {
                    Reject::Truncated
                } else {
                    Reject::Noise
                }));
                if is_start(b) {
                    after
                } else {
                    // Binary inside a sentence: the rest of it is noise.
                    self.state = State::Discard;
                    after.get(1..).unwrap_or_default()
                }
            }
            None => {
                self.buf.clear();
                self.buf.extend_from_slice(line);
                self.state = State::Line;
                after
            }
        }
    }

    /// More of a line begun in an earlier call. Returns what follows the
    /// bytes it used.
    fn extend<'b>(&mut self, rest: &'b [u8], emit: &mut impl FnMut(Framed<'_>)) -> &'b [u8] {
        let n = ordinary_run(rest);
        let room = self.limit().saturating_sub(self.buf.len());
        if n > room {
            emit(Framed::Rejected(Reject::TooLong));
            self.state = State::Discard;
            return rest.get(room + 1..).unwrap_or_default();
        }
        let (run, after) = rest.split_at(n.min(rest.len()));
        self.buf.extend_from_slice(run);
        match after.first() {
            None => after,
            Some(&b) if is_line_end(b) => {
                self.state = State::Idle;
                emit(check(&self.buf));
                after.get(1..).unwrap_or_default()
            }
            Some(&b) if is_start(b) => {
                emit(Framed::Rejected(Reject::Truncated));
                self.state = State::Idle;
                after
            }
            Some(_) => {
                // Binary inside a sentence: the line is corrupt; the rest of
                // it is noise until the next line end or start character.
                emit(Framed::Rejected(Reject::Noise));
                self.state = State::Discard;
                after.get(1..).unwrap_or_default()
            }
        }
    }
}

/// How many bytes at the front may continue a line: printable, not a start.
fn ordinary_run(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    /// The high bit of each byte that is zero; bits above a true one may be
    /// wrong (a borrow), the lowest set bit is always right.
    const fn zero_bytes(v: u64) -> u64 {
        v.wrapping_sub(ONES) & !v & HIGH
    }
    // Eight bytes at a time: a line is mostly ordinary bytes, and this is
    // the framer's inner loop.
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for w in &mut words {
        let x = <[u8; 8]>::try_from(w).map_or(0, u64::from_le_bytes);
        // Below 0x20 (the borrow sets the high bit of a byte that had it
        // clear), above 0x7e (adding one sets it, or it was set), or a start.
        let control = x.wrapping_sub(ONES * 0x20) & !x;
        let high = x.wrapping_add(ONES) | x;
        let start =
            zero_bytes(x ^ (ONES * u64::from(b'$'))) | zero_bytes(x ^ (ONES * u64::from(b'!')));
        let stop = (control | high | start) & HIGH;
        if stop != 0 {
            // Little-endian: the first byte in memory is the lowest.
            return at + (stop.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    let tail = words.remainder();
    at + tail
        .iter()
        .position(|&b| !is_printable(b) || is_start(b))
        .unwrap_or(tail.len())
}

/// XOR of all bytes, eight at a time.
fn xor(bytes: &[u8]) -> u8 {
    let mut words = bytes.chunks_exact(8);
    let mut acc = 0u64;
    for w in &mut words {
        acc ^= <[u8; 8]>::try_from(w).map_or(0, u64::from_ne_bytes);
    }
    acc ^= acc >> 32;
    acc ^= acc >> 16;
    acc ^= acc >> 8;
    // The low byte now holds the XOR of all eight lanes.
    let folded = acc.to_le_bytes()[0];
    words.remainder().iter().fold(folded, |a, &b| a ^ b)
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
    let sum = xor(body.get(1..).unwrap_or_default());
    if sum != (hi << 4 | lo) {
        return Framed::Rejected(Reject::BadChecksum);
    }
    Framed::Sentence(body)
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
                Framed::Sentence(s) => Out::S(String::from_utf8(s.to_vec()).unwrap()),
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

    /// The framer as it was, one byte at a time: the run-wise one must
    /// frame every input in every chunking exactly as this does.
    struct ByteFramer {
        buf: Vec<u8>,
        max_line: usize,
        state: State,
    }

    impl ByteFramer {
        fn step(&mut self, b: u8, out: &mut Vec<Out>) {
            let mut emit = |x: Framed<'_>| {
                out.push(match x {
                    Framed::Sentence(s) => Out::S(String::from_utf8(s.to_vec()).unwrap()),
                    Framed::Rejected(r) => Out::R(r),
                })
            };
            match self.state {
                State::Idle | State::Noise | State::Discard => {
                    if is_start(b) {
                        self.buf.clear();
                        self.buf.push(b);
                        self.state = State::Line;
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
                        self.buf.clear();
                        self.buf.push(b);
                    } else if !is_printable(b) {
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

    fn byte_wise(bytes: &[u8], max_line: usize) -> Vec<Out> {
        let mut f = ByteFramer {
            buf: Vec::new(),
            max_line,
            state: State::Idle,
        };
        let mut out = Vec::new();
        for &b in bytes {
            f.step(b, &mut out);
        }
        if f.state == State::Line {
            out.push(Out::R(Reject::Truncated));
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// The word-wise scan stops where the byte-wise one does.
        #[test]
        fn ordinary_runs_end_where_they_do(bytes in proptest::collection::vec(
            proptest::prop_oneof![4 => 0x20u8..0x7f, 1 => proptest::prelude::any::<u8>()], 0..40,
        )) {
            let byte_wise = bytes
                .iter()
                .position(|&b| !is_printable(b) || is_start(b))
                .unwrap_or(bytes.len());
            proptest::prop_assert_eq!(ordinary_run(&bytes), byte_wise);
        }

        /// Sentences, noise, binary, stray starts and line ends, in any
        /// chunking and with any line limit: as the byte-wise framer.
        #[test]
        fn frames_as_the_byte_wise_framer_did(
            pieces in proptest::collection::vec(piece(), 0..12),
            cuts in proptest::collection::vec(0usize..200, 0..6),
            max_line in 0usize..80,
        ) {
            let input: Vec<u8> = pieces.concat();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(&input[at..c]);
                at = c;
            }
            chunks.push(&input[at..]);
            proptest::prop_assert_eq!(frame_chunks(&chunks, max_line), byte_wise(&input, max_line));
        }
    }

    fn piece() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            3 => Just(format!("{GLL}\r\n").into_bytes()),
            2 => Just(format!("{RMC}\n").into_bytes()),
            1 => Just(GLL.replace("*66", "*67").into_bytes()),
            1 => Just(b"$GPGGA,1,2".to_vec()),
            1 => Just(b"$GPTXT,no checksum\r\n".to_vec()),
            1 => Just(b"\r\n".to_vec()),
            1 => Just(b"$".to_vec()),
            1 => Just(b"!".to_vec()),
            1 => Just(b"*".to_vec()),
            2 => proptest::collection::vec(any::<u8>(), 0..20),
            2 => proptest::collection::vec(0x20u8..0x7f, 0..90),
        ]
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
