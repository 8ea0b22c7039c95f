//! One exchange on one upstream connection: write the request, read the
//! answer's head (skipping interim 1xx ones), then stream its body straight
//! from the socket as the client's side asks for it. What the bytes mean is
//! decided in `codec.rs`; this file decides only when the connection goes
//! back to its pool: at the body's end, if the codec said it may and nothing
//! unread follows. A body dropped early, or cut by an error, drops its
//! connection.

use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{HeaderMap, Method, Response, StatusCode};
use hyper::body::{Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::codec::{self, BodyPlan, FieldSpan, Framing, MAX_HEAD_BYTES, MAX_HEADERS, Scan};
use super::pool::HostPool;
use super::{ClientError, READ_CHUNK, UpstreamRequest};

/// Most bytes asked of the socket in one read, when a body's length says
/// more are coming.
const MAX_READ: usize = 256 * 1024;
/// A request body up to this size is copied behind the head: one write.
const COPY_BODY_UNDER: usize = 4 * 1024;

/// A connection to an upstream, with its buffers.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(super) stream: TcpStream,
    /// Bytes read and not yet consumed.
    pub(super) read: BytesMut,
    /// The request head being written (kept for its capacity).
    pub(super) write: Vec<u8>,
}

impl Connection {
    /// An idle connection has nothing to read: if the socket says otherwise,
    /// the upstream closed it (or broke the protocol), and it is not reused.
    pub(super) fn still_open(&self) -> bool {
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

/// How one exchange failed.
pub(super) enum Exchange {
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
pub(super) struct Head {
    response: Response<()>,
    framing: Framing,
    /// Whether the connection may carry another request after this body.
    reusable: bool,
}

impl Head {
    pub(super) fn into_response(
        self,
        conn: Box<Connection>,
        pool: Arc<HostPool>,
    ) -> Response<UpstreamBody> {
        let mut body = UpstreamBody {
            conn: Some(conn),
            framing: self.framing,
            pool: self.reusable.then_some(pool),
        };
        if body.framing.is_done() {
            body.release();
        }
        self.response.map(|()| body)
    }
}

/// Writes the request and reads the response head.
pub(super) async fn exchange(
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
            match codec::scan_head(&conn.read, &mut fields) {
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
    let BodyPlan { framing, reusable } = codec::body_plan(method, status, scan)?;
    if scan.connection_lists_fields {
        crate::headers::strip_hop_by_hop(&mut headers);
    }
    if scan.transfer_encoding {
        // The body is relayed decoded; the gateway's own side frames it anew.
        headers.remove(header::CONTENT_LENGTH);
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = scan.version;
    *response.headers_mut() = headers;
    Ok(Some(Head {
        response,
        framing,
        reusable,
    }))
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
        let (Some(conn), Framing::Chunked(mut decoder)) = (self.conn.as_mut(), self.framing) else {
            return Ok(None);
        };
        let decoded = decoder
            .decode(&conn.read)
            .map_err(|why| io::Error::new(io::ErrorKind::InvalidData, why))?;
        conn.read.advance(decoded.skip);
        if decoded.end {
            // Trailers are dropped: `Trailer` is hop-by-hop here and the
            // client side does not announce any.
            self.release();
            return Ok(None);
        }
        self.framing = Framing::Chunked(decoder);
        if decoded.data == 0 {
            return Ok(None);
        }
        Ok(Some(conn.read.split_to(decoded.data).freeze()))
    }
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
