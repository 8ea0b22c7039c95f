//! Hedged requests: when the first attempt is slow, send a second one and
//! take whichever answers well first (tower's `hedge`, Polly v8's hedging).
//!
//! Why: tail latency. If 1 % of calls hit a slow replica (a GC pause, a cold
//! cache), waiting for the p95 before sending a second copy cuts the p99 to
//! about the p95 at the price of a few percent more requests. The second copy
//! is budgeted like a retry ([`RetryBudget`]), so a slow-down everywhere does
//! not double the load, and the loser is dropped (cancelled) as soon as one
//! attempt succeeds. Hedge only idempotent, side-effect-free calls (reads):
//! both copies may reach the server.
//!
//! ```
//! use rempart::hedge::{Hedge, HedgeDelay};
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! let hedge = Hedge::builder().delay(HedgeDelay::Fixed(Duration::from_millis(50))).build().unwrap();
//! let n = AtomicU32::new(0);
//! let answer = hedge.call(|| async {
//!     // The first copy is stuck; the hedge, sent after 50 ms, answers in 10 ms.
//!     let slow = n.fetch_add(1, Ordering::SeqCst) == 0;
//!     tokio::time::sleep(Duration::from_millis(if slow { 5_000 } else { 10 })).await;
//!     Ok::<_, ()>(if slow { "first" } else { "hedge" })
//! }).await;
//! assert_eq!(answer, Ok("hedge"));
//! assert_eq!(hedge.metrics().hedges_won, 1);
//! # });
//! ```

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::ConfigError;
use crate::per_thread::PerThreadCounters;
use crate::retry::RetryBudget;

const POLICY: &str = "hedge";

/// When the second copy is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeDelay {
    /// After this long.
    Fixed(Duration),
    /// When the first copy is slower than this percentile (0 to 100) of the
    /// last [`LATENCY_WINDOW`] calls' latencies; `until_known` is used until
    /// `min_samples` latencies are known.
    Percentile {
        /// The percentile, e.g. 95.0.
        percentile: f64,
        /// Latencies needed before the percentile is trusted.
        min_samples: usize,
        /// The delay used before then.
        until_known: Duration,
    },
}

/// Latencies kept for [`HedgeDelay::Percentile`].
pub const LATENCY_WINDOW: usize = 512;

/// Sends a second copy of a slow call; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Hedge {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    delay: HedgeDelay,
    budget: Option<Arc<RetryBudget>>,
    latencies: Mutex<Vec<Duration>>,
    next: Mutex<usize>,
    // calls, hedges sent, hedges won, hedges refused by the budget
    counters: PerThreadCounters<4>,
}

/// Builds a [`Hedge`].
#[derive(Debug)]
pub struct HedgeBuilder {
    delay: HedgeDelay,
    budget: Option<Arc<RetryBudget>>,
}

impl HedgeBuilder {
    /// When to send the second copy. Default: the p95 of recent calls once 20
    /// are known, 100 ms before.
    pub fn delay(mut self, delay: HedgeDelay) -> Self {
        self.delay = delay;
        self
    }
    /// Hedges spend this budget (share it with the service's retries).
    pub fn budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }
    /// Checks the settings.
    pub fn build(self) -> Result<Hedge, ConfigError> {
        if let HedgeDelay::Percentile { percentile, .. } = self.delay
            && !(0.0..=100.0).contains(&percentile)
        {
            return Err(ConfigError::new(
                POLICY,
                "percentile",
                format!("{percentile} is outside 0 to 100; 95.0 hedges the slowest 5 %"),
            ));
        }
        Ok(Hedge {
            inner: Arc::new(Inner {
                delay: self.delay,
                budget: self.budget,
                latencies: Mutex::new(Vec::with_capacity(LATENCY_WINDOW)),
                next: Mutex::new(0),
                counters: PerThreadCounters::default(),
            }),
        })
    }
}

/// A [`Hedge`]'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HedgeMetrics {
    /// Calls made.
    pub calls: u64,
    /// Second copies sent.
    pub hedges_sent: u64,
    /// Calls answered by the second copy.
    pub hedges_won: u64,
    /// Second copies the budget refused.
    pub budget_refusals: u64,
}

impl Hedge {
    /// A builder.
    pub fn builder() -> HedgeBuilder {
        HedgeBuilder {
            delay: HedgeDelay::Percentile {
                percentile: 95.0,
                min_samples: 20,
                until_known: Duration::from_millis(100),
            },
            budget: None,
        }
    }

    /// Counters so far.
    pub fn metrics(&self) -> HedgeMetrics {
        let [calls, hedges_sent, hedges_won, budget_refusals] = self.inner.counters.sum();
        HedgeMetrics {
            calls,
            hedges_sent,
            hedges_won,
            budget_refusals,
        }
    }

