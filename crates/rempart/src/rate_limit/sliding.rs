use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use super::metrics::{LimiterStats, RateLimitMetrics};
use super::refusal::RateLimited;
use crate::ConfigError;
use crate::clock::{Clock, MonotonicClock, duration_to_nanos};

/// The future a [`SlidingWindowStore`] returns: boxed, so the trait can be a
/// trait object (`Arc<dyn SlidingWindowStore>`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A window's count and the one before it, as a store returns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowCounts {
    /// Hits counted in the previous window (`window - 1`).
    pub previous: u64,
    /// Hits counted in the current window, the new one included.
    pub current: u64,
}

/// Where a [`SlidingWindowLimiter`] keeps its counters: one counter per
/// (key, window number). [`InMemoryWindowStore`] is the in-process one; a
/// store on Redis (`INCR` + `EXPIRE` on `key:window`, `GET key:window-1`)
/// shares one limit between instances.
///
/// Across instances the windows must line up, so such a limiter needs a clock
/// whose origin is the same everywhere (the Unix epoch, say).
pub trait SlidingWindowStore: Send + Sync + fmt::Debug {
    /// Counts one hit for `key` in window `window`, and returns that window's
    /// count (this hit included) with the previous window's. The store may
    /// forget a counter once `keep_for` has passed since it was last written.
    fn hit<'a>(
        &'a self,
        key: &'a str,
        window: u64,
        keep_for: Duration,
    ) -> StoreFuture<'a, WindowCounts>;

    /// Takes back one hit counted by [`hit`](Self::hit) in `window`: the
    /// limiter refused that request, and a refused request uses no quota.
    fn undo<'a>(&'a self, key: &'a str, window: u64) -> StoreFuture<'a, ()>;
}

/// A store that could not answer (a network error, say), with its cause.
/// Cheap to clone (the cause is shared); two are equal when they share a cause.
#[derive(Debug, Clone)]
pub struct StoreError(Arc<dyn Error + Send + Sync>);

impl StoreError {
    /// Wraps the store's own error.
    pub fn new(cause: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        StoreError(Arc::from(cause.into()))
    }
}

impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for StoreError {}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sliding-window store failed: {}", self.0)
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.0)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    window: u64,
    current: u64,
    previous: u64,
}

/// The in-process [`SlidingWindowStore`]: two counters per key in a `DashMap`.
#[derive(Debug, Default)]
pub struct InMemoryWindowStore {
    slots: DashMap<Box<str>, Slot>,
}

impl InMemoryWindowStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets keys with no hit in window `window - 1` or later: they no longer
    /// weigh on any decision from `window` on. Returns how many went.
    pub fn forget_before(&self, window: u64) -> usize {
        let before = self.slots.len();
        self.slots
            .retain(|_, s| s.window.saturating_add(1) >= window);
        before - self.slots.len()
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// `true` when no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

impl Slot {
    /// Moves the slot forward to `window`, keeping what still counts.
    fn roll(&mut self, window: u64) {
        if window == self.window.wrapping_add(1) {
            self.previous = self.current;
            self.current = 0;
        } else if window > self.window {
            self.previous = 0;
            self.current = 0;
        } else {
            return; // same window, or a late hit from another instance: count it here
        }
        self.window = window;
    }
}

impl SlidingWindowStore for InMemoryWindowStore {
    fn hit<'a>(
        &'a self,
        key: &'a str,
        window: u64,
        _keep_for: Duration,
    ) -> StoreFuture<'a, WindowCounts> {
        let counts = {
            let mut slot = match self.slots.get_mut(key) {
                Some(slot) => slot,
                None => self.slots.entry(Box::from(key)).or_insert(Slot {
                    window,
                    ..Slot::default()
                }),
            };
            slot.roll(window);
            slot.current += 1;
            WindowCounts {
                previous: slot.previous,
                current: slot.current,
            }
        };
        Box::pin(std::future::ready(Ok(counts)))
    }

    fn undo<'a>(&'a self, key: &'a str, window: u64) -> StoreFuture<'a, ()> {
        if let Some(mut slot) = self.slots.get_mut(key)
            && slot.window == window
        {
            slot.current = slot.current.saturating_sub(1);
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Why a [`SlidingWindowLimiter`] did not admit a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlidingWindowError {
    /// The window is full.
    Limited(RateLimited),
    /// The store could not be asked; the request was neither counted nor judged.
    Store(StoreError),
}

impl fmt::Display for SlidingWindowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlidingWindowError::Limited(r) => fmt::Display::fmt(r, f),
            SlidingWindowError::Store(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl Error for SlidingWindowError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            SlidingWindowError::Limited(r) => Some(r),
            SlidingWindowError::Store(e) => Some(e),
        }
    }
}

