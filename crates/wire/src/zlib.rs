//! The compression of a batch body: a zlib stream (RFC 1950: deflate plus an
//! Adler-32 checksum), which every language's standard library can inflate.

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};

/// Deflate level: 6, zlib's default. On the benchmark tracks 9 saved under
/// 0.1%: the columns, not the search effort, make the gain.
const LEVEL: u8 = 6;

/// Compresses a body.
pub fn compress(body: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec_zlib(body, LEVEL)
}

/// Inflates a zlib stream that must fill `input` exactly and inflate to at
/// most `limit` bytes; the checksum is verified.
pub fn inflate(input: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let flags = inflate_flags::TINFL_FLAG_PARSE_ZLIB_HEADER
        | inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    let mut state = Box::<DecompressorOxide>::default();
    // Start small and grow: the limit is what a hostile stream may claim,
    // not what a real one needs.
    let mut out = vec![0u8; input.len().saturating_mul(4).max(256).min(limit)];
    let (mut read, mut written) = (0usize, 0usize);
    loop {
        let rest = input.get(read..).unwrap_or_default();
        let (status, consumed, produced) = decompress(&mut state, rest, &mut out, written, flags);
        read = read.saturating_add(consumed);
        written = written.saturating_add(produced);
        match status {
            TINFLStatus::Done if read == input.len() => {
                out.truncate(written);
                return Ok(out);
            }
            TINFLStatus::Done => {
                return Err(format!(
                    "{} bytes after the end of the zlib stream",
                    input.len() - read.min(input.len())
                ));
            }
            TINFLStatus::HasMoreOutput if out.len() < limit => {
                out.resize(out.len().saturating_mul(2).min(limit), 0);
            }
            TINFLStatus::HasMoreOutput => {
                return Err(format!("body inflates to more than {limit} bytes"));
            }
            TINFLStatus::NeedsMoreInput | TINFLStatus::FailedCannotMakeProgress => {
                return Err("zlib stream is truncated".into());
            }
            TINFLStatus::Adler32Mismatch => return Err("zlib checksum mismatch".into()),
            other => return Err(format!("zlib stream is corrupt ({other:?})")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_is_not_exactly_one_stream() {
        let body: Vec<u8> = (0..5000u32).map(|i| (i % 7) as u8).collect();
        let z = compress(&body);
        assert_eq!(inflate(&z, body.len()).unwrap(), body);
        assert!(
            inflate(&z, body.len() - 1)
                .unwrap_err()
                .contains("more than")
        );
        let mut trailing = z.clone();
        trailing.push(0);
        assert!(
            inflate(&trailing, 1 << 20)
                .unwrap_err()
                .contains("after the end")
        );
        let mut flipped = z.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(inflate(&flipped, 1 << 20).unwrap_err().contains("checksum"));
        for cut in 0..z.len() {
            assert!(inflate(&z[..cut], 1 << 20).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn an_empty_body_round_trips() {
        assert_eq!(inflate(&compress(&[]), 64).unwrap(), Vec::<u8>::new());
    }
}
