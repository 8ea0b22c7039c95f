//! Arbitrary bytes through the header parsers a peer controls: the deadline
//! headers (`x-request-timeout-ms`, `grpc-timeout`) and `Retry-After`. None
//! may panic, and what they accept must look like what they document.

#![no_main]

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use rempart::deadline::{self, Deadline, parse_grpc_timeout, parse_timeout_ms};
use rempart::retry::parse_retry_after;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let trimmed = text.trim();
        if parse_grpc_timeout(text).is_some() {
            // 1 to 8 digits and a one-byte unit.
            assert!(
                trimmed.is_ascii() && (2..=9).contains(&trimmed.len()),
                "{text:?}"
            );
        }
        if parse_timeout_ms(text).is_some() {
            assert!(trimmed.bytes().all(|b| b.is_ascii_digit()), "{text:?}");
        }
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_470);
        let _ = parse_retry_after(text, now);
    }
    // As a peer sends them: raw bytes in a header value (not always UTF-8).
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert(deadline::HEADER, value.clone());
        headers.insert(deadline::GRPC_HEADER, value);
        if let Some(d) = Deadline::from_headers(&headers) {
            let _ = d.remaining();
        }
    }
});
