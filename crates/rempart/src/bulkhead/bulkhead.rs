use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};

use super::error::BulkheadFull;
use crate::ConfigError;
use crate::clock::{Clock, TokioClock};
use crate::per_thread::PerThreadCounters;

const ADMITTED: usize = 0;
const REFUSED: usize = 1;

/// At most `max_concurrent` calls at once into what it guards; a call waits
/// up to `max_wait` for a slot, then is refused with [`BulkheadFull`] (seed
/// 002: 5 s, then "busy"). A `tokio::sync::Semaphore` underneath; the wait is
/// a `tokio::time` timeout, so tests under tokio's paused time run instantly.
///
/// Cheap to clone: clones share the slots.
///
/// ```
/// use rempart::bulkhead::Bulkhead;
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let optimizer = Bulkhead::builder()
///     .name("optimizer")
///     .max_concurrent(10)
///     .max_wait(Duration::from_secs(5))
///     .build()
///     .unwrap();
/// let answer = optimizer.call(|| async { 42 }).await.unwrap();
/// assert_eq!(answer, 42);
///
/// let held: Vec<_> = (0..10).map(|_| optimizer.try_acquire_owned().unwrap()).collect();
/// let refused = optimizer.call(|| async { 0 }).await.unwrap_err();
/// assert_eq!(refused.waited, Duration::from_secs(5));
/// # drop(held);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: Arc<str>,
    slots: Arc<Semaphore>,
    max_concurrent: u32,
    max_wait: Duration,
    retry_after: Duration,
    clock: Arc<dyn Clock>,
    counters: PerThreadCounters<2>,
}

/// Builds a [`Bulkhead`]; see [`Bulkhead::builder`].
#[derive(Debug, Clone)]
pub struct BulkheadBuilder {
    name: Arc<str>,
    max_concurrent: Option<u32>,
    max_wait: Duration,
    retry_after: Option<Duration>,
    clock: Arc<dyn Clock>,
}

impl BulkheadBuilder {
    /// The bulkhead's name (the guarded service), used in refusals, metrics (`service` label) and events.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Calls allowed at once (required).
    pub fn max_concurrent(mut self, n: u32) -> Self {
        self.max_concurrent = Some(n);
        self
    }

    /// How long a call may wait for a slot before it is refused (default 0: refuse at once).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// The `Retry-After` a refusal carries ([`BulkheadFull::retry_after`],
    /// sent by [`BulkheadFull::to_response`] in whole seconds, rounded up,
    /// at least 1). Default: `max_wait` rounded up to whole seconds, at least
    /// 1 s: a refused call saw no slot come free for all of `max_wait`, so
    /// coming back sooner than that would most likely be refused again, and
    /// a floor of 1 s keeps refused clients from retrying in a tight loop.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// The clock that measures [`BulkheadFull::waited`] (default:
    /// [`TokioClock`], the clock the wait's timer runs on, so it follows
    /// tokio's paused time).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The bulkhead, or the setting that cannot work.
    pub fn build(self) -> Result<Bulkhead, ConfigError> {
        let max = self.max_concurrent.ok_or_else(|| {
            ConfigError::new(
                super::POLICY,
                "max_concurrent",
                "not set; call .max_concurrent(10) for at most 10 calls at once",
            )
        })?;
        if max == 0 {
            return Err(ConfigError::new(
                super::POLICY,
                "max_concurrent",
                "0 slots would refuse every call; use at least 1",
            ));
        }
        if max as usize > Semaphore::MAX_PERMITS {
            return Err(ConfigError::new(
                super::POLICY,
                "max_concurrent",
                format!(
                    "{max} is over tokio's limit of {} permits",
                    Semaphore::MAX_PERMITS
                ),
            ));
        }
        Ok(Bulkhead {
            inner: Arc::new(Inner {
                name: self.name,
                slots: Arc::new(Semaphore::new(max as usize)),
                max_concurrent: max,
                max_wait: self.max_wait,
                retry_after: self.retry_after.unwrap_or_else(|| {
                    Duration::from_secs(super::error::retry_after_secs(self.max_wait))
                }),
                clock: self.clock,
                counters: PerThreadCounters::default(),
            }),
        })
    }
}

/// A slot in a [`Bulkhead`], borrowed from it; the slot is free again when
/// the permit is dropped.
#[derive(Debug)]
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct BulkheadPermit<'a> {
    _slot: SemaphorePermit<'a>,
}

/// A slot in a [`Bulkhead`] that owns its share of it, so it can travel:
/// into a spawned task, or with a response body
/// ([`PermitBody`](super::PermitBody)) so a streamed body keeps its slot until it ends.
#[derive(Debug)]
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct OwnedBulkheadPermit {
    _slot: OwnedSemaphorePermit,
}

/// A bulkhead's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BulkheadMetrics {
    /// Calls given a slot.
    pub admitted: u64,
    /// Calls refused with [`BulkheadFull`].
    pub refused: u64,
    /// Slots taken right now.
    pub in_flight: u32,
    /// The number of slots.
    pub max_concurrent: u32,
}

impl Bulkhead {
    /// A builder; `max_concurrent` is required.
    pub fn builder() -> BulkheadBuilder {
        BulkheadBuilder {
            name: Arc::from("bulkhead"),
            max_concurrent: None,
            max_wait: Duration::ZERO,
            retry_after: None,
            clock: Arc::new(TokioClock::new()),
        }
    }

