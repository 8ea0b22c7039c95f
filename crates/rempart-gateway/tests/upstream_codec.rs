//! The upstream codec over arbitrary bytes (it must never panic, and never
//! make up body bytes) and over arbitrary valid chunked bodies, cut at
//! arbitrary points as reads cut them (they must decode exactly). The fuzz
//! target in `fuzz/` explores the same properties for longer.

mod codec_support;

use codec_support::{check_head, decode_in_pieces};
use http::{Method, StatusCode};
use proptest::prelude::*;
use rempart_gateway::client::codec::{MAX_HEADERS, body_plan, parse_content_length, scan_head};

/// A valid chunked body: chunks with optional extensions, in either hex
/// case and with leading zeros, then optional trailers.
fn chunked_body() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let chunk = (
        proptest::collection::vec(any::<u8>(), 1..300),
        any::<bool>(),
        0usize..3,
        proptest::option::of("[a-z]{1,8}(=[a-z0-9]{0,8})?"),
    );
    let trailer = "[A-Za-z][A-Za-z0-9-]{0,10}: [ -~]{0,20}";
    (
        proptest::collection::vec(chunk, 0..8),
        proptest::collection::vec(trailer, 0..4),
    )
        .prop_map(|(chunks, trailers)| {
            let mut wire = Vec::new();
            let mut data = Vec::new();
            for (bytes, upper, zeros, ext) in chunks {
                let size = if upper {
                    format!("{:X}", bytes.len())
                } else {
                    format!("{:x}", bytes.len())
                };
                wire.extend_from_slice("0".repeat(zeros).as_bytes());
                wire.extend_from_slice(size.as_bytes());
                if let Some(ext) = ext {
                    wire.extend_from_slice(format!(";{ext}").as_bytes());
                }
                wire.extend_from_slice(b"\r\n");
                wire.extend_from_slice(&bytes);
                wire.extend_from_slice(b"\r\n");
                data.extend_from_slice(&bytes);
            }
            wire.extend_from_slice(b"0\r\n");
            for t in trailers {
                wire.extend_from_slice(t.trim_end().as_bytes());
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"\r\n");
            (wire, data)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn valid_chunked_bodies_cut_anywhere_decode_exactly(
        (wire, data) in chunked_body(),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let decoded = decode_in_pieces(&wire, &cuts);
        prop_assert_eq!(decoded, Some(Ok(data)));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_chunked_decoder(
        input in proptest::collection::vec(any::<u8>(), 0..512),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let whole = decode_in_pieces(&input, &[]);
        // How the input is cut never changes what it means.
        prop_assert_eq!(decode_in_pieces(&input, &cuts), whole);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_size_line_never_panic(
        size in "[0-9a-fA-F+ -]{0,20}",
        rest in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut input = size.into_bytes();
        input.extend_from_slice(b"\r\n");
        input.extend_from_slice(&rest);
        let _ = decode_in_pieces(&input, &[]);
    }

    #[test]
    fn arbitrary_heads_never_panic_and_stay_in_bounds(
        input in proptest::collection::vec(any::<u8>(), 0..512),
        status in 100u16..600,
    ) {
        check_head(&input, status);
    }

    #[test]
    fn generated_heads_frame_as_their_fields_say(
        length in proptest::option::of(any::<u64>()),
        chunked in any::<bool>(),
        close in any::<bool>(),
    ) {
        let mut head = "HTTP/1.1 200 OK\r\n".to_string();
        if let Some(n) = length {
            head.push_str(&format!("content-length: {n}\r\n"));
        }
        if chunked {
            head.push_str("transfer-encoding: chunked\r\n");
        }
        if close {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut fields = [(0, 0, 0, 0); MAX_HEADERS];
        let scan = scan_head(head.as_bytes(), &mut fields).unwrap().unwrap();
        prop_assert_eq!(scan.len, head.len());
        let plan = body_plan(&Method::GET, StatusCode::OK, &scan).unwrap();
        let reusable = !close && (chunked != length.is_some());
        prop_assert_eq!(plan.reusable, reusable);
    }

    #[test]
    fn content_length_is_the_decimal_digits_or_nothing(value in "[+ 0-9a-f-]{0,24}") {
        let parsed = parse_content_length(value.as_bytes());
        let digits = value.trim();
        let valid = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        prop_assert_eq!(parsed, if valid { digits.parse::<u64>().ok() } else { None });
    }
}
