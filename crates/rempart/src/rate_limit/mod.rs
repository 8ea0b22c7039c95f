//! Rate limiting: how many requests a caller, or every caller together, may
//! make per unit of time.
//!
//! - [`RateLimiter`]: one token bucket (rate + burst) for everyone.
//! - [`KeyedRateLimiter`]: a token bucket per key (client IP, API key, ...),
//!   forgetting idle keys so memory stays bounded.
//! - [`SlidingWindowLimiter`]: at most N per window, no bursts, behind a
//!   [`SlidingWindowStore`] that can live in another process (Redis).
//!
//! The token buckets are `governor`'s GCRA, not a rewrite: governor keeps one
//! 8-byte "theoretical arrival time" per bucket and decides with one
//! compare-and-swap. Its clock is ours ([`GovernorClock`]), so a
//! [`ManualClock`](crate::clock::ManualClock) drives decisions in tests.
//!
//! A refusal is a [`RateLimited`], which writes `429 Too Many Requests`, `Retry-After`
//! and the `X-RateLimit-*` / `RateLimit-*` headers onto an `http::Response`.
//!
//! # Layers
//!
//! [`RateLimitLayer`], [`KeyedRateLimitLayer`] (with a [`KeyExtractor`]) and
//! [`SlidingWindowLayer`] wrap any `tower::Service`; their error is [`RateLimitError`].
//!
//! # Metrics and events
//!
//! Each limiter counts admitted and refused requests per thread
//! ([`RateLimitMetrics`]); [`RateLimitCollector`] exposes them to Prometheus
//! at scrape time. Every refusal emits a `tracing` event at `DEBUG` (refusals
//! come in floods when a client misbehaves, so not higher).

mod clock;
mod config;
mod direct;
mod error;
mod keyed;
mod metrics;
mod prometheus;
mod refusal;
mod service;
mod sliding;
mod sliding_service;

pub use clock::GovernorClock;
pub use direct::{RateLimiter, RateLimiterBuilder};
pub use error::RateLimitError;
pub use keyed::{KeyedRateLimiter, KeyedRateLimiterBuilder};
pub use metrics::RateLimitMetrics;
pub use prometheus::{RateLimitCollector, RateLimitSource};
pub use refusal::RateLimited;
pub use service::{
    KeyExtractor, KeyedRateLimitLayer, KeyedRateLimitService, RateLimitLayer, RateLimitService,
    ResponseFuture,
};
pub use sliding::{
    InMemoryWindowStore, SlidingWindowError, SlidingWindowLimiter, SlidingWindowLimiterBuilder,
    SlidingWindowStore, StoreError, StoreFuture, WindowCounts,
};
pub use sliding_service::{SlidingWindowFuture, SlidingWindowLayer, SlidingWindowService};

pub use crate::ConfigError;

/// How this policy names itself in a [`ConfigError`].
pub(crate) const POLICY: &str = "rate limiter";
