//! The per-client-IP rate limit.
//!
//! With `cache.backend = "memory"` each client gets a token bucket in this
//! process (`rempart::rate_limit::KeyedRateLimiter`: `rate` per second, `burst`
//! at once, idle clients forgotten after 3 minutes). With `"redis"` the limit
//! must hold across every gateway instance, so it becomes a sliding-window
//! counter (seed 002) kept in Redis: at most `burst` requests per
//! `burst / rate` seconds, counted in windows cut on the Unix epoch so every
//! instance cuts them alike. If Redis cannot answer, each instance falls back
//! to its own in-process window (a per-instance limit rather than none), and
//! `/ready` reports Redis as down.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rempart::clock::{Clock, UnixClock};
use rempart::rate_limit::{
    InMemoryWindowStore, KeyedRateLimiter, RateLimited, SlidingWindowError, SlidingWindowLimiter,
    SlidingWindowStore, StoreError, StoreFuture, WindowCounts,
};

use crate::config::RateLimitConfig;
use crate::redis_backend::RedisBackend;

/// The limiter's name in metrics (`rate_limit_*{limiter="clients"}`).
pub const LIMITER_NAME: &str = "clients";

/// Idle clients are forgotten after this long (seed 002: 3 minutes).
pub const IDLE: Duration = Duration::from_secs(180);

/// A per-client limit, local or shared.
#[derive(Debug)]
pub enum ClientLimiter {
    /// A token bucket per client, in this process.
    Local(KeyedRateLimiter<IpAddr>),
    /// A sliding window per client in Redis, with a local window as fallback.
    Shared {
        /// Counts in Redis.
        shared: SlidingWindowLimiter,
        /// Counts here, used while Redis is unreachable.
        local: SlidingWindowLimiter,
        /// The connection, for its health.
        redis: Arc<RedisBackend>,
    },
}

impl ClientLimiter {
    /// The local token-bucket limiter for `config`, on `clock`.
    pub fn local(config: &RateLimitConfig, clock: Arc<dyn Clock>) -> Result<ClientLimiter, String> {
        let limiter = KeyedRateLimiter::builder()
            .name(LIMITER_NAME)
            .rate(config.rate, Duration::from_secs(1))
            .burst(config.burst)
            .idle_timeout(IDLE)
            .clock(clock)
            .build()
            .map_err(|e| format!("rate_limit: {e}"))?;
        if tokio::runtime::Handle::try_current().is_ok() {
            // Stops by itself when the limiter is dropped (after a reload).
            drop(limiter.spawn_evictor(Duration::from_secs(60)));
        }
        Ok(ClientLimiter::Local(limiter))
    }

    /// The Redis-shared limiter for `config`.
    pub fn shared(
        config: &RateLimitConfig,
        redis: Arc<RedisBackend>,
    ) -> Result<ClientLimiter, String> {
        let window = Duration::from_secs_f64(f64::from(config.burst) / f64::from(config.rate));
        let build = |store: Arc<dyn SlidingWindowStore>| {
            SlidingWindowLimiter::builder()
                .name(LIMITER_NAME)
                .limit(u64::from(config.burst), window)
                .store(store)
                .clock(UnixClock::new())
                .build()
                .map_err(|e| format!("rate_limit: {e}"))
        };
        Ok(ClientLimiter::Shared {
            shared: build(Arc::new(RedisWindowStore {
                redis: Arc::clone(&redis),
            }))?,
            local: build(Arc::new(InMemoryWindowStore::new()))?,
            redis,
        })
    }

    /// Admits or refuses one request from `client`.
    pub async fn check(&self, client: IpAddr) -> Result<(), RateLimited> {
        match self {
            ClientLimiter::Local(l) => l.check(&client),
            ClientLimiter::Shared { shared, local, .. } => {
                let key = client.to_string();
                match shared.check(&key).await {
                    Ok(_) => Ok(()),
                    Err(SlidingWindowError::Limited(r)) => Err(r),
                    Err(SlidingWindowError::Store(_)) => match local.check(&key).await {
                        Ok(_) => Ok(()),
                        Err(SlidingWindowError::Limited(r)) => Err(r),
                        // The in-memory store does not fail; admit rather than refuse on a bug.
                        Err(SlidingWindowError::Store(_)) => Ok(()),
                    },
                }
            }
        }
    }

    /// Whether `config` would build the same limiter (so a reload keeps its counts).
    pub fn same_settings(a: &RateLimitConfig, b: &RateLimitConfig) -> bool {
        a.rate == b.rate && a.burst == b.burst
    }
}

/// Sliding-window counts in Redis: one key per client and window,
/// `rempart:rl:{client}:{window}`, incremented and given an expiry in one
/// `MULTI`, read together with the previous window's key.
#[derive(Debug)]
pub struct RedisWindowStore {
    redis: Arc<RedisBackend>,
}

impl RedisWindowStore {
    /// A store on `redis`.
    pub fn new(redis: Arc<RedisBackend>) -> RedisWindowStore {
        RedisWindowStore { redis }
    }
}

fn window_key(key: &str, window: u64) -> String {
    format!("rempart:rl:{key}:{window}")
}

impl SlidingWindowStore for RedisWindowStore {
    fn hit<'a>(
        &'a self,
        key: &'a str,
        window: u64,
        keep_for: Duration,
    ) -> StoreFuture<'a, WindowCounts> {
        Box::pin(async move {
            let current = window_key(key, window);
            let previous = window_key(key, window.wrapping_sub(1));
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("INCR")
                .arg(&current)
                .cmd("PEXPIRE")
                .arg(&current)
                .arg(
                    u64::try_from(keep_for.as_millis())
                        .unwrap_or(u64::MAX)
                        .max(1),
                )
                .ignore()
                .cmd("GET")
                .arg(&previous);
            let (current, previous): (u64, Option<u64>) = self
                .redis
                .run_pipeline(&pipe)
                .await
                .ok_or_else(|| StoreError::new("redis did not answer"))?;
            Ok(WindowCounts {
                previous: previous.unwrap_or(0),
                current,
            })
        })
    }

    fn undo<'a>(&'a self, key: &'a str, window: u64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let _: Option<i64> = self
                .redis
                .run(redis::cmd("DECR").arg(window_key(key, window)).clone())
                .await;
            Ok(())
        })
    }
}
