//! What an upstream's bytes mean, decided by pure functions (no I/O, no
//! clock, no allocation): where a response head ends and what it says
//! ([`scan_head`]), how its body is framed and whether its connection may
//! carry another request ([`body_plan`], RFC 9112 section 6.3), and the
//! chunked decoder ([`ChunkedDecoder`], RFC 9112 section 7.1).
//!
//! Parsing is strict where leniency lets two parties disagree on where a
//! message ends (request smuggling, response splitting): lengths are digits
//! only, with no sign, and a message framed two ways is never followed by
//! another on its connection. Every size an upstream controls is bounded.
//!
//! Public so that the fuzz target and the tests can drive it; the gateway's
//! users have no reason to.

use http::{Method, StatusCode, Version};

/// Largest response head accepted from an upstream.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most response header fields accepted from an upstream.
pub const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (with its extensions) or trailer line: real
/// upstreams send a few hex digits, and the line must sit whole in the read
/// buffer before it is parsed.
pub const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Most bytes of chunk extensions in one body: the gateway ignores them, so
/// an upstream sending tiny chunks with long extensions would make it parse
/// megabytes to relay bytes. hyper's client stops at the same figure.
pub const MAX_CHUNK_EXTENSIONS: usize = 16 * 1024;
/// Most trailer fields after the last chunk: the same as header fields.
pub const MAX_TRAILER_FIELDS: usize = MAX_HEADERS;
/// Most bytes of trailer section: trailers are dropped, so there is no reason
/// to read more than a small head's worth (hyper's client's limit too).
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// A field's name and value, as byte ranges of the head.
pub type FieldSpan = (u32, u32, u32, u32);

/// A complete response head, located at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Length of the head, blank line included.
    pub len: usize,
    /// The status code, as sent (three digits).
    pub code: u16,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// How many fields the head has.
    pub count: usize,
    /// The `Content-Length`, if any (all of its fields agree).
    pub length: Option<u64>,
    /// Whether a `Transfer-Encoding` field is present.
    pub transfer_encoding: bool,
    /// Whether the last transfer coding is `chunked`.
    pub chunked: bool,
    /// Whether the connection ends after this answer (`Connection: close`,
    /// or HTTP/1.0 without `keep-alive`).
    pub close: bool,
    /// `Connection` names fields beyond the usual tokens: they must go too.
    pub connection_lists_fields: bool,
}

/// Finds a complete head at the start of `buf` (`None`: not all here yet),
/// where its fields are (into `fields`) and what frames its body.
pub fn scan_head(
    buf: &[u8],
    fields: &mut [FieldSpan; MAX_HEADERS],
) -> Result<Option<Scan>, &'static str> {
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err("more than 100 header fields"),
        Err(_) => return Err("malformed response head"),
    };
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut scan = Scan {
        len,
        code: parsed.code.ok_or("no status code")?,
        version,
        count: parsed.headers.len(),
        length: None,
        transfer_encoding: false,
        chunked: false,
        close: version == Version::HTTP_10,
        connection_lists_fields: false,
    };
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        (start as u32, (start + s.len()) as u32)
    };
    for (i, h) in parsed.headers.iter().enumerate() {
        let (ns, ne) = span(h.name.as_bytes());
        let (vs, ve) = span(h.value);
        fields[i] = (ns, ne, vs, ve);
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_content_length(h.value).ok_or("bad Content-Length")?;
            if scan.length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length values");
            }
            scan.length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            scan.transfer_encoding = true;
            // Only the last coding frames the message.
            scan.chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    scan.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    if version == Version::HTTP_10 {
                        scan.close = false;
                    }
                } else if !token.is_empty() {
                    scan.connection_lists_fields = true;
                }
            }
        }
    }
    Ok(Some(scan))
}

