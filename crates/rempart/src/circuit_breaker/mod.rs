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
//! The rules are written out in one file, `state.rs`; the fast path that
//! applies them is in `breaker.rs`.
//!
//! # Why the fast path is built this way, and where it takes a lock
//!
//! Every request goes through its breaker, so the breaker must cost close to
//! nothing while the dependency is healthy, on every core at once. Admitting a
//! call while Closed therefore reads one shared word and takes no lock, in
//! every configuration. What happens to the outcome depends on the rules set:
//!
//! - **Consecutive-failure rule only** (the seed's, and the default): lock-free.
//!   A success writes only counters owned by the calling thread (plus one
//!   compare-and-swap when it ends a failure run); a failure extends the run
//!   with a compare-and-swap on the shared word. The lock is taken only by the
//!   failure that reaches `failure_threshold`, to trip the circuit.
//! - **A failure-rate or slow-call rule** (a sliding window): every outcome
//!   recorded while Closed, success or failure, takes the breaker's mutex to
//!   record it in the window. Fine for a gateway, where a call costs
//!   microseconds; measured in BENCHMARKS.md.
//!
//! In every mode, HalfOpen trials, Open expiring, state changes and manual
//! commands take the lock; refusals while Open do not.
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

/// The largest `failure_threshold` a breaker counts to: the run of
/// consecutive failures lives in 16 bits of the state word the fast path
/// reads. [`CircuitBreakerBuilder::build`] refuses more;
/// [`CircuitBreaker::new`] takes more as this.
pub const MAX_FAILURE_THRESHOLD: u32 = u16::MAX as u32;

/// How this policy names itself in a [`ConfigError`].
pub(crate) const POLICY: &str = "circuit breaker";
