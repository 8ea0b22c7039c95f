//! Adaptive concurrency: a concurrency limit that moves with observed
//! latency, after Netflix's concurrency-limits and Envoy's adaptive
//! concurrency filter. Beyond the seeds.
//!
//! A fixed bulkhead size is a guess; the right number of calls in flight
//! depends on how fast the dependency is right now. An [`AdaptiveLimiter`]
//! refuses calls over its current limit and, after each call, lets a
//! [`LimitAlgorithm`] move the limit:
//!
//! - [`Aimd`]: +1 on success while the limit is in use, ×0.9 on overload.
//! - [`Gradient2`]: shrinks in proportion when latency rises over its long-term average.
//! - [`Vegas`]: estimates the queue at the dependency from the no-load RTT.
//!
//! Every algorithm keeps its limit within its own `min..=max`. The current
//! limit is [`AdaptiveLimiter::limit`], exported by [`AdaptiveCollector`] as
//! `adaptive_concurrency_limit{service}`.
//!
//! # Layers
//!
//! [`AdaptiveLayer`] wraps any `tower::Service`; its error is [`AdaptiveError`].

mod algorithm;
mod error;
mod limiter;
mod prometheus;
mod service;

pub use algorithm::{
    Aimd, AimdBuilder, Gradient2, Gradient2Builder, LimitAlgorithm, Sample, Vegas, VegasBuilder,
};
pub use error::{AdaptiveError, LimitReached};
pub use limiter::{AdaptiveLimiter, AdaptiveLimiterBuilder, AdaptiveMetrics, AdaptivePermit};
pub use prometheus::AdaptiveCollector;
pub use service::{AdaptiveLayer, AdaptiveService, ResponseFuture};

pub use crate::ConfigError;

/// How this policy names itself in a [`ConfigError`].
pub(crate) const POLICY: &str = "adaptive concurrency";