    /// The delay after which a second copy would be sent now.
    pub fn current_delay(&self) -> Duration {
        match self.inner.delay {
            HedgeDelay::Fixed(d) => d,
            HedgeDelay::Percentile {
                percentile,
                min_samples,
                until_known,
            } => {
                let mut v = self
                    .inner
                    .latencies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                if v.len() < min_samples.max(1) {
                    return until_known;
                }
                v.sort_unstable();
                let rank =
                    ((percentile / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len());
                v[rank - 1]
            }
        }
    }

    fn record(&self, took: Duration) {
        if !matches!(self.inner.delay, HedgeDelay::Percentile { .. }) {
            return;
        }
        let mut v = self
            .inner
            .latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut next = self.inner.next.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < LATENCY_WINDOW {
            v.push(took);
        } else {
            v[*next] = took;
        }
        *next = (*next + 1) % LATENCY_WINDOW;
    }

    /// Runs `operation`; if it has not answered after the hedge delay (and the
    /// budget allows), runs it a second time and returns the first success.
    /// If one copy fails, the other is awaited; the loser is dropped.
    pub async fn call<T, E, F, Fut>(&self, mut operation: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let c = &self.inner.counters;
        c.bump(0);
        if let Some(b) = &self.inner.budget {
            b.deposit();
        }
        let start = tokio::time::Instant::now();
        let mut first = pin!(operation());
        let delay = self.current_delay();
        tokio::select! {
            biased;
            r = &mut first => {
                self.record(start.elapsed());
                return r;
            }
            () = tokio::time::sleep(delay) => {}
        }
        if self.inner.budget.as_ref().is_some_and(|b| !b.withdraw()) {
            c.bump(3);
            let r = first.await;
            self.record(start.elapsed());
            return r;
        }
        c.bump(1);
        let mut second = pin!(operation());
        let (mut first_done, mut second_done) = (None, None);
        loop {
            tokio::select! {
                r = &mut first, if first_done.is_none() => {
                    if r.is_ok() || second_done.is_some() {
                        self.record(start.elapsed());
                        return r;
                    }
                    first_done = Some(());
                }
                r = &mut second, if second_done.is_none() => {
                    if r.is_ok() {
                        c.bump(2);
                        self.record(start.elapsed());
                        return r;
                    }
                    if first_done.is_some() {
                        return r;
                    }
                    second_done = Some(());
                }
            }
        }
    }
}

/// Hedges requests through a `tower::Service`: a second copy of a request
/// that is slow (see [`Hedge`]). The request must be `Clone`; the inner
/// service is cloned for each copy. Only for idempotent requests.
///
/// ```
/// use rempart::hedge::{Hedge, HedgeDelay, HedgeLayer};
/// use std::time::Duration;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let hedge = Hedge::builder().delay(HedgeDelay::Fixed(Duration::from_millis(10))).build().unwrap();
/// let mut svc = ServiceBuilder::new()
///     .layer(HedgeLayer::new(hedge.clone()))
///     .service_fn(|q: &'static str| async move { Ok::<_, ()>(q.len()) });
/// assert_eq!(svc.ready().await.unwrap().call("users").await, Ok(5));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct HedgeLayer {
    hedge: Hedge,
}

impl HedgeLayer {
    /// A layer hedging with `hedge`.
    pub fn new(hedge: Hedge) -> Self {
        HedgeLayer { hedge }
    }
}

impl<S> tower_layer::Layer<S> for HedgeLayer {
    type Service = HedgeService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HedgeService {
            inner,
            hedge: self.hedge.clone(),
        }
    }
}

/// The service of [`HedgeLayer`].
#[derive(Debug, Clone)]
pub struct HedgeService<S> {
    inner: S,
    hedge: Hedge,
}

impl<S, Req> tower_service::Service<Req> for HedgeService<S>
where
    S: tower_service::Service<Req> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Send,
    Req: Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let (hedge, spare) = (self.hedge.clone(), self.inner.clone());
        Box::pin(async move {
            let ready = std::sync::Mutex::new(Some(ready));
            hedge
                .call(|| {
                    let req = req.clone();
                    // The first copy uses the service made ready; the hedge a fresh clone.
                    let taken = ready.lock().unwrap_or_else(|p| p.into_inner()).take();
                    let mut svc = spare.clone();
                    async move {
                        match taken {
                            Some(mut s) => s.call(req).await,
                            None => {
                                std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
                                svc.call(req).await
                            }
                        }
                    }
                })
                .await
        })
    }
}
