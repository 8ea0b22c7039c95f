//! The breaker's decisions, in one place, as plain code over plain data.
//!
//! Read this file top to bottom to know when a circuit opens, half-opens and
//! closes. Nothing here reads a clock or touches an atomic: time comes in as
//! `now`, and `breaker.rs` calls these methods under the breaker's lock, then
//! publishes the result to the lock-free fast path.
//!
//! The rules:
//! - **Closed**: calls run. The circuit opens when `failure_threshold`
//!   consecutive failures happen (a success resets the run; counted lock-free
//!   in `breaker.rs`, which calls [`Core::trip`] when the run reaches the
//!   threshold), or when a rate rule over the sliding window says so (at least
//!   `minimum_calls` in the window, and the failure or slow-call percentage at or
//!   above its threshold). Rates are judged each time a failure or a slow
//!   call is recorded: a success can only lower them. (So with 9 failures
//!   and `minimum_calls` 10, a 10th call that succeeds does not open the
//!   circuit; the next failure does.)
//! - **Open**: calls are refused until `open_until`; from then on the circuit
//!   is HalfOpen, whether or not a call arrives (`refresh`).
//! - **HalfOpen**: at most `half_open_max_calls` trial calls in flight. A failed
//!   or slow trial reopens the circuit and restarts the timer;
//!   `success_threshold` successful trials close it. A trial whose permit is
//!   dropped unrecorded (cancelled) frees its slot and counts for nothing.
//! - Each change bumps `generation`: an outcome from a call admitted under an
//!   older generation is counted in the metrics but decides nothing, so a slow
//!   call admitted before a trip cannot reopen or close the circuit later.
//! - Manual modes: `ForcedOpen` refuses everything until reset; `Disabled` lets
//!   everything through and records nothing; `MetricsOnly` lets everything
//!   through and counts outcomes, but never changes state.

use std::time::Duration;

use super::CircuitState;
use super::config::Settings;
use super::listener::TransitionReason;
use super::window::Window;
use crate::clock::Instant;
use crate::rng::Rng;

/// Who decides the state: the rules, or an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitMode {
    /// The rules above decide.
    Automatic,
    /// Refuse every call until `reset` (reported as Open).
    ForcedOpen,
    /// Let every call through and record nothing (reported as Closed).
    Disabled,
    /// Let every call through, count outcomes and tell listeners, never change state
    /// (reported as Closed). For trying a configuration in production.
    MetricsOnly,
}

/// A state change decided by [`Core`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Change {
    pub(crate) from: CircuitState,
    pub(crate) to: CircuitState,
    pub(crate) reason: TransitionReason,
    pub(crate) open_for: Option<Duration>,
}

/// What a trial call's permit reports back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trial {
    Succeeded,
    Failed,
    /// Dropped unrecorded, or ignored by the classifier: frees the slot only.
    Released,
}

#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) state: CircuitState,
    pub(crate) mode: CircuitMode,
    pub(crate) generation: u32,
    pub(crate) open_until: Instant,
    half_open_in_flight: u32,
    half_open_successes: u32,
    /// Trips since the circuit last closed, for the open-period backoff.
    consecutive_trips: u32,
    window: Option<Window>,
    rng: Box<dyn Rng>,
}

impl Core {
    pub(crate) fn new(s: &Settings, rng: Box<dyn Rng>) -> Self {
        Core {
            state: CircuitState::Closed,
            mode: CircuitMode::Automatic,
            generation: 0,
            open_until: Instant::ZERO,
            half_open_in_flight: 0,
            half_open_successes: 0,
            consecutive_trips: 0,
            window: s.window.map(Window::new),
            rng,
        }
    }

    /// The state callers see: manual modes mask the automatic one.
    pub(crate) fn reported(&self) -> CircuitState {
        match self.mode {
            CircuitMode::Automatic => self.state,
            CircuitMode::ForcedOpen => CircuitState::Open,
            CircuitMode::Disabled | CircuitMode::MetricsOnly => CircuitState::Closed,
        }
    }

    /// Open → HalfOpen once the open period is over.
    pub(crate) fn refresh(&mut self, now: Instant) -> Option<Change> {
        if self.mode == CircuitMode::Automatic
            && self.state == CircuitState::Open
            && now >= self.open_until
        {
            return Some(self.enter(
                CircuitState::Open,
                CircuitState::HalfOpen,
                TransitionReason::OpenTimeoutElapsed,
                None,
            ));
        }
        None
    }

    /// Claims a HalfOpen trial slot, if one is free.
    pub(crate) fn admit_trial(&mut self, s: &Settings) -> bool {
        if self.half_open_in_flight < s.half_open_max_calls {
            self.half_open_in_flight += 1;
            true
        } else {
            false
        }
    }

