use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;

use super::clock::GovernorClock;
use super::config::{Bucket, BucketSettings};
use super::direct::refusal;
use super::metrics::{LimiterStats, RateLimitMetrics};
use super::refusal::RateLimited;
use crate::ConfigError;
use crate::clock::{Clock, Instant, duration_to_nanos};

/// The per-key state governor's GCRA reads and writes: each key's
/// theoretical arrival time (TAT), in nanoseconds since the limiter started,
/// 0 meaning "never seen". The same layout as governor's own keyed store; ours
/// so that [`KeyedRateLimiter::evict_idle`] can judge idleness on the TAT.
#[derive(Debug)]
struct KeyStore<K: Hash + Eq>(Arc<DashMap<K, AtomicU64>>);

impl<K: Hash + Eq + Clone> StateStore for KeyStore<K> {
    type Key = K;

    #[inline]
    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(tat) = self.0.get(key) {
            return replace(&tat, f);
        }
        // First sight of the key: insert it, then decide as for any other.
        let tat = self.0.entry(key.clone()).or_default().downgrade();
        replace(&tat, f)
    }
}

/// governor's compare-and-swap loop over one key's TAT.
#[inline]
fn replace<T, F, E>(tat: &AtomicU64, f: F) -> Result<T, E>
where
    F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
{
    let read = |n: u64| (n != 0).then(|| Nanos::from(n));
    let mut prev = tat.load(Ordering::Acquire);
    loop {
        let (result, next) = f(read(prev))?;
        match tat.compare_exchange_weak(prev, next.as_u64(), Ordering::Release, Ordering::Acquire) {
            Ok(_) => return Ok(result),
            Err(actual) => prev = actual,
        }
    }
}

type Gcra<K> = governor::RateLimiter<K, KeyStore<K>, GovernorClock, NoOpMiddleware<Instant>>;

/// A token bucket per key (client IP, API key, ...), on `governor`'s GCRA;
/// idle keys are forgotten so memory stays bounded however many clients come
/// and go. Cheap to clone: clones share the buckets.
///
/// A key is forgotten once its bucket has stayed full for `idle_timeout`:
/// its bucket is full again when its last admission's tokens have all
/// refilled (one token's refill after a single request, the whole burst's
/// after a burst), and [`evict_idle`](Self::evict_idle) forgets it from
/// `idle_timeout` after that moment. Forgetting it then loses nothing, since
/// a new bucket starts full, exactly as the forgotten one was: a slow limit
/// (1 password reset per hour) keeps its key for the hour plus the idle
/// timeout, however short the timeout. The seed's idle timeout is 3 minutes
/// (the default).
/// Call [`evict_idle`](Self::evict_idle) from your own timer, or let
/// [`spawn_evictor`](Self::spawn_evictor) do it.
///
/// Memory: a tracked `IpAddr` key takes a 32-byte slot (17-byte key, 8-byte
/// TAT, padding) plus a control byte in a `DashMap` kept at most 7/8 full:
/// 43 bytes per key measured at 100,000 keys on 64-bit Linux, between about
/// 38 and 75 depending on where the table is in its doubling.
/// `tests/rate_limit.rs` measures it with a counting allocator, and checks
/// that evicting the keys gives the memory back.
///
/// ```
/// use rempart::clock::ManualClock;
/// use rempart::rate_limit::KeyedRateLimiter;
/// use std::net::IpAddr;
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let per_ip = KeyedRateLimiter::<IpAddr>::builder()
///     .rate(10, Duration::from_secs(1))
///     .burst(20)
///     .clock(clock.clone())
///     .build()
///     .unwrap();
/// let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
/// assert_eq!((0..30).filter(|_| per_ip.check(&a).is_ok()).count(), 20);
/// assert!(per_ip.check(&b).is_ok(), "b has its own bucket");
/// // b's bucket is full again 100 ms after its one request; a's, 2 s after its burst of 20.
/// clock.advance(Duration::from_millis(180_100));
/// assert_eq!(per_ip.evict_idle(), 1, "b's bucket has been full for 3 min; a's not yet");
/// ```
#[derive(Debug)]
pub struct KeyedRateLimiter<K: Hash + Eq + Clone> {
    inner: Arc<Inner<K>>,
}

