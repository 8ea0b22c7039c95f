//! Every framing rule of the codec, on exact bytes.

use super::*;

fn scan(head: &str) -> Result<Option<Scan>, &'static str> {
    let mut fields = [(0, 0, 0, 0); MAX_HEADERS];
    scan_head(head.as_bytes(), &mut fields)
}

fn plan(method: Method, head: &str) -> Result<BodyPlan, &'static str> {
    let s = scan(head)?.expect("a complete head");
    body_plan(&method, StatusCode::from_u16(s.code).unwrap(), &s)
}

/// Decodes a whole chunked body: its data, or the first error.
fn decode_all(body: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut d = ChunkedDecoder::new();
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        let r = d.decode(&body[pos..])?;
        pos += r.skip;
        out.extend_from_slice(&body[pos..pos + r.data]);
        pos += r.data;
        if r.end {
            return Ok(out);
        }
        if r.skip == 0 && r.data == 0 {
            return Err("incomplete");
        }
    }
}

#[test]
fn content_length_is_digits_only() {
    assert_eq!(parse_content_length(b"5"), Some(5));
    assert_eq!(parse_content_length(b" 42 "), Some(42));
    assert_eq!(parse_content_length(b"007"), Some(7));
    for bad in [
        &b"+5"[..],
        b"-5",
        b"",
        b" ",
        b"5 5",
        b"5,5",
        b"0x5",
        b"5a",
        b"18446744073709551616",
    ] {
        assert_eq!(
            parse_content_length(bad),
            None,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(
        parse_content_length(b"18446744073709551615"),
        Some(u64::MAX)
    );
}

#[test]
fn a_content_length_with_a_plus_sign_is_refused() {
    // Rust's `u64::from_str` accepts "+5": a front proxy that does not would
    // frame this answer differently.
    assert_eq!(
        scan("HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n"),
        Err("bad Content-Length")
    );
}

#[test]
fn differing_content_lengths_are_refused_and_equal_ones_accepted() {
    assert_eq!(
        scan("HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n"),
        Err("conflicting Content-Length values")
    );
    let s = scan("HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(s.length, Some(2));
}

#[test]
fn a_partial_head_asks_for_more() {
    assert_eq!(scan("HTTP/1.1 200 OK\r\ncontent-len"), Ok(None));
}

#[test]
fn content_length_frames_a_reusable_answer() {
    let p = plan(Method::GET, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n").unwrap();
    assert_eq!(p.framing, Framing::Length(5));
    assert!(p.reusable);
}

#[test]
fn chunked_wins_over_content_length_and_the_connection_is_not_reused() {
    let p = plan(
        Method::GET,
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
    )
    .unwrap();
    assert_eq!(p.framing, Framing::Chunked(ChunkedDecoder::new()));
    assert!(!p.reusable, "framed two ways: nothing may follow it");
}

#[test]
fn a_transfer_coding_other_than_final_chunked_reads_to_the_close() {
    for te in ["gzip", "chunked, gzip", "identity"] {
        let p = plan(
            Method::GET,
            &format!("HTTP/1.1 200 OK\r\ntransfer-encoding: {te}\r\n\r\n"),
        )
        .unwrap();
        assert_eq!(p.framing, Framing::UntilClose, "{te}");
        assert!(!p.reusable, "{te}");
    }
    let p = plan(
        Method::GET,
        "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
    )
    .unwrap();
    assert_eq!(p.framing, Framing::Chunked(ChunkedDecoder::new()));
    assert!(p.reusable);
}

#[test]
fn transfer_encoding_in_an_http_1_0_answer_is_refused() {
    assert!(
        plan(
            Method::GET,
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        .is_err()
    );
}

#[test]
fn bodiless_answers_have_no_body_whatever_their_framing_fields_say() {
    let head = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
    assert_eq!(
        plan(Method::HEAD, head).unwrap().framing,
        Framing::Length(0)
    );
    for status in ["204 No Content", "304 Not Modified"] {
        let p = plan(
            Method::GET,
            &format!("HTTP/1.1 {status}\r\ntransfer-encoding: chunked\r\n\r\n"),
        )
        .unwrap();
        assert_eq!(p.framing, Framing::Length(0), "{status}");
    }
}

#[test]
fn an_answer_without_framing_reads_to_the_close_and_is_not_reused() {
    let p = plan(Method::GET, "HTTP/1.1 200 OK\r\n\r\n").unwrap();
    assert_eq!(p.framing, Framing::UntilClose);
    assert!(!p.reusable);
}

#[test]
fn connection_close_and_http_1_0_are_not_reused() {
    let close = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n";
    assert!(!plan(Method::GET, close).unwrap().reusable);
    let old = "HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n";
    assert!(!plan(Method::GET, old).unwrap().reusable);
    let old_kept = "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n";
    assert!(plan(Method::GET, old_kept).unwrap().reusable);
}

#[test]
fn chunked_bodies_decode_with_extensions_and_trailers() {
    let body =
        b"5;ext=1\r\nhello\r\n1 ; a=\"b\"\r\n \r\nA\r\nchunked!!!\r\n0\r\nx-trailer: t\r\n\r\n";
    assert_eq!(decode_all(body).unwrap(), b"hello chunked!!!");
    assert_eq!(decode_all(b"0\r\n\r\n").unwrap(), b"");
    assert_eq!(
        decode_all(b"00000000000000000003\r\nabc\r\n0\r\n\r\n").unwrap(),
        b"abc"
    );
}

#[test]
fn a_chunk_size_with_a_sign_or_other_text_is_refused() {
    // `u64::from_str_radix` accepts "+5"; the grammar is 1*HEXDIG.
    for bad in [
        &b"+5\r\nhello\r\n0\r\n\r\n"[..],
        b"-5\r\nhello\r\n0\r\n\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"5x\r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"\r\nhello\r\n0\r\n\r\n",
        b";ext\r\nhello\r\n0\r\n\r\n",
        b"5 5\r\nhello\r\n0\r\n\r\n",
    ] {
        assert!(
            decode_all(bad).is_err(),
            "{:?} accepted",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn a_chunk_size_over_64_bits_is_refused() {
    assert_eq!(
        decode_all(b"10000000000000000\r\n"),
        Err("chunk size overflows 64 bits")
    );
    // The largest size parses; only the data is missing.
    assert_eq!(decode_all(b"ffffffffffffffff\r\nab"), Err("incomplete"));
}

#[test]
fn a_chunk_extension_with_a_bare_lf_is_refused() {
    assert!(decode_all(b"5;a\nb\r\nhello\r\n0\r\n\r\n").is_err());
    assert!(decode_all(b"5;a\rb\r\nhello\r\n0\r\n\r\n").is_err());
}

#[test]
fn chunk_data_must_end_in_crlf() {
    assert!(decode_all(b"5\r\nhelloXX0\r\n\r\n").is_err());
    assert!(decode_all(b"5\r\nhello\n0\r\n\r\n").is_err());
}

#[test]
fn a_chunk_size_line_is_bounded_before_its_end_arrives() {
    let mut line = b"5;".to_vec();
    line.resize(MAX_CHUNK_LINE + 2, b'x');
    let mut d = ChunkedDecoder::new();
    assert_eq!(d.decode(&line), Err("chunk-size line too long"));
    // Just under the limit, it waits for its end.
    let mut d = ChunkedDecoder::new();
    assert_eq!(
        d.decode(&line[..MAX_CHUNK_LINE + 1]),
        Ok(Decoded {
            skip: 0,
            data: 0,
            end: false
        })
    );
}

#[test]
fn chunk_extensions_are_bounded_per_body() {
    // Each line is short; together they pass the limit.
    let ext = "x".repeat(1000);
    let mut body = String::new();
    for _ in 0..(MAX_CHUNK_EXTENSIONS / 1000 + 1) {
        body.push_str(&format!("1;{ext}\r\na\r\n"));
    }
    body.push_str("0\r\n\r\n");
    assert_eq!(
        decode_all(body.as_bytes()),
        Err("chunk extensions too long")
    );
}

#[test]
fn trailer_fields_are_bounded_in_count() {
    let mut body = "0\r\n".to_string();
    for i in 0..MAX_TRAILER_FIELDS {
        body.push_str(&format!("t{i}: v\r\n"));
    }
    let at_limit = format!("{body}\r\n");
    assert!(decode_all(at_limit.as_bytes()).is_ok());
    body.push_str("one-more: v\r\n\r\n");
    assert_eq!(decode_all(body.as_bytes()), Err("too many trailer fields"));
}

#[test]
fn trailer_lines_and_section_are_bounded() {
    let long = format!("0\r\nt: {}\r\n\r\n", "v".repeat(MAX_CHUNK_LINE));
    assert_eq!(decode_all(long.as_bytes()), Err("trailer line too long"));
    let mut many = "0\r\n".to_string();
    let value = "v".repeat(1000);
    for i in 0..(MAX_TRAILER_BYTES / 1000 + 1) {
        many.push_str(&format!("t{i}: {value}\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(decode_all(many.as_bytes()), Err("trailer section too long"));
}

#[test]
fn malformed_trailer_lines_are_refused() {
    for bad in [
        &b"0\r\nno colon\r\n\r\n"[..],
        b"0\r\n: no name\r\n\r\n",
        b"0\r\n folded: v\r\n\r\n",
        b"0\r\nt: a\nb\r\n\r\n",
    ] {
        assert!(
            decode_all(bad).is_err(),
            "{:?} accepted",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn a_body_split_anywhere_decodes_the_same() {
    let body = b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nt: v\r\n\r\n";
    for cut in 0..body.len() {
        // Feed the first `cut` bytes, then all of it, keeping only what the
        // decoder did not consume: as the connection's buffer does.
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut pos = 0;
        let mut avail = cut;
        loop {
            let r = d.decode(&body[pos..avail]).unwrap();
            pos += r.skip;
            out.extend_from_slice(&body[pos..pos + r.data]);
            pos += r.data;
            if r.end {
                break;
            }
            if r.skip == 0 && r.data == 0 {
                assert!(avail < body.len(), "stalled on the whole body");
                avail = body.len();
            }
        }
        assert_eq!(out, b"abcde", "cut at {cut}");
        assert_eq!(pos, body.len(), "cut at {cut}");
    }
}
