//! The gateway's Redis connection, shared by the stale cache and the
//! rate-limit windows when `cache.backend = "redis"`.
//!
//! Redis is a helper, never a dependency the gateway falls over with: every
//! command has a short deadline, a failure marks the backend unhealthy (and
//! `/ready` says so) and the caller falls back to its in-process store.
//!
//! A circuit breaker (rempart's own) guards the request path: after
//! [`TRIP_AFTER`] failures in a row it opens, and from then on commands answer
//! `None` at once, without touching the network, so a Redis that silently
//! drops packets costs requests nothing. Only the background probe tests Redis
//! while the breaker is not closed: it takes the half-open permit, pings, and
//! closes the breaker when Redis answers again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use rempart::CircuitBreaker;
use rempart::circuit_breaker::CircuitState;
use rempart::clock::TokioClock;

/// How long one Redis command may take before the caller falls back.
pub const COMMAND_DEADLINE: Duration = Duration::from_millis(100);
/// How often the background task checks the connection; also how long the
/// breaker stays open before the probe may test Redis again.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Failures in a row that open the breaker.
pub const TRIP_AFTER: u32 = 3;

/// A Redis server the gateway uses when it can.
#[derive(Debug)]
pub struct RedisBackend {
    url: String,
    client: redis::Client,
    conn: ArcSwapOption<ConnectionManager>,
    healthy: AtomicBool,
    breaker: CircuitBreaker,
}

impl RedisBackend {
    /// A backend for `url`; nothing connects until [`spawn_probe`](Self::spawn_probe)
    /// or the first command.
    pub fn new(url: &str) -> Result<Arc<RedisBackend>, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis_url {url:?}: {e}"))?;
        let breaker = CircuitBreaker::builder()
            .name("redis")
            .failure_threshold(TRIP_AFTER)
            .success_threshold(1)
            .half_open_max_calls(1)
            .open_timeout(PROBE_EVERY)
            .clock(TokioClock::new())
            .build()
            .map_err(|e| format!("redis breaker: {e}"))?;
        Ok(Arc::new(RedisBackend {
            url: url.to_owned(),
            client,
            conn: ArcSwapOption::empty(),
            healthy: AtomicBool::new(false),
            breaker,
        }))
    }

    /// The breaker in front of Redis (for tests and for whoever wants to show it;
    /// `/ready` already reports Redis as down while it is open).
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The URL it talks to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the last command or probe reached Redis.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Keeps a connection up: pings every [`PROBE_EVERY`] while the breaker is
    /// closed, and is the one caller that tests Redis while it is half-open.
    /// Stops when the backend is dropped.
    pub fn spawn_probe(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(this) = weak.upgrade() else { return };
                let ok = match this.breaker.state() {
                    CircuitState::Closed => this.ping().await,
                    // Only the probe half-opens: requests keep using local state.
                    CircuitState::HalfOpen => match this.breaker.try_acquire() {
                        Ok(permit) => {
                            let r: Option<String> = this.attempt(redis::cmd("PING")).await;
                            if r.is_some() {
                                permit.success();
                            } else {
                                permit.failure();
                            }
                            r.is_some()
                        }
                        Err(_) => false,
                    },
                    CircuitState::Open => false,
                };
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
    /// cannot answer within [`COMMAND_DEADLINE`], and `None` at once, with no
    /// network wait, while the breaker is not closed.
    pub async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Option<T> {
        let permit = self.permit()?;
        let r = self.attempt(cmd).await;
        if r.is_some() {
            permit.success();
        } else {
            permit.failure();
        }
        r
    }

    /// Runs a pipeline (atomic if built with `.atomic()`); `None` as for [`run`](Self::run).
    pub async fn run_pipeline<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Option<T> {
        let permit = self.permit()?;
        let r = match self.connection().await {
            Some(mut conn) => self.settle(pipe.query_async::<T>(&mut conn)).await,
            None => None,
        };
        if r.is_some() {
            permit.success();
        } else {
            permit.failure();
        }
        r
    }

    /// Whether commands would reach Redis now (the breaker is closed).
    pub fn is_available(&self) -> bool {
        self.breaker.state() == CircuitState::Closed
    }

    /// A breaker permit for a request-path command, only while closed: a
    /// half-open breaker is the probe's to test.
    fn permit(&self) -> Option<rempart::circuit_breaker::Permit<'_>> {
        if !self.is_available() {
            return None;
        }
        self.breaker.try_acquire().ok()
    }

    async fn attempt<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Option<T> {
        let Some(mut conn) = self.connection().await else {
            self.mark_down();
            return None;
        };
        self.settle(cmd.query_async::<T>(&mut conn)).await
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
