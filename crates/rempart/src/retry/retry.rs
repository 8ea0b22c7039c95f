use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use super::backoff::Backoff;
use super::budget::RetryBudget;
use super::error::RetryError;
use super::jitter::Jitter;
use super::listener::{GiveUp, RetryEvent, RetryListener};
use super::metrics::{Counter, RetryMetrics, Stats};
use super::policy::{Decision, RetryErrors, RetryPolicy, retry_delay};
use crate::ConfigError;
use crate::clock::{Clock, Instant, TokioClock};
use crate::deadline::Deadline;
use crate::rng::{Rng, SplitMix64};

/// Runs an operation, and runs it again after a pause when a policy says its
/// result is worth retrying, within a number of attempts, a time limit and
/// a retry budget. Cheap to clone (clones share counters and budget).
///
/// Only retry work that is safe to repeat (idempotent): a `GET`, a `PUT`, a
/// read, a write keyed by an idempotency key. A payment or a `POST` that
/// creates something may have succeeded on the server even though the client
/// saw an error (a timeout, a reset), so repeating it can do it twice. Each
/// call opts in by going through `Retry`; for non-idempotent work, call the
/// operation directly, or retry only errors that prove the request was never
/// sent ([`http_not_sent`](super::http_not_sent)).
///
/// A [`Deadline`] in scope bounds the retries: a pause that would end at or
/// past it is not taken, and the call gives up at once with the last result
/// ([`RetryError::Exhausted`], listeners hear [`GiveUp::OutOfTime`]); an
/// attempt timeout, when one is set, is cut to the time the deadline leaves.
/// An attempt with no timeout set is not cut: put a
/// [`timeout`](crate::timeout::timeout) inside it, which honours the deadline.
///
/// ```
/// use rempart::retry::{Backoff, Jitter, Retry};
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let retry = Retry::builder()
///     .max_attempts(4)
///     .backoff(Backoff::exponential(Duration::from_secs(1), 2.0, Duration::from_secs(30)).unwrap())
///     .jitter(Jitter::None)
///     .build()
///     .unwrap();
/// let calls = AtomicU32::new(0);
/// let answer = retry
///     .call(|| async {
///         // Fails twice, then works.
///         if calls.fetch_add(1, Ordering::SeqCst) < 2 { Err("busy") } else { Ok(42) }
///     })
///     .await
///     .unwrap();
/// assert_eq!((answer, calls.load(Ordering::SeqCst)), (42, 3));
/// assert_eq!(retry.metrics().successful_after_retry, 1);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Retry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: Arc<str>,
    max_attempts: u32,
    max_elapsed: Option<Duration>,
    attempt_timeout: Option<Duration>,
    overall_timeout: Option<Duration>,
    backoff: Backoff,
    jitter: Jitter,
    budget: Option<Arc<RetryBudget>>,
    clock: Arc<dyn Clock>,
    rng: Mutex<Box<dyn Rng>>,
    stats: Stats,
    listeners: Box<[Arc<dyn RetryListener>]>,
}

/// Builds a [`Retry`]; see [`Retry::builder`].
#[derive(Debug)]
pub struct RetryBuilder {
    name: Arc<str>,
    max_attempts: u32,
    max_elapsed: Option<Duration>,
    attempt_timeout: Option<Duration>,
    overall_timeout: Option<Duration>,
    backoff: Backoff,
    jitter: Jitter,
    budget: Option<Arc<RetryBudget>>,
    clock: Option<Arc<dyn Clock>>,
    rng: Option<Box<dyn Rng>>,
    listeners: Vec<Arc<dyn RetryListener>>,
}

