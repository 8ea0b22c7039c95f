use std::fmt;
use std::time::Duration;

use super::CircuitState;
use crate::clock::Instant;

/// Why the circuit changed state.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum TransitionReason {
    /// `failure_threshold` consecutive failures in Closed.
    ConsecutiveFailures(u32),
    /// The failure rate (percent) in the window reached the threshold.
    FailureRate(f64),
    /// The slow-call rate (percent) in the window reached the threshold.
    SlowCallRate(f64),
    /// A trial call failed (or was slow) while HalfOpen.
    TrialFailed,
    /// The open period elapsed.
    OpenTimeoutElapsed,
    /// `success_threshold` trial calls succeeded.
    TrialsSucceeded,
    /// `trip`, `reset`, `force_open`, `disable` or `metrics_only` was called.
    Manual,
}

/// A change of state, as listeners see it.
#[derive(Debug, Clone, PartialEq)]
pub struct StateChange {
    /// The breaker's name.
    pub name: std::sync::Arc<str>,
    /// The state before.
    pub from: CircuitState,
    /// The state after.
    pub to: CircuitState,
    /// What caused it.
    pub reason: TransitionReason,
    /// When, on the breaker's clock.
    pub at: Instant,
    /// For a move to Open: how long it will stay open.
    pub open_for: Option<Duration>,
}

/// What became of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// It ran and succeeded.
    Success,
    /// It ran and failed.
    Failure,
    /// It ran, and the classifier said its result should not count either way.
    Ignored,
    /// Its permit was dropped before an outcome was recorded (the caller gave up).
    Cancelled,
    /// The breaker refused it; it never ran.
    Rejected,
}

/// One call, as listeners see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallEvent {
    /// The outcome.
    pub outcome: CallOutcome,
    /// `true` when the call took at least the slow-call duration (only measured when
    /// a slow-call rule is set).
    pub slow: bool,
    /// How long it ran, when the breaker timed it.
    pub duration: Option<Duration>,
}

/// Hooks for logging and metrics. Both methods have empty defaults.
///
/// `on_call` runs on the caller's thread for every call, so keep it cheap and
/// free of contended writes. `on_state_change` runs after the change is made,
/// outside the breaker's lock: a listener may call back into the breaker.
///
/// ```
/// use rempart::CircuitBreaker;
/// use rempart::circuit_breaker::{CircuitListener, StateChange};
/// use std::sync::{Arc, Mutex};
///
/// #[derive(Debug, Default, Clone)]
/// struct Log(Arc<Mutex<Vec<String>>>);
/// impl CircuitListener for Log {
///     fn on_state_change(&self, c: &StateChange) {
///         self.0.lock().unwrap().push(format!("{} -> {}", c.from, c.to));
///     }
/// }
///
/// let log = Log::default();
/// let cb = CircuitBreaker::builder().listener(log.clone()).build().unwrap();
/// cb.trip();
/// cb.reset();
/// assert_eq!(*log.0.lock().unwrap(), ["Closed -> Open", "Open -> Closed"]);
/// ```
pub trait CircuitListener: Send + Sync + fmt::Debug + 'static {
    /// The circuit changed state.
    fn on_state_change(&self, change: &StateChange) {
        let _ = change;
    }

    /// A call finished, was refused, or was abandoned.
    fn on_call(&self, event: &CallEvent) {
        let _ = event;
    }
}

/// Logs every state change through `tracing`: `warn` when a circuit opens,
/// `info` for the other changes, with the breaker's name, both states, the
/// reason and the open period as fields.
///
/// ```
/// use rempart::CircuitBreaker;
/// use rempart::circuit_breaker::TracingListener;
///
/// let cb = CircuitBreaker::builder().name("orders").listener(TracingListener).build().unwrap();
/// cb.trip(); // logs: WARN circuit opened breaker=orders from=Closed to=Open ...
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingListener;

impl CircuitListener for TracingListener {
    fn on_state_change(&self, c: &StateChange) {
        if c.to == CircuitState::Open {
            tracing::warn!(breaker = %c.name, from = %c.from, to = %c.to, reason = ?c.reason, open_for = ?c.open_for, "circuit opened");
        } else {
            tracing::info!(breaker = %c.name, from = %c.from, to = %c.to, reason = ?c.reason, "circuit state changed");
        }
    }
}
