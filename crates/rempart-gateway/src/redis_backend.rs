//! The gateway's Redis connection, shared by the stale cache and the
//! rate-limit windows when `cache.backend = "redis"`.
//!
//! Redis is a helper, never a dependency the gateway falls over with: every
//! command has a short deadline, a failure marks the backend unhealthy (and
//! `/ready` says so) and the caller falls back to its in-process store; a
//! background task reconnects and marks it healthy again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long one Redis command may take before the caller falls back.
pub const COMMAND_DEADLINE: Duration = Duration::from_millis(100);
/// How often the background task checks the connection.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

/// A Redis server the gateway uses when it can.
#[derive(Debug)]
pub struct RedisBackend {
    url: String,
    client: redis::Client,
    conn: ArcSwapOption<ConnectionManager>,
    healthy: AtomicBool,
}

impl RedisBackend {
    /// A backend for `url`; nothing connects until [`spawn_probe`](Self::spawn_probe)
    /// or the first command.
    pub fn new(url: &str) -> Result<Arc<RedisBackend>, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis_url {url:?}: {e}"))?;
        Ok(Arc::new(RedisBackend {
            url: url.to_owned(),
            client,
            conn: ArcSwapOption::empty(),
            healthy: AtomicBool::new(false),
        }))
    }

    /// The URL it talks to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the last command or probe reached Redis.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Keeps a connection up: connects, pings every [`PROBE_EVERY`], and
    /// reconnects after a failure. Stops when the backend is dropped.
    pub fn spawn_probe(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(this) = weak.upgrade() else { return };
                let ok = this.ping().await;
                if ok != this.healthy.swap(ok, Ordering::Relaxed) {
                    if ok {
                        tracing::info!(url = %this.url, "redis reachable");
                    } else {
                        tracing::warn!(url = %this.url, "redis unreachable: using in-process fallbacks");
                    }
                }
                drop(this);
                tokio::time::sleep(PROBE_EVERY).await;
            }
        })
    }

    async fn ping(&self) -> bool {
        let r: Option<String> = self.run(redis::cmd("PING")).await;
        r.is_some()
    }

    async fn connection(&self) -> Option<ConnectionManager> {
        if let Some(c) = self.conn.load_full() {
            return Some((*c).clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_DEADLINE))
            .set_response_timeout(Some(COMMAND_DEADLINE))
            .set_number_of_retries(1);
        match tokio::time::timeout(
            COMMAND_DEADLINE * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        {
            Ok(Ok(c)) => {
                self.conn.store(Some(Arc::new(c.clone())));
                Some(c)
            }
            _ => None,
        }
    }

    /// Runs one command; `None` (and the backend marked unhealthy) if Redis
    /// cannot answer within [`COMMAND_DEADLINE`].
    pub async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Option<T> {
        let mut conn = self.connection().await?;
        self.settle(cmd.query_async::<T>(&mut conn)).await
    }

    /// Runs a pipeline (atomic if built with `.atomic()`); `None` as for [`run`](Self::run).
    pub async fn run_pipeline<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Option<T> {
        let mut conn = self.connection().await?;
        self.settle(pipe.query_async::<T>(&mut conn)).await
    }

    /// Awaits a query within the deadline and records what it says about Redis's health.
    async fn settle<T>(&self, query: impl Future<Output = redis::RedisResult<T>>) -> Option<T> {
        match tokio::time::timeout(COMMAND_DEADLINE, query).await {
            Ok(Ok(v)) => {
                self.healthy.store(true, Ordering::Relaxed);
                Some(v)
            }
            _ => {
                self.mark_down();
                None
            }
        }
    }

    fn mark_down(&self) {
        // Drop the connection so the next command (or the probe) starts afresh
        // instead of queueing behind a dead socket.
        self.conn.store(None);
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(url = %self.url, "redis unreachable: using in-process fallbacks");
        }
    }
}