impl RetryBuilder {
    /// Name for metrics and events. Default `"default"`.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }
    /// Attempts in all, the first included (1 = no retry). Default 3.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }
    /// No retry starts once this much time has passed since the first attempt.
    pub fn max_elapsed(mut self, d: Duration) -> Self {
        self.max_elapsed = Some(d);
        self
    }
    /// Each attempt is cancelled after this long (and counts as retryable).
    pub fn attempt_timeout(mut self, d: Duration) -> Self {
        self.attempt_timeout = Some(d);
        self
    }
    /// The whole call, pauses included, is cancelled after this long.
    pub fn overall_timeout(mut self, d: Duration) -> Self {
        self.overall_timeout = Some(d);
        self
    }
    /// Delays between attempts. Default: exponential, 100 ms doubling to 10 s.
    pub fn backoff(mut self, b: Backoff) -> Self {
        self.backoff = b;
        self
    }
    /// Randomisation of each delay. Default [`Jitter::Full`].
    pub fn jitter(mut self, j: Jitter) -> Self {
        self.jitter = j;
        self
    }
    /// Limits retries to a share of the calls (share one budget between the
    /// `Retry`s of one downstream service).
    pub fn budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }
    /// The clock elapsed time is measured on. Default [`TokioClock`] (pauses
    /// sleep on tokio, so tests run under tokio's paused time).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }
    /// Tells `listener` of every retry and of every call that gives up
    /// (for logs and metrics; never on a first-attempt success).
    pub fn listener(mut self, listener: impl RetryListener) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }
    /// The random source for jitter (tests: `SplitMix64::seeded`).
    pub fn rng(mut self, rng: impl Rng) -> Self {
        self.rng = Some(Box::new(rng));
        self
    }
    /// Checks the settings.
    pub fn build(self) -> Result<Retry, ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::new(
                super::POLICY,
                "max_attempts",
                "0 attempts would never run the operation; use 1 (no retry) or more",
            ));
        }
        for (field, d) in [
            ("attempt_timeout", self.attempt_timeout),
            ("overall_timeout", self.overall_timeout),
            ("max_elapsed", self.max_elapsed),
        ] {
            if d == Some(Duration::ZERO) {
                return Err(ConfigError::new(
                    super::POLICY,
                    field,
                    "0s leaves no time for any attempt; give a positive duration or leave it unset",
                ));
            }
        }
        Ok(Retry {
            inner: Arc::new(Inner {
                name: self.name,
                max_attempts: self.max_attempts,
                max_elapsed: self.max_elapsed,
                attempt_timeout: self.attempt_timeout,
                overall_timeout: self.overall_timeout,
                backoff: self.backoff,
                jitter: self.jitter,
                budget: self.budget,
                clock: self.clock.unwrap_or_else(|| Arc::new(TokioClock::new())),
                rng: Mutex::new(
                    self.rng
                        .unwrap_or_else(|| Box::new(SplitMix64::from_entropy())),
                ),
                stats: Stats::default(),
                listeners: self.listeners.into_boxed_slice(),
            }),
        })
    }
}

