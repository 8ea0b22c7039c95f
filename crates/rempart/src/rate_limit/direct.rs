use std::sync::Arc;
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};

use super::clock::GovernorClock;
use super::config::{Bucket, BucketSettings};
use super::metrics::{LimiterStats, RateLimitMetrics};
use super::refusal::RateLimited;
use crate::ConfigError;
use crate::clock::{Clock, Instant};

type Gcra = governor::RateLimiter<NotKeyed, InMemoryState, GovernorClock, NoOpMiddleware<Instant>>;

/// One token bucket for every caller (a process-wide or per-dependency limit),
/// on `governor`'s GCRA. Cheap to clone: clones share the bucket.
///
/// The seed's limit is 10 requests per second with a burst of 20: a full
/// bucket admits 20 at once, then one every 100 ms.
///
/// ```
/// use rempart::clock::ManualClock;
/// use rempart::rate_limit::RateLimiter;
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = RateLimiter::builder()
///     .name("optimizer")
///     .rate(10, Duration::from_secs(1))
///     .burst(20)
///     .clock(clock.clone())
///     .build()
///     .unwrap();
/// assert_eq!((0..25).filter(|_| limiter.check().is_ok()).count(), 20);
/// clock.advance(Duration::from_millis(100));
/// assert!(limiter.check().is_ok());
/// assert!(limiter.check().is_err());
/// ```
#[derive(Debug, Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    gcra: Gcra,
    bucket: Bucket,
    stats: Arc<LimiterStats>,
}

/// Builds a [`RateLimiter`]; see [`RateLimiter::builder`].
#[derive(Debug, Clone, Default)]
pub struct RateLimiterBuilder {
    settings: BucketSettings,
}

impl RateLimiterBuilder {
    /// The limiter's name, used in refusals, metrics (`limiter` label) and events.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.settings.name = name.into();
        self
    }

    /// Sustained rate: `count` requests per `period` (required).
    pub fn rate(mut self, count: u32, period: Duration) -> Self {
        self.settings.rate = Some((count, period));
        self
    }

    /// Requests admitted at once from a full bucket (default: the rate's `count`).
    pub fn burst(mut self, burst: u32) -> Self {
        self.settings.burst = Some(burst);
        self
    }

    /// The clock decisions are taken on (default: [`MonotonicClock`](crate::clock::MonotonicClock)).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.settings.clock = Arc::new(clock);
        self
    }

    /// The limiter, or the first setting that cannot work.
    pub fn build(self) -> Result<RateLimiter, ConfigError> {
        let bucket = self.settings.bucket()?;
        let clock = GovernorClock::from_arc(self.settings.clock);
        Ok(RateLimiter {
            inner: Arc::new(Inner {
                gcra: governor::RateLimiter::direct_with_clock(bucket.quota, clock),
                bucket,
                stats: Arc::new(LimiterStats::new(self.settings.name)),
            }),
        })
    }
}

impl RateLimiter {
    /// A builder; `rate` is required.
    pub fn builder() -> RateLimiterBuilder {
        RateLimiterBuilder::default()
    }

    /// Takes one token, or says when one will be there.
    #[inline]
    pub fn check(&self) -> Result<(), RateLimited> {
        match self.inner.gcra.check() {
            Ok(()) => {
                self.inner.stats.allowed();
                Ok(())
            }
            Err(not_until) => Err(self.refusal(not_until.earliest_possible())),
        }
    }

    #[cold]
    #[inline(never)]
    fn refusal(&self, earliest: Instant) -> RateLimited {
        let now = self.inner.gcra.clock().now();
        let refused = refusal(&self.inner.stats, &self.inner.bucket, earliest, now);
        tracing::debug!(limiter = %refused.limiter, retry_after = ?refused.retry_after, "rate limit refused a request");
        refused
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.inner.stats.name
    }

    /// Requests admitted from a full bucket.
    pub fn burst(&self) -> u32 {
        self.inner.bucket.burst
    }

    /// Admitted and refused counts so far.
    pub fn metrics(&self) -> RateLimitMetrics {
        self.inner.stats.snapshot()
    }

    pub(crate) fn stats(&self) -> &Arc<LimiterStats> {
        &self.inner.stats
    }
}

/// The refusal for a bucket whose next token comes at `earliest`, counted.
pub(crate) fn refusal(
    stats: &LimiterStats,
    bucket: &Bucket,
    earliest: Instant,
    now: Instant,
) -> RateLimited {
    stats.refused();
    let retry_after = earliest.saturating_duration_since(now);
    // The bucket is full again `burst - 1` tokens after the next one.
    let reset = retry_after + bucket.per_token.saturating_mul(bucket.burst - 1);
    RateLimited {
        limiter: stats.name.clone(),
        limit: u64::from(bucket.burst),
        remaining: 0,
        window: bucket.window(),
        reset,
        retry_after,
    }
}
