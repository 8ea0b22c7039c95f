//! # rempart
//!
//! Resilience policies that keep a service standing when what it depends on
//! fails. Each policy is a plain async API and a `tower` layer.
//!
//! - [`circuit_breaker`]: stop calling a failing dependency, probe it, recover.
//! - [`retry`]: run again after a pause (backoff, jitter, budget, HTTP rules).
//! - [`timeout`] and [`deadline`]: limits on time that cancel, and travel with the work.
//! - [`hedge`]: a second copy of a slow call; the first success wins.
//! - [`pipeline`]: retry, breaker, rate limit, bulkhead and timeout composed for one service, and a registry of them.
//! - [`rate_limit`]: token buckets (direct and keyed, on governor) and a sliding window.
//! - [`bulkhead`]: max concurrent calls per service, with a bounded wait for a slot.
//! - [`adaptive`]: a concurrency limit that follows latency (AIMD, Gradient2, Vegas).
//! - [`fallback`]: a fallback chain (cached, default, degraded) whose result says whether it was degraded.
//! - [`cache`]: a stale-if-error cache on moka, served only when the call fails.
//! - [`chaos`]: fault, latency and outcome injection at a seeded rate.
//! - [`health`]: liveness and readiness from named, concurrent, time-boxed checks.
//! - [`shutdown`]: stop accepting, drain in-flight work, run hooks in order.
//! - [`clock`]: the time every policy reads, with a manual clock for tests
//!   and a tokio clock that follows tokio's paused time.
//! - [`rng`]: the seedable random source behind jitter.
//! - [`prometheus`]: Prometheus exposition, read at scrape time.
//!
//! ```
//! use rempart::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let cb = CircuitBreaker::new(CircuitBreakerConfig::default());
//! let answer = cb.call(|| async { Ok::<_, std::io::Error>(42) }).await.unwrap();
//! assert_eq!(answer, 42);
//! assert_eq!(cb.state(), CircuitState::Closed);
//! # });
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod adaptive;
pub mod bulkhead;
pub mod cache;
pub mod chaos;
pub mod circuit_breaker;
pub mod clock;
mod config_error;
pub mod deadline;
pub mod fallback;
pub mod health;
pub mod hedge;
mod per_thread;
pub mod pipeline;
pub mod prometheus;
pub mod rate_limit;
pub mod retry;
pub mod rng;
pub mod shutdown;
pub mod timeout;

pub use circuit_breaker::{
    CircuitBreaker, CircuitBreakerConfig, CircuitError, CircuitMetrics, CircuitState,
};
pub use config_error::ConfigError;

// The README's Rust examples are compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