/// The tighter of two optional limits (`None`: no limit).
fn tighter(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether a pause of `delay` leaves time for another attempt within `left`
/// (the time left before the first limit: the retry's own or the caller's
/// deadline). A pause ending exactly at the limit does not: the attempt after
/// it would have no time at all.
fn pause_fits(delay: Duration, left: Option<Duration>) -> bool {
    left.is_none_or(|left| delay < left)
}

/// One attempt's result, or its timeout.
enum Attempt<T, E> {
    Done(Result<T, E>),
    TimedOut(Duration),
}

impl Retry {
    /// A builder with the defaults: 3 attempts, exponential backoff from
    /// 100 ms doubling to 10 s, full jitter, no timeouts, no budget.
    pub fn builder() -> RetryBuilder {
        RetryBuilder {
            name: Arc::from("default"),
            max_attempts: 3,
            max_elapsed: None,
            attempt_timeout: None,
            overall_timeout: None,
            backoff: Backoff::Exponential {
                initial: Duration::from_millis(100),
                multiplier: 2.0,
                max: Duration::from_secs(10),
            },
            jitter: Jitter::Full,
            budget: None,
            clock: None,
            rng: None,
            listeners: Vec::new(),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Counters so far.
    pub fn metrics(&self) -> RetryMetrics {
        self.inner.stats.snapshot()
    }

    /// Runs `operation`, retrying every `Err` (see [`call_with`](Self::call_with)).
    pub fn call<T, E, F, Fut>(&self, operation: F) -> RetryCall<'_, T, E, RetryErrors, F, Fut>
    where
        T: Send,
        E: Send,
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, E>> + Send,
    {
        self.call_with(RetryErrors, operation)
    }

    /// Runs `operation`; after each attempt `policy` decides whether its
    /// result stands or is retried. A success the policy retries (an HTTP 503
    /// as `Ok`) that is still retryable when attempts run out is returned as
    /// `Ok`, so the caller sees the last answer.
    ///
    /// The returned future runs the first attempt in place; only when a retry
    /// is due (or a timeout is configured) does it move the rest of the loop
    /// into a heap-allocated future, so a first-attempt success costs one
    /// policy decision and one counter and allocates nothing.
    pub fn call_with<T, E, P, F, Fut>(
        &self,
        policy: P,
        operation: F,
    ) -> RetryCall<'_, T, E, P, F, Fut>
    where
        T: Send,
        E: Send,
        P: RetryPolicy<T, E> + Send,
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, E>> + Send,
    {
        RetryCall {
            inner: &self.inner,
            policy: Some(policy),
            operation: Some(operation),
            first: None,
            rest: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Retry::call`] and [`Retry::call_with`].
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct RetryCall<'a, T, E, P, F, Fut> {
        inner: &'a Inner,
        policy: Option<P>,
        operation: Option<F>,
        #[pin]
        first: Option<Fut>,
        rest: Option<Pin<Box<dyn Future<Output = Result<T, RetryError<E>>> + Send + 'a>>>,
    }
}

impl<T, E, P, F, Fut> std::fmt::Debug for RetryCall<'_, T, E, P, F, Fut> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryCall")
            .field("retry", &self.inner.name)
            .field("retrying", &self.rest.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a, T, E, P, F, Fut> Future for RetryCall<'a, T, E, P, F, Fut>
where
    T: Send + 'a,
    E: Send + 'a,
    P: RetryPolicy<T, E> + Send + 'a,
    F: FnMut() -> Fut + Send + 'a,
    Fut: Future<Output = Result<T, E>> + Send + 'a,
{
    type Output = Result<T, RetryError<E>>;

    // Always inlined, as the breaker's `Call`: the caller's loop then keeps
    // the per-thread counter row at hand (BENCHMARKS.md).
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(rest) = this.rest.as_mut() {
            return rest.as_mut().poll(cx);
        }
        let inner: &'a Inner = this.inner;
        if this.first.is_none() {
            let (Some(policy), Some(mut operation)) = (this.policy.take(), this.operation.take())
            else {
                panic!("retry call polled after it completed");
            };
            if inner.timed() {
                // Timeouts need the clock and tokio's timer: the general loop.
                let mut rest = Box::pin(inner.run(policy, operation, None));
                let out = rest.as_mut().poll(cx);
                *this.rest = Some(rest);
                return out;
            }
            if let Some(b) = &inner.budget {
                b.deposit();
            }
            this.first.set(Some(operation()));
            *this.operation = Some(operation);
            *this.policy = Some(policy);
        }
        let first = this
            .first
            .as_mut()
            .as_pin_mut()
            .expect("first attempt in flight");
        let result = std::task::ready!(first.poll(cx));
        this.first.set(None);
        let policy = this
            .policy
            .take()
            .expect("policy kept for the first attempt");
        match policy.decide(result.as_ref()) {
            Decision::Accept | Decision::Stop => {
                this.operation.take();
                Poll::Ready(match result {
                    // The common case, kept small: one counter.
                    Ok(v) => {
                        inner.stats.bump(Counter::SuccessFirst);
                        Ok(v)
                    }
                    Err(e) => {
                        inner.tell(|l| l.on_give_up(&inner.name, 1, GiveUp::NotRetried));
                        inner.finish(Attempt::Done(Err(e)), 1, Counter::NotRetried)
                    }
                })
            }
            decision => {
                let operation = this.operation.take().expect("operation kept for retries");
                let mut rest =
                    Box::pin(inner.run(policy, operation, Some((Attempt::Done(result), decision))));
                let out = rest.as_mut().poll(cx);
                *this.rest = Some(rest);
                out
            }
        }
    }
}

impl Inner {
    fn tell(&self, f: impl Fn(&dyn RetryListener)) {
        for l in self.listeners.iter() {
            f(&**l);
        }
    }

    fn timed(&self) -> bool {
        self.attempt_timeout.is_some()
            || self.overall_timeout.is_some()
            || self.max_elapsed.is_some()
    }

    /// The retry loop, from the start or after a first attempt already made
    /// (its outcome and the policy's decision on it).
    async fn run<T, E, P, F, Fut>(
        &self,
        policy: P,
        mut operation: F,
        mut first: Option<(Attempt<T, E>, Decision)>,
    ) -> Result<T, RetryError<E>>
    where
        P: RetryPolicy<T, E>,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let inner = self;
        let timed = inner.timed();
        let start = if timed {
            inner.clock.now()
        } else {
            Instant::ZERO
        };
        if first.is_none()
            && let Some(b) = &inner.budget
        {
            b.deposit();
        }
        let mut attempt: u32 = 1;
        let mut previous_delay = inner.backoff.initial();
        loop {
            let (outcome, decision) = match first.take() {
                Some(done) => done,
                None => {
                    let outcome = match inner.attempt_limit(start, timed) {
                        None => Attempt::Done(operation().await),
                        Some(limit) if limit.is_zero() => {
                            Attempt::TimedOut(inner.overall_timeout.unwrap_or(limit))
                        }
                        Some(limit) => match tokio::time::timeout(limit, operation()).await {
                            Ok(r) => Attempt::Done(r),
                            Err(_) => Attempt::TimedOut(limit),
                        },
                    };
                    let decision = match &outcome {
                        Attempt::Done(r) => policy.decide(r.as_ref()),
                        Attempt::TimedOut(_) => Decision::Retry,
                    };
                    (outcome, decision)
                }
            };
            // The result stands: a success, a non-retryable error, a stop.
            if matches!(decision, Decision::Accept | Decision::Stop) {
                if attempt > 1 || !matches!(outcome, Attempt::Done(Ok(_))) {
                    inner.tell(|l| l.on_give_up(&inner.name, attempt, GiveUp::NotRetried));
                }
                return inner.finish(outcome, attempt, Counter::NotRetried);
            }
            if attempt >= inner.max_attempts {
                inner.stats.bump(Counter::MaxRetriesReached);
                inner.tell(|l| l.on_give_up(&inner.name, attempt, GiveUp::AttemptsSpent));
                return inner.finish(outcome, attempt, Counter::Exhausted);
            }
            // The jittered backoff is drawn only when the decision uses it, so
            // a Retry-After leaves the random sequence untouched.
            let backoff_delay = if decision == Decision::Retry {
                let base = inner.backoff.delay(attempt);
                let mut rng = inner.rng.lock().unwrap_or_else(|p| p.into_inner());
                inner.jitter.apply(
                    base,
                    previous_delay,
                    inner.backoff.initial(),
                    inner.backoff.max(),
                    &mut **rng,
                )
            } else {
                Duration::ZERO
            };
            let Some(delay) = retry_delay(decision, backoff_delay, inner.backoff.max()) else {
                return inner.finish(outcome, attempt, Counter::NotRetried);
            };
            let own_left = if timed {
                let elapsed = inner.clock.now().saturating_duration_since(start);
                let limit = tighter(inner.max_elapsed, inner.overall_timeout);
                limit.map(|l| l.saturating_sub(elapsed))
            } else {
                None
            };
            let deadline_left = Deadline::current().map(|d| d.remaining());
            if !pause_fits(delay, tighter(own_left, deadline_left)) {
                // No time for the pause and another attempt: this result stands.
                inner.tell(|l| l.on_give_up(&inner.name, attempt, GiveUp::OutOfTime));
                return inner.finish(outcome, attempt, Counter::Exhausted);
            }
            if let Some(b) = &inner.budget
                && !b.withdraw()
            {
                inner.stats.bump(Counter::BudgetRefusals);
                return match outcome {
                    Attempt::Done(Err(error)) => {
                        inner.stats.bump(Counter::Exhausted);
                        Err(RetryError::BudgetExhausted {
                            attempts: attempt,
                            error,
                        })
                    }
                    other => inner.finish(other, attempt, Counter::Exhausted),
                };
            }
            let timed_out = matches!(outcome, Attempt::TimedOut(_));
            drop(outcome);
            inner.stats.record_delay(delay);
            inner.tell(|l| {
                l.on_retry(&RetryEvent {
                    name: &inner.name,
                    attempt,
                    delay,
                    after_timeout: timed_out,
                    retry_after: matches!(decision, Decision::RetryAfter(_)),
                })
            });
            previous_delay = delay;
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

impl Inner {
    /// The time the next attempt may take, or `None` when nothing limits it.
    fn attempt_limit(&self, start: Instant, timed: bool) -> Option<Duration> {
        if !timed {
            return None;
        }
        let left = self
            .overall_timeout
            .map(|t| t.saturating_sub(self.clock.now().saturating_duration_since(start)));
        // A limit the retry sets is cut at the caller's deadline; no limit stays none.
        let own = tighter(self.attempt_timeout, left)?;
        tighter(Some(own), Deadline::current().map(|d| d.remaining()))
    }

    /// The call's result from its last attempt, counted. `failed_as` is the
    /// counter for an error that ends the call.
    fn finish<T, E>(
        &self,
        outcome: Attempt<T, E>,
        attempts: u32,
        failed_as: Counter,
    ) -> Result<T, RetryError<E>> {
        match outcome {
            Attempt::Done(Ok(v)) => {
                self.stats.bump(if attempts == 1 {
                    Counter::SuccessFirst
                } else {
                    Counter::SuccessAfterRetry
                });
                if attempts > 1 {
                    self.stats.add(Counter::Retries, u64::from(attempts - 1));
                }
                Ok(v)
            }
            Attempt::Done(Err(error)) => {
                self.stats.bump(failed_as);
                if attempts > 1 {
                    self.stats.add(Counter::Retries, u64::from(attempts - 1));
                }
                Err(match failed_as {
                    Counter::NotRetried => RetryError::NotRetried { attempts, error },
                    _ => RetryError::Exhausted { attempts, error },
                })
            }
            Attempt::TimedOut(limit) => {
                self.stats.bump(Counter::TimedOut);
                if attempts > 1 {
                    self.stats.add(Counter::Retries, u64::from(attempts - 1));
                }
                Err(RetryError::TimedOut { attempts, limit })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{pause_fits, tighter};
    use std::time::Duration;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_pause_fits_only_if_it_ends_before_the_limit() {
        assert!(pause_fits(10 * S, None), "no limit: every pause fits");
        assert!(pause_fits(S, Some(2 * S)));
        assert!(
            !pause_fits(2 * S, Some(2 * S)),
            "ends at the limit: no time to try"
        );
        assert!(!pause_fits(3 * S, Some(2 * S)));
        assert!(
            !pause_fits(Duration::ZERO, Some(Duration::ZERO)),
            "a passed deadline"
        );
    }

    #[test]
    fn the_tighter_limit_wins_and_none_means_unlimited() {
        assert_eq!(tighter(None, None), None);
        assert_eq!(tighter(Some(S), None), Some(S));
        assert_eq!(tighter(None, Some(S)), Some(S));
        assert_eq!(tighter(Some(3 * S), Some(S)), Some(S));
    }
}
