//! The saga's decisions, in one place, as plain code over plain data.
//!
//! Read this file top to bottom to know what an engine does next with a
//! saga. Nothing here touches a database, a clock or a step: the persisted
//! [`SagaRecord`] comes in with `now` (ms since the Unix epoch), an [`Action`]
//! comes out; the engine runs it and feeds the outcome back through
//! [`after_step`] or [`after_compensation`], then persists the record.
//!
//! The rules ([`decide`]):
//! 1. A saga that is COMPLETED, COMPENSATED or COMPENSATION_FAILED is done:
//!    nothing runs (an operator's [`resume`] takes the last one out).
//! 2. Before `next_attempt_at` (a backoff), wait.
//! 3. COMPENSATING: compensate the LAST compensable step that may have taken
//!    effect (STARTED, COMPLETED or COMPENSATING), then the one before it, …;
//!    when none is left, the saga is COMPENSATED. A STARTED step is
//!    compensated without an output: its compensation undoes by idempotency
//!    key whatever the call may have done.
//! 4. Forward: the first step not COMPLETED is the current one. If every step
//!    is completed, the saga is COMPLETED.
//! 5. The current step FAILED (a refusal, so no effect): compensate (rule 3).
//! 6. An abort request, or a deadline passed, before the pivot completed:
//!    compensate instead of calling the current step (again). A STARTED
//!    current step (in backoff, or its worker died) may have run, so rule 3
//!    undoes it by key. Once the pivot completed, abort and deadline no
//!    longer apply: the saga can only go forward.
//! 7. Otherwise run the current step, attempt `attempts + 1`, with the
//!    stable idempotency key: a STARTED step may have run, and runs again.
//!
//! The outcomes ([`after_step`], [`after_compensation`]):
//! - a step succeeds: COMPLETED with its output;
//! - a step is refused (business): FAILED, unless it comes after the pivot
//!   (retriable-only steps are retried until they succeed);
//! - a retryable error: the step stays STARTED (it may have run) and waits a
//!   backoff with jitter. A compensable step gives up after
//!   `max_step_attempts`, or once the deadline passed: the saga compensates.
//!   A pivot and the steps after it never give up;
//! - a compensation succeeds: the step is COMPENSATED;
//! - a compensation fails: retried after a backoff with jitter; after
//!   `max_compensation_attempts` the saga is COMPENSATION_FAILED.

use std::time::Duration;

use rempart::retry::{Backoff, Jitter};
use rempart::rng::Rng;
use serde_json::Value;

use crate::record::{SagaRecord, SagaStatus, StepStatus};

/// A step's place in the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Before the pivot: undone by its compensation if the saga fails.
    Compensable,
    /// The go/no-go step: once it completes, the saga only goes forward.
    /// Never compensated; retried until it gives an answer.
    Pivot,
    /// After the pivot: never compensated, retried until it succeeds.
    Retriable,
}

/// How retries are spaced and bounded.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Calls of a compensable step before the saga compensates.
    pub max_step_attempts: u32,
    /// Calls of one compensation before the saga is COMPENSATION_FAILED.
    pub max_compensation_attempts: u32,
    /// The pause before retry n.
    pub backoff: Backoff,
    /// Its randomisation.
    pub jitter: Jitter,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_step_attempts: 5,
            max_compensation_attempts: 8,
            backoff: Backoff::Exponential {
                initial: Duration::from_millis(100),
                multiplier: 2.0,
                max: Duration::from_secs(30),
            },
            jitter: Jitter::Full,
        }
    }
}

/// What to do next with a saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Call step `step`'s `execute`; `attempt` counts from 1.
    Run {
        /// The step's index.
        step: usize,
        /// The attempt number.
        attempt: u32,
    },
    /// Call step `step`'s `compensate`.
    Compensate {
        /// The step's index.
        step: usize,
        /// The attempt number.
        attempt: u32,
    },
    /// Nothing before this time (ms since the Unix epoch).
    WaitUntil(u64),
    /// The saga is in (or now reaches) this final status.
    Finish(SagaStatus),
}

/// What a step's or a compensation's call returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It succeeded (a step's output; `Null` for a compensation).
    Succeeded(Value),
    /// A passing failure (timeout, 5xx, connection refused): it may have taken effect.
    Retryable(String),
    /// A business refusal (payment declined): it took no effect.
    Refused(String),
}

/// The next action for `saga`, whose steps have the kinds `kinds`.
pub fn decide(kinds: &[StepKind], saga: &SagaRecord, now: u64) -> Action {
    debug_assert_eq!(kinds.len(), saga.steps.len());
    // Rule 1.
    if saga.status.is_final() {
        return Action::Finish(saga.status);
    }
    // Rule 2.
    if now < saga.next_attempt_at {
        return Action::WaitUntil(saga.next_attempt_at);
    }
    // Rule 3.
    if saga.status == SagaStatus::Compensating {
        return next_compensation(kinds, saga);
    }
    // Rule 4.
    let Some(current) = saga
        .steps
        .iter()
        .position(|s| s.status != StepStatus::Completed)
    else {
        return Action::Finish(SagaStatus::Completed);
    };
    let step = &saga.steps[current];
    // Rule 5.
    if step.status == StepStatus::Failed {
        return next_compensation(kinds, saga);
    }
    // Rule 6.
    let deadline_passed = saga.deadline.is_some_and(|d| now >= d);
    if (saga.abort_requested || deadline_passed) && !pivot_completed(kinds, saga) {
        return next_compensation(kinds, saga);
    }
    // Rule 7.
    Action::Run {
        step: current,
        attempt: step.attempts + 1,
    }
}

