//! The upstream client: keep-alive HTTP/1.1 connections, pooled per host,
//! driven by the request's own task.
//!
//! Why not hyper's client connection: it runs each connection in a task of
//! its own and hands requests, responses and body chunks to it over channels,
//! so every proxied request woke two tasks and crossed three channels. Here
//! the task that serves the client writes the request, reads the response
//! head and streams the body straight from the upstream socket (measured in
//! BENCHMARKS.md). The HTTP/1.1 it speaks is small: one request at a time per
//! connection, a head parsed by `httparse`, bodies framed by `Content-Length`,
//! chunked encoding, or the end of the connection (RFC 9112 section 6).
//!
//! A connection goes back to its host's idle list when its response body has
//! been read to the end and nothing said to close it; a body dropped early
//! drops its connection. An idle connection that the upstream closed is found
//! when it is next taken, and skipped.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{HeaderMap, Method, Response, StatusCode, Version};
use hyper::body::{Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
// tokio's clock: tests move it with paused time.
use tokio::time::Instant;

/// Why a request got no response.
#[derive(Debug)]
pub enum ClientError {
    /// No connection could be made (refused, unresolvable, timed out).
    Connect(io::Error),
    /// The connection failed while the request was in flight.
    Request(io::Error),
    /// The upstream's answer was not HTTP/1.1 the gateway can relay.
    BadResponse(&'static str),
}

impl ClientError {
    /// Whether the request surely never reached the upstream.
    pub fn is_connect(&self) -> bool {
        matches!(self, ClientError::Connect(_))
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "cannot connect upstream: {e}"),
            ClientError::Request(e) => write!(f, "upstream connection failed: {e}"),
            ClientError::BadResponse(why) => write!(f, "bad upstream response: {why}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Largest response head accepted from an upstream.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most response header fields accepted from an upstream.
const MAX_HEADERS: usize = 100;
/// Bytes asked of the socket per read when nothing says how many are
/// coming: a head with a 16 KiB body fits in one read.
const READ_CHUNK: usize = 32 * 1024;
/// Most bytes asked of the socket in one read, when a body's length says
/// more are coming.
const MAX_READ: usize = 256 * 1024;
/// A request body up to this size is copied behind the head: one write.
const COPY_BODY_UNDER: usize = 4 * 1024;
/// Longest chunk-size line (with extensions) or trailer section accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Pooled keep-alive connections to upstream hosts.
#[derive(Debug)]
pub struct UpstreamClient {
    /// Read on every request, written once per new host: readers take no lock.
    pools: ArcSwap<Vec<(Authority, Arc<HostPool>)>>,
    connect_timeout: Duration,
    /// Most idle connections kept per host (beyond it, a finished one closes).
    max_idle_per_host: usize,
}

/// One host's idle connections, oldest first.
#[derive(Debug)]
struct HostPool {
    // Boxed: a connection moves between this list and response bodies, and
    // a pointer moves cheaper than the connection.
    idle: Mutex<VecDeque<(Instant, Box<Connection>)>>,
    max_idle: usize,
}

/// An idle connection older than this is closed rather than reused: under
/// nginx's 75 s and Envoy's 60 s, so a request does not race their close.
/// Servers with shorter timeouts (Node's 5 s) still close first; a request
/// that meets such a close before any answer is resent if it is idempotent.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(55);

impl HostPool {
    fn put(&self, conn: Box<Connection>) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        drop_expired(&mut idle, now);
        if idle.len() < self.max_idle {
            idle.push_back((now, conn));
        }
    }

    /// The most recently used idle connection that is still open and has
    /// not been idle for [`IDLE_TIMEOUT`].
    fn take(&self) -> Option<Box<Connection>> {
        loop {
            let conn = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                drop_expired(&mut idle, Instant::now());
                idle.pop_back()?.1
            };
            if conn.still_open() {
                return Some(conn);
            }
        }
    }
}

/// Closes the connections idle for [`IDLE_TIMEOUT`] (at the front: the list
/// is in the order they came back), so sockets the upstream has closed do
/// not linger in CLOSE_WAIT while traffic flows.
fn drop_expired(idle: &mut VecDeque<(Instant, Box<Connection>)>, now: Instant) {
    while idle
        .front()
        .is_some_and(|(since, _)| now.saturating_duration_since(*since) >= IDLE_TIMEOUT)
    {
        idle.pop_front();
    }
}

#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    read: BytesMut,
    /// The request head being written (kept for its capacity).
    write: Vec<u8>,
}

impl Connection {
    /// An idle connection has nothing to read: if the socket says otherwise,
    /// the upstream closed it (or broke the protocol), and it is not reused.
    fn still_open(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readiness can linger from the last read: ask the socket.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Reads what the socket has; `expect` is how many bytes are known to
    /// be coming (0: unknown), so that one read can take a whole body
    /// (up to [`MAX_READ`]) rather than a chunk at a time.
    fn poll_fill(&mut self, cx: &mut Context<'_>, expect: u64) -> Poll<io::Result<usize>> {
        let expect = usize::try_from(expect).unwrap_or(MAX_READ).min(MAX_READ);
        let needed = expect.max(READ_CHUNK / 2);
        if self.read.capacity() - self.read.len() < needed {
            self.read.reserve(needed.max(READ_CHUNK));
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx, 0)).await
    }
}

/// What to send upstream.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamRequest<'a> {
    /// The method.
    pub method: &'a Method,
    /// The request target: path and query, starting with `/`.
    pub target: &'a str,
    /// Header fields, hop-by-hop ones already removed. `Content-Length`,
    /// `Transfer-Encoding` and `Expect` among them are ignored: the client
    /// frames the body itself.
    pub headers: &'a HeaderMap,
    /// The whole body (empty for none).
    pub body: &'a Bytes,
}

