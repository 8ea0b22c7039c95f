//! The request path as the gateway routes and forwards it: normalised once,
//! before routing, so a route's prefix means what it says.
//!
//! Without this, `/public/../internal/admin` (or `/public/%2e%2e/internal`,
//! or `/public/..%2finternal`) matches the `/public` route, and the upstream,
//! which does resolve the dots, serves `/internal/admin`.
//!
//! [`normalise`] follows RFC 3986: percent-encoded unreserved characters are
//! decoded (§6.2.2.2; `%2e` is a dot), other escapes get upper-case hex
//! (§6.2.2.1), then dot segments are removed (§5.2.4). What it refuses, and why:
//! - `..` above the root: RFC 3986 would silently drop it, but a request
//!   that tries to climb out of the tree is an attack or a bug, not a path;
//! - an encoded `/` (`%2f`), `\` (`%5c`) or NUL (`%00`), and a raw `\`:
//!   upstreams disagree on whether `%2f` separates segments and whether `\`
//!   is a `/` (Windows servers, some frameworks). Decoding them would change
//!   the meaning for those that keep them, keeping them would let
//!   `..%2f` climb out on those that decode: no single reading is safe for
//!   every upstream, so the gateway refuses them;
//! - broken escapes (`%`, `%4`, `%zz`) and a path not starting with `/`.

use std::borrow::Cow;
use std::fmt;

/// Why a path cannot be normalised; the gateway answers 400 with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/` (e.g. `*`).
    NotAbsolute,
    /// A `%` not followed by two hex digits, at this byte offset.
    BadEscape(usize),
    /// `%2f`, `%5c`, `%00` or a raw `\`, at this byte offset.
    Forbidden(usize),
    /// A `..` segment that would climb above the root.
    AboveRoot,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::NotAbsolute => write!(f, "the request path must start with `/`"),
            PathError::BadEscape(at) => write!(
                f,
                "invalid percent-encoding at byte {at} of the path: `%` must be followed by two hex digits"
            ),
            PathError::Forbidden(at) => write!(
                f,
                "the path holds an encoded slash or backslash (`%2F`, `%5C`), a backslash or an encoded NUL at byte {at}; \
                 upstreams read these differently, so the gateway refuses them"
            ),
            PathError::AboveRoot => write!(f, "the path climbs above the root with `..`"),
        }
    }
}

impl std::error::Error for PathError {}

/// The normalised form of `path` (no query), borrowed when already normal.
///
/// ```
/// use rempart_gateway::path::{normalise, PathError};
///
/// assert_eq!(normalise("/public/../internal/admin").unwrap(), "/internal/admin");
/// assert_eq!(normalise("/public/%2e%2E/x").unwrap(), "/x");
/// assert_eq!(normalise("/a/./b/%7Euser").unwrap(), "/a/b/~user");
/// assert!(matches!(normalise("/public/..%2finternal"), Err(PathError::Forbidden(_))));
/// assert_eq!(normalise("/../etc/passwd"), Err(PathError::AboveRoot));
/// ```
pub fn normalise(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // The common case: no escape, no backslash, no dot segment.
    if !bytes.iter().any(|&b| b == b'%' || b == b'\\') && !has_dot_segment(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(bytes)?;
    remove_dot_segments(&decoded).map(Cow::Owned)
}

/// Replaces `uri`'s path with its [`normalise`]d form, keeping the rest
/// (the query as sent); untouched when already normal.
pub fn normalise_uri(uri: &mut http::Uri) -> Result<(), PathError> {
    let path = match normalise(uri.path())? {
        Cow::Borrowed(_) => return Ok(()),
        Cow::Owned(p) => p,
    };
    let target = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    // Only unreserved characters were decoded: still a valid target.
    parts.path_and_query = Some(target.parse().map_err(|_| PathError::NotAbsolute)?);
    *uri = http::Uri::from_parts(parts).map_err(|_| PathError::NotAbsolute)?;
    Ok(())
}

/// Whether some segment of `path` is `.` or `..`.
fn has_dot_segment(path: &str) -> bool {
    // Every dot segment starts with `/.`: most paths are ruled out by one scan.
    path.contains("/.") && path.split('/').any(|s| s == "." || s == "..")
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes escapes of unreserved characters; keeps the others, upper-cased.
fn decode_unreserved(bytes: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape(i));
                };
                let c = hi << 4 | lo;
                if matches!(c, b'/' | b'\\' | 0) {
                    return Err(PathError::Forbidden(i));
                }
                if is_unreserved(c) {
                    out.push(char::from(c));
                } else {
                    const HEX: &[u8; 16] = b"0123456789ABCDEF";
                    out.push('%');
                    out.push(char::from(HEX[usize::from(hi)]));
                    out.push(char::from(HEX[usize::from(lo)]));
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Forbidden(i)),
            _ => {
                // Copy the run up to the next escape or backslash whole: it
                // may hold multi-byte characters, which `&str` slices keep.
                let end = bytes[i..]
                    .iter()
                    .position(|&b| b == b'%' || b == b'\\')
                    .map_or(bytes.len(), |n| i + n);
                out.push_str(&String::from_utf8_lossy(&bytes[i..end]));
                i = end;
            }
        }
    }
    Ok(out)
}