    /// Takes a slot if one is free now, without waiting.
    #[inline]
    pub fn try_acquire(&self) -> Result<BulkheadPermit<'_>, BulkheadFull> {
        match self.inner.slots.try_acquire() {
            Ok(slot) => {
                self.inner.counters.bump(ADMITTED);
                Ok(BulkheadPermit { _slot: slot })
            }
            Err(_) => Err(self.refuse(std::time::Duration::ZERO)),
        }
    }

    /// Takes a slot if one is free now, as an owned permit.
    #[inline]
    pub fn try_acquire_owned(&self) -> Result<OwnedBulkheadPermit, BulkheadFull> {
        match Arc::clone(&self.inner.slots).try_acquire_owned() {
            Ok(slot) => {
                self.inner.counters.bump(ADMITTED);
                Ok(OwnedBulkheadPermit { _slot: slot })
            }
            Err(_) => Err(self.refuse(std::time::Duration::ZERO)),
        }
    }

    /// Takes a slot, waiting up to `max_wait` for one.
    pub async fn acquire(&self) -> Result<BulkheadPermit<'_>, BulkheadFull> {
        if let Ok(slot) = self.inner.slots.try_acquire() {
            self.inner.counters.bump(ADMITTED);
            return Ok(BulkheadPermit { _slot: slot });
        }
        let slot = self.wait_for(self.inner.slots.acquire()).await?;
        Ok(BulkheadPermit { _slot: slot })
    }

    /// Takes a slot as an owned permit, waiting up to `max_wait` for one.
    pub async fn acquire_owned(&self) -> Result<OwnedBulkheadPermit, BulkheadFull> {
        if let Ok(slot) = Arc::clone(&self.inner.slots).try_acquire_owned() {
            self.inner.counters.bump(ADMITTED);
            return Ok(OwnedBulkheadPermit { _slot: slot });
        }
        let slot = self
            .wait_for(Arc::clone(&self.inner.slots).acquire_owned())
            .await?;
        Ok(OwnedBulkheadPermit { _slot: slot })
    }

    /// A slot now, counted if taken; `None` (and nothing counted) if none is free.
    #[inline]
    pub(crate) fn take_owned(&self) -> Option<OwnedBulkheadPermit> {
        let slot = Arc::clone(&self.inner.slots).try_acquire_owned().ok()?;
        self.inner.counters.bump(ADMITTED);
        Some(OwnedBulkheadPermit { _slot: slot })
    }

    /// Waits up to `max_wait` for a slot, as an owned permit (the service's slow path).
    pub(crate) async fn wait_owned(self) -> Result<OwnedBulkheadPermit, BulkheadFull> {
        let slot = self
            .wait_for(Arc::clone(&self.inner.slots).acquire_owned())
            .await?;
        Ok(OwnedBulkheadPermit { _slot: slot })
    }

    /// The slow path: every slot is taken; wait for one, at most `max_wait`.
    async fn wait_for<P, E>(
        &self,
        acquire: impl Future<Output = Result<P, E>>,
    ) -> Result<P, BulkheadFull> {
        if self.inner.max_wait.is_zero() {
            return Err(self.refuse(Duration::ZERO));
        }
        let start = self.inner.clock.now();
        match tokio::time::timeout(self.inner.max_wait, acquire).await {
            Ok(Ok(slot)) => {
                self.inner.counters.bump(ADMITTED);
                Ok(slot)
            }
            // Timed out (the semaphore is never closed, so it cannot fail otherwise).
            _ => Err(self.refuse(self.inner.clock.now().saturating_duration_since(start))),
        }
    }

    #[cold]
    #[inline(never)]
    fn refuse(&self, waited: Duration) -> BulkheadFull {
        self.inner.counters.bump(REFUSED);
        let full = BulkheadFull {
            name: Arc::clone(&self.inner.name),
            max_concurrent: self.inner.max_concurrent,
            waited,
            retry_after: self.inner.retry_after,
        };
        tracing::info!(bulkhead = %full.name, max_concurrent = full.max_concurrent, waited = ?full.waited, "bulkhead full: call refused");
        full
    }

    /// Runs `operation` in a slot (waiting up to `max_wait` for one); the slot
    /// is released when the operation's future finishes or is dropped.
    pub async fn call<F, Fut>(&self, operation: F) -> Result<Fut::Output, BulkheadFull>
    where
        F: FnOnce() -> Fut,
        Fut: Future,
    {
        let _permit = self.acquire().await?;
        Ok(operation().await)
    }

    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The number of slots.
    pub fn max_concurrent(&self) -> u32 {
        self.inner.max_concurrent
    }

    /// How long a call may wait for a slot.
    pub fn max_wait(&self) -> Duration {
        self.inner.max_wait
    }

    /// The `Retry-After` its refusals carry (see [`BulkheadBuilder::retry_after`]).
    pub fn retry_after(&self) -> Duration {
        self.inner.retry_after
    }

    /// Slots taken right now.
    pub fn in_flight(&self) -> u32 {
        let free = u32::try_from(self.inner.slots.available_permits()).unwrap_or(u32::MAX);
        self.inner.max_concurrent.saturating_sub(free)
    }

    /// Admitted and refused counts, and the slots taken now.
    pub fn metrics(&self) -> BulkheadMetrics {
        let [admitted, refused] = self.inner.counters.sum();
        BulkheadMetrics {
            admitted,
            refused,
            in_flight: self.in_flight(),
            max_concurrent: self.inner.max_concurrent,
        }
    }
}
