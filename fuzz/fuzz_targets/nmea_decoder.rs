//! Arbitrary bytes in arbitrary chunk splits: the decoder must never panic,
//! must give the same fixes however the bytes are split, and every fix it
//! emits must pass `Fix::validate`.
#![no_main]

use fixgate::sources::nmea::{Decoder, DecoderOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte seeds the chunk sizes; the rest is the stream.
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let options = DecoderOptions {
        // Vary the line limit too, down to tiny buffers.
        max_line: 8 + usize::from(seed) * 2,
        ..DecoderOptions::default()
    };
    let mut whole = Vec::new();
    let mut d = Decoder::new(options.clone());
    d.push(stream, &mut whole);
    d.finish(&mut whole);

    let mut split = Vec::new();
    let mut d2 = Decoder::new(options);
    let mut rest = stream;
    let mut step = usize::from(seed % 17) + 1;
    while !rest.is_empty() {
        let (a, b) = rest.split_at(step.min(rest.len()));
        d2.push(a, &mut split);
        rest = b;
        step = step * 5 % 23 + 1;
    }
    d2.finish(&mut split);

    assert_eq!(whole, split, "chunking changed the result");
    assert_eq!(d.stats(), d2.stats());
    for fix in whole.iter() {
        assert!(fix.validate().is_ok(), "invalid fix {fix:?}");
    }
});