/// RFC 3986 §5.2.4 on an absolute path, refusing a climb above the root.
fn remove_dot_segments(path: &str) -> Result<String, PathError> {
    let mut kept: Vec<&str> = Vec::new();
    // After the leading `/`, each piece is one segment; the last one decides
    // whether the output ends in `/` (`/a/.` and `/a/b/..` both give `/a/`).
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut trailing_slash = false;
    for (i, seg) in segments.into_iter().enumerate() {
        match seg {
            "." => trailing_slash = i == last,
            ".." => {
                if kept.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = i == last;
            }
            s => {
                kept.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &kept {
        out.push('/');
        out.push_str(seg);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(p: &str) -> String {
        normalise(p).unwrap().into_owned()
    }

    #[test]
    fn dot_segments_are_removed_as_rfc_3986_says() {
        assert_eq!(ok("/a/b/c/./../../g"), "/a/g");
        assert_eq!(ok("/mid/content=5/../6"), "/mid/6");
        assert_eq!(ok("/a/."), "/a/");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("/."), "/");
        assert_eq!(ok("/a//b/../c"), "/a//c");
        assert_eq!(ok("/a/..b/c."), "/a/..b/c.");
    }

    #[test]
    fn paths_that_escape_their_route_are_resolved_before_routing() {
        assert_eq!(ok("/public/../internal/admin"), "/internal/admin");
        assert_eq!(ok("/public/%2e%2e/internal/admin"), "/internal/admin");
        assert_eq!(ok("/public/.%2E/internal/admin"), "/internal/admin");
        assert_eq!(ok("/public/%2E/x"), "/public/x");
    }

    #[test]
    fn encoded_slashes_backslashes_and_nul_are_refused() {
        for p in [
            "/public/..%2finternal",
            "/public/..%2Finternal",
            "/public/..%5cinternal",
            "/public\\..\\internal",
            "/a%00b",
        ] {
            assert!(matches!(normalise(p), Err(PathError::Forbidden(_))), "{p}");
        }
    }

    #[test]
    fn what_cannot_be_normalised_is_refused() {
        assert_eq!(normalise("/.."), Err(PathError::AboveRoot));
        assert_eq!(normalise("/a/../../b"), Err(PathError::AboveRoot));
        assert_eq!(normalise("/%2e%2e/x"), Err(PathError::AboveRoot));
        assert_eq!(normalise("/a%"), Err(PathError::BadEscape(2)));
        assert_eq!(normalise("/a%4"), Err(PathError::BadEscape(2)));
        assert_eq!(normalise("/a%zz"), Err(PathError::BadEscape(2)));
        assert_eq!(normalise("*"), Err(PathError::NotAbsolute));
        assert_eq!(normalise(""), Err(PathError::NotAbsolute));
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_kept_in_upper_case() {
        assert_eq!(ok("/%7euser/%41b"), "/~user/Ab");
        assert_eq!(ok("/a%20b/%e2%82%ac"), "/a%20b/%E2%82%AC");
        assert_eq!(ok("/%252e%252e/x"), "/%252e%252e/x");
    }

    #[test]
    fn the_query_is_kept_and_absolute_targets_keep_their_authority() {
        let mut uri: http::Uri = "/a/../b?x=/../y".parse().unwrap();
        normalise_uri(&mut uri).unwrap();
        assert_eq!(uri, "/b?x=/../y");
        let mut uri: http::Uri = "http://h:1/a/./b".parse().unwrap();
        normalise_uri(&mut uri).unwrap();
        assert_eq!(uri, "http://h:1/a/b");
    }

    #[test]
    fn a_normal_path_is_borrowed() {
        assert!(matches!(normalise("/api/v1/users"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalise("/a/..b"), Ok(Cow::Borrowed(_))));
    }

    fn path_strategy() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just("%2e".to_owned()),
            Just("%2E%2e".to_owned()),
            Just(".%2e".to_owned()),
            Just(String::new()),
            "[a-z.%0-9A-F~-]{0,6}",
        ];
        proptest::collection::vec(segment, 0..8).prop_map(|s| format!("/{}", s.join("/")))
    }

    proptest! {
        #[test]
        fn a_normalised_path_has_no_dot_segment_and_normalises_to_itself(p in path_strategy()) {
            if let Ok(n) = normalise(&p) {
                prop_assert!(n.starts_with('/'));
                for seg in n.split('/') {
                    prop_assert!(seg != ".." && seg != ".", "{} gave {}", p, n);
                }
                let again = normalise(&n).expect("a normalised path is accepted");
                prop_assert_eq!(again.as_ref(), n.as_ref());
            }
        }

        #[test]
        fn normalising_never_panics(p in "\\PC{0,40}") {
            let _ = normalise(&p);
        }
    }
}
