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
//! Where each decision lives:
//! - this file: which connection a request goes on (an idle one, or a new
//!   one), and when a failed request is sent again;
//! - `pool.rs`: which idle connections are kept, and for how long;
//! - `connection.rs`: one exchange on one connection (write the request,
//!   read the head, stream the body), and when the connection goes back;
//! - [`codec`]: pure functions over bytes: what a response head says, how
//!   its body is framed, whether its connection may be reused, and the
//!   chunked decoder, with every limit on what an upstream may send.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::uri::Authority;
use http::{HeaderMap, Method, Response};
use tokio::net::TcpStream;

pub mod codec;
mod connection;
mod pool;

pub use connection::UpstreamBody;
use connection::{Connection, Exchange, exchange};
pub use pool::IDLE_TIMEOUT;
use pool::{HostPool, Pools};

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

/// Bytes asked of the socket per read when nothing says how many are
/// coming: a head with a 16 KiB body fits in one read.
const READ_CHUNK: usize = 32 * 1024;

/// Pooled keep-alive connections to upstream hosts.
#[derive(Debug)]
pub struct UpstreamClient {
    pools: Pools,
    connect_timeout: Duration,
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
            // Beyond this many idle connections per host, a finished one closes.
            pools: Pools::new(512),
            connect_timeout,
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
        let pool: Arc<HostPool> = self.pools.for_host(authority);
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
