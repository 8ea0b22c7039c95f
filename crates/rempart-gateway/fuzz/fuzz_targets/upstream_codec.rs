//! Arbitrary bytes as an upstream's answer: the head scanner and the chunked
//! decoder must never panic, never report more bytes than they were given,
//! and mean the same whatever the reads that cut the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The checks the proptests run too, in `cargo test`.
#[path = "../../tests/codec_support/mod.rs"]
mod codec_support;

use codec_support::{check_head, decode_in_pieces};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    check_head(input, 100 + u16::from(selector) * 2);
    // The same bytes whole, and cut once where the first byte says.
    let at = usize::from(selector) * input.len() / 255;
    assert_eq!(
        decode_in_pieces(input, &[at]),
        decode_in_pieces(input, &[]),
        "a cut at {at} changed the meaning"
    );
});
