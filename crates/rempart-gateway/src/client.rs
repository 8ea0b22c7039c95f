//! The upstream client: keep-alive HTTP/1.1 connections, pooled per host.
//!
//! A connection serves one request at a time (HTTP/1.1 without pipelining).
//! Connections stay in their host's list whether busy or idle; a request takes
//! the first one that is ready (its previous response fully read), otherwise
//! opens a new one. Closed connections are dropped as they are found. Only
//! `http://` upstreams (the config refuses others).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a request got no response.
#[derive(Debug)]
pub enum ClientError {
    /// No connection could be made (refused, unresolvable, timed out).
    Connect(std::io::Error),
    /// The connection failed while the request was in flight.
    Request(hyper::Error),
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
        }
    }
}

impl std::error::Error for ClientError {}

/// Pooled keep-alive connections to upstream hosts.
#[derive(Debug)]
pub struct UpstreamClient {
    pools: Mutex<HashMap<Authority, Vec<SendRequest<Full<Bytes>>>>>,
    connect_timeout: Duration,
    /// Most connections kept per host (beyond it, a finished connection closes).
    max_per_host: usize,
}

impl UpstreamClient {
    /// A client with `connect_timeout` for new connections.
    pub fn new(connect_timeout: Duration) -> UpstreamClient {
        UpstreamClient {
            pools: Mutex::new(HashMap::new()),
            connect_timeout,
            max_per_host: 1024,
        }
    }

    /// Sends `req` (its URI absolute: `http://host:port/path?query`).
    pub async fn request(
        &self,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, ClientError> {
        let uri = req.uri().clone();
        let authority = uri.authority().cloned().ok_or_else(|| {
            ClientError::Connect(std::io::Error::other("upstream URI without a host"))
        })?;
        // HTTP/1.1 to an origin server: the request line carries the path only.
        *req.uri_mut() = Uri::from(
            uri.path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        let mut sender = match self.take_ready(&authority) {
            Some(s) => s,
            None => self.connect(&authority).await?,
        };
        let result = sender.send_request(req).await;
        // Back in the list at once: it is busy until its response body is
        // read, and `take_ready` skips it until then.
        if !sender.is_closed() {
            let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
            let list = pools.entry(authority).or_default();
            if list.len() < self.max_per_host {
                list.push(sender);
            }
        }
        result.map_err(ClientError::Request)
    }

    fn take_ready(&self, authority: &Authority) -> Option<SendRequest<Full<Bytes>>> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let list = pools.get_mut(authority)?;
        list.retain(|s| !s.is_closed());
        let i = list.iter().rposition(|s| s.is_ready())?;
        Some(list.swap_remove(i))
    }

    async fn connect(
        &self,
        authority: &Authority,
    ) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let addr = (authority.host(), authority.port_u16().unwrap_or(80));
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                ClientError::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ))
            })?
            .map_err(ClientError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Connect(std::io::Error::other(e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}
