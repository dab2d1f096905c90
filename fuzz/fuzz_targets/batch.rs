//! Arbitrary bytes as upstream batches: `wire::decode` and `read_delimited`
//! must never panic, and whatever `decode` accepts must be a valid batch that
//! survives encode → decode unchanged.
//!
//! The first byte picks the path: the bytes as a whole batch; the bytes as a
//! version-1 body behind a valid header and zlib wrapper (random bytes almost never
//! pass the Adler-32 checksum, so without this the column checks would go
//! unexercised); or the bytes as a length-delimited stream.
#![no_main]

use fixgate::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&path, rest)) = data.split_first() else {
        return;
    };
    match path % 3 {
        0 => check(rest),
        1 => check(&sealed(rest)),
        _ => {
            let mut input = rest;
            while let Ok(Some(batch)) = wire::read_delimited(&mut input) {
                check(&batch);
            }
        }
    }
});

fn check(bytes: &[u8]) {
    if let Ok(batch) = wire::decode(bytes) {
        assert!(batch.check().is_ok(), "{batch:?}");
        let again = wire::decode(&wire::encode(&batch)).expect("a decoded batch re-encodes");
        assert_eq!(again, batch);
    }
}

/// `data` after three bytes of header parameters, as the body of a batch of
/// gateway `g` with a valid header and zlib stream.
fn sealed(data: &[u8]) -> Vec<u8> {
    let [records, lead, span, body @ ..] = data else {
        return Vec::new();
    };
    let first_seq = u64::from(*lead);
    let mut out = vec![wire::VERSION_1, 1, b'g', 0, 0];
    varint(first_seq, &mut out);
    varint(first_seq + u64::from(*span), &mut out);
    varint(u64::from(*records % 32), &mut out);
    out.extend_from_slice(&miniz_oxide::deflate::compress_to_vec_zlib(body, 1));
    out
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}
