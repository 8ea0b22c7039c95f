//! Fallback: when the primary call fails (or a breaker, bulkhead or rate
//! limiter refuses it), try a cached value, then a default, then a degraded
//! response, in the order declared, and say which one answered.
//!
//! The result is a [`Fallback<T>`]: the value plus a [`Degraded`] mode, so a
//! gateway can set `X-Degraded-Mode: true` ([`mark_degraded`]) whenever the
//! answer did not come fresh from the dependency.
//!
//! ```
//! use rempart::fallback::{Degraded, FallbackChain};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let chain = FallbackChain::<Vec<&str>, std::io::Error>::new("movies")
//!     .cached(|_err| async { None }) // nothing cached yet
//!     .default_value(vec!["default"]);
//! let out = chain
//!     .call(|| async { Err(std::io::Error::other("down")) })
//!     .await
//!     .unwrap();
//! assert_eq!(out.value, vec!["default"]);
//! assert_eq!(out.mode, Degraded::Default);
//! assert_eq!(chain.metrics().default, 1);
//! # });
//! ```

mod layer;
mod prometheus;

pub use layer::{FallbackLayer, FallbackService};
pub use prometheus::FallbackCollector;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::per_thread::PerThreadCounters;

/// A boxed, sendable future, as the chain's steps return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Degraded {
    /// From the dependency, just now.
    Fresh,
    /// From the cache, stored `age` ago.
    Stale {
        /// Time since the value was stored.
        age: Duration,
    },
    /// The configured default value.
    Default,
    /// A degraded response built from the error.
    Degraded,
}

impl Degraded {
    /// `true` for every mode but [`Degraded::Fresh`].
    pub fn is_degraded(&self) -> bool {
        !matches!(self, Degraded::Fresh)
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback<T> {
    /// The answer.
    pub value: T,
    /// Fresh, or which fallback produced it.
    pub mode: Degraded,
}

impl<T> Fallback<T> {
    /// A value straight from the dependency.
    pub fn fresh(value: T) -> Self {
        Fallback {
            value,
            mode: Degraded::Fresh,
        }
    }

    /// `true` unless the value is fresh.
    pub fn is_degraded(&self) -> bool {
        self.mode.is_degraded()
    }

    /// The value, dropping where it came from.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<B> Fallback<http::Response<B>> {
    /// The response, with `X-Degraded-Mode: true` set if it was degraded.
    pub fn into_marked_response(self) -> http::Response<B> {
        let mut resp = self.value;
        mark_degraded(&mut resp, self.mode);
        resp
    }
}

/// The header a degraded answer carries (seed 001, case 4).
pub const DEGRADED_HEADER: &str = "x-degraded-mode";

/// Sets `X-Degraded-Mode: true` on `resp` when `mode` is degraded; leaves a
/// fresh response untouched.
pub fn mark_degraded<B>(resp: &mut http::Response<B>, mode: Degraded) {
    if mode.is_degraded() {
        resp.headers_mut().insert(
            http::HeaderName::from_static(DEGRADED_HEADER),
            http::HeaderValue::from_static("true"),
        );
    }
}

/// Which fallback answered, as counted in `fallback_activations_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackKind {
    /// A cached (stale) value.
    Cache,
    /// The default value.
    Default,
    /// A degraded response.
    Degraded,
}

impl FallbackKind {
    /// The label value: `cache`, `default` or `degraded`.
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackKind::Cache => "cache",
            FallbackKind::Default => "default",
            FallbackKind::Degraded => "degraded",
        }
    }
}

/// Activations so far, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FallbackMetrics {
    /// Answers served from the cache.
    pub cache: u64,
    /// Answers served by the default value.
    pub default: u64,
    /// Answers served by the degraded response.
    pub degraded: u64,
    /// Failures the chain tried to answer but no step did (errors the
    /// [`when`](FallbackChain::when) predicate keeps are not counted).
    pub unanswered: u64,
}

type CacheStep<T, E> = Arc<dyn Fn(&E) -> BoxFuture<'static, Option<(T, Duration)>> + Send + Sync>;
type DegradedStep<T, E> = Arc<dyn Fn(&E) -> T + Send + Sync>;
type Predicate<E> = Arc<dyn Fn(&E) -> bool + Send + Sync>;

enum Step<T, E> {
    Cache(CacheStep<T, E>),
    Default(T),
    Degraded(DegradedStep<T, E>),
}

impl<T: Clone, E> Clone for Step<T, E> {
    fn clone(&self) -> Self {
        match self {
            Step::Cache(f) => Step::Cache(f.clone()),
            Step::Default(v) => Step::Default(v.clone()),
            Step::Degraded(f) => Step::Degraded(f.clone()),
        }
    }
}

struct Shared<T, E> {
    name: String,
    steps: Vec<Step<T, E>>,
    predicate: Option<Predicate<E>>,
    counts: PerThreadCounters<4>,
}