/// Rule 3: the last compensable step that may have taken effect.
fn next_compensation(kinds: &[StepKind], saga: &SagaRecord) -> Action {
    let may_have_effect = |s: StepStatus| {
        matches!(
            s,
            StepStatus::Started | StepStatus::Completed | StepStatus::Compensating
        )
    };
    match (0..saga.steps.len())
        .rev()
        .find(|&i| kinds[i] == StepKind::Compensable && may_have_effect(saga.steps[i].status))
    {
        Some(step) => Action::Compensate {
            step,
            attempt: saga.steps[step].compensation_attempts + 1,
        },
        None => Action::Finish(SagaStatus::Compensated),
    }
}

fn pivot_completed(kinds: &[StepKind], saga: &SagaRecord) -> bool {
    kinds
        .iter()
        .zip(&saga.steps)
        .any(|(k, s)| *k == StepKind::Pivot && s.status == StepStatus::Completed)
}

/// Records that the engine is about to carry out `action`: the write that
/// goes to the store BEFORE the call, so recovery knows the call may have run.
pub fn begin(saga: &mut SagaRecord, action: Action) {
    match action {
        Action::Run { step, attempt } => {
            saga.status = SagaStatus::InProgress;
            saga.current_step = Some(saga.steps[step].name.clone());
            let s = &mut saga.steps[step];
            s.status = StepStatus::Started;
            s.attempts = attempt;
        }
        Action::Compensate { step, attempt } => {
            saga.status = SagaStatus::Compensating;
            saga.current_step = Some(saga.steps[step].name.clone());
            let s = &mut saga.steps[step];
            s.status = StepStatus::Compensating;
            s.compensation_attempts = attempt;
        }
        Action::Finish(status) => {
            saga.status = status;
            saga.current_step = None;
        }
        Action::WaitUntil(_) => {}
    }
}

/// Applies the outcome of step `step`'s call (begun with [`begin`]).
pub fn after_step(
    kinds: &[StepKind],
    saga: &mut SagaRecord,
    step: usize,
    outcome: Outcome,
    now: u64,
    limits: &Limits,
    rng: &mut dyn Rng,
) {
    let kind = kinds[step];
    let attempts = saga.steps[step].attempts;
    let give_up_retrying = kind == StepKind::Compensable
        && (attempts >= limits.max_step_attempts || saga.deadline.is_some_and(|d| now >= d));
    let s = &mut saga.steps[step];
    match outcome {
        Outcome::Succeeded(output) => {
            s.status = StepStatus::Completed;
            s.output = Some(output);
            s.last_error = None;
            saga.next_attempt_at = 0;
        }
        Outcome::Refused(e) if kind != StepKind::Retriable => {
            s.status = StepStatus::Failed;
            s.last_error = Some(e.clone());
            saga.error = Some(format!("{}: {e}", s.name));
            saga.next_attempt_at = 0;
        }
        Outcome::Refused(e) | Outcome::Retryable(e) => {
            // Stays STARTED: it may have taken effect.
            s.last_error = Some(e.clone());
            saga.error = Some(format!("{}: {e}", s.name));
            if give_up_retrying {
                saga.status = SagaStatus::Compensating;
                saga.next_attempt_at = 0;
            } else {
                saga.next_attempt_at = now + backoff_ms(limits, attempts, rng);
            }
        }
    }
}

/// Applies the outcome of step `step`'s compensation.
pub fn after_compensation(
    saga: &mut SagaRecord,
    step: usize,
    outcome: Outcome,
    now: u64,
    limits: &Limits,
    rng: &mut dyn Rng,
) {
    let s = &mut saga.steps[step];
    match outcome {
        Outcome::Succeeded(_) => {
            s.status = StepStatus::Compensated;
            saga.next_attempt_at = 0;
        }
        Outcome::Refused(e) | Outcome::Retryable(e) => {
            s.last_error = Some(e.clone());
            saga.error = Some(format!("compensating {}: {e}", s.name));
            if s.compensation_attempts >= limits.max_compensation_attempts {
                saga.status = SagaStatus::CompensationFailed;
                saga.next_attempt_at = 0;
            } else {
                let n = s.compensation_attempts;
                saga.next_attempt_at = now + backoff_ms(limits, n, rng);
            }
        }
    }
}

/// An operator's resume: a COMPENSATION_FAILED saga compensates again with
/// fresh attempts; any other unfinished saga is due at once.
pub fn resume(saga: &mut SagaRecord) {
    if saga.status == SagaStatus::CompensationFailed {
        saga.status = SagaStatus::Compensating;
        for s in &mut saga.steps {
            s.compensation_attempts = 0;
        }
    }
    saga.next_attempt_at = 0;
}

fn backoff_ms(limits: &Limits, retry: u32, rng: &mut dyn Rng) -> u64 {
    let d = limits.backoff.delay(retry);
    let d = limits
        .jitter
        .apply(d, d, limits.backoff.initial(), limits.backoff.max(), rng);
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
#[path = "decision_tests.rs"]
mod tests;