impl<K: Hash + Eq + Clone> Clone for KeyedRateLimiter<K> {
    fn clone(&self) -> Self {
        KeyedRateLimiter {
            inner: Arc::clone(&self.inner),
        }
    }
}

#[derive(Debug)]
struct Inner<K: Hash + Eq + Clone> {
    gcra: Gcra<K>,
    keys: Arc<DashMap<K, AtomicU64>>,
    /// Our reading of governor's start, taken just after it: TATs are relative
    /// to governor's start, so an idle judgement on ours is late, never early.
    start: Instant,
    idle: Duration,
    bucket: Bucket,
    stats: Arc<LimiterStats>,
}

/// Builds a [`KeyedRateLimiter`]; see [`KeyedRateLimiter::builder`].
#[derive(Debug, Clone)]
pub struct KeyedRateLimiterBuilder<K> {
    settings: BucketSettings,
    idle: Duration,
    _key: std::marker::PhantomData<fn(K)>,
}

impl<K: Hash + Eq + Clone> KeyedRateLimiterBuilder<K> {
    /// The limiter's name, used in refusals, metrics (`limiter` label) and events.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.settings.name = name.into();
        self
    }

    /// Sustained rate per key: `count` requests per `period` (required).
    pub fn rate(mut self, count: u32, period: Duration) -> Self {
        self.settings.rate = Some((count, period));
        self
    }

    /// Requests a key may make at once from a full bucket (default: the rate's `count`).
    pub fn burst(mut self, burst: u32) -> Self {
        self.settings.burst = Some(burst);
        self
    }

    /// How long a key stays tracked once its bucket is full again (default
    /// 3 min, the seed's); see [`KeyedRateLimiter`] for when that is.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// The clock decisions are taken on (default: [`MonotonicClock`](crate::clock::MonotonicClock)).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.settings.clock = Arc::new(clock);
        self
    }

    /// The limiter, or the first setting that cannot work.
    pub fn build(self) -> Result<KeyedRateLimiter<K>, ConfigError> {
        let bucket = self.settings.bucket()?;
        if self.idle.is_zero() {
            return Err(ConfigError::new(
                super::POLICY,
                "idle_timeout",
                "a zero idle timeout would forget keys while they are in use; use at least the bucket's refill time (the seed uses 3 minutes)",
            ));
        }
        let keys = Arc::new(DashMap::new());
        let clock = self.settings.clock;
        let gcra = governor::RateLimiter::new(
            bucket.quota,
            KeyStore(Arc::clone(&keys)),
            GovernorClock::from_arc(Arc::clone(&clock)),
        );
        let start = clock.now();
        Ok(KeyedRateLimiter {
            inner: Arc::new(Inner {
                gcra,
                keys,
                start,
                idle: self.idle,
                bucket,
                stats: Arc::new(LimiterStats::new(self.settings.name)),
            }),
        })
    }
}

impl<K: Hash + Eq + Clone> KeyedRateLimiter<K> {
    /// A builder; `rate` is required.
    pub fn builder() -> KeyedRateLimiterBuilder<K> {
        KeyedRateLimiterBuilder {
            settings: BucketSettings::default(),
            idle: Duration::from_secs(180),
            _key: std::marker::PhantomData,
        }
    }