/// Fallbacks tried in the order they were added when the primary fails.
///
/// Cheap to clone: clones share the steps and the counters. Any error falls
/// back unless [`FallbackChain::when`] narrows it.
pub struct FallbackChain<T, E> {
    shared: Arc<Shared<T, E>>,
}

impl<T, E> Clone for FallbackChain<T, E> {
    fn clone(&self) -> Self {
        FallbackChain {
            shared: self.shared.clone(),
        }
    }
}

impl<T, E> fmt::Debug for FallbackChain<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<&str> = self
            .shared
            .steps
            .iter()
            .map(|s| match s {
                Step::Cache(_) => "cache",
                Step::Default(_) => "default",
                Step::Degraded(_) => "degraded",
            })
            .collect();
        f.debug_struct("FallbackChain")
            .field("name", &self.shared.name)
            .field("steps", &kinds)
            .finish()
    }
}

impl<T, E> FallbackChain<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// An empty chain for the service `name` (the metrics' `service` label).
    pub fn new(name: impl Into<String>) -> Self {
        FallbackChain {
            shared: Arc::new(Shared {
                name: name.into(),
                steps: Vec::new(),
                predicate: None,
                counts: PerThreadCounters::default(),
            }),
        }
    }

    fn push(self, step: Step<T, E>) -> Self {
        let mut shared = unwrap_or_rebuild(self.shared);
        shared.steps.push(step);
        FallbackChain {
            shared: Arc::new(shared),
        }
    }

    /// Adds a cache lookup: `lookup(&err)` yields the cached value and its age,
    /// or `None` to go on to the next step.
    pub fn cached<F, Fut>(self, lookup: F) -> Self
    where
        F: Fn(&E) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<(T, Duration)>> + Send + 'static,
    {
        self.push(Step::Cache(Arc::new(move |e| Box::pin(lookup(e)))))
    }

    /// Adds a default value, cloned for every answer.
    pub fn default_value(self, value: T) -> Self {
        self.push(Step::Default(value))
    }

    /// Adds a degraded response built from the error (always answers).
    pub fn degraded(self, respond: impl Fn(&E) -> T + Send + Sync + 'static) -> Self {
        self.push(Step::Degraded(Arc::new(respond)))
    }

    /// Falls back only on errors for which `predicate` is `true`; the others
    /// are returned as they are.
    pub fn when(self, predicate: impl Fn(&E) -> bool + Send + Sync + 'static) -> Self {
        let mut shared = unwrap_or_rebuild(self.shared);
        shared.predicate = Some(Arc::new(predicate));
        FallbackChain {
            shared: Arc::new(shared),
        }
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Activations so far, summed over threads.
    pub fn metrics(&self) -> FallbackMetrics {
        let [cache, default, degraded, unanswered] = self.shared.counts.sum();
        FallbackMetrics {
            cache,
            default,
            degraded,
            unanswered,
        }
    }

    /// Runs `primary`; on an error the predicate accepts, tries each fallback
    /// in order. Returns the original error if none answers.
    pub async fn call<F, Fut>(&self, primary: F) -> Result<Fallback<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        match primary().await {
            Ok(v) => Ok(Fallback::fresh(v)),
            Err(e) => self.recover(e).await,
        }
    }

    /// Tries the fallbacks for `err` (the primary already failed).
    pub async fn recover(&self, err: E) -> Result<Fallback<T>, E> {
        let shared = &self.shared;
        if let Some(p) = &shared.predicate
            && !p(&err)
        {
            return Err(err);
        }
        for step in &shared.steps {
            let answer = match step {
                Step::Cache(lookup) => lookup(&err)
                    .await
                    .map(|(value, age)| (value, Degraded::Stale { age }, FallbackKind::Cache)),
                Step::Default(v) => Some((v.clone(), Degraded::Default, FallbackKind::Default)),
                Step::Degraded(f) => Some((f(&err), Degraded::Degraded, FallbackKind::Degraded)),
            };
            if let Some((value, mode, kind)) = answer {
                shared.counts.bump(kind as usize);
                tracing::warn!(service = %shared.name, kind = kind.as_str(), "fallback activated");
                return Ok(Fallback { value, mode });
            }
        }
        shared.counts.bump(3);
        Err(err)
    }
}

// Builders run before the chain is shared; if a clone already exists, copy the
// steps rather than mutate what the clone sees.
fn unwrap_or_rebuild<T: Clone, E>(shared: Arc<Shared<T, E>>) -> Shared<T, E> {
    Arc::try_unwrap(shared).unwrap_or_else(|s| Shared {
        name: s.name.clone(),
        steps: s.steps.clone(),
        predicate: s.predicate.clone(),
        counts: PerThreadCounters::default(),
    })
}
