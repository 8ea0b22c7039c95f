//! Circuit breaker: stop calling a dependency that keeps failing, then try it
//! again, a few calls at a time, after a pause.
//!
//! ```text
//!            failure_threshold consecutive failures,
//!            or a failure/slow-call rate over the window
//!   Closed ───────────────────────────────────────────► Open ◄──────┐
//!     ▲                                                   │         │ any trial
//!     │ success_threshold                     open_timeout │         │ fails
//!     │ trial successes                           elapsed  ▼         │
//!     └────────────────────────────────────────────── HalfOpen ──────┘
//!                          (at most half_open_max_calls trials in flight)
//! ```
//!
//! The rules are written out in one file, `state.rs`; the lock-free fast path
//! that applies them is in `breaker.rs`.
//!
//! # Why the fast path is built this way
//!
//! Every request goes through its breaker, so the breaker must cost close to
//! nothing while the dependency is healthy, on every core at once. A Closed
//! call therefore reads one shared word and writes only to counters owned by
//! the calling thread: two threads sharing a breaker never write to the same
//! cache line on the success path. Failures, state changes and HalfOpen trials
//! are rare, and take a lock.
//!
//! # Layers
//!
//! [`CircuitBreakerLayer`] wraps any `tower::Service`; its error is
//! [`CircuitError`] around the inner service's error.

mod breaker;
mod config;
mod error;
mod future;
mod layer;
mod listener;
mod metrics;
mod service;
mod state;
mod window;

pub use breaker::{CircuitBreaker, Outcome, OwnedPermit, Permit};
pub use config::{CircuitBreakerBuilder, CircuitBreakerConfig, OpenBackoff, SlidingWindow};
pub use error::{CircuitError, Rejected};
pub use future::Call;
pub use layer::CircuitBreakerLayer;
pub use listener::{
    CallEvent, CallOutcome, CircuitListener, StateChange, TracingListener, TransitionReason,
};
pub use metrics::CircuitMetrics;
pub use service::{CircuitBreakerService, Classify, ErrorsAreFailures, ResponseFuture};
pub use state::CircuitMode;

use std::fmt;

/// Where a circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls run; failures are counted.
    Closed,
    /// Calls are refused without running.
    Open,
    /// A few trial calls run to test whether the dependency has recovered.
    HalfOpen,
}

impl CircuitState {
    /// The value of the `circuit_breaker_state` gauge (seed 001 case 4):
    /// 0 closed, 1 open, 2 half-open.
    pub fn as_gauge(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
        }
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CircuitState::Closed => "Closed",
            CircuitState::Open => "Open",
            CircuitState::HalfOpen => "HalfOpen",
        })
    }
}

pub use crate::ConfigError;

/// How this policy names itself in a [`ConfigError`].
pub(crate) const POLICY: &str = "circuit breaker";