/// `Content-Length = 1*DIGIT` (RFC 9110 8.6), around optional whitespace:
/// no sign (Rust's `u64::from_str` takes a `+`, which another parser on the
/// path may read differently), no list, no overflow.
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// How a body's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked, decoded by this.
    Chunked(ChunkedDecoder),
    /// Everything until the upstream closes the connection.
    UntilClose,
    /// Read to the end.
    Done,
}

impl Framing {
    /// Whether nothing of the body is left to read.
    pub fn is_done(&self) -> bool {
        matches!(self, Framing::Length(0) | Framing::Done)
    }
}

/// How a final answer's body is read, and whether its connection may carry
/// another request once it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPlan {
    /// How the body's end is known.
    pub framing: Framing,
    /// Whether the connection may go back to the pool after the body.
    pub reusable: bool,
}

/// RFC 9112 6.3: how the body of a final (non-1xx) answer with `status`,
/// to a `method` request, is framed, given what its head said.
pub fn body_plan(
    method: &Method,
    status: StatusCode,
    scan: &Scan,
) -> Result<BodyPlan, &'static str> {
    let framing = if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Length(0)
    } else if scan.transfer_encoding {
        // RFC 9112 6.1: HTTP/1.0 has no transfer codings, so such framing
        // cannot be trusted (hyper's client refuses it too).
        if scan.version == Version::HTTP_10 {
            return Err("Transfer-Encoding in an HTTP/1.0 answer");
        }
        // Chunked wins over any Content-Length (point 3); any other last
        // coding means the body runs to the close (point 4, for responses).
        if scan.chunked {
            Framing::Chunked(ChunkedDecoder::new())
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = scan.length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    // Framed both ways: whoever read the Content-Length sees another message
    // where we see this one's end, so nothing follows it on this connection.
    let framed_twice = scan.transfer_encoding && scan.length.is_some();
    let reusable = !scan.close && !framed_twice && !matches!(framing, Framing::UntilClose);
    Ok(BodyPlan { framing, reusable })
}

/// What [`ChunkedDecoder::decode`] found at the front of the buffer, in
/// order: `skip` bytes of framing to drop, then `data` bytes of body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Framing bytes (sizes, CRLFs, extensions, trailers) to drop first.
    pub skip: usize,
    /// Body bytes that follow them; 0 when more input is needed or at the end.
    pub data: usize,
    /// The body ended (after the `skip` bytes).
    pub end: bool,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// In a chunk's data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    /// After the trailer section.
    Done,
}

/// A chunked body's decoder (RFC 9112 7.1): fed the buffered bytes, it says
/// which are framing and which are data, and keeps what it must remember
/// across reads. It never copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: Chunk,
    /// Bytes of chunk extensions seen so far in this body.
    extensions: usize,
    /// Trailer fields seen so far.
    trailer_fields: usize,
    /// Bytes of trailer section seen so far.
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub const fn new() -> ChunkedDecoder {
        ChunkedDecoder {
            state: Chunk::Size,
            extensions: 0,
            trailer_fields: 0,
            trailer_bytes: 0,
        }
    }

    /// Whether the whole body, trailers included, has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Decodes what it can of `buf`, the unconsumed bytes of the body: the
    /// caller drops `skip` bytes, then takes `data` bytes as body, and
    /// calls again with what follows (with more bytes read if both are 0
    /// and the body has not ended).
    pub fn decode(&mut self, buf: &[u8]) -> Result<Decoded, &'static str> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.state {
                Chunk::Size => {
                    let Some(line) = line(rest, MAX_CHUNK_LINE, "chunk-size line too long")? else {
                        return Ok(Decoded::more(pos));
                    };
                    let (size, extensions) = parse_size_line(line)?;
                    self.extensions += extensions;
                    if self.extensions > MAX_CHUNK_EXTENSIONS {
                        return Err("chunk extensions too long");
                    }
                    pos += line.len() + 2;
                    self.state = if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(left) => {
                    if rest.is_empty() {
                        return Ok(Decoded::more(pos));
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    };
                    return Ok(Decoded {
                        skip: pos,
                        data: n,
                        end: false,
                    });
                }
                Chunk::DataEnd => {
                    if rest.len() < 2 && b"\r\n".starts_with(rest) {
                        return Ok(Decoded::more(pos));
                    }
                    if !rest.starts_with(b"\r\n") {
                        return Err("chunk data not followed by CRLF");
                    }
                    pos += 2;
                    self.state = Chunk::Size;
                }
                Chunk::Trailers => {
                    let Some(line) = line(rest, MAX_CHUNK_LINE, "trailer line too long")? else {
                        return Ok(Decoded::more(pos));
                    };
                    pos += line.len() + 2;
                    if line.is_empty() {
                        self.state = Chunk::Done;
                        continue;
                    }
                    check_trailer_line(line)?;
                    self.trailer_fields += 1;
                    self.trailer_bytes += line.len() + 2;
                    if self.trailer_fields > MAX_TRAILER_FIELDS {
                        return Err("too many trailer fields");
                    }
                    if self.trailer_bytes > MAX_TRAILER_BYTES {
                        return Err("trailer section too long");
                    }
                }
                Chunk::Done => {
                    return Ok(Decoded {
                        skip: pos,
                        data: 0,
                        end: true,
                    });
                }
            }
        }
    }
}

