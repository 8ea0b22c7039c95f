//! An outage drill: a TCP proxy in front of a broker that can cut every
//! connection and refuse new ones for a while, so an operator (or a test, or
//! `rempart demo outbox`) can watch the outbox hold orders and then drain.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A loopback TCP proxy to `upstream`. While cut, open connections are
/// closed and new ones are accepted and closed at once (the client sees its
/// connection drop during the handshake, as with a broker that is down).
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let proxy = rempart_outbox::CutProxy::start("127.0.0.1:4222".parse().unwrap()).await?;
/// let url = format!("nats://{}", proxy.addr()); // give this to the relay
/// proxy.cut(true); // the broker "goes down"
/// proxy.cut(false); // and comes back
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct CutProxy {
    addr: SocketAddr,
    cut: Arc<watch::Sender<bool>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(watch::channel(false).0);
        let state = cut.subscribe();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if *state.borrow() {
                    continue; // dropped: closed at once
                }
                tokio::spawn(forward(inbound, upstream, state.clone()));
            }
        });
        Ok(CutProxy { addr, cut, accept })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts (`true`: closes every connection, refuses new ones) or restores.
    pub fn cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }

    /// Whether it is cut.
    pub fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Closes the open connections too.
        self.cut.send_replace(true);
    }
}

async fn forward(mut inbound: TcpStream, upstream: SocketAddr, mut cut: watch::Receiver<bool>) {
    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = cut.wait_for(|c| *c) => {}
    }
}
