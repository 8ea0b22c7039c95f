//! One pipeline of policies for one downstream service, and a registry of
//! them by name.
//!
//! A [`Pipeline`] runs a call through, outer to inner:
//!
//! 1. **retry** (and its budget): an open circuit ends the retries at once;
//! 2. **circuit breaker**: refuses while the service is failing;
//! 3. **rate limit**: refuses calls over the rate (never retried: waiting
//!    for the next token is the caller's choice, not a retry's);
//! 4. **bulkhead**: refuses when the service has too many calls in flight;
//! 5. **timeout**: cancels one attempt that takes too long (inside the
//!    breaker, so a timeout counts as a failure).
//!
//! A [`Deadline`](crate::deadline::Deadline) in scope bounds the whole call:
//! each attempt's time limit is the tighter of the timeout and the time left,
//! and the retry gives up at once, with the last error, rather than pause
//! past it.
//!
//! Fallback and stale cache go outermost, because they need the call's type:
//! wrap the pipeline's call in a [`FallbackChain`](crate::fallback::FallbackChain)
//! or [`StaleCache`](crate::cache::StaleCache) (example below). Any policy
//! can be left out. For another order, compose the tower layers yourself; the
//! default order as a `tower::ServiceBuilder` (outermost first) is:
//!
//! ```text
//! ServiceBuilder::new()
//!     .layer(FallbackLayer::new(chain))
//!     .layer(RetryLayer::new(retry, StopWhenOpen(policy)))
//!     .layer(CircuitBreakerLayer::new(breaker))
//!     .layer(RateLimitLayer::new(limiter))
//!     .layer(BulkheadLayer::new(bulkhead))
//!     .layer(TimeoutLayer::new(limit))
//!     .service(inner)
//! ```
//!
//! A [`PipelineRegistry`] holds one pipeline per service and replaces a
//! pipeline at run time without losing the state of the policies the caller
//! keeps: build the new pipeline with the old one's breaker
//! ([`Pipeline::breaker`]) and the circuit stays as it was.
//!
//! ```
//! use rempart::fallback::FallbackChain;
//! use rempart::pipeline::{Pipeline, PipelineError, PipelineRegistry};
//! use rempart::{CircuitBreaker, retry::Retry};
//! use std::time::Duration;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let reporting = Pipeline::builder("reporting")
//!     .retry(Retry::builder().max_attempts(2).build().unwrap())
//!     .circuit_breaker(CircuitBreaker::builder().name("reporting").build().unwrap())
//!     .timeout(Duration::from_secs(15))
//!     .build();
//! let registry = PipelineRegistry::new();
//! registry.insert(reporting);
//!
//! let chain = FallbackChain::<String, PipelineError<&str>>::new("reporting")
//!     .default_value("no report right now".to_owned());
//! let answer = chain
//!     .call(|| async { registry.get("reporting").unwrap().call(|| async { Err::<String, _>("down") }).await })
//!     .await
//!     .unwrap();
//! assert_eq!(answer.value, "no report right now");
//! # });
//! ```

mod error;
#[allow(clippy::module_inception)] // the module's main type
mod pipeline;
mod registry;

pub use error::PipelineError;
pub use pipeline::{Pipeline, PipelineBuilder};
pub use registry::PipelineRegistry;
