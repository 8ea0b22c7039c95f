//! Drives the upstream codec over arbitrary bytes and checks its promises:
//! shared by the proptests (`tests/upstream_codec.rs`) and the fuzz target
//! (`fuzz/fuzz_targets/upstream_codec.rs`), which include this file.
#![allow(dead_code, unreachable_pub)]

use http::{Method, StatusCode};
use rempart_gateway::client::codec::{ChunkedDecoder, MAX_HEADERS, body_plan, scan_head};

/// Feeds `input` to a chunked decoder in pieces ending at `cuts` (taken
/// modulo the input's length), keeping unconsumed bytes as the connection's
/// buffer does: the body, or the first error, or `None` if the input ended
/// first. Panics if the decoder reports bytes it was not given.
pub fn decode_in_pieces(input: &[u8], cuts: &[usize]) -> Option<Result<Vec<u8>, &'static str>> {
    let mut decoder = ChunkedDecoder::new();
    let mut out = Vec::new();
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    ends.push(input.len());
    ends.sort_unstable();
    let mut pos = 0;
    for end in ends {
        loop {
            let buf = &input[pos..end];
            let d = match decoder.decode(buf) {
                Ok(d) => d,
                Err(why) => return Some(Err(why)),
            };
            assert!(d.skip + d.data <= buf.len(), "decoded past its input");
            assert!(!(d.end && d.data > 0), "data reported with the end");
            out.extend_from_slice(&buf[d.skip..d.skip + d.data]);
            pos += d.skip + d.data;
            assert!(out.len() <= pos, "more body than bytes read");
            if d.end {
                assert!(decoder.is_done());
                return Some(Ok(out));
            }
            if d.skip == 0 && d.data == 0 {
                break;
            }
        }
    }
    None
}

/// Scans `input` as a response head and, if it is one, checks that what the
/// scan says stays within it, and plans its body for a few methods with
/// `status`. Panics if a promise is broken.
pub fn check_head(input: &[u8], status: u16) {
    let mut fields = [(0, 0, 0, 0); MAX_HEADERS];
    let Ok(Some(scan)) = scan_head(input, &mut fields) else {
        return;
    };
    assert!(scan.len <= input.len());
    assert!(scan.count <= MAX_HEADERS);
    for &(ns, ne, vs, ve) in &fields[..scan.count] {
        assert!(ns <= ne && ne <= vs && vs <= ve && ve as usize <= scan.len);
    }
    let Ok(status) = StatusCode::from_u16(status) else {
        return;
    };
    for method in [Method::GET, Method::HEAD, Method::POST] {
        if let Ok(plan) = body_plan(&method, status, &scan) {
            // Framed two ways: never reused.
            assert!(!(scan.transfer_encoding && scan.length.is_some() && plan.reusable));
        }
    }
}