/// At most `limit` requests per key in any `window`-long stretch, with no
/// burst at window edges (seed 002: "Sliding Window interdit les bursts").
///
/// Algorithm: the *sliding window counter* (two fixed windows, weighted).
/// Time is cut into fixed windows; a request at fraction `f` of window `w`
/// sees `count(w − 1) × (1 − f) + count(w)` requests in the last `window`,
/// assuming the previous window's requests were spread evenly. That is two
/// counters per key instead of a log of every request (the seed's sorted
/// set), one store round trip per request, and no doubling at the edge where
/// a plain fixed window would admit `limit` at its end and `limit` again at
/// the next one's start. A refused request is taken back and uses no quota.
///
/// ```
/// use rempart::clock::ManualClock;
/// use rempart::rate_limit::{InMemoryWindowStore, SlidingWindowLimiter};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let clock = ManualClock::new();
/// let limiter = SlidingWindowLimiter::builder()
///     .limit(100, Duration::from_secs(60))
///     .store(Arc::new(InMemoryWindowStore::new()))
///     .clock(clock.clone())
///     .build()
///     .unwrap();
/// clock.advance(Duration::from_millis(59_900));
/// for _ in 0..100 {
///     limiter.check("10.0.0.1").await.unwrap();
/// }
/// clock.advance(Duration::from_millis(100)); // a new fixed window starts
/// let refused = limiter.check("10.0.0.1").await.unwrap_err();
/// assert!(matches!(refused, rempart::rate_limit::SlidingWindowError::Limited(_)));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct SlidingWindowLimiter {
    inner: Arc<SlidingInner>,
}

#[derive(Debug)]
struct SlidingInner {
    store: Arc<dyn SlidingWindowStore>,
    limit: u64,
    window: u64,
    clock: Arc<dyn Clock>,
    stats: Arc<LimiterStats>,
}

/// Builds a [`SlidingWindowLimiter`]; see [`SlidingWindowLimiter::builder`].
#[derive(Debug, Clone)]
pub struct SlidingWindowLimiterBuilder {
    name: Arc<str>,
    limit: Option<(u64, Duration)>,
    store: Option<Arc<dyn SlidingWindowStore>>,
    clock: Arc<dyn Clock>,
}

impl SlidingWindowLimiterBuilder {
    /// The limiter's name, used in refusals, metrics (`limiter` label) and events.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// At most `max` requests per key in any `window` (required).
    pub fn limit(mut self, max: u64, window: Duration) -> Self {
        self.limit = Some((max, window));
        self
    }