impl Decoded {
    /// Drop `skip` bytes, then more input is needed.
    fn more(skip: usize) -> Decoded {
        Decoded {
            skip,
            data: 0,
            end: false,
        }
    }
}

/// The line at the start of `buf`, without its CRLF; `None` if its end is
/// not here yet. A line longer than `max` is refused as soon as that many
/// bytes have come without a CRLF, so the search never runs past `max`.
fn line<'a>(
    buf: &'a [u8],
    max: usize,
    too_long: &'static str,
) -> Result<Option<&'a [u8]>, &'static str> {
    let window = &buf[..buf.len().min(max + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(end) => Ok(Some(&buf[..end])),
        None if window.len() > max + 1 => Err(too_long),
        None => Ok(None),
    }
}

/// `chunk-size [ chunk-ext ]` (RFC 9112 7.1): the size, then how many bytes
/// of extensions followed it. `chunk-size = 1*HEXDIG`: no sign, no leading
/// space, no overflow; the extensions are skipped, but may hold no CR or LF
/// (a parser that ends lines at a bare LF would see the line end there).
fn parse_size_line(line: &[u8]) -> Result<(u64, usize), &'static str> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err("chunk size is not hexadecimal");
    }
    let mut size = 0u64;
    for &b in &line[..digits] {
        // `is_ascii_hexdigit` above: `to_digit` cannot fail here.
        let d = u64::from((b as char).to_digit(16).unwrap_or(0));
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(d))
            .ok_or("chunk size overflows 64 bits")?;
    }
    // Whitespace may come before the extensions (BWS), not other text.
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    match rest.first() {
        None => Ok((size, 0)),
        Some(b';') if !rest.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) => {
            Ok((size, rest.len()))
        }
        Some(b';') => Err("control character in chunk extension"),
        Some(_) => Err("text after the chunk size"),
    }
}

/// A trailer line is `field-name ":" field-value` with no obsolete line
/// folding and no CR, LF or NUL: it is dropped, but a malformed one means
/// the framing is not what it seems.
fn check_trailer_line(line: &[u8]) -> Result<(), &'static str> {
    let name = line.iter().take_while(|&&b| is_tchar(b)).count();
    if name == 0 || line.get(name) != Some(&b':') {
        return Err("malformed trailer field");
    }
    if line[name..]
        .iter()
        .any(|&b| b == b'\r' || b == b'\n' || b == 0)
    {
        return Err("control character in trailer field");
    }
    Ok(())
}

/// RFC 9110 5.6.2: the characters of a token (a field name).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests;