    /// Would a call be let through now? (Does not claim a slot.)
    pub(crate) fn can_execute(&self, s: &Settings) -> bool {
        match (self.mode, self.state) {
            (CircuitMode::ForcedOpen, _) => false,
            (CircuitMode::Disabled | CircuitMode::MetricsOnly, _) => true,
            (CircuitMode::Automatic, CircuitState::Closed) => true,
            (CircuitMode::Automatic, CircuitState::Open) => false,
            (CircuitMode::Automatic, CircuitState::HalfOpen) => {
                self.half_open_in_flight < s.half_open_max_calls
            }
        }
    }

    /// A Closed-state outcome from a call admitted under `generation`, for the rate rules.
    pub(crate) fn record_closed(
        &mut self,
        s: &Settings,
        generation: u32,
        failed: bool,
        slow: bool,
        now: Instant,
    ) -> Option<Change> {
        if generation != self.generation
            || self.state != CircuitState::Closed
            || self.mode != CircuitMode::Automatic
        {
            return None;
        }
        let window = self.window.as_mut()?;
        window.record(now, failed, slow);
        if !failed && !slow {
            // A success can only lower the rates: nothing to judge.
            return None;
        }
        let t = window.totals(now);
        if t.calls < u64::from(s.minimum_calls) {
            return None;
        }
        let pct = |n: u64| n as f64 * 100.0 / t.calls as f64;
        if let Some(th) = s.failure_rate_threshold
            && failed
            && pct(t.failures) >= th
        {
            return Some(self.trip(s, now, TransitionReason::FailureRate(pct(t.failures))));
        }
        if let Some(th) = s.slow_call_rate_threshold
            && slow
            && pct(t.slow) >= th
        {
            return Some(self.trip(s, now, TransitionReason::SlowCallRate(pct(t.slow))));
        }
        None
    }

    /// A HalfOpen trial's outcome.
    pub(crate) fn record_trial(
        &mut self,
        s: &Settings,
        generation: u32,
        trial: Trial,
        now: Instant,
    ) -> Option<Change> {
        if generation != self.generation || self.state != CircuitState::HalfOpen {
            return None;
        }
        self.half_open_in_flight = self.half_open_in_flight.saturating_sub(1);
        match trial {
            Trial::Released => None,
            Trial::Failed => Some(self.trip(s, now, TransitionReason::TrialFailed)),
            Trial::Succeeded => {
                self.half_open_successes += 1;
                (self.half_open_successes >= s.success_threshold)
                    .then(|| self.close(TransitionReason::TrialsSucceeded))
            }
        }
    }

    /// To Open (again), with the timer restarted and the period grown by the backoff.
    pub(crate) fn trip(&mut self, s: &Settings, now: Instant, reason: TransitionReason) -> Change {
        let from = self.reported();
        self.mode = CircuitMode::Automatic;
        self.consecutive_trips = self.consecutive_trips.saturating_add(1);
        let period = match &s.open_backoff {
            Some(b) => b.jittered(
                b.period(s.open_timeout, self.consecutive_trips),
                self.rng.as_mut(),
            ),
            None => s.open_timeout,
        };
        self.open_until = now.saturating_add(period);
        self.enter(from, CircuitState::Open, reason, Some(period))
    }

    /// To Closed, with every count cleared.
    pub(crate) fn close(&mut self, reason: TransitionReason) -> Change {
        let from = self.reported();
        self.mode = CircuitMode::Automatic;
        self.consecutive_trips = 0;
        self.enter(from, CircuitState::Closed, reason, None)
    }

    /// An operator's mode change; reports a change only if the visible state moves.
    pub(crate) fn set_mode(&mut self, mode: CircuitMode) -> Change {
        let from = self.reported();
        self.mode = mode;
        self.consecutive_trips = 0;
        let to = self.reported();
        self.enter(from, CircuitState::Closed, TransitionReason::Manual, None);
        Change {
            from,
            to,
            reason: TransitionReason::Manual,
            open_for: None,
        }
    }

    fn enter(
        &mut self,
        from: CircuitState,
        to: CircuitState,
        reason: TransitionReason,
        open_for: Option<Duration>,
    ) -> Change {
        self.state = to;
        self.generation = self.generation.wrapping_add(1);
        self.clear_counts();
        Change {
            from,
            to,
            reason,
            open_for,
        }
    }

    fn clear_counts(&mut self) {
        self.half_open_in_flight = 0;
        self.half_open_successes = 0;
        if let Some(w) = self.window.as_mut() {
            w.clear();
        }
    }
}
