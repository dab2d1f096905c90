//! The compression of a version-2 body: a raw LZMA stream (LZMA1 with
//! `lc=0, lp=0, pb=0`, a 64 KiB dictionary and an end marker), that is a
//! `.lzma` file without its 13-byte header, which would say only what the
//! spec fixes anyway.
//!
//! Why LZMA rather than deflate: its range coder adapts from the first byte,
//! where deflate spends 50-80 bytes on Huffman tables per batch, and its
//! literal coder (`lc=0`: no context from the previous byte, which belongs
//! to another value) learns a column's few residual bytes quickly.

use xz2::stream::{Action, LzmaOptions, MatchFinder, Status, Stream};

/// Dictionary size: bodies are small, and the decoder allocates this much.
const DICT_SIZE: u32 = 1 << 16;
/// Encoder preset (its match finder and search effort; `lc`, `lp`, `pb`
/// and the dictionary are set below).
const PRESET: u32 = 6;
/// The `.lzma` header the encoder writes and the wire leaves out: the
/// properties byte `(pb * 5 + lp) * 9 + lc = 0`, the dictionary size (u32,
/// little-endian) and an unknown uncompressed size (all ones: the stream
/// ends with the end marker).
const HEADER: [u8; 13] = [
    0, 0, 0, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
];
/// Memory the decoder may use (the dictionary and its probability tables
/// need well under 1 MiB).
const DECODER_MEMORY: u64 = 16 << 20;

fn options() -> Result<LzmaOptions, String> {
    let mut options = LzmaOptions::new_preset(PRESET).map_err(|e| e.to_string())?;
    options
        .dict_size(DICT_SIZE)
        .literal_context_bits(0)
        .literal_position_bits(0)
        .position_bits(0)
        // Residual columns hold few long matches: the hash chain with short
        // matches costs 0.6% bytes and saves half of liblzma's instructions.
        .match_finder(MatchFinder::HashChain4)
        .nice_len(16);
    Ok(options)
}

/// Compresses a body. liblzma fails only on options it does not support or
/// when out of memory: both are bugs here, not input errors.
pub fn compress(body: &[u8]) -> Result<Vec<u8>, String> {
    let mut stream = Stream::new_lzma_encoder(&options()?).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(body.len() / 2 + 64);
    loop {
        let consumed = usize::try_from(stream.total_in()).unwrap_or(usize::MAX);
        let rest = body.get(consumed..).unwrap_or_default();
        match stream.process_vec(rest, &mut out, Action::Finish) {
            Ok(Status::StreamEnd) => break,
            Ok(_) => out.reserve(out.capacity().max(64)),
            Err(e) => return Err(e.to_string()),
        }
    }
    match out.strip_prefix(&HEADER[..]) {
        Some(stream) => Ok(stream.to_vec()),
        None => Err("liblzma wrote an unexpected .lzma header".into()),
    }
}

/// Decompresses a stream that must fill `input` exactly and decompress to
/// at most `limit` bytes.
pub fn decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut stream =
        Stream::new_lzma_decoder(DECODER_MEMORY).map_err(|e| format!("lzma decoder: {e}"))?;
    let mut whole = Vec::with_capacity(HEADER.len() + input.len());
    whole.extend_from_slice(&HEADER);
    whole.extend_from_slice(input);
    // Start small and grow: the limit is what a hostile stream may claim.
    let mut out = Vec::with_capacity(input.len().saturating_mul(4).max(256).min(limit));
    loop {
        let consumed = usize::try_from(stream.total_in()).unwrap_or(usize::MAX);
        let rest = whole.get(consumed..).unwrap_or_default();
        let status = stream
            .process_vec(rest, &mut out, Action::Run)
            .map_err(|e| format!("lzma stream is corrupt ({e})"))?;
        let consumed = usize::try_from(stream.total_in()).unwrap_or(usize::MAX);
        if out.len() > limit {
            return Err(format!("body decompresses to more than {limit} bytes"));
        }
        match status {
            Status::StreamEnd if consumed == whole.len() => return Ok(out),
            Status::StreamEnd => {
                return Err(format!(
                    "{} bytes after the end of the lzma stream",
                    whole.len() - consumed.min(whole.len())
                ));
            }
            _ if out.len() == out.capacity() => {
                if out.len() == limit {
                    // Full at the limit, and the stream goes on: one byte
                    // more tells a bomb from a body of exactly `limit`.
                    out.reserve_exact(1);
                } else {
                    out.reserve_exact(out.len().max(256).min(limit - out.len()));
                }
            }
            _ if consumed == whole.len() => return Err("lzma stream is truncated".into()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_is_not_exactly_one_stream() {
        let body: Vec<u8> = (0..5000u32).map(|i| (i * i % 7) as u8).collect();
        let z = compress(&body).unwrap();
        assert_eq!(decompress(&z, body.len()).unwrap(), body);
        assert!(
            decompress(&z, body.len() - 1)
                .unwrap_err()
                .contains("more than")
        );
        let mut trailing = z.clone();
        trailing.push(0);
        assert!(decompress(&trailing, 1 << 20).is_err());
        for cut in 0..z.len() {
            assert!(decompress(&z[..cut], 1 << 20).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn an_empty_body_round_trips() {
        let z = compress(&[]).unwrap();
        assert_eq!(decompress(&z, 64).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn python_s_raw_lzma1_stream_decodes() {
        // `lzma.compress(b"fixgate", format=lzma.FORMAT_RAW, filters=[{"id":
        // lzma.FILTER_LZMA1, "dict_size": 65536, "lc": 0, "lp": 0, "pb": 0}])`
        // (CPython 3.11, liblzma 5.4): the spec's description of the stream.
        let python = [
            0x00, 0x33, 0x1b, 0xba, 0xee, 0x60, 0x62, 0xbc, 0x34, 0xcf, 0x67, 0x0c, 0xff, 0xfb,
            0xf0, 0xe0, 0x00,
        ];
        assert_eq!(decompress(&python, 64).unwrap(), b"fixgate");
        assert_eq!(
            decompress(&compress(b"fixgate").unwrap(), 64).unwrap(),
            b"fixgate"
        );
    }
}
