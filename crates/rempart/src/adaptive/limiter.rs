use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use super::algorithm::{LimitAlgorithm, Sample};
use super::error::LimitReached;
use crate::clock::{Clock, Instant, MonotonicClock};
use crate::per_thread::PerThreadCounters;

const ADMITTED: usize = 0;
const REFUSED: usize = 1;

/// A concurrency limit that moves with observed latency: a bulkhead whose
/// size a [`LimitAlgorithm`] ([`Aimd`](super::Aimd), [`Gradient2`](super::Gradient2),
/// [`Vegas`](super::Vegas)) adjusts after every call. A call over the limit is
/// refused at once with [`LimitReached`] (no queue: a queue is what the
/// limit exists to keep short).
///
/// Cheap to clone: clones share the limit.
///
/// ```
/// use rempart::adaptive::{AdaptiveLimiter, Aimd};
/// use rempart::clock::ManualClock;
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = AdaptiveLimiter::builder(Aimd::builder().initial_limit(2).build().unwrap())
///     .name("orders")
///     .clock(clock.clone())
///     .build();
/// let a = limiter.try_acquire().unwrap();
/// let b = limiter.try_acquire().unwrap();
/// assert!(limiter.try_acquire().is_err(), "2 in flight: the limit");
/// clock.advance(Duration::from_millis(20));
/// a.success(); // the limit was in use and the call went well: + 1
/// assert_eq!(limiter.limit(), 3);
/// b.dropped(); // overload: × 0.9, rounded down
/// assert_eq!(limiter.limit(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct AdaptiveLimiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: Arc<str>,
    limit: AtomicU32,
    in_flight: AtomicU32,
    algorithm: Mutex<Box<dyn LimitAlgorithm>>,
    clock: Arc<dyn Clock>,
    counters: PerThreadCounters<2>,
}

/// Builds an [`AdaptiveLimiter`]; see [`AdaptiveLimiter::builder`].
#[derive(Debug)]
pub struct AdaptiveLimiterBuilder {
    name: Arc<str>,
    algorithm: Box<dyn LimitAlgorithm>,
    clock: Arc<dyn Clock>,
}

impl AdaptiveLimiterBuilder {
    /// The limiter's name (the guarded service), used in refusals, metrics and events.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The clock call durations are measured on (default: [`MonotonicClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The limiter (the algorithm was validated by its own builder).
    pub fn build(self) -> AdaptiveLimiter {
        AdaptiveLimiter {
            inner: Arc::new(Inner {
                name: self.name,
                limit: AtomicU32::new(self.algorithm.initial_limit().max(1)),
                in_flight: AtomicU32::new(0),
                algorithm: Mutex::new(self.algorithm),
                clock: self.clock,
                counters: PerThreadCounters::default(),
            }),
        }
    }
}

/// A call's slot in an [`AdaptiveLimiter`]. Say how the call went with
/// [`success`](Self::success) or [`dropped`](Self::dropped); dropping the
/// permit unrecorded (or [`ignore`](Self::ignore)) frees the slot and teaches
/// the algorithm nothing.
#[derive(Debug)]
#[must_use = "record the call's outcome, or the limit cannot adapt"]
pub struct AdaptivePermit {
    limiter: AdaptiveLimiter,
    start: Instant,
    in_flight: u32,
}

/// An adaptive limiter's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdaptiveMetrics {
    /// Calls admitted.
    pub admitted: u64,
    /// Calls refused with [`LimitReached`].
    pub refused: u64,
    /// Calls in flight now.
    pub in_flight: u32,
    /// The current limit.
    pub limit: u32,
}

impl AdaptiveLimiter {
    /// A builder around `algorithm`.
    pub fn builder(algorithm: impl LimitAlgorithm + 'static) -> AdaptiveLimiterBuilder {
        AdaptiveLimiterBuilder {
            name: Arc::from("adaptive"),
            algorithm: Box::new(algorithm),
            clock: Arc::new(MonotonicClock::new()),
        }
    }

    /// Takes a slot if fewer than the current limit are in flight.
    pub fn try_acquire(&self) -> Result<AdaptivePermit, LimitReached> {
        let inner = &*self.inner;
        let mut current = inner.in_flight.load(Ordering::Relaxed);
        loop {
            let limit = inner.limit.load(Ordering::Relaxed);
            if current >= limit {
                inner.counters.bump(REFUSED);
                let refused = LimitReached {
                    name: Arc::clone(&inner.name),
                    limit,
                };
                tracing::info!(limiter = %refused.name, limit, "adaptive concurrency limit reached: call refused");
                return Err(refused);
            }
            match inner.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        inner.counters.bump(ADMITTED);
        Ok(AdaptivePermit {
            limiter: self.clone(),
            start: inner.clock.now(),
            in_flight: current + 1,
        })
    }

    /// Runs `operation` in a slot; `Ok` is a success sample, `Err` an
    /// overload (dropped) sample. Use the permit API when errors should not
    /// count as overload (a 404, say).
    pub async fn call<F, Fut, T, E>(&self, operation: F) -> Result<Result<T, E>, LimitReached>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let permit = self.try_acquire()?;
        let result = operation().await;
        match &result {
            Ok(_) => permit.success(),
            Err(_) => permit.dropped(),
        }
        Ok(result)
    }

    /// The current limit (the `adaptive_concurrency_limit` gauge).
    pub fn limit(&self) -> u32 {
        self.inner.limit.load(Ordering::Relaxed)
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> u32 {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Admitted and refused counts, calls in flight and the limit.
    pub fn metrics(&self) -> AdaptiveMetrics {
        let [admitted, refused] = self.inner.counters.sum();
        AdaptiveMetrics {
            admitted,
            refused,
            in_flight: self.in_flight(),
            limit: self.limit(),
        }
    }

    fn record(&self, permit: &AdaptivePermit, dropped: bool) {
        let inner = &*self.inner;
        let sample = Sample {
            rtt: inner.clock.now().saturating_duration_since(permit.start),
            in_flight: permit.in_flight,
            dropped,
        };
        let mut algorithm = inner.algorithm.lock().unwrap_or_else(|p| p.into_inner());
        let before = inner.limit.load(Ordering::Relaxed);
        let after = algorithm.update(sample).max(1);
        inner.limit.store(after, Ordering::Relaxed);
        drop(algorithm);
        if after != before {
            tracing::debug!(limiter = %inner.name, from = before, to = after, rtt = ?sample.rtt, dropped, "adaptive concurrency limit changed");
        }
    }
}

impl AdaptivePermit {
    /// The call went well; its latency is a sample.
    pub fn success(self) {
        self.limiter.record(&self, false);
    }

    /// The call signalled overload (timed out, was shed): the limit should come down.
    pub fn dropped(self) {
        self.limiter.record(&self, true);
    }

    /// The call says nothing about load (a client error, say): free the slot only.
    pub fn ignore(self) {}
}

impl Drop for AdaptivePermit {
    fn drop(&mut self) {
        self.limiter.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