    /// Where counters live (default: a new [`InMemoryWindowStore`]).
    pub fn store(mut self, store: Arc<dyn SlidingWindowStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The clock that places requests in windows (default: [`MonotonicClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The limiter, or the first setting that cannot work.
    pub fn build(self) -> Result<SlidingWindowLimiter, ConfigError> {
        let (limit, window) = self.limit.ok_or_else(|| {
            ConfigError::new(
                super::POLICY,
                "limit",
                "no limit was set; call .limit(100, Duration::from_secs(60)) for 100 per minute",
            )
        })?;
        if limit == 0 {
            return Err(ConfigError::new(
                super::POLICY,
                "limit",
                "a limit of 0 admits nothing; use at least 1",
            ));
        }
        let window_nanos = duration_to_nanos(window);
        if window_nanos == 0 {
            return Err(ConfigError::new(
                super::POLICY,
                "limit",
                "the window is zero; use a window such as Duration::from_secs(60)",
            ));
        }
        Ok(SlidingWindowLimiter {
            inner: Arc::new(SlidingInner {
                store: self
                    .store
                    .unwrap_or_else(|| Arc::new(InMemoryWindowStore::new())),
                limit,
                window: window_nanos,
                clock: self.clock,
                stats: Arc::new(LimiterStats::new(self.name)),
            }),
        })
    }
}

impl SlidingWindowLimiter {
    /// A builder; `limit` is required.
    pub fn builder() -> SlidingWindowLimiterBuilder {
        SlidingWindowLimiterBuilder {
            name: Arc::from("sliding_window"),
            limit: None,
            store: None,
            clock: Arc::new(MonotonicClock::new()),
        }
    }

    /// Counts one request for `key`; on success, returns how many more the
    /// key may make right now.
    pub async fn check(&self, key: &str) -> Result<u64, SlidingWindowError> {
        let inner = &*self.inner;
        let now = inner.clock.now().as_nanos();
        let (w, elapsed) = (now / inner.window, now % inner.window);
        let counts = inner
            .store
            .hit(key, w, Duration::from_nanos(inner.window.saturating_mul(2)))
            .await
            .map_err(SlidingWindowError::Store)?;
        let (width, limit) = (u128::from(inner.window), u128::from(inner.limit));
        let weighted = |prev: u64, cur: u64, elapsed: u64| {
            u128::from(prev) * (width - u128::from(elapsed)) + u128::from(cur) * width
        };
        let seen = weighted(counts.previous, counts.current, elapsed);
        if seen <= limit * width {
            inner.stats.allowed();
            let left = (limit * width - seen) / width;
            return Ok(u64::try_from(left).unwrap_or(u64::MAX));
        }
        inner
            .store
            .undo(key, w)
            .await
            .map_err(SlidingWindowError::Store)?;
        inner.stats.refused();
        let refused = self.refusal(counts.previous, counts.current.saturating_sub(1), elapsed);
        tracing::debug!(limiter = %refused.limiter, key, retry_after = ?refused.retry_after, "sliding window refused a request");
        Err(SlidingWindowError::Limited(refused))
    }

    /// The refusal at `elapsed` into the window with `prev` and `cur` counted.
    fn refusal(&self, prev: u64, cur: u64, elapsed: u64) -> RateLimited {
        let inner = &*self.inner;
        let (width, limit) = (inner.window, inner.limit);
        let w = u128::from(width);
        // Earliest moment in this window at which one more fits:
        // prev × (W − e) + (cur + 1) × W ≤ limit × W.
        let in_this_window = (cur < limit && prev > 0).then(|| {
            let slack = u128::from(limit - cur - 1) * w / u128::from(prev);
            width - u64::try_from(slack.min(w)).unwrap_or(width)
        });
        let retry_at = match in_this_window {
            Some(e) if e < width => e.max(elapsed),
            // Else in the next window, where `cur` becomes the previous count.
            _ if cur < limit => width,
            _ => {
                let slack = u128::from(limit - 1) * w / u128::from(cur);
                width.saturating_add(width - u64::try_from(slack).unwrap_or(width))
            }
        };
        let reset = if cur > 0 {
            width.saturating_mul(2)
        } else {
            width
        };
        RateLimited {
            limiter: inner.stats.name.clone(),
            limit,
            remaining: 0,
            window: Duration::from_nanos(width),
            reset: Duration::from_nanos(reset - elapsed),
            retry_after: Duration::from_nanos(retry_at - elapsed),
        }
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.inner.stats.name
    }

    /// Admitted and refused counts so far, over every key.
    pub fn metrics(&self) -> RateLimitMetrics {
        self.inner.stats.snapshot()
    }

    pub(crate) fn stats(&self) -> &Arc<LimiterStats> {
        &self.inner.stats
    }
}
