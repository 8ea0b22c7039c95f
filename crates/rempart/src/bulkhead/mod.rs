//! Bulkhead: at most N calls at once into one dependency, so a slow one
//! cannot take every task, connection and byte of memory with it.
//!
//! - [`Bulkhead`]: max concurrent calls + max wait for a slot (seed 002: 5 s,
//!   then "busy"); a refusal is [`BulkheadFull`], which a gateway answers with
//!   503 and a `Retry-After` ([`BulkheadBuilder::retry_after`]).
//! - [`OwnedBulkheadPermit`] and [`PermitBody`]: a slot that travels with a
//!   response body and is released when the body ends or is dropped.
//! - [`Bulkheads`]: one bulkhead per service (seed 001 case 4), built from
//!   `reporting: 3, users: 30, orders: 20, ...`.
//!
//! # Layers
//!
//! [`BulkheadLayer`] wraps any `tower::Service`; its error is
//! [`BulkheadError`]. [`BulkheadLayer::hold_through_body`] keeps the slot
//! until the `http::Response` body ends.
//!
//! # Metrics and events
//!
//! Admitted and refused calls are counted per thread ([`BulkheadMetrics`]);
//! slots in flight are read from the semaphore. [`BulkheadCollector`]
//! exposes them to Prometheus at scrape time. Every refusal emits a `tracing`
//! event at `INFO`.

mod body;
#[allow(clippy::module_inception)]
mod bulkhead;
mod error;
mod prometheus;
mod registry;
mod service;

pub use body::PermitBody;
pub use bulkhead::{
    Bulkhead, BulkheadBuilder, BulkheadMetrics, BulkheadPermit, OwnedBulkheadPermit,
};
pub use error::{BulkheadError, BulkheadFull};
pub use prometheus::BulkheadCollector;
pub use registry::Bulkheads;
pub use service::{
    BulkheadLayer, BulkheadService, HoldThroughBody, OnResponse, Release, ResponseFuture,
};

pub use crate::ConfigError;

/// How this policy names itself in a [`ConfigError`].
pub(crate) const POLICY: &str = "bulkhead";
