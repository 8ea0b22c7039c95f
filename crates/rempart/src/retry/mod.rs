//! Retry: run an operation again after a pause when its failure looks passing.
//!
//! - [`Backoff`]: how the pause grows (constant, linear, exponential with a cap).
//! - [`Jitter`]: how each pause is randomised (none, full, equal, decorrelated,
//!   proportional), from an injectable, seedable [`Rng`](crate::rng::Rng).
//! - [`RetryPolicy`] and [`Decision`]: what is retried. [`http_decision`] is
//!   seed 003's HTTP classification; [`parse_retry_after`] reads `Retry-After`;
//!   [`http_retry_delay`] is the whole per-attempt decision (retry after this
//!   pause, or stop) for a caller with its own loop, such as a proxy;
//!   [`StopWhenOpen`] ends the loop when a circuit breaker refuses.
//! - [`RetryBudget`]: retries limited to a share of the traffic.
//! - [`Retry`]: the loop, as a plain async call; [`RetryLayer`] for tower.
//! - [`RetryMetrics`] and [`RetryCollector`]: seed 003's retry metrics.
//!
//! Where it goes: outside the circuit breaker (retry → breaker → call), so an
//! open circuit ends the retries at once ([`StopWhenOpen`]), and with a
//! timeout inside each attempt ([`RetryBuilder::attempt_timeout`]).

mod backoff;
mod budget;
mod error;
mod http;
mod jitter;
mod layer;
mod listener;
mod metrics;
mod policy;
mod prometheus;
#[allow(clippy::module_inception)] // the module's main type, as tower names `retry::Retry`
mod retry;

pub use backoff::Backoff;
pub use budget::RetryBudget;
pub use error::RetryError;
pub use http::parse_retry_after;
pub use jitter::Jitter;
pub use layer::{RetryLayer, RetryService};
pub use listener::{GiveUp, RetryEvent, RetryListener, TracingRetryListener};
pub use metrics::{DELAY_BUCKETS, RetryMetrics};
pub use policy::{
    Decision, HttpOutcome, RetryErrors, RetryPolicy, StopWhenOpen, http_decision, http_not_sent,
    http_retry_delay, retry_delay,
};
pub use prometheus::RetryCollector;
pub use retry::{Retry, RetryBuilder, RetryCall};

pub use crate::ConfigError;

/// How this policy names itself in a [`ConfigError`].
pub(crate) const POLICY: &str = "retry";
