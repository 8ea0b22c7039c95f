//! Which idle connections are kept, per host, and for how long: a finished
//! connection comes back here, the next request to its host takes the most
//! recently used one, and one idle for [`IDLE_TIMEOUT`] is closed instead.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::Authority;
// tokio's clock: tests move it with paused time.
use tokio::time::Instant;

use super::connection::Connection;

/// An idle connection older than this is closed rather than reused: under
/// nginx's 75 s and Envoy's 60 s, so a request does not race their close.
/// Servers with shorter timeouts (Node's 5 s) still close first; a request
/// that meets such a close before any answer is resent if it is idempotent.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(55);

/// Every host's pool.
#[derive(Debug)]
pub(super) struct Pools {
    /// Read on every request, written once per new host: readers take no lock.
    pools: ArcSwap<Vec<(Authority, Arc<HostPool>)>>,
    /// Most idle connections kept per host (beyond it, a finished one closes).
    max_idle_per_host: usize,
}

impl Pools {
    pub(super) fn new(max_idle_per_host: usize) -> Pools {
        Pools {
            pools: ArcSwap::from_pointee(Vec::new()),
            max_idle_per_host,
        }
    }

    /// The pool of `authority`, made on its first request.
    pub(super) fn for_host(&self, authority: &Authority) -> Arc<HostPool> {
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
}

/// One host's idle connections, oldest first.
#[derive(Debug)]
pub(crate) struct HostPool {
    // Boxed: a connection moves between this list and response bodies, and
    // a pointer moves cheaper than the connection.
    idle: Mutex<VecDeque<(Instant, Box<Connection>)>>,
    max_idle: usize,
}

impl HostPool {
    pub(super) fn put(&self, conn: Box<Connection>) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        drop_expired(&mut idle, now);
        if idle.len() < self.max_idle {
            idle.push_back((now, conn));
        }
    }

    /// The most recently used idle connection that is still open and has
    /// not been idle for [`IDLE_TIMEOUT`].
    pub(super) fn take(&self) -> Option<Box<Connection>> {
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