impl UpstreamClient {
    /// A client with `connect_timeout` for new connections.
    pub fn new(connect_timeout: Duration) -> UpstreamClient {
        UpstreamClient {
            pools: ArcSwap::from_pointee(Vec::new()),
            connect_timeout,
            max_idle_per_host: 512,
        }
    }

    /// Sends `req` to `authority` and returns the response with its body
    /// still to be read from the connection. The response's headers are the
    /// end-to-end ones: hop-by-hop fields (RFC 9110 7.6.1) are already gone.
    pub async fn send(
        &self,
        authority: &Authority,
        req: UpstreamRequest<'_>,
    ) -> Result<Response<UpstreamBody>, ClientError> {
        let pool = self.pool(authority);
        if let Some(mut conn) = pool.take() {
            match exchange(&mut conn, authority, &req).await {
                Ok(head) => return Ok(head.into_response(conn, pool)),
                // The upstream closed the idle connection as we reused it (it
                // read nothing): safe to send again on a new one, as the
                // request cannot have been acted on twice only if it is
                // idempotent, which is when we do.
                Err(Exchange::NothingBack(_)) if is_idempotent(req.method) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut conn = self.connect(authority).await?;
        let head = exchange(&mut conn, authority, &req).await?;
        Ok(head.into_response(conn, pool))
    }

    fn pool(&self, authority: &Authority) -> Arc<HostPool> {
        // Authorities come from the config, spelled the same each time: an
        // exact comparison is enough and cheaper than `Authority`'s own.
        let find = |pools: &[(Authority, Arc<HostPool>)]| {
            pools
                .iter()
                .find(|(a, _)| a.as_str() == authority.as_str())
                .map(|(_, p)| Arc::clone(p))
        };
        if let Some(p) = find(&self.pools.load()) {
            return p;
        }
        let fresh = Arc::new(HostPool {
            idle: Mutex::new(VecDeque::new()),
            max_idle: self.max_idle_per_host,
        });
        // A racing request may have added the host meanwhile: keep its pool.
        self.pools.rcu(|pools| {
            let mut pools = Vec::clone(pools);
            if find(&pools).is_none() {
                pools.push((authority.clone(), Arc::clone(&fresh)));
            }
            pools
        });
        find(&self.pools.load()).unwrap_or(fresh)
    }

    async fn connect(&self, authority: &Authority) -> Result<Box<Connection>, ClientError> {
        let addr = (authority.host(), authority.port_u16().unwrap_or(80));
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                ClientError::Connect(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
            })?
            .map_err(ClientError::Connect)?;
        let _ = stream.set_nodelay(true);
        // Boxed once for its life: bodies and futures that hold it stay small
        // and cheap to move.
        Ok(Box::new(Connection {
            stream,
            read: BytesMut::with_capacity(READ_CHUNK),
            write: Vec::with_capacity(1024),
        }))
    }
}

/// RFC 9110 9.2.2: methods whose repetition has the effect of one request.
pub(crate) fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// How one exchange failed.
enum Exchange {
    /// The connection ended before a single byte of response came back.
    NothingBack(io::Error),
    Failed(ClientError),
}

impl From<Exchange> for ClientError {
    fn from(e: Exchange) -> ClientError {
        match e {
            Exchange::NothingBack(e) => ClientError::Request(e),
            Exchange::Failed(e) => e,
        }
    }
}

/// A parsed response head and how its body is framed.
struct Head {
    response: Response<()>,
    framing: Framing,
    keep_alive: bool,
}

impl Head {
    fn into_response(self, conn: Box<Connection>, pool: Arc<HostPool>) -> Response<UpstreamBody> {
        let mut body = UpstreamBody {
            conn: Some(conn),
            framing: self.framing,
            pool: self.keep_alive.then_some(pool),
        };
        if body.framing.is_done() {
            body.release();
        }
        self.response.map(|()| body)
    }
}

/// Writes the request and reads the response head.
async fn exchange(
    conn: &mut Connection,
    authority: &Authority,
    req: &UpstreamRequest<'_>,
) -> Result<Head, Exchange> {
    encode_head(&mut conn.write, authority, req);
    let body = req.body;
    let copy_body = body.len() < COPY_BODY_UNDER;
    if copy_body {
        conn.write.extend_from_slice(body);
    }
    let written = async {
        conn.stream.write_all(&conn.write).await?;
        if !copy_body {
            conn.stream.write_all(body).await?;
        }
        io::Result::Ok(())
    }
    .await;
    written.map_err(Exchange::NothingBack)?;
    loop {
        let head = read_head(conn, req.method).await?;
        // 1xx answers are interim (100 Continue, 103 Early Hints): the real
        // one follows on the same connection.
        if let Some(head) = head {
            return Ok(head);
        }
    }
}

/// `METHOD target HTTP/1.1`, the fields, `Host` if missing, the body's length.
fn encode_head(out: &mut Vec<u8>, authority: &Authority, req: &UpstreamRequest<'_>) {
    out.clear();
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::EXPECT
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !req.headers.contains_key(header::HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(authority.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // A length for any body, and for the methods whose body means something
    // even when empty (RFC 9110 8.6).
    if !req.body.is_empty() || matches!(*req.method, Method::POST | Method::PUT | Method::PATCH) {
        let _ = write!(out, "content-length: {}\r\n", req.body.len());
    }
    out.extend_from_slice(b"\r\n");
}

/// Reads one response head; `None` for an interim (1xx) one, consumed.
async fn read_head(conn: &mut Connection, method: &Method) -> Result<Option<Head>, Exchange> {
    let bad = |why| Exchange::Failed(ClientError::BadResponse(why));
    let mut got_any = !conn.read.is_empty();
    loop {
        if !conn.read.is_empty() {
            let mut fields = [(0, 0, 0, 0); MAX_HEADERS];
            match scan_head(&conn.read, &mut fields) {
                Ok(Some(scan)) => {
                    // The head's bytes become the header values' storage: no
                    // copy per field.
                    let raw = conn.read.split_to(scan.len).freeze();
                    return build_head(&scan, &fields[..scan.count], &raw, method).map_err(bad);
                }
                Ok(None) if conn.read.len() < MAX_HEAD_BYTES => {}
                Ok(None) => return Err(bad("response head larger than 64 KiB")),
                Err(why) => return Err(bad(why)),
            }
        }
        match conn.fill().await {
            Ok(0) if got_any => {
                return Err(Exchange::Failed(ClientError::Request(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the middle of the response head",
                ))));
            }
            Ok(0) => {
                return Err(Exchange::NothingBack(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before any response",
                )));
            }
            Ok(_) => got_any = true,
            Err(e) if got_any => return Err(Exchange::Failed(ClientError::Request(e))),
            Err(e) => return Err(Exchange::NothingBack(e)),
        }
    }
}

/// A complete response head, located in the read buffer.
struct Scan {
    /// Length of the head, blank line included.
    len: usize,
    code: u16,
    version: Version,
    /// How many fields the head has.
    count: usize,
    length: Option<u64>,
    transfer_encoding: bool,
    chunked: bool,
    close: bool,
    /// `Connection` names fields beyond the usual tokens: they must go too.
    connection_lists_fields: bool,
}

/// A field's name and value, as byte ranges of the head.
type FieldSpan = (u32, u32, u32, u32);

/// Finds a complete head at the start of `buf` (`None`: not all here yet),
/// where its fields are (into `fields`) and what frames its body.
fn scan_head(
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
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or("bad Content-Length")?;
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

/// The response head `scan` found in `raw`, and its body's framing
/// (RFC 9112 6.3); `None` for an interim (1xx) answer.
fn build_head(
    scan: &Scan,
    fields: &[FieldSpan],
    raw: &Bytes,
    method: &Method,
) -> Result<Option<Head>, &'static str> {
    let status = StatusCode::from_u16(scan.code).map_err(|_| "status code out of range")?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err("101 Switching Protocols without an upgrade request");
        }
        return Ok(None);
    }
    let mut headers = HeaderMap::with_capacity(scan.count);
    for &(ns, ne, vs, ve) in fields {
        let raw_name = &raw[ns as usize..ne as usize];
        // Hop-by-hop fields end here, unless `Connection` lists others, which
        // the full strip below handles with the `Connection` field in place.
        if !scan.connection_lists_fields && crate::headers::is_hop_by_hop(raw_name) {
            continue;
        }
        let name = HeaderName::from_bytes(raw_name).map_err(|_| "bad header name")?;
        let value = HeaderValue::from_maybe_shared(raw.slice(vs as usize..ve as usize))
            .map_err(|_| "bad header value")?;
        headers.append(name, value);
    }
    let framing = if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Length(0)
    } else if scan.transfer_encoding {
        if scan.chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = scan.length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    if scan.connection_lists_fields {
        crate::headers::strip_hop_by_hop(&mut headers);
    }
    if scan.transfer_encoding {
        // The body is relayed decoded; the gateway's own side frames it anew.
        headers.remove(header::CONTENT_LENGTH);
    }
    let keep_alive = !scan.close && !matches!(framing, Framing::UntilClose);
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = scan.version;
    *response.headers_mut() = headers;
    Ok(Some(Head {
        response,
        framing,
        keep_alive,
    }))
}

