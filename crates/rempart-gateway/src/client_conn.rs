//! Client connections: a cap on how many are open, and a deadline on writes.
//!
//! A client that stops reading fills its socket's buffer; hyper then stops
//! polling the response body, so the body's own deadline
//! ([`crate::deadline_body`]) is never checked and the request's bulkhead
//! slot would be held for as long as the client likes. The stream under
//! hyper therefore times out a write that cannot proceed past the deadline of
//! the response being written: the connection ends, hyper drops the body, and
//! the slot is freed. The timer is armed only when a write has to wait.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// The open client connections of one listener.
#[derive(Debug)]
pub struct Connections {
    open: AtomicUsize,
    /// What write deadlines are counted from.
    origin: Instant,
}

impl Connections {
    /// None open yet.
    pub fn new() -> Arc<Connections> {
        Arc::new(Connections {
            open: AtomicUsize::new(0),
            origin: Instant::now(),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A new connection's state, counted until it is dropped; `None` when
    /// `max` are already open (the cap is passed in: a reload may change it).
    pub fn admit(self: &Arc<Self>, max: usize) -> Option<Arc<ClientConn>> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Arc::new(ClientConn {
            connections: Arc::clone(self),
            write_by: AtomicU64::new(u64::MAX),
        }))
    }
}

/// One client connection: counted against the cap while it lives, and the
/// deadline by which the response being written must be written.
#[derive(Debug)]
pub struct ClientConn {
    connections: Arc<Connections>,
    /// Nanoseconds after the listener's origin (`u64::MAX`: none set yet).
    write_by: AtomicU64,
}

impl ClientConn {
    /// The response now being sent must be written by `at`.
    pub fn write_by(&self, at: Instant) {
        let nanos = at
            .saturating_duration_since(self.connections.origin)
            .as_nanos();
        self.write_by.store(
            u64::try_from(nanos).unwrap_or(u64::MAX - 1),
            Ordering::Relaxed,
        );
    }

    /// The deadline of the response being written, if one was set.
    fn deadline(&self) -> Option<Instant> {
        match self.write_by.load(Ordering::Relaxed) {
            u64::MAX => None,
            n => Some(self.connections.origin + Duration::from_nanos(n)),
        }
    }
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        self.connections.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Turns a connection away past the cap: a short 503 if the socket takes it
/// at once (never waiting on it), then the connection is closed.
pub fn refuse(stream: &TcpStream) {
    const BODY: &str = "{\"error\":\"too_many_connections\",\"message\":\"the gateway has reached its `max_connections`; retry shortly\"}";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}

/// A client's socket whose writes fail once they wait past the deadline of
/// the response being written.
#[derive(Debug)]
pub struct ClientStream {
    io: TcpStream,
    conn: Arc<ClientConn>,
    /// Armed on the first write that has to wait; reused after.
    stall: Option<Pin<Box<Sleep>>>,
}

impl ClientStream {
    /// `io`, its writes bounded by `conn`'s deadlines.
    pub fn new(io: TcpStream, conn: Arc<ClientConn>) -> ClientStream {
        ClientStream {
            io,
            conn,
            stall: None,
        }
    }

    /// A write must wait: fine until the response's deadline, an error after.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let Some(at) = self.conn.deadline() else {
            return Poll::Pending;
        };
        let sleep = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if sleep.deadline() != at {
            sleep.as_mut().reset(at);
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read the response before its deadline",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Pending => self.stalled(cx),
            done => done,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.stalled(cx),
            done => done,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Pending => self.stalled(cx),
            done => done,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_past_the_cap_are_refused_until_one_closes() {
        let conns = Connections::new();
        let a = conns.admit(2).expect("first");
        let _b = conns.admit(2).expect("second");
        assert!(conns.admit(2).is_none(), "a third is over the cap");
        assert_eq!(conns.open(), 2);
        drop(a);
        assert!(
            conns.admit(2).is_some(),
            "a closed connection frees its place"
        );
        assert!(conns.admit(1).is_none(), "a lowered cap applies at once");
    }

    #[tokio::test(start_paused = true)]
    async fn write_deadlines_round_trip() {
        let conns = Connections::new();
        let c = conns.admit(1).unwrap();
        assert_eq!(c.deadline(), None);
        let at = Instant::now() + Duration::from_millis(1500);
        c.write_by(at);
        assert_eq!(c.deadline(), Some(at));
    }
}