    /// Takes one token from `key`'s bucket, or says when one will be there.
    #[inline]
    pub fn check(&self, key: &K) -> Result<(), RateLimited> {
        match self.inner.gcra.check_key(key) {
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
        tracing::debug!(limiter = %refused.limiter, retry_after = ?refused.retry_after, "keyed rate limit refused a request");
        refused
    }

    /// Forgets every idle key (see the type's docs) and returns how many.
    /// Gives memory back to the allocator when most keys went.
    pub fn evict_idle(&self) -> usize {
        let inner = &*self.inner;
        let now = inner
            .gcra
            .clock()
            .now()
            .saturating_duration_since(inner.start);
        let now = duration_to_nanos(now);
        let idle = duration_to_nanos(inner.idle);
        let before = inner.keys.len();
        inner
            .keys
            .retain(|_, tat| keep_key(tat.load(Ordering::Acquire), now, idle));
        let after = inner.keys.len();
        if after.saturating_mul(4) < inner.keys.capacity() {
            inner.keys.shrink_to_fit();
        }
        let evicted = before.saturating_sub(after);
        if evicted > 0 {
            tracing::trace!(limiter = %inner.stats.name, evicted, tracked = after, "forgot idle rate-limit keys");
        }
        evicted
    }

    /// Runs [`evict_idle`](Self::evict_idle) every `every` on the current
    /// tokio runtime, until the last clone of the limiter is dropped (or the
    /// task is aborted). Must be called from inside a tokio runtime.
    pub fn spawn_evictor(&self, every: Duration) -> tokio::task::JoinHandle<()>
    where
        K: Send + Sync + 'static,
    {
        let weak = self.downgrade();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match weak.upgrade() {
                    Some(limiter) => {
                        limiter.evict_idle();
                    }
                    None => return,
                }
            }
        })
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.inner.keys.len()
    }

    /// `true` when no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.inner.keys.is_empty()
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.inner.stats.name
    }

    /// Requests a key may make from a full bucket.
    pub fn burst(&self) -> u32 {
        self.inner.bucket.burst
    }

    /// Admitted and refused counts so far, over every key.
    pub fn metrics(&self) -> RateLimitMetrics {
        self.inner.stats.snapshot()
    }

    pub(crate) fn stats(&self) -> &Arc<LimiterStats> {
        &self.inner.stats
    }

    pub(crate) fn downgrade(&self) -> WeakKeyed<K> {
        WeakKeyed(Arc::downgrade(&self.inner))
    }
}

/// Whether a key whose TAT is `tat` stays tracked at `now` (both in
/// nanoseconds since the limiter started). The bucket is full again once the
/// TAT is no later than now (GCRA then admits as from a new bucket), so a key
/// is dropped only `idle` after that: never while its bucket is short of tokens,
/// which would hand a slow key a full bucket early.
fn keep_key(tat: u64, now: u64, idle: u64) -> bool {
    tat != 0 && tat.saturating_add(idle) > now
}

/// A handle that does not keep the limiter alive (for the evictor and metrics).
#[derive(Debug)]
pub(crate) struct WeakKeyed<K: Hash + Eq + Clone>(Weak<Inner<K>>);

impl<K: Hash + Eq + Clone> WeakKeyed<K> {
    pub(crate) fn upgrade(&self) -> Option<KeyedRateLimiter<K>> {
        self.0.upgrade().map(|inner| KeyedRateLimiter { inner })
    }
}

#[cfg(test)]
mod tests {
    use super::keep_key;

    const MIN: u64 = 60_000_000_000;

    #[test]
    fn a_key_whose_bucket_is_still_refilling_is_kept_however_long_it_was_idle() {
        // One token per hour, taken at t = 0: TAT = 1 h.
        let tat = 60 * MIN;
        assert!(keep_key(tat, 3 * MIN, 3 * MIN));
        assert!(keep_key(tat, 59 * MIN, 3 * MIN));
        assert!(keep_key(tat, 63 * MIN - 1, 3 * MIN));
        assert!(
            !keep_key(tat, 63 * MIN, 3 * MIN),
            "full for 3 min: forgotten"
        );
    }

    #[test]
    fn a_never_admitted_key_is_dropped_and_a_late_tat_never_overflows() {
        assert!(!keep_key(0, 1, 3 * MIN));
        assert!(keep_key(u64::MAX, u64::MAX - 1, u64::MAX));
    }
}