/// How the body's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked, in this state.
    Chunked(Chunk),
    /// Everything until the upstream closes the connection.
    UntilClose,
    /// Read to the end.
    Done,
}

impl Framing {
    fn is_done(&self) -> bool {
        matches!(self, Framing::Length(0) | Framing::Done)
    }
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
}

/// An upstream response body, read from the connection as the client's side
/// asks for it.
#[derive(Debug)]
pub struct UpstreamBody {
    conn: Option<Box<Connection>>,
    framing: Framing,
    /// Where the connection goes back at the end, if it may be reused.
    pool: Option<Arc<HostPool>>,
}

impl UpstreamBody {
    /// The end of the body: the connection is reusable if nothing unread
    /// follows it.
    fn release(&mut self) {
        self.framing = Framing::Done;
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.take())
            && conn.read.is_empty()
        {
            pool.put(conn);
        }
    }

    /// Reads more of the body into the buffer (`expect`: bytes known to be
    /// coming). The upstream closing is an `UnexpectedEof` error; on any
    /// error the connection is dropped, never reused.
    fn poll_read_more(&mut self, cx: &mut Context<'_>, expect: u64) -> Poll<io::Result<()>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        let result = match ready!(conn.poll_fill(cx, expect)) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "upstream closed the connection in the middle of the body",
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.conn = None;
        }
        Poll::Ready(result)
    }

    /// Decodes as much of a chunked body as is buffered: data, or `None`
    /// when more bytes are needed, or the end.
    fn decode_chunked(&mut self) -> Result<Option<Bytes>, io::Error> {
        let bad = |why: &'static str| io::Error::new(io::ErrorKind::InvalidData, why);
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        loop {
            let Framing::Chunked(state) = self.framing else {
                return Ok(None);
            };
            let buf = &mut conn.read;
            match state {
                Chunk::Size => {
                    let Some(eol) = find_crlf(buf) else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(bad("chunk-size line too long"));
                        }
                        return Ok(None);
                    };
                    let line = &buf[..eol];
                    let digits = line
                        .split(|&b| b == b';')
                        .next()
                        .unwrap_or(&[])
                        .trim_ascii();
                    let size = std::str::from_utf8(digits)
                        .ok()
                        .filter(|d| !d.is_empty())
                        .and_then(|d| u64::from_str_radix(d, 16).ok())
                        .ok_or_else(|| bad("bad chunk size"))?;
                    buf.advance(eol + 2);
                    self.framing = Framing::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                }
                Chunk::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.framing = Framing::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Ok(Some(data));
                }
                Chunk::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(bad("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Chunk::Trailers => {
                    // Trailers are dropped: `Trailer` is hop-by-hop here and
                    // the client side does not announce any.
                    let Some(eol) = find_crlf(buf) else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(bad("trailer section too long"));
                        }
                        return Ok(None);
                    };
                    buf.advance(eol + 2);
                    if eol == 0 {
                        break;
                    }
                }
            }
        }
        self.release();
        Ok(None)
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            match this.framing {
                Framing::Done | Framing::Length(0) => {
                    this.release();
                    return Poll::Ready(None);
                }
                Framing::Length(left) => {
                    let Some(conn) = this.conn.as_mut() else {
                        return Poll::Ready(None);
                    };
                    if !conn.read.is_empty() {
                        let n = usize::try_from(left)
                            .unwrap_or(usize::MAX)
                            .min(conn.read.len());
                        let data = conn.read.split_to(n).freeze();
                        this.framing = Framing::Length(left - n as u64);
                        if this.framing.is_done() {
                            // Back in the pool before the client's side is
                            // done writing: the next request can have it.
                            this.release();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    if let Err(e) = ready!(this.poll_read_more(cx, left)) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Framing::UntilClose => {
                    let Some(conn) = this.conn.as_mut() else {
                        return Poll::Ready(None);
                    };
                    if !conn.read.is_empty() {
                        let data = conn.read.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(this.poll_read_more(cx, 0)) {
                        Ok(()) => {}
                        // Here the upstream closing is the body's end.
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            this.framing = Framing::Done;
                            return Poll::Ready(None);
                        }
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    }
                }
                Framing::Chunked(_) => {
                    match this.decode_chunked() {
                        Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                        Ok(None) if this.framing == Framing::Done => return Poll::Ready(None),
                        Ok(None) => {}
                        Err(e) => {
                            this.conn = None;
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                    if let Err(e) = ready!(this.poll_read_more(cx, 0)) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
