use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::error::PipelineError;
use crate::CircuitBreaker;
use crate::bulkhead::Bulkhead;
use crate::deadline::Deadline;
use crate::rate_limit::RateLimiter;
use crate::retry::{Decision, Retry, RetryError};
use crate::timeout::Timeout;

/// Retry, circuit breaker, rate limit, bulkhead and timeout for one
/// service, in that order (outer to inner); see the [module docs](super).
/// Cheap to clone: clones share every policy.
///
/// ```
/// use rempart::pipeline::{Pipeline, PipelineError};
/// use rempart::bulkhead::Bulkhead;
/// use rempart::{CircuitBreaker, retry::Retry};
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let orders = Pipeline::builder("orders")
///     .retry(Retry::builder().max_attempts(3).build().unwrap())
///     .circuit_breaker(CircuitBreaker::builder().name("orders").failure_threshold(2).build().unwrap())
///     .bulkhead(Bulkhead::builder().name("orders").max_concurrent(20).build().unwrap())
///     .timeout(Duration::from_secs(3))
///     .build();
/// let err = orders.call(|| async { Err::<(), _>("connection refused") }).await.unwrap_err();
/// // Two failures opened the circuit; the retry stopped at the refusal.
/// assert!(matches!(err, PipelineError::CircuitOpen));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: Arc<str>,
    retry: Option<Retry>,
    breaker: Option<CircuitBreaker>,
    rate_limit: Option<RateLimiter>,
    bulkhead: Option<Bulkhead>,
    timeout: Option<Duration>,
}

/// Builds a [`Pipeline`]; every policy is optional.
#[derive(Debug)]
pub struct PipelineBuilder {
    inner: Inner,
}

impl PipelineBuilder {
    /// Retries (outermost). Refusals by the breaker, rate limit or bulkhead
    /// are never retried; failures and timeouts are.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.inner.retry = Some(retry);
        self
    }
    /// The circuit breaker (a clone of one already in use keeps its state).
    pub fn circuit_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.inner.breaker = Some(breaker);
        self
    }
    /// A rate limit on calls to the service.
    pub fn rate_limit(mut self, limiter: RateLimiter) -> Self {
        self.inner.rate_limit = Some(limiter);
        self
    }
    /// A bulkhead.
    pub fn bulkhead(mut self, bulkhead: Bulkhead) -> Self {
        self.inner.bulkhead = Some(bulkhead);
        self
    }
    /// A limit on each attempt (its timer is armed only if the attempt is
    /// not ready at once; see [`Timeout`]). A [`Deadline`] in scope cuts it
    /// to the time left, and limits each attempt even with no timeout set.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.inner.timeout = Some(limit);
        self
    }
    /// The pipeline.
    pub fn build(self) -> Pipeline {
        Pipeline {
            inner: Arc::new(self.inner),
        }
    }
}

impl Pipeline {
    /// A builder for the pipeline of service `name`, with no policy yet.
    pub fn builder(name: impl Into<Arc<str>>) -> PipelineBuilder {
        PipelineBuilder {
            inner: Inner {
                name: name.into(),
                retry: None,
                breaker: None,
                rate_limit: None,
                bulkhead: None,
                timeout: None,
            },
        }
    }

    /// Its service's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    /// Its retry, if any.
    pub fn retry(&self) -> Option<&Retry> {
        self.inner.retry.as_ref()
    }
    /// Its circuit breaker, if any (pass it to the next pipeline's builder to
    /// keep the circuit's state across a reconfiguration).
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.inner.breaker.as_ref()
    }
    /// Its rate limiter, if any.
    pub fn rate_limit(&self) -> Option<&RateLimiter> {
        self.inner.rate_limit.as_ref()
    }
    /// Its bulkhead, if any.
    pub fn bulkhead(&self) -> Option<&Bulkhead> {
        self.inner.bulkhead.as_ref()
    }
    /// Its per-attempt time limit, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.inner.timeout
    }

    /// Runs `operation` through every policy. `Err` counts as a failure
    /// for the breaker and is retried.
    pub async fn call<T, E, F, Fut>(&self, operation: F) -> Result<T, PipelineError<E>>
    where
        T: Send,
        E: Send,
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Result<T, E>> + Send,
    {
        let inner = &*self.inner;
        let Some(retry) = &inner.retry else {
            return inner.attempt(&operation).await;
        };
        let policy = |r: Result<&T, &PipelineError<E>>| match r {
            Ok(_) => Decision::Accept,
            Err(PipelineError::Failed(_) | PipelineError::TimedOut(_)) => Decision::Retry,
            // Refusals: another attempt now would be refused too.
            Err(_) => Decision::Stop,
        };
        match retry.call_with(policy, || inner.attempt(&operation)).await {
            Ok(v) => Ok(v),
            Err(RetryError::Exhausted { error, .. } | RetryError::NotRetried { error, .. }) => {
                Err(error)
            }
            Err(RetryError::BudgetExhausted { error, .. }) => {
                Err(PipelineError::RetryBudgetExhausted(Box::new(error)))
            }
            Err(RetryError::TimedOut { limit, .. }) => {
                Err(PipelineError::TimedOut(crate::timeout::Elapsed { limit }))
            }
        }
    }
}

impl Inner {
    /// One attempt: breaker, rate limit, bulkhead, timeout, operation.
    #[inline]
    async fn attempt<T, E, F, Fut>(&self, operation: &F) -> Result<T, PipelineError<E>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        // A refusal further in drops the permit unrecorded: the breaker learns
        // nothing from the rate limit's or the bulkhead's decisions.
        let permit = match &self.breaker {
            Some(b) => Some(b.try_acquire().map_err(|_| PipelineError::CircuitOpen)?),
            None => None,
        };
        if let Some(limiter) = &self.rate_limit {
            limiter.check().map_err(PipelineError::RateLimited)?;
        }
        let _slot = match &self.bulkhead {
            Some(b) => Some(b.acquire().await.map_err(PipelineError::BulkheadFull)?),
            None => None,
        };
        // The attempt's limit is the tighter of its own timeout and the
        // caller's deadline: an attempt never outlives the work it is for.
        let limit = match (self.timeout, Deadline::current()) {
            (Some(limit), Some(d)) => Some(limit.min(d.remaining())),
            (Some(limit), None) => Some(limit),
            (None, d) => d.map(|d| d.remaining()),
        };
        let result = match limit {
            Some(limit) => match Timeout::new(limit, operation()).await {
                Ok(r) => r.map_err(PipelineError::Failed),
                Err(elapsed) => Err(PipelineError::TimedOut(elapsed)),
            },
            None => operation().await.map_err(PipelineError::Failed),
        };
        if let Some(p) = permit {
            if result.is_ok() {
                p.success();
            } else {
                p.failure();
            }
        }
        result
    }
}
